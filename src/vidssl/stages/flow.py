"""Flow: clip shards -> point tracks through forward and backward optical flow (PiCo 3.2), and,
with `flow.keep_flow`, the flow itself, JPEG-coded (vidssl.flow.codec).

For each split of `flow.splits` the clips have, every clip's kept frames are decoded (RGB), the
forward flow t -> t+1 and backward flow t+1 -> t between consecutive kept frames is estimated
(`flow.estimator`, `flow.batch_size` frame pairs per estimator call, each call covering
`batch_size // 2` consecutive pairs in both directions), and points are tracked through it
(vidssl.flow.tracks: `tracks.starts_per_frame` uniform start points per frame, the
forward-backward check with `alpha` and `beta`; tracks alive on fewer than `min_length` frames
are dropped). The start points are drawn from `np.random.default_rng([tracks.seed, h])`, `h` a
hash of the clip's key that does not change between runs or processes.

Output (`datasets/<dataset>/flow/<digest>/`):
- split `<split>`: TRACK shards that follow the clip shards one for one (track shard i holds the
  tracks of clip shard i's clips, same keys, same order; a shard is written, possibly empty,
  for every clip shard). Sample `<key>`: `tracks.npz` (`encode_tracks`) and `meta.json`
  {key, num_frames, height, width, estimator}. `vidssl.shards.read_split(..., beside=[this
  output's prefix])` joins them to the clips.
- split `flow_<split>` (with `keep_flow`): sample `<key>` per clip, `fwd_f{p:03d}_u.jpg`,
  `fwd_f{p:03d}_v.jpg`, `bwd_f{p:03d}_u.jpg`, `bwd_f{p:03d}_v.jpg` for each pair p (kept frames
  p and p+1; `decode_flow` with the stored bound) and `meta.json` {bound}. Its shards never
  straddle two clip shards but may split one (they are bounded by `shards.max_*`).
- `manifest.details`: `follows` (the clips URL), per-split counts, tracks per clip, mean track
  length, seconds spent in flow estimation, tracking, coding and decoding, and frames/s.
A clip that cannot be processed (an undecodable or missing frame, frames of different sizes,
fewer than 2 frames) is skipped and listed in the manifest as `<shard URL>#<key>`.

Work is pipelined: while the estimator runs on clip n in this thread, one thread reads and
decodes clip n+1 and another tracks and codes clip n-1 (OpenCV, numpy and torch release the
GIL); samples are written in clip order.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field

import cv2
import numpy as np

from vidssl.clips import frame_name
from vidssl.config import Experiment, FlowConfig, TrackConfig
from vidssl.errors import InputError
from vidssl.flow.codec import encode_flow
from vidssl.flow.estimators import FlowEstimator, build_estimator
from vidssl.flow.tracks import TRACKS_FIELD, Tracks, encode_tracks, track_points
from vidssl.progress import track
from vidssl.shards import Manifest, OutputWriter, decode_json, samples_from_shard
from vidssl.shards.reader import shard_refs
from vidssl.stages.base import StageOutput, StageSpec, input_manifest, run_cached, store_for
from vidssl.store import ObjectStore
from vidssl.video import decode_jpeg

log = logging.getLogger(__name__)

SPEC = StageSpec(name="flow", version=1)

#: Bytes of the key's sha256 that seed a clip's start points (with `tracks.seed`).
KEY_SEED_BYTES = 8


def flow_split(split: str) -> str:
    """The split holding the JPEG-coded flow of clip split `split`: `flow_<split>`."""
    return f"flow_{split}"


def flow_field(direction: str, pair: int, component: str) -> str:
    """`fwd_f003_u.jpg`: the field of `direction` (fwd, bwd) flow of pair `pair`, `component`
    u (dx) or v (dy)."""
    return f"{direction}_f{pair:03d}_{component}.jpg"


def key_seed(key: str) -> int:
    """A clip key's seed: the same on every run, process and machine (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:KEY_SEED_BYTES], "little")


class ClipFailed(Exception):
    """One clip the stage skips; the message is the manifest's reason."""


def decode_frames(sample: dict) -> np.ndarray:
    """A clip sample's kept frames as RGB uint8 (T, H, W, 3); ClipFailed naming the frame when
    one is missing, undecodable or of another size, or the clip has fewer than 2 frames."""
    meta = decode_json(sample)
    count = int(meta.get("num_frames", 0))
    if count < 2:
        raise ClipFailed(f"{count} frame(s): flow needs at least 2")
    frames = []
    for position in range(count):
        name = frame_name(position)
        if name not in sample:
            raise ClipFailed(f"frame {name} missing (meta.json says {count} frames)")
        try:
            image = cv2.cvtColor(decode_jpeg(sample[name]), cv2.COLOR_BGR2RGB)
        except ValueError as exc:
            raise ClipFailed(f"frame {name}: {exc}") from None
        if frames and image.shape != frames[0].shape:
            raise ClipFailed(
                f"frame {name} is {image.shape[1]}x{image.shape[0]}, frame {frame_name(0)} "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}"
            )
        frames.append(image)
    return np.stack(frames)


def clip_flow(
    estimator: FlowEstimator, frames: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forward flows t -> t+1 and backward flows t+1 -> t of a clip (T, H, W, 3), each float32
    (T-1, H, W, 2), through `forward_backward` on runs of `max(1, batch_size // 2)` consecutive
    pairs, so that each estimator call gets about `batch_size` frame pairs."""
    step = max(1, batch_size // 2)
    forward, backward = [], []
    for start in range(0, len(frames) - 1, step):
        fwd, bwd = estimator.forward_backward(frames[start : start + step + 1])
        forward.append(fwd)
        backward.append(bwd)
    return np.concatenate(forward), np.concatenate(backward)


def keep_tracks(tracks: Tracks, keep: np.ndarray) -> Tracks:
    """The tracks selected by the boolean mask `keep` (P,), in their order."""
    rows = np.repeat(keep, tracks.length)
    return Tracks(
        num_frames=tracks.num_frames,
        height=tracks.height,
        width=tracks.width,
        start=tracks.start[keep],
        length=tracks.length[keep],
        xy=tracks.xy[rows],
        stop=tracks.stop[keep],
        alpha=tracks.alpha,
        beta=tracks.beta,
    )


def clip_tracks(forward: np.ndarray, backward: np.ndarray, cfg: TrackConfig, key: str) -> Tracks:
    """The clip's point tracks (see the module docstring), those shorter than `min_length`
    frames dropped."""
    tracks = track_points(
        forward,
        backward,
        starts_per_frame=cfg.starts_per_frame,
        alpha=cfg.alpha,
        beta=cfg.beta,
        rng=np.random.default_rng([cfg.seed, key_seed(key)]),
    )
    return keep_tracks(tracks, tracks.length >= cfg.min_length)


def flow_sample(
    key: str, forward: np.ndarray, backward: np.ndarray, bound: float, quality: int
) -> dict:
    """The `flow_<split>` sample of a clip: four JPEGs per pair (see the module docstring)."""
    sample: dict = {"__key__": key, "meta.json": {"bound": bound}}
    for direction, flows in (("fwd", forward), ("bwd", backward)):
        for pair, flow in enumerate(flows):
            u, v = encode_flow(flow, bound, quality)
            sample[flow_field(direction, pair, "u")] = u
            sample[flow_field(direction, pair, "v")] = v
    return sample


@dataclass
class Clip:
    """One clip on its way through the stage."""

    key: str
    url: str
    frames: np.ndarray | None = None
    error: str | None = None
    decode_seconds: float = 0.0

    @property
    def source(self) -> str:
        """How the manifest names the clip when it is skipped."""
        return f"{self.url}#{self.key}"


@dataclass
class Finished:
    """A processed clip: its samples (None when skipped) and what it cost."""

    clip: Clip
    tracks: dict | None = None
    flow: dict | None = None
    num_frames: int = 0
    num_tracks: int = 0
    track_frames: int = 0  # sum of the kept tracks' lengths
    flow_seconds: float = 0.0
    tracking_seconds: float = 0.0
    tracking_cpu_seconds: float = 0.0  # this thread's CPU time: without waiting for a core
    coding_seconds: float = 0.0


@dataclass
class Totals:
    """Counts and seconds of one split (or all of them)."""

    clips: int = 0
    tracked: int = 0
    skipped: int = 0
    frames: int = 0
    tracks: int = 0
    track_frames: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("flow", "tracking", "tracking_cpu", "coding", "decode"), 0.0
        )
    )

    def add(self, done: Finished) -> None:
        self.clips += 1
        self.skipped += done.tracks is None
        self.tracked += done.tracks is not None
        self.frames += done.num_frames
        self.tracks += done.num_tracks
        self.track_frames += done.track_frames
        self.seconds["flow"] += done.flow_seconds
        self.seconds["tracking"] += done.tracking_seconds
        self.seconds["tracking_cpu"] += done.tracking_cpu_seconds
        self.seconds["coding"] += done.coding_seconds
        self.seconds["decode"] += done.clip.decode_seconds

    def merge(self, other: Totals) -> None:
        for name in ("clips", "tracked", "skipped", "frames", "tracks", "track_frames"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, seconds in other.seconds.items():
            self.seconds[name] += seconds

    def counts(self) -> dict:
        return {
            "clips": self.clips,
            "tracked": self.tracked,
            "skipped": self.skipped,
            "frames": self.frames,
            "tracks": self.tracks,
        }


def _read_clip(sample: dict) -> Clip:
    """In the reading thread: the sample's frames decoded, or the reason they cannot be."""
    started = time.perf_counter()
    clip = Clip(sample["__key__"], sample["__url__"])
    try:
        clip.frames = decode_frames(sample)
    except ClipFailed as exc:
        clip.error = str(exc)
    except (ValueError, KeyError) as exc:  # meta.json that is not JSON or lacks num_frames
        clip.error = f"meta.json: {type(exc).__name__}: {exc}"
    clip.decode_seconds = time.perf_counter() - started
    return clip


_DONE = object()


def prefetched(items: Iterable, depth: int = 1) -> Iterator:
    """`items`, produced `depth` ahead in a thread of their own; an exception there is raised
    here, at the point it happened. Stopping early (break, an error) stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the consumer
            put((_DONE, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="flow-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class FlowRun:
    """One run of the stage: its estimator, writing into `writer` split by split."""

    def __init__(self, cfg: FlowConfig, writer: OutputWriter) -> None:
        options = {"batch_size": cfg.batch_size} if cfg.estimator.startswith("raft") else {}
        self.cfg = cfg
        self.writer = writer
        self.estimator = build_estimator(cfg.estimator, cfg.weights, cfg.device, **options)

    def split(
        self, store: ObjectStore, prefix: str, manifest: Manifest, split: str
    ) -> Iterator[Finished]:
        """Process the clip shards of `split` in order, ending the output's shards after each;
        yields each clip once written."""
        self.writer.split(split, unbounded=True)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-track") as finisher:
            for ref in shard_refs(store, prefix, manifest, split):
                with closing(prefetched(map(_read_clip, samples_from_shard(ref)))) as clips:
                    yield from self._shard(clips, split, finisher)
                self.writer.end_shard(split, keep_empty=True)
                if self.cfg.keep_flow:
                    self.writer.end_shard(flow_split(split))

    def _shard(
        self, clips: Iterable[Clip], split: str, finisher: ThreadPoolExecutor
    ) -> Iterator[Finished]:
        pending: deque[Future[Finished]] = deque()
        for clip in clips:
            flows, seconds = None, 0.0
            if clip.frames is not None:
                started = time.perf_counter()
                try:
                    flows = clip_flow(self.estimator, clip.frames, self.cfg.batch_size)
                except InputError as exc:
                    clip.error = f"flow: {exc}"
                seconds = time.perf_counter() - started
            pending.append(finisher.submit(self._finish, clip, flows, seconds))
            while len(pending) > 1:
                yield self._write(split, pending.popleft().result())
        while pending:
            yield self._write(split, pending.popleft().result())

    def _finish(
        self, clip: Clip, flows: tuple[np.ndarray, np.ndarray] | None, flow_seconds: float
    ) -> Finished:
        """In the finishing thread: track and code one clip's flow."""
        done = Finished(clip, flow_seconds=flow_seconds)
        if flows is None or clip.frames is None:
            return done
        forward, backward = flows
        frames, height, width = clip.frames.shape[:3]
        started, cpu = time.perf_counter(), time.thread_time()
        tracks = clip_tracks(forward, backward, self.cfg.tracks, clip.key)
        done.tracking_seconds = time.perf_counter() - started
        done.tracking_cpu_seconds = time.thread_time() - cpu
        meta = {
            "key": clip.key,
            "num_frames": frames,
            "height": height,
            "width": width,
            "estimator": self.cfg.estimator,
        }
        done.tracks = {"__key__": clip.key, TRACKS_FIELD: encode_tracks(tracks), "meta.json": meta}
        if self.cfg.keep_flow:
            started = time.perf_counter()
            done.flow = flow_sample(
                clip.key, forward, backward, self.cfg.bound, self.cfg.jpeg_quality
            )
            done.coding_seconds = time.perf_counter() - started
        done.num_frames = frames
        done.num_tracks = tracks.num_tracks
        done.track_frames = int(tracks.length.sum())
        clip.frames = None  # free the frames before the next clip's
        return done

    def _write(self, split: str, done: Finished) -> Finished:
        if done.tracks is None:
            self.writer.skip(done.clip.source, done.clip.error or "no flow")
            log.warning("flow: skipped %s: %s", done.clip.source, done.clip.error)
            return done
        self.writer.write(split, done.tracks)
        if done.flow is not None:
            self.writer.write(flow_split(split), done.flow)
        return done


def summary(totals: Totals, by_split: dict[str, Totals], wall_seconds: float) -> dict:
    """The manifest's details (less `follows` and `estimator`)."""
    seconds = totals.seconds
    return {
        "splits": {split: t.counts() for split, t in by_split.items()},
        "clips": totals.clips,
        "tracked": totals.tracked,
        "skipped": totals.skipped,
        "frames": totals.frames,
        "tracks_per_clip": round(totals.tracks / totals.tracked, 1) if totals.tracked else 0.0,
        "mean_track_length": round(totals.track_frames / totals.tracks, 2)
        if totals.tracks
        else 0.0,
        "flow_seconds": round(seconds["flow"], 3),
        "tracking_seconds": round(seconds["tracking"], 3),
        # the tracking thread's CPU time: its wall time includes waiting for a core while the
        # estimator runs beside it
        "tracking_cpu_seconds": round(seconds["tracking_cpu"], 3),
        "coding_seconds": round(seconds["coding"], 3),
        "decode_seconds": round(seconds["decode"], 3),
        "wall_seconds": round(wall_seconds, 3),
        # frames through the estimator per second of estimator time, and through the stage
        # per second of its wall time (reading, tracking, coding, writing included)
        "flow_frames_per_second": round(totals.frames / seconds["flow"], 2)
        if seconds["flow"]
        else 0.0,
        "frames_per_second": round(totals.frames / wall_seconds, 2) if wall_seconds else 0.0,
    }


def run(experiment: Experiment, clips_url: str, *, force: bool = False) -> StageOutput:
    """Tracks (and flow) of the clips at `clips_url`; cached by the flow config and the clips."""
    store = store_for(experiment)
    prefix, manifest = input_manifest(store, clips_url)
    cfg = experiment.flow
    splits = [split for split in cfg.splits if split in manifest.splits]

    def build(writer: OutputWriter) -> None:
        started = time.perf_counter()
        stage = FlowRun(cfg, writer)
        totals, by_split = Totals(), {}
        for split in splits:
            counts = by_split[split] = Totals()
            clips = stage.split(store, prefix, manifest, split)
            total = manifest.splits[split].samples
            for done in track(clips, total, f"flow {split}", unit="clips"):
                counts.add(done)
            totals.merge(counts)
            log.info("flow %s: %s", split, counts.counts())
        writer.details.update(
            follows=clips_url,
            estimator=cfg.estimator,
            **summary(totals, by_split, time.perf_counter() - started),
        )
        details = writer.details
        log.info(
            "flow: %d clips, %.1f tracks per clip (mean length %.1f frames); %.1f frames/s "
            "through %s, tracking %.0f%% of flow time",
            totals.tracked, details["tracks_per_clip"], details["mean_track_length"],
            details["flow_frames_per_second"], cfg.estimator,
            100 * totals.seconds["tracking"] / max(totals.seconds["flow"], 1e-9),
        )  # fmt: skip

    return run_cached(
        store,
        SPEC,
        experiment,
        {"flow": cfg.model_dump()},
        [manifest.digest],
        build,
        force=force,
    )
