"""Training metrics served over HTTP and pushed to a real Pushgateway; stage summaries pushed
when a stage finishes, and a Pushgateway that is down only warned about."""

import logging
import re

import pytest

from vidssl import metrics
from vidssl.stages import synth, train
from vidssl.store import STORE_TRAFFIC

from .monitoring_services import free_port, get, one_torch_thread
from .monitoring_services import pushgateway as start_pushgateway
from .test_training import _clips, _experiment


@pytest.fixture
def pushgateway(tmp_path, monkeypatch):
    """A real Pushgateway that VIDSSL_PUSHGATEWAY names, for runs labelled `test-run`."""
    with start_pushgateway(tmp_path) as address:
        monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, address)
        monkeypatch.setenv(metrics.RUN_ID_ENV, "test-run")
        yield address


def test_metrics_are_served_and_pushed(tmp_path, monkeypatch, pushgateway):
    port = free_port()
    monkeypatch.setenv("VIDSSL_METRICS_ADDRESS", "127.0.0.1")
    experiment = _experiment(
        f"file://{tmp_path}", train__metrics_port=port, train__steps_per_epoch=10
    )
    with one_torch_thread():
        train.run(experiment, _clips(experiment))
    served = get(f"http://127.0.0.1:{port}/metrics")
    labels = re.search(r'vidssl_train_step(\{experiment="[^"]+",run="test-run"\})', served)[1]
    for name in (
        "loss",
        "lr",
        "samples_per_second",
        "collapse_std",
        "epoch",
        "step",
        "knn_accuracy",
    ):
        assert f"vidssl_train_{name}{labels} " in served
    assert f"vidssl_train_step{labels} 20.0" in served
    assert f"vidssl_train_step_seconds_count{labels} 20.0" in served
    assert f"vidssl_train_data_wait_seconds_count{labels} 20.0" in served
    written = re.search(rf"vidssl_store_written_bytes_total{re.escape(labels)} (\S+)", served)
    assert float(written[1]) > 0  # checkpoints and the model
    pushed = get(f"http://{pushgateway}/metrics")
    assert re.search(
        r'vidssl_train_step\{experiment="[^"]+",instance="",job="vidssl-train-tiny",'
        r'run="test-run",stage="train"\} 20\n',
        pushed,
    )


def test_each_loss_term_of_a_method_gets_its_own_gauge():
    from vidssl.train.telemetry import TrainMetrics

    port = free_port()
    metrics_ = TrainMetrics("vidssl-train-terms", port, experiment="terms", run="r1")
    try:
        metrics_.update_losses({"loss": 1.5, "frame": 1.0, "shot": 0.5})
        metrics_.update_losses({"loss": 1.25, "frame": 0.75, "shot": 0.5})
        served = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        metrics_.close()
    labels = '{experiment="terms",run="r1"}'
    assert f"vidssl_train_loss{labels} 1.25" in served
    assert f"vidssl_train_loss_frame{labels} 0.75" in served
    assert f"vidssl_train_loss_shot{labels} 0.5" in served


def test_store_traffic_counts_the_bytes_put_and_got(file_store):
    read, written = STORE_TRAFFIC.totals()
    file_store.put("a/b.bin", b"x" * 1000)
    assert file_store.get("a/b.bin") == b"x" * 1000
    with file_store.stream("a/b.bin") as handle:
        handle.read()
    assert STORE_TRAFFIC.totals() == (read + 2000, written + 1000)


def test_a_finished_stage_pushes_its_summary(tmp_path, pushgateway):
    experiment = _experiment(f"file://{tmp_path}")
    output = synth.run(experiment)
    pushed = get(f"http://{pushgateway}/metrics")
    group = (
        f'experiment="tiny",instance="",job="vidssl_stage",output="{output.manifest.digest}",'
        'run="test-run",stage="synth"'
    )
    assert f"vidssl_stage_samples_written{{{group}}} 0" in pushed  # synth writes files
    written = next(
        line for line in pushed.splitlines() if line.startswith("vidssl_stage_written_bytes{")
    )
    assert float(written.split()[-1]) > 10_000  # the generated videos and annotations
    assert f"vidssl_stage_cached{{{group}}} 0" in pushed
    synth.run(experiment)  # the finished output is reused: the summary says so
    assert f"vidssl_stage_cached{{{group}}} 1" in get(f"http://{pushgateway}/metrics")


def test_a_pushgateway_that_is_down_only_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, f"127.0.0.1:{free_port()}")  # nothing listens
    experiment = _experiment(f"file://{tmp_path}")
    with caplog.at_level(logging.WARNING, logger="vidssl.metrics"):
        output = synth.run(experiment)
    assert output.manifest.details["files"] > 0
    assert "stage summary not pushed to Pushgateway" in caplog.text


def test_run_label_prefers_the_pipeline_run(monkeypatch):
    monkeypatch.delenv(metrics.RUN_ID_ENV, raising=False)
    assert metrics.run_label() == metrics.ADHOC_RUN
    assert metrics.run_label("20260101-000000") == "20260101-000000"
    monkeypatch.setenv(metrics.RUN_ID_ENV, "kfp-run-uuid")
    assert metrics.run_label("20260101-000000") == "kfp-run-uuid"


def test_cleanup_component_ends_a_kfp_local_run_from_an_exit_handler(
    tmp_path, monkeypatch, pushgateway
):
    """The wiring the pipeline uses: `dsl.ExitHandler(delete_run_metrics(...))` around the
    stages. kfp.local 2.16 runs the exit task after the stages succeed (not after a failure)."""
    from kfp import dsl, local

    from components.metrics import delete_run_metrics

    @dsl.component
    def stage_that_pushed() -> str:
        return "done"

    @dsl.pipeline(name="cleanup-test")
    def pipeline(run_id: str = ""):
        cleanup = delete_run_metrics(
            experiment_name="tiny", run_id=run_id, grace_seconds=0.0, stale_hours=0.0
        )
        with dsl.ExitHandler(cleanup):
            stage_that_pushed()

    for run in ("test-run", "other-run"):
        summary = metrics.StageSummary("tiny", "ingest", run, duration_seconds=1.0)
        assert metrics.push_stage_summary(summary, pushgateway)
    monkeypatch.chdir(tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "out"))
    pipeline(run_id="ignored: VIDSSL_RUN_ID wins")
    runs = {group["labels"]["run"] for group in metrics.gateway_groups(pushgateway)}
    assert runs == {"other-run"}


def test_the_metrics_port_comes_from_the_config_else_the_cluster(monkeypatch):
    from vidssl.config import ConfigError
    from vidssl.train.telemetry import serving_port

    monkeypatch.delenv(metrics.METRICS_PORT_ENV, raising=False)
    assert serving_port(0) == 0
    monkeypatch.setenv(metrics.METRICS_PORT_ENV, "9108")
    assert serving_port(0) == 9108
    assert serving_port(8000) == 8000
    monkeypatch.setenv(metrics.METRICS_PORT_ENV, "nine")
    with pytest.raises(ConfigError, match="VIDSSL_METRICS_PORT='nine'"):
        serving_port(0)
