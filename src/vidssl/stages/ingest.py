"""Ingest: videos -> clip shards. One sample per video (or per clip of `clip_frames` kept
frames): `meta.json` and one JPEG per kept frame (`f000.jpg`, ...), frames resampled to the
experiment's rate. Objectron samples carry each kept frame's annotation; synthetic Objectron
samples of a source with `flow_step` also carry its ground-truth flow and category masks
(vidssl.clips).

One bad input never stops the others: a video that cannot be decoded, whose annotation is
malformed or matches none of its frames, or that is too short for one clip, is logged with its
path, skipped and listed in the manifest with the reason; a sample is written only once its
whole clip decoded. Nothing is lost unrecorded: a video that decodes fewer frames than its
container declares is kept and listed in `details["truncated"]`, and videos whose sanitised
names collide keep distinct keys (`details["renamed_keys"]`). The stage fails, publishing
nothing, only when more than `ingest.max_failed_fraction` of the inputs were skipped.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext

from vidssl.clips import KeyRename, VideoResult, assign_keys, ingest_star, use_one_thread
from vidssl.config import Experiment
from vidssl.datasets import VideoItem, list_videos
from vidssl.errors import VidsslError
from vidssl.progress import track
from vidssl.shards import OutputWriter
from vidssl.stages.base import StageOutput, StageSpec, run_cached, store_for

log = logging.getLogger(__name__)

#: 3: colliding keys disambiguated, short and truncated videos listed, damaged frames skipped,
#: annotation frames with a non-finite camera or plane refused
SPEC = StageSpec(name="ingest", version=3)
#: failures named in the one-line IngestFailed message (the log has every one)
FAILURES_SHOWN = 3


class IngestFailed(VidsslError, RuntimeError):
    """More inputs were skipped than `ingest.max_failed_fraction` allows; the message says how
    many and names the first few with their reasons, in one line."""


def source_fingerprint(items: list[VideoItem]) -> str:
    """Digest input for raw videos: where they are, their sizes, categories and splits."""
    lines = [
        f"{i.tree_root}\t{i.video}\t{i.size}\t{i.category}\t{i.split}\t{i.annotation}"
        for i in items
    ]
    return "videos:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _results(
    items: list[VideoItem], keys: dict[str, str], experiment: Experiment
) -> Iterator[VideoResult]:
    workers = min(experiment.ingest.workers or os.cpu_count() or 1, len(items))
    flow_step = getattr(experiment.dataset.source, "flow_step", 0)
    tasks = [
        (item, experiment.dataset.name, experiment.ingest, keys[item.video], flow_step)
        for item in items
    ]
    use_one_thread()
    if workers <= 1:
        yield from map(ingest_star, tasks)
        return
    yield from _pooled(tasks, workers)


def _pooled(tasks: list[tuple], workers: int) -> Iterator[VideoResult]:
    """Results in task order from `workers` processes.

    A worker that dies (killed, out of memory, a crash inside a decoder) breaks its pool. The
    first unfinished task is then retried alone in a fresh process, and skipped with a reason
    if that process dies too; the others go on in a new pool. So a video that kills its
    process is skipped like any bad input, for the price of a few pool restarts.

    The first pool forks: workers start in milliseconds, where spawn and forkserver re-import
    the caller's __main__ (the CLI or KFP executor, torch included) in every worker: 1.2-1.5 s
    per pool measured. Forking is safe then: the pool starts before this stage opens upload
    threads; the one thread already running, the attempt's lease heartbeat, only touches the
    store client, which a forked worker never uses (`S3Store.client` makes one per process), and
    logging re-creates its locks in a child. OpenCV runs single-threaded (use_one_thread), so
    no worker inherits a busy thread pool. Pools started after a crash spawn, as upload threads
    may hold locks by then.
    """
    pending = deque(tasks)
    context = multiprocessing.get_context("fork")
    while pending:
        yield from _until_broken(pending, workers, context)
        if pending:
            context = multiprocessing.get_context("spawn")
            yield _alone(pending.popleft(), context)


def _until_broken(pending: deque, workers: int, context: BaseContext) -> Iterator[VideoResult]:
    """Results of `pending` tasks, each popped once done, until done or the pool breaks."""
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=use_one_thread)
    try:
        for future in [pool.submit(ingest_star, task) for task in pending]:
            try:
                result = future.result()
            except BrokenProcessPool:
                return
            pending.popleft()
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _alone(task: tuple, context: BaseContext) -> VideoResult:
    """One task in a process of its own: its result, or its failure if the process dies."""
    with ProcessPoolExecutor(1, mp_context=context, initializer=use_one_thread) as pool:
        try:
            return pool.submit(ingest_star, task).result()
        except BrokenProcessPool:
            item = task[0]
            return VideoResult(
                item,
                error=f"{_describe(item)}: the worker process died while ingesting it "
                "(killed, out of memory, or a crash in the decoder)",
            )


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
        keys, renames = assign_keys(items)
        by_file = {item.video: item for item in items}
        writer.details["renamed_keys"] = [_renamed(rename, by_file) for rename in renames]
        failures: list[str] = []
        records, truncated = [], []
        written: dict[str, str] = {}  # sample key -> the file it came from
        results = _results(items, keys, experiment)
        for result in track(results, len(items), "ingest", unit="videos"):
            source = _describe(result.item)
            error = result.error or _key_clash(result, source, written)
            if error:
                log.error("skipping video: %s", error)
                writer.skip(source, error)
                failures.append(error)
                continue
            for sample in result.samples:
                written[sample["__key__"]] = source
                writer.write(result.item.split, sample)
            records.append(result.record)
            if result.record["truncated"]:
                truncated.append(_truncated(source, result.record))
            if result.record.get("refused_annotations"):
                log.warning(
                    "%s: %d annotated frames refused (first: %s)",
                    source,
                    result.record["refused_annotations"],
                    result.record["refused_first"],
                )
        writer.details["videos"] = records
        writer.details["truncated"] = truncated
        check_failures(failures, len(items), experiment.ingest.max_failed_fraction)

    return run_cached(
        store,
        SPEC,
        experiment,
        fields_read(experiment),
        [source_fingerprint(items)],
        build,
        force=force,
    )


def _describe(item: VideoItem) -> str:
    """The video's full name, as `FileTree.describe` gives it (without opening a store)."""
    return f"{item.tree_root.rstrip('/')}/{item.video}"


def _renamed(rename: KeyRename, by_file: dict[str, VideoItem]) -> dict:
    """The manifest's line for a renamed key (naming both files); logged as a warning."""
    line = {
        "video": _describe(by_file[rename.video]),
        "key": rename.key,
        "plain_key": rename.plain_key,
        "collides_with": _describe(by_file[rename.collides_with]),
    }
    log.warning(
        "sample key %r: %s keeps it; %s gets %r",
        rename.plain_key,
        line["collides_with"],
        line["video"],
        rename.key,
    )
    return line


def _key_clash(result: VideoResult, source: str, written: dict[str, str]) -> str | None:
    """Why this video's samples cannot be written (a key already written), or None. Checked
    before any of its samples is written, so a video is written whole or not at all."""
    for sample in result.samples:
        other = written.get(sample["__key__"])
        if other is not None:
            return f"{source}: sample key {sample['__key__']!r} already written for {other}"
    return None


def _truncated(source: str, record: dict) -> dict:
    """The manifest's line for a video kept with fewer frames than its container declares."""
    log.warning(
        "%s: decoded %d of the %d frames its container declares (%d failed to decode, %d "
        "never came: a truncated file, or a container that counts wrong); kept what decoded",
        source,
        record["read_frames"],
        record["source_frames"],
        record["failed_frames"],
        record["missing_frames"],
    )
    fields = ("source_frames", "read_frames", "failed_frames", "missing_frames")
    return {"video": source, **{name: record[name] for name in fields}}


def check_failures(failures: list[str], total: int, max_fraction: float) -> None:
    """IngestFailed when more than `max_fraction` of the `total` inputs failed."""
    if not failures or len(failures) <= max_fraction * total:
        return
    shown = "; ".join(" ".join(reason.split())[:300] for reason in failures[:FAILURES_SHOWN])
    more = len(failures) - FAILURES_SHOWN
    raise IngestFailed(
        f"ingest: {len(failures)} of {total} inputs failed, more than "
        f"ingest.max_failed_fraction={max_fraction:g} allows: {shown}"
        + (f"; and {more} more (each logged)" if more > 0 else "")
    )
