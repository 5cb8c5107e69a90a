"""The triplet margin loss (TCN, Sermanet et al. 2018), Euclidean distances:

loss = mean( max(0, |a - p| - |a - n| + margin) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def triplet_margin(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin)
