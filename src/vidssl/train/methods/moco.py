"""MoCo-v2 (He et al. 2020; Chen et al. 2020), as Purushwalkam & Gupta train it on video frames
(section 5): a query encoder trained by SGD, a key encoder that follows it by momentum (0.999),
an MLP head (2048-128), InfoNCE at temperature 0.2 against a queue of 65536 past keys, and
shuffling BN (or SyncBN) so batch statistics cannot give the positive key away. The names of
moco/builder.py's steps are kept: `_momentum_update_key_encoder` is the trainer's
`after_optimizer_step` over `momentum_pairs`, `_dequeue_and_enqueue` is the queue's, and
`_batch_shuffle_ddp` / `concat_all_gather` live in vidssl.train.memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.train.heads import moco_v2_head
from vidssl.train.losses import info_nce
from vidssl.train.memory import NegativeQueue, frozen_copy, per_device_forward, shuffled_forward
from vidssl.train.methods import Batch, Method, register_method


@register_method("moco")
class MoCo(Method):
    def __init__(self, cfg, encoder: nn.Module, feature_dim: int) -> None:
        super().__init__(cfg, encoder, feature_dim)
        self.head = moco_v2_head(feature_dim, cfg.hidden_dim, cfg.projection_dim)
        self.key_encoder = frozen_copy(self.encoder)
        self.key_head = frozen_copy(self.head)
        self.queue = NegativeQueue(cfg.queue_size, cfg.projection_dim)

    @property
    def sync_batch_norm(self) -> bool:
        return not self.cfg.shuffle_bn

    def learnable_params(self) -> list[dict]:
        return [{"name": "query", "params": [*self.encoder.parameters(), *self.head.parameters()]}]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.key_encoder), (self.head, self.key_head)]

    def target_momentum(self, step: int, total_steps: int) -> float:
        return self.cfg.key_momentum

    def query(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))

    def key(self, images: torch.Tensor) -> torch.Tensor:
        return self.key_head(self.key_encoder(images))

    def losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        splits = self.cfg.bn_splits if self.cfg.shuffle_bn else 1
        queries = F.normalize(per_device_forward(self.query, batch["first"], splits), dim=1)
        with torch.no_grad():
            if self.cfg.shuffle_bn:
                keys = shuffled_forward(self.key, batch["second"], splits)
            else:
                keys = self.key(batch["second"])
            keys = F.normalize(keys, dim=1)
        loss = info_nce(queries, keys, self.queue.keys.clone().detach(), self.cfg.temperature)
        self.queue.dequeue_and_enqueue(keys)
        return {"info_nce": loss}, queries.detach()
