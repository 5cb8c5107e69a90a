"""Exact 3D IoU: hand-made cases and a Monte-Carlo estimate."""

from __future__ import annotations

import numpy as np
import pytest

from vidssl.evaluate.iou3d import iou, symmetric_iou
from vidssl.objectron.geometry import box_points, rotation_about_y


def _box(centre=(0, 0, 0), size=(1, 1, 1), yaw=0.0, tilt=0.0):
    rotation = rotation_about_y(yaw)
    if tilt:
        c, s = np.cos(tilt), np.sin(tilt)
        rotation = rotation @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return box_points(rotation, np.asarray(centre, float), np.asarray(size, float))


def test_identical_boxes():
    assert iou(_box(), _box()) == pytest.approx(1.0)


def test_disjoint_boxes():
    assert iou(_box(), _box(centre=(3, 0, 0))) == 0.0


def test_half_shifted_unit_cubes():
    # overlap 0.5 x 1 x 1 = 0.5; union 1.5
    assert iou(_box(), _box(centre=(0.5, 0, 0))) == pytest.approx(1 / 3)


def test_nested_boxes():
    assert iou(_box(size=(2, 2, 2)), _box()) == pytest.approx(1 / 8)


def test_rotated_square_prism_by_hand():
    # Two 1x1x1 cubes, one turned 45 degrees about y: the intersection is a regular octagon
    # prism of height 1 and area 2(sqrt(2) - 1).
    shared = 2 * (np.sqrt(2) - 1)
    assert iou(_box(), _box(yaw=np.pi / 4)) == pytest.approx(shared / (2 - shared))


def _monte_carlo(a, b, samples=400_000, seed=0):
    from vidssl.evaluate.iou3d import inside

    rng = np.random.default_rng(seed)
    low = np.minimum(a.min(0), b.min(0))
    high = np.maximum(a.max(0), b.max(0))
    points = rng.uniform(low, high, size=(samples, 3))
    in_a, in_b = inside(points, a), inside(points, b)
    return (in_a & in_b).sum() / (in_a | in_b).sum()


@pytest.mark.parametrize("seed", range(6))
def test_random_oriented_boxes_match_monte_carlo(seed):
    rng = np.random.default_rng(seed)
    a = _box(
        centre=rng.uniform(-0.2, 0.2, 3),
        size=rng.uniform(0.5, 1.5, 3),
        yaw=rng.uniform(0, 6),
        tilt=rng.uniform(-0.5, 0.5),
    )
    b = _box(
        centre=rng.uniform(-0.3, 0.3, 3),
        size=rng.uniform(0.5, 1.5, 3),
        yaw=rng.uniform(0, 6),
        tilt=rng.uniform(-0.5, 0.5),
    )
    assert iou(a, b) == pytest.approx(_monte_carlo(a, b), abs=0.01)


def test_symmetric_iou_forgives_a_turn_about_the_vertical():
    cup = _box(size=(0.1, 0.12, 0.1))
    turned = _box(size=(0.1, 0.12, 0.1), yaw=0.7)
    assert iou(cup, turned) < 0.9
    assert symmetric_iou(cup, turned) == pytest.approx(1.0, abs=0.01)  # 100 angles tried


def test_degenerate_box_has_no_iou():
    assert iou(_box(), _box(size=(1, 0, 1))) == 0.0


def test_a_box_stored_in_float32_far_from_the_camera_overlaps_itself():
    # Annotation files hold float32 keypoints: a thin box 3 m away is rectangular only to ~1e-7
    # relative; an absolute tolerance of 1e-7 m once called its own corners outside it (0.64).
    rng = np.random.default_rng(3)
    for _ in range(20):
        box = _box(
            centre=rng.uniform(-1, 1, 3) + [0, 0, -3],
            size=rng.uniform([0.02, 0.5, 0.5], [0.08, 1.5, 1.5]),
            yaw=rng.uniform(0, 6),
            tilt=rng.uniform(-0.5, 0.5),
        ).astype(np.float32)
        assert iou(box, box) == pytest.approx(1.0, abs=1e-3)
