"""Methods: what is learned from an example. One module per method, each a `Method` registered
under its config's kind (`@register_method("moco")` for `train.method.kind: moco`); the trainer
knows only this interface (after solo-learn's `solo/methods/base.py`):

- `losses(batch)`: a dict of named loss terms (summed for the gradient; each logged and guarded
  by the trainer) and the projections the collapse monitor reads;
- `learnable_params()`: the optimiser's parameter groups, some at a fixed learning rate;
- `momentum_pairs()`: (online, momentum copy) modules, updated after each optimiser step with
  `target_momentum(step, total)`;
- `sync_batch_norm`: whether DDP should convert batch norm to SyncBN.

`encoder` is what export keeps. A new method: a config class in vidssl.config's
`METHOD_CONFIGS` (or `register_method_config`) and a module here with
`@register_method("<its kind>")`. Methods read their settings by attribute and import nothing
from vidssl.config, so they also run where pydantic is not installed
(vidssl.perf.siampose_curve on a bare GPU machine).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import torch
from torch import nn

from vidssl.train.backbones import build_backbone
from vidssl.train.memory import momentum_update

Batch = dict[str, torch.Tensor]

_METHODS: dict[str, type[Method]] = {}


class Method(nn.Module):
    """Base class: an encoder and the heads and losses a method trains it with."""

    def __init__(self, cfg, encoder: nn.Module, feature_dim: int) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.feature_dim = feature_dim

    @property
    def sync_batch_norm(self) -> bool:
        return True

    def losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.losses(batch)

    def learnable_params(self) -> list[dict]:
        """Parameter groups: dicts with `name`, `params` and optionally `fixed_lr: True` (kept
        at the peak learning rate, as SimSiam's predictor)."""
        return [{"name": "all", "params": [p for p in self.parameters() if p.requires_grad]}]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    def target_momentum(self, step: int, total_steps: int) -> float:
        return 0.0

    @torch.no_grad()
    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """The hook the trainer calls after each optimiser step: momentum updates."""
        momentum = self.target_momentum(step, total_steps)
        for online, target in self.momentum_pairs():
            momentum_update(online, target, momentum)


def register_method(kind: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: the method trained when `train.method.kind` is `kind`."""

    def register(method: type[Method]) -> type[Method]:
        _METHODS[kind] = method
        return method

    return register


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """What the gradient follows: the sum of a method's loss terms."""
    return torch.stack([term.float() for term in losses.values()]).sum()


def _import_methods() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def method_class(cfg) -> type[Method]:  # type: ignore[no-untyped-def]
    _import_methods()
    try:
        return _METHODS[cfg.kind]
    except KeyError:
        raise ValueError(f"train.method {cfg.kind!r}: no method is registered for it") from None


def build_method(train_cfg) -> Method:  # type: ignore[no-untyped-def]
    """The experiment's method around a fresh encoder (`train.backbone`, `train.weights`)."""
    encoder, dimension = build_backbone(train_cfg.backbone, train_cfg.weights)
    return method_class(train_cfg.method)(train_cfg.method, encoder, dimension)
