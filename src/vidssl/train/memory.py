"""What momentum methods keep between steps, as small blocks testable on tensors (after MoCo's
moco/builder.py): a queue of negatives, the momentum update of a key encoder, and the batch
shuffle that keeps batch-norm statistics from leaking which key belongs to which query.

Under DDP the shuffle spans the ranks (`batch_shuffle_ddp`, `concat_all_gather`); on one process
`split_forward` emulates per-GPU batch norm by running the network on groups of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """target = momentum * target + (1 - momentum) * online, parameter by parameter (buffers,
    such as BN's running statistics, are the target's own)."""
    for theta_online, theta_target in zip(online.parameters(), target.parameters(), strict=True):
        theta_target.mul_(momentum).add_(theta_online.detach(), alpha=1 - momentum)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` that the optimiser never sees: the start of a momentum encoder."""
    import copy

    target = copy.deepcopy(module)
    for parameter in target.parameters():
        parameter.requires_grad = False
    return target


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` concatenated in rank order (no gradient); itself on one process."""
    if not distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered)


class NegativeQueue(nn.Module):
    """The last `size` keys (L2-normalised, `dim` wide), oldest overwritten first. A buffer, so
    it is saved in checkpoints and moves with the module."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Put this step's keys (of every rank) in place of the oldest ones."""
        keys = concat_all_gather(keys.detach().to(self.keys.dtype))
        size, count = self.keys.shape[0], keys.shape[0]
        if count > size:
            keys, count = keys[-size:], size
        # Slots pointer, pointer + 1, ... modulo size (wrapping around: MoCo asks size % batch
        # == 0; we do not), computed on the device: no host sync, no graph break under compile.
        slots = (self.pointer + torch.arange(count, device=self.keys.device)) % size
        self.keys.index_copy_(0, slots, keys)
        self.pointer.copy_((self.pointer + count) % size)


@torch.no_grad()
def batch_shuffle_ddp(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(this rank's part of the globally shuffled batch, the indices that undo the shuffle)."""
    gathered = concat_all_gather(x)
    total = gathered.shape[0]
    order = torch.randperm(total, device=x.device)
    dist.broadcast(order, src=0)
    restore = torch.argsort(order)
    per_rank = x.shape[0]
    mine = order.view(dist.get_world_size(), per_rank)[dist.get_rank()]
    return gathered[mine], restore


@torch.no_grad()
def batch_unshuffle_ddp(x: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
    """This rank's rows of the gathered outputs, back in the order of its own inputs."""
    gathered = concat_all_gather(x)
    per_rank = x.shape[0]
    mine = restore.view(dist.get_world_size(), per_rank)[dist.get_rank()]
    return gathered[mine]


def split_forward(
    network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, splits: int
) -> torch.Tensor:
    """`network` on `splits` groups of the batch, one after the other: each group's batch-norm
    statistics are its own, as on `splits` GPUs (one process standing in for DDP)."""
    splits = max(1, min(splits, x.shape[0] // 2))  # BN needs two samples a group
    return torch.cat([network(group) for group in x.chunk(splits)])


def shuffled_forward(
    network: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    splits: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MoCo's shuffling BN: `network` (the key encoder) on the batch in shuffled order — across
    ranks under DDP, across `splits` groups on one process — with outputs in the input order."""
    if distributed():
        shuffled, restore = batch_shuffle_ddp(x)
        return batch_unshuffle_ddp(network(shuffled), restore)
    device = generator.device if generator is not None else x.device  # no host round trip
    order = torch.randperm(x.shape[0], generator=generator, device=device).to(x.device)
    out = split_forward(network, x[order], splits)
    return out[torch.argsort(order)]


def per_device_forward(
    network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, splits: int
) -> torch.Tensor:
    """`network` with per-GPU batch-norm statistics: as is under DDP (each rank is a group), in
    `splits` groups on one process."""
    return network(x) if distributed() else split_forward(network, x, splits)
