"""The linear-probe segmentation of PiCo 4.1 on a VOC-layout set (`vidssl.datasets.voc`): a
dense model's frozen per-pixel features of the `train` split's images, a per-pixel linear
classifier on them (`vidssl.evaluate.dense.train_linear_probe`: 1x1 convolution, logits
upsampled to the mask, cross entropy, void ignored), mIoU / fIoU on the `val` split, beside the
mIoU of predicting the training set's most frequent class everywhere.

Images. Every image is resized so its shorter side is `size` px (bilinear; its mask with nearest
neighbour) and centre-cropped to `size` x `size`, so the images batch and the probe sees one
scale; features are those of `vidssl.stages.export.embed_dense` (normalised input, padded to a
multiple of the encoder's stride, the map L2-normalised per cell). Choose the probe's settings
on val with `--train-split train --val-split` a held-out part of train; report on val.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from vidssl.datasets.voc import VOC_CLASSES, VocSegmentation
from vidssl.errors import InputError
from vidssl.evaluate.dense import ProbeSettings, linear_probe_scores
from vidssl.progress import track

log = logging.getLogger(__name__)


def square_crop(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`image` (H, W, 3) and its `mask` (H, W) with the shorter side resized to `size` (image
    bilinear, mask nearest) and centre-cropped to (size, size)."""
    height, width = mask.shape
    scale = size / min(height, width)
    resized_w, resized_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, (resized_w, resized_h), interpolation=cv2.INTER_NEAREST)
    top, left = (resized_h - size) // 2, (resized_w - size) // 2
    return image[top : top + size, left : left + size], mask[top : top + size, left : left + size]


@dataclass
class VocFeatures:
    """One split's maps (N, D, h, w) float16 and masks on the maps' grid (N, h s, w s) uint8."""

    ids: list[str]
    features: np.ndarray
    masks: np.ndarray


def embed_voc(
    encoder, voc: VocSegmentation, size: int, limit: int | None, batch_size: int = 8
) -> VocFeatures:  # type: ignore[no-untyped-def]
    """The dense maps of up to `limit` images of `voc` (file order) and their masks."""
    import torch

    from vidssl.evaluate.dense import IGNORE_INDEX
    from vidssl.stages.export import embed_dense

    count = len(voc) if limit is None else min(limit, len(voc))
    device = next(encoder.parameters()).device
    ids: list[str] = []
    features: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    images: list[np.ndarray] = []
    stride = 0

    def flush() -> None:
        nonlocal stride
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device)
        maps, _, _, stride = embed_dense(encoder, batch)
        features.extend(maps.half().cpu().numpy())
        images.clear()

    for index in track(range(count), count, f"embed VOC {voc.split}", "images"):
        image, mask, image_id = voc[index]
        image, mask = square_crop(image, mask, size)
        ids.append(image_id)
        masks.append(mask)
        images.append(np.ascontiguousarray(image))
        if len(images) == batch_size:
            flush()
    if images:
        flush()
    if not ids:
        raise InputError(f"{voc.split}: no images to embed")
    height, width = features[0].shape[1] * stride, features[0].shape[2] * stride
    grid = np.full((len(masks), height, width), IGNORE_INDEX, np.uint8)
    grid[:, :size, :size] = np.stack(masks)[:, :height, :width]
    return VocFeatures(ids, np.stack(features), grid)


def voc_probe(
    encoder,
    root: str,
    train_split: str = "train",
    val_split: str = "val",
    size: int = 224,
    limit: int | None = None,
    settings: ProbeSettings | None = None,
    masks_folder: str = "SegmentationClass",
    classes: int = len(VOC_CLASSES),
) -> dict:  # type: ignore[no-untyped-def]
    """mIoU, fIoU, pixel accuracy and the majority-class mIoU of the linear probe on `encoder`'s
    frozen maps, trained on `train_split` and scored on `val_split` of the VOC tree at `root`."""
    import torch

    from vidssl.stages.dense_bench import majority_miou
    from vidssl.stages.export import is_dense

    if not is_dense(encoder):
        raise InputError("voc probe: the model's encoder gives no feature map (not a dense method)")
    encoder.eval()
    train_set = VocSegmentation(root, train_split, masks_folder, classes)
    val_set = VocSegmentation(root, val_split, masks_folder, classes)
    train, val = (embed_voc(encoder, voc, size, limit) for voc in (train_set, val_set))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scores, _ = linear_probe_scores(
        train.features, train.masks, val.features, val.masks, classes, settings, device=device
    )
    scores.update(
        train_images=len(train.ids),
        val_images=len(val.ids),
        majority_miou=majority_miou(train.masks, val.masks, classes),
        size=size,
    )
    log.info("voc probe: mIoU %.3f (majority %.3f)", scores["miou"], scores["majority_miou"])
    return scores
