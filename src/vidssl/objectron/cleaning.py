"""The seed paper's Objectron cleaning, frame by frame (pure functions over frame metadata).

A frame is dropped, with the first reason that applies, when its box is non-finite or
degenerate, its centre projects far outside the image, fewer than 3 keypoints fall inside the
image, the box does not stand on the annotated plane, or (for the configured categories) the
frame is blurred: its Laplacian energy is below a fraction of the recent sharp frames'.
"""

from __future__ import annotations

import math
from collections import deque

import cv2
import numpy as np

from vidssl.config import CleanConfig

REASONS = (
    "non_finite",
    "degenerate_box",
    "centre_outside",
    "few_keypoints_inside",
    "off_plane",
    "blurred",
    "behind_camera",
)
#: The reference's validity filter for evaluation queries (rjean/siampose hdf5_parser.py,
#: `_is_frame_valid`): the object's centre within one image size of the image
#: (-640 < x < 1280, -480 < y < 960 at 640 x 480), i.e. normalised in (-1, 2).
QUERY_CENTRE_RANGE = (-1.0, 2.0)

_BOTTOM = [1, 2, 5, 6]  # Objectron's box corners with local y = -0.5
_TOP = [3, 4, 7, 8]


def geometry_problem(frame: dict, scale: list[float], cfg: CleanConfig) -> str | None:
    """The first geometric reason to drop this frame's (first) object, or None."""
    if not frame["objects"]:
        return "non_finite"
    obj = frame["objects"][0]
    points_2d = np.asarray(obj["keypoints_2d"], float)[:, :2]
    points_3d = np.asarray(obj["keypoints_3d"], float)
    if not (
        np.isfinite(points_2d).all() and np.isfinite(points_3d).all() and np.isfinite(scale).all()
    ):
        return "non_finite"
    span = points_2d.max(axis=0) - points_2d.min(axis=0)
    if min(scale) < cfg.min_box_size_m or span.min() <= 1e-4 or points_3d[0, 2] >= 0:
        return "degenerate_box"  # z >= 0: behind the camera (ARKit looks down -Z)
    centre = points_2d[0]
    if np.any(centre < -cfg.centre_margin) or np.any(centre > 1 + cfg.centre_margin):
        return "centre_outside"
    inside = np.all((points_2d >= 0) & (points_2d <= 1), axis=1).sum()
    if inside < cfg.min_keypoints_inside:
        return "few_keypoints_inside"
    if len(frame["plane_center"]) == 3 and len(frame["plane_normal"]) == 3:
        normal = np.asarray(frame["plane_normal"], float)
        normal /= np.linalg.norm(normal) or 1.0
        bottom, top = points_3d[_BOTTOM].mean(axis=0), points_3d[_TOP].mean(axis=0)
        height = top - bottom
        distance = abs(float((bottom - np.asarray(frame["plane_center"], float)) @ normal))
        cosine = abs(float(height @ normal)) / (np.linalg.norm(height) or 1.0)
        angle = math.degrees(math.acos(min(1.0, cosine)))
        if (
            distance > cfg.plane_distance_tolerance * np.linalg.norm(height)
            or angle > cfg.plane_angle_tolerance_deg
        ):
            return "off_plane"
    return None


def query_problem(frame: dict) -> str | None:
    """Why a test frame cannot be a pose query, or None. Queries pass only the reference's
    validity filter (centre within one image size of the image) and what box fitting needs (a
    finite box in front of the camera), not the training-time cleaning: the benchmark scores
    the test data as it is."""
    if not frame["objects"]:
        return "non_finite"
    obj = frame["objects"][0]
    points_2d = np.asarray(obj["keypoints_2d"], float)[:, :2]
    points_3d = np.asarray(obj["keypoints_3d"], float)
    if not (np.isfinite(points_2d).all() and np.isfinite(points_3d).all()):
        return "non_finite"
    if points_3d[0, 2] >= 0:
        return "behind_camera"
    low, high = QUERY_CENTRE_RANGE
    if not np.all((points_2d[0] > low) & (points_2d[0] < high)):
        return "centre_outside"
    return None


def laplacian_energy(image_bgr: np.ndarray) -> float:
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


class BlurDetector:
    """Blurred = energy below `ratio` x the median of the last `history` sharp frames. The
    reference starts at the video's upper-quartile energy, so a video that opens blurred is
    judged against its sharp part."""

    def __init__(self, energies: list[float], ratio: float, history: int) -> None:
        self.ratio = ratio
        self.recent: deque[float] = deque(maxlen=history)
        if energies:
            self.recent.append(float(np.percentile(energies, 75)))

    def is_blurred(self, energy: float) -> bool:
        if self.recent and energy < self.ratio * float(np.median(self.recent)):
            return True
        self.recent.append(energy)
        return False


def crop_box(frame: dict, margin: float, clip: bool = True) -> list[float]:
    """Normalized [x0, y0, x1, y1] around the projected 3D box, enlarged, clipped to the image
    (unclipped for pose queries, whose box may lie partly off the image: the crop is then
    padded, as the reference pads its query crops)."""
    points = np.asarray(frame["objects"][0]["keypoints_2d"], float)[:, :2]
    low, high = points.min(axis=0), points.max(axis=0)
    pad = (high - low) * margin
    low, high = low - pad, high + pad
    if clip:
        low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
    return [round(float(v), 6) for v in (*low, *high)]
