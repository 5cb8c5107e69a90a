"""Objectron's camera convention, checked against Objectron's own tutorial.

`tutorial_by_intrinsics` and `tutorial_by_projection` re-implement, equation for equation,
`project_by_intrinsics` and `project_by_camera_projection` of Objectron's
notebooks/objectron-3dprojection-hub-tutorial.ipynb (portrait frames, landscape intrinsics,
x/y swapped after projection). Our generator's files and our own projection must agree with
them, and so must a hand-made frame whose numbers are written here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidssl.evaluate.boxfit import FrameGeometry, fit_box
from vidssl.evaluate.iou3d import iou
from vidssl.objectron.annotations import frame_meta, parse_sequence
from vidssl.objectron.cleaning import query_problem
from vidssl.objectron.geometry import (
    pixel_ray,
    portrait_size,
    project_normalized,
    project_to_pixels,
)
from vidssl.synth.objectron import SynthSpec, generate

SPEC = SynthSpec(videos_per_class=2, frames=10, width=96, height=128, seed=11, workers=1)


def tutorial_by_intrinsics(point_3d, intrinsics, capture_size, image_size) -> np.ndarray:
    """The notebook's project_by_intrinsics: negate z, scale the intrinsics' first row by the
    portrait height and the second by the portrait width, project, then swap x and y."""
    vertices = np.array(point_3d, float).reshape(-1, 3)
    vertices[:, 2] = -vertices[:, 2]
    intr = np.array(intrinsics, float).reshape(3, 3)
    long_side, short_side = max(capture_size), min(capture_size)
    width, height = image_size
    scale = np.array([[height / long_side], [width / short_side]])
    intr[:2, :] = intr[:2, :] * scale
    point_2d = intr @ vertices.T
    point_2d[:2, :] = point_2d[:2, :] / point_2d[2, :]
    point_2d[[0, 1], :] = point_2d[[1, 0], :]
    return point_2d.T[:, :2]


def tutorial_by_projection(point_3d, projection, image_size) -> np.ndarray:
    """The notebook's project_by_camera_projection: NDC from the 4x4 matrix, then the pixel
    column from NDC y and the row from NDC x."""
    vertices = np.array(point_3d, float).reshape(-1, 3)
    homogeneous = np.concatenate((vertices, np.ones_like(vertices[:, :1])), axis=-1).T
    projected = np.matmul(np.array(projection, float).reshape(4, 4), homogeneous)
    ndc = (projected[:-1, :] / projected[-1, :]).T
    x, y = ndc[:, 1], ndc[:, 0]
    width, height = image_size
    return np.stack([(1 + x) / 2 * width, (1 + y) / 2 * height], axis=1)


# A hand-made frame in the real convention: a 1440 x 1920 portrait capture whose camera reports
# the landscape sensor (1920 x 1440) and its intrinsics, principal point (row, column) first.
HAND_INTRINSICS = [1578.6, 0.0, 953.4, 0.0, 1578.6, 712.8, 0.0, 0.0, 1.0]
HAND_PROJECTION = [
    [1.644375, 0.0, 0.006875, 0.0],  # 2 fx / 1920, 1 - 2 px / 1920
    [0.0, 2.1925, 0.01, 0.0],  # 2 fy / 1440, 1 - 2 py / 1440
    [0.0, 0.0, -1.0010005, -0.10005],
    [0.0, 0.0, -1.0, 0.0],
]
# A point 1 m in front of the camera, 10 cm along x (down the image), 5 cm against y (left).
HAND_POINT = [0.1, -0.05, -1.0]
# Where the notebook's formulas put it, worked out by hand: column = 1578.6 * -0.05 + 712.8,
# row = 1578.6 * 0.1 + 953.4, in the full-size portrait image and in the hub's 480 x 640 one.
HAND_PIXEL_FULL = [633.87, 1111.26]
HAND_PIXEL_HUB = [211.29, 370.42]


def test_hand_made_frame_projects_where_the_tutorial_puts_it():
    full, hub = (1440, 1920), (480, 640)
    capture = (1920, 1440)  # image_resolution_width, image_resolution_height as ARKit writes
    assert portrait_size(*capture) == full
    by_intrinsics = tutorial_by_intrinsics(HAND_POINT, HAND_INTRINSICS, capture, full)
    by_projection = tutorial_by_projection(HAND_POINT, HAND_PROJECTION, full)
    ours = project_to_pixels(np.array([HAND_POINT]), np.reshape(HAND_INTRINSICS, (3, 3)))
    for pixels in (by_intrinsics, by_projection, ours):
        np.testing.assert_allclose(pixels[0], HAND_PIXEL_FULL, atol=0.01)
    np.testing.assert_allclose(
        tutorial_by_intrinsics(HAND_POINT, HAND_INTRINSICS, capture, hub)[0],
        HAND_PIXEL_HUB,
        atol=0.01,
    )
    normalized = project_normalized(np.array([HAND_POINT]), np.array(HAND_PROJECTION))[0]
    np.testing.assert_allclose(normalized[:2] * full, HAND_PIXEL_FULL, atol=0.01)
    assert normalized[2] == pytest.approx(1.0)  # depth = -z
    # ...and the ray through that pixel points back at the point.
    ray = pixel_ray(np.reshape(HAND_INTRINSICS, (3, 3)), np.array(HAND_PIXEL_FULL))
    np.testing.assert_allclose(ray * 1.0, HAND_POINT, atol=1e-4)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-geometry")
    generate(out, SPEC)
    return out


def _sequences(root: Path):
    for path in sorted((root / "annotations").rglob("*.pbdata")):
        yield path, parse_sequence(path.read_bytes(), str(path))


def test_generated_files_hold_the_real_convention(generated):
    checked = 0
    for path, sequence in _sequences(generated):
        for frame in sequence.frame_annotations:
            camera = frame.camera
            capture = (camera.image_resolution_width, camera.image_resolution_height)
            # Landscape resolution written, portrait frames decoded (see test_synth).
            assert capture == (SPEC.height, SPEC.width), path
            image_size = (SPEC.width, SPEC.height)
            keypoints = frame.annotations[0].keypoints
            points_3d = np.array([[k.point_3d.x, k.point_3d.y, k.point_3d.z] for k in keypoints])
            if np.any(points_3d[:, 2] >= 0):
                continue  # a corner behind the camera has no projection
            written = np.array([[k.point_2d.x, k.point_2d.y] for k in keypoints]) * image_size
            intrinsics = np.array(camera.intrinsics).reshape(3, 3)
            projection = np.array(camera.projection_matrix).reshape(4, 4)
            # Landscape intrinsics: the principal point's first coordinate is the row's.
            assert intrinsics[0, 2] == pytest.approx(SPEC.height / 2)
            assert intrinsics[1, 2] == pytest.approx(SPEC.width / 2)
            for pixels in (
                tutorial_by_intrinsics(points_3d, camera.intrinsics, capture, image_size),
                tutorial_by_projection(points_3d, camera.projection_matrix, image_size),
                project_to_pixels(points_3d, intrinsics),
                project_normalized(points_3d, projection)[:, :2] * image_size,
            ):
                np.testing.assert_allclose(pixels, written, atol=1.0, err_msg=str(path))
            checked += 1
    assert checked > 50


def test_camera_axes_point_down_and_right_in_the_portrait_image(generated):
    # Objectron: camera x runs down the portrait image, y to the right; the world's up (the
    # annotated ground normal) therefore points against camera x for an upright phone.
    for _, sequence in _sequences(generated):
        frame = sequence.frame_annotations[0]
        normal = np.array(frame.plane_normal)
        assert normal[0] < -0.5 and abs(normal[2]) < 0.9
        intrinsics = np.array(frame.camera.intrinsics).reshape(3, 3)
        below, right = project_to_pixels(
            np.array([[0.0, 0.0, -1.0], [0.1, 0.0, -1.0], [0.0, 0.1, -1.0]]), intrinsics
        )[1:] - project_to_pixels(np.array([[0.0, 0.0, -1.0]]), intrinsics)
        assert below[1] > 0 and below[0] == pytest.approx(0)
        assert right[0] > 0 and right[1] == pytest.approx(0)


def test_every_test_query_fits_its_own_box(generated):
    ious = []
    for path, sequence in _sequences(generated):
        sid = path.relative_to(generated / "annotations").with_suffix("").as_posix()
        category = sid.split("/")[0]
        if sid not in (generated / "index" / f"{category}_annotations_test").read_text().split():
            continue
        for frame in sequence.frame_annotations:
            meta = frame_meta(frame)
            if query_problem(meta) is not None:  # what the benchmark's queries pass
                continue
            query = FrameGeometry.from_annotation(meta)
            assert query.image_size == (SPEC.width, SPEC.height)
            ious.append(iou(fit_box(query, query), query.box))
    assert len(ious) > 5
    assert min(ious) >= 0.99
