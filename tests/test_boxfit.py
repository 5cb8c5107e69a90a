"""Box fitting: a reference that is the query itself, or the same object seen from elsewhere,
fits back exactly; a wrong reference fits worse."""

from __future__ import annotations

import numpy as np
import pytest

from vidssl.evaluate.boxfit import FrameGeometry, fit_box, rotation_between, scene_frame
from vidssl.evaluate.iou3d import iou

WIDTH, HEIGHT = 192, 256


def _frame(eye, size=(0.3, 0.4, 0.2), yaw=0.3) -> FrameGeometry:
    return scene_frame(eye, size, yaw, image_size=(WIDTH, HEIGHT))


def test_rotation_between_unit_vectors():
    a, b = np.array([0, 1.0, 0]), np.array([1.0, 1.0, 0]) / np.sqrt(2)
    assert rotation_between(a, b) @ a == pytest.approx(b)
    assert rotation_between(a, -a) @ a == pytest.approx(-a)


def test_the_query_as_its_own_reference_fits_exactly():
    query = _frame([1.0, 0.8, 1.2])
    assert iou(fit_box(query, query), query.box) == pytest.approx(1.0, abs=1e-6)


def test_same_object_seen_from_a_nearby_viewpoint_fits_well():
    # Same box and the camera at the same relative pose but elsewhere on the orbit: an exact fit.
    query = _frame([1.0, 0.8, 1.2], yaw=0.3)
    reference = _frame(
        [1.2 * np.cos(1.0), 0.8, 1.2 * np.sin(1.0)], yaw=0.3 + (np.arctan2(1.2, 1.0) - 1.0)
    )
    assert iou(fit_box(query, reference), query.box) > 0.9


def test_scale_refinement_recovers_a_differently_sized_twin():
    query = _frame([1.0, 0.8, 1.2], size=(0.3, 0.4, 0.2))
    bigger = _frame([1.0, 0.8, 1.2], size=(0.45, 0.6, 0.3))
    without = iou(fit_box(query, bigger, refinements=0), query.box)
    refined = iou(fit_box(query, bigger, refinements=3), query.box)
    assert without < 0.1 and refined > 0.6  # the 1.5x twin shrinks back to about the right size


def test_a_wrong_pose_fits_worse():
    query = _frame([1.0, 0.8, 1.2], size=(0.5, 0.2, 0.15), yaw=0.0)
    turned = _frame([1.0, 0.8, 1.2], size=(0.5, 0.2, 0.15), yaw=np.pi / 2)
    assert iou(fit_box(query, turned), query.box) < 0.5 < iou(fit_box(query, query), query.box)
