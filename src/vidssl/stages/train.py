"""Train: self-supervised training on clip shards. A run (an attempt, vidssl.shards.attempts)
writes checkpoints under `.../train/<digest>/attempts/<id>/`, then `final.pt` (the encoder) and
`metrics.json` there, then the output's manifest. Unlike the data stages, an unfinished attempt
is not thrown away at once: a re-run resumes from the newest checkpoint a dead attempt left
(`--force` starts over).

A sampler that learns from point tracks (`train.sampler.needs_tracks`: PiCo's pixel pairs) reads
them from the flow stage's output (`tracks_url`), beside the clips; the tracks' digest then
joins the training's inputs. Without `tracks_url` the inputs are the clips alone, as always."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import torch

from vidssl import __version__
from vidssl.config import ConfigError, Experiment, TrainConfig
from vidssl.errors import InputError
from vidssl.shards import Manifest, find_manifest
from vidssl.shards.attempts import Attempt, attempt_prefix, dead_attempts
from vidssl.stages.base import (
    StageSpec,
    input_manifest,
    run_in_attempt,
    stage_digest,
    store_for,
)
from vidssl.store import ObjectStore
from vidssl.train.checkpoint_io import load_state, state_bytes
from vidssl.train.methods import build_method
from vidssl.train.samplers import build_sampler
from vidssl.train.trainer import Trainer, checkpoint_step, latest_checkpoint

log = logging.getLogger(__name__)

# 2: separable blur, uint8; 3: every-pair epochs; 4: methods and samplers (nested config)
SPEC = StageSpec(name="train", version=4)
FINAL = "final.pt"
#: Settings that change how fast or where training runs, not what it learns.
_NOT_IN_DIGEST = {
    "loader_workers", "metrics_port", "checkpoint_every", "knn_max_train", "knn_k",
    "compile", "compile_backend", "cuda_graphs", "fused_optimizer", "pin_memory",
}  # fmt: skip


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
    """`train.steps_per_epoch`, else the training split's examples / batch: every example of
    every clip once (`examples_per_clip: all`, the reference's epoch) or so many per clip."""
    cfg = trained(experiment)
    if cfg.steps_per_epoch:
        return cfg.steps_per_epoch
    clip_count, frames = train_split_counts(clips)
    examples = build_sampler(cfg.sampler).epoch_examples(frames, clip_count)
    return max(1, examples // cfg.batch_size)


def trained(experiment: Experiment) -> TrainConfig:
    """The experiment's `train:` section; an error naming the experiment when it has none."""
    if experiment.train is None:
        raise ConfigError(f"experiment {experiment.name}: no train: section, nothing to train")
    return experiment.train


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
    tracks_url: str = "",
    force: bool = False,
    stop_after_step: int | None = None,
) -> TrainOutput:
    """Train, or resume the newest checkpoint a dead run of the same output left (not with
    `force`). Safe beside another run of the same training (vidssl.shards.attempts): each
    checkpoints under its own attempt folder and the first to finish publishes. `tracks_url`:
    the flow stage's tracks of these clips (required when the sampler reads tracks)."""
    cfg = trained(experiment)
    store = store_for(experiment)
    clips_prefix, clips = input_manifest(store, clips_url)
    if "train" not in clips.splits:
        raise InputError(f"{clips_url}: no train split to train on")
    tracks_prefix, inputs = _inputs(store, cfg, clips_url, clips_prefix, clips, tracks_url)
    fields = _digest_fields(cfg)

    def produce(attempt: Attempt, digest: str) -> Manifest | None:
        torch.manual_seed(cfg.seed)
        prefix = SPEC.output_prefix(experiment.dataset.name, digest)
        trainer = Trainer(
            build_method(cfg),
            cfg,
            store,
            attempt.prefix,
            experiment.store_uri(),
            clips_prefix,
            steps_per_epoch(experiment, clips),
            job=f"vidssl-train-{experiment.name}",
            experiment=experiment.name,
            resume_from=None if force else _resume_point(store, prefix, attempt.id),
            tracks_prefix=tracks_prefix,
        )
        result = trainer.fit(stop_after_step)
        if result.steps < trainer.total_steps or not trainer.distributed.main:
            return None
        model_key = f"{attempt.prefix}/{FINAL}"
        final = {
            "backbone": cfg.backbone,
            "encoder": trainer.encoder().state_dict(),
            "train": cfg.model_dump(mode="json"),
            "package_version": __version__,
            **_dense_identity(trainer.encoder()),
        }
        store.put(model_key, state_bytes(final))
        store.put_text(f"{attempt.prefix}/metrics.json", json.dumps(result.history, indent=2))
        accuracy = result.history[-1]["knn_accuracy"] if result.history else "n/a"
        log.info("train: %d steps, final kNN accuracy %s; model at %s", result.steps, accuracy,
                 store.url(model_key))  # fmt: skip
        return Manifest(
            stage=SPEC.name,
            stage_version=SPEC.version,
            digest=digest,
            dataset=experiment.dataset.name,
            config=fields,
            inputs=inputs,
            package_version=__version__,
            attempt=attempt.id,
            details={
                "steps": result.steps,
                "history": result.history,
                "model": store.url(model_key),
            },
        )

    output = run_in_attempt(
        store, SPEC, experiment, fields, inputs, produce, force=force, resumable=True
    )
    if output is None:  # stopped early (stop_after_step), or not the main DDP rank
        digest = stage_digest(SPEC.name, SPEC.version, fields, inputs)
        return TrainOutput(
            store.url(SPEC.output_prefix(experiment.dataset.name, digest)), None, False
        )
    return TrainOutput(output.url, output.manifest, output.cached)


def published(
    experiment: Experiment, clips_url: str, *, tracks_url: str = ""
) -> TrainOutput | None:
    """The published output of this training on these clips (and tracks), or None: a look-up
    that never trains (a pod that launched the training elsewhere, under torchrun or as a
    TrainJob)."""
    cfg = trained(experiment)
    store = store_for(experiment)
    clips_prefix, clips = input_manifest(store, clips_url)
    _, inputs = _inputs(store, cfg, clips_url, clips_prefix, clips, tracks_url)
    digest = stage_digest(SPEC.name, SPEC.version, _digest_fields(cfg), inputs)
    prefix = SPEC.output_prefix(experiment.dataset.name, digest)
    manifest = find_manifest(store, prefix)
    return None if manifest is None else TrainOutput(store.url(prefix), manifest, True)


def _inputs(
    store: ObjectStore,
    cfg: TrainConfig,
    clips_url: str,
    clips_prefix: str,
    clips: Manifest,
    tracks_url: str,
) -> tuple[str | None, list[str]]:
    """(the tracks' prefix or None, the training's input digests): the clips', then the
    tracks' when `tracks_url` is given. A sampler that reads tracks without them, or tracks
    that follow other clips, is an InputError."""
    if not tracks_url:
        if getattr(cfg.sampler, "needs_tracks", False):
            raise InputError(
                f"train.sampler {cfg.sampler.kind} (correspondence "
                f"{cfg.sampler.correspondence}, view_frames {cfg.sampler.view_frames}) learns "
                "from point tracks: give the flow stage's output of these clips as the tracks "
                "URL (`vidssl train --tracks URL`), or use correspondence static_frame or "
                "static_video with view_frames random"
            )
        return None, [clips.digest]
    tracks_prefix, tracks = input_manifest(store, tracks_url)
    follows = tracks.details.get("follows")
    if follows and follows.rstrip("/") != store.url(clips_prefix):
        raise InputError(f"{tracks_url}: these tracks follow the clips {follows}, not {clips_url}")
    if "train" not in tracks.splits:
        raise InputError(f"{tracks_url}: no train split of tracks to train on")
    return tracks_prefix, [clips.digest, tracks.digest]


def _digest_fields(cfg: TrainConfig) -> dict:
    """The train config less `_NOT_IN_DIGEST`; `input` only when it is `gpu` (its crops are
    drawn differently), so runs on the CPU input path keep the digests they had before it."""
    excluded = _NOT_IN_DIGEST | ({"input"} if cfg.input == "cpu" else set())
    return {"train": cfg.model_dump(exclude=excluded)}


def _dense_identity(encoder: torch.nn.Module) -> dict:
    """What `load_encoder` needs to rebuild a dense encoder (PiCo's): `dense` with its
    widths (DenseEncoder's keyword arguments); nothing for a plain backbone (its final.pt stays
    as it was)."""
    from vidssl.train.dense import DenseEncoder

    if not isinstance(encoder, DenseEncoder):
        return {}
    return {"dense": dict(encoder.widths)}


def load_encoder(store: ObjectStore, model_url: str) -> tuple[torch.nn.Module, dict]:
    """The trained encoder saved by this stage, and the train config it was trained with:
    the backbone, or the dense encoder (ResNet + FPN + semantic branch) a final.pt with `dense`
    holds. Loaded as weights only: a file that would need unpickling code is refused."""
    from vidssl.train.backbones import build_backbone
    from vidssl.train.dense import DenseEncoder

    state = load_state(store.get(store.key_of(model_url)), model_url)
    encoder, _ = build_backbone(state["backbone"])
    if "dense" in state:
        encoder = DenseEncoder(encoder, **state["dense"])
    encoder.load_state_dict(state["encoder"])
    return encoder, state["train"]
