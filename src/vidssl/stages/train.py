"""Train: self-supervised training on clip shards. A run (an attempt, vidssl.shards.attempts)
writes checkpoints under `.../train/<digest>/attempts/<id>/`, then `final.pt` (the encoder) and
`metrics.json` there, then the output's manifest. Unlike the data stages, an unfinished attempt
is not thrown away at once: a re-run resumes from the newest checkpoint a dead attempt left
(`--force` starts over)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch

from vidssl import __version__
from vidssl.config import Experiment
from vidssl.errors import InputError
from vidssl.shards import Manifest, find_manifest
from vidssl.shards.attempts import (
    Attempt,
    attempt_prefix,
    dead_attempts,
    remove_dead_attempts,
)
from vidssl.stages.base import StageSpec, input_manifest, stage_digest, store_for
from vidssl.store import ObjectStore
from vidssl.train.checkpoint_io import load_state, state_bytes
from vidssl.train.objectives import build_objective
from vidssl.train.trainer import Trainer, checkpoint_step, latest_checkpoint
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
        """Where the encoder is (inside the attempt that published; older outputs: the top)."""
        if self.manifest is not None and "model" in self.manifest.details:
            return self.manifest.details["model"]
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


def _resume_point(store: ObjectStore, prefix: str, mine: str) -> str | None:
    """The newest checkpoint left by a run of this output that died or stopped, if any."""
    candidates = [
        attempt_prefix(prefix, attempt) for attempt in dead_attempts(store, prefix, {mine})
    ]
    candidates.append(prefix)  # checkpoints of a run from before attempts
    best = max(candidates, key=lambda where: checkpoint_step(store, where))
    return latest_checkpoint(store, best)


def run(
    experiment: Experiment,
    clips_url: str,
    *,
    force: bool = False,
    stop_after_step: int | None = None,
) -> TrainOutput:
    """Train, or resume the newest checkpoint a dead run of the same output left (not with
    `force`). Safe beside another run of the same training (vidssl.shards.attempts): each
    checkpoints under its own attempt folder and the first to finish publishes."""
    cfg = experiment.train
    store = store_for(experiment)
    clips_prefix, clips = input_manifest(store, clips_url)
    if "train" not in clips.splits:
        raise InputError(f"{clips_url}: no train split to train on")
    fields = {"train": cfg.model_dump(exclude=_NOT_IN_DIGEST)}
    digest = stage_digest(SPEC.name, SPEC.version, fields, [clips.digest])
    prefix = SPEC.output_prefix(experiment.dataset.name, digest)
    url = store.url(prefix)
    if not force:
        existing = find_manifest(store, prefix)
        if existing is not None:
            log.info("train: finished model found at %s; skipping (use --force to redo)", url)
            return TrainOutput(url, existing, cached=True)

    with Attempt(store, prefix) as attempt:
        torch.manual_seed(cfg.seed)
        model = build_objective(cfg)
        trainer = Trainer(
            model,
            cfg,
            store,
            attempt.prefix,
            experiment.store_uri(),
            clips_prefix,
            steps_per_epoch(experiment, clips),
            job=f"vidssl-train-{experiment.name}",
            resume_from=None if force else _resume_point(store, prefix, attempt.id),
        )
        result = trainer.fit(stop_after_step)
        if result.steps < cfg.epochs * trainer.steps_per_epoch or not trainer.distributed.main:
            return TrainOutput(url, None, cached=False)
        model_key = f"{attempt.prefix}/{FINAL}"
        final = {
            "backbone": cfg.backbone,
            "encoder": trainer.encoder().state_dict(),
            "train": cfg.model_dump(mode="json"),
            "package_version": __version__,
        }
        store.put(model_key, state_bytes(final))
        store.put_text(f"{attempt.prefix}/metrics.json", json.dumps(result.history, indent=2))
        manifest = Manifest(
            stage=SPEC.name,
            stage_version=SPEC.version,
            digest=digest,
            dataset=experiment.dataset.name,
            config=fields,
            inputs=[clips.digest],
            package_version=__version__,
            attempt=attempt.id,
            details={
                "steps": result.steps,
                "history": result.history,
                "model": store.url(model_key),
            },
        )
        winner = attempt.publish(manifest, replace=force)
        if winner is not None:
            log.info("train: attempt %s published %s first; using it", winner.attempt, url)
            return TrainOutput(url, winner, cached=True)
    remove_dead_attempts(store, prefix)  # the runs resumed from, and any replaced by --force
    accuracy = result.history[-1]["knn_accuracy"] if result.history else "n/a"
    log.info("train: %d steps, final kNN accuracy %s; model at %s", result.steps, accuracy,
             store.url(model_key))  # fmt: skip
    return TrainOutput(url, manifest, cached=False)


def load_encoder(store: ObjectStore, model_url: str) -> tuple[torch.nn.Module, dict]:
    """The trained encoder saved by this stage, and the train config it was trained with.
    Loaded as weights only: a file that would need unpickling code is refused."""
    from vidssl.train.backbones import build_backbone

    state = load_state(store.get(store.key_of(model_url)), model_url)
    encoder, _ = build_backbone(state["backbone"])
    encoder.load_state_dict(state["encoder"])
    return encoder, state["train"]
