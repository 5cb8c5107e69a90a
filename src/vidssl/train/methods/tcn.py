"""Time-contrastive network (Sermanet et al. 2018) as the SiamPose reference runs it: anchor and
positive close in time, the negative far from them in the same video; TripletMarginLoss with
margin 0.2 on the unnormalised outputs of SimSiam's 3-layer projector (rjean/siampose
siampose/models/simsiam.py; configs/config-pretrain-8gb-tcn.yaml)."""

from __future__ import annotations

import torch

from vidssl.train.heads import simsiam_projector
from vidssl.train.losses import triplet_margin
from vidssl.train.methods import Batch, Method, register_method


@register_method("tcn")
class TimeContrastive(Method):
    def __init__(self, cfg, encoder, feature_dim: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__(cfg, encoder, feature_dim)
        self.head = simsiam_projector(feature_dim, cfg.projection_dim)

    def losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        anchor, positive, negative = (
            self.head(self.encoder(batch[name])) for name in ("anchor", "positive", "negative")
        )
        return {
            "triplet": triplet_margin(anchor, positive, negative, self.cfg.margin)
        }, anchor.detach()
