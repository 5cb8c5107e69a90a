"""Exact 3D IoU of two oriented boxes, as Objectron's evaluation computes it: the intersection
of two convex polyhedra is the convex hull of (a) each box's corners inside the other box and
(b) the points where each box's edges cross the other box's faces; its volume is that hull's.

Boxes are Objectron's 9 keypoints (centre, then the 8 corners, x slowest, z fastest).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

#: Corner indices (into the 9 keypoints) of the 6 faces, and the 12 edges.
FACES = ((1, 2, 4, 3), (5, 6, 8, 7), (1, 2, 6, 5), (3, 4, 8, 7), (1, 3, 7, 5), (2, 4, 8, 6))
EDGES = (
    (1, 2), (3, 4), (5, 6), (7, 8),
    (1, 3), (2, 4), (5, 7), (6, 8),
    (1, 5), (2, 6), (3, 7), (4, 8),
)  # fmt: skip
_EPS = 1e-9
#: Tolerance of the inside tests, relative to the box's distance and size: annotation files
#: store float32 keypoints (~1e-7 relative), so a box is rectangular only to that precision and
#: an absolute 1e-7 m would call a box's own corners outside it (self-IoU 0.64 seen).
_RELATIVE_TOLERANCE = 1e-5


def box_axes(box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, unit axes as rows, half extents) of a 9-keypoint box."""
    centre = box[0]
    edges = np.stack([box[5] - box[1], box[3] - box[1], box[2] - box[1]])  # x, y, z edges
    lengths = np.linalg.norm(edges, axis=1)
    return centre, edges / np.maximum(lengths, _EPS)[:, None], lengths / 2


def _frame(box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A box's centre, axes, half extents and the tolerance of its inside tests."""
    centre, axes, half = box_axes(box)
    tolerance = _RELATIVE_TOLERANCE * (float(np.linalg.norm(centre)) + float(half.max()))
    return centre, axes, half, tolerance


def inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    centre, axes, half, tolerance = _frame(box)
    local = (points - centre) @ axes.T
    return np.all(np.abs(local) <= half + tolerance, axis=1)


_EDGE_STARTS = np.array([a for a, _ in EDGES])
_EDGE_ENDS = np.array([b for _, b in EDGES])


def _edge_face_crossings(edges_of: np.ndarray, faces_of: np.ndarray) -> np.ndarray:
    """Points where the 12 edges of one box cross the 6 faces (planes, clipped) of the other,
    all edges, axes and face signs at once."""
    centre, axes, half, tolerance = _frame(faces_of)
    starts, ends = edges_of[_EDGE_STARTS], edges_of[_EDGE_ENDS]  # 12 x 3, world
    local_start = (starts - centre) @ axes.T
    direction = (ends - centre) @ axes.T - local_start
    found = []
    for axis in range(3):
        moving = np.abs(direction[:, axis]) >= _EPS
        safe = np.where(moving, direction[:, axis], 1.0)
        others = [i for i in range(3) if i != axis]
        for sign in (-1.0, 1.0):
            t = (sign * half[axis] - local_start[:, axis]) / safe
            points = local_start + t[:, None] * direction
            within = np.all(np.abs(points[:, others]) <= half[others] + tolerance, axis=1)
            keep = moving & (t >= -_EPS) & (t <= 1 + _EPS) & within
            found.append(starts[keep] + t[keep, None] * (ends[keep] - starts[keep]))
    return np.concatenate(found)


def box_volume(box: np.ndarray) -> float:
    _, _, half = box_axes(box)
    return float(np.prod(2 * half))


def intersection_volume(box_a: np.ndarray, box_b: np.ndarray) -> float:
    corners_a, corners_b = box_a[1:], box_b[1:]
    candidates = np.concatenate(
        [
            corners_a[inside(corners_a, box_b)],
            corners_b[inside(corners_b, box_a)],
            _edge_face_crossings(box_a, box_b),
            _edge_face_crossings(box_b, box_a),
        ]
    )
    if len(candidates) < 4:
        return 0.0
    try:
        return float(ConvexHull(candidates).volume)
    except QhullError:  # flat or degenerate: no volume
        return 0.0


def iou(box_a: np.ndarray, box_b: np.ndarray) -> float:
    """Exact IoU of two 9-keypoint boxes (0 when either is degenerate)."""
    box_a, box_b = np.asarray(box_a, float), np.asarray(box_b, float)
    volume_a, volume_b = box_volume(box_a), box_volume(box_b)
    if volume_a <= _EPS or volume_b <= _EPS:
        return 0.0
    shared = intersection_volume(box_a, box_b)
    return shared / (volume_a + volume_b - shared)


def symmetric_iou(box_a: np.ndarray, box_b: np.ndarray, steps: int = 100) -> float:
    """Max IoU over rotations of `box_b` about its own vertical (y) axis: for cups and bottles,
    whose boxes' orientation about the vertical is arbitrary."""
    box_b = np.asarray(box_b, float)
    centre, axes, _ = box_axes(box_b)
    up = axes[1]
    best = 0.0
    for angle in np.linspace(0, 2 * np.pi, steps, endpoint=False):
        c, s = np.cos(angle), np.sin(angle)
        k = np.array([[0, -up[2], up[1]], [up[2], 0, -up[0]], [-up[1], up[0], 0]])
        rotation = np.eye(3) + s * k + (1 - c) * k @ k  # Rodrigues about `up`
        best = max(best, iou(box_a, (box_b - centre) @ rotation.T + centre))
    return best
