"""Export: a frozen encoder embeds every frame (Objectron: every crop) of every split into
embedding shards: `emb.npy` (fp16, L2-normalised) + `meta.json` (video, frame, category, split
and the frame's annotation for the benchmarks). Baselines go through the same stage: `random`
(a randomly initialised encoder, seeded) and `imagenet` (weights from a local file)."""

from __future__ import annotations

import logging

import torch

from vidssl.config import Experiment
from vidssl.errors import InputError
from vidssl.progress import track
from vidssl.shards import OutputWriter
from vidssl.stages.base import StageOutput, StageSpec, input_manifest, run_cached, store_for
from vidssl.stages.train import load_encoder
from vidssl.train.backbones import build_backbone
from vidssl.train.embed import embed_split

log = logging.getLogger(__name__)

SPEC = StageSpec(name="export", version=1)


def _encoder(experiment: Experiment, store, model_url: str | None, baseline: str | None):  # type: ignore[no-untyped-def]
    cfg = experiment.train
    if model_url:
        encoder, _ = load_encoder(store, model_url)
        return encoder, {"model": model_url}
    if baseline == "random":
        torch.manual_seed(cfg.seed)
        return build_backbone(cfg.backbone)[0], {"baseline": "random", "seed": cfg.seed}
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
    fields = {"model": identity, "views_from": cfg.views_from, "image_size": cfg.image_size}

    def build(writer: OutputWriter) -> None:
        dimension = None
        for split, entry in clips.splits.items():
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
        writer.details.update(identity, dimension=dimension)

    return run_cached(
        store, SPEC, experiment, fields, [clips.digest, str(identity)], build, force=force
    )
