"""The method architecture holds: a method, a loss, a head and a sampler defined here, in the
test, train through the real trainer, export and bench without any change to vidssl's modules;
and temporal MoCo-v2 runs the same way from its experiment settings."""

from __future__ import annotations

import random
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vidssl.config import Strict, register_method_config, register_sampler_config
from vidssl.stages import bench, clean, export, ingest, synth, train
from vidssl.train.methods import Method, register_method
from vidssl.train.samplers import Sampler, register_sampler

# -- a toy method: its own config, head, two loss terms and sampler -----------------------------


@register_method_config
class ToyMethodConfig(Strict):
    kind: Literal["toy"] = "toy"
    views: ClassVar[tuple[str, ...]] = ("now", "later")
    dim: int = Field(16, gt=0)
    spread_weight: float = 0.1


def alignment(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.normalize(a, dim=1) - F.normalize(b, dim=1)).pow(2).sum(dim=1).mean()


def uniformity(z: torch.Tensor) -> torch.Tensor:
    z = F.normalize(z, dim=1)
    return torch.pdist(z).pow(2).mul(-2).exp().mean().log()


@register_method("toy")
class Toy(Method):
    def __init__(self, cfg: ToyMethodConfig, encoder: nn.Module, feature_dim: int) -> None:
        super().__init__(cfg, encoder, feature_dim)
        self.head = nn.Linear(feature_dim, cfg.dim)

    def losses(self, batch):  # type: ignore[no-untyped-def]
        now, later = (self.head(self.encoder(batch[name])) for name in ("now", "later"))
        return {
            "align": alignment(now, later),
            "uniform": self.cfg.spread_weight * uniformity(torch.cat([now, later])),
        }, now.detach()


@register_sampler_config
class GapSamplerConfig(Strict):
    kind: Literal["gap"] = "gap"
    views: ClassVar[tuple[str, ...]] = ("now", "later")
    gap: int = 2
    examples_per_clip: int | Literal["all"] = 1


@register_sampler("gap")
class Gap(Sampler):
    @property
    def min_frames(self) -> int:
        return self.cfg.gap + 1

    def anchors(self, num_frames: int) -> list[int]:
        return list(range(num_frames - self.cfg.gap))

    def positions(self, num_frames: int, rng: random.Random, anchor: int | None) -> list[int]:
        start = rng.choice(self.anchors(num_frames)) if anchor is None else anchor
        return [start, start + self.cfg.gap]

    def examples_per_epoch(self, frames: int, clips: int) -> int:
        return frames - clips * self.cfg.gap


def _clips(experiment) -> str:  # type: ignore[no-untyped-def]
    raw = synth.raw_url(synth.run(experiment))
    return clean.run(experiment, ingest.run(experiment, source_url=raw).url).url


def _train_export_bench(experiment) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    clips_url = _clips(experiment)
    trained = train.run(experiment, clips_url)
    embeddings = export.run(experiment, clips_url, model_url=trained.model_url)
    random_embeddings = export.run(experiment, clips_url, baseline="random")
    label = experiment.train.label()
    scores = bench.run(
        experiment,
        {label: embeddings.url, "random embeddings": random_embeddings.url},
        clips_url=clips_url,
    )
    return trained.manifest.details, scores["models"][label]


def test_a_method_defined_in_a_test_trains_exports_and_benchmarks(make_experiment):
    experiment = make_experiment(
        {"train": {"method": {"kind": "toy", "dim": 16}, "sampler": {"kind": "gap"}}},
        train__epochs=2,
    )
    assert experiment.train.label() == "gap (toy)"
    details, scores = _train_export_bench(experiment)
    history = details["history"]
    assert details["steps"] == 6 and len(history) == 2
    for record in history:  # every loss term is logged beside the total
        assert (
            record["loss"] == record["align"] + record["uniform"]
            or abs(record["loss"] - record["align"] - record["uniform"]) < 1e-5
        )
    assert 0 <= scores["pose"]["1"]["3d_map"] <= 1
    assert 0 <= scores["category_accuracy"] <= 1


def test_temporal_moco_trains_exports_and_benchmarks(make_experiment):
    experiment = make_experiment(
        {
            "train": {
                "method": {
                    "kind": "moco",
                    "projection_dim": 16,
                    "hidden_dim": 32,
                    "queue_size": 32,
                    "bn_splits": 2,
                },
                "sampler": {"kind": "temporal", "offset": 2, "examples_per_clip": 1},
                "augmentation": "mocov2",
            }
        }
    )
    assert experiment.train.label() == "temporal (moco)"
    details, scores = _train_export_bench(experiment)
    assert details["steps"] == 6
    assert all(record["loss"] > 0 for record in details["history"])
    assert 0 <= scores["reid_map"] <= 1
