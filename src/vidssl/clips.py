"""Decoding one video into clip samples: the work each ingest process does.

Kept free of the shard and stage modules (and so of torch) so worker processes start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vidssl.config import IngestConfig
from vidssl.datasets import VideoItem
from vidssl.objectron.annotations import (
    AnnotationError,
    frame_meta,
    frames_by_index,
    objects_meta,
    parse_sequence,
)
from vidssl.store.tree import FileTree
from vidssl.video import VideoDecodeError, decode, encode_jpeg, probe, resize_short_side


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


def _clips(frames: list, cfg: IngestConfig) -> list[list]:
    if cfg.clip_frames is None:
        clips = [frames]
    else:
        n = cfg.clip_frames
        clips = [frames[s : s + n] for s in range(0, len(frames) - n + 1, n)]
    return clips[: cfg.max_clips_per_video] if cfg.max_clips_per_video else clips


def ingest_video(item: VideoItem, dataset: str, cfg: IngestConfig) -> VideoResult:
    """Decode one video into clip samples (runs in a worker process)."""
    result = VideoResult(item)
    tree = FileTree(item.tree_root)
    where = tree.describe(item.video)
    if item.size < 0:
        result.error = f"{where}: listed by the dataset but missing from disk"
        return result
    try:
        annotation = None
        if item.annotation is not None:
            annotation = parse_sequence(
                tree.read_bytes(item.annotation), tree.describe(item.annotation)
            )
        with tree.local_copy(item.video) as path:
            info = probe(path)
            frames = list(decode(path, cfg.fps, cfg.frame_stride))
    except VideoDecodeError as exc:  # it names the local copy: name the source instead
        result.error = f"{where}: {exc.reason}"
        return result
    except (AnnotationError, FileNotFoundError) as exc:
        result.error = str(exc)
        return result
    except Exception as exc:
        result.error = f"{where}: {type(exc).__name__}: {exc}"
        return result
    decoded = len(frames)
    annotated = frames_by_index(annotation) if annotation is not None else None
    if annotated is not None:
        frames = [frame for frame in frames if frame.index in annotated]
    effective_fps = (
        info.fps / cfg.frame_stride if cfg.frame_stride else min(cfg.fps or info.fps, info.fps)
    )
    clips = _clips(frames, cfg)
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
        if annotated is not None:
            meta["objects"] = objects_meta(annotation)
            meta["frames"] = [frame_meta(annotated[frame.index]) for frame in clip]
        sample: dict = {
            "__key__": sample_key(item.video_id, clip_index if cfg.clip_frames else None)
        }
        sample["meta.json"] = meta
        for position, image in enumerate(images):
            sample[frame_name(position)] = encode_jpeg(image, cfg.jpeg_quality)
        result.samples.append(sample)
    result.record = {
        "video": item.video_id,
        "split": item.split,
        "source_frames": info.frame_count,
        "decoded_frames": decoded,
        "unannotated_frames": decoded - len(frames),
        "clips": len(clips),
        "kept_frames": sum(len(clip) for clip in clips),
    }
    return result


def ingest_star(args: tuple) -> VideoResult:
    return ingest_video(*args)
