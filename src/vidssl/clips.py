"""Decoding one video into clip samples: the work each ingest process does.

Kept free of the shard and stage modules (and so of torch) so worker processes start fast.
Every way one input can fail ends here as `VideoResult.error`, a one-line reason naming the
file, so the stage can skip and list that input and go on with the others.

Synthetic ground truth: when the synthetic source has `flow_step` > 0 (= `ingest.frame_stride`,
checked by the config), each clip of a video also carries, per kept frame position p, the
synth stage's ground truth (vidssl.synth.flow) resized exactly like the frames:
`flow_gt_f{p:03d}.npy` float16 (H, W, 2) forward flow (d column, d row) in pixels of the stored
frames from kept frame p to kept frame p + 1, and `flow_valid_f{p:03d}.png` uint8 0/255, both
absent for a clip's last frame and wherever frames p and p + 1 are not `flow_step` source
frames apart (a frame that failed to decode, or one the clean stage dropped);
`category_f{p:03d}.png` uint8 (0 background, 1 + index in `vidssl.synth.shapes.CATEGORIES`
on the object). `meta.json` says `"ground_truth": {"flow": true, "category_masks": true}`.
Read them with `ground_truth(sample, position)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from vidssl.config import IngestConfig
from vidssl.datasets import VideoItem, trackingnet
from vidssl.errors import InputError
from vidssl.objectron.annotations import Annotation, AnnotationError, read_annotation
from vidssl.store.tree import FileTree
from vidssl.synth.flow import flow_file_key, read_flow_file, resize_flow, resize_nearest
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


def flow_gt_name(position: int) -> str:
    """Ground-truth forward flow from kept frame `position` to the next (synthetic clips)."""
    return f"flow_gt_f{position:03d}.npy"


def flow_valid_name(position: int) -> str:
    """Validity (0/255) of `flow_gt_name(position)`'s flow."""
    return f"flow_valid_f{position:03d}.png"


def category_name(position: int) -> str:
    """Per-pixel category mask of kept frame `position` (synthetic clips)."""
    return f"category_f{position:03d}.png"


@dataclass(frozen=True)
class GroundTruth:
    """A kept frame's synthetic ground truth, at the stored frame's resolution; None where the
    sample has none. `flow` (H, W, 2) float32 pixels (d column, d row) to the next kept frame,
    `flow_valid` (H, W) bool, `category` (H, W) uint8 (0 background, 1 + category index)."""

    flow: np.ndarray | None
    flow_valid: np.ndarray | None
    category: np.ndarray | None


def ground_truth(sample: Mapping, position: int) -> GroundTruth:
    """The ground truth of kept frame `position` of a clip sample (see the module docstring);
    InputError naming the sample and field when a field cannot be decoded."""
    return GroundTruth(
        _field(sample, flow_gt_name(position), _decode_flow),
        _field(sample, flow_valid_name(position), lambda data: _decode_mask(data) > 127),
        _field(sample, category_name(position), _decode_mask),
    )


def _field(sample: Mapping, name: str, decode: Callable[[object], np.ndarray]) -> np.ndarray | None:
    if name not in sample:
        return None
    try:
        return decode(sample[name])
    except Exception as exc:
        where = f"{sample['__url__']}: " if "__url__" in sample else ""
        raise InputError(
            f"{where}sample {sample.get('__key__')!r}: field {name!r} cannot be decoded: {exc}"
        ) from None


def _decode_flow(data: object) -> np.ndarray:
    flow = data if isinstance(data, np.ndarray) else np.load(io.BytesIO(data), allow_pickle=False)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.dtype.kind != "f":
        raise ValueError(f"expected (H, W, 2) floats, got {flow.dtype} {flow.shape}")
    return flow.astype(np.float32)


def _decode_mask(data: object) -> np.ndarray:
    if isinstance(data, np.ndarray):
        mask = data
    else:
        mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise ValueError("not a decodable PNG")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 image, got {mask.dtype} {mask.shape}")
    return mask


def renumber_ground_truth(sample: Mapping, kept: Sequence[int]) -> dict:
    """The ground-truth fields of `sample` for its frames at positions `kept` (ascending), at
    their new positions 0, 1, ...: a category mask follows its frame; a flow and its validity
    follow their frame only while its successor is still the next kept frame."""
    fields = {}
    for position, old in enumerate(kept):
        names = [category_name]
        if position + 1 < len(kept) and kept[position + 1] == old + 1:
            names += [flow_gt_name, flow_valid_name]
        for name in names:
            if name(old) in sample:
                fields[name(position)] = sample[name(old)]
    return fields


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


@dataclass(frozen=True)
class SourceGroundTruth:
    """A synthetic video's ground-truth file (vidssl.synth.flow.write_flow_file), at the
    video's own resolution."""

    source: str  # the file, for messages
    step: int
    pair_of: dict[int, int]  # first source frame index of a pair -> its index in `flow`
    flow: np.ndarray  # (P, H, W, 2) float32
    valid: np.ndarray  # (P, H, W) bool
    category: np.ndarray  # (T, H, W) uint8


def _read_ground_truth(
    tree: FileTree, item: VideoItem, step: int, info: VideoInfo, where: str
) -> SourceGroundTruth:
    """The video's ground-truth file; InputRejected (naming it) when it is missing, unreadable
    or does not fit the video (frame size, pair step)."""
    key = flow_file_key(item.video_id)
    source = tree.describe(key)
    if not tree.exists(key):
        raise InputRejected(
            f"{where}: dataset.source.flow_step is {step} but its ground truth {source} is missing"
        )
    try:
        arrays = read_flow_file(io.BytesIO(tree.read_bytes(key)))
        pairs, flow, valid, category = (
            arrays[name] for name in ("pairs", "flow", "valid", "category")
        )
    except Exception as exc:
        raise InputRejected(f"{source}: not a readable ground-truth file: {exc}") from None
    size = (info.height, info.width)
    if flow.shape[1:3] != size or category.shape[1:] != size:
        raise InputRejected(
            f"{source}: ground truth is {category.shape[1:]} (rows, columns) but the video "
            f"{where} is {size}"
        )
    if len(pairs) and not np.all(pairs[:, 1] - pairs[:, 0] == step):
        raise InputRejected(
            f"{source}: its flow pairs are not dataset.source.flow_step = {step} frames apart "
            f"(first pair: {pairs[0].tolist()})"
        )
    pair_of = {int(first): i for i, first in enumerate(pairs[:, 0])}
    return SourceGroundTruth(source, step, pair_of, flow, valid, category)


def _ground_truth_fields(clip: list[EncodedFrame], truth: SourceGroundTruth) -> dict:
    """A clip's ground-truth fields, resized like its frames (see the module docstring)."""
    fields: dict = {}
    for position, frame in enumerate(clip):
        size = (frame.width, frame.height)
        if frame.index >= len(truth.category):
            raise InputRejected(
                f"{truth.source}: no category mask for frame {frame.index} "
                f"(it holds {len(truth.category)} frames)"
            )
        fields[category_name(position)] = _png(resize_nearest(truth.category[frame.index], *size))
        following = clip[position + 1] if position + 1 < len(clip) else None
        if following is None or following.index != frame.index + truth.step:
            continue
        pair = truth.pair_of.get(frame.index)
        if pair is None:
            raise InputRejected(
                f"{truth.source}: no flow for frames ({frame.index}, {following.index})"
            )
        flow, valid = resize_flow(truth.flow[pair], truth.valid[pair], *size)
        # Invalid pixels (points behind the camera) can project arbitrarily far: their flow
        # means nothing, and is stored as NaN rather than overflowing float16.
        flow = np.where(valid[..., None], flow, np.nan)
        fields[flow_gt_name(position)] = flow.astype(np.float16)
        fields[flow_valid_name(position)] = _png(valid.astype(np.uint8) * 255)
    return fields


def _png(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


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
    truth: SourceGroundTruth | None = None,
) -> list[dict]:
    """One sample per clip: its meta.json and JPEGs (and its ground truth, given `truth`)."""
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
        if truth is not None:
            meta["ground_truth"] = {"flow": True, "category_masks": True}
        clip_key = key if cfg.clip_frames is None else f"{key}_c{clip_index:03d}"
        sample: dict = {"__key__": clip_key, "meta.json": meta}
        for position, frame in enumerate(clip):
            sample[frame_name(position)] = frame.jpeg
        if truth is not None:
            sample.update(_ground_truth_fields(clip, truth))
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
    item: VideoItem, dataset: str, cfg: IngestConfig, key: str | None = None, flow_step: int = 0
) -> VideoResult:
    """Decode one video into clip samples (runs in a worker process). Any failure of this
    input, expected or not, becomes `result.error` naming the file: one bad input must never
    stop the others. `key` is the video's sample key from `assign_keys`; `flow_step` > 0 (a
    synthetic source's) adds the synth stage's ground truth to the samples."""
    result = VideoResult(item)
    tree = FileTree(item.tree_root)
    where = tree.describe(item.video)
    key = key or sample_key(item.video_id, None)
    try:
        result.samples, result.record = _ingest(item, dataset, cfg, key, tree, where, flow_step)
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
    item: VideoItem,
    dataset: str,
    cfg: IngestConfig,
    key: str,
    tree: FileTree,
    where: str,
    flow_step: int = 0,
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
    truth = None
    if flow_step:
        truth = _read_ground_truth(tree, item, flow_step, decoded.info, where)
    samples = _samples(item, dataset, cfg, key, decoded, annotation, boxes, truth)
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


def in_clip_fraction(clip_key: str, fraction: float) -> bool:
    """Whether a clip belongs to a `fraction` of all clips chosen by a stable hash of its key
    (the same clips every run and in every stage: export writes dense maps of these, the dense
    bench reads its truth from them)."""
    if fraction >= 1:
        return True
    digest = hashlib.sha256(clip_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
