"""NT-Xent (SimCLR) on two views: in-batch negatives, SimCLR's projector."""

from __future__ import annotations

import torch

from vidssl.train.heads import simclr_projector
from vidssl.train.losses import nt_xent
from vidssl.train.methods import Batch, Method, register_method


@register_method("ntxent")
class NTXent(Method):
    def __init__(self, cfg, encoder, feature_dim: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cfg, encoder, feature_dim)
        self.projector = simclr_projector(feature_dim, cfg.projection_dim)

    def losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        z1 = self.projector(self.encoder(batch["first"]))
        z2 = self.projector(self.encoder(batch["second"]))
        return {"nt_xent": nt_xent(z1, z2, self.cfg.temperature)}, z1.detach()
