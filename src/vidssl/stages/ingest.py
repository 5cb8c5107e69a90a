"""Ingest: videos -> clip shards. One sample per video (or per clip of `clip_frames` kept
frames): `meta.json` and one JPEG per kept frame (`f000.jpg`, ...), frames resampled to the
experiment's rate. Objectron samples carry each kept frame's annotation. A video that cannot be
decoded, or whose annotation is malformed, is logged with its path, skipped and listed in the
manifest; a sample is written only once its whole clip decoded."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Iterator

from vidssl.clips import VideoResult, ingest_star, use_one_thread
from vidssl.config import Experiment
from vidssl.datasets import VideoItem, list_videos
from vidssl.progress import track
from vidssl.shards import OutputWriter
from vidssl.stages.base import StageOutput, StageSpec, run_cached, store_for
from vidssl.store.tree import FileTree

log = logging.getLogger(__name__)

SPEC = StageSpec(name="ingest", version=2)


def source_fingerprint(items: list[VideoItem]) -> str:
    """Digest input for raw videos: where they are, their sizes, categories and splits."""
    lines = [
        f"{i.tree_root}\t{i.video}\t{i.size}\t{i.category}\t{i.split}\t{i.annotation}"
        for i in items
    ]
    return "videos:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _results(items: list[VideoItem], experiment: Experiment) -> Iterator[VideoResult]:
    workers = min(experiment.ingest.workers or os.cpu_count() or 1, len(items))
    tasks = [(item, experiment.dataset.name, experiment.ingest) for item in items]
    use_one_thread()
    if workers <= 1:
        yield from map(ingest_star, tasks)
        return
    # fork: workers start in milliseconds. spawn and forkserver re-import the caller's __main__
    # (the CLI or KFP executor, torch included) in every worker: 1.2-1.5 s per pool measured.
    # Forking is safe here: the pool starts before this stage opens upload threads, and OpenCV
    # runs single-threaded (use_one_thread) so no worker inherits a busy thread pool.
    with multiprocessing.get_context("fork").Pool(workers, initializer=use_one_thread) as pool:
        yield from pool.imap(ingest_star, tasks)


def fields_read(experiment: Experiment) -> dict:
    return {
        "dataset": experiment.dataset.model_dump(),
        "ingest": experiment.ingest.model_dump(exclude={"workers"}),
    }


def run(
    experiment: Experiment, *, source_url: str | None = None, force: bool = False
) -> StageOutput:
    """Ingest the experiment's dataset; `source_url` is where generated data was written."""
    items = list_videos(experiment.dataset, source_url)
    if not items:
        where = source_url or getattr(experiment.dataset.source, "root", "?")
        raise FileNotFoundError(
            f"dataset.source ({experiment.dataset.source.kind}): no videos found under {where}"
        )
    store = store_for(experiment)

    def build(writer: OutputWriter) -> None:
        records = []
        for result in track(_results(items, experiment), len(items), "ingest", unit="videos"):
            if result.error:
                log.error("skipping video: %s", result.error)
                writer.skip(
                    FileTree(result.item.tree_root).describe(result.item.video), result.error
                )
                continue
            for sample in result.samples:
                writer.write(result.item.split, sample)
            records.append(result.record)
        writer.details["videos"] = records

    return run_cached(
        store,
        SPEC,
        experiment,
        fields_read(experiment),
        [source_fingerprint(items)],
        build,
        force=force,
    )
