"""PiCo (pixel correspondence from video; after VADeR, Pinheiro et al. 2020), MoCo-v2 style: the
query encoder (ResNet + FPN semantic branch, `vidssl.train.dense`) and a 1x1-conv head embed the
anchor frame; a key encoder and head that follow them by momentum embed the view frames; the
embeddings at corresponding points are positives, pixel keys of past batches (a queue) the
negatives (pixel InfoNCE, eq. 1; `vidssl.train.losses.pixel`). With `freeze_encoder` the ResNet
is fixed (the paper, from a MoCo checkpoint) and shared by both encoders; the FPN, the semantic
branch and the head learn.

Batch contract (per example, stacked by the default collate; B examples, K views, P pairs):

- `anchor`     (B, 3, H, W): the anchor frame, augmented (uint8 from the loader; the method
  receives it as float, normalised);
- `views`      (B, K, 3, H, W): the K view frames, same size and type as the anchor;
- `anchor_xy`  (B, P, 2) float: pair i's point (x, y) in the anchor, in pixels of the `anchor`
  tensor as given here (after crops, flips and resizing), pixel centres at integer coordinates
  (vidssl.flow's convention);
- `view_xy`    (B, P, 2) float: the same scene point in view `view_index[b, i]`, same convention;
- `view_index` (B, P) int64 in [0, K): which view pair i's second point lies in;
- `valid`      (B, P) bool: which of the P slots hold a pair (examples with fewer pairs pad).

A point (x, y) reads the stride-4 output at feature index ((x + 0.5) / 4 - 0.5, ...), the paper's
(x/4, y/4) measured from the image edge (see `sample_features`).

The baselines are the same method with other batches, nothing special here:
- PiCo: views are other frames of the clip, `view_xy` a track's position there (flow);
- Static (Frame): views are other augmentations (crop, flip) of the anchor frame itself, and
  `view_xy` the anchor point carried through those crops and flips (identity correspondence);
- Static (Video): views are other frames, and `view_xy` the anchor point as if the flow were
  zero: the same (x, y) in the frame, carried through each view's own crop and flip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.train.dense import OUTPUT_STRIDE, DenseEncoder, dense_projection_head, load_body_weights
from vidssl.train.losses import pixel_info_nce, same_point_mask, sample_features
from vidssl.train.memory import (
    NegativeQueue,
    distributed,
    frozen_copy,
    per_device_forward,
    shuffled_forward,
)
from vidssl.train.methods import Batch, Method, register_method

#: The batch keys PiCo reads (the config's `views`).
BATCH_KEYS = ("anchor", "views", "anchor_xy", "view_xy", "view_index", "valid")


def point_pairs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's valid pairs flattened: anchor points (M, 2), view points (M, 2), the anchor
    image of each (M,) (index into `anchor`), its view image (M,) (index into `views` flattened
    to (B K, 3, H, W): b K + view_index)."""
    missing = [key for key in BATCH_KEYS if key not in batch]
    if missing:
        raise KeyError(f"a PiCo batch needs {list(BATCH_KEYS)}; this one lacks {missing}")
    valid = batch["valid"].bool()
    examples, pairs = valid.shape
    views = batch["views"].shape[1]
    view_index = batch["view_index"].long()[valid]
    if view_index.numel() and (view_index.min() < 0 or view_index.max() >= views):
        raise ValueError(f"view_index must lie in [0, {views}): the batch has {views} views")
    anchor_image = torch.arange(examples, device=valid.device)[:, None].expand(examples, pairs)
    anchor_image = anchor_image[valid]
    return (
        batch["anchor_xy"][valid],
        batch["view_xy"][valid],
        anchor_image,
        anchor_image * views + view_index,
    )


def fixed_count(
    keys: torch.Tensor, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`count` keys from `keys` (drawn with replacement; random unit vectors if there are none):
    every rank then enqueues as many keys, which the queue's all-gather needs under DDP."""
    # Drawn on the generator's device, else the keys' (the same draws as before on the CPU; on
    # CUDA no host round trip inside the compiled step).
    device = generator.device if generator is not None else keys.device
    if keys.shape[0] == 0:
        noise = torch.randn(count, keys.shape[1], generator=generator, device=device)
        return F.normalize(noise, dim=1).to(keys)
    picks = torch.randint(keys.shape[0], (count,), generator=generator, device=device)
    return keys[picks.to(keys.device)]


@register_method("pico")
class PiCo(Method):
    def __init__(self, cfg, encoder: nn.Module, feature_dim: int) -> None:  # type: ignore[no-untyped-def]
        dense = DenseEncoder(
            encoder,
            cfg.embedding_dim,
            frozen_body=cfg.freeze_encoder,
            fpn_channels=cfg.fpn_channels,
            branch_channels=cfg.branch_channels,
        )
        if cfg.encoder_checkpoint:
            load_body_weights(dense, cfg.encoder_checkpoint)
        super().__init__(cfg, dense, cfg.embedding_dim)
        self.head = dense_projection_head(cfg.embedding_dim, cfg.hidden_dim, cfg.projection_dim)
        self.key_encoder = frozen_copy(self.encoder)
        if cfg.freeze_encoder:  # one fixed ResNet serves both encoders
            self.key_encoder.body = self.encoder.body
        self.key_head = frozen_copy(self.head)
        self.queue = NegativeQueue(cfg.queue_size, cfg.projection_dim)

    @property
    def bn_splits(self) -> int:
        """Batch-norm groups of a forward pass: a frozen ResNet's BN has no batch statistics."""
        return self.cfg.bn_splits if self.cfg.shuffle_bn and not self.cfg.freeze_encoder else 1

    @property
    def sync_batch_norm(self) -> bool:
        return not self.cfg.shuffle_bn

    def learnable_params(self) -> list[dict]:
        params = [*self.encoder.parameters(), *self.head.parameters()]
        return [{"name": "query", "params": [p for p in params if p.requires_grad]}]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if self.cfg.freeze_encoder:
            encoder, key = self.encoder, self.key_encoder
            encoders = [(encoder.fpn, key.fpn), (encoder.semantic, key.semantic)]
        else:
            encoders = [(self.encoder, self.key_encoder)]
        return [*encoders, (self.head, self.key_head)]

    def target_momentum(self, step: int, total_steps: int) -> float:
        return self.cfg.key_momentum

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """(N, projection_dim, H/4, W/4), not normalised."""
        return self.head(self.encoder(images))

    def key(self, images: torch.Tensor) -> torch.Tensor:
        return self.key_head(self.key_encoder(images))

    def losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        anchor_xy, view_xy, anchor_image, view_image = point_pairs(batch)
        splits = self.bn_splits
        query_map = per_device_forward(self.query, batch["anchor"], splits)
        queries = F.normalize(sample_features(query_map, anchor_xy, anchor_image, OUTPUT_STRIDE))
        with torch.no_grad():
            frames = batch["views"].flatten(0, 1)
            key_map = shuffled_forward(self.key, frames, splits) if splits > 1 else self.key(frames)
            keys = F.normalize(sample_features(key_map, view_xy, view_image, OUTPUT_STRIDE))
        exclusion = None
        if self.cfg.batch_negatives:
            exclusion = same_point_mask(anchor_xy, anchor_image, self.cfg.negative_exclusion_px)
        negatives = self.queue.keys.clone().detach()
        loss = pixel_info_nce(queries, keys, negatives, self.cfg.temperature, exclusion)
        if distributed():
            keys = fixed_count(keys, batch["valid"].numel())
        self.queue.dequeue_and_enqueue(keys)
        return {"pixel_info_nce": loss}, queries.detach()
