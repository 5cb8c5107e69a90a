"""The linear-probe segmentation of PiCo 4.1 on a VOC-layout set (`vidssl.datasets.voc`): a
dense model's frozen per-pixel features of the `train` split's images, a per-pixel linear
classifier on them (`vidssl.evaluate.dense.train_linear_probe`: 1x1 convolution, logits
upsampled to the mask, cross entropy, void ignored), mIoU / fIoU on the `val` split, beside the
mIoU of predicting the training set's most frequent class everywhere (the dense bench's
`score_probe`, which scores the synthetic masks the same way).

Images. Every image is resized so its shorter side is `size` px (bilinear; its mask with nearest
neighbour) and centre-cropped to `size` x `size`, so the images batch and the probe sees one
scale; features are those of `vidssl.stages.export.embed_dense` (normalised input, padded to a
multiple of the encoder's stride, the map L2-normalised per cell). Choose the probe's settings
on val with `--train-split train --val-split` a held-out part of train; report on val.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from vidssl.datasets.voc import VOC_CLASSES, VocSegmentation
from vidssl.errors import InputError
from vidssl.evaluate.dense import ProbeSettings
from vidssl.progress import track
from vidssl.stages.dense_bench import ProbeData, score_probe

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


def embed_voc(
    encoder, voc: VocSegmentation, size: int, limit: int | None, batch_size: int = 8
) -> ProbeData:  # type: ignore[no-untyped-def]
    """The dense maps of up to `limit` images of `voc` (file order) and their masks on the
    maps' grid, as the dense bench's probe takes them (keys: (image id, 0))."""
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
    keys = [(image_id, 0) for image_id in ids]
    return ProbeData(keys, np.stack(features), grid, [(size, size)] * len(ids))


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

    from vidssl.stages.export import is_dense

    if not is_dense(encoder):
        raise InputError("voc probe: the model's encoder gives no feature map (not a dense method)")
    encoder.eval()
    train_set = VocSegmentation(root, train_split, masks_folder, classes)
    val_set = VocSegmentation(root, val_split, masks_folder, classes)
    train, val = (embed_voc(encoder, voc, size, limit) for voc in (train_set, val_set))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scores, _ = score_probe(train, val, classes, settings or ProbeSettings(), device)
    scores["size"] = size
    log.info("voc probe: mIoU %.3f (majority %.3f)", scores["miou"], scores["majority_miou"])
    return scores
