"""What every stage shares: the digest that names its output, and the cache around it.

An output lives at `datasets/<dataset>/<stage>/<digest>/`. The digest hashes the stage name, its
version (bumped when its output changes meaning), the config fields it reads and the digests of
its inputs, so the same inputs give the same place. A manifest there means the work is done:
the stage says so and returns it. Without one, the stage runs as an attempt of its own beside
any other (vidssl.shards.attempts); objects of attempts that died are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from vidssl.config import Experiment
from vidssl.shards import Manifest, OutputWriter, find_manifest, read_manifest
from vidssl.shards.attempts import (
    ATTEMPTS_DIR,
    Attempt,
    live_attempts,
    remove_dead_attempts,
)
from vidssl.store import ObjectStore, open_store

log = logging.getLogger(__name__)

DIGEST_CHARS = 16


def stage_digest(stage: str, version: int, fields: dict, inputs: list[str]) -> str:
    canonical = json.dumps(
        {"stage": stage, "version": version, "fields": fields, "inputs": inputs},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


@dataclass(frozen=True)
class StageOutput:
    url: str
    manifest: Manifest
    cached: bool


@dataclass(frozen=True)
class StageSpec:
    """A stage's identity: its name, version and the config fields it reads."""

    name: str
    version: int

    def output_prefix(self, dataset: str, digest: str) -> str:
        return f"datasets/{dataset}/{self.name}/{digest}"


def store_for(experiment: Experiment) -> ObjectStore:
    return open_store(experiment.store_uri())


def input_manifest(store: ObjectStore, url: str) -> tuple[str, Manifest]:
    """(prefix, manifest) of an upstream stage output given by URL."""
    prefix = store.key_of(url.rstrip("/"))
    return prefix, read_manifest(store, prefix)


def run_cached(
    store: ObjectStore,
    spec: StageSpec,
    experiment: Experiment,
    fields: dict,
    inputs: list[str],
    build: Callable[[OutputWriter], None],
    *,
    force: bool = False,
) -> StageOutput:
    """Return the finished output for these inputs, computing it with `build` if needed.

    Safe beside other runs of the same stage on the same inputs (see vidssl.shards.attempts):
    this run writes under its own attempt folder; the first run to finish publishes, a later
    one adopts that output. With `force` this run's output replaces the published one."""
    digest = stage_digest(spec.name, spec.version, fields, inputs)
    prefix = spec.output_prefix(experiment.dataset.name, digest)
    url = store.url(prefix)
    if not force:
        existing = find_manifest(store, prefix)
        if existing is not None:
            log.info(
                "%s: finished output found at %s; skipping (use --force to redo)", spec.name, url
            )
            return StageOutput(url, existing, cached=True)
    with Attempt(store, prefix) as attempt:
        remove_dead_attempts(store, prefix, keep={attempt.id})
        for other in live_attempts(store, prefix, attempt.id):
            log.info(
                "%s: attempt %s (host %s, pid %d) is also producing %s; the first to finish "
                "publishes", spec.name, other.attempt, other.host, other.pid, url,
            )  # fmt: skip
        writer = OutputWriter(
            store,
            prefix,
            stage=spec.name,
            stage_version=spec.version,
            digest=digest,
            dataset=experiment.dataset.name,
            config=fields,
            inputs=inputs,
            max_samples=experiment.shards.max_samples,
            max_bytes=experiment.shards.max_bytes,
            attempt=attempt.id,
            objects_dir=attempt.relative_dir,
        )
        try:
            build(writer)
            manifest = writer.close()
        except BaseException:
            writer.abort()
            attempt.discard()
            raise
        previous = find_manifest(store, prefix) if force else None
        winner = attempt.publish(manifest, replace=force)
        if winner is not None:
            log.info("%s: attempt %s published %s first; using it", spec.name, winner.attempt, url)
            return StageOutput(url, winner, cached=True)
    if previous is not None:
        _remove_replaced(store, prefix, previous, manifest)
    log.info("%s: published %d samples at %s", spec.name, manifest.samples, url)
    return StageOutput(url, manifest, cached=False)


def _remove_replaced(store: ObjectStore, prefix: str, old: Manifest, new: Manifest) -> None:
    """After `--force` published `new`: remove the objects only `old` used."""
    if old.attempt and old.attempt != new.attempt:
        store.delete_prefix(f"{prefix}/{ATTEMPTS_DIR}/{old.attempt}/")
        return
    kept = {shard.name for split in new.splits.values() for shard in split.shards}
    for split in old.splits.values():  # an output published before attempts existed
        for shard in split.shards:
            if shard.name not in kept:
                store.delete(f"{prefix}/{shard.name}")
