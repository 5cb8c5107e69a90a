"""Heads: the small MLPs methods put on the encoder, each testable on a tensor."""

from __future__ import annotations

from torch import nn


def simsiam_projector(feature_dim: int, dim: int) -> nn.Sequential:
    """SimSiam's projector: three fully connected layers with BN (the last BN without affine)."""
    return nn.Sequential(
        nn.Linear(feature_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
    )  # fmt: skip


def simsiam_predictor(dim: int, bottleneck: int) -> nn.Sequential:
    """SimSiam's predictor: a bottleneck MLP (2048 -> 512 -> 2048 in the paper)."""
    return nn.Sequential(
        nn.Linear(dim, bottleneck, bias=False), nn.BatchNorm1d(bottleneck), nn.ReLU(inplace=True),
        nn.Linear(bottleneck, dim),
    )  # fmt: skip


def simclr_projector(feature_dim: int, dim: int) -> nn.Sequential:
    """SimCLR's projector as the SiamPose reference builds it: d -> d (BN, ReLU) -> dim."""
    return nn.Sequential(
        nn.Linear(feature_dim, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True),
        nn.Linear(feature_dim, dim),
    )  # fmt: skip


def moco_v2_head(feature_dim: int, hidden_dim: int, dim: int) -> nn.Sequential:
    """MoCo-v2's MLP head (moco/builder.py with --mlp): fc, ReLU, fc; 2048 -> 2048 -> 128."""
    return nn.Sequential(
        nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, dim)
    )
