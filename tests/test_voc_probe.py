"""`vidssl voc-probe`: PiCo's linear-probe segmentation on a VOC-layout set, here a tiny one the
test writes in the real layout (JPEG images, palette PNG masks with void, split files)."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from vidssl.cli import app
from vidssl.datasets.voc import VOID, voc_palette
from vidssl.stages.voc_probe import square_crop

#: Class k's texture: horizontal stripes every 2 + 2k px in one of three colours. A random
#: encoder's per-pixel features tell stripes of different periods and colours apart, so a linear
#: probe on them beats predicting the most frequent class everywhere by a wide margin.
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


def _texture(cls: int, height: int, width: int) -> np.ndarray:
    rows = np.arange(height)[:, None, None]
    on = ((rows // (2 + 2 * cls)) % 2).astype(np.float32)
    colour = np.array(COLOURS[cls % len(COLOURS)], np.float32)
    return np.broadcast_to(on * colour + (1 - on) * 30, (height, width, 3))


def _write_voc(root, images_per_split: int = 6, size: tuple[int, int] = (48, 64)) -> None:
    """Images whose left and right halves show two of three textured classes (1..3) on a
    background class 0 band, and a void line between; split files train and val."""
    height, width = size
    rng = np.random.default_rng(0)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        ids = []
        for number in range(images_per_split):
            image_id = f"{split}_{number:03d}"
            left, right = rng.choice([1, 2, 3], size=2, replace=False)
            mask = np.zeros((height, width), np.uint8)
            mask[: height - 8, : width // 2] = left
            mask[: height - 8, width // 2 :] = right
            image = np.full((height, width, 3), 128, np.float32)
            for cls in (left, right):
                image[mask == cls] = _texture(cls - 1, height, width)[mask == cls]
            mask[:, width // 2] = VOID
            Image.fromarray(image.astype(np.uint8)).save(
                root / "JPEGImages" / f"{image_id}.jpg", quality=95
            )
            png = Image.fromarray(mask, mode="P")
            png.putpalette(voc_palette().ravel().tolist())
            png.save(root / "SegmentationClass" / f"{image_id}.png")
            ids.append(image_id)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


def test_square_crop_keeps_image_and_mask_aligned():
    image = np.zeros((60, 90, 3), np.uint8)
    mask = np.zeros((60, 90), np.uint8)
    image[20:40, 40:50] = 255  # a block in the middle, 10 px wide, 20 px tall
    mask[20:40, 40:50] = 1
    cropped, cropped_mask = square_crop(image, mask, 30)
    assert cropped.shape == (30, 30, 3) and cropped_mask.shape == (30, 30)
    # Shorter side 60 -> 30 (x0.5): the block spans rows 10..19 and columns 20..24 of the
    # 45 px wide resize, which loses its first 7 columns to the centre crop: 13..17.
    rows, columns = np.nonzero(cropped_mask)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (10, 19, 13, 17)
    assert cropped[cropped_mask == 1].mean() > 200 and cropped[cropped_mask == 0].mean() < 60


def test_voc_probe_command_beats_the_most_frequent_class(tmp_path, make_experiment):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    _write_voc(tmp_path / "voc")
    experiment = make_experiment(
        {
            "name": "voc",
            "train": {
                "method": {"kind": "pico", "embedding_dim": 32, "projection_dim": 16,
                           "hidden_dim": 32, "queue_size": 64},
                "sampler": {"kind": "pixel_pairs", "max_pairs": 16},
                "views_from": "frame",
            },
            "bench": {"dense": {"probe_epochs": 40, "probe_lr": 0.5}},
        }
    )  # fmt: skip
    path = tmp_path / "voc.yaml"
    path.write_text(yaml.safe_dump(experiment.model_dump(mode="json")))
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(
        app,
        ["voc-probe", str(path), "--root", str(tmp_path / "voc"), "--size", "48",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "random embeddings: mIoU" in result.output
    scores = json.loads(out.read_text())
    assert scores["train_frames"] == 6 and scores["test_frames"] == 6 and scores["size"] == 48
    assert scores["miou"] > scores["majority_miou"] + 0.2, scores
    # A pooled (not dense) model is refused with a message that says why.
    pooled = make_experiment({"name": "pooled"})
    pooled_path = tmp_path / "pooled.yaml"
    pooled_path.write_text(yaml.safe_dump(pooled.model_dump(mode="json")))
    refused = CliRunner().invoke(
        app, ["voc-probe", str(pooled_path), "--root", str(tmp_path / "voc")]
    )
    assert refused.exit_code != 0
    assert "not a dense method" in str(refused.exception)
