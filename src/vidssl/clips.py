"""Decoding one video into clip samples: the work each ingest process does.

Kept free of the shard and stage modules (and so of torch) so worker processes start fast.
Every way one input can fail ends here as `VideoResult.error`, a one-line reason naming the
file, so the stage can skip and list that input and go on with the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2

from vidssl.config import IngestConfig
from vidssl.datasets import VideoItem, trackingnet
from vidssl.objectron.annotations import Annotation, AnnotationError, read_annotation
from vidssl.store.tree import FileTree
from vidssl.video import (
    DecodeStats,
    FrameFolder,
    VideoDecodeError,
    VideoInfo,
    decode,
    encode_jpeg,
    probe,
    resize_short_side,
)

KEY_HASH_CHARS = 8


class InputRejected(Exception):
    """One input the stage must skip; the message (naming the file) is the manifest's reason."""


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


@dataclass(frozen=True)
class KeyRename:
    """A video whose sanitised key another video already had: it gets a hash suffix."""

    video: str  # the file (its dataset-relative path)
    key: str  # the key it gets
    plain_key: str  # the key it would have had
    collides_with: str  # the file that keeps `plain_key`


def assign_keys(items: Iterable[VideoItem]) -> tuple[dict[str, str], list[KeyRename]]:
    """The sample key (before any clip suffix) of each video file, unique over the dataset.

    Sanitising maps many ids onto one key (`a b` and `a_b`, or every non-ASCII letter to `_`).
    Videos are ranked, ids that are already valid keys first, then by id and file; the first
    keeps its plain key, so existing datasets keep theirs, and each later one gets
    `_<hash of its file path>` (lengthened in the unlikely case that is taken too). The same
    set of files always gives the same keys."""
    ranked = sorted(
        items, key=lambda i: (sample_key(i.video_id, None) != i.video_id, i.video_id, i.video)
    )
    owner: dict[str, str] = {}  # key -> file
    keys: dict[str, str] = {}
    renames = []
    for item in ranked:
        plain = key = sample_key(item.video_id, None)
        digest = hashlib.sha256(item.video.encode("utf-8")).hexdigest()
        chars = KEY_HASH_CHARS
        while key in owner:
            key = f"{plain}_{digest[:chars]}"
            chars += 4
        if key != plain:
            renames.append(KeyRename(item.video, key, plain, owner[plain]))
        owner[key] = item.video
        keys[item.video] = key
    return keys, renames


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


@dataclass
class Decoded:
    """One video's frames as JPEGs, with what decoding them found."""

    info: VideoInfo
    frames: list[EncodedFrame]
    stats: DecodeStats
    yielded: int  # frames the resampling kept, annotated or not
    first_index: int
    last_index: int


def _decode_frames(
    path: str | FrameFolder, cfg: IngestConfig, annotation: Annotation | None, stats: DecodeStats
) -> Decoded:
    """Frames are resized and JPEG-coded as they are decoded, so only the JPEGs are held."""
    info = probe(path)
    frames: list[EncodedFrame] = []
    yielded, first, last = 0, -1, -1
    for frame in decode(path, cfg.fps, cfg.frame_stride, stats):
        yielded += 1
        first = frame.index if first < 0 else first
        last = frame.index
        if annotation is not None and frame.index not in annotation.frames:
            continue
        image = resize_short_side(frame.image, cfg.resize_short)
        height, width = image.shape[:2]
        jpeg = encode_jpeg(image, cfg.jpeg_quality)
        frames.append(EncodedFrame(frame.index, frame.timestamp_s, jpeg, width, height))
    return Decoded(info, frames, stats, yielded, first, last)


def _id_range(ids: Iterable[int]) -> str:
    ordered = sorted(ids)
    if not ordered:
        return "none"
    return f"{ordered[0]}-{ordered[-1]} ({len(ordered)} ids)"


def _check_kept(
    where: str, decoded: Decoded, annotation: Annotation | None, cfg: IngestConfig
) -> None:
    """InputRejected when the video yields no sample: no decoded frame has an annotation, or
    fewer frames remain than one clip needs."""
    kept = len(decoded.frames)
    if kept == 0 and annotation is not None:
        refused = f" ({len(annotation.refused)} more refused)" if annotation.refused else ""
        raise InputRejected(
            f"{where}: annotation {annotation.source}: its frame ids "
            f"{_id_range(annotation.frames)}{refused} match none of the {decoded.yielded} "
            f"decoded frames (source indices {decoded.first_index}-{decoded.last_index})"
        )
    if kept == 0:
        raise InputRejected(
            f"{where}: no frame kept ({decoded.stats.read_frames} read, none at a kept index)"
        )
    if cfg.clip_frames is not None and kept < cfg.clip_frames:
        raise InputRejected(
            f"{where}: too short: {kept} frames, a clip needs {cfg.clip_frames} "
            f"({decoded.stats.read_frames} frames read at {decoded.info.fps:g} fps)"
        )


def _effective_fps(info: VideoInfo, cfg: IngestConfig) -> float:
    if cfg.frame_stride:
        return info.fps / cfg.frame_stride
    return min(cfg.fps or info.fps, info.fps)


def _samples(
    item: VideoItem,
    dataset: str,
    cfg: IngestConfig,
    key: str,
    decoded: Decoded,
    annotation: Annotation | None,
    boxes: list[trackingnet.PixelBox] | None,
) -> list[dict]:
    """One sample per clip: its meta.json and JPEGs."""
    samples = []
    for clip_index, clip in enumerate(_clips(decoded.frames, cfg)):
        meta = {
            "dataset": dataset,
            "video_id": item.video_id,
            "clip_index": clip_index,
            "category": item.category,
            "split": item.split,
            "fps": _effective_fps(decoded.info, cfg),
            "source_fps": decoded.info.fps,
            "source_frame_indices": [frame.index for frame in clip],
            "timestamps": [round(frame.timestamp_s, 6) for frame in clip],
            "shot_boundaries": [0],
            "width": clip[0].width,
            "height": clip[0].height,
            "num_frames": len(clip),
        }
        if annotation is not None:
            meta["objects"] = annotation.objects
            meta["frames"] = [annotation.frames[frame.index] for frame in clip]
        if boxes is not None:
            indices, info = meta["source_frame_indices"], decoded.info
            meta["boxes"] = trackingnet.boxes_at(boxes, indices, info.width, info.height)
        clip_key = key if cfg.clip_frames is None else f"{key}_c{clip_index:03d}"
        sample: dict = {"__key__": clip_key, "meta.json": meta}
        for position, frame in enumerate(clip):
            sample[frame_name(position)] = frame.jpeg
        samples.append(sample)
    return samples


def _record(
    item: VideoItem, key: str, decoded: Decoded, annotation: Annotation | None, clips: list[dict]
) -> dict:
    """The manifest's line for a kept video: what was read, kept and lost, and why."""
    stats = decoded.stats
    record = {
        "video": item.video_id,
        "file": item.video,
        "key": key,
        "split": item.split,
        "source_frames": stats.declared_frames,
        "read_frames": stats.read_frames,
        "failed_frames": stats.failed_frames,
        "missing_frames": stats.missing_frames,
        "truncated": bool(stats.failed_frames or stats.missing_frames),
        "decoded_frames": decoded.yielded,
        "unannotated_frames": decoded.yielded - len(decoded.frames),
        "clips": len(clips),
        "kept_frames": sum(sample["meta.json"]["num_frames"] for sample in clips),
    }
    if annotation is not None and annotation.refused:
        frame_id, why = annotation.refused[0]
        record["refused_annotations"] = len(annotation.refused)
        record["refused_first"] = f"frame {frame_id}: {why}"
    return record


def ingest_video(
    item: VideoItem, dataset: str, cfg: IngestConfig, key: str | None = None
) -> VideoResult:
    """Decode one video into clip samples (runs in a worker process). Any failure of this
    input, expected or not, becomes `result.error` naming the file: one bad input must never
    stop the others. `key` is the video's sample key from `assign_keys`."""
    result = VideoResult(item)
    tree = FileTree(item.tree_root)
    where = tree.describe(item.video)
    key = key or sample_key(item.video_id, None)
    try:
        result.samples, result.record = _ingest(item, dataset, cfg, key, tree, where)
    except VideoDecodeError as exc:  # it names the local copy: name the source instead
        result.error = f"{where}: {exc.reason}"
    except (AnnotationError, trackingnet.AnnoError, InputRejected, FileNotFoundError) as exc:
        result.error = str(exc)
    except Exception as exc:
        result.error = f"{where}: {type(exc).__name__}: {exc}"
    if result.error:
        result.samples, result.record = [], {}
    return result


def _ingest(
    item: VideoItem, dataset: str, cfg: IngestConfig, key: str, tree: FileTree, where: str
) -> tuple[list[dict], dict]:
    if item.size < 0:
        raise InputRejected(f"{where}: listed by the dataset but missing from disk")
    annotation, boxes = None, None
    if item.annotation is not None:
        data, source = tree.read_bytes(item.annotation), tree.describe(item.annotation)
        if item.annotation_format == "trackingnet":
            boxes = trackingnet.parse_anno(data, source)
        else:
            annotation = read_annotation(data, source)
    with _local_video(tree, item) as video:
        decoded = _decode_frames(video, cfg, annotation, DecodeStats())
    _check_kept(where, decoded, annotation, cfg)
    samples = _samples(item, dataset, cfg, key, decoded, annotation, boxes)
    return samples, _record(item, key, decoded, annotation, samples)


@contextlib.contextmanager
def _local_video(tree: FileTree, item: VideoItem) -> Iterator[str | FrameFolder]:
    """The video where the decoder can open it: a local file, or a local folder of frames."""
    if item.frame_folder_fps is None:
        with tree.local_copy(item.video) as path:
            yield path
    else:
        with tree.local_folder(item.video) as folder:
            yield FrameFolder(folder, item.frame_folder_fps)


def use_one_thread() -> None:
    """Each ingest process works on one core; parallelism comes from the number of processes."""
    cv2.setNumThreads(1)


def ingest_star(args: tuple) -> VideoResult:
    return ingest_video(*args)
