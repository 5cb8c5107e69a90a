"""Decoding one video into clip samples: the work each ingest process does.

Kept free of the shard and stage modules (and so of torch) so worker processes start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import cv2

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


@dataclass(frozen=True)
class EncodedFrame:
    index: int  # in the source video
    timestamp_s: float
    jpeg: bytes
    width: int
    height: int


def ingest_video(item: VideoItem, dataset: str, cfg: IngestConfig) -> VideoResult:
    """Decode one video into clip samples (runs in a worker process). Frames are resized and
    JPEG-coded as they are decoded, so only the JPEGs are held in memory."""
    result = VideoResult(item)
    tree = FileTree(item.tree_root)
    where = tree.describe(item.video)
    if item.size < 0:
        result.error = f"{where}: listed by the dataset but missing from disk"
        return result
    frames: list[EncodedFrame] = []
    decoded = 0
    try:
        annotation = annotated = None
        if item.annotation is not None:
            annotation = parse_sequence(
                tree.read_bytes(item.annotation), tree.describe(item.annotation)
            )
            annotated = frames_by_index(annotation)
        with tree.local_copy(item.video) as path:
            info = probe(path)
            for frame in decode(path, cfg.fps, cfg.frame_stride):
                decoded += 1
                if annotated is not None and frame.index not in annotated:
                    continue
                image = resize_short_side(frame.image, cfg.resize_short)
                height, width = image.shape[:2]
                jpeg = encode_jpeg(image, cfg.jpeg_quality)
                frames.append(EncodedFrame(frame.index, frame.timestamp_s, jpeg, width, height))
    except VideoDecodeError as exc:  # it names the local copy: name the source instead
        result.error = f"{where}: {exc.reason}"
        return result
    except (AnnotationError, FileNotFoundError) as exc:
        result.error = str(exc)
        return result
    except Exception as exc:
        result.error = f"{where}: {type(exc).__name__}: {exc}"
        return result
    if cfg.frame_stride:
        effective_fps = info.fps / cfg.frame_stride
    else:
        effective_fps = min(cfg.fps or info.fps, info.fps)
    clips = _clips(frames, cfg)
    for clip_index, clip in enumerate(clips):
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
            "width": clip[0].width,
            "height": clip[0].height,
            "num_frames": len(clip),
        }
        if annotated is not None:
            meta["objects"] = objects_meta(annotation)
            meta["frames"] = [frame_meta(annotated[frame.index]) for frame in clip]
        key = sample_key(item.video_id, clip_index if cfg.clip_frames else None)
        sample: dict = {"__key__": key, "meta.json": meta}
        for position, frame in enumerate(clip):
            sample[frame_name(position)] = frame.jpeg
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


def use_one_thread() -> None:
    """Each ingest process works on one core; parallelism comes from the number of processes."""
    cv2.setNumThreads(1)


def ingest_star(args: tuple) -> VideoResult:
    return ingest_video(*args)
