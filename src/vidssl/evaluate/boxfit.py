"""Zero-shot 9-DoF pose by nearest-neighbour box fitting (SiamPose section 3.4).

Given a query frame and the annotated reference frame its embedding is nearest to:
1. rotate the reference's box (in its camera frame) by the rotation taking the reference's
   ground-plane normal onto the query's;
2. place it on the query's ground plane, its centre on the camera ray through the query's
   estimated object centre: the query's 2D box centre shifted by the reference's offset between
   its projected 3D centre and its own 2D box centre (relative to the 2D box size);
3. rescale it `refinements` times by the ratio of 2D box diagonals (query / fitted box) and snap
   it back onto the plane.

Everything is in camera frames, metres, in Objectron's convention (x down the portrait image,
y right, looking down -Z; see vidssl.objectron.geometry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidssl.objectron.geometry import (
    box_points,
    intrinsics_matrix,
    look_at,
    pixel_ray,
    portrait_size,
    project_to_pixels,
    rotation_about_y,
    world_to_camera,
)


@dataclass(frozen=True)
class FrameGeometry:
    """What box fitting needs of an annotated frame."""

    box: np.ndarray  # 9 x 3, camera frame
    box_2d: np.ndarray  # 9 x 2, (column, row) pixels of the portrait image
    intrinsics: np.ndarray  # 3 x 3, Objectron's convention (vidssl.objectron.geometry)
    plane_center: np.ndarray
    plane_normal: np.ndarray  # unit
    image_size: tuple[int, int]  # width, height of the portrait image at capture resolution

    @classmethod
    def from_annotation(cls, annotation: dict) -> FrameGeometry:
        camera = annotation["camera"]
        width, height = portrait_size(camera["image_width"], camera["image_height"])
        obj = annotation["objects"][0]
        points_2d = np.asarray(obj["keypoints_2d"], float)[:, :2] * [width, height]
        normal = np.asarray(annotation["plane_normal"], float)
        return cls(
            box=np.asarray(obj["keypoints_3d"], float),
            box_2d=points_2d,
            intrinsics=np.asarray(camera["intrinsics"], float).reshape(3, 3),
            plane_center=np.asarray(annotation["plane_center"], float),
            plane_normal=normal / np.linalg.norm(normal),
            image_size=(width, height),
        )

    @property
    def rectangle(self) -> np.ndarray:
        """[x0, y0, x1, y1] of the projected box (the 'perfect detection')."""
        return np.concatenate([self.box_2d.min(axis=0), self.box_2d.max(axis=0)])


def scene_frame(
    eye, size, yaw: float, focal: float = 200.0, image_size: tuple[int, int] = (192, 256)
) -> FrameGeometry:  # type: ignore[no-untyped-def]
    """A box of `size` standing on the ground (y = 0) at the origin, turned by `yaw`, seen from
    `eye` by a camera looking at its centre: exact geometry for tests and benchmarks."""
    size = np.asarray(size, float)
    position = np.array([0.0, size[1] / 2, 0.0])
    view = np.linalg.inv(look_at(np.asarray(eye, float), position))
    box = world_to_camera(box_points(rotation_about_y(yaw), position, size), view)
    intrinsics = intrinsics_matrix(focal, *image_size)
    return FrameGeometry(
        box=box,
        box_2d=project_to_pixels(box, intrinsics),
        intrinsics=intrinsics,
        plane_center=world_to_camera(np.array([[0.0, 0.0, 0.0]]), view)[0],
        plane_normal=view[:3, :3] @ np.array([0, 1.0, 0]),
        image_size=image_size,
    )


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a onto unit vector b."""
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:  # opposite: turn half way round any perpendicular axis
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def _snap(box: np.ndarray, query: FrameGeometry, centre_pixel: np.ndarray) -> np.ndarray:
    """Move `box` so it stands on the query plane with its centre on the ray through the pixel."""
    normal = query.plane_normal
    half_height = float(np.max((box[1:] - box[0]) @ normal))
    ray = pixel_ray(query.intrinsics, centre_pixel)
    denominator = float(ray @ normal)
    if abs(denominator) < 1e-9:
        return box + (query.plane_center + normal * half_height - box[0])
    scale = (half_height + float(query.plane_center @ normal)) / denominator
    return box + (scale * ray - box[0])


def _diagonal(rectangle: np.ndarray) -> float:
    return float(np.hypot(rectangle[2] - rectangle[0], rectangle[3] - rectangle[1]))


def fit_box(query: FrameGeometry, reference: FrameGeometry, refinements: int = 3) -> np.ndarray:
    """The reference's box transposed into the query's camera frame (9 x 3)."""
    rotation = rotation_between(reference.plane_normal, query.plane_normal)
    box = (reference.box - reference.box[0]) @ rotation.T
    ref_rect, query_rect = reference.rectangle, query.rectangle
    ref_size = np.maximum(ref_rect[2:] - ref_rect[:2], 1e-6)
    offset = (reference.box_2d[0] - (ref_rect[:2] + ref_rect[2:]) / 2) / ref_size
    centre_pixel = (query_rect[:2] + query_rect[2:]) / 2 + offset * (
        query_rect[2:] - query_rect[:2]
    )
    fitted = _snap(box + 0.0, query, centre_pixel)
    for _ in range(refinements):
        if np.any(fitted[:, 2] >= -1e-6):
            break  # behind the camera: nothing sensible to project
        projected = project_to_pixels(fitted, query.intrinsics)
        rectangle = np.concatenate([projected.min(axis=0), projected.max(axis=0)])
        ratio = _diagonal(query_rect) / max(_diagonal(rectangle), 1e-6)
        fitted = _snap((fitted - fitted[0]) * ratio, query, centre_pixel)
    return fitted


def fitted_iou(
    query: FrameGeometry, reference: FrameGeometry, refinements: int, symmetric: bool
) -> float:
    """3D IoU of the query's box and the box fitted from the reference (the best over turns
    about the vertical when `symmetric`: cups and bottles)."""
    from vidssl.evaluate.iou3d import iou, symmetric_iou

    fitted = fit_box(query, reference, refinements)
    return float(symmetric_iou(query.box, fitted) if symmetric else iou(query.box, fitted))
