"""SimSiam (Chen & He 2021), as SiamPose trains it on frame pairs.

    loss = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,   D(p, z) = -cos(p, z)   (eq. 1)

Projector: three fully connected layers with BN (the last BN without affine); predictor: a
bottleneck MLP (d -> d/4 -> d, 2048 -> 512 -> 2048 in the paper), its learning rate fixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) of eq. 1, averaged over the batch; z must already be detached."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def simsiam_loss(
    p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    return negative_cosine(p1, z2.detach()) / 2 + negative_cosine(p2, z1.detach()) / 2


def projection_mlp(feature_dim: int, dim: int) -> nn.Sequential:
    """SimSiam's projector: three fully connected layers with BN (the last BN without affine)."""
    return nn.Sequential(
        nn.Linear(feature_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
    )  # fmt: skip


class SimSiam(nn.Module):
    def __init__(self, encoder: nn.Module, feature_dim: int, dim: int = 2048, pred_dim: int = 512):
        super().__init__()
        self.encoder = encoder
        self.projector = projection_mlp(feature_dim, dim)
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )  # fmt: skip

    def fixed_lr_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = views
        z1, z2 = self.projector(self.encoder(x1)), self.projector(self.encoder(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return simsiam_loss(p1, p2, z1, z2), z1.detach()
