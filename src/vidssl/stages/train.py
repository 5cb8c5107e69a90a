"""Train: self-supervised training on clip shards. The output (`.../train/<digest>/`) holds
checkpoints while training, then `final.pt` (the encoder), `metrics.json` and the manifest.
Unlike the data stages, an unfinished output is not thrown away: a re-run resumes from its
latest checkpoint (`--force` starts over)."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass

import torch

from vidssl import __version__
from vidssl.config import Experiment
from vidssl.shards import Manifest, find_manifest
from vidssl.shards.manifest import manifest_key
from vidssl.stages.base import StageSpec, input_manifest, stage_digest, store_for
from vidssl.train.objectives import build_objective
from vidssl.train.trainer import Trainer
from vidssl.train.views import examples_per_epoch

log = logging.getLogger(__name__)

SPEC = StageSpec(name="train", version=3)  # 2: separable blur, uint8; 3: every-pair epochs
FINAL = "final.pt"
#: Settings that change how fast or where training runs, not what it learns.
_NOT_IN_DIGEST = {"loader_workers", "metrics_port", "checkpoint_every", "knn_max_train", "knn_k"}


@dataclass(frozen=True)
class TrainOutput:
    url: str
    manifest: Manifest | None  # None when stopped early (stop_after_step)
    cached: bool

    @property
    def model_url(self) -> str:
        return f"{self.url}/{FINAL}"


def train_split_counts(clips: Manifest) -> tuple[int, int]:
    """(clips, kept frames) of the training split, from what the clean stage (its report) or
    the ingest stage (its per-video records) wrote into the manifest."""
    kept = clips.details.get("report", {}).get("kept_by_split", {}).get("train")
    if kept:
        return kept["clips"], kept["frames"]
    records = [r for r in clips.details.get("videos", []) if r.get("split") == "train"]
    if records:
        return sum(r["clips"] for r in records), sum(r["kept_frames"] for r in records)
    return clips.splits["train"].samples, clips.splits["train"].samples


def steps_per_epoch(experiment: Experiment, clips: Manifest) -> int:
    """`train.steps_per_epoch`, else the training split's examples / batch: every consecutive
    pair once (`examples_per_clip: every_pair`, the reference's epoch) or so many per clip."""
    cfg = experiment.train
    if cfg.steps_per_epoch:
        return cfg.steps_per_epoch
    clip_count, frames = train_split_counts(clips)
    if cfg.examples_per_clip == "every_pair":
        examples = examples_per_epoch(cfg.pairing, frames, clip_count, cfg.nearby_offset)
    else:
        examples = clip_count * cfg.examples_per_clip
    return max(1, examples // cfg.batch_size)


def run(
    experiment: Experiment,
    clips_url: str,
    *,
    force: bool = False,
    stop_after_step: int | None = None,
) -> TrainOutput:
    cfg = experiment.train
    store = store_for(experiment)
    clips_prefix, clips = input_manifest(store, clips_url)
    if "train" not in clips.splits:
        raise ValueError(f"{clips_url}: no train split to train on")
    fields = {"train": cfg.model_dump(exclude=_NOT_IN_DIGEST)}
    digest = stage_digest(SPEC.name, SPEC.version, fields, [clips.digest])
    prefix = SPEC.output_prefix(experiment.dataset.name, digest)
    url = store.url(prefix)
    if force:
        store.delete(manifest_key(prefix))
        store.delete_prefix(prefix + "/")
    else:
        existing = find_manifest(store, prefix)
        if existing is not None:
            log.info("train: finished model found at %s; skipping (use --force to redo)", url)
            return TrainOutput(url, existing, cached=True)

    torch.manual_seed(cfg.seed)
    model = build_objective(cfg)
    trainer = Trainer(
        model,
        cfg,
        store,
        prefix,
        experiment.store_uri(),
        clips_prefix,
        steps_per_epoch(experiment, clips),
        job=f"vidssl-train-{experiment.name}",
    )
    result = trainer.fit(stop_after_step)
    if result.steps < cfg.epochs * trainer.steps_per_epoch:
        return TrainOutput(url, None, cached=False)
    if not trainer.distributed.main:
        return TrainOutput(url, None, cached=False)
    buffer = io.BytesIO()
    torch.save(
        {
            "backbone": cfg.backbone,
            "encoder": trainer.encoder().state_dict(),
            "train": cfg.model_dump(),
            "package_version": __version__,
        },
        buffer,
    )
    store.put(f"{prefix}/{FINAL}", buffer.getvalue())
    store.put_text(f"{prefix}/metrics.json", json.dumps(result.history, indent=2))
    manifest = Manifest(
        stage=SPEC.name,
        stage_version=SPEC.version,
        digest=digest,
        dataset=experiment.dataset.name,
        config=fields,
        inputs=[clips.digest],
        package_version=__version__,
        details={"steps": result.steps, "history": result.history, "model": f"{url}/{FINAL}"},
    )
    store.put_text(manifest_key(prefix), manifest.model_dump_json(indent=2))
    accuracy = result.history[-1]["knn_accuracy"] if result.history else "n/a"
    log.info(
        "train: %d steps, final kNN accuracy %s; model at %s/%s", result.steps, accuracy, url, FINAL
    )
    return TrainOutput(url, manifest, cached=False)


def load_encoder(store, model_url: str) -> tuple[torch.nn.Module, dict]:  # type: ignore[no-untyped-def]
    """The trained encoder saved by this stage, and the train config it was trained with."""
    from vidssl.train.backbones import build_backbone

    state = torch.load(
        io.BytesIO(store.get(store.key_of(model_url))), map_location="cpu", weights_only=False
    )
    encoder, _ = build_backbone(state["backbone"])
    encoder.load_state_dict(state["encoder"])
    return encoder, state["train"]
