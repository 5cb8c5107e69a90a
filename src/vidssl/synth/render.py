"""A small textured-polygon renderer (OpenCV): a ground plane by homography, then the object's
faces back to front (painter's algorithm) with back-face culling and Lambertian shading.
It returns the frame and the object's exact silhouette mask."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidssl.objectron.geometry import project_to_pixels, world_to_camera
from vidssl.synth.shapes import Face

_SUBPIXEL_BITS = 4


@dataclass(frozen=True)
class Camera:
    view: np.ndarray  # world -> camera, 4x4
    intrinsics: np.ndarray  # 3x3, pixels
    width: int
    height: int


@dataclass(frozen=True)
class Lighting:
    direction: np.ndarray  # world, unit, pointing from the light towards the scene
    ambient: float
    diffuse: float

    def shade(self, normal_world: np.ndarray) -> float:
        return self.ambient + self.diffuse * max(0.0, float(-normal_world @ self.direction))


def _background(camera: Camera, wall: np.ndarray) -> np.ndarray:
    ramp = np.linspace(1.1, 0.7, camera.height)[:, None, None]
    return np.clip(np.broadcast_to(wall * ramp, (camera.height, camera.width, 3)), 0, 255).astype(
        np.uint8
    )


def _draw_ground(image, camera: Camera, texture, centre, half_size: float, light: float) -> None:
    cx, cz = centre[0], centre[2]
    corners = np.array(
        [
            [cx - half_size, 0, cz - half_size],
            [cx + half_size, 0, cz - half_size],
            [cx + half_size, 0, cz + half_size],
            [cx - half_size, 0, cz + half_size],
        ]
    )
    in_camera = world_to_camera(corners, camera.view)
    if np.any(in_camera[:, 2] >= -1e-3):
        raise ValueError("ground square reaches behind the camera; shrink it")
    pixels = project_to_pixels(in_camera, camera.intrinsics).astype(np.float32)
    size = texture.shape[0]
    source = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
    homography = cv2.getPerspectiveTransform(source, pixels)
    shaded = np.clip(texture.astype(np.float32) * light, 0, 255).astype(np.uint8)
    cv2.warpPerspective(
        shaded,
        homography,
        (camera.width, camera.height),
        dst=image,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_TRANSPARENT,
    )


def _draw_face(image, mask, pixels: np.ndarray, uv: np.ndarray, texture, shade: float) -> None:
    height, width = mask.shape
    x0, y0 = np.floor(pixels.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pixels.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return
    local = (pixels - [x0, y0]).astype(np.float32)
    picks = np.linspace(0, len(pixels), 4, endpoint=False).astype(
        int
    )  # planar face: 4 points fix it
    homography = cv2.getPerspectiveTransform(uv[picks].astype(np.float32), local[picks])
    patch = cv2.warpPerspective(texture, homography, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    face_mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    scaled = np.round(local * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillConvexPoly(face_mask, scaled, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    inside = face_mask.astype(bool)
    region = image[y0:y1, x0:x1]
    region[inside] = np.clip(patch[inside].astype(np.float32) * shade, 0, 255).astype(np.uint8)
    mask[y0:y1, x0:x1] |= inside


def render(
    camera: Camera,
    faces_world: list[Face],
    texture: np.ndarray,
    ground_texture: np.ndarray,
    ground_centre: np.ndarray,
    ground_half_size: float,
    wall_colour: np.ndarray,
    lighting: Lighting,
) -> tuple[np.ndarray, np.ndarray]:
    """(BGR image, bool mask of the object) for one frame."""
    image = _background(camera, wall_colour)
    _draw_ground(
        image,
        camera,
        ground_texture,
        ground_centre,
        ground_half_size,
        lighting.shade(np.array([0, 1.0, 0])),
    )
    mask = np.zeros((camera.height, camera.width), bool)
    rotation = camera.view[:3, :3]
    visible = []
    for face in faces_world:
        vertices = world_to_camera(face.vertices, camera.view)
        centroid = vertices.mean(axis=0)
        if float((rotation @ face.normal) @ centroid) >= 0:  # facing away from the camera
            continue
        visible.append((float(np.linalg.norm(centroid)), vertices, face))
    for _, vertices, face in sorted(visible, key=lambda item: -item[0]):
        pixels = project_to_pixels(vertices, camera.intrinsics)
        _draw_face(image, mask, pixels, face.uv, texture, lighting.shade(face.normal))
    return image, mask
