"""The Grafana dashboards: the committed JSON is the generator's output, and every query of every
panel answers on a real Prometheus that scraped a real training run and the stage summaries the
data stages pushed to a real Pushgateway. Deleting a run's groups empties the Pushgateway of
them, while the dashboards still show the run from what Prometheus kept."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import uuid

import pytest

from components.metrics import delete_run_metrics
from vidssl import dashboards, metrics
from vidssl.stages import clean, ingest, synth
from vidssl.stages.base import store_for
from vidssl.stages.train import steps_per_epoch
from vidssl.train.methods import build_method
from vidssl.train.trainer import Trainer

from .conftest import REPO_ROOT, build_experiment
from .monitoring_services import free_port, get, one_torch_thread, prometheus, pushgateway, query

#: Prometheus's scrape interval here, and what Grafana would substitute with it as the data
#: source's scrape interval and a 5 s $__interval (a range of about an hour):
#: $__rate_interval = max($__interval + scrape interval, 4 x scrape interval).
SCRAPE_S = 0.5
GRAFANA_VARIABLES = {
    "__rate_interval": "5500ms",
    "__interval": "5s",
    "__range": "10m",
    "experiment": "tiny",
    "run": ".*",  # the run variable's "All"
}


def grafana_expr(expr: str) -> str:
    """`expr` with the dashboard's variables replaced as Grafana would (`$name`, `${name}`)."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", GRAFANA_VARIABLES[name])
        expr = expr.replace(f"${name}", GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"a variable Grafana would not know: {expr}"
    return expr


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every target of every committed dashboard."""
    found = []
    for name in dashboards.DASHBOARDS:
        board = json.loads((REPO_ROOT / dashboards.DEFAULT_FOLDER / name).read_text())
        for panel in board["panels"]:
            found += [(name, panel["title"], target["expr"]) for target in panel["targets"]]
    return found


def needs_absent_exporter(title: str) -> bool:
    return title in dashboards.NEEDS_EXPORTER


def test_committed_dashboards_are_the_generators_output():
    folder = REPO_ROOT / dashboards.DEFAULT_FOLDER
    committed = {path.name: path.read_text() for path in folder.glob("*.json")}
    assert committed == dashboards.render(), "run `python -m vidssl.dashboards`"


def test_every_dashboard_has_its_variables_and_uses_them():
    for name in dashboards.DASHBOARDS:
        board = json.loads((REPO_ROOT / dashboards.DEFAULT_FOLDER / name).read_text())
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["experiment"]["type"] == "query"
        titles = [panel["title"] for panel in board["panels"]]
        assert len(titles) == len(set(titles)), name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                assert 'experiment=~"$experiment"' in target["expr"], target["expr"]


def test_only_the_dcgm_panel_is_marked_as_needing_an_exporter():
    marked = {expr for _, title, expr in panel_queries() if needs_absent_exporter(title)}
    dcgm = {expr for _, _, expr in panel_queries() if "DCGM_" in expr}
    assert dcgm and marked == dcgm
    assert set(dashboards.NEEDS_EXPORTER) == {"GPU utilisation"}


def _wait_for(prometheus_url: str, expr: str, want: float, seconds: float = 30.0) -> None:
    """Wait (bounded) until `expr`'s first value reaches `want`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = query(prometheus_url, expr)["result"]
        if result and float(result[0]["value"][1]) >= want:
            return
        time.sleep(SCRAPE_S / 2)
    raise AssertionError(f"{expr} did not reach {want} in {seconds:g}s")


def _values(data: dict) -> list[float]:
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(series["value"][1]) for series in data["result"]]


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


def test_every_panel_query_answers_on_real_prometheus(tmp_path, monkeypatch, one_thread):
    started = time.monotonic()
    run = f"test-{uuid.uuid4().hex[:8]}"
    train_port = free_port()
    monkeypatch.setenv(metrics.RUN_ID_ENV, run)
    monkeypatch.setenv("VIDSSL_METRICS_ADDRESS", "127.0.0.1")
    experiment = build_experiment(
        f"file://{tmp_path / 'store'}", train__metrics_port=train_port, train__steps_per_epoch=8
    )
    with pushgateway(tmp_path) as gateway:
        monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, gateway)
        targets = {
            "vidssl-train": {"static_configs": [{"targets": [f"127.0.0.1:{train_port}"]}]},
            "pushgateway": {"honor_labels": True, "static_configs": [{"targets": [gateway]}]},
        }
        with prometheus(tmp_path / "prometheus", f"{int(SCRAPE_S * 1000)}ms", targets) as url:
            # real stage runs: each pushes its summary
            raw = synth.raw_url(synth.run(experiment))
            clips = clean.run(experiment, ingest.run(experiment, source_url=raw).url)
            # a real training run, its metrics served on the port Prometheus scrapes
            cfg, store = experiment.train, store_for(experiment)
            trainer = Trainer(
                build_method(cfg), cfg, store, "runs/tiny/train", experiment.store_uri(),
                store.key_of(clips.url), steps_per_epoch(experiment, clips.manifest),
                job="vidssl-train-tiny", experiment="tiny",
            )  # fmt: skip
            step_times: dict[int, float] = {}

            def paced(step: int) -> None:
                """Spread the steps over several scrapes (a warm tiny model does 16 in under
                one), outside the step's timing: rates need two scrapes that differ."""
                step_times[step] = time.time()
                time.sleep(SCRAPE_S / 2)

            try:
                trainer.fit(on_step=paced)
                # a time when the rate windows hold steps, and a scrape after the last one
                at = step_times[trainer.total_steps] + 2 * SCRAPE_S
                _wait_for(url, f'max(vidssl_train_step{{run="{run}"}})', trainer.total_steps)
                _wait_for(url, f'count(vidssl_stage_cached{{run="{run}"}})', 3)
                while time.time() < at + SCRAPE_S:
                    time.sleep(SCRAPE_S / 2)
                answered = _query_every_panel(url, at)
                _variables_list(url, run)
                _deleting_the_run_empties_the_pushgateway(gateway, url, run)
            finally:
                trainer.metrics.close()
    seconds = time.monotonic() - started
    print(f"\n{answered} panel queries answered; the test took {seconds:.1f}s")


def _query_every_panel(prometheus_url: str, at: float) -> int:
    """Every panel query at Unix time `at`: no error; a finite value unless it needs an
    exporter that is absent here."""
    answered = 0
    for board, title, expr in panel_queries():
        data = query(prometheus_url, grafana_expr(expr), at)
        if needs_absent_exporter(title):
            continue
        values = _values(data)
        assert values, f"{board} / {title}: no data for {expr}; {_targets(prometheus_url)}"
        assert any(math.isfinite(v) for v in values), f"{board} / {title}: {values} for {expr}"
        answered += 1
    return answered


def _targets(prometheus_url: str) -> list[tuple]:
    """How each scrape target fared, for a failure's message."""
    targets = json.loads(get(f"{prometheus_url}/api/v1/targets"))["data"]["activeTargets"]
    return [(t["scrapeUrl"], t["health"], t["lastScrape"], t["lastError"]) for t in targets]


def _variables_list(prometheus_url: str, run: str) -> None:
    """The experiment and run variables find their values (as Grafana asks for them)."""
    board = json.loads((REPO_ROOT / dashboards.DEFAULT_FOLDER / "stages.json").read_text())
    for variable in board["templating"]["list"][1:]:
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"])
        assert match, variable["query"]
        selector, label = grafana_expr(match.group(1)), match.group(2)
        params = urllib.parse.urlencode({"match[]": selector})
        body = json.loads(get(f"{prometheus_url}/api/v1/label/{label}/values?{params}"))
        assert {"experiment": "tiny", "run": run}[label] in body["data"], (label, body)


def _deleting_the_run_empties_the_pushgateway(gateway: str, prometheus_url: str, run: str):
    groups = [g["labels"] for g in metrics.gateway_groups(gateway) if g["labels"].get("run") == run]
    assert {g["stage"] for g in groups} == {"synth", "ingest", "clean", "train"}
    deleted = delete_run_metrics.python_func(
        experiment_name="tiny", run_id="", grace_seconds=0.0, stale_hours=0.0
    )
    assert deleted == len(groups)
    assert not [g for g in metrics.gateway_groups(gateway) if g["labels"].get("run") == run]
    time.sleep(2 * SCRAPE_S)  # scrapes without the groups: Prometheus keeps what it had
    expr = grafana_expr(dashboards._last("vidssl_stage_duration_seconds"))
    stages = {series["metric"]["stage"] for series in query(prometheus_url, expr)["result"]}
    assert stages == {"synth", "ingest", "clean"}


def test_deleting_a_run_leaves_other_runs_and_experiments(tmp_path, monkeypatch):
    monkeypatch.delenv(metrics.RUN_ID_ENV, raising=False)
    with pushgateway(tmp_path) as gateway:

        def push(experiment: str, run: str, stage: str) -> None:
            summary = metrics.StageSummary(experiment, stage, run, duration_seconds=1.0)
            assert metrics.push_stage_summary(summary, gateway)

        push("tiny", "old", "ingest")
        time.sleep(1.5)
        for experiment, run, stage in (
            ("tiny", "mine", "ingest"),
            ("tiny", "mine", "bench"),
            ("tiny", "other", "ingest"),
            ("other", "mine", "ingest"),
        ):
            push(experiment, run, stage)
        deleted = metrics.delete_run_groups(gateway, "tiny", "mine", stale_seconds=1.0)
        assert sorted((g["run"], g["stage"]) for g in deleted) == [
            ("mine", "bench"),
            ("mine", "ingest"),
            ("old", "ingest"),  # stale: pushed more than a second ago
        ]
        left = sorted(
            (g["labels"]["experiment"], g["labels"]["run"]) for g in metrics.gateway_groups(gateway)
        )
        assert left == [("other", "mine"), ("tiny", "other")]
    assert metrics.clean_up_run("tiny", "mine", gateway=gateway) == 0  # gone: only a warning
