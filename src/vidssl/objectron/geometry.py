"""Objectron geometry in Objectron's own camera convention, and the 9-keypoint box.

Real Objectron files (and the synthetic generator, which writes exactly what they hold):

- frames are **portrait** (e.g. 1440 wide x 1920 tall);
- the camera frame is ARKit's landscape sensor frame: its x axis points **down** the portrait
  image, its y axis points **right**, z points out of the screen, so a visible point has z < 0;
- `intrinsics` are the landscape sensor's: `K[0, 0], K[0, 2]` belong to the portrait image's
  rows (x), `K[1, 1], K[1, 2]` to its columns (y) -- the principal point reads (cy, cx) from
  the portrait image's point of view;
- `projection_matrix` is OpenGL-like for the landscape sensor: NDC x runs down the portrait
  image, NDC y runs right;
- `point_2d` is normalised in the portrait image: x = column / width, y = row / height.

Objectron's tutorial (notebooks/objectron-3dprojection-hub-tutorial.ipynb) projects with
exactly these swaps; `tests/test_geometry.py` re-implements its two projections and checks
ours against them. Pixels here are (column, row) of the portrait image at the capture's
resolution, whose size `portrait_size` reads off the camera.
"""

from __future__ import annotations

import numpy as np

#: Objectron's unit box: the centre, then the 8 corners at +-0.5, x slowest, z fastest.
UNIT_BOX = np.array(
    [[0.0, 0.0, 0.0]] + [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)],
    dtype=np.float64,
)


def box_points(rotation: np.ndarray, translation: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The 9 keypoints in the world frame: rotation @ (scale * unit) + translation."""
    return (UNIT_BOX * scale) @ rotation.T + translation


def rotation_about_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world 4x4 for a phone held upright (portrait) at `eye`, looking at `target`,
    in Objectron's axes: camera x = down the portrait image, y = right, z = backwards."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        right, up = c * right + s * up, -s * right + c * up
    transform = np.eye(4)
    transform[:3, 0], transform[:3, 1], transform[:3, 2], transform[:3, 3] = (
        -up,
        right,
        -forward,
        eye,
    )
    return transform


def portrait_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the portrait image from a camera's `image_resolution_{width,height}`,
    whichever orientation they were written in (ARKit writes the landscape sensor's)."""
    return min(width, height), max(width, height)


def intrinsics_matrix(focal_px: float, width: int, height: int) -> np.ndarray:
    """Objectron's intrinsics for a centred pinhole camera and a portrait image of
    `width` x `height` pixels: rows first (x), then columns (y)."""
    return np.array([[focal_px, 0, height / 2], [0, focal_px, width / 2], [0, 0, 1]], dtype=float)


def camera_to_pixels(intrinsics: np.ndarray) -> np.ndarray:
    """3x3 matrix M with M @ p = w * (column, row, 1) for a camera-frame point p (w = -z)."""
    k = intrinsics
    return np.array([[0, k[1, 1], -k[1, 2]], [k[0, 0], 0, -k[0, 2]], [0, 0, -1.0]])


def project_to_pixels(points_camera: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(column, row) pixels of camera-frame points in front of the camera (z < 0)."""
    homogeneous = points_camera @ camera_to_pixels(intrinsics).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def pixel_ray(intrinsics: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Camera-frame direction (z = -1) of the ray through a (column, row) pixel."""
    column, row = pixel
    return np.array(
        [
            (row - intrinsics[0, 2]) / intrinsics[0, 0],
            (column - intrinsics[1, 2]) / intrinsics[1, 1],
            -1.0,
        ]
    )


def projection_matrix(
    intrinsics: np.ndarray, width: int, height: int, near: float = 0.05, far: float = 100.0
) -> np.ndarray:
    """ARKit-style projection for a portrait image of `width` x `height`: NDC x = rows
    (row = (1 + ndc_x) / 2 * height), NDC y = columns (column = (1 + ndc_y) / 2 * width)."""
    fx, fy, px, py = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    return np.array(
        [
            [2 * fx / height, 0, 1 - 2 * px / height, 0],
            [0, 2 * fy / width, 1 - 2 * py / width, 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, -1, 0],
        ]
    )


def world_to_camera(points: np.ndarray, view: np.ndarray) -> np.ndarray:
    return points @ view[:3, :3].T + view[:3, 3]


def project_normalized(points_camera: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Objectron's point_2d: (column / width, row / height) in the portrait image from the
    projection matrix, and the depth (-z)."""
    homogeneous = np.concatenate([points_camera, np.ones((len(points_camera), 1))], axis=1)
    clip = homogeneous @ projection.T
    ndc = clip[:, :3] / clip[:, 3:4]
    return np.stack([(ndc[:, 1] + 1) / 2, (ndc[:, 0] + 1) / 2, -points_camera[:, 2]], axis=1)
