"""Ground-truth forward optical flow and per-pixel category masks of synthetic frames.

The renderer (vidssl.synth.render) draws three kinds of surface, and `SurfaceMap` says which one
each pixel shows (and which object face). The 3D point behind a pixel follows exactly from the
pixel's ray (through the pixel centre, the same convention OpenCV's warps and polygon fills use)
and the plane of the surface drawn there; its motion from frame a to frame b is:

- object faces: rigid and static in the world; the point is re-projected with frame b's camera.
  Exact (up to floating point): the renderer maps each planar face's texture by the projective
  map of that plane, which is what the ray-plane intersection inverts.
- the ground: the plane y = 0, but the renderer stretches its texture over a square whose half
  side follows the camera's horizontal distance (`Scene.ground_half_size`), so a texture point
  slides over the plane, scaling about the square's centre. Flow follows the texture (what the
  pixels show): the world point is scaled about the centre by half_b / half_a, then
  re-projected. Exact for the frames as rendered; a physically fixed floor would move less
  (by the scaling) -- `ground_slip` measures the gap.
- the wall: a vertical colour ramp painted in screen space, with no geometry: it does not move
  in the image, so its flow is zero. Exact for the frames as rendered; a real backdrop would move
  with the camera (this one carries almost no texture, so no flow method can see the difference).
  Its flow is therefore never valid: a ramp constant along each row holds no point to track,
  and correspondence scored there (vidssl.stages.dense_bench) would reward guessing "no motion"
  rather than matching.

A pixel's flow is valid when it is not on the wall, its point lies in front of camera b, lands
inside frame b, and is what frame b shows there: the surface drawn at the nearest pixel is of
the same kind and, for the object, lies at the point's depth along the ray through the exact
landing position (so points hidden by other faces, turned away, or behind the object are
invalid).

Units: pixels of the portrait image, flow = (d column, d row); `x_b = x_a + flow(x_a)`.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vidssl.objectron.geometry import camera_to_pixels, world_to_camera
from vidssl.synth.render import GROUND, OBJECT, WALL, Camera, SurfaceMap
from vidssl.synth.shapes import CATEGORIES, Face

#: The dataset folder of the ground-truth files (`flow_file_key`).
FLOW_FOLDER = "flow"
#: Relative depth difference under which the surface frame b shows is the point itself.
DEPTH_TOLERANCE = 0.005


@dataclass(frozen=True)
class FrameGeometry:
    """One rendered frame's geometry: its camera, the object's faces (world), the ground
    square's centre (world, on y = 0) and half side, and what each pixel shows."""

    camera: Camera
    faces: list[Face]
    ground_centre: np.ndarray
    ground_half_size: float
    surfaces: SurfaceMap

    @property
    def shape(self) -> tuple[int, int]:
        return self.camera.height, self.camera.width


def pixel_grid(width: int, height: int) -> np.ndarray:
    """(H, W, 2) float64 (column, row) of every pixel centre."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([columns, rows], axis=-1)


def _rays(camera: Camera, pixels: np.ndarray) -> np.ndarray:
    """Camera-frame ray directions (z = -1) through (column, row) pixels, any leading shape."""
    inverse = np.linalg.inv(camera_to_pixels(camera.intrinsics))
    homogeneous = np.concatenate([pixels, np.ones((*pixels.shape[:-1], 1))], axis=-1)
    rays = homogeneous @ inverse.T
    return rays / -rays[..., 2:3]


def _planes(geometry: FrameGeometry) -> np.ndarray:
    """(F + 1, 4) camera-frame planes (n, d) with n . X = d: one per face, then the ground."""
    rotation, translation = geometry.camera.view[:3, :3], geometry.camera.view[:3, 3]
    normals = [face.normal for face in geometry.faces] + [np.array([0.0, 1.0, 0.0])]
    anchors = [face.vertices[0] for face in geometry.faces] + [geometry.ground_centre]
    normals_c = np.array(normals) @ rotation.T
    anchors_c = np.array(anchors) @ rotation.T + translation
    return np.concatenate([normals_c, np.sum(normals_c * anchors_c, axis=1)[:, None]], axis=1)


def _plane_index(geometry: FrameGeometry) -> np.ndarray:
    """(H, W) index into `_planes` of the surface each pixel shows, -1 on the wall."""
    kind, face = geometry.surfaces.kind, geometry.surfaces.face
    index = np.where(kind == OBJECT, face, -1)
    return np.where(kind == GROUND, len(geometry.faces), index)


def _depth_along(planes: np.ndarray, index: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Distance along -z (depth) where each ray meets its plane; NaN where there is none."""
    plane = planes[np.maximum(index, 0)]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = plane[..., 3] / np.sum(plane[..., :3] * rays, axis=-1)
    return np.where(index >= 0, scale, np.nan)


def surface_points(geometry: FrameGeometry) -> np.ndarray:
    """(H, W, 3) world point seen at each pixel centre; NaN on the wall."""
    height, width = geometry.shape
    rays = _rays(geometry.camera, pixel_grid(width, height))
    depth = _depth_along(_planes(geometry), _plane_index(geometry), rays)
    rotation, translation = geometry.camera.view[:3, :3], geometry.camera.view[:3, 3]
    return (depth[..., None] * rays - translation) @ rotation


def _project(points_camera: np.ndarray, camera: Camera) -> np.ndarray:
    homogeneous = points_camera @ camera_to_pixels(camera.intrinsics).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return homogeneous[..., :2] / homogeneous[..., 2:3]


def _moved_points(a: FrameGeometry, b: FrameGeometry) -> np.ndarray:
    """Frame a's surface points where they are in frame b's world: ground texture points
    scale about the ground square's centre with the square; everything else is static."""
    points = surface_points(a)
    ground = a.surfaces.kind == GROUND
    factor = b.ground_half_size / a.ground_half_size
    centre = a.ground_centre
    points[ground] = centre + (points[ground] - centre) * factor
    return points


def forward_flow(a: FrameGeometry, b: FrameGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth flow from frame a to frame b: ((H, W, 2) float32 pixels (d column, d row),
    (H, W) bool validity). Invalid pixels (hidden or outside in b) keep their geometric flow
    where it exists (0 where the point is behind camera b)."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} and {b.shape}")
    height, width = a.shape
    grid = pixel_grid(width, height)
    in_b = world_to_camera(_moved_points(a, b).reshape(-1, 3), b.camera.view).reshape(
        height, width, 3
    )
    wall = a.surfaces.kind == WALL
    in_front = ~wall & (in_b[..., 2] < -1e-6)
    target = np.where(in_front[..., None], _project(in_b, b.camera), grid)
    target[wall] = grid[wall]  # the wall is painted in screen space: it does not move
    flow = (target - grid).astype(np.float32)
    flow[~(wall | in_front)] = 0.0

    nearest = np.round(target).astype(np.int64)
    inside = (
        (nearest[..., 0] >= 0)
        & (nearest[..., 0] < width)
        & (nearest[..., 1] >= 0)
        & (nearest[..., 1] < height)
        & (wall | in_front)
    )
    columns = np.clip(nearest[..., 0], 0, width - 1)
    rows = np.clip(nearest[..., 1], 0, height - 1)
    same_kind = b.surfaces.kind[rows, columns] == a.surfaces.kind
    shown = np.where(inside, b.surfaces.face[rows, columns], -1)
    index_b = np.where(b.surfaces.kind[rows, columns] == OBJECT, shown, -1)
    drawn_depth = _depth_along(_planes(b), index_b, _rays(b.camera, target))
    with np.errstate(invalid="ignore"):
        at_depth = np.abs(drawn_depth + in_b[..., 2]) <= DEPTH_TOLERANCE * -in_b[..., 2]
    is_object = a.surfaces.kind == OBJECT
    valid = inside & same_kind & (~is_object | at_depth) & ~wall
    return flow, valid


def ground_slip(a: FrameGeometry, b: FrameGeometry) -> np.ndarray:
    """(H, W) pixels between where a ground pixel's texture point lands in b and where the
    world-fixed floor point behind it would: the part of the ground's flow that comes from the
    renderer rescaling the floor texture (NaN off the ground)."""
    height, width = a.shape
    fixed = world_to_camera(surface_points(a).reshape(-1, 3), b.camera.view)
    moved = world_to_camera(_moved_points(a, b).reshape(-1, 3), b.camera.view)
    gap = np.linalg.norm(_project(fixed, b.camera) - _project(moved, b.camera), axis=-1)
    return np.where(a.surfaces.kind == GROUND, gap.reshape(height, width), np.nan)


def nearest_source_pixels(
    source_width: int, source_height: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows (height,), columns (width,)) int64: for each pixel of a `source_width` x
    `source_height` image resized to `width` x `height`, the source pixel whose centre is
    nearest to its centre (a tie, as at an exact 2x reduction, goes to the even one)."""
    scale = np.array([width / source_width, height / source_height], np.float32)
    columns = (np.arange(width) + 0.5) / scale[0] - 0.5
    rows = (np.arange(height) + 0.5) / scale[1] - 0.5
    columns = np.clip(np.round(columns), 0, source_width - 1).astype(np.int64)
    rows = np.clip(np.round(rows), 0, source_height - 1).astype(np.int64)
    return rows, columns


def resize_nearest(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` ((H, W, ...), any dtype: masks, labels) resized to `width` x `height` by taking
    the source pixel nearest to each new pixel's centre (values are never blended)."""
    rows, columns = nearest_source_pixels(image.shape[1], image.shape[0], width, height)
    return image[np.ix_(rows, columns)]


def resize_flow(
    flow: np.ndarray, valid: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth for the frames resized to `width` x `height` (as ingest's `resize_short`
    does): each new pixel takes the flow and validity of the source pixel nearest to its centre
    (`resize_nearest`: no blending across motion boundaries), the flow scaled to the new pixels.
    Exact where the flow is constant over a source pixel; elsewhere off by at most the flow's
    change over half a source pixel."""
    source_height, source_width = valid.shape
    scale = np.array([width / source_width, height / source_height], np.float32)
    return resize_nearest(flow, width, height) * scale, resize_nearest(valid, width, height)


def category_mask(surfaces: SurfaceMap, category: str) -> np.ndarray:
    """(H, W) uint8: 0 for background, 1 + CATEGORIES.index(category) on the object."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {CATEGORIES}")
    value = np.uint8(CATEGORIES.index(category) + 1)
    return np.where(surfaces.kind == OBJECT, value, np.uint8(0)).astype(np.uint8)


def frame_pairs(frames: int, step: int) -> np.ndarray:
    """(P, 2) int frame pairs (t, t + step), t = 0, step, 2 step, ... of a video of `frames`
    frames: the consecutive frames ingest keeps with `frame_stride` = step."""
    if step <= 0:
        raise ValueError(f"flow_step must be positive, got {step}")
    pairs = [(t, t + step) for t in range(0, frames - step, step)]
    return np.array(pairs, np.int32).reshape(-1, 2)


def flow_file_key(sequence_id: str) -> str:
    """Where a video's ground truth lies in the dataset, relative to its root."""
    return f"{FLOW_FOLDER}/{sequence_id}.npz"


def write_flow_file(
    path: str | Path, geometries: list[FrameGeometry], category: str, step: int
) -> None:
    """One video's ground truth as an .npz (readable with `np.load`), written byte-for-byte
    reproducibly (fixed zip timestamps):

    - `pairs`: (P, 2) int32 frame pairs (t, t + step), t = 0, step, 2 step, ...;
    - `flow`: (P, H, W, 2) float32 forward flow of each pair, pixels (d column, d row);
    - `valid`: (P, H, ceil(W / 8)) uint8, the validity masks packed with np.packbits along x;
    - `category`: (T, H, W) uint8 per-frame category masks (see `category_mask`)."""
    pairs = frame_pairs(len(geometries), step)
    flows, valids = [], []
    for t, s in pairs:
        flow, valid = forward_flow(geometries[t], geometries[s])
        flows.append(flow)
        valids.append(np.packbits(valid, axis=-1))
    height, width = geometries[0].shape
    arrays = {
        "pairs": pairs,
        "flow": np.stack(flows) if flows else np.zeros((0, height, width, 2), np.float32),
        "valid": np.stack(valids) if valids else np.zeros((0, height, (width + 7) // 8), np.uint8),
        "category": np.stack([category_mask(g.surfaces, category) for g in geometries]),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def read_flow_file(path: str | Path | BinaryIO) -> dict[str, np.ndarray]:
    """`write_flow_file`'s arrays (from a path or an open binary file), with `valid` unpacked
    to (P, H, W) bool."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    width = arrays["flow"].shape[2]
    arrays["valid"] = np.unpackbits(arrays["valid"], axis=-1)[..., :width].astype(bool)
    return arrays
