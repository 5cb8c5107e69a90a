"""Objectron geometry: the 9-keypoint box, ARKit-style cameras (looking down -Z, y up), and the
projections between world, camera and normalized image coordinates."""

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
    """Camera-to-world 4x4 for a camera at `eye` looking at `target` (ARKit: -Z forward, +Y up)."""
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
        right,
        up,
        -forward,
        eye,
    )
    return transform


def intrinsics_matrix(focal_px: float, width: int, height: int) -> np.ndarray:
    return np.array([[focal_px, 0, width / 2], [0, focal_px, height / 2], [0, 0, 1]], dtype=float)


def projection_matrix(
    intrinsics: np.ndarray, width: int, height: int, near: float = 0.05, far: float = 100.0
) -> np.ndarray:
    """OpenGL-style projection whose NDC maps to Objectron's normalized 2D points:
    x_norm = (ndc_x + 1) / 2, y_norm = (1 - ndc_y) / 2."""
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    return np.array(
        [
            [2 * fx / width, 0, 1 - 2 * cx / width, 0],
            [0, 2 * fy / height, 2 * cy / height - 1, 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
            [0, 0, -1, 0],
        ]
    )


def world_to_camera(points: np.ndarray, view: np.ndarray) -> np.ndarray:
    return points @ view[:3, :3].T + view[:3, 3]


def project_to_pixels(points_camera: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pixel coordinates (u right, v down) of camera-frame points in front of the camera (z < 0)."""
    depth = -points_camera[:, 2]
    u = intrinsics[0, 0] * points_camera[:, 0] / depth + intrinsics[0, 2]
    v = intrinsics[1, 2] - intrinsics[1, 1] * points_camera[:, 1] / depth
    return np.stack([u, v], axis=1)


def project_normalized(points_camera: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Objectron's point_2d: (x, y) in [0, 1] from the projection matrix, and depth (-z)."""
    homogeneous = np.concatenate([points_camera, np.ones((len(points_camera), 1))], axis=1)
    clip = homogeneous @ projection.T
    ndc = clip[:, :3] / clip[:, 3:4]
    return np.stack([(ndc[:, 0] + 1) / 2, (1 - ndc[:, 1]) / 2, -points_camera[:, 2]], axis=1)
