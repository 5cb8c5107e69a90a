"""What every stage shares: the digest that names its output, and the cache around it.

An output lives at `datasets/<dataset>/<stage>/<digest>/`. The digest hashes the stage name, its
version (bumped when its output changes meaning), the config fields it reads and the digests of
its inputs, so the same inputs give the same place. A manifest there means the work is done:
the stage says so and returns it. Without a manifest, whatever is there is a leftover of a run
that died; it is removed and the stage runs again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from vidssl.config import Experiment
from vidssl.shards import Manifest, OutputWriter, find_manifest, read_manifest
from vidssl.shards.manifest import manifest_key
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
    """Return the finished output for these inputs, computing it with `build` if needed."""
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
    # Manifest first, so readers stop seeing the old output before its shards go.
    store.delete(manifest_key(prefix))
    leftovers = store.delete_prefix(prefix + "/")
    if leftovers:
        log.info(
            "%s: removed %d objects left by an unfinished run at %s", spec.name, leftovers, url
        )
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
    )
    try:
        build(writer)
    except BaseException:
        writer.abort()
        raise
    manifest = writer.publish()
    log.info("%s: published %d samples at %s", spec.name, manifest.samples, url)
    return StageOutput(url, manifest, cached=False)
