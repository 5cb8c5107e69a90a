"""Ingest: videos -> clip shards (one sample per video or clip, frames resampled to the
experiment's fps, JPEG-coded). Undecodable videos are logged, skipped and listed in the
manifest; a sample is only written once the whole clip decoded."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vidssl.config import Experiment, FolderSource, IngestConfig
from vidssl.progress import track
from vidssl.shards import OutputWriter
from vidssl.stages.base import StageOutput, StageSpec, run_cached, store_for
from vidssl.video import VideoDecodeError, decode, encode_jpeg, probe, resize_short_side

log = logging.getLogger(__name__)

SPEC = StageSpec(name="ingest", version=1)


@dataclass(frozen=True)
class VideoItem:
    path: str
    video_id: str  # relative path without extension, as the dataset names the video
    category: str
    split: str


@dataclass
class VideoResult:
    item: VideoItem
    samples: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    error: str | None = None


def frame_name(position: int) -> str:
    return f"f{position:03d}.jpg"


def sample_key(video_id: str, clip: int | None) -> str:
    key = re.sub(r"[^A-Za-z0-9_-]", "_", video_id)
    return key if clip is None else f"{key}_c{clip:03d}"


def assign_split(video_id: str, val_fraction: float, seed: int) -> str:
    """Seeded, stable per video: adding videos never moves others between splits."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def list_folder(source: FolderSource, val_fraction: float, seed: int) -> list[VideoItem]:
    root = Path(source.root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset.source.root: {root} is not a folder of videos")
    extensions = {ext.lower() for ext in source.extensions}
    items = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in extensions:
            relative = path.relative_to(root).with_suffix("").as_posix()
            items.append(
                VideoItem(
                    path=str(path),
                    video_id=relative,
                    category=path.parent.name if path.parent != root else root.name,
                    split=assign_split(relative, val_fraction, seed),
                )
            )
    return items


def source_fingerprint(items: list[VideoItem]) -> str:
    """Digest input for raw videos: names, sizes and split assignment."""
    lines = [f"{i.video_id}\t{os.path.getsize(i.path)}\t{i.category}\t{i.split}" for i in items]
    return "videos:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def ingest_video(item: VideoItem, dataset: str, cfg: IngestConfig) -> VideoResult:
    """Decode one video into clip samples (runs in a worker process)."""
    result = VideoResult(item)
    try:
        info = probe(item.path)
        frames = list(decode(item.path, cfg.fps))
    except VideoDecodeError as exc:
        result.error = str(exc)
        return result
    except Exception as exc:
        result.error = f"{item.path}: {type(exc).__name__}: {exc}"
        return result
    clip_length = cfg.clip_frames or len(frames)
    clips = [frames[start : start + clip_length] for start in range(0, len(frames), clip_length)]
    clips = [clip for clip in clips if len(clip) == clip_length] or (
        [frames] if cfg.clip_frames is None else []
    )
    if cfg.max_clips_per_video is not None:
        clips = clips[: cfg.max_clips_per_video]
    effective_fps = min(cfg.fps, info.fps) if cfg.fps else info.fps
    for clip_index, clip in enumerate(clips):
        images = [resize_short_side(frame.image, cfg.resize_short) for frame in clip]
        height, width = images[0].shape[:2]
        meta = {
            "dataset": dataset,
            "video_id": item.video_id,
            "clip_index": clip_index,
            "category": item.category,
            "split": item.split,
            "fps": effective_fps,
            "source_fps": info.fps,
            "source_frame_indices": [frame.index for frame in clip],
            "timestamps": [round(frame.timestamp_s, 6) for frame in clip],
            "shot_boundaries": [0],
            "width": width,
            "height": height,
            "num_frames": len(clip),
        }
        sample = {"__key__": sample_key(item.video_id, clip_index if cfg.clip_frames else None)}
        sample["meta.json"] = meta
        for position, image in enumerate(images):
            sample[frame_name(position)] = encode_jpeg(image, cfg.jpeg_quality)
        result.samples.append(sample)
    result.record = {
        "video": item.video_id,
        "split": item.split,
        "source_frames": info.frame_count,
        "decoded_frames": len(frames),
        "clips": len(clips),
        "kept_frames": sum(len(clip) for clip in clips),
    }
    return result


def _ingest_star(args: tuple) -> VideoResult:
    return ingest_video(*args)


def _results(items: list[VideoItem], experiment: Experiment) -> Iterator[VideoResult]:
    workers = experiment.ingest.workers or os.cpu_count() or 1
    tasks = [(item, experiment.dataset.name, experiment.ingest) for item in items]
    if workers == 1 or len(items) <= 1:
        yield from map(_ingest_star, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(items))) as pool:
        yield from pool.imap(_ingest_star, tasks)


def fields_read(experiment: Experiment) -> dict:
    return {
        "dataset": experiment.dataset.model_dump(),
        "ingest": experiment.ingest.model_dump(exclude={"workers"}),
    }


def run(experiment: Experiment, *, force: bool = False) -> StageOutput:
    dataset = experiment.dataset
    items = list_folder(dataset.source, dataset.val_fraction, dataset.split_seed)
    if not items:
        raise FileNotFoundError(
            f"dataset.source.root: no videos with extensions {dataset.source.extensions} "
            f"under {dataset.source.root}"
        )
    store = store_for(experiment)

    def build(writer: OutputWriter) -> None:
        records = []
        for result in track(_results(items, experiment), len(items), "ingest", unit="videos"):
            if result.error:
                log.error("skipping video: %s", result.error)
                writer.skip(result.item.path, result.error)
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
