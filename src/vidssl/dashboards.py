"""The Grafana dashboards, as code: training, stages and store, written as JSON into
`charts/vidssl/dashboards/` (the chart mounts each as a ConfigMap Grafana's sidecar loads).

    python -m vidssl.dashboards [folder]     # regenerate; tests/test_dashboards.py checks the
                                             # committed files equal this output

Each dashboard has a `datasource` variable (any Prometheus), `experiment` and `run` (all runs by
default). Training panels read what the training pod serves and pushes (vidssl.train.telemetry);
the same series can arrive twice, scraped from the pod and through the Pushgateway, so panels
take `max by (run)`. Stage and store panels read the stage summaries (vidssl.metrics): the
Pushgateway holds them only until the run's cleanup, Prometheus keeps what it scraped, so they
read the last value over the dashboard's range (`last_over_time(...[$__range])`).
Store throughput comes from two places: the training pod's store byte counters (live, rate)
and each stage's bytes over its duration (a mean per stage run).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FOLDER = Path("charts/vidssl/dashboards")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Every query's selector: the chosen experiment, the chosen runs.
SELECT = 'experiment=~"$experiment", run=~"$run"'
#: Metrics the variables take their values from (every stage summary, every training run).
LABELLED = '__name__=~"vidssl_stage_last_success_timestamp_seconds|vidssl_train_step"'
#: Panels whose queries need an exporter vidssl does not ship (title -> exporter): without it
#: they show "no data" (NVIDIA's dcgm-exporter, from the GPU operator, with its pod labels).
NEEDS_EXPORTER = {"GPU utilisation": "dcgm-exporter"}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    #: timeseries (over time) or bargauge / stat (one value per series, instant queries)
    kind: str = "timeseries"
    options: dict = field(default_factory=dict)

    def json(self, panel_id: int, x: int, y: int) -> dict:
        instant = self.kind != "timeseries"
        return {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
            "options": self.options,
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": DATASOURCE,
                    "expr": query.expr,
                    "legendFormat": query.legend,
                    "instant": instant,
                    "range": not instant,
                }
                for i, query in enumerate(self.queries)
            ],
        }


def _by_run(metric: str) -> str:
    return f"max by (run) ({metric}{{{SELECT}}})"


def _histogram(metric: str) -> tuple[Query, ...]:
    """Median, 95th percentile and mean of a seconds histogram, per run."""
    rate = "[$__rate_interval]"
    buckets = f"max by (run, le) (rate({metric}_bucket{{{SELECT}}}{rate}))"
    mean = (
        f"max by (run) (rate({metric}_sum{{{SELECT}}}{rate}) "
        f"/ rate({metric}_count{{{SELECT}}}{rate}))"
    )
    return (
        Query(f"histogram_quantile(0.5, {buckets})", "median {{run}}"),
        Query(f"histogram_quantile(0.95, {buckets})", "p95 {{run}}"),
        Query(mean, "mean {{run}}"),
    )


def _last(metric: str, over: str = "last_over_time") -> str:
    """The last value of a stage summary in the range, per stage and run (summed over outputs:
    the exports of one run)."""
    return f"sum by (stage, run) ({over}({metric}{{{SELECT}}}[$__range]))"


def _per_stage_rate(metric: str) -> str:
    """Bytes per second of each stage run: its bytes over its duration, summed over outputs."""
    window = "[$__range]"
    return (
        f"sum by (stage, run) (last_over_time({metric}{{{SELECT}}}{window}) "
        f"/ last_over_time(vidssl_stage_duration_seconds{{{SELECT}}}{window}))"
    )


BARS = {"displayMode": "basic", "orientation": "horizontal", "showUnfilled": True}

TRAINING = (
    Panel(
        "Loss per term",
        "The training loss (vidssl_train_loss) and, for methods with several, each loss term "
        "(vidssl_train_loss_<term>).",
        (
            Query(
                f'max by (__name__, run) ({{__name__=~"vidssl_train_loss(_.+)?", {SELECT}}})',
                "{{__name__}} {{run}}",
            ),
        ),
    ),
    Panel(
        "Learning rate",
        "The encoder's learning rate.",
        (Query(_by_run("vidssl_train_lr"), "{{run}}"),),
    ),
    Panel(
        "Samples per second",
        "Training examples per second since the run (or its resume) started.",
        (Query(_by_run("vidssl_train_samples_per_second"), "{{run}}"),),
    ),
    Panel(
        "Step time",
        "Seconds per optimizer step, from asking the loader for the batch to the step done.",
        _histogram("vidssl_train_step_seconds"),
        unit="s",
    ),
    Panel(
        "Data-loader wait",
        "Seconds a step waited for its batch.",
        _histogram("vidssl_train_data_wait_seconds"),
        unit="s",
    ),
    Panel(
        "Time waiting for data",
        "The share of step time spent waiting for batches: near 1, the input pipeline is the "
        "bottleneck (more loader_workers, GPU augmentation).",
        (
            Query(
                "max by (run) ("
                f"rate(vidssl_train_data_wait_seconds_sum{{{SELECT}}}[$__rate_interval]) / "
                f"rate(vidssl_train_step_seconds_sum{{{SELECT}}}[$__rate_interval]))",
                "{{run}}",
            ),
        ),
        unit="percentunit",
    ),
    Panel(
        "GPU utilisation",
        "DCGM_FI_DEV_GPU_UTIL of the GPUs of the training pods, from NVIDIA's dcgm-exporter "
        "(its namespace and pod labels joined to the pods serving vidssl_train_step); "
        "no data without dcgm-exporter.",
        (
            Query(
                "max by (namespace, pod, gpu) (DCGM_FI_DEV_GPU_UTIL * on (namespace, pod) "
                f"group_left () group by (namespace, pod) (vidssl_train_step{{{SELECT}}}))",
                "{{pod}} GPU {{gpu}}",
            ),
        ),
        unit="percent",
    ),
    Panel(
        "kNN accuracy",
        "kNN category accuracy of val frames against train frames, after each epoch.",
        (Query(_by_run("vidssl_train_knn_accuracy"), "{{run}}"),),
        unit="percentunit",
    ),
    Panel(
        "Collapse std",
        "Mean per-dimension std of the L2-normalised projections: about 1/sqrt(d) when "
        "healthy, 0 when every input maps to one point (collapse).",
        (Query(_by_run("vidssl_train_collapse_std"), "{{run}}"),),
    ),
    Panel(
        "Steps done",
        "Optimizer steps done, and the epoch.",
        (
            Query(_by_run("vidssl_train_step"), "step {{run}}"),
            Query(_by_run("vidssl_train_epoch"), "epoch {{run}}"),
        ),
    ),
)

STAGES = (
    Panel(
        "Duration",
        "Wall time of each stage run (a reused output takes seconds).",
        (Query(_last("vidssl_stage_duration_seconds"), "{{stage}} {{run}}"),),
        unit="s",
        kind="bargauge",
        options=BARS,
    ),
    Panel(
        "Samples written",
        "Samples each stage run wrote (0 when it reused a finished output).",
        (Query(_last("vidssl_stage_samples_written"), "{{stage}} {{run}}"),),
        kind="bargauge",
        options=BARS,
    ),
    Panel(
        "Bytes written",
        "Bytes each stage run wrote to the object store.",
        (Query(_last("vidssl_stage_written_bytes"), "{{stage}} {{run}}"),),
        unit="bytes",
        kind="bargauge",
        options=BARS,
    ),
    Panel(
        "Skipped inputs",
        "Inputs each stage's output lacks (each skipped with a reason, in its manifest).",
        (Query(_last("vidssl_stage_skipped_inputs"), "{{stage}} {{run}}"),),
        kind="bargauge",
        options=BARS,
    ),
    Panel(
        "Last success",
        "When each stage last finished, over the dashboard's range.",
        (
            Query(
                "max by (stage) (max_over_time("
                f"vidssl_stage_last_success_timestamp_seconds{{{SELECT}}}[$__range])) * 1000",
                "{{stage}}",
            ),
        ),
        unit="dateTimeAsIso",
        kind="stat",
        options={"textMode": "value_and_name", "colorMode": "none", "graphMode": "none"},
    ),
    Panel(
        "Reused outputs",
        "1 where a stage run found its output finished and reused it.",
        (Query(_last("vidssl_stage_cached"), "{{stage}} {{run}}"),),
        kind="bargauge",
        options=BARS,
    ),
)

STORE = (
    Panel(
        "Training pod: read throughput",
        "Bytes per second the training pod's main process reads from the store "
        "(vidssl_store_read_bytes_total; DataLoader worker processes not included).",
        (
            Query(
                f"max by (run) (rate(vidssl_store_read_bytes_total{{{SELECT}}}[$__rate_interval]))",
                "{{run}}",
            ),
        ),
        unit="Bps",
    ),
    Panel(
        "Training pod: write throughput",
        "Bytes per second the training pod writes to the store (checkpoints, the model).",
        (
            Query(
                "max by (run) "
                f"(rate(vidssl_store_written_bytes_total{{{SELECT}}}[$__rate_interval]))",
                "{{run}}",
            ),
        ),
        unit="Bps",
    ),
    Panel(
        "Stage read throughput",
        "Bytes each stage run read from the store over its duration (a mean per run).",
        (Query(_per_stage_rate("vidssl_stage_read_bytes"), "{{stage}} {{run}}"),),
        unit="Bps",
        kind="bargauge",
        options=BARS,
    ),
    Panel(
        "Stage write throughput",
        "Bytes each stage run wrote to the store over its duration (a mean per run).",
        (Query(_per_stage_rate("vidssl_stage_written_bytes"), "{{stage}} {{run}}"),),
        unit="Bps",
        kind="bargauge",
        options=BARS,
    ),
    Panel(
        "Bytes read",
        "Bytes each stage run read from the store.",
        (Query(_last("vidssl_stage_read_bytes"), "{{stage}} {{run}}"),),
        unit="bytes",
        kind="bargauge",
        options=BARS,
    ),
    Panel(
        "Bytes written",
        "Bytes each stage run wrote to the store.",
        (Query(_last("vidssl_stage_written_bytes"), "{{stage}} {{run}}"),),
        unit="bytes",
        kind="bargauge",
        options=BARS,
    ),
)

#: file name -> (title, uid, panels)
DASHBOARDS = {
    "training.json": ("vidssl / training", "vidssl-training", TRAINING),
    "stages.json": ("vidssl / stages", "vidssl-stages", STAGES),
    "store.json": ("vidssl / store", "vidssl-store", STORE),
}


def _variables() -> list[dict]:
    experiments = f"label_values({{{LABELLED}}}, experiment)"
    runs = f'label_values({{{LABELLED}, experiment=~"$experiment"}}, run)'
    query = {"type": "query", "datasource": DATASOURCE, "refresh": 2, "sort": 1, "regex": ""}
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "refresh": 1, "regex": "", "current": {}},
        {**query, "name": "experiment", "label": "Experiment", "query": experiments,
         "definition": experiments, "multi": False, "includeAll": False, "current": {}},
        {**query, "name": "run", "label": "Run", "query": runs, "definition": runs,
         "multi": True, "includeAll": True, "allValue": ".*",
         "current": {"text": "All", "value": "$__all"}},
    ]  # fmt: skip


def dashboard(title: str, uid: str, panels: tuple[Panel, ...]) -> dict:
    """One dashboard: its panels two to a row."""
    return {
        "uid": uid,
        "title": title,
        "tags": ["vidssl"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": _variables()},
        "panels": [panel.json(i + 1, 12 * (i % 2), 8 * (i // 2)) for i, panel in enumerate(panels)],
    }


def render() -> dict[str, str]:
    """File name -> the JSON text written for it."""
    return {
        name: json.dumps(dashboard(*spec), indent=2) + "\n" for name, spec in DASHBOARDS.items()
    }


def write(folder: Path = DEFAULT_FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FOLDER):
        print(path)
