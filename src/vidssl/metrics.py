"""What a finished stage tells Prometheus, through the Pushgateway, and how a run's series leave it.

Every stage that finishes pushes one summary (`push_stage_summary`) to the Pushgateway named by
VIDSSL_PUSHGATEWAY (`host:port` or a URL; unset: nothing is pushed) under the grouping key
`job=vidssl_stage, experiment, stage, run` and, for stages that publish an output, `output`
(its digest: the exports of one run, the trained model's and each baseline's, are two groups):

    vidssl_stage_duration_seconds                  wall time of this run of the stage
    vidssl_stage_samples_written                   samples it wrote (0 when it reused an output)
    vidssl_stage_written_bytes                     bytes it wrote to the object store
    vidssl_stage_read_bytes                        bytes it read from the object store
    vidssl_stage_skipped_inputs                    inputs its output lacks, each skipped with a
                                                   reason (the manifest's `skipped`)
    vidssl_stage_cached                            1 when a finished output was reused
    vidssl_stage_last_success_timestamp_seconds    Unix time it finished

Store bytes are this process's `vidssl.store.STORE_TRAFFIC` over the stage: what went through
the store interface, so not the reads of DataLoader worker processes, nor, on a `file://`
store, shards WebDataset opens as plain files or videos read from their path (on S3 every shard
read is a store stream). `run` is the orchestrator's run id (`run_label`): VIDSSL_RUN_ID
when set (the pipeline sets it on every task), else the run id the stage was given (inspect,
bench), else `adhoc`: stages run by hand (CLI, tests) share one group per experiment and stage,
replaced by each such run, so they never pile up.

The Pushgateway keeps a group until it is deleted: `delete_run_groups` removes a run's groups
(the end of the pipeline calls it, `components/metrics.py`). Prometheus keeps what it scraped,
so dashboards read last values over a range (`last_over_time`). A push or delete that fails
only logs a warning: monitoring never stops a stage.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vidssl.store import STORE_TRAFFIC

log = logging.getLogger(__name__)

PUSHGATEWAY_ENV = "VIDSSL_PUSHGATEWAY"
#: The port a training pod serves its metrics on when `train.metrics_port` is 0 (the cluster's
#: `cluster.metrics_port`, which the pipeline sets on the train pods it gets scraped).
METRICS_PORT_ENV = "VIDSSL_METRICS_PORT"
RUN_ID_ENV = "VIDSSL_RUN_ID"
#: The run label of stages run outside a pipeline run.
ADHOC_RUN = "adhoc"
#: The `job` label of stage summaries.
STAGE_JOB = "vidssl_stage"
#: Seconds a push, list or delete waits for the Pushgateway.
TIMEOUT_S = 5.0
#: What a failed Pushgateway call can raise: unreachable, refused, HTTP errors, a bad address.
GATEWAY_ERRORS = (OSError, ValueError, http.client.HTTPException)


def run_label(run_id: str | None = None) -> str:
    """The `run` label: VIDSSL_RUN_ID, else `run_id`, else `adhoc` (see the module docstring)."""
    return os.environ.get(RUN_ID_ENV) or run_id or ADHOC_RUN


def gateway_address() -> str | None:
    """The Pushgateway from VIDSSL_PUSHGATEWAY, or None when monitoring is off."""
    return os.environ.get(PUSHGATEWAY_ENV) or None


def _base_url(gateway: str) -> str:
    gateway = gateway.rstrip("/")
    return gateway if gateway.startswith(("http://", "https://")) else f"http://{gateway}"


@dataclass(frozen=True)
class StageSummary:
    """One finished run of a stage, as pushed."""

    experiment: str
    stage: str
    run: str
    duration_seconds: float
    samples_written: int = 0
    written_bytes: int = 0
    read_bytes: int = 0
    skipped_inputs: int = 0
    cached: bool = False
    finished_at: float = 0.0
    #: the digest of the output it published or reused; "" for stages without one
    output: str = ""

    def grouping_key(self) -> dict[str, str]:
        key = {"experiment": self.experiment, "stage": self.stage, "run": self.run}
        return {**key, "output": self.output} if self.output else key

    def values(self) -> dict[str, tuple[float, str]]:
        """Metric name -> (value, help text)."""
        return {
            "vidssl_stage_duration_seconds": (self.duration_seconds, "wall time of the stage"),
            "vidssl_stage_samples_written": (self.samples_written, "samples the stage wrote"),
            "vidssl_stage_written_bytes": (self.written_bytes, "bytes written to the store"),
            "vidssl_stage_read_bytes": (self.read_bytes, "bytes read from the store"),
            "vidssl_stage_skipped_inputs": (self.skipped_inputs, "inputs skipped, with reasons"),
            "vidssl_stage_cached": (float(self.cached), "1 when a finished output was reused"),
            "vidssl_stage_last_success_timestamp_seconds": (
                self.finished_at,
                "Unix time the stage last finished",
            ),
        }


def push_stage_summary(summary: StageSummary, gateway: str | None = None) -> bool:
    """Push `summary` to `gateway` (default VIDSSL_PUSHGATEWAY), replacing its group. False
    when monitoring is off or the push failed (a warning says why)."""
    gateway = gateway or gateway_address()
    if not gateway:
        return False
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    for name, (value, text) in summary.values().items():
        Gauge(name, text, registry=registry).set(value)
    try:
        push_to_gateway(
            gateway,
            job=STAGE_JOB,
            registry=registry,
            grouping_key=summary.grouping_key(),
            timeout=TIMEOUT_S,
        )
    except GATEWAY_ERRORS as exc:
        log.warning(
            "%s: stage summary not pushed to Pushgateway %s: %s", summary.stage, gateway, exc
        )
        return False
    return True


class StageReport:
    """What a stage says about its output before `stage_report` pushes the summary."""

    def __init__(self) -> None:
        self.finished = False
        self.samples_written = 0
        self.skipped_inputs = 0
        self.cached = False
        self.output = ""

    def succeeded(
        self,
        samples_written: int = 0,
        skipped_inputs: int = 0,
        cached: bool = False,
        output: str = "",
    ) -> None:
        """The stage finished: what to push (see the module docstring)."""
        self.finished = True
        self.samples_written, self.skipped_inputs = samples_written, skipped_inputs
        self.cached, self.output = cached, output


@contextmanager
def stage_report(experiment: str, stage: str, run_id: str | None = None) -> Iterator[StageReport]:
    """Times the block and counts its store traffic; if the block calls `report.succeeded(...)`
    and returns normally, pushes the stage's summary (nothing on an exception or a stop)."""
    report = StageReport()
    started, (read_before, written_before) = time.monotonic(), STORE_TRAFFIC.totals()
    yield report
    if not report.finished:
        return
    read_after, written_after = STORE_TRAFFIC.totals()
    push_stage_summary(
        StageSummary(
            experiment=experiment,
            stage=stage,
            run=run_label(run_id),
            duration_seconds=time.monotonic() - started,
            samples_written=report.samples_written,
            written_bytes=written_after - written_before,
            read_bytes=read_after - read_before,
            skipped_inputs=report.skipped_inputs,
            cached=report.cached,
            finished_at=time.time(),
            output=report.output,
        )
    )


def gateway_groups(gateway: str) -> list[dict]:
    """Every group the Pushgateway holds: its labels (job and grouping key) and the Unix time
    of its last push, from its `/api/v1/metrics`."""
    url = f"{_base_url(gateway)}/api/v1/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        body = json.load(response)
    groups = []
    for group in body.get("data", []):
        pushed = group.get("push_time_seconds", {}).get("metrics", [{}])[0].get("value", "0")
        groups.append({"labels": group["labels"], "push_time": float(pushed)})
    return groups


def delete_run_groups(
    gateway: str, experiment: str, run: str, stale_seconds: float | None = None
) -> list[dict[str, str]]:
    """Delete the Pushgateway groups of `run` of `experiment` (every job: stage summaries and
    training gauges), and with `stale_seconds` also the experiment's groups of any run last
    pushed longer ago than that (left by runs that failed before their own cleanup). Returns
    the labels of the groups deleted. Raises OSError when the Pushgateway cannot be reached."""
    from prometheus_client import delete_from_gateway

    now, deleted = time.time(), []
    for group in gateway_groups(gateway):
        labels = group["labels"]
        if labels.get("experiment") != experiment:
            continue
        stale = stale_seconds is not None and now - group["push_time"] > stale_seconds
        if labels.get("run") != run and not stale:
            continue
        key = {name: value for name, value in labels.items() if name != "job"}
        delete_from_gateway(gateway, job=labels["job"], grouping_key=key, timeout=TIMEOUT_S)
        deleted.append(labels)
    log.info("deleted %d Pushgateway groups of %s run %s", len(deleted), experiment, run)
    return deleted


def clean_up_run(
    experiment: str,
    run_id: str | None = None,
    grace_seconds: float = 0.0,
    stale_seconds: float | None = None,
    gateway: str | None = None,
) -> int:
    """The end of a pipeline run: wait `grace_seconds` (longer than Prometheus's scrape interval
    of the Pushgateway, so the last stage's summary is scraped), then delete the run's groups
    (`run_label(run_id)`) and the experiment's stale ones (`delete_run_groups`). Returns how
    many were deleted: 0, with a warning, when no Pushgateway is set or it cannot be reached."""
    gateway = gateway or gateway_address()
    if not gateway:
        log.warning("%s is not set: no Pushgateway groups to delete", PUSHGATEWAY_ENV)
        return 0
    time.sleep(grace_seconds)
    try:
        return len(delete_run_groups(gateway, experiment, run_label(run_id), stale_seconds))
    except GATEWAY_ERRORS as exc:
        log.warning("Pushgateway %s: groups of %s not deleted: %s", gateway, experiment, exc)
        return 0
