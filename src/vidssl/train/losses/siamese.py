"""SimSiam's symmetric negative cosine (Chen & He 2021, eq. 1):

loss = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,   D(p, z) = -cos(p, z)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) of eq. 1, averaged over the batch; z must already be detached."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def simsiam_loss(
    p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    return negative_cosine(p1, z2.detach()) / 2 + negative_cosine(p2, z1.detach()) / 2
