"""Dense evaluation: nearest-pixel correspondence (PCK, EPE) on features whose answer is known,
the linear-probe segmentation and its mIoU, the VOC-layout loader on a tiny tree written here,
and the dense figures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vidssl.datasets.voc import VOID, VocError, VocSegmentation, voc_palette
from vidssl.errors import InputError
from vidssl.evaluate import plots
from vidssl.evaluate.dense import (
    LinearProbe,
    ProbeSettings,
    cell_centres,
    chance_pck,
    confusion_matrix,
    correspondence_scores,
    flow_correspondences,
    linear_probe_scores,
    match_points,
    pck,
    segmentation_scores,
    track_errors,
    train_linear_probe,
)
from vidssl.flow.tracks import track_points

STRIDE = 4


@pytest.fixture(autouse=True)
def _one_torch_thread():  # type: ignore[no-untyped-def]
    """The probes here are tiny: on a busy 2-core machine thread hand-offs cost 30x the maths."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _position_codes(height: int, width: int) -> np.ndarray:
    """(h*w, h, w): cell (i, j) holds the one-hot code of its own position."""
    return np.eye(height * width, dtype=np.float32).reshape(height * width, height, width)


def _shifted(features: np.ndarray, rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """`features` moved down `rows` and right `columns` cells; uncovered cells random."""
    rng = np.random.default_rng(seed)
    moved = rng.normal(size=features.shape).astype(np.float32)
    _, height, width = features.shape
    moved[:, rows:, columns:] = features[:, : height - rows, : width - columns]
    return moved


def test_translation_of_position_codes_matches_cells_exactly() -> None:
    """Frame b = frame a moved by (8, 4) px = (2, 1) cells. Queries at cell centres land on the
    true cell centre: EPE 0. Queries at every integer pixel are off by the cell-centre rounding:
    each coordinate by 0.5 or 1.5 px with equal frequency, so PCK@1 = 1/4 (both 0.5), PCK@2 =
    3/4 (all but both 1.5: 2.12 px), PCK@4 = 1, EPE = mean of the four distances."""
    features_a = _position_codes(16, 16)
    features_b = _shifted(features_a, rows=1, columns=2)
    shift = np.array([2 * STRIDE, 1 * STRIDE], float)

    centres = cell_centres(14, 14, STRIDE)  # cells whose target stays inside b
    scores = correspondence_scores(features_a, features_b, centres, centres + shift)
    assert scores["epe"] == 0.0 and scores["pck@1px"] == 1.0 and scores["queries"] == 196

    ys, xs = np.mgrid[0:56, 0:56]
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float)
    valid = np.ones(len(points), bool)
    valid[::7] = False  # "occluded": their truth is garbage and must not count
    truth = points + shift
    truth[~valid] = -1000
    scores = correspondence_scores(features_a, features_b, points, truth, valid)
    expected_epe = np.mean([np.hypot(a, b) for a in (0.5, 1.5) for b in (0.5, 1.5)])
    assert scores["pck@1px"] == pytest.approx(0.25, abs=0.01)
    assert scores["pck@2px"] == pytest.approx(0.75, abs=0.01)
    assert scores["pck@4px"] == scores["pck@16px"] == 1.0
    assert scores["epe"] == pytest.approx(expected_epe, abs=0.01)
    assert scores["queries"] == valid.sum()
    assert scores["pck_avg"] == pytest.approx((0.25 + 0.75 + 3) / 5, abs=0.01)
    everywhere = match_points(features_a, features_b, points, STRIDE)
    nearby = match_points(features_a, features_b, points, STRIDE, radius=16, chunk=100)
    assert np.array_equal(everywhere, nearby)  # chunked and radius-limited: the same matches


def test_search_radius_ignores_a_far_lookalike() -> None:
    """A far cell of b that carries the query's code first in raster order wins the global
    argmax; a search radius around the query keeps only the near, true one."""
    features_a = _position_codes(8, 8)
    features_b = features_a.copy()
    features_b[:, 0, 0] = features_a[:, 6, 6]  # a lookalike of cell (6, 6) far away
    query = cell_centres(8, 8, STRIDE)[[6 * 8 + 6]]
    assert match_points(features_a, features_b, query, STRIDE).tolist() == [[1.5, 1.5]]
    near = match_points(features_a, features_b, query, STRIDE, radius=6)
    assert near.tolist() == query.tolist()


def test_random_features_score_the_analytic_chance() -> None:
    """With i.i.d. random embeddings every cell of b is equally likely the nearest, so PCK@t is
    the share of b's cell centres within t of the truth (`chance_pck`): for a query at an
    interior cell centre of a 16 x 16 grid at stride 4, centres lie on a 4 px lattice, so 1 of
    256 lies within 1 or 2 px, 5 within 4, 13 within 8 and 49 within 16."""
    interior = np.array([[8 * STRIDE + 1.5, 8 * STRIDE + 1.5]])
    chance = chance_pck(interior, 16, 16, STRIDE)
    assert list(chance.values()) == pytest.approx([1 / 256, 1 / 256, 5 / 256, 13 / 256, 49 / 256])

    rng = np.random.default_rng(1)
    centres = cell_centres(16, 16, STRIDE)
    predicted, truths = [], []
    for _ in range(24):  # independent frame pairs pooled
        features_a = rng.normal(size=(32, 16, 16)).astype(np.float32)
        features_b = rng.normal(size=(32, 16, 16)).astype(np.float32)
        predicted.append(match_points(features_a, features_b, centres, STRIDE))
        truths.append(centres)
    predicted_all, truth_all = np.concatenate(predicted), np.concatenate(truths)
    measured = pck(predicted_all, truth_all)
    expected = chance_pck(truth_all, 16, 16, STRIDE)
    for key, value in expected.items():
        spread = np.sqrt(value * (1 - value) / len(truth_all))
        assert abs(measured[key] - value) < 5 * spread + 1e-3, (key, measured[key], value)
    assert measured["pck@16px"] < 0.2


def test_flow_correspondences_and_diagonal_thresholds() -> None:
    """A constant ground-truth flow of (8, 4) px: grid queries, truths moved by it, those
    leaving the frame or masked out invalid; position codes then score PCK@4 = 1."""
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 8, 4
    visible = np.ones((64, 64), bool)
    visible[:8] = False
    points_a, points_b, valid = flow_correspondences(flow, step=8, valid=visible)
    assert np.allclose(points_b - points_a, [8, 4])
    leaving = (points_b[:, 0] > 63.5) | (points_b[:, 1] > 63.5) | (points_a[:, 1] < 8)
    assert (valid == ~leaving).all() and valid.sum() == 6 * 7

    features_a = _position_codes(16, 16)
    scores = correspondence_scores(
        features_a,
        _shifted(features_a, rows=1, columns=2),
        points_a,
        points_b,
        valid,
        diagonal_fractions=(0.05,),
    )
    assert scores["pck@4px"] == 1.0 and scores["pck@0.05diag"] == 1.0  # 0.05 * 90.5 px
    with pytest.raises(InputError, match="image_size"):
        pck(points_a, points_b, diagonal_fractions=(0.1,))
    untracked = points_a.copy()
    untracked[0] = np.nan
    assert np.isnan(match_points(features_a, features_a, untracked, STRIDE)[0]).all()
    with pytest.raises(InputError, match="1 valid queries have a non-finite"):
        pck(match_points(features_a, features_a, untracked, STRIDE), points_a)


def test_track_errors_measure_the_drift_from_the_true_flow() -> None:
    """Tracks through a translation of (1.5, -0.5) px per frame: no drift against that flow;
    against a truth 0.25 px/frame further right, 0.25 k px after k frames; truth masked out on
    a frame drops the pairs that start there."""
    steps = 4
    forward = np.empty((steps, 24, 32, 2), np.float32)
    forward[..., 0], forward[..., 1] = 1.5, -0.5
    starts = np.array([[4.0, 10.0], [10.25, 12.5], [20.0, 15.0]])
    tracks = track_points(forward, -forward, starts=(np.zeros(3, np.int64), starts))
    assert (tracks.length == steps + 1).all()
    exact = track_errors(tracks, list(forward), [None] * steps, max_steps=3)
    assert sorted(exact) == [1, 2, 3]
    assert [len(exact[k]) for k in (1, 2, 3)] == [3 * 4, 3 * 3, 3 * 2]  # tracks x start frames
    assert max(float(d.max()) for d in exact.values()) < 1e-4
    biased = forward + np.array([0.25, 0.0], np.float32)
    drift = track_errors(tracks, list(biased), [None] * steps, max_steps=3)
    for k, distances in drift.items():
        np.testing.assert_allclose(distances, 0.25 * k, atol=1e-4)
    hidden = [np.zeros((24, 32), bool), None, None, None]
    assert len(track_errors(tracks, list(forward), hidden, max_steps=1)[1]) == 3 * 3
    no_truth = [None, *forward[1:]]
    assert len(track_errors(tracks, no_truth, [None] * steps, max_steps=2)[2]) == 3 * 2


def test_miou_matches_a_hand_computed_confusion_matrix() -> None:
    """truth/prediction over 8 pixels, 2 void: confusion rows (truth) [[2,1,0,0],[0,2,0,0],
    [1,0,0,0],[0,0,0,0]]. IoU = 2/4, 2/3, 0/1; class 3 is predicted only on void pixels, so it
    is in neither and is left out: mIoU = (1/2 + 2/3 + 0) / 3; fIoU = 3/6*1/2 + 2/6*2/3."""
    truth = np.array([[0, 0, 1, 1], [2, VOID, VOID, 0]])
    predicted = np.array([[0, 1, 1, 1], [0, 3, 2, 0]])
    confusion = confusion_matrix(predicted, truth, classes=4)
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    scores = segmentation_scores(confusion)
    assert scores["iou"][:3] == pytest.approx([0.5, 2 / 3, 0.0]) and np.isnan(scores["iou"][3])
    assert scores["miou"] == pytest.approx((0.5 + 2 / 3) / 3)
    assert scores["fiou"] == pytest.approx(0.5 * 0.5 + (2 / 6) * (2 / 3))
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)
    with pytest.raises(InputError, match="truth holds class 7"):
        confusion_matrix(predicted, np.full((2, 4), 7), classes=4)


def _blocky_masks(rng: np.random.Generator, count: int, classes: int) -> np.ndarray:
    """(count, 32, 32) masks constant on 8x8 blocks (2x2 feature cells; balanced random
    classes), with a void line across each image."""
    blocks = rng.integers(0, classes, size=(count, 4, 4))
    masks = blocks.repeat(2 * STRIDE, axis=1).repeat(2 * STRIDE, axis=2).astype(np.uint8)
    masks[:, 13, :] = VOID
    return masks


def _class_features(masks: np.ndarray, classes: int, rng, noise: float) -> np.ndarray:
    """(N, 12, 8, 8): the one-hot class of each 4x4 cell plus Gaussian noise and 8 nuisance
    channels."""
    cells = masks[:, 2::STRIDE, 2::STRIDE].astype(int)  # row 13 (void) is never sampled
    one_hot = np.eye(classes, dtype=np.float32)[cells].transpose(0, 3, 1, 2)
    nuisance = rng.normal(size=(len(masks), 8, 8, 8)).astype(np.float32)
    return np.concatenate([one_hot + noise * rng.normal(size=one_hot.shape), nuisance], axis=1)


def test_linear_probe_reads_classes_from_features_and_not_from_noise() -> None:
    """Features that carry each cell's class (one-hot + noise) give a near-perfect probe on
    held-out images; random features give no more than chance: for balanced classes any
    prediction independent of the truth has expected IoU_c = q/(1+3q) with C=4, at most 1/7
    in the mean (uniform q)."""
    rng = np.random.default_rng(0)
    classes = 4
    train_masks, test_masks = _blocky_masks(rng, 16, classes), _blocky_masks(rng, 8, classes)
    settings = ProbeSettings(epochs=25, batch_size=8, lr=0.1, seed=3)
    informative, probe = linear_probe_scores(
        _class_features(train_masks, classes, rng, 0.15),
        train_masks,
        _class_features(test_masks, classes, rng, 0.15),
        test_masks,
        classes,
        settings,
    )
    assert informative["miou"] > 0.9, informative
    assert probe.losses[-1] < probe.losses[0] / 2

    random_train = rng.normal(size=(16, 12, 8, 8)).astype(np.float32)
    random_test = rng.normal(size=(8, 12, 8, 8)).astype(np.float32)
    chance, _ = linear_probe_scores(
        random_train, train_masks, random_test, test_masks, classes, settings
    )
    assert chance["miou"] < 1 / 7 + 0.05, chance


def test_probe_upsampling_puts_each_cell_on_its_own_pixels() -> None:
    """Logits are upsampled bilinearly with half-pixel alignment: cell i stands for input pixel
    4i + 1.5, so a column of class-1 cells in a class-0 map predicts class 1 on exactly its 4
    input columns (pixel 4i is 1.5 px from its cell and 2.5 px from the next: weight 5/8;
    corner-aligned upsampling would add column 24)."""
    features = np.zeros((1, 2, 8, 8), np.float32)
    features[0, 0] = 1
    features[0, 0, :, 5], features[0, 1, :, 5] = 0, 1
    identity = LinearProbe(
        weight=np.eye(2, dtype=np.float32),
        bias=np.zeros(2, np.float32),
        mean=np.zeros(2, np.float32),
        std=np.ones(2, np.float32),
    )
    expected = np.zeros((32, 32), np.uint8)
    expected[:, 20:24] = 1
    assert np.array_equal(identity.predict(features, (32, 32))[0], expected)


def test_linear_probe_is_deterministic_and_checks_its_inputs(tmp_path) -> None:
    """Same seed, same probe, also when the features are a memory-mapped file read batch by
    batch; bad settings and masks are refused by name."""
    rng = np.random.default_rng(2)
    masks = _blocky_masks(rng, 4, 3)
    features = _class_features(masks, 3, rng, 0.5).astype(np.float32)
    mapped = np.lib.format.open_memmap(
        tmp_path / "features.npy", mode="w+", dtype=np.float32, shape=features.shape
    )
    mapped[:] = features
    settings = ProbeSettings(epochs=2, batch_size=2, seed=7)
    first = train_linear_probe(features, masks, 3, settings)
    second = train_linear_probe(mapped, masks, 3, settings)
    assert np.array_equal(first.weight, second.weight) and first.losses == second.losses
    assert np.allclose(first.mean, features.mean(axis=(0, 2, 3)), atol=1e-5)
    assert np.allclose(first.std, features.std(axis=(0, 2, 3)), atol=1e-4)
    assert first.predict(features, (32, 32)).shape == (4, 32, 32)
    with pytest.raises(InputError, match=r"probe\.epochs"):
        ProbeSettings(epochs=0)
    with pytest.raises(InputError, match="masks hold class 5"):
        train_linear_probe(features, np.full_like(masks, 5), 3, settings)


# --- the VOC-layout loader --------------------------------------------------------------------


def _write_voc(root, ids_by_split: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """A tiny VOC tree: flat-colour JPEGs and palette (P) PNG masks with a void border."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    masks = {}
    every = sorted({i for ids in ids_by_split.values() for i in ids})
    for number, image_id in enumerate(every):
        image = np.full((24, 32, 3), (40 * number, 120, 200), np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        mask = np.zeros((24, 32), np.uint8)
        mask[6:18, 8:24] = number + 1
        mask[5, 7:25] = VOID
        png = Image.fromarray(mask, mode="P")
        png.putpalette(voc_palette().ravel().tolist())
        png.save(root / "SegmentationClass" / f"{image_id}.png")
        masks[image_id] = mask
    for split, ids in ids_by_split.items():
        text = "\n".join(ids) + "\n"
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(text)
    return masks


def test_voc_loader_reads_images_palette_masks_and_splits(tmp_path) -> None:
    masks = _write_voc(tmp_path, {"train": ["2007_000032", "2007_000039"], "val": ["2008_1"]})
    with Image.open(tmp_path / "SegmentationClass" / "2007_000032.png") as png:
        assert png.mode == "P"  # as VOC ships them
    train = VocSegmentation(str(tmp_path), "train")
    assert train.ids == ["2007_000032", "2007_000039"] and len(train) == 2
    items = list(train)
    for image, mask, image_id in items:
        assert image.shape == (24, 32, 3) and image.dtype == np.uint8
        assert mask.dtype == np.uint8 and np.array_equal(mask, masks[image_id])
    assert abs(int(items[1][0][..., 0].mean()) - 40) <= 2  # the second image's red channel
    (image, mask, image_id) = VocSegmentation(str(tmp_path), "val")[0]
    assert image_id == "2008_1" and set(np.unique(mask)) == {0, 3, VOID}


def test_voc_loader_errors_name_the_file_and_line(tmp_path) -> None:
    _write_voc(tmp_path, {"train": ["a1", "a2"]})
    splits = tmp_path / "ImageSets" / "Segmentation"
    with pytest.raises(FileNotFoundError, match=r"val\.txt: VOC split file missing.*train"):
        VocSegmentation(str(tmp_path), "val")

    (splits / "bad.txt").write_text("a1\na2 1\n")
    with pytest.raises(VocError, match=r"bad\.txt: line 2: 'a2 1' is not one image id"):
        VocSegmentation(str(tmp_path), "bad")

    (splits / "ghost.txt").write_text("a1\nnope\n")
    ghost = VocSegmentation(str(tmp_path), "ghost")
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/nope\.jpg: missing.*ghost\.txt"):
        ghost[1]

    Image.new("RGB", (32, 24), (200, 0, 0)).save(tmp_path / "SegmentationClass" / "a1.png")
    with pytest.raises(VocError, match=r"a1\.png: a RGB image.*class indices, not colours"):
        VocSegmentation(str(tmp_path), "train")[0]

    Image.fromarray(np.full((24, 32), 50, np.uint8), mode="L").save(
        tmp_path / "SegmentationClass" / "a1.png"
    )
    with pytest.raises(VocError, match=r"values \[50\] are neither a class \(0\.\.20\)"):
        VocSegmentation(str(tmp_path), "train")[0]
    assert VocSegmentation(str(tmp_path), "train", classes=60)[0][1].max() == 50

    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(
        tmp_path / "SegmentationClass" / "a2.png"
    )
    with pytest.raises(VocError, match=r"a2\.png: mask is 10x10 but its image is 32x24"):
        VocSegmentation(str(tmp_path), "train")[1]


# --- figures ----------------------------------------------------------------------------------


def _decoded(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def test_flow_colours_follow_the_middlebury_wheel() -> None:
    flow = np.array([[[4.0, 0.0], [0.0, -4.0], [0.0, 0.0], [np.nan, 1.0]]])
    colours = flow_colours = plots.flow_colours(flow)
    assert colours[0, 0].tolist() == [255, 0, 0]  # rightwards: red
    assert flow_colours[0, 1, 2] == 255 and flow_colours[0, 1, 1] == 0  # upwards: blue-magenta
    assert colours[0, 2].tolist() == [255, 255, 255]  # no motion: white
    assert colours[0, 3].tolist() == [0, 0, 0]  # unknown: black


def test_dense_figures_are_pngs() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    positions = rng.uniform(0, 48, size=(10, 3, 2))
    positions[0, 2] = np.nan  # a track that ended
    width, height = _decoded(plots.tracks_on_frames(frames, positions, "tracks"))
    assert width > 300 and height > 100

    ys, xs = np.mgrid[0:48, 0:64]
    flow = np.stack([xs - 32.0, ys - 24.0], axis=-1) / 4
    assert _decoded(plots.flow_figure(frames[0], flow, "flow"))[0] > 400

    points = rng.uniform(0, 48, size=(30, 2))
    lines = plots.correspondences(
        frames[0], frames[1], points, points + 2, rng.random(30) > 0.5, "matches"
    )
    assert _decoded(lines)[0] > 400

    masks = [(frames[0], np.full((48, 64), 3, np.uint8), np.full((48, 64), VOID, np.uint8), "x")]
    width, height = _decoded(plots.predicted_masks(masks * 2, "masks"))
    assert width > 400 and height > 300
