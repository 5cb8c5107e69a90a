"""KFP: the smoke pipeline compiles to a package kfp can load, carrying the cluster settings,
and runs end to end through kfp.local against the real S3 server."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from kfp import components

from pipelines import run as pipeline_runner
from pipelines.run import compile_experiment
from vidssl.config import Experiment

from .conftest import REPO_ROOT


def _experiment(root) -> Experiment:
    return Experiment.model_validate(
        {
            "name": "smoke-test",
            "pipeline": "ingest",
            "dataset": {
                "name": "gen",
                "source": {"kind": "folder", "root": str(root)},
                "val_fraction": 0.5,
            },
            "ingest": {"fps": 5, "resize_short": 32, "workers": 1},
            "cluster": {
                "s3_secret": "my-s3",
                "resources": {"ingest": {"cpu": "3", "memory": "5Gi", "gpu": 1}},
            },
        }
    )


def test_compiled_pipeline_loads_and_carries_cluster_settings(tmp_path, video_folder):
    package = compile_experiment(_experiment(video_folder), tmp_path)
    loaded = components.load_component_from_file(str(package))
    assert loaded.name == "vidssl-smoke-test"
    documents = list(yaml.safe_load_all(package.read_text()))
    spec, platform = documents
    executors = spec["deploymentSpec"]["executors"]
    ingest_container = executors["exec-ingest"]["container"]
    assert ingest_container["resources"]["cpuLimit"] == 3.0
    assert ingest_container["resources"]["accelerator"]["resourceCount"] == "1"
    assert executors["exec-inspect"]["container"]["resources"]["cpuLimit"] == 2.0
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-ingest"]
    secret = secrets["secretAsEnv"][0]
    assert secret["secretName"] == "my-s3"
    assert {m["envVar"] for m in secret["keyToEnv"]} == {
        "VIDSSL_S3_ENDPOINT",
        "VIDSSL_S3_ACCESS_KEY",
        "VIDSSL_S3_SECRET_KEY",
    }
    assert "VIDSSL_S3_SECRET_KEY=" not in package.read_text()


def test_component_image_comes_from_one_setting(tmp_path, video_folder, experiment_dir):
    (experiment_dir / "img.yaml").write_text(
        yaml.safe_dump({**_experiment(video_folder).model_dump(mode="json"), "name": "img"})
    )
    env = {**os.environ, "VIDSSL_IMAGE": "registry.example/other:1"}
    subprocess.run(
        [sys.executable, "-m", "pipelines.run", "compile", "img"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
        capture_output=True,
    )
    package = tmp_path / "build" / "pipelines" / "img.yaml"
    executors = next(yaml.safe_load_all(package.read_text()))["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"registry.example/other:1"}


def test_kfp_runner_needs_a_host(monkeypatch, capsys):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert pipeline_runner.main(["run", "smoke", "--runner", "kfp"]) == 2
    assert "KFP_HOST" in capsys.readouterr().err


def test_smoke_pipeline_runs_locally_against_s3(s3_store, video_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSSL_STORE_URI", s3_store.base_url)
    monkeypatch.chdir(tmp_path)  # kfp.local writes its outputs under ./build
    experiment = _experiment(video_folder)
    report_url = pipeline_runner.run_local(experiment, run_id="r1", force=False)
    assert report_url == s3_store.url("runs/smoke-test/r1/report.md")
    report = s3_store.get_text("runs/smoke-test/r1/report.md")
    assert "| split | videos | samples | frames |" in report
    assert "garbage.avi" in report  # the skipped input is reported
    counts = yaml.safe_load(s3_store.get_text("runs/smoke-test/r1/inspect.json"))
    assert sum(split["samples"] for split in counts["splits"].values()) == 3
