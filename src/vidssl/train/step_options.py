"""The training step's speed-ups, each one a switch in `train` (vidssl.config.TrainConfig) that the
trainer applies, each one falling back with a clear log message where it cannot apply; their gains
are measured by the GPU training benchmark (issue 14, `make perf-train-gpu`):

- `train.amp`: bf16 autocast around the forward, on CUDA only (the trainer; ignored on the CPU).
- `train.channels_last`: the model and 4-D image batches in channels_last, on CUDA only.
- `train.compile` (with `train.compile_backend`): the module the step runs forward through is
  `torch.compile`d (StepModel); when compiling fails, at wrap time or while the first step
  runs (forward and backward: backward graphs compile lazily), one warning naming
  `train.compile` and the exception, and the step runs eagerly from then on.
- `train.cuda_graphs`: CUDA graphs through torch.compile's mode "reduce-overhead" (inductor's
  CUDA-graph trees, shapes specialised: the loader drops the last partial batch, so they are
  static); needs `train.compile` and the inductor backend, and a CUDA device; elsewhere an info
  message and nothing else.
- `train.fused_optimizer`: SGD's fused kernel (`fused=True`) where torch has it for every
  parameter's device and dtype (recent torch: CUDA and the CPU); otherwise an info message and
  torch's foreach implementation where the device has it, else the for-loop one
  (build_sgd). With the switch off, torch's default (foreach on CUDA, the for-loop on the CPU).
- `train.pin_memory`: the DataLoader pins batches in host memory (a background thread, ahead
  of the step) and the trainer copies them with non_blocking=True; on CUDA only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

from vidssl.config import TrainConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


# -- the optimiser ------------------------------------------------------------------------------


def _fused_unsupported(params: list[torch.Tensor]) -> str | None:
    """Why torch's fused SGD cannot take these parameters (None when it can). torch checks only
    at the first step, so the check is made here, with torch's own test."""
    from torch.optim.optimizer import _device_dtype_check_for_fused

    for param in params:
        try:
            _device_dtype_check_for_fused(param)
        except RuntimeError as exc:
            return str(exc)
    return None


def _foreach_supported(params: list[torch.Tensor]) -> bool:
    from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

    devices = _get_foreach_kernels_supported_devices()
    return all(param.device.type in devices for param in params)


def build_sgd(
    groups: Iterable[dict[str, Any]],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    fused: bool,
) -> torch.optim.SGD:
    """SGD over parameter `groups` (dicts with `params`, other keys kept as they are), with the
    fused implementation when `fused` asks for it and torch has it for every parameter (see the
    module docstring for the fallback). The groups' `fused` and `foreach` say what was chosen."""
    groups = [{**group, "params": list(group["params"])} for group in groups]
    params = [param for group in groups for param in group["params"]]
    implementation: dict[str, bool | None] = {}
    if fused:
        why_not = _fused_unsupported(params)
        if why_not is None:
            implementation = {"fused": True}
            log.info("train.fused_optimizer: fused SGD")
        else:
            foreach = _foreach_supported(params)
            implementation = {"foreach": foreach}
            log.info(
                "train.fused_optimizer: torch %s has no fused SGD here (%s); using the %s "
                "implementation",
                torch.__version__, why_not, "foreach" if foreach else "for-loop",
            )  # fmt: skip
    return torch.optim.SGD(
        groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **implementation
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, keeping this run's implementation (`fused`, `foreach`):
    torch restores the saved groups' settings, which would bring back the checkpointing run's."""
    chosen = [
        {key: group[key] for key in ("fused", "foreach") if key in group}
        for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, keys in zip(optimizer.param_groups, chosen, strict=True):
        group.update(keys)


# -- torch.compile and CUDA graphs ---------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """`Type: first line` of the exception, and of the one it wraps (a compiler backend's
    error inside dynamo's BackendCompilerFailed)."""

    def line(error: BaseException) -> str:
        text = (str(error).strip().splitlines() or [""])[0]
        return f"{type(error).__name__}: {text}" if text else type(error).__name__

    inner = getattr(exc, "inner_exception", None) or exc.__cause__
    return f"{line(exc)} {line(inner)}" if inner is not None else line(exc)


def _compiler_error(exc: BaseException) -> bool:
    return isinstance(exc, torch._dynamo.exc.TorchDynamoException)


def compile_mode(cfg: TrainConfig, device: torch.device) -> str | None:
    """torch.compile's mode for the switches: "reduce-overhead" (CUDA graphs) when
    `train.cuda_graphs` can apply, else None (the default); an info message where it cannot."""
    if not cfg.cuda_graphs:
        return None
    if device.type != "cuda":
        log.info("train.cuda_graphs: no CUDA graphs on %s; the switch does nothing here", device)
    elif not cfg.compile:
        log.info(
            "train.cuda_graphs: CUDA graphs come through torch.compile and train.compile is "
            "off; the switch does nothing"
        )
    elif cfg.compile_backend != "inductor":
        log.info(
            "train.cuda_graphs: CUDA graphs need train.compile_backend inductor (it is %s); "
            "the switch does nothing",
            cfg.compile_backend,
        )
    else:
        return "reduce-overhead"
    return None


class StepModel:
    """The module the training step runs forward through: `module` compiled by torch.compile
    when `train.compile` asks for it, else `module` itself. `run(step)` calls `step(module)`
    (forward and backward); a compiled module that fails before it has completed one step, or
    later with a compiler error (a recompilation), is dropped with one warning and the step is
    run again eagerly (the step must start by zeroing the gradients; a forward that mutates
    state, a negative queue, before a graph break may do that part twice in that one step).
    Checkpoints keep using the eager module: the compiled one shares its parameters."""

    def __init__(self, module: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> None:
        self.eager = module
        self.module: torch.nn.Module = module
        self.compiled = False
        self._proven = False
        mode = compile_mode(cfg, device)
        if not cfg.compile:
            return
        try:
            self.module = torch.compile(  # type: ignore[assignment]
                module, backend=cfg.compile_backend, mode=mode, dynamic=False if mode else None
            )
        except Exception as exc:  # any failure to wrap: train eagerly
            self._fall_back(exc, "wrapping the model")
            return
        self.compiled = True
        log.info(
            "train.compile: the step's forward compiled with backend %s%s (compiles at the "
            "first step)",
            cfg.compile_backend, f", mode {mode}" if mode else "",
        )  # fmt: skip

    def _fall_back(self, exc: BaseException, when: str) -> None:
        log.warning(
            "train.compile: torch.compile failed %s (%s); training continues without it "
            "(eager). Set train.compile: false to skip the attempt",
            when, _describe(exc),
        )  # fmt: skip
        self.module, self.compiled = self.eager, False

    def run(self, step: Callable[[torch.nn.Module], T]) -> T:
        if not self.compiled:
            return step(self.module)
        try:
            result = step(self.module)
        except Exception as exc:
            if self._proven and not _compiler_error(exc):
                raise
            self._fall_back(exc, "recompiling" if self._proven else "at the first step")
            return step(self.module)
        self._proven = True
        return result


def pin_memory(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the loader pins its batches: `train.pin_memory` on a CUDA device."""
    return cfg.pin_memory and device.type == "cuda"


def log_cuda_only_switches(cfg: TrainConfig, device: torch.device) -> None:
    """One info message for each switch that is on but applies on CUDA only, off a CUDA device
    (`amp`, `channels_last`, `pin_memory`; `cuda_graphs`: compile_mode)."""
    if device.type == "cuda":
        return
    for name in ("amp", "channels_last", "pin_memory"):
        if getattr(cfg, name):
            log.info("train.%s applies on CUDA only; the switch does nothing on %s", name, device)
