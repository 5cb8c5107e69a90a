"""What every stage shares: the digest that names its output, and the cache around it.

An output lives at `datasets/<dataset>/<stage>/<digest>/`. The digest hashes the stage name, its
version (bumped when its output changes meaning), the config fields it reads and the digests of
its inputs, so the same inputs give the same place. A manifest there means the work is done:
the stage says so and returns it. Without one, the stage runs as an attempt of its own beside
any other (vidssl.shards.attempts); objects of attempts that died are removed. A stage that
finishes pushes its summary to the Pushgateway, when one is configured (vidssl.metrics).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from vidssl.config import Experiment
from vidssl.metrics import stage_report
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


def run_in_attempt(
    store: ObjectStore,
    spec: StageSpec,
    experiment: Experiment,
    fields: dict,
    inputs: list[str],
    produce: Callable[[Attempt, str], Manifest | None],
    *,
    force: bool = False,
    resumable: bool = False,
) -> StageOutput | None:
    """`_produce_or_reuse`, its summary pushed when it returns an output (vidssl.metrics): the
    output's samples (0 when reused), its skipped inputs, the store traffic of this run."""
    with stage_report(experiment.name, spec.name) as report:
        output = _produce_or_reuse(
            store, spec, experiment, fields, inputs, produce, force=force, resumable=resumable
        )
        if output is not None:
            report.succeeded(
                samples_written=0 if output.cached else output.manifest.samples,
                skipped_inputs=len(output.manifest.skipped),
                cached=output.cached,
                output=output.manifest.digest,
            )
    return output


def _produce_or_reuse(
    store: ObjectStore,
    spec: StageSpec,
    experiment: Experiment,
    fields: dict,
    inputs: list[str],
    produce: Callable[[Attempt, str], Manifest | None],
    *,
    force: bool = False,
    resumable: bool = False,
) -> StageOutput | None:
    """The cache every stage shares: the finished output for these inputs if there is one,
    else `produce(attempt, digest)`'s manifest, published by this run as an attempt of its own.

    Safe beside other runs of the same stage on the same inputs (see vidssl.shards.attempts):
    this run writes under its own attempt folder; the first run to finish publishes, a later
    one adopts that output. With `force` this run's output replaces the published one.
    Objects of dead attempts are removed before producing, or, when the stage is `resumable`
    (it resumes from what a dead attempt left), only once this run has published. `produce`
    returning None (stopped early) publishes nothing and returns None."""
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
        if not resumable:
            remove_dead_attempts(store, prefix, keep={attempt.id})
        for other in live_attempts(store, prefix, attempt.id):
            log.info(
                "%s: attempt %s (host %s, pid %d) is also producing %s; the first to finish "
                "publishes", spec.name, other.attempt, other.host, other.pid, url,
            )  # fmt: skip
        manifest = produce(attempt, digest)
        if manifest is None:
            return None
        previous = find_manifest(store, prefix) if force else None
        winner = attempt.publish(manifest, replace=force)
        if winner is not None:
            log.info("%s: attempt %s published %s first; using it", spec.name, winner.attempt, url)
            return StageOutput(url, winner, cached=True)
    if previous is not None:
        _remove_replaced(store, prefix, previous, manifest)
    if resumable:
        remove_dead_attempts(store, prefix)  # the runs resumed from
    return StageOutput(url, manifest, cached=False)


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
    """`run_in_attempt` for a stage that writes shards: `build` fills an OutputWriter whose
    manifest (written last) lists them."""

    def produce(attempt: Attempt, digest: str) -> Manifest:
        writer = OutputWriter(
            store,
            spec.output_prefix(experiment.dataset.name, digest),
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
            return writer.close()
        except BaseException:
            writer.abort()
            attempt.discard()
            raise

    output = run_in_attempt(store, spec, experiment, fields, inputs, produce, force=force)
    assert output is not None  # produce always returns a manifest or raises
    if not output.cached:
        log.info("%s: published %d samples at %s", spec.name, output.manifest.samples, output.url)
    return output


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
