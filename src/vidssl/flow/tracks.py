"""Point tracks through optical flow (PiCo section 3.2, after Sundaram et al. 2010).

A point at `x` on frame t moves to `x + w_t(x)` on frame t+1, the flow sampled bilinearly
between pixels. The track stops at occlusion, found by forward-backward inconsistency
(equation 3 of the paper, as in DESIGN.md "PiCo details the paper text lost"):

    |w(x) + ŵ(x + w(x))|^2 > alpha (|w(x)|^2 + |ŵ(x + w(x))|^2) + beta

with `w` the forward flow t -> t+1 and `ŵ` the backward flow t+1 -> t, or when it leaves the
frame. Start points are uniform in space and time. Every step is vectorised over all live
points: the only Python loop runs over time.

Conventions used throughout `vidssl.flow`: a point is (x, y) in pixels of the flow's grid, x the
column and y the row, with pixel centres at integer coordinates, so a frame of H x W pixels
spans [0, W-1] x [0, H-1]. A flow field is (H, W, 2) holding (u, v) = (dx, dy) in pixels.
Frames are indices 0..T-1 into the clip the flow was computed on.

Storage: `encode_tracks` writes one `tracks.npz` sample field (a dict of arrays; the sample key
itself has no dot) with positions in half precision, as the paper stores its trajectories.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np

TRACKS_FIELD = "tracks.npz"

STOP_CLIP_END = 0
"""`Tracks.stop`: the track reached the clip's last frame."""
STOP_OCCLUDED = 1
"""`Tracks.stop`: the forward-backward check failed for the step after its last frame."""
STOP_LEFT_FRAME = 2
"""`Tracks.stop`: the step after its last frame left the frame."""

_STORED = ("shape", "thresholds", "start", "length", "stop", "origin", "offset")


@dataclass(frozen=True, eq=False)
class Tracks:
    """Point tracks of one clip, stored compactly, one contiguous run per track.

    Track p is alive on frames `start[p] .. end[p]` (inclusive, `end = start + length - 1`);
    its positions on those frames are `xy[first[p] : first[p] + length[p]]`, (x, y) in pixels,
    in frame order. A track is alive on one contiguous run of frames: it never restarts.
    `stop[p]` says why it ended (`STOP_*`). `alpha` and `beta` (px^2) are the thresholds it
    was computed with.
    """

    num_frames: int
    height: int
    width: int
    start: np.ndarray  # (P,) int64 frame index
    length: np.ndarray  # (P,) int64 frames alive, >= 1
    xy: np.ndarray  # (N, 2) float32 pixels, N = length.sum()
    stop: np.ndarray  # (P,) uint8 STOP_* code
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        p = self.start.shape[0]
        if self.start.shape != (p,) or self.length.shape != (p,) or self.stop.shape != (p,):
            raise ValueError("Tracks: start, length and stop must be 1-D of one length")
        if self.xy.ndim != 2 or self.xy.shape[1] != 2 or self.xy.shape[0] != self.length.sum():
            raise ValueError(
                f"Tracks: xy must be ({int(self.length.sum())}, 2), not {self.xy.shape}"
            )
        if p and (self.length.min() < 1 or self.start.min() < 0):
            raise ValueError("Tracks: every track needs start >= 0 and length >= 1")
        if p and (self.start + self.length).max() > self.num_frames:
            raise ValueError(f"Tracks: a track runs past the clip's {self.num_frames} frames")

    @property
    def num_tracks(self) -> int:
        return int(self.start.shape[0])

    @property
    def end(self) -> np.ndarray:
        """(P,) last frame on which each track is alive (inclusive)."""
        return self.start + self.length - 1

    @cached_property
    def first(self) -> np.ndarray:
        """(P,) row of `xy` holding each track's start position."""
        return np.cumsum(self.length) - self.length

    def alive_on(self, frame: int) -> np.ndarray:
        """(P,) bool: which tracks are alive on `frame`."""
        return (self.start <= frame) & (frame <= self.end)

    def at(self, track: np.ndarray, frame: np.ndarray | int) -> np.ndarray:
        """(M, 2) float32 positions (x, y) of tracks `track` (M,) on frames `frame` (M,) or
        one frame for all; every track must be alive on its frame."""
        track = np.asarray(track, dtype=np.int64)
        frame = np.broadcast_to(np.asarray(frame, dtype=np.int64), track.shape)
        step = frame - self.start[track]
        if np.any((step < 0) | (step >= self.length[track])):
            raise ValueError("Tracks.at: a track is not alive on the frame asked for")
        return self.xy[self.first[track] + step]

    def dense(self) -> np.ndarray:
        """(P, T, 2) float32 positions, NaN where a track is not alive (memory P*T*8 bytes)."""
        out = np.full((self.num_tracks, self.num_frames, 2), np.nan, dtype=np.float32)
        track = np.repeat(np.arange(self.num_tracks), self.length)
        frame = np.arange(self.xy.shape[0]) - self.first[track] + self.start[track]
        out[track, frame] = self.xy
        return out


def bilinear(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample `field` (H, W, C) at sub-pixel points `xy` (N, 2), (x, y) in pixels inside
    [0, W-1] x [0, H-1]; returns (N, C) float64. Exact for fields affine in x and y."""
    height, width, channels = field.shape
    x = xy[:, 0]
    y = xy[:, 1]
    x0 = np.clip(x.astype(np.intp), 0, width - 2)  # == floor on [0, W-1]
    y0 = np.clip(y.astype(np.intp), 0, height - 2)
    fx = x - x0
    fy = y - y0
    w11 = fx * fy
    w01 = fx - w11
    w10 = fy - w11
    w00 = 1.0 - fx - w10
    flat = np.ascontiguousarray(field).reshape(-1)  # a view unless field is strided
    row = width * channels
    corner = (y0 * width + x0) * channels
    out = np.empty((x.size, channels), dtype=np.float64)
    for c in range(channels):  # 1-D gathers: ~3x faster than fancy-indexing (N, C) rows
        i = corner + c
        out[:, c] = (
            flat.take(i) * w00
            + flat.take(i + channels) * w01
            + flat.take(i + row) * w10
            + flat.take(i + row + channels) * w11
        )
    return out


def fb_consistent(
    forward: np.ndarray, backward: np.ndarray, alpha: float, beta: float
) -> np.ndarray:
    """(N,) bool: the Sundaram et al. test passes, i.e. NOT
    |w + ŵ|^2 > alpha (|w|^2 + |ŵ|^2) + beta, for `forward` w = w(x) and `backward` ŵ = ŵ(x + w(x)),
    both (N, 2) in pixels; `beta` in px^2, `alpha` unitless."""
    u, v, u_hat, v_hat = forward[:, 0], forward[:, 1], backward[:, 0], backward[:, 1]
    error = (u + u_hat) ** 2 + (v + v_hat) ** 2
    scale = u * u + v * v + u_hat * u_hat + v_hat * v_hat
    return error <= alpha * scale + beta


def seed_points(
    num_frames: int, height: int, width: int, per_frame: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Start points uniform in space and time: `per_frame` points on each of frames
    0..T-2 (the frames with a forward flow; a point started on the last frame could not move),
    each uniform on [0, W-1] x [0, H-1]. Returns frames (P,) int64 and xy (P, 2) float64."""
    if per_frame < 1:
        raise ValueError(f"starts_per_frame must be >= 1, got {per_frame}")
    frames = np.repeat(np.arange(num_frames - 1, dtype=np.int64), per_frame)
    xy = rng.uniform(0.0, 1.0, size=(frames.size, 2)) * [width - 1, height - 1]
    return frames, xy


def track_points(
    forward: np.ndarray,
    backward: np.ndarray,
    *,
    starts: tuple[np.ndarray, np.ndarray] | None = None,
    starts_per_frame: int | None = None,
    density: float | None = None,
    alpha: float = 0.01,
    beta: float = 0.5,
    rng: np.random.Generator | None = None,
) -> Tracks:
    """Track points through a clip of T frames.

    `forward[t]` is the flow from frame t to t+1 and `backward[t]` the flow from t+1 to t,
    both (T-1, H, W, 2) in pixels. Give exactly one of: `starts` (frames (P,), xy (P, 2): the
    start points, track p starting at the p-th), `starts_per_frame` (that many uniform points
    on each of frames 0..T-2, see `seed_points`) or `density` (points per pixel per frame:
    `round(density * H * W)` per frame, at least one); the last two need `rng`.
    `alpha` (unitless) and `beta` (px^2) are the occlusion thresholds of equation 3.
    """
    forward = np.asarray(forward)
    backward = np.asarray(backward)
    if forward.ndim != 4 or forward.shape[-1] != 2 or forward.shape[0] < 1:
        raise ValueError(f"forward flow must be (T-1, H, W, 2) with T >= 2, got {forward.shape}")
    if backward.shape != forward.shape:
        raise ValueError(f"backward flow {backward.shape} must match forward {forward.shape}")
    steps, height, width, _ = forward.shape
    num_frames = steps + 1
    if height < 2 or width < 2:
        raise ValueError(f"flow must be at least 2 x 2 pixels, got {height} x {width}")
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    start_frames, start_xy = _start_points(
        num_frames, height, width, starts, starts_per_frame, density, rng
    )
    count = start_frames.size
    order = np.argsort(start_frames, kind="stable")
    bounds = np.searchsorted(start_frames[order], np.arange(num_frames + 1))
    limit = np.array([width - 1, height - 1], dtype=np.float64)
    stop = np.full(count, STOP_CLIP_END, dtype=np.uint8)
    ids = np.empty(0, dtype=np.int64)
    pos = np.empty((0, 2), dtype=np.float64)
    seen_ids: list[np.ndarray] = []
    seen_xy: list[np.ndarray] = []
    for t in range(num_frames):
        new = order[bounds[t] : bounds[t + 1]]
        ids = np.concatenate((ids, new))
        pos = np.concatenate((pos, start_xy[new]))
        seen_ids.append(ids)
        seen_xy.append(pos.astype(np.float32))
        if t == steps or ids.size == 0:
            continue
        ids, pos = _advance(forward[t], backward[t], ids, pos, limit, alpha, beta, stop)
    length = np.bincount(np.concatenate(seen_ids), minlength=count).astype(np.int64)
    first = np.cumsum(length) - length
    xy = np.empty((int(length.sum()), 2), dtype=np.float32)
    for t, (seen, at) in enumerate(zip(seen_ids, seen_xy, strict=True)):
        xy[first[seen] + (t - start_frames[seen])] = at  # each track's frames contiguous
    return Tracks(
        num_frames=num_frames,
        height=height,
        width=width,
        start=start_frames,
        length=length,
        xy=xy,
        stop=stop,
        alpha=float(alpha),
        beta=float(beta),
    )


def _advance(
    forward: np.ndarray,
    backward: np.ndarray,
    ids: np.ndarray,
    pos: np.ndarray,
    limit: np.ndarray,
    alpha: float,
    beta: float,
    stop: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One time step for all live points: their ids and positions on the next frame, the
    stopped ones marked in `stop`."""
    w = bilinear(forward, pos)
    moved = pos + w
    x, y = moved[:, 0], moved[:, 1]
    inside = (x >= 0.0) & (x <= limit[0]) & (y >= 0.0) & (y <= limit[1])
    w_hat = bilinear(backward, np.where(inside[:, None], moved, 0.0))
    consistent = fb_consistent(w, w_hat, alpha, beta)
    stop[ids[~inside]] = STOP_LEFT_FRAME
    stop[ids[inside & ~consistent]] = STOP_OCCLUDED
    keep = inside & consistent
    return ids[keep], moved[keep]


def _start_points(
    num_frames: int,
    height: int,
    width: int,
    starts: tuple[np.ndarray, np.ndarray] | None,
    starts_per_frame: int | None,
    density: float | None,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    given = [
        name
        for name, value in (
            ("starts", starts),
            ("starts_per_frame", starts_per_frame),
            ("density", density),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(f"give exactly one of starts, starts_per_frame, density (got {given})")
    if starts is not None:
        frames = np.asarray(starts[0], dtype=np.int64)
        xy = np.asarray(starts[1], dtype=np.float64)
        if frames.ndim != 1 or xy.shape != (frames.size, 2):
            raise ValueError(f"starts: frames (P,) and xy (P, 2), got {frames.shape}, {xy.shape}")
        if frames.size and (frames.min() < 0 or frames.max() >= num_frames):
            raise ValueError(f"starts: a start frame is outside 0..{num_frames - 1}")
        outside = (xy < 0) | (xy > [width - 1, height - 1]) | ~np.isfinite(xy)
        if np.any(outside):
            raise ValueError(
                f"starts: a start point is outside [0, {width - 1}] x [0, {height - 1}]"
            )
        return frames, xy
    if rng is None:
        raise ValueError(f"{given[0]}: sampling start points needs an rng (np.random.Generator)")
    if density is not None:
        if density <= 0:
            raise ValueError(f"density must be > 0 points per pixel per frame, got {density}")
        starts_per_frame = max(1, round(density * height * width))
    return seed_points(num_frames, height, width, int(starts_per_frame), rng)


def encode_tracks(tracks: Tracks) -> bytes:
    """The `tracks.npz` field: an uncompressed npz (np.load with allow_pickle=False reads it).

    Positions are stored in half precision as displacements from each track's start point
    (`offset`, float16), the start points in single precision (`origin`, float32): the
    round-trip error is at most 2^-11 of the displacement (under 0.016 px for tracks that
    move less than 32 px) plus float32 rounding of the position, instead of up to 0.5 px for
    absolute fp16 coordinates on a 2048-pixel frame.
    """
    origin = tracks.xy[tracks.first]
    offset = tracks.xy - np.repeat(origin, tracks.length, axis=0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        shape=np.array([tracks.num_frames, tracks.height, tracks.width], dtype=np.int32),
        thresholds=np.array([tracks.alpha, tracks.beta], dtype=np.float64),
        start=tracks.start.astype(np.int32),
        length=tracks.length.astype(np.int32),
        stop=tracks.stop.astype(np.uint8),
        origin=origin.astype(np.float32),
        offset=offset.astype(np.float16),
    )
    return buffer.getvalue()


def decode_tracks(data: bytes) -> Tracks:
    """`Tracks` from the bytes of a `tracks.npz` field (see `encode_tracks`)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        missing = [name for name in _STORED if name not in stored.files]
        if missing:
            raise ValueError(f"{TRACKS_FIELD}: missing arrays {missing}")
        arrays = {name: stored[name] for name in _STORED}
    num_frames, height, width = (int(v) for v in arrays["shape"])
    length = arrays["length"].astype(np.int64)
    origin = arrays["origin"].astype(np.float32)
    xy = np.repeat(origin, length, axis=0) + arrays["offset"].astype(np.float32)
    return Tracks(
        num_frames=num_frames,
        height=height,
        width=width,
        start=arrays["start"].astype(np.int64),
        length=length,
        xy=xy,
        stop=arrays["stop"].astype(np.uint8),
        alpha=float(arrays["thresholds"][0]),
        beta=float(arrays["thresholds"][1]),
    )
