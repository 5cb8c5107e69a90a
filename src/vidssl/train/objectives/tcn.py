"""Time-contrastive network (Sermanet et al. 2018): anchor and positive are frames close in
time, the negative is a frame of the same video far from them.

    loss = mean( max(0, |f(a) - f(p)|^2 - |f(a) - f(n)|^2 + margin) ),  f L2-normalised
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    a, p, n = (F.normalize(x, dim=-1) for x in (anchor, positive, negative))
    return F.relu((a - p).pow(2).sum(-1) - (a - n).pow(2).sum(-1) + margin).mean()


class TimeContrastive(nn.Module):
    def __init__(self, encoder: nn.Module, feature_dim: int, dim: int = 128, margin: float = 0.2):
        super().__init__()
        self.encoder = encoder
        self.margin = margin
        self.head = nn.Linear(feature_dim, dim)

    def fixed_lr_modules(self) -> list[nn.Module]:
        return []

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        anchor, positive, negative = (self.head(self.encoder(view)) for view in views)
        return triplet_loss(anchor, positive, negative, self.margin), anchor.detach()
