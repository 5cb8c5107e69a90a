"""Views that carry points: a frame cropped (random resized crop), resized to a square and
maybe flipped, with points (x, y) mapped exactly into the view (PiCo's examples,
vidssl.train.samplers.pixel_pairs).

Convention (vidssl.flow's): x is the column, y the row, pixel centres at integer coordinates, so
pixel i covers [i - 0.5, i + 0.5). A crop (x0, y0, w, h) of a frame, resized to `size` x `size`
(scales s_x = size / w, s_y = size / h), maps a frame point to

    x' = (x + 0.5 - x0) * s_x - 0.5,    y' = (y + 0.5 - y0) * s_y - 0.5

(torchvision's resize, `align_corners=False`, samples the same way), and a horizontal flip of
the view maps x' to size - 1 - x'. A point lies in the view when it lies on one of its pixels:
-0.5 <= x' < size - 0.5, likewise y'.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

#: Aspect ratios (w / h) of the random resized crop: SimCLR's and torchvision's.
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ViewWindow:
    """Where a view comes from: the crop (x0, y0, width, height) of the frame in pixels, the
    view's side `size` and whether it is flipped horizontally."""

    x0: int
    y0: int
    width: int
    height: int
    size: int
    flip: bool = False

    def map_points(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame points (N, 2) -> (view points (N, 2) float32, inside (N,) bool)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        x = (xy[:, 0] + 0.5 - self.x0) * (self.size / self.width) - 0.5
        y = (xy[:, 1] + 0.5 - self.y0) * (self.size / self.height) - 0.5
        if self.flip:
            x = self.size - 1 - x
        low, high = -0.5, self.size - 0.5
        inside = (x >= low) & (x < high) & (y >= low) & (y < high)
        return np.stack([x, y], axis=1).astype(np.float32), inside

    def render(self, image: torch.Tensor) -> torch.Tensor:
        """The view of a frame (C, H, W) uint8: the crop, resized (antialiased bilinear) to
        size x size, flipped when `flip`."""
        view = TF.resized_crop(
            image, self.y0, self.x0, self.height, self.width, [self.size, self.size],
            antialias=True,
        )  # fmt: skip
        return TF.horizontal_flip(view) if self.flip else view


def random_resized_crop(
    width: int,
    height: int,
    scale: tuple[float, float],
    rng: random.Random,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """A crop (x0, y0, w, h) of a width x height frame covering a fraction of its area drawn
    uniformly in `scale`, aspect w / h log-uniform in `ratio`: torchvision's RandomResizedCrop
    (10 tries, then the centre crop closest to the ratio range), drawn from `rng`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def random_window(
    width: int,
    height: int,
    size: int,
    scale: tuple[float, float],
    rng: random.Random,
) -> ViewWindow:
    """A random resized crop of a width x height frame to size x size, flipped with
    probability 1/2."""
    x0, y0, w, h = random_resized_crop(width, height, scale, rng)
    return ViewWindow(x0, y0, w, h, size, flip=rng.random() < 0.5)
