"""Contrastive losses with a temperature tau and cosine similarities.

NT-Xent (SimCLR), in-batch negatives: for 2N views,
    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )
averaged over the 2N positive pairs (i, j).

InfoNCE with a queue (MoCo, Chen et al. 2020 eq. 1): query q, its key k+, negatives from a
queue of past keys,
    l(q) = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k-} exp(q.k- / tau)) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.arange(2 * n, device=z.device).roll(n)  # view i's positive: i +- n
    return F.cross_entropy(logits, targets)


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """`queries` and `keys` (N, d) L2-normalised, `keys` detached; `negatives` (K, d)."""
    positive = (queries * keys).sum(dim=1, keepdim=True)
    negative = queries @ negatives.T
    logits = torch.cat([positive, negative], dim=1) / temperature
    targets = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
    return F.cross_entropy(logits, targets)
