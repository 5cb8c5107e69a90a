"""KFP: the one pipeline compiles to a package kfp can load, carrying the cluster settings, with
the tasks its experiment's stage graph asks for, and runs end to end through kfp.local against
the real S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from kfp import components

from pipelines import run as pipeline_runner
from pipelines.run import compile_experiment
from vidssl.config import Experiment, StoreConfig

from .conftest import REPO_ROOT, build_experiment

#: The experiments here keep the default store.uri: the tests set VIDSSL_STORE_URI.
DEFAULT_STORE = StoreConfig().uri


def _experiment(root) -> Experiment:
    """Ingest only (no train section), with the cluster's settings."""
    return build_experiment(
        DEFAULT_STORE,
        {
            "name": "smoke-test",
            "dataset": {
                "name": "gen",
                "source": {"kind": "folder", "root": str(root)},
                "val_fraction": 0.5,
            },
            "ingest": {"fps": 5, "frame_stride": None, "resize_short": 32, "workers": 1},
            "shards": None,
            "train": None,
            "cluster": {
                "s3_secret": "my-s3",
                "ingest": {"cpu": "3", "memory": "5Gi", "gpu": 1},
            },
        },
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
    images = {name: e["container"]["image"] for name, e in executors.items()}
    assert images.pop("exec-ingest") == "registry.example/other:1-gpu"  # ingest: {gpu: 1}
    assert set(images.values()) == {"registry.example/other:1"}


def test_kfp_runner_needs_a_host(monkeypatch, capsys):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert pipeline_runner.main(["run", "smoke", "--runner", "kfp"]) == 2
    assert "KFP_HOST" in capsys.readouterr().err


def test_smoke_pipeline_runs_locally_against_s3(s3_store, video_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSSL_STORE_URI", s3_store.base_url)
    monkeypatch.chdir(tmp_path)  # kfp.local writes its outputs under ./build
    experiment = _experiment(video_folder)
    report_url = pipeline_runner.run_local(experiment, run_id="r1", force=False)
    assert report_url == s3_store.url("runs/smoke-test/r1/data.md")
    report = s3_store.get_text("runs/smoke-test/r1/data.md")
    assert "| split | videos | samples | frames |" in report
    assert "garbage.avi" in report  # the skipped input is reported
    counts = yaml.safe_load(s3_store.get_text("runs/smoke-test/r1/inspect.json"))
    assert sum(split["samples"] for split in counts["splits"].values()) == 3


def test_training_pipeline_runs_synth_to_bench_locally(
    s3_store, tmp_path, monkeypatch, make_experiment
):
    monkeypatch.setenv("VIDSSL_STORE_URI", s3_store.base_url)
    monkeypatch.chdir(tmp_path)
    experiment = make_experiment(
        {
            "name": "siampose-test",
            "dataset": {
                "name": "synthetic",
                "source": {
                    "kind": "synthetic_objectron",
                    "videos_per_class": 2,
                    "frames": 20,
                    "width": 64,
                    "height": 80,
                    "categories": ["bike", "cup", "laptop"],
                },
                "val_fraction": 0.1,
            },
            "ingest": {"frame_stride": 5, "workers": 1},
            "shards": None,
            "train": {
                "method": {"kind": "simsiam", "projection_dim": 32, "predictor_dim": 8},
                "sampler": {"kind": "pairs", "pairing": "nearby", "examples_per_clip": "all"},
                "optimizer": {"base_lr": 0.05, "warmup_epochs": 1},
                "backbone": "resnet_small",
                "image_size": 32,
                "batch_size": 4,
                "epochs": 2,
                "steps_per_epoch": 2,
                "loader_workers": 0,
                "checkpoint_every": 500,
                "shuffle_buffer": 4,
            },
        },
        store_uri=DEFAULT_STORE,
    )
    report_url = pipeline_runner.run_local(experiment, run_id="r2", force=False)
    assert report_url == s3_store.url("runs/siampose-test/r2/report.md")
    report = s3_store.get_text(s3_store.key_of(report_url))
    assert "| embeddings | 3D mAP | IoU>0.5 pooled | Objectron AP@0.5 |" in report
    assert "| random in-category fit (no embeddings) |" in report
    assert "| random embeddings |" in report and "| nearby (simsiam) |" in report
    # The paper's rows: only this run's configuration (SimSiam, nearby, full) and the randoms.
    assert "| SimSiam, nearby pairs, full (Table 5) | 0.66 | 0.71 | 0.945 |" in report
    assert "lc_px" not in report and "same pairs" not in report
    assert "| random in-category fit (Tables 1-2) | 0.25 |  |  |" in report
    data = s3_store.get_text("runs/siampose-test/r2/data.md")
    assert "datasets/synthetic/clean/" in data and "Cleaning kept" in data
    metrics = yaml.safe_load(s3_store.get_text("runs/siampose-test/r2/metrics.json"))
    assert set(metrics["models"]) == {"nearby (simsiam)", "random embeddings"}
    page = s3_store.get_text("runs/siampose-test/r2/report.html")
    assert page.count("<img") == len(metrics["figures"]) >= 3 and "<table>" in page
    assert s3_store.exists("runs/siampose-test/r2/plots/precision-recall.png")
    plots = [i.key.rsplit("/", 1)[1] for i in s3_store.list("runs/siampose-test/r2/plots/")]
    assert sum(name.startswith("fitted-boxes-") for name in plots) == 2  # trained and random
    assert sum(name.startswith("neighbours-") for name in plots) == 2
    synth_outputs = [i.key for i in s3_store.list("datasets/synthetic/synth/")]
    assert any(key.endswith("/raw/index/cup_annotations_train") for key in synth_outputs)
    assert any(key.endswith("/manifest.json") for key in synth_outputs)
    assert any(i.key.endswith("/final.pt") for i in s3_store.list("datasets/synthetic/train/"))
    exports = {
        i.key.split("/")[3]
        for i in s3_store.list("datasets/synthetic/export/")
        if i.key.endswith("manifest.json")
    }
    assert len(exports) == 2  # the trained encoder and the random baseline
    # The bench got both exports through its one mapping, and logs their KFP metrics.
    (bench_output,) = tmp_path.glob("build/local_outputs/vidssl-siampose-test-*/bench")
    executor = json.loads((bench_output / "executor_output.json").read_text())
    logged = executor["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert set(logged) == {
        f"{tag}_{name}"
        for tag in ("nearby", "random")
        for name in ("3d_map", "iou_over_0.5_pooled", "reid_map", "category_accuracy")
    }


def test_cli_synth_objectron_writes_the_layout(tmp_path):
    out = tmp_path / "synthetic"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidssl.cli",
            "synth-objectron",
            "--out",
            str(out),
            "--videos-per-class",
            "1",
            "--seed",
            "2",
            "--frames",
            "6",
            "--width",
            "48",
            "--height",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "index" / "shoe_annotations_train").exists() or (
        out / "index" / "shoe_annotations_test"
    ).exists()
    assert len(list((out / "annotations").rglob("*.pbdata"))) == 9


def test_every_shipped_experiment_compiles(tmp_path):
    from pathlib import Path

    from vidssl.config import load_experiment

    for path in sorted(Path(REPO_ROOT, "pipelines", "experiments").glob("*.yaml")):
        package = compile_experiment(load_experiment(str(path)), tmp_path)
        assert (
            components.load_component_from_file(str(package)).name
            == f"vidssl-{path.stem.replace('_', '-')}"
        )


def _compiled_tasks(name: str, tmp_path) -> dict[str, dict]:
    """The compiled pipeline's stage tasks of a shipped experiment, by display name."""
    from vidssl.config import load_experiment

    package = compile_experiment(
        load_experiment(str(REPO_ROOT / "pipelines" / "experiments" / f"{name}.yaml")), tmp_path
    )
    spec = next(yaml.safe_load_all(package.read_text()))
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "delete-run-metrics"}  # the stages run in the handler
    handler = spec["components"][root["exit-handler-1"]["componentRef"]["name"]]
    tasks = handler["dag"]["tasks"]
    return {task["taskInfo"]["name"]: {"key": key, **task} for key, task in tasks.items()}


def test_training_experiment_compiles_to_the_whole_graph(tmp_path):
    tasks = _compiled_tasks("siampose_synthetic", tmp_path)
    assert set(tasks) == {
        "synth", "ingest", "clean", "inspect", "train", "export", "export-random", "bench",
    }  # fmt: skip
    bench = tasks["bench"]
    # The bench reads one mapping, label -> embeddings URL, filled from the export tasks.
    exports = bench["inputs"]["parameters"]["exports"]["runtimeValue"]["constant"]
    assert set(exports) == {"nearby (ntxent)", "random embeddings"}
    assert set(bench["dependentTasks"]) >= {tasks["export"]["key"], tasks["export-random"]["key"]}
    assert tasks["ingest"]["dependentTasks"] == [tasks["synth"]["key"]]
    assert tasks["train"]["dependentTasks"] == [tasks["clean"]["key"]]


def test_experiment_without_training_compiles_to_its_data_stages(tmp_path):
    assert set(_compiled_tasks("smoke", tmp_path)) == {"ingest", "inspect"}
    assert set(_compiled_tasks("objectron", tmp_path)) == {"ingest", "clean", "inspect"}


def test_stage_graph_comes_from_the_source_and_the_train_section():
    from vidssl.config import load_experiment
    from vidssl.stages.graph import ExportPlan, stage_graph

    experiments = REPO_ROOT / "pipelines" / "experiments"
    synthetic = stage_graph(load_experiment(str(experiments / "siampose_synthetic.yaml")))
    assert synthetic.data_stages == ("synth", "ingest", "clean") and synthetic.trains
    assert synthetic.exports == (
        ExportPlan("nearby (ntxent)"),
        ExportPlan("random embeddings", "random"),
    )
    assert [p.task_name for p in synthetic.exports] == ["export", "export-random"]
    tcn = stage_graph(load_experiment(str(experiments / "siampose_objectron_tcn.yaml")))
    assert tcn.data_stages == ("ingest", "clean") and tcn.exports[0].label == "triplets (tcn)"
    ucf = stage_graph(load_experiment(str(experiments / "ucf101.yaml")))
    assert ucf.data_stages == ("ingest",) and not ucf.trains and ucf.exports == ()


def test_prepared_clips_runs_the_data_stages_in_process(tmp_path, monkeypatch, make_experiment):
    from vidssl.stages.prepare import prepared_clips
    from vidssl.store import open_store

    store = open_store(f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("VIDSSL_STORE_URI", store.base_url)
    source = {
        "kind": "synthetic_objectron",
        "videos_per_class": 2,
        "frames": 20,
        "width": 48,
        "height": 64,
        "categories": ["cup", "laptop"],
    }
    experiment = make_experiment(
        {
            "name": "prepared",
            "dataset": {"name": "synthetic", "source": source, "val_fraction": 0.1},
            "ingest": {"frame_stride": 5, "workers": 1},
            "shards": None,
            "train": None,
        },
        store_uri=DEFAULT_STORE,
    )
    clips_url = prepared_clips(experiment)  # synth -> ingest -> clean
    assert clips_url.startswith(store.url("datasets/synthetic/clean/"))
    for stage in ("synth", "ingest"):
        assert any(
            i.key.endswith("/manifest.json") for i in store.list(f"datasets/synthetic/{stage}/")
        )
