"""What training reports: Prometheus gauges (served on an HTTP port while training, pushed to a
Pushgateway when VIDSSL_PUSHGATEWAY names one), the collapse monitor, and divergence checks.
prometheus_client is imported by `TrainMetrics` alone: the collapse monitor and the guard also
serve runs on machines without it (vidssl.perf.siampose_curve)."""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidssl.errors import VidsslError

log = logging.getLogger(__name__)

PUSHGATEWAY_ENV = "VIDSSL_PUSHGATEWAY"


class TrainingDiverged(VidsslError, RuntimeError):
    pass


def collapse_std(projections: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised projections: about 1/sqrt(d) when healthy, 0 when
    every input maps to the same point (SimSiam's collapse)."""
    return float(F.normalize(projections.float(), dim=-1).std(dim=0).mean())


class DivergenceGuard:
    """Stops on a non-finite loss, or a jump above the median of the last 50 losses by more
    than `factor` x max(|median|, 1) (bounded losses like SimSiam's can then only fail by NaN)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.recent: deque[float] = deque(maxlen=50)

    def check(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at step {step}")
        if len(self.recent) >= 10:
            median = sorted(self.recent)[len(self.recent) // 2]
            if loss - median > self.factor * max(abs(median), 1.0):
                raise TrainingDiverged(
                    f"loss rose from a recent median of {median:.4g} to {loss:.4g} at step {step}"
                )
        self.recent.append(loss)


class TrainMetrics:
    NAMES: ClassVar[dict[str, str]] = {
        "loss": "training loss (the sum of the method's loss terms)",
        "lr": "learning rate of the encoder",
        "samples_per_second": "training examples per second",
        "collapse_std": "mean std of the L2-normalised projections",
        "epoch": "current epoch",
        "step": "optimizer steps done",
        "knn_accuracy": "kNN category accuracy on val",
    }

    def __init__(self, job: str, port: int = 0) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.job = job
        self.registry = CollectorRegistry()
        self.gauges = {
            name: Gauge(f"vidssl_train_{name}", text, registry=self.registry)
            for name, text in self.NAMES.items()
        }
        self._gauge_class = Gauge
        self.gateway = os.environ.get(PUSHGATEWAY_ENV)
        if port:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)
            log.info("Prometheus metrics on port %d", port)

    def update(self, **values: float) -> None:
        for name, value in values.items():
            self.gauges[name].set(value)

    def update_losses(self, losses: dict[str, float]) -> None:
        """`loss` (the total) and a gauge per loss term of the method: vidssl_train_loss_<term>."""
        for name, value in losses.items():
            key = name if name == "loss" else f"loss_{name}"
            if key not in self.gauges:
                self.gauges[key] = self._gauge_class(
                    f"vidssl_train_{key}", f"training loss term {name}", registry=self.registry
                )
            self.gauges[key].set(value)

    def push(self) -> None:
        if not self.gateway:
            return
        from prometheus_client import push_to_gateway

        try:
            push_to_gateway(self.gateway, job=self.job, registry=self.registry, timeout=5)
        except OSError as exc:  # monitoring must never stop training
            log.warning("Pushgateway %s unreachable: %s", self.gateway, exc)
