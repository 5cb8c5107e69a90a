"""SimSiam (Chen & He 2021), as SiamPose trains it on frame pairs: projector (three layers with
BN) and predictor (a bottleneck MLP at a fixed learning rate), the symmetric negative cosine with
stop-gradient."""

from __future__ import annotations

import torch

from vidssl.train.heads import simsiam_predictor, simsiam_projector
from vidssl.train.losses import simsiam_loss
from vidssl.train.methods import Batch, Method, register_method


@register_method("simsiam")
class SimSiam(Method):
    def __init__(self, cfg, encoder, feature_dim: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cfg, encoder, feature_dim)
        self.projector = simsiam_projector(feature_dim, cfg.projection_dim)
        self.predictor = simsiam_predictor(cfg.projection_dim, cfg.predictor_dim)

    def learnable_params(self) -> list[dict]:
        fixed = {id(p) for p in self.predictor.parameters()}
        return [
            {
                "name": "encoder+projector",
                "params": [p for p in self.parameters() if id(p) not in fixed],
            },
            {"name": "predictor", "params": list(self.predictor.parameters()), "fixed_lr": True},
        ]

    def losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        z1 = self.projector(self.encoder(batch["first"]))
        z2 = self.projector(self.encoder(batch["second"]))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return {"simsiam": simsiam_loss(p1, p2, z1, z2)}, z1.detach()
