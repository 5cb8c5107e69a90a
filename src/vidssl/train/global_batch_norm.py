"""Batch norm over the global batch under DDP on any device: torch's SyncBatchNorm on CUDA, and on
the CPU (gloo), where torch's refuses to run, `GlobalBatchNorm`: the same statistics gathered by
an autograd-aware all-reduce. Without it, CPU DDP would normalise each process's rows by their
own mean and variance and train a different model than one process given the whole batch
(tests/test_ddp_curve.py measures both)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SumOverProcesses(torch.autograd.Function):
    """A tensor summed over every process; its gradient likewise (each process's loss depends
    on every process's input through the sum)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over every process, differentiably (gloo or NCCL)."""
    return _SumOverProcesses.apply(tensor)


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of every process's rows together: the
    per-channel sum, then the sum of squared deviations from the global mean, each summed across
    processes (two passes, as one process's batch norm computes them). Gradients flow through
    the sums, so each process's backward sees the whole batch's loss, as in torch's
    SyncBatchNorm. Running statistics take the global mean and the unbiased global variance.
    In eval mode, or in a single process, it is plain batch norm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or _distributed_world() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // channels], dtype=input.dtype, device=input.device)
        sums = sum_over_processes(torch.cat([input.sum(dims), count]))
        total = sums[-1]
        mean = sums[:-1] / total
        centred = input - mean.view(shape)
        variance = sum_over_processes(centred.square().sum(dims)) / total
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_statistics(mean.detach(), variance.detach(), float(total.detach()))
        return output

    @torch.no_grad()
    def _update_running_statistics(
        self, mean: torch.Tensor, variance: torch.Tensor, n: float
    ) -> None:
        assert self.num_batches_tracked is not None  # track_running_stats
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(variance * n / max(n - 1, 1.0), factor)


def convert_to_global_batch_norm(module: nn.Module) -> nn.Module:
    """`module` with every batch norm replaced by a `GlobalBatchNorm` holding the same parameter
    and buffer objects (an optimiser built before keeps working), as torch's
    `SyncBatchNorm.convert_sync_batchnorm` does."""
    converted = module
    if isinstance(module, _BatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_to_global_batch_norm(child))
    return converted


def synchronise_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with batch statistics over the global batch: torch's SyncBatchNorm on CUDA,
    `GlobalBatchNorm` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_to_global_batch_norm(model)
