"""Point tracks through optical flow and PiCo's anchor sampling (vidssl.flow.tracks, .anchors),
on flows whose trajectories are known analytically and on hand-built tracks."""

from __future__ import annotations

import numpy as np
import pytest

from vidssl.flow.anchors import anchor_views, furthest_endpoints, point_pairs, random_views
from vidssl.flow.tracks import (
    STOP_CLIP_END,
    STOP_LEFT_FRAME,
    STOP_OCCLUDED,
    TRACKS_FIELD,
    Tracks,
    bilinear,
    decode_tracks,
    encode_tracks,
    fb_consistent,
    seed_points,
    track_points,
)


def constant_flow(frames: int, height: int, width: int, u: float, v: float):
    forward = np.broadcast_to(np.array([u, v], np.float32), (frames - 1, height, width, 2)).copy()
    return forward, -forward


def affine_flow(matrix: np.ndarray, centre: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 2) flow taking x to centre + matrix (x - centre)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    offset = np.stack([xs - centre[0], ys - centre[1]], axis=-1)
    return (offset @ matrix.T - offset).astype(np.float32)


def rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


# --- tracking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("u, v", [(2.5, 0.5), (-1.75, 0.25)])
def test_translation_moves_exactly_and_stops_where_it_leaves_the_frame(u, v) -> None:
    frames, height, width = 20, 32, 64
    forward, backward = constant_flow(frames, height, width, u, v)
    start = np.array([0, 0, 3, 7, 12, 18, 19])
    xy = np.array(
        [[10.3, 4.2], [31.7, 20.9], [55.5, 1.0], [8.25, 30.9], [40.1, 11.6], [2.2, 2.2], [5.0, 5.0]]
    )
    tracks = track_points(forward, backward, starts=(start, xy))
    # analytic: alive while 0 <= x + u k <= W-1 and 0 <= y + v k <= H-1
    room_x = np.where(u > 0, (width - 1 - xy[:, 0]) / u, xy[:, 0] / -u)
    room_y = np.where(v > 0, (height - 1 - xy[:, 1]) / v, xy[:, 1] / -v)
    steps = np.floor(np.minimum(room_x, room_y)).astype(int)
    expected_end = np.minimum(start + steps, frames - 1)
    np.testing.assert_array_equal(tracks.start, start)
    np.testing.assert_array_equal(tracks.end, expected_end)
    expected_stop = np.where(start + steps < frames - 1, STOP_LEFT_FRAME, STOP_CLIP_END)
    np.testing.assert_array_equal(tracks.stop, expected_stop)
    assert {STOP_LEFT_FRAME, STOP_CLIP_END} <= set(tracks.stop.tolist())
    for p in range(len(start)):
        k = np.arange(tracks.length[p])[:, None]
        want = xy[p] + k * [u, v]
        got = tracks.xy[tracks.first[p] : tracks.first[p] + tracks.length[p]]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_point_exactly_on_the_last_column_is_still_inside() -> None:
    forward, backward = constant_flow(8, 16, 64, 2.5, 0.0)
    # 55.5 + 3 * 2.5 = 63.0 = W - 1: alive there, gone one step later
    tracks = track_points(forward, backward, starts=(np.array([0]), np.array([[55.5, 3.0]])))
    assert tracks.end.tolist() == [3]
    assert tracks.at(np.array([0]), 3).tolist() == [[63.0, 3.0]]
    assert tracks.stop.tolist() == [STOP_LEFT_FRAME]


def test_tracks_stop_where_backward_flow_disagrees() -> None:
    frames, height, width = 10, 24, 64
    forward, backward = constant_flow(frames, height, width, 2.0, 0.0)
    # an occluder on frame 4 over columns 30..40: the backward flow 4 -> 3 there is zero
    backward[3, :, 30:41] = 0.0
    x0 = np.concatenate([np.arange(0.3, 20.0, 1.0), np.arange(22.3, 32.0, 1.0)])
    x0 = x0[(x0 + 8 <= 28.9) | (x0 + 8 >= 30.0)]  # skip the bilinear ramp 29..30
    xy = np.stack([x0, np.full_like(x0, 7.5)], axis=1)
    tracks = track_points(forward, backward, starts=(np.zeros(x0.size, int), xy))
    landed = x0 + 8.0  # position on frame 4 after the step 3 -> 4
    occluded = (landed >= 30.0) & (landed <= 40.0)
    assert occluded.sum() >= 5 and (~occluded).sum() >= 5
    np.testing.assert_array_equal(tracks.stop[occluded], STOP_OCCLUDED)
    np.testing.assert_array_equal(tracks.end[occluded], 3)
    visible = ~occluded
    steps_left = np.floor((width - 1 - x0[visible]) / 2.0).astype(int)
    np.testing.assert_array_equal(tracks.end[visible], np.minimum(steps_left, frames - 1))
    # points started on the occluder's frame itself are not affected (backward[3] is 4 -> 3)
    later = track_points(forward, backward, starts=(np.array([4]), np.array([[34.0, 7.5]])))
    assert later.end.tolist() == [9] and later.stop.tolist() == [STOP_CLIP_END]


def test_rotation_is_tracked_to_float_precision_since_bilinear_is_exact_on_affine_flow() -> None:
    """A rotation's flow w(x) = (R - I)(x - c) is affine in x, and bilinear interpolation
    reproduces affine fields exactly: the only error left is float32 rounding of the flow and
    of the stored positions (~1e-6 px a step). Bound asserted: 1e-4 px after 30 steps."""
    frames, size, theta = 31, 64, np.deg2rad(2.0)
    centre = np.array([31.5, 31.5])
    forward = np.broadcast_to(
        affine_flow(rotation(theta), centre, size, size), (frames - 1, size, size, 2)
    )
    backward = np.broadcast_to(
        affine_flow(rotation(-theta), centre, size, size), (frames - 1, size, size, 2)
    )
    rng = np.random.default_rng(1)
    radius = np.sqrt(rng.uniform(0, 25.0**2, 500))
    angle = rng.uniform(0, 2 * np.pi, 500)
    xy = centre + np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    tracks = track_points(forward, backward, starts=(np.zeros(500, int), xy))
    assert np.all(tracks.length == frames) and np.all(tracks.stop == STOP_CLIP_END)
    dense = tracks.dense()
    for k in (1, 10, 30):
        want = centre + (xy - centre) @ np.linalg.matrix_power(rotation(theta), k).T
        assert np.abs(dense[:, k] - want).max() < 1e-4


def test_bilinear_error_on_a_curved_flow_stays_within_the_interpolation_bound() -> None:
    """Shear u(y) = A sin(2 pi y / L), v = 0: y never changes, so x_k = x_0 + k u(y_0). Linear
    interpolation between pixels errs by at most h^2/8 max|u''| = A (2 pi / L)^2 / 8 a step
    (h = 1 px): 0.0289 px for A = 1.5, L = 16; 10 steps stay within 10 times that."""
    frames, height, width, amplitude, wavelength = 11, 32, 64, 1.5, 16.0
    ys = np.arange(height, dtype=np.float64)
    u = amplitude * np.sin(2 * np.pi * ys / wavelength)
    flow = np.zeros((height, width, 2), np.float32)
    flow[..., 0] = u[:, None]
    forward = np.broadcast_to(flow, (frames - 1, height, width, 2))
    y0 = np.linspace(2.0, 29.0, 109)  # includes the crests between pixels
    xy = np.stack([np.full_like(y0, 20.0), y0], axis=1)
    tracks = track_points(forward, -forward, starts=(np.zeros(y0.size, int), xy))
    assert np.all(tracks.length == frames)
    steps = frames - 1
    want = 20.0 + steps * amplitude * np.sin(2 * np.pi * y0 / wavelength)
    error = np.abs(tracks.dense()[:, -1, 0] - want)
    bound = steps * amplitude * (2 * np.pi / wavelength) ** 2 / 8
    assert error.max() <= bound + 1e-4
    assert error.max() >= 0.5 * bound  # the bound is attained near crests: the test can see it
    np.testing.assert_allclose(
        tracks.dense()[:, :, 1], np.repeat(y0[:, None], frames, 1), atol=1e-5
    )


@pytest.mark.parametrize(
    "alpha, beta, survives",
    [
        (0.0, 0.5, False),  # |w + w^|^2 = 1 > 0.5
        (0.0, 1.5, True),
        (0.0, 1.0, True),  # equal is consistent: only ">" stops
        (0.01, 0.0, False),  # 1 > 0.01 * (9 + 4)
        (0.1, 0.0, True),  # 1 <= 0.1 * 13
        (0.01, 0.5, False),  # the paper's defaults: 1 > 0.63
    ],
)
def test_alpha_and_beta_set_the_occlusion_threshold(alpha, beta, survives) -> None:
    forward, _ = constant_flow(4, 16, 64, 3.0, 0.0)
    backward = np.broadcast_to(np.array([-2.0, 0.0], np.float32), forward.shape)
    starts = (np.zeros(3, int), np.array([[5.0, 5.0], [10.5, 2.25], [20.0, 12.0]]))
    tracks = track_points(forward, backward, starts=starts, alpha=alpha, beta=beta)
    if survives:
        assert tracks.length.tolist() == [4, 4, 4] and set(tracks.stop.tolist()) == {STOP_CLIP_END}
    else:
        assert tracks.length.tolist() == [1, 1, 1] and set(tracks.stop.tolist()) == {STOP_OCCLUDED}
    assert (tracks.alpha, tracks.beta) == (alpha, beta)


def test_alpha_scales_the_tolerance_with_the_flow_magnitude() -> None:
    w = np.array([[1.0, 0.0], [10.0, 0.0]])
    w_hat = -w * 0.9  # 10% disagreement: error 0.01 and 1.0, scale 1.81 and 181
    np.testing.assert_array_equal(fb_consistent(w, w_hat, alpha=0.01, beta=0.0), [True, True])
    np.testing.assert_array_equal(fb_consistent(w, w_hat, alpha=0.0, beta=0.5), [True, False])


def reference_tracks(forward, backward, frames, xy, alpha, beta):
    """One point at a time with scalar arithmetic: what the vectorised tracker must match."""
    steps, height, width, _ = forward.shape

    def sample(field, x, y):
        x0 = min(max(int(np.floor(x)), 0), width - 2)
        y0 = min(max(int(np.floor(y)), 0), height - 2)
        fx, fy = x - x0, y - y0
        return (
            field[y0, x0] * (1 - fx) * (1 - fy)
            + field[y0, x0 + 1] * fx * (1 - fy)
            + field[y0 + 1, x0] * (1 - fx) * fy
            + field[y0 + 1, x0 + 1] * fx * fy
        )

    out = []
    for t, (x, y) in zip(frames, xy, strict=True):
        path = [(x, y)]
        while t < steps:
            w = sample(forward[t], x, y)
            nx, ny = x + w[0], y + w[1]
            if not (0 <= nx <= width - 1 and 0 <= ny <= height - 1):
                break
            wb = sample(backward[t], nx, ny)
            if np.sum((w + wb) ** 2) > alpha * (np.sum(w**2) + np.sum(wb**2)) + beta:
                break
            x, y, t = nx, ny, t + 1
            path.append((x, y))
        out.append(np.array(path))
    return out


def test_vectorised_tracker_matches_a_per_point_reference_on_random_flow() -> None:
    rng = np.random.default_rng(7)
    frames, height, width = 12, 20, 28
    # smooth-ish random flow (a few px), with backward flows that only roughly invert it
    forward = rng.normal(0, 1.5, (frames - 1, height, width, 2)).astype(np.float32)
    backward = (-forward + rng.normal(0, 0.6, forward.shape)).astype(np.float32)
    start, xy = seed_points(frames, height, width, 40, rng)
    tracks = track_points(forward, backward, starts=(start, xy), alpha=0.05, beta=0.5)
    want = reference_tracks(forward, backward, start, xy, 0.05, 0.5)
    np.testing.assert_array_equal(tracks.length, [len(path) for path in want])
    np.testing.assert_allclose(tracks.xy, np.concatenate(want), atol=1e-4)
    stops = set(tracks.stop.tolist())
    assert stops == {STOP_CLIP_END, STOP_OCCLUDED, STOP_LEFT_FRAME}  # all three paths exercised
    # every point is tracked on its own: a subset tracks exactly as it does among all the others
    subset = np.arange(0, start.size, 7)
    alone = track_points(
        forward, backward, starts=(start[subset], xy[subset]), alpha=0.05, beta=0.5
    )
    np.testing.assert_array_equal(alone.length, tracks.length[subset])
    np.testing.assert_array_equal(alone.dense(), tracks.dense()[subset])


def test_many_points_in_one_call() -> None:
    """20k points x 10 frames in one call (the vectorised path; speed is measured, not asserted:
    100k points x 30 frames take ~0.35-0.4 s on the development machine)."""
    forward, backward = constant_flow(10, 64, 64, 0.5, -0.25)
    tracks = track_points(forward, backward, starts_per_frame=2_000, rng=np.random.default_rng(0))
    assert tracks.num_tracks == 18_000
    assert tracks.xy.shape[0] == tracks.length.sum() > 18_000
    ends = tracks.dense()
    step = np.diff(ends, axis=1)
    moved = step[~np.isnan(step[..., 0])]
    np.testing.assert_allclose(moved, np.broadcast_to([0.5, -0.25], moved.shape), atol=1e-4)


def test_start_points_are_uniform_in_space_and_time() -> None:
    rng = np.random.default_rng(3)
    frames, xy = seed_points(9, 40, 100, 5_000, rng)
    np.testing.assert_array_equal(np.bincount(frames), np.full(8, 5_000))  # frames 0..T-2
    assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= 99 and xy[:, 1].max() <= 39
    counts, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=(5, 4), range=((0, 99), (0, 39)))
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()
    forward, backward = constant_flow(5, 10, 20, 0.0, 0.0)
    dense = track_points(forward, backward, density=0.05, rng=rng)  # round(0.05 * 200) = 10
    np.testing.assert_array_equal(np.bincount(dense.start), [10, 10, 10, 10])


def test_bad_arguments_name_what_is_wrong() -> None:
    forward, backward = constant_flow(5, 10, 20, 1.0, 0.0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="exactly one of"):
        track_points(forward, backward, starts_per_frame=3, density=0.1, rng=rng)
    with pytest.raises(ValueError, match="needs an rng"):
        track_points(forward, backward, starts_per_frame=3)
    with pytest.raises(ValueError, match="alpha and beta"):
        track_points(forward, backward, starts_per_frame=3, rng=rng, beta=-1)
    with pytest.raises(ValueError, match="must match forward"):
        track_points(forward, backward[:, :5], starts_per_frame=3, rng=rng)
    with pytest.raises(ValueError, match="outside"):
        track_points(forward, backward, starts=(np.array([0]), np.array([[19.5, 2.0]])))


def test_bilinear_interpolates_between_pixel_centres() -> None:
    field = np.arange(12, dtype=np.float32).reshape(3, 4, 1)  # value = 4 y + x
    xy = np.array([[0.0, 0.0], [3.0, 2.0], [1.5, 0.5], [2.25, 1.75]])
    np.testing.assert_allclose(bilinear(field, xy)[:, 0], 4 * xy[:, 1] + xy[:, 0])


# --- storage ----------------------------------------------------------------------------------


def origin_of(tracks: Tracks) -> np.ndarray:
    """(N, 2) each observation's track start point."""
    return np.repeat(tracks.xy[tracks.first], tracks.length, axis=0)


def test_fp16_round_trip_error_in_pixels() -> None:
    """Positions are fp16 displacements from each track's fp32 start: error <= 2^-11 of the
    displacement (+ float32 rounding), e.g. <= 0.06 px for a track that moved 120 px on a
    1920-pixel-wide frame, where absolute fp16 coordinates would be off by up to 0.5 px."""
    frames, height, width = 16, 64, 1920
    forward, backward = constant_flow(frames, height, width, 7.9, -0.3)
    rng = np.random.default_rng(5)
    tracks = track_points(forward, backward, starts_per_frame=500, rng=rng)
    assert tracks.xy[:, 0].max() > 1800 and np.abs(tracks.xy - origin_of(tracks)).max() > 100
    data = encode_tracks(tracks)
    assert isinstance(data, bytes) and TRACKS_FIELD.count(".") == 1
    back = decode_tracks(data)
    assert (back.num_frames, back.height, back.width) == (frames, height, width)
    for name in ("start", "length", "stop"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tracks, name))
    assert (back.alpha, back.beta) == (tracks.alpha, tracks.beta)
    displacement = np.abs(tracks.xy - origin_of(tracks))
    error = np.abs(back.xy - tracks.xy)
    assert np.all(error <= displacement * 2.0**-11 + 2.5e-4)
    assert error.max() > 0  # it is lossy: the test compares what it should
    assert error.max() < 0.06
    assert len(data) < tracks.xy.shape[0] * 4 + tracks.num_tracks * 20 + 2_000


def test_decoding_refuses_a_field_without_the_track_arrays() -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, shape=np.array([3, 4, 5]))
    with pytest.raises(ValueError, match="missing arrays"):
        decode_tracks(buffer.getvalue())


def test_empty_tracks_round_trip() -> None:
    empty = Tracks(
        num_frames=4,
        height=8,
        width=8,
        start=np.zeros(0, np.int64),
        length=np.zeros(0, np.int64),
        xy=np.zeros((0, 2), np.float32),
        stop=np.zeros(0, np.uint8),
        alpha=0.01,
        beta=0.5,
    )
    back = decode_tracks(encode_tracks(empty))
    assert back.num_tracks == 0 and back.dense().shape == (0, 4, 2)


# --- anchor sampling --------------------------------------------------------------------------


def hand_built_tracks() -> Tracks:
    """Ten frames; track p alive on frames SPANS[p] at (x, y) = (100 p + frame, frame)."""
    spans = [(2, 8), (0, 5), (3, 8), (1, 7), (4, 4), (6, 9), (0, 9)]
    start = np.array([a for a, _ in spans])
    length = np.array([b - a + 1 for a, b in spans])
    xy = np.concatenate(
        [[[100.0 * p + f, f] for f in range(a, b + 1)] for p, (a, b) in enumerate(spans)]
    ).astype(np.float32)
    return Tracks(10, 64, 1024, start, length, xy, np.zeros(len(spans), np.uint8), 0.01, 0.5)


def test_each_track_on_the_anchor_gives_its_furthest_endpoint() -> None:
    tracks = hand_built_tracks()
    alive, endpoint = furthest_endpoints(tracks, 4)
    # track 0 (2..8) -> 8; 1 (0..5) -> 0; 2 (3..8) -> 8; 3 (1..7): 3 either way, the later 7;
    # 4 (4..4) -> the anchor itself; 5 (6..9) is not alive on 4; 6 (0..9) -> 9
    assert alive.tolist() == [0, 1, 2, 3, 4, 6]
    assert endpoint.tolist() == [8, 0, 8, 7, 4, 9]


def test_anchor_views_are_the_top_k_frames_by_endpoint_count() -> None:
    tracks = hand_built_tracks()
    # counts: frame 8: 2; frames 0, 7, 9: 1 each, ties go to the frame further from the anchor
    assert anchor_views(tracks, 4, 3).tolist() == [8, 9, 0]
    assert anchor_views(tracks, 4, 10).tolist() == [8, 9, 0, 7]  # only frames with endpoints
    assert anchor_views(tracks, 4, 1).tolist() == [8]
    # T = 2 clips every track to frames 2..6: endpoints 6, 2, 6, 6 (tie -> later), 6
    assert anchor_views(tracks, 4, 3, trajectory_length=2).tolist() == [6, 2]
    # anchor 9: tracks 5 (6..9) and 6 (0..9) end at 6 and 0
    assert anchor_views(tracks, 9, 2).tolist() == [0, 6]


def test_random_views_are_distinct_frames_other_than_the_anchor() -> None:
    rng = np.random.default_rng(11)
    draws = np.stack([random_views(10, 4, 3, rng) for _ in range(3_000)])
    assert all(len(set(row)) == 3 for row in draws.tolist())
    counts = np.bincount(draws.ravel(), minlength=10)
    assert counts[4] == 0
    expected = 3_000 * 3 / 9
    assert np.all(np.abs(np.delete(counts, 4) - expected) < 0.1 * expected)
    near = random_views(10, 4, 5, rng, trajectory_length=1)
    assert sorted(near.tolist()) == [3, 5]  # only two frames within one of the anchor
    a = random_views(30, 10, 4, np.random.default_rng(2))
    b = random_views(30, 10, 4, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)


def test_point_pairs_match_positions_on_anchor_and_view() -> None:
    tracks = hand_built_tracks()
    views = np.array([8, 2])
    anchor_xy, view_xy, view_index = point_pairs(tracks, 4, views, 100, np.random.default_rng(0))
    # view 8: tracks alive on 4..8: 0, 2, 6; view 2: tracks alive on 2..4: 0, 1, 3, 6
    track = np.array([0, 2, 6, 0, 1, 3, 6])
    assert view_index.tolist() == [0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_array_equal(anchor_xy, np.stack([100.0 * track + 4, np.full(7, 4.0)], 1))
    frame = views[view_index]
    np.testing.assert_array_equal(view_xy, np.stack([100.0 * track + frame, frame], 1))
    # T = 3: view 8 is 4 frames away and gives no pairs
    _, _, near = point_pairs(tracks, 4, views, 100, np.random.default_rng(0), trajectory_length=3)
    assert near.tolist() == [1, 1, 1, 1]


def test_point_pairs_are_capped_uniformly() -> None:
    tracks = hand_built_tracks()
    views = np.array([8, 2])
    rng = np.random.default_rng(4)
    seen = np.zeros(7)
    for _ in range(2_000):
        anchor_xy, view_xy, view_index = point_pairs(tracks, 4, views, 3, rng)
        assert anchor_xy.shape == view_xy.shape == (3, 2) and view_index.shape == (3,)
        pair = view_index * 1000 + anchor_xy[:, 0].astype(int)
        assert len(set(pair.tolist())) == 3  # without replacement
        key = {
            (0, 4): 0,
            (0, 204): 1,
            (0, 604): 2,
            (1, 4): 3,
            (1, 104): 4,
            (1, 304): 5,
            (1, 604): 6,
        }
        for v, x in zip(view_index.tolist(), anchor_xy[:, 0].astype(int).tolist(), strict=True):
            seen[key[(v, x)]] += 1
    expected = 2_000 * 3 / 7
    assert np.all(np.abs(seen - expected) < 0.1 * expected)
    assert point_pairs(tracks, 4, views, 0, rng)[0].shape == (0, 2)


def test_tracked_translation_gives_views_and_pairs_end_to_end() -> None:
    forward, backward = constant_flow(10, 32, 64, 1.5, 0.5)
    xy = np.random.default_rng(0).uniform([0, 0], [40, 20], (200, 2))
    tracks = track_points(forward, backward, starts=(np.zeros(200, int), xy))
    assert np.all(tracks.length == 10)
    views = anchor_views(tracks, 2, 2)
    assert views.tolist() == [9]  # every track's furthest endpoint is the last frame
    anchor_xy, view_xy, _ = point_pairs(tracks, 2, views, 50, np.random.default_rng(1))
    assert anchor_xy.shape == (50, 2)
    np.testing.assert_allclose(
        view_xy - anchor_xy, np.broadcast_to([10.5, 3.5], (50, 2)), atol=1e-4
    )


def test_anchor_arguments_are_checked() -> None:
    tracks = hand_built_tracks()
    with pytest.raises(ValueError, match="anchor frame 10"):
        anchor_views(tracks, 10, 2)
    with pytest.raises(ValueError, match="k \\(views per anchor\\)"):
        anchor_views(tracks, 4, 0)
    with pytest.raises(ValueError, match="trajectory_length"):
        anchor_views(tracks, 4, 2, trajectory_length=0)
    with pytest.raises(ValueError, match="views must be frames"):
        point_pairs(tracks, 4, np.array([12]), 5, np.random.default_rng(0))
