"""Training metrics: served over HTTP while training, and pushed to a real Pushgateway."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from vidssl.stages import train

from .test_training import _clips, _experiment


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.fixture
def pushgateway(tmp_path):
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "Debian's prometheus-pushgateway is needed: `make system-packages`"
    port = _free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    for _ in range(100):
        try:
            _get(f"http://{address}/metrics")
            break
        except OSError:
            time.sleep(0.1)
    yield address
    process.terminate()
    process.wait(timeout=10)


def test_metrics_are_served_and_pushed(tmp_path, monkeypatch, pushgateway):
    port = _free_port()
    monkeypatch.setenv("VIDSSL_PUSHGATEWAY", pushgateway)
    experiment = _experiment(
        f"file://{tmp_path}", train__metrics_port=port, train__steps_per_epoch=10
    )
    train.run(experiment, _clips(experiment))
    served = _get(f"http://127.0.0.1:{port}/metrics")
    for name in (
        "loss",
        "lr",
        "samples_per_second",
        "collapse_std",
        "epoch",
        "step",
        "knn_accuracy",
    ):
        assert f"vidssl_train_{name} " in served
    assert "vidssl_train_step 20.0" in served
    pushed = _get(f"http://{pushgateway}/metrics")
    assert 'vidssl_train_step{instance="",job="vidssl-train-tiny"} 20' in pushed


def test_each_loss_term_of_a_method_gets_its_own_gauge():
    from vidssl.train.monitor import TrainMetrics

    port = _free_port()
    metrics = TrainMetrics("vidssl-train-terms", port)
    metrics.update_losses({"loss": 1.5, "frame": 1.0, "shot": 0.5})
    metrics.update_losses({"loss": 1.25, "frame": 0.75, "shot": 0.5})
    served = _get(f"http://127.0.0.1:{port}/metrics")
    assert "vidssl_train_loss 1.25" in served
    assert "vidssl_train_loss_frame 0.75" in served
    assert "vidssl_train_loss_shot 0.5" in served
