"""The pose-curve experiment (vidssl.perf.siampose_curve) on the CPU: the batched view
augmentations of vidssl.train.gpu_augment, then prepare -> train -> plot -> sweep on a tiny
synthetic experiment, the train phase in a process where the packages the GPU machine lacks
cannot be imported."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vidssl.perf import siampose_curve as curve
from vidssl.train import gpu_augment as aug
from vidssl.train.augment import eval_transform
from vidssl.train.data import object_crop, to_tensor
from vidssl.train.views import crop_with_padding, shared_crop_window

TINY_EXPERIMENT = """
name: tiny_curve
dataset:
  name: tiny-curve
  source:
    kind: synthetic_objectron
    videos_per_class: 4
    frames: 30
    width: 64
    height: 80
    test_fraction: 0.3
    categories: [cup, laptop, shoe]
  val_fraction: 0.3
ingest:
  frame_stride: 3
  workers: 1
shards:
  max_samples: 8
"""
TINY_TRAINING = [
    "--steps", "3", "--eval-every", "2", "--batch-size", "8", "--image-size", "32",
    "--backbone", "resnet_small", "--projection-dim", "64", "--predictor-dim", "16",
    "--threads", "1", "--device", "cpu",
]  # fmt: skip
# What the GPU machine lacks, and what the train phase must not need.
UNAVAILABLE = ("minio", "webdataset", "pydantic", "pydantic_settings", "kfp", "prometheus_client")
FORBIDDEN_VIDSSL = ("vidssl.config", "vidssl.stages", "vidssl.shards", "vidssl.store")
RUN_WITHOUT_THEM = f"""
import importlib.abc, json, sys

class Unavailable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {UNAVAILABLE!r} or name.startswith({FORBIDDEN_VIDSSL!r}):
            raise ImportError(f"{{name}} cannot be imported on the GPU machine")

sys.meta_path.insert(0, Unavailable())
from vidssl.perf.siampose_curve import main

main(sys.argv[1:])
"""


def _uint8_images(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), generator=generator).float()


# -- gpu_augment ---------------------------------------------------------------------------------


def test_crop_resize_of_a_window_returns_its_pixels_with_edges_replicated():
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    margin = 6
    bank = curve.frame_bank(image[None], margin, torch.device("cpu"))
    for window in [(5, 6, 15, 16), (-4, 30, 8, 42), (20, -3, 34, 11)]:  # inside, past edges
        expected = crop_with_padding(image, window)
        box = torch.tensor([[v + margin for v in window]], dtype=torch.float32)
        side = window[2] - window[0]
        crop = aug.crop_resize(bank, torch.tensor([0]), box, side)
        assert crop.shape == (1, 3, side, side)
        np.testing.assert_array_equal(crop[0].permute(1, 2, 0).numpy(), expected)


def test_every_shared_window_of_the_boxes_fits_in_the_bank_margin():
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, 1, (200, 2, 2)), axis=1)  # clipped boxes, as training's
    boxes = np.concatenate([corners[:, 0], corners[:, 1]], axis=1)
    margin = curve.bank_margin(boxes, 192, 256)
    for first, second in rng.integers(0, len(boxes), (500, 2)):
        x0, y0, x1, y1 = shared_crop_window([boxes[first], boxes[second]], 192, 256)
        assert -margin <= min(x0, y0) and x1 <= 192 + margin and y1 <= 256 + margin


def test_random_resized_boxes_follow_the_preset_ranges():
    generator = torch.Generator().manual_seed(0)
    windows = torch.tensor([[10.0, 20.0, 110.0, 120.0]]).repeat(2000, 1)
    for preset in ("lc_px", "full"):
        scale, ratio = aug.CROP_SCALES[preset]
        boxes = aug.random_resized_boxes(windows, scale, ratio, generator)
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        assert (boxes[:, :2] >= windows[:, :2]).all() and (boxes[:, 2:] <= windows[:, 2:]).all()
        area = width * height / 100**2
        assert area.min() >= scale[0] - 0.02 and area.max() <= 1.0, preset
        aspect = width / height
        assert aspect.min() >= ratio[0] - 0.05 and aspect.max() <= ratio[1] + 0.05, preset
        assert area.max() - area.min() > 0.3  # drawn, not fixed
    assert ((boxes[:, 0] - 10).std() > 5) and ((boxes[:, 1] - 20).std() > 5)  # placed at random


def test_views_share_one_flip_per_example(monkeypatch):
    monkeypatch.setattr(aug, "pixel_augment", lambda images, generator: images)
    ramp = torch.arange(16.0).repeat(3, 16, 1) * 10  # brightness grows to the right
    bank = ramp[None].repeat(4, 1, 1, 1)
    frames = torch.tensor([[0, 1], [2, 3]]).repeat(32, 1)
    windows = torch.tensor([[0.0, 0.0, 16.0, 16.0]]).repeat(64, 1)
    first, second = aug.augment_views(
        bank, frames, windows, "px", 16, torch.Generator().manual_seed(0)
    )
    assert first.shape == second.shape == (64, 3, 16, 16)
    flipped = [(view[:, 0, 0, 0] > view[:, 0, 0, -1]) for view in (first, second)]
    assert torch.equal(flipped[0], flipped[1])
    assert 0 < int(flipped[0].sum()) < 64


def test_colour_ops_match_torchvision_per_image():
    images = _uint8_images(4, 12, 12)
    factors = torch.tensor([0.6, 1.4, 1.0, 0.8])
    ops = {
        aug.adjust_brightness: TF.adjust_brightness,
        aug.adjust_contrast: TF.adjust_contrast,
        aug.adjust_saturation: TF.adjust_saturation,
    }
    for ours, theirs in ops.items():
        expected = torch.stack([theirs(images[i] / 255, float(factors[i])) * 255 for i in range(4)])
        torch.testing.assert_close(ours(images, factors), expected, atol=1e-3, rtol=0)
    shifts = torch.tensor([0.1, -0.1, 0.05, 0.0])
    expected = torch.stack(
        [TF.adjust_hue(images[i] / 255, float(shifts[i])) * 255 for i in range(4)]
    )
    torch.testing.assert_close(aug.adjust_hue(images, shifts), expected, atol=1e-2, rtol=0)
    sigmas = torch.tensor([0.3, 1.0, 2.0, 0.1])
    expected = torch.stack(
        [TF.gaussian_blur(images[i], [5, 5], [float(sigmas[i])] * 2) for i in range(4)]
    )
    torch.testing.assert_close(aug.gaussian_blur(images, sigmas, 5), expected, atol=1e-3, rtol=0)


def test_photometric_ops_keep_the_uint8_range():
    images = _uint8_images(16, 20, 20)
    images[0] = 255.0
    images[1] = 0.0
    generator = torch.Generator().manual_seed(1)
    for op in (
        lambda x: aug.color_jitter(x, generator, strengths=(0.9, 0.9, 0.9, 0.5), p=1.0),
        lambda x: aug.random_grayscale(x, generator, p=1.0),
        lambda x: aug.random_gaussian_blur(x, generator, p=1.0),
        lambda x: aug.pixel_augment(x, generator),
    ):
        out = op(images)
        assert out.shape == images.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 255
    grey = aug.random_grayscale(images, generator, p=1.0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_augmentation_is_seeded():
    bank = _uint8_images(3, 40, 40)
    frames = torch.tensor([[0, 1], [1, 2], [2, 0]])
    windows = torch.tensor([[2.0, 2.0, 34.0, 34.0], [0.0, 4.0, 30.0, 34.0], [5.0, 5.0, 40.0, 40.0]])

    def views(seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return aug.augment_views(bank, frames, windows, "full", 16, generator)

    for a, b in zip(views(3), views(3), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(views(3)[0], views(4)[0])
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        aug.augment_views(bank, frames, windows, "heavy", 16, torch.Generator())


# -- prepare, train, plot, sweep ----------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic experiment, prepared (about 6 s on 2 cores)."""
    root = tmp_path_factory.mktemp("curve")
    (root / "experiments").mkdir()
    (root / "experiments" / "tiny_curve.yaml").write_text(TINY_EXPERIMENT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDSSL_EXPERIMENTS_DIR", str(root / "experiments"))
        patch.setenv("VIDSSL_STORE_URI", f"file://{root / 'store'}")
        return curve.prepare("tiny_curve", root / "data")


@pytest.fixture(scope="module")
def trained(prepared: Path) -> tuple[Path, str]:
    """One train run in a process where what the GPU machine lacks cannot be imported."""
    results = prepared.parent / "results"
    command = [
        sys.executable, "-c", RUN_WITHOUT_THEM, "train", str(prepared), "--out", str(results),
        "--method", "simsiam", "--pairing", "nearby", *TINY_TRAINING,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return results, done.stdout


def test_prepare_writes_every_frame_and_its_benchmark_record(prepared):
    frames = curve.load_frame_set(prepared)
    assert frames.images.dtype == np.uint8 and frames.images.shape[1:] == (80, 64, 3)
    assert len(frames.records) == len(frames.images) > 50
    assert {r["split"] for r in frames.records} == {"train", "val", "test"}
    record = frames.records[0]
    for key in ("video_id", "clip_index", "frame_position", "category", "annotation", "box"):
        assert key in record
    assert min(record["box"]) >= 0 and max(record["box"]) <= 1
    assert frames.bench["refinements"] == 3
    crops = curve.object_crops(frames, 32)  # the export stage's crops
    for index in (0, len(frames.records) - 1):
        record, image = frames.records[index], frames.images[index]
        expected = eval_transform(32)(to_tensor(object_crop(image, record["annotation"])))
        assert torch.equal(crops[index], expected)


def test_pairs_come_from_one_clip_and_share_a_window_around_both_boxes(prepared):
    training = curve.load_frame_set(prepared).subset("train")
    width, height = training.size
    margin = curve.bank_margin(training.boxes, width, height)
    sampler = curve.PairSampler(
        curve.training_clips(training), curve.PairWindows(training.boxes, width, height, margin),
        "nearby", 1, 16, random.Random(0),
    )  # fmt: skip
    frames, windows = sampler.sample()
    assert frames.shape == (16, 2) and windows.shape == (16, 4)
    for (first, second), window in zip(frames.tolist(), windows.tolist(), strict=True):
        a, b = training.records[first], training.records[second]
        assert (
            a["video_id"] == b["video_id"] and abs(a["frame_position"] - b["frame_position"]) == 1
        )
        for box in (training.boxes[first], training.boxes[second]):
            pixels = box * [width, height, width, height] + margin
            assert window[0] <= pixels[0] + 1 and window[1] <= pixels[1] + 1
            assert window[2] >= pixels[2] - 1 and window[3] >= pixels[3] - 1


def test_train_writes_an_evaluation_line_per_eval_step_without_the_missing_packages(trained):
    results, stdout = trained
    rows = [json.loads(line) for line in (results / "simsiam-nearby-seed0.jsonl").open()]
    assert [row["step"] for row in rows] == [0, 2, 3]
    assert rows[0]["loss"] is None  # step 0: the untrained encoder, the random embeddings
    for row in rows:
        pose = row["pose"]
        for value in (
            pose["pooled"]["fraction_iou_over_0.5"], pose["3d_map"], row["reid_map"],
            row["category_accuracy"], row["random_in_category_fit"]["3d_map"],
        ):  # fmt: skip
            assert 0 <= value <= 1
        assert pose["pooled"]["queries"] == rows[0]["pose"]["pooled"]["queries"] > 0
    for row in rows[1:]:
        assert math.isfinite(row["loss"]) and row["steps_per_s"] > 0 and row["collapse_std"] > 0
    assert "simsiam-nearby-seed0 step 3: 3D mAP" in stdout


def test_plot_draws_the_curves_and_tabulates_the_last_step(trained, tmp_path):
    results, _ = trained
    table = curve.plot(results, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    assert "| simsiam nearby | 1 | 3 |" in table
    assert "random embedding (step 0)" in table and "random in-category fit" in table


def test_sweep_runs_each_configuration_as_its_own_process_then_plots(prepared, tmp_path, capsys):
    results = tmp_path / "sweep"
    curve.main(
        ["sweep", str(prepared), "--out", str(results), "--runs", "ntxent:same",
         "simsiam:distant", "--seeds", "1", "--parallel", "2", *TINY_TRAINING]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "[ntxent-same-seed1] ntxent-same-seed1 step 3: 3D mAP" in printed
    assert "| ntxent same | 1 | 3 |" in printed
    names = sorted(path.name for path in results.glob("*.jsonl"))
    assert names == ["ntxent-same-seed1.jsonl", "simsiam-distant-seed1.jsonl"]
    assert (results / "curve.png").is_file()
    with pytest.raises(SystemExit):
        curve.parser().parse_args(["sweep", "d", "--out", "r", "--runs", "tcn:nearby"])
