"""Export: a frozen encoder embeds every frame (Objectron: every crop) of every split into
embedding shards: `emb.npy` (fp16, L2-normalised) + `meta.json` (video, frame, category, split
and the frame's annotation for the benchmarks). Baselines go through the same stage: `random`
(a randomly initialised encoder, seeded) and `imagenet` (weights from a local file).

Dense encoders (an output of (N, D, h, w), as PiCo's `vidssl.train.dense.DenseEncoder`) embed
whole frames at their stored resolution instead of the square crops: the normalised frame is
padded with zeros at the bottom and right to a multiple of `DENSE_PAD_MULTIPLE` (what an FPN
needs), and the map cropped back to the cells that cover the frame, ceil(H / s) x ceil(W / s)
at the encoder's stride s (4). Each frame then gets `dense.npy`, float16 (D, h, w) L2-normalised
per cell, beside `emb.npy`, the global average of the (un-normalised) map L2-normalised, so every
benchmark of pooled embeddings still runs. Its meta.json adds `frame_hw` (the stored frame's
H, W), `dense_input_hw` (the padded input the map was computed at), `dense_frame_hw` (the
frame's extent inside that input: the stored size, frames are not resized) and `dense_stride`.
Cell (i, j) covers input rows s*i .. s*i + s - 1 (`vidssl.evaluate.dense`'s convention).

The `random` baseline of a dense method is that method's encoder freshly built
(`build_method(train).encoder` under `train.seed`, with no pretrained weights: not
`train.weights`, not a frozen body's `encoder_checkpoint`), so its maps compare with the
trained ones;
for other methods it is `train.backbone` freshly built under the seed, as it always was."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.clips import frame_name, in_clip_fraction
from vidssl.config import Experiment
from vidssl.errors import InputError
from vidssl.progress import track
from vidssl.shards import OutputWriter, decode_json, read_split
from vidssl.stages.base import StageOutput, StageSpec, input_manifest, run_cached, store_for
from vidssl.stages.train import load_encoder
from vidssl.store import ObjectStore
from vidssl.train.augment import normalize
from vidssl.train.backbones import build_backbone
from vidssl.train.data import decode_rgb, to_tensor
from vidssl.train.embed import embed_split, frame_record, global_features

log = logging.getLogger(__name__)

SPEC = StageSpec(name="export", version=1)
#: Dense inputs are padded (bottom, right) to a multiple of this: the coarsest FPN stride.
DENSE_PAD_MULTIPLE = 32
#: The size of the probe input that tells a dense encoder from a pooled one.
_PROBE_SIDE = 64


@torch.no_grad()
def is_dense(encoder: nn.Module) -> bool:
    """Whether the encoder gives a feature map (N, D, h, w) rather than a vector (N, D): one
    forward pass of a zero image in eval mode, on the encoder's device."""
    was_training = encoder.training
    encoder.eval()
    try:
        device = next(encoder.parameters()).device
        probe = torch.zeros(1, 3, _PROBE_SIDE, _PROBE_SIDE, device=device)
        return encoder(probe).ndim == 4
    finally:
        encoder.train(was_training)


def _untrained(cfg):  # type: ignore[no-untyped-def]
    """The train config without any pretrained weights (`train.weights`, a method's
    `encoder_checkpoint`): the random baseline is random all through."""
    method = cfg.method
    if getattr(method, "encoder_checkpoint", ""):
        method = method.model_copy(update={"encoder_checkpoint": ""})
    return cfg.model_copy(update={"weights": None, "method": method})


def _random_encoder(experiment: Experiment) -> tuple[nn.Module, dict]:
    cfg = experiment.train
    identity: dict = {"baseline": "random", "seed": cfg.seed}
    from vidssl.train.methods import build_method

    torch.manual_seed(cfg.seed)
    encoder = build_method(_untrained(cfg)).encoder
    if is_dense(encoder):  # the method's own dense encoder, untrained
        return encoder, {**identity, "method": cfg.method.model_dump(mode="json")}
    torch.manual_seed(cfg.seed)  # as always: the backbone alone
    return build_backbone(cfg.backbone)[0], identity


def _encoder(experiment: Experiment, store, model_url: str | None, baseline: str | None):  # type: ignore[no-untyped-def]
    cfg = experiment.train
    if model_url:
        encoder, _ = load_encoder(store, model_url)
        return encoder, {"model": model_url}
    if baseline == "random":
        return _random_encoder(experiment)
    if baseline == "imagenet":
        weights = experiment.export.imagenet_weights
        if not weights:
            raise InputError(
                "export.imagenet_weights: set a local weights file for the imagenet baseline"
            )
        return build_backbone(cfg.backbone, weights)[0], {
            "baseline": "imagenet",
            "weights": weights,
        }
    raise InputError("export needs a trained model URL or a baseline (random, imagenet)")


def export_fields(experiment: Experiment, identity: dict, dense: bool) -> dict:
    """The config fields the export's digest hashes: those of every export, and for a dense
    encoder how its frames were embedded (a non-dense export's fields are what they always
    were, so its digest, and its cached output, stay)."""
    cfg = experiment.train
    fields = {"model": identity, "views_from": cfg.views_from, "image_size": cfg.image_size}
    if dense:
        fields["dense"] = {"input": "whole_frame", "pad_multiple": DENSE_PAD_MULTIPLE}
        if experiment.export.dense_clip_fraction < 1:
            fields["dense"]["clip_fraction"] = experiment.export.dense_clip_fraction
    return fields


# --- dense export ---------------------------------------------------------------------------


@torch.no_grad()
def embed_dense(
    encoder: nn.Module, frames: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], int]:
    """Embed whole uint8 frames (N, 3, H, W) of one size with a dense encoder (eval mode, on
    the frames' device): the normalised frames padded with zeros (bottom, right) to a multiple
    of DENSE_PAD_MULTIPLE. Returns the maps cropped to the cells covering the frame,
    (N, D, ceil(H/s), ceil(W/s)) float32 L2-normalised per cell, the pooled embeddings (N, D)
    (mean of the cropped map, L2-normalised), the padded input size (H', W') and the stride s."""
    height, width = frames.shape[-2:]
    padded_h = math.ceil(height / DENSE_PAD_MULTIPLE) * DENSE_PAD_MULTIPLE
    padded_w = math.ceil(width / DENSE_PAD_MULTIPLE) * DENSE_PAD_MULTIPLE
    images = F.pad(normalize(frames), (0, padded_w - width, 0, padded_h - height))
    maps = encoder(images).float()
    if maps.ndim != 4 or padded_h % maps.shape[-2] or padded_w % maps.shape[-1]:
        raise ValueError(
            f"a dense encoder gave {tuple(maps.shape)} for a {padded_h}x{padded_w} input: "
            "expected (N, D, H/s, W/s)"
        )
    stride = padded_h // maps.shape[-2]
    if padded_w // maps.shape[-1] != stride:
        raise ValueError(f"a dense encoder's map {tuple(maps.shape)}: unequal strides")
    maps = maps[..., : math.ceil(height / stride), : math.ceil(width / stride)]
    pooled = F.normalize(global_features(maps), dim=1)
    return F.normalize(maps, dim=1), pooled, (padded_h, padded_w), stride


def _frame_batches(
    store: ObjectStore, prefix: str, split: str, batch_size: int
) -> Iterator[tuple[list[np.ndarray], list[tuple[str, dict]]]]:
    """Whole RGB frames of a split in batches of frames of one size, with (clip key, record)."""
    images: list[np.ndarray] = []
    records: list[tuple[str, dict]] = []
    for sample in read_split(store, prefix, split, split_by_node=False, split_by_worker=False):
        meta = decode_json(sample)
        for position in range(meta["num_frames"]):
            name = frame_name(position)
            if name not in sample:
                raise InputError(f"{sample.get('__url__')}: sample {sample['__key__']}: no {name}")
            image = decode_rgb(sample[name])
            if images and (image.shape != images[0].shape or len(images) == batch_size):
                yield images, records
                images, records = [], []
            images.append(image)
            records.append((sample["__key__"], frame_record(meta, position)))
    if images:
        yield images, records


def _write_dense_split(
    writer: OutputWriter,
    encoder: nn.Module,
    store: ObjectStore,
    prefix: str,
    split: str,
    batch_size: int,
    device: torch.device,
    clip_fraction: float = 1.0,
) -> int | None:
    """Embed one split's whole frames; returns the embedding width (None if it is empty).
    Maps are written for the clips in `clip_fraction` (`vidssl.clips.in_clip_fraction`), the
    pooled embedding for every frame."""
    dimension = None
    was_training = encoder.training
    encoder.eval()
    try:
        batches = _frame_batches(store, prefix, split, batch_size)
        for images, records in track(batches, None, f"export {split} (dense)", unit="batches"):
            frames = torch.stack([to_tensor(image) for image in images]).to(device)
            maps, pooled, input_hw, stride = embed_dense(encoder, frames)
            dimension = pooled.shape[1]
            height, width = images[0].shape[:2]
            for dense, feature, (key, record) in zip(
                maps.cpu(), pooled.cpu(), records, strict=True
            ):
                sample = {"__key__": f"{key}_f{record['frame_position']:03d}"}
                sample["emb.npy"] = feature.half().numpy()
                if in_clip_fraction(key, clip_fraction):
                    sample["dense.npy"] = dense.half().numpy()
                record = {
                    **record,
                    "frame_hw": [height, width],
                    "dense_input_hw": list(input_hw),
                    "dense_frame_hw": [height, width],
                    "dense_stride": stride,
                }
                writer.write(split, {**sample, "meta.json": record})
    finally:
        encoder.train(was_training)
    return dimension


def run(
    experiment: Experiment,
    clips_url: str,
    *,
    model_url: str | None = None,
    baseline: str | None = None,
    force: bool = False,
) -> StageOutput:
    store = store_for(experiment)
    clips_prefix, clips = input_manifest(store, clips_url)
    encoder, identity = _encoder(experiment, store, model_url, baseline)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder.to(device)
    cfg = experiment.train
    dense = is_dense(encoder)
    fields = export_fields(experiment, identity, dense)

    def build(writer: OutputWriter) -> None:
        dimension = None
        for split, entry in clips.splits.items():
            if dense:
                dimension = _write_dense_split(
                    writer, encoder, store, clips_prefix, split,
                    experiment.export.batch_size, device, experiment.export.dense_clip_fraction,
                ) or dimension  # fmt: skip
                log.info("export %s: %d clips embedded (dense)", split, entry.samples)
                continue
            batches = embed_split(
                encoder, store, clips_prefix, split,
                views_from=cfg.views_from, size=cfg.image_size,
                batch_size=experiment.export.batch_size, device=device,
            )  # fmt: skip
            for features, records in track(batches, None, f"export {split}", unit="batches"):
                dimension = features.shape[1]
                for feature, (key, record) in zip(features, records, strict=True):
                    writer.write(
                        split,
                        {
                            "__key__": f"{key}_f{record['frame_position']:03d}",
                            "emb.npy": feature.half().numpy(),
                            "meta.json": record,
                        },
                    )
            log.info("export %s: %d clips embedded", split, entry.samples)
        details = {"dense": True} if dense else {}
        writer.details.update(identity, dimension=dimension, **details)

    return run_cached(
        store, SPEC, experiment, fields, [clips.digest, str(identity)], build, force=force
    )
