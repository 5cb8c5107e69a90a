"""NT-Xent (SimCLR): in-batch negatives, temperature tau. For 2N views, with sim = cosine,

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )

averaged over the 2N positive pairs (i, j).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.arange(2 * n, device=z.device).roll(n)  # view i's positive: i +- n
    return F.cross_entropy(logits, targets)


class NTXent(nn.Module):
    def __init__(
        self, encoder: nn.Module, feature_dim: int, dim: int = 128, temperature: float = 0.1
    ):
        super().__init__()
        self.encoder = encoder
        self.temperature = temperature
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True),
            nn.Linear(feature_dim, dim),
        )  # fmt: skip

    def fixed_lr_modules(self) -> list[nn.Module]:
        return []

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = (self.projector(self.encoder(view)) for view in views)
        return nt_xent_loss(z1, z2, self.temperature), z1.detach()
