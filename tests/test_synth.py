"""Synthetic Objectron: real files in the real layout, exact ground truth, same seed same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidssl.objectron.annotations import parse_sequence
from vidssl.objectron.geometry import UNIT_BOX, project_to_pixels
from vidssl.synth.objectron import SynthSpec, generate
from vidssl.synth.shapes import CATEGORIES, floor_texture, object_texture

SPEC = SynthSpec(videos_per_class=1, frames=12, width=96, height=128, seed=7, workers=1)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out, SPEC)


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_official_layout(synthetic):
    root, truths = synthetic
    assert len(truths) == len(CATEGORIES)
    for truth in truths:
        assert (root / "videos" / truth.sequence_id / "video.MOV").is_file()
        assert (root / "annotations" / f"{truth.sequence_id}.pbdata").is_file()
        index = (root / "index" / f"{truth.category}_annotations_{truth.split}").read_text()
        assert truth.sequence_id in index.split()


def test_same_seed_same_bytes(synthetic, tmp_path):
    root, _ = synthetic
    again = tmp_path / "again"
    generate(again, SynthSpec(**{**SPEC.__dict__, "workers": 2}))
    assert _files(again) == _files(root)


def test_videos_decode_with_the_annotated_frame_count(synthetic):
    root, truths = synthetic
    capture = cv2.VideoCapture(str(root / "videos" / truths[0].sequence_id / "video.MOV"))
    frames = 0
    while capture.grab():
        frames += 1
    assert frames == SPEC.frames
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == SPEC.width


def test_keypoints_project_with_the_written_camera(synthetic):
    root, truths = synthetic
    for truth in truths:
        path = root / "annotations" / f"{truth.sequence_id}.pbdata"
        sequence = parse_sequence(path.read_bytes(), str(path))
        obj = sequence.objects[0]
        rotation = np.array(obj.rotation).reshape(3, 3)
        world = (UNIT_BOX * np.array(obj.scale)) @ rotation.T + np.array(obj.translation)
        for frame in sequence.frame_annotations:
            camera = frame.camera
            view = np.array(camera.view_matrix).reshape(4, 4)
            np.testing.assert_allclose(
                view @ np.array(camera.transform).reshape(4, 4), np.eye(4), atol=1e-4
            )
            keypoints = frame.annotations[0].keypoints
            points_3d = np.array([[k.point_3d.x, k.point_3d.y, k.point_3d.z] for k in keypoints])
            # 3D keypoints = the object's box seen from the written view matrix
            np.testing.assert_allclose(points_3d, world @ view[:3, :3].T + view[:3, 3], atol=1e-4)
            # 2D keypoints = those points through the written intrinsics (and projection matrix)
            intrinsics = np.array(camera.intrinsics).reshape(3, 3)
            pixels = project_to_pixels(points_3d, intrinsics)
            written = np.array(
                [[k.point_2d.x * SPEC.width, k.point_2d.y * SPEC.height] for k in keypoints]
            )
            np.testing.assert_allclose(written, pixels, atol=1e-2)
            np.testing.assert_allclose(
                [k.point_2d.depth for k in keypoints], -points_3d[:, 2], rtol=1e-5
            )
            normal = np.array(frame.plane_normal)
            bottom = points_3d[[1, 2, 5, 6]].mean(axis=0)
            assert abs((bottom - np.array(frame.plane_center)) @ normal) < 1e-4  # on the plane


def test_mask_covers_the_projected_box_interior(synthetic):
    root, truths = synthetic
    for truth in truths:
        if truth.defects.get("swing_frames"):
            continue
        path = root / "annotations" / f"{truth.sequence_id}.pbdata"
        sequence = parse_sequence(path.read_bytes(), str(path))
        masks = np.load(root / "masks" / f"{truth.sequence_id}.npy")
        for index, frame in enumerate(sequence.frame_annotations):
            mask = np.unpackbits(masks[index], axis=-1)[:, : SPEC.width].astype(bool)
            points = np.array(
                [
                    [k.point_2d.x * SPEC.width, k.point_2d.y * SPEC.height]
                    for k in frame.annotations[0].keypoints
                ]
            )
            hull = np.zeros_like(mask, np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(np.round(points[1:]).astype(np.int32)), 1)
            grown = cv2.dilate(hull, np.ones((3, 3), np.uint8)).astype(bool)
            assert mask.any()
            assert (mask & ~grown).sum() <= 0.01 * mask.sum()  # the object lies inside its box
            if truth.category in ("cereal_box", "book"):  # a box fills its box's interior
                interior = cv2.erode(hull, np.ones((3, 3), np.uint8)).astype(bool)
                assert (mask & interior).sum() >= 0.98 * interior.sum()


def test_defects_are_recorded(tmp_path):
    spec = SynthSpec(
        videos_per_class=6,
        frames=20,
        width=64,
        height=80,
        seed=1,
        categories=("bike",),
        swing_probability=1.0,
        bike_blur_probability=1.0,
        wrong_category_probability=1.0,
        workers=1,
    )
    truths = generate(tmp_path, spec)
    for truth in truths:
        assert truth.defects["swing_frames"][1] > truth.defects["swing_frames"][0]
        assert truth.defects["annotated_category"] != "bike"
        path = tmp_path / "annotations" / f"{truth.sequence_id}.pbdata"
        sequence = parse_sequence(path.read_bytes(), str(path))
        assert sequence.objects[0].category == truth.defects["annotated_category"]


def _mean_colour(texture: np.ndarray) -> np.ndarray:
    return texture.reshape(-1, 3).astype(float).mean(axis=0)


def test_texture_options():
    def instances(kind: str, category: str) -> list[np.ndarray]:
        return [object_texture(kind, category, np.random.default_rng(i)) for i in range(6)]

    def spread(textures: list[np.ndarray]) -> float:  # mean distance between mean colours
        colours = [_mean_colour(t) for t in textures]
        return float(np.mean([np.linalg.norm(a - b) for a in colours for b in colours]))

    cups, books = instances("category", "cup"), instances("category", "book")
    assert spread(cups) < 0.5 * spread(cups[:3] + books[:3])  # a category shares its look
    unrelated = instances("instance", "cup")
    assert spread(unrelated) > 2 * spread(cups)
    plain = instances("plain", "cup")[0]
    assert plain.reshape(-1, 3).std(axis=0).max() < 15  # one colour, sensor-like noise only
    with pytest.raises(ValueError, match="unknown texture kind"):
        object_texture("marble", "cup", np.random.default_rng(0))


def test_floors_are_muted_beside_object_textures():
    def saturation(texture: np.ndarray) -> float:
        return float(cv2.cvtColor(texture, cv2.COLOR_BGR2HSV)[..., 1].mean())

    floors = [saturation(floor_texture(np.random.default_rng(i))) for i in range(8)]
    objects = [
        saturation(object_texture("instance", "cup", np.random.default_rng(i))) for i in range(8)
    ]
    assert np.mean(floors) < 0.5 * np.mean(objects)


def test_highlight_is_blinn_phong_by_hand():
    from vidssl.synth.render import Lighting

    overhead = Lighting(np.array([0.0, -1.0, 0.0]), ambient=0.4, diffuse=0.5, specular=0.6)
    up, point = np.array([0.0, 1.0, 0.0]), np.zeros(3)
    # Eye on the mirror direction: the half-vector is the normal, the peak.
    assert overhead.highlight(up, point, np.array([0.0, 5.0, 0.0])) == pytest.approx(0.6 * 255)
    # Eye 60 degrees off the normal: the half-vector is 30 degrees off.
    eye = 3 * np.array([np.sin(np.pi / 3), np.cos(np.pi / 3), 0.0])
    expected = 0.6 * 255 * np.cos(np.pi / 6) ** overhead.shininess
    assert overhead.highlight(up, point, eye) == pytest.approx(expected)
    # Seen from behind, lit from behind, or no specular part: nothing.
    assert overhead.highlight(up, point, np.array([0.0, -2.0, 0.0])) == 0
    assert overhead.highlight(-up, point, np.array([0.0, 5.0, 0.0])) == 0
    matte = Lighting(overhead.direction, 0.4, 0.5)
    assert matte.highlight(up, point, np.array([0.0, 5.0, 0.0])) == 0


def test_specular_frames_add_a_highlight_that_differs_per_face_and_moves():
    from vidssl.synth.objectron import build_scene, render_frame
    from vidssl.synth.render import SurfaceMap

    matte = SynthSpec(videos_per_class=1, frames=24, width=96, height=128, seed=3)
    glossy = SynthSpec(**{**matte.__dict__, "specular": 0.6})
    scene_matte, scene_glossy = build_scene(matte, "cup", 0), build_scene(glossy, "cup", 0)
    gains = []
    for frame in (0, 12):
        surfaces = SurfaceMap.empty(matte.width, matte.height)
        plain, mask = render_frame(scene_matte, matte, frame, surfaces)
        shiny, shiny_mask = render_frame(scene_glossy, glossy, frame)
        assert (mask == shiny_mask).all()  # geometry, and so the flow truth, is unchanged
        assert (shiny.astype(int) >= plain.astype(int)).all()  # a highlight only adds light
        gain = (shiny.astype(float) - plain).mean(axis=2)
        per_face = {f: gain[surfaces.face == f].mean() for f in np.unique(surfaces.face) if f >= 0}
        assert max(per_face.values()) - min(per_face.values()) > 5  # local, not a global shift
        gains.append(per_face)
    common = set(gains[0]) & set(gains[1])
    assert max(abs(gains[0][f] - gains[1][f]) for f in common) > 5  # it moves with the camera


def test_roll_turn_turns_the_camera_about_its_optical_axis_and_nothing_else():
    from vidssl.synth.objectron import build_scene

    still = SynthSpec(videos_per_class=1, frames=24, width=96, height=128, seed=3)
    turning = SynthSpec(**{**still.__dict__, "roll_turn": 90.0})
    a, b = build_scene(still, "cup", 0), build_scene(turning, "cup", 0)
    assert np.array_equal(a.eyes, b.eyes) and np.array_equal(a.targets, b.targets)
    angles = []
    for frame in range(still.frames):
        relative = np.linalg.inv(a.transform(frame)) @ b.transform(frame)
        np.testing.assert_allclose(relative[:3, 3], 0, atol=1e-9)  # the same camera centre
        np.testing.assert_allclose(relative[2, :3], [0, 0, 1], atol=1e-9)  # the same optical axis
        angles.append(np.degrees(np.arctan2(relative[1, 0], relative[0, 0])))
    # A steady turn, centred on the video's middle: 90 degrees from first frame to last.
    np.testing.assert_allclose(np.abs(np.diff(angles)), 90 / (still.frames - 1), rtol=1e-6)
    assert abs(angles[-1] - angles[0]) == pytest.approx(90)
    assert abs(angles[0] + angles[-1]) < 1e-6


def test_videos_shorter_than_the_tremor_filter_generate(tmp_path):
    short = SynthSpec(
        videos_per_class=1, frames=4, width=64, height=96, seed=1, categories=("cup",), workers=1
    )
    (truth,) = generate(tmp_path, short)
    video = cv2.VideoCapture(str(tmp_path / "videos" / truth.sequence_id / "video.MOV"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 4
