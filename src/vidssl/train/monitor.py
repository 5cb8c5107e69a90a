"""What training watches for: the collapse monitor and divergence checks. They need torch alone,
so they also serve runs on machines without pydantic, the store or prometheus_client
(vidssl.perf.siampose_curve); what training reports to Prometheus is vidssl.train.telemetry."""

from __future__ import annotations

import math
from collections import deque

import torch
import torch.nn.functional as F

from vidssl.errors import VidsslError


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
