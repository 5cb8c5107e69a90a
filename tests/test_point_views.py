"""Views that carry points (vidssl.train.point_views) against analytic geometry: a point marked
by a bright pixel in the frame lands on the bright spot of the rendered view, flipped or not,
when the view shrinks or enlarges the crop."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vidssl.train.point_views import ViewWindow, random_resized_crop, random_window


def _marked_frame(width: int, height: int, x: int, y: int) -> torch.Tensor:
    frame = torch.zeros(3, height, width, dtype=torch.uint8)
    frame[:, y, x] = 255
    return frame


def _spot(view: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(brightest pixel (x, y), intensity-weighted centroid (x, y)) of a rendered view."""
    intensity = view[0].double()
    row, col = divmod(int(intensity.argmax()), intensity.shape[1])
    ys, xs = torch.meshgrid(
        torch.arange(intensity.shape[0], dtype=torch.float64),
        torch.arange(intensity.shape[1], dtype=torch.float64),
        indexing="ij",
    )
    total = intensity.sum()
    centroid = np.array(
        [float((xs * intensity).sum() / total), float((ys * intensity).sum() / total)]
    )
    return np.array([col, row], dtype=float), centroid


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(
    "crop",
    [
        (10, 6, 30, 40),  # enlarged: 30 x 40 -> 48 x 48
        (3, 11, 96, 72),  # shrunk: 96 x 72 -> 48 x 48
    ],
)
def test_a_marked_pixel_lands_where_its_point_is_mapped(crop, flip):
    x0, y0, w, h = crop
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = int(rng.integers(x0 + 4, x0 + w - 4))
        y = int(rng.integers(y0 + 4, y0 + h - 4))
        window = ViewWindow(x0, y0, w, h, size=48, flip=flip)
        (mapped,), inside = window.map_points(np.array([[x, y]]))
        assert inside.all()
        # the analytic map, written out: scale about pixel edges, then mirror
        expected_x = (x + 0.5 - x0) * 48 / w - 0.5
        expected_y = (y + 0.5 - y0) * 48 / h - 0.5
        if flip:
            expected_x = 47 - expected_x
        assert mapped == pytest.approx([expected_x, expected_y], abs=1e-4)
        peak, centroid = _spot(window.render(_marked_frame(120, 90, x, y)))
        assert np.abs(peak - mapped).max() <= 0.5 + 1e-6  # the pixel holding the point
        assert np.abs(centroid - mapped).max() < 0.1


def test_points_outside_the_crop_are_flagged_and_the_flip_mirrors_the_view():
    window = ViewWindow(10, 20, 40, 40, size=40)
    _, inside = window.map_points(np.array([[9.4, 30], [9.6, 30], [49.4, 59.4], [49.6, 30]]))
    assert inside.tolist() == [False, True, True, False]
    frame = torch.arange(3 * 90 * 120, dtype=torch.int64).remainder(251).to(torch.uint8)
    frame = frame.reshape(3, 90, 120)
    plain = window.render(frame)
    flipped = ViewWindow(10, 20, 40, 40, size=40, flip=True).render(frame)
    assert torch.equal(plain, frame[:, 20:60, 10:50])  # same size: the crop itself
    assert torch.equal(flipped, plain.flip(-1))


def test_random_resized_crops_stay_in_the_frame_and_cover_the_asked_area():
    rng = random.Random(3)
    areas, ratios, flips = [], [], []
    for _ in range(400):
        x0, y0, w, h = random_resized_crop(160, 120, (0.3, 0.9), rng)
        assert x0 >= 0 and x0 + w <= 160 and y0 >= 0 and y0 + h <= 120
        areas.append(w * h / (160 * 120))
        ratios.append(w / h)
        flips.append(random_window(160, 120, 32, (0.3, 0.9), rng).flip)
    assert min(areas) >= 0.28 and max(areas) <= 0.92
    assert min(ratios) >= 0.7 and max(ratios) <= 1.4
    assert 0.4 < np.mean(flips) < 0.6
