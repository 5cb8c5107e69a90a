"""What training reports to Prometheus: metrics served on an HTTP port while training and pushed
to a Pushgateway when VIDSSL_PUSHGATEWAY names one. prometheus_client is imported by
`TrainMetrics` alone. (The collapse monitor and the divergence guard: vidssl.train.monitor.)

Every series carries `experiment` and `run` labels (`vidssl.metrics.run_label`):

    vidssl_train_{loss,lr,samples_per_second,collapse_std,epoch,step,knn_accuracy}   gauges
    vidssl_train_loss_<term>                 gauge per loss term of a method with several
    vidssl_train_step_seconds                histogram: one optimizer step, from asking the
                                             loader for its batch to the step done
    vidssl_train_data_wait_seconds           histogram: the part of it spent waiting for the batch
    vidssl_store_{read,written}_bytes_total  counters: this process's object-store traffic
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import ClassVar

from vidssl.config import ConfigError
from vidssl.metrics import (
    GATEWAY_ERRORS,
    METRICS_PORT_ENV,
    PUSHGATEWAY_ENV,
    TIMEOUT_S,
    run_label,
)
from vidssl.store import STORE_TRAFFIC

log = logging.getLogger(__name__)

#: The address the metrics port binds (all interfaces, for Prometheus in the cluster); tests
#: set 127.0.0.1.
METRICS_ADDRESS_ENV = "VIDSSL_METRICS_ADDRESS"
#: The labels every training series carries.
LABELS = ("experiment", "run")
#: Bucket bounds (seconds) of the step-time and data-wait histograms: 1 ms to a minute, so a
#: tiny CPU model and a ResNet-50 on a GPU both land inside.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def serving_port(configured: int) -> int:
    """The port to serve metrics on: `train.metrics_port`, else $VIDSSL_METRICS_PORT, else 0
    (not served)."""
    if configured:
        return configured
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{METRICS_PORT_ENV}={raw!r}: expected a port number (1-65535)")
    return int(raw)


class StoreTrafficCollector:
    """`vidssl_store_{read,written}_bytes_total`: `STORE_TRAFFIC` read at each scrape or push."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily

        read, written = STORE_TRAFFIC.totals()
        for name, value, text in (
            ("vidssl_store_read_bytes", read, "bytes this process read from the object store"),
            ("vidssl_store_written_bytes", written, "bytes this process wrote to the store"),
        ):
            family = CounterMetricFamily(name, text, labels=list(self.labels))
            family.add_metric(list(self.labels.values()), value)
            yield family


class TrainMetrics:
    """The training run's metrics, labelled with its experiment and run (module docstring)."""

    NAMES: ClassVar[dict[str, str]] = {
        "loss": "training loss (the sum of the method's loss terms)",
        "lr": "learning rate of the encoder",
        "samples_per_second": "training examples per second",
        "collapse_std": "mean std of the L2-normalised projections",
        "epoch": "current epoch",
        "step": "optimizer steps done",
        "knn_accuracy": "kNN category accuracy on val",
    }

    def __init__(
        self, job: str, port: int = 0, experiment: str = "unnamed", run: str | None = None
    ) -> None:
        from prometheus_client import CollectorRegistry, Histogram, start_http_server

        self.job = job
        self.labels = {"experiment": experiment, "run": run_label(run)}
        self.registry = CollectorRegistry()
        self.gauges = {name: self._gauge(name, text) for name, text in self.NAMES.items()}
        self.step_seconds, self.data_wait_seconds = (
            Histogram(
                f"vidssl_train_{name}", text, LABELS, registry=self.registry,
                buckets=SECONDS_BUCKETS,
            ).labels(**self.labels)
            for name, text in (
                ("step_seconds", "seconds per optimizer step, waiting for the batch included"),
                ("data_wait_seconds", "seconds a step waited for its batch from the loader"),
            )
        )  # fmt: skip
        self.registry.register(StoreTrafficCollector(self.labels))
        self.gateway = os.environ.get(PUSHGATEWAY_ENV)
        self.server = None
        if port:
            address = os.environ.get(METRICS_ADDRESS_ENV, "0.0.0.0")
            self.server, _ = start_http_server(port, addr=address, registry=self.registry)
            log.info("Prometheus metrics on %s:%d", address, port)

    def close(self) -> None:
        """Stop serving the metrics port (it otherwise serves until the process ends)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _gauge(self, name: str, text: str):  # type: ignore[no-untyped-def]
        from prometheus_client import Gauge

        return Gauge(f"vidssl_train_{name}", text, LABELS, registry=self.registry).labels(
            **self.labels
        )

    def update(self, **values: float) -> None:
        for name, value in values.items():
            self.gauges[name].set(value)

    def observe_step(self, seconds: float, data_wait: float) -> None:
        """One optimizer step took `seconds`, `data_wait` of them waiting for its batch."""
        self.step_seconds.observe(seconds)
        self.data_wait_seconds.observe(data_wait)

    def update_losses(self, losses: dict[str, float]) -> None:
        """`loss` (the total) and a gauge per loss term of the method: vidssl_train_loss_<term>."""
        for name, value in losses.items():
            key = name if name == "loss" else f"loss_{name}"
            if key not in self.gauges:
                self.gauges[key] = self._gauge(key, f"training loss term {name}")
            self.gauges[key].set(value)

    def push(self) -> None:
        if not self.gateway:
            return
        from prometheus_client import push_to_gateway

        try:
            push_to_gateway(
                self.gateway,
                job=self.job,
                registry=self.registry,
                grouping_key={**self.labels, "stage": "train"},
                timeout=TIMEOUT_S,
            )
        except GATEWAY_ERRORS as exc:  # monitoring must never stop training
            log.warning("Pushgateway %s unreachable: %s", self.gateway, exc)
