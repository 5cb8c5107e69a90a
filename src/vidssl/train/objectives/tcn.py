"""Time-contrastive network (Sermanet et al. 2018) as the SiamPose reference runs it: anchor
and positive are frames close in time, the negative a frame of the same video far from them.

    loss = mean( max(0, |h(a) - h(p)| - |h(a) - h(n)| + margin) )

with h = SimSiam's 3-layer projector on the encoder, its outputs not normalised, Euclidean
distances and margin 0.2: `torch.nn.TripletMarginLoss(margin=0.2)` on the projector outputs
(rjean/siampose siampose/models/simsiam.py; configs/config-pretrain-8gb-tcn.yaml).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.train.objectives.simsiam import projection_mlp


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin)


class TimeContrastive(nn.Module):
    def __init__(self, encoder: nn.Module, feature_dim: int, dim: int = 2048, margin: float = 0.2):
        super().__init__()
        self.encoder = encoder
        self.margin = margin
        self.head = projection_mlp(feature_dim, dim)

    def fixed_lr_modules(self) -> list[nn.Module]:
        return []

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        anchor, positive, negative = (self.head(self.encoder(view)) for view in views)
        return triplet_loss(anchor, positive, negative, self.margin), anchor.detach()
