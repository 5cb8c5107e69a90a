"""Objectives: one short module each. An objective is an nn.Module holding the encoder and its
heads; `forward(views)` takes the list of view batches of one training batch and returns
(loss, projections) — the projections feed the collapse monitor."""

from __future__ import annotations

from torch import nn

from vidssl.train.backbones import build_backbone


def build_objective(cfg) -> nn.Module:  # type: ignore[no-untyped-def]
    from vidssl.train.objectives.ntxent import NTXent
    from vidssl.train.objectives.simsiam import SimSiam
    from vidssl.train.objectives.tcn import TimeContrastive

    encoder, dimension = build_backbone(cfg.backbone, cfg.weights)
    if cfg.objective == "simsiam":
        return SimSiam(encoder, dimension, cfg.projection_dim, cfg.predictor_dim)
    if cfg.objective == "ntxent":
        return NTXent(encoder, dimension, cfg.projection_dim, cfg.temperature)
    if cfg.objective == "tcn":
        return TimeContrastive(encoder, dimension, cfg.projection_dim, cfg.margin)
    raise ValueError(f"train.objective: unknown {cfg.objective!r}")


def views_needed(objective: str) -> int:
    return 3 if objective == "tcn" else 2
