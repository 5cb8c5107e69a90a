"""A small textured-polygon renderer (OpenCV): a ground plane by homography, then the object's
faces back to front (painter's algorithm) with back-face culling and Lambertian shading, plus,
when the lighting has a specular part, a Blinn-Phong highlight flat per face (it moves over the
object as the camera does, which crops and colour jitter of one frame cannot imitate).
It returns the frame and the object's exact silhouette mask and, on request, a `SurfaceMap`:
which surface each pixel shows (the wall, the ground, or which face of the object), from which
`vidssl.synth.flow` recovers the 3D point behind every pixel."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidssl.objectron.geometry import camera_to_pixels, project_to_pixels, world_to_camera
from vidssl.synth.shapes import Face

_SUBPIXEL_BITS = 4

WALL, GROUND, OBJECT = 0, 1, 2  # SurfaceMap.kind values


@dataclass(frozen=True)
class SurfaceMap:
    """What each pixel of a rendered frame shows, filled by `render(..., surfaces=...)`.

    `kind`: (H, W) uint8, WALL (the screen-fixed backdrop), GROUND (the textured plane y = 0)
    or OBJECT; `face`: (H, W) int32, the index into `faces_world` of the object face drawn at
    the pixel (the last one the painter drew there), -1 where no face is."""

    kind: np.ndarray
    face: np.ndarray

    @classmethod
    def empty(cls, width: int, height: int) -> SurfaceMap:
        return cls(np.zeros((height, width), np.uint8), np.full((height, width), -1, np.int32))


@dataclass(frozen=True)
class Camera:
    view: np.ndarray  # world -> camera, 4x4
    intrinsics: np.ndarray  # 3x3, Objectron's (landscape sensor) convention, pixels
    width: int
    height: int


@dataclass(frozen=True)
class Lighting:
    direction: np.ndarray  # world, unit, pointing from the light towards the scene
    ambient: float
    diffuse: float
    specular: float = 0.0  # the highlight's peak, a fraction of white (0: Lambertian only)
    shininess: float = 5.0  # Blinn-Phong exponent (low: a broad sheen, as on plastic or paint)

    def shade(self, normal_world: np.ndarray) -> float:
        return self.ambient + self.diffuse * max(0.0, float(-normal_world @ self.direction))

    def highlight(
        self, normal_world: np.ndarray, point_world: np.ndarray, eye: np.ndarray
    ) -> float:
        """Blinn-Phong's specular term at `point_world` seen from `eye` (world), in grey levels
        added to every channel: 255 specular (n.h)^shininess, h the unit half-vector between
        the directions to the light and to the eye; 0 on a surface facing away from either."""
        if self.specular <= 0:
            return 0.0
        to_light, to_eye = -self.direction, eye - point_world
        to_eye = to_eye / max(float(np.linalg.norm(to_eye)), 1e-12)
        if float(normal_world @ to_light) <= 0 or float(normal_world @ to_eye) <= 0:
            return 0.0
        half = to_light + to_eye
        half = half / max(float(np.linalg.norm(half)), 1e-12)
        return 255.0 * self.specular * max(0.0, float(normal_world @ half)) ** self.shininess


def _background(camera: Camera, wall: np.ndarray) -> np.ndarray:
    ramp = np.linspace(1.1, 0.7, camera.height)[:, None, None]
    return np.clip(np.broadcast_to(wall * ramp, (camera.height, camera.width, 3)), 0, 255).astype(
        np.uint8
    )


def _clip_near(points: np.ndarray, near: float = 0.01) -> np.ndarray:
    """Sutherland-Hodgman: the part of a camera-frame polygon in front of z = -near."""
    kept = []
    for current, following in zip(points, np.roll(points, -1, axis=0), strict=True):
        current_in, following_in = current[2] <= -near, following[2] <= -near
        if current_in:
            kept.append(current)
        if current_in != following_in:
            t = (-near - current[2]) / (following[2] - current[2])
            kept.append(current + t * (following - current))
    return np.array(kept)


def _draw_ground(
    image, camera: Camera, texture, centre, half_size: float, light: float, highlight: float = 0.0
) -> np.ndarray | None:
    """The ground square (y = 0) by one homography, masked to its part in front of the camera.
    Returns the pixels it covers (None when none)."""
    size = texture.shape[0]
    texture_to_plane = np.array(
        [
            [2 * half_size / size, 0, centre[0] - half_size],
            [0, 2 * half_size / size, centre[2] - half_size],
            [0, 0, 1],
        ]
    )
    rotation, translation = camera.view[:3, :3], camera.view[:3, 3]
    plane_to_camera = np.stack([rotation[:, 0], rotation[:, 2], translation], axis=1)
    homography = camera_to_pixels(camera.intrinsics) @ plane_to_camera @ texture_to_plane
    shaded = np.clip(texture.astype(np.float32) * light + highlight, 0, 255).astype(np.uint8)
    warped = cv2.warpPerspective(
        shaded, homography, (camera.width, camera.height), borderMode=cv2.BORDER_REPLICATE
    )
    corners = np.array([[0, 0, 1], [size, 0, 1], [size, size, 1], [0, size, 1]], float)
    plane = corners @ texture_to_plane.T
    world = np.stack([plane[:, 0], np.zeros(4), plane[:, 1]], axis=1)
    visible = _clip_near(world_to_camera(world, camera.view))
    if len(visible) < 3:
        return None
    pixels = np.clip(project_to_pixels(visible, camera.intrinsics), -1e5, 1e5)
    mask = np.zeros((camera.height, camera.width), np.uint8)
    scaled = np.round(pixels * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillConvexPoly(mask, scaled, 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    inside = mask.astype(bool)
    image[inside] = warped[inside]
    return inside


def _draw_face(
    image,
    mask,
    pixels: np.ndarray,
    uv: np.ndarray,
    texture,
    shade: float,
    face_ids=None,
    index=-1,
    highlight: float = 0.0,
) -> None:
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
    lit = patch[inside].astype(np.float32) * shade + highlight
    region[inside] = np.clip(lit, 0, 255).astype(np.uint8)
    mask[y0:y1, x0:x1] |= inside
    if face_ids is not None:
        face_ids[y0:y1, x0:x1][inside] = index


def render(
    camera: Camera,
    faces_world: list[Face],
    texture: np.ndarray,
    ground_texture: np.ndarray,
    ground_centre: np.ndarray,
    ground_half_size: float,
    wall_colour: np.ndarray,
    lighting: Lighting,
    surfaces: SurfaceMap | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(BGR image, bool mask of the object) for one frame; fills `surfaces` (a
    `SurfaceMap.empty` of the frame's size) when given, without changing the image."""
    image = _background(camera, wall_colour)
    eye = np.linalg.inv(camera.view)[:3, 3]
    up = np.array([0, 1.0, 0])
    ground_point = np.array([ground_centre[0], 0.0, ground_centre[2]])
    ground = _draw_ground(
        image,
        camera,
        ground_texture,
        ground_centre,
        ground_half_size,
        lighting.shade(up),
        lighting.highlight(up, ground_point, eye),
    )
    if surfaces is not None and ground is not None:
        surfaces.kind[ground] = GROUND
    mask = np.zeros((camera.height, camera.width), bool)
    rotation = camera.view[:3, :3]
    visible = []
    for index, face in enumerate(faces_world):
        vertices = world_to_camera(face.vertices, camera.view)
        centroid = vertices.mean(axis=0)
        if float((rotation @ face.normal) @ centroid) >= 0:  # facing away from the camera
            continue
        visible.append((float(np.linalg.norm(centroid)), index, vertices, face))
    face_ids = None if surfaces is None else surfaces.face
    for _, index, vertices, face in sorted(visible, key=lambda item: -item[0]):
        pixels = project_to_pixels(vertices, camera.intrinsics)
        shade = lighting.shade(face.normal)
        highlight = lighting.highlight(face.normal, face.vertices.mean(axis=0), eye)
        _draw_face(image, mask, pixels, face.uv, texture, shade, face_ids, index, highlight)
    if surfaces is not None:
        surfaces.kind[mask] = OBJECT
    return image, mask
