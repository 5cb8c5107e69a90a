"""Anchor sampling (PiCo section 3.3): which frames of a clip to learn from, and the point
pairs that correspond between them.

After an anchor frame is drawn, every track alive on it contributes the endpoint furthest in
time from the anchor; the K frames holding the most endpoints are the views. The baseline draws
K frames at random. `trajectory_length` (the paper's T) keeps only frames within T of the anchor
(|frame - anchor| <= T): a track's endpoints are clipped to that window, and views outside it
give no pairs. Frames are clip indices, positions (x, y) in pixels (see `vidssl.flow.tracks`).
All functions are vectorised over tracks.
"""

from __future__ import annotations

import numpy as np

from vidssl.flow.tracks import Tracks


def furthest_endpoints(
    tracks: Tracks, anchor: int, *, trajectory_length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each track alive on `anchor`: its endpoint furthest in time from the anchor, within
    T frames of it when `trajectory_length` T is given; on a tie (as far before as after) the
    later one. Returns the tracks (A,) and their endpoint frames (A,); a track alive on the
    anchor only has the anchor itself as endpoint."""
    _check_frame(tracks.num_frames, anchor)
    alive = np.flatnonzero(tracks.alive_on(anchor))
    first = tracks.start[alive]
    last = tracks.end[alive]
    if trajectory_length is not None:
        _check_trajectory_length(trajectory_length)
        first = np.maximum(first, anchor - trajectory_length)
        last = np.minimum(last, anchor + trajectory_length)
    endpoint = np.where(last - anchor >= anchor - first, last, first)
    return alive, endpoint


def anchor_views(
    tracks: Tracks, anchor: int, k: int, *, trajectory_length: int | None = None
) -> np.ndarray:
    """The top-`k` frames by endpoint count (see `furthest_endpoints`) for `anchor`: (<= k,)
    int64 frame indices, most endpoints first; ties go to the frame further from the anchor,
    then to the earlier frame. Frames holding no endpoint are never chosen, nor the anchor, so
    fewer than `k` frames come back when fewer hold one."""
    if k < 1:
        raise ValueError(f"k (views per anchor) must be >= 1, got {k}")
    _, endpoint = furthest_endpoints(tracks, anchor, trajectory_length=trajectory_length)
    counts = np.bincount(endpoint, minlength=tracks.num_frames)
    counts[anchor] = 0
    frames = np.arange(tracks.num_frames)
    # lexsort: last key first; ranks by count (high first), distance (far first), frame (low first)
    ranked = np.lexsort((frames, -np.abs(frames - anchor), -counts))
    ranked = ranked[counts[ranked] > 0]
    return ranked[:k].astype(np.int64)


def random_views(
    num_frames: int,
    anchor: int,
    k: int,
    rng: np.random.Generator,
    *,
    trajectory_length: int | None = None,
) -> np.ndarray:
    """The baseline: `k` distinct frames other than the anchor (within T of it when
    `trajectory_length` is given), uniformly at random; (<= k,) int64, fewer when fewer exist."""
    _check_frame(num_frames, anchor)
    if k < 1:
        raise ValueError(f"k (views per anchor) must be >= 1, got {k}")
    low, high = 0, num_frames - 1
    if trajectory_length is not None:
        _check_trajectory_length(trajectory_length)
        low, high = max(low, anchor - trajectory_length), min(high, anchor + trajectory_length)
    candidates = np.setdiff1d(np.arange(low, high + 1), [anchor])
    return rng.choice(candidates, size=min(k, candidates.size), replace=False).astype(np.int64)


def point_pairs(
    tracks: Tracks,
    anchor: int,
    views: np.ndarray,
    max_pairs: int,
    rng: np.random.Generator,
    *,
    trajectory_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Corresponding points between the anchor and each view: one pair per track alive on
    both frames (views further than T from the anchor give none when `trajectory_length` T is
    given). When there are more than `max_pairs`, `max_pairs` of them uniformly at random
    without replacement (kept in view, then track order).

    Returns anchor_xy (M, 2) float32 and view_xy (M, 2) float32, (x, y) in pixels on the anchor
    and on the view, and view_index (M,) int64, the position in `views` of each pair's view.
    """
    _check_frame(tracks.num_frames, anchor)
    if max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0, got {max_pairs}")
    views = np.asarray(views, dtype=np.int64).reshape(-1)
    if views.size and (views.min() < 0 or views.max() >= tracks.num_frames):
        raise ValueError(f"views must be frames in 0..{tracks.num_frames - 1}, got {views}")
    start = tracks.start[None, :]
    end = tracks.end[None, :]
    both = (start <= np.minimum(views, anchor)[:, None]) & (
        end >= np.maximum(views, anchor)[:, None]
    )
    if trajectory_length is not None:
        _check_trajectory_length(trajectory_length)
        both &= (np.abs(views - anchor) <= trajectory_length)[:, None]
    view_index, track = np.nonzero(both)
    if view_index.size > max_pairs:
        keep = np.sort(rng.choice(view_index.size, size=max_pairs, replace=False))
        view_index, track = view_index[keep], track[keep]
    anchor_xy = tracks.at(track, anchor)
    view_xy = tracks.at(track, views[view_index])
    return anchor_xy, view_xy, view_index.astype(np.int64)


def _check_frame(num_frames: int, anchor: int) -> None:
    if not 0 <= anchor < num_frames:
        raise ValueError(f"anchor frame {anchor} is outside the clip's frames 0..{num_frames - 1}")


def _check_trajectory_length(trajectory_length: int) -> None:
    if trajectory_length < 1:
        raise ValueError(f"trajectory_length (T) must be >= 1 frame, got {trajectory_length}")
