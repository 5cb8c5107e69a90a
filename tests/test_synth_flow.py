"""Ground-truth optical flow and category masks of the synthetic generator (vidssl.synth.flow),
checked against what does not come from the generator's geometry: the rendered pixels
(warping), OpenCV's DIS optical flow, and the box annotations the generator writes."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidssl.objectron.annotations import parse_sequence
from vidssl.synth.flow import forward_flow, read_flow_file, resize_flow
from vidssl.synth.objectron import SynthSpec, build_scene, frame_geometry, generate, render_frame
from vidssl.synth.render import OBJECT, WALL
from vidssl.synth.shapes import CATEGORIES

SPEC = SynthSpec(
    frames=24,
    width=96,
    height=128,
    seed=5,
    swing_probability=0,
    bike_blur_probability=0,
    workers=1,
)
FIRST, STEP = 8, 2  # the pair (8, 10): a few pixels of motion at this size


def _surface_ids(geometry) -> np.ndarray:
    surfaces = geometry.surfaces
    return np.where(surfaces.kind == OBJECT, surfaces.face + 3, surfaces.kind).astype(np.float32)


def _interior(ids: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood shows one surface: polygon edges are drawn without
    anti-aliasing and faces are shaded apart, so edge pixels are not comparable."""
    kernel = np.ones((3, 3), np.uint8)
    return (cv2.erode(ids, kernel) == ids) & (cv2.dilate(ids, kernel) == ids)


def _grid(height: int, width: int) -> np.ndarray:
    return np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).astype(np.float32)


@dataclasses.dataclass
class Pair:
    category: str
    image_a: np.ndarray
    image_b: np.ndarray
    flow: np.ndarray
    valid: np.ndarray
    keep: np.ndarray  # valid, and inside one surface in both frames


def _pair(category: str) -> Pair:
    scene = build_scene(SPEC, category, 0)
    # The renderer samples its 256-texel textures without mip-mapping: at 96 x 128 pixels they
    # alias, and a pixel's colour is not reproducible from frame to frame even along the exact
    # motion (measured: 4-7 grey levels mean error). Smoothing the textures (the geometry, and
    # so the flow, is untouched) takes the aliasing out of the pixel comparisons.
    smooth = {
        "texture": cv2.GaussianBlur(scene.texture, (0, 0), 2),
        "ground": cv2.GaussianBlur(scene.ground, (0, 0), 2),
    }
    scene = dataclasses.replace(scene, **smooth)
    a, b = FIRST, FIRST + STEP
    geometry_a, geometry_b = frame_geometry(scene, SPEC, a), frame_geometry(scene, SPEC, b)
    flow, valid = forward_flow(geometry_a, geometry_b)
    target = _grid(*valid.shape) + flow
    lands_inside = cv2.remap(
        _interior(_surface_ids(geometry_b)).astype(np.uint8),
        target[..., 0],
        target[..., 1],
        cv2.INTER_NEAREST,
        borderValue=0,
    ).astype(bool)
    keep = valid & _interior(_surface_ids(geometry_a)) & lands_inside
    return Pair(
        category,
        render_frame(scene, SPEC, a)[0],
        render_frame(scene, SPEC, b)[0],
        flow,
        valid,
        keep,
    )


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    return [_pair(category) for category in CATEGORIES]


def _warp_error(pair: Pair, flow: np.ndarray, where: np.ndarray) -> float:
    """Mean abs difference (grey levels, over BGR) between frame a and frame b sampled at
    x + flow(x) (bilinear)."""
    target = _grid(*flow.shape[:2]) + flow
    warped = cv2.remap(
        pair.image_b,
        target[..., 0],
        target[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return float(np.abs(warped.astype(np.float32) - pair.image_a).mean(axis=-1)[where].mean())


def _textured(pair: Pair) -> np.ndarray:
    grey = cv2.cvtColor(pair.image_a, cv2.COLOR_BGR2GRAY)
    gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return pair.keep & (gradient > 16)


def test_warping_frame_b_by_the_flow_gives_back_frame_a(pairs):
    """Measured (seed 5, pair 8 -> 10, 96 x 128): 1.2-2.7 grey levels with the flow; every
    +-0.5 px shift or +-10% scaling of it does worse (1.6-5.4); zero flow 5-17, +2 px 4-22."""
    for pair in pairs:
        textured = _textured(pair)
        assert textured.sum() > 300, pair.category
        exact = _warp_error(pair, pair.flow, textured)
        assert exact < 3.0, pair.category
        for shift in ([0.5, 0], [-0.5, 0], [0, 0.5], [0, -0.5]):
            shifted = pair.flow + np.float32(shift)
            assert _warp_error(pair, shifted, textured) > exact, (pair.category, shift)
        for scale in (0.9, 1.1):
            assert _warp_error(pair, pair.flow * scale, textured) > exact, (pair.category, scale)
        assert _warp_error(pair, np.zeros_like(pair.flow), textured) > 2 * exact, pair.category
        assert _warp_error(pair, pair.flow + 2, textured) > 2 * exact, pair.category


def test_dis_optical_flow_agrees_with_the_flow(pairs):
    """OpenCV's DIS flow (medium preset) on the rendered frames, on valid pixels with texture
    in two directions. Measured, pooled over the categories: end-point error median 0.74 px,
    mean 1.34 px, against a mean motion of 4.0 px (DIS vs zero flow: median 3.15 px)."""
    errors, motions, against_zero, against_shift = [], [], [], []
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    for pair in pairs:
        grey_a = cv2.cvtColor(pair.image_a, cv2.COLOR_BGR2GRAY)
        grey_b = cv2.cvtColor(pair.image_b, cv2.COLOR_BGR2GRAY)
        measured = dis.calc(grey_a, grey_b, None)
        corners = pair.keep & (cv2.cornerMinEigenVal(grey_a, 5) > 5e-5)
        assert corners.sum() > 300, pair.category
        epe = np.linalg.norm(measured - pair.flow, axis=-1)[corners]
        zero = np.linalg.norm(measured, axis=-1)[corners]
        shifted = np.linalg.norm(measured - pair.flow - 2, axis=-1)[corners]
        assert epe.mean() < zero.mean() and epe.mean() < shifted.mean(), pair.category
        errors.append(epe)
        motions.append(np.linalg.norm(pair.flow, axis=-1)[corners])
        against_zero.append(zero)
        against_shift.append(shifted)
    epe, motion = np.concatenate(errors), np.concatenate(motions)
    assert np.median(epe) < 1.0
    assert epe.mean() < 0.5 * motion.mean()
    assert np.median(epe) < 0.4 * np.median(np.concatenate(against_zero))
    assert np.median(epe) < 0.4 * np.median(np.concatenate(against_shift))


def test_valid_pixels_come_back_with_the_backward_flow():
    """The validity mask against the flow the other way (b -> a), sampled where the pixel
    lands: valid pixels return to where they started; most invalid ones do not."""
    scene = build_scene(SPEC, "chair", 0)
    a, b = frame_geometry(scene, SPEC, FIRST), frame_geometry(scene, SPEC, FIRST + STEP)
    flow, valid = forward_flow(a, b)
    back, _ = forward_flow(b, a)
    target = _grid(*valid.shape) + flow
    returned = cv2.remap(
        back, target[..., 0], target[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    loop = np.linalg.norm(flow + returned, axis=-1)
    interior = valid & _interior(_surface_ids(a))
    # (Over moving surfaces only: the wall, whose loops were exactly 0, is never valid.)
    assert np.percentile(loop[interior], 99) < 0.1
    height, width = valid.shape
    lands = (target[..., 0] > 1) & (target[..., 0] < width - 2)
    lands &= (target[..., 1] > 1) & (target[..., 1] < height - 2)
    hidden = ~valid & lands & (a.surfaces.kind != WALL)
    assert hidden.sum() > 50  # the chair hides floor and its own legs as the camera turns
    assert (loop[hidden] > 1).mean() > 0.6
    outside = (target[..., 0] < -0.5) | (target[..., 0] >= width - 0.5)
    outside |= (target[..., 1] < -0.5) | (target[..., 1] >= height - 0.5)
    assert outside.any() and not valid[outside].any()  # points that leave the frame


FILE_SPEC = SynthSpec(
    videos_per_class=1,
    frames=6,
    width=96,
    height=128,
    seed=7,
    swing_probability=0,
    wrong_category_probability=0.5,
    workers=1,
)


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def with_flow(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("synth-flow")
    return out, generate(out, dataclasses.replace(FILE_SPEC, flow_step=2))


def test_flow_files_are_optional_and_leave_the_rest_unchanged(with_flow, tmp_path):
    root, truths = with_flow
    generate(tmp_path / "plain", FILE_SPEC)
    generate(tmp_path / "again", dataclasses.replace(FILE_SPEC, flow_step=2, workers=2))
    files = _files(root)
    flow_files = {name for name in files if name.startswith("flow/")}
    assert flow_files == {f"flow/{truth.sequence_id}.npz" for truth in truths}
    assert {k: v for k, v in files.items() if k not in flow_files} == _files(tmp_path / "plain")
    assert _files(tmp_path / "again") == files  # same seed, same bytes
    data = read_flow_file(root / "flow" / f"{truths[0].sequence_id}.npz")
    assert data["pairs"].tolist() == [[0, 2], [2, 4]]  # the frames a frame stride of 2 keeps
    assert data["flow"].shape == (2, 128, 96, 2) and data["flow"].dtype == np.float32
    assert data["valid"].shape == (2, 128, 96) and data["valid"].dtype == bool
    assert data["category"].shape == (6, 128, 96) and data["category"].dtype == np.uint8
    scene = build_scene(FILE_SPEC, truths[0].category, 0)
    flow, valid = forward_flow(
        frame_geometry(scene, FILE_SPEC, 2), frame_geometry(scene, FILE_SPEC, 4)
    )
    np.testing.assert_array_equal(data["flow"][1], flow)
    np.testing.assert_array_equal(data["valid"][1], valid)
    with pytest.raises(ValueError, match="flow_step"):
        generate(tmp_path / "bad", dataclasses.replace(FILE_SPEC, flow_step=6))


def test_category_masks_fill_the_annotated_box(with_flow):
    """The category mask against the 2D hull of the box keypoints written in the .pbdata:
    the object lies inside its box (measured: no pixel outside the 1-px grown hull); a
    box-shaped object fills it (IoU measured 0.967-0.992; other shapes 0.32-0.89)."""
    root, truths = with_flow
    for truth in truths:
        data = read_flow_file(root / "flow" / f"{truth.sequence_id}.npz")
        label = CATEGORIES.index(truth.category) + 1  # the true one, not the annotated one
        masks = np.load(root / "masks" / f"{truth.sequence_id}.npy")
        path = root / "annotations" / f"{truth.sequence_id}.pbdata"
        sequence = parse_sequence(path.read_bytes(), str(path))
        for index, frame in enumerate(sequence.frame_annotations):
            category = data["category"][index]
            assert set(np.unique(category)) <= {0, label}
            silhouette = np.unpackbits(masks[index], axis=-1)[:, : FILE_SPEC.width].astype(bool)
            np.testing.assert_array_equal(category == label, silhouette)
            points = np.array(
                [
                    [k.point_2d.x * FILE_SPEC.width, k.point_2d.y * FILE_SPEC.height]
                    for k in frame.annotations[0].keypoints
                ]
            )
            hull = np.zeros(category.shape, np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(np.round(points[1:]).astype(np.int32)), 1)
            grown = cv2.dilate(hull, np.ones((3, 3), np.uint8)).astype(bool)
            inside = category == label
            assert inside.sum() > 50, truth.sequence_id
            assert (inside & ~grown).sum() <= 0.01 * inside.sum(), truth.sequence_id
            if truth.category in ("cereal_box", "book"):
                box = hull.astype(bool)
                iou = (inside & box).sum() / (inside | box).sum()
                assert iou > 0.9, (truth.sequence_id, index, iou)


def test_flow_of_resized_frames_matches_the_flow_rendered_at_that_size():
    """The scene does not depend on the frame size (focal length and distance scale with it):
    the flow rendered at 192 x 256 and resized to 96 x 128 is the flow rendered at 96 x 128
    (measured: identical on valid interior pixels, validity agreeing on 98-99% of pixels)."""
    large = dataclasses.replace(SPEC, width=192, height=256)
    flows = {}
    for spec in (SPEC, large):
        scene = build_scene(spec, "cereal_box", 0)
        a, b = frame_geometry(scene, spec, FIRST), frame_geometry(scene, spec, FIRST + STEP)
        flows[spec.width] = (*forward_flow(a, b), _interior(_surface_ids(a)))
    flow, valid, interior = flows[96]
    resized, resized_valid = resize_flow(*flows[192][:2], 96, 128)
    both = valid & resized_valid & interior
    assert both.mean() > 0.8 * valid.mean()  # (the wall, over half the frame, is never valid)
    assert (valid == resized_valid).mean() > 0.97
    error = np.linalg.norm(resized - flow, axis=-1)[both]
    assert np.percentile(error, 99) < 0.1 and np.abs(flow[both]).max() > 2


def test_chained_flow_correspondences_agree_with_the_direct_flow_over_the_gap():
    """The dense bench scores frames k apart by chaining the stored consecutive flows
    (vidssl.evaluate.dense.flow_correspondences); the generator's geometry gives the flow from
    frame p straight to p + k, which chaining must reproduce where both say valid."""
    from vidssl.evaluate.dense import flow_correspondences

    scene = build_scene(SPEC, "chair", 0)
    frames = [FIRST + STEP * k for k in range(4)]  # three steps: 6 source frames apart
    geometries = [frame_geometry(scene, SPEC, f) for f in frames]
    steps = [forward_flow(a, b) for a, b in itertools.pairwise(geometries)]
    points_a, chained, ok = flow_correspondences(
        [flow for flow, _ in steps], step=4, valid=[valid for _, valid in steps]
    )
    direct, direct_valid = forward_flow(geometries[0], geometries[-1])
    rows, columns = points_a[:, 1].astype(int), points_a[:, 0].astype(int)
    both = ok & direct_valid[rows, columns]
    motion = np.linalg.norm(direct[rows, columns], axis=1)
    error = np.linalg.norm(chained - (points_a + direct[rows, columns]), axis=1)[both]
    assert both.sum() > 0.25 * len(points_a)  # the object and the ground (never the wall)
    assert np.median(motion[both]) > 3.0  # the gap moves points by pixels, not fractions
    assert np.median(error) < 0.05
    assert np.quantile(error, 0.95) < 0.5
    # One field is the plain single-step case.
    single_a, single_b, single_ok = flow_correspondences(steps[0][0], 4, steps[0][1])
    rows, columns = single_a[:, 1].astype(int), single_a[:, 0].astype(int)
    np.testing.assert_allclose(
        single_b[single_ok], (single_a + steps[0][0][rows, columns])[single_ok]
    )
