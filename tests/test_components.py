"""Each KFP component's function, called directly (`component.python_func`, as
kubeflow/pipelines-components tests do) with a real experiment JSON, a `file://` store and real
KFP output artifacts: what it returns, and the metrics and files it writes. The pipelines
that wire them together run through kfp.local in tests/test_pipelines.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from kfp import dsl

from components.bench import bench
from components.clean import clean
from components.export import export
from components.ingest import ingest
from components.inspect import inspect
from components.synth import synth
from components.train import train
from vidssl.config import STORE_URI_ENV, Experiment, StoreConfig
from vidssl.shards import read_manifest
from vidssl.store import ObjectStore, open_store

from .conftest import build_experiment

#: A few optimiser steps of a tiny encoder on whole frames (the folder source has no boxes).
TINY_TRAIN = {
    "method": {"kind": "simsiam", "projection_dim": 64, "predictor_dim": 16},
    "sampler": {"kind": "pairs", "pairing": "nearby", "examples_per_clip": "all"},
    "optimizer": {"base_lr": 0.05, "warmup_epochs": 0},
    "views_from": "frame",
    "backbone": "resnet_small",
    "image_size": 32,
    "batch_size": 4,
    "epochs": 1,
    "steps_per_epoch": 2,
    "loader_workers": 0,
    "checkpoint_every": 500,
    "shuffle_buffer": 4,
}

#: The experiments here keep the default store.uri: the `store` fixture sets VIDSSL_STORE_URI.
DEFAULT_STORE = StoreConfig().uri


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    uri = f"file://{tmp_path / 'store'}"
    monkeypatch.setenv(STORE_URI_ENV, uri)
    return open_store(uri)


def _folder_experiment(root: Path) -> Experiment:
    return build_experiment(
        DEFAULT_STORE,
        {
            "name": "components",
            "dataset": {
                "name": "folder",
                "source": {"kind": "folder", "root": str(root)},
                "val_fraction": 0.3,
                "split_seed": 9,  # b.v2.avi in val (the queries), a.avi and c.avi in train
            },
            "ingest": {"fps": 5, "frame_stride": None, "resize_short": 32, "workers": 1},
            "shards": None,
            "train": TINY_TRAIN,
            "export": {"baselines": ["random"], "batch_size": 8},
        },
    )


def _synthetic_experiment() -> Experiment:
    return build_experiment(
        DEFAULT_STORE,
        {
            "name": "components-synthetic",
            "dataset": {
                "name": "synthetic",
                "source": {
                    "kind": "synthetic_objectron",
                    "videos_per_class": 2,
                    "frames": 20,
                    "width": 48,
                    "height": 64,
                    "categories": ["cup", "laptop"],
                },
                "val_fraction": 0.1,
            },
            "ingest": {"frame_stride": 5, "workers": 1},
            "shards": None,
            "train": None,
        },
    )


def _output(kind: type[dsl.Artifact], tmp_path: Path, name: str) -> dsl.Artifact:
    """An output artifact as the KFP executor hands one to a component: a local path to write."""
    folder = tmp_path / "outputs"
    folder.mkdir(exist_ok=True)
    return kind(name=name, uri=str(folder / name))


def _clips(experiment: Experiment) -> str:
    return ingest.python_func(config_json=experiment.model_dump_json(), source_url="", force=False)


def test_synth_returns_the_generated_objectron_layout(store):
    experiment = _synthetic_experiment()
    raw_url = synth.python_func(config_json=experiment.model_dump_json(), force=False)
    assert raw_url.startswith(store.url("datasets/synthetic/synth/")) and raw_url.endswith("/raw")
    files = [i.key for i in store.list(store.key_of(raw_url) + "/")]
    assert any(key.endswith("/index/cup_annotations_train") for key in files)


def test_ingest_returns_published_clip_shards(store, video_folder):
    experiment = _folder_experiment(video_folder)
    clips_url = _clips(experiment)
    assert clips_url.startswith(store.url("datasets/folder/ingest/"))
    manifest = read_manifest(store, store.key_of(clips_url))
    assert sum(entry.samples for entry in manifest.splits.values()) == 3


def test_synth_ingest_clean_chain_logs_what_cleaning_dropped(store, tmp_path):
    experiment = _synthetic_experiment()
    config_json = experiment.model_dump_json()
    raw_url = synth.python_func(config_json=config_json, force=False)
    clips_url = ingest.python_func(config_json=config_json, source_url=raw_url, force=False)
    metrics = _output(dsl.Metrics, tmp_path, "metrics")
    cleaned_url = clean.python_func(
        config_json=config_json, clips_url=clips_url, force=False, metrics=metrics
    )
    assert cleaned_url.startswith(store.url("datasets/synthetic/clean/"))
    logged = metrics.metadata
    assert {"frames_in", "frames_kept", "dropped_fraction"} <= set(logged)
    assert 0 < logged["frames_kept"] <= logged["frames_in"]
    assert logged["dropped_fraction"] == round(1 - logged["frames_kept"] / logged["frames_in"], 4)


def test_inspect_counts_the_clips_and_writes_the_data_report(store, video_folder, tmp_path):
    experiment = _folder_experiment(video_folder)
    metrics = _output(dsl.Metrics, tmp_path, "metrics")
    report = _output(dsl.Markdown, tmp_path, "report")
    report_url = inspect.python_func(
        config_json=experiment.model_dump_json(),
        clips_url=_clips(experiment),
        run_id="r1",
        metrics=metrics,
        report=report,
    )
    assert report_url == store.url("runs/components/r1/data.md")
    logged = metrics.metadata
    assert sum(logged[f"{split}_samples"] for split in ("train", "val")) == 3
    assert {"train_videos", "train_frames", "val_videos", "val_frames"} <= set(logged)
    assert logged["skipped_inputs"] == 2  # the empty and the garbage file
    text = Path(report.path).read_text()
    assert "| split | videos | samples | frames |" in text and "garbage.avi" in text


def test_train_returns_the_model_and_logs_the_last_epoch(store, video_folder, tmp_path):
    experiment = _folder_experiment(video_folder)
    metrics = _output(dsl.Metrics, tmp_path, "metrics")
    model_url = train.python_func(
        config_json=experiment.model_dump_json(),
        clips_url=_clips(experiment),
        force=False,
        metrics=metrics,
    )
    assert model_url.startswith(store.url("datasets/folder/train/"))
    assert model_url.endswith("/final.pt") and store.exists(store.key_of(model_url))
    logged = metrics.metadata
    assert {"loss", "collapse_std", "knn_accuracy", "samples_per_second"} <= set(logged)
    assert logged["steps"] == 2


def _exports(experiment: Experiment, clips_url: str, tmp_path: Path) -> dict[str, str]:
    """The trained model's and the random baseline's embeddings, each through the component."""
    config_json = experiment.model_dump_json()
    model_url = train.python_func(
        config_json=config_json,
        clips_url=clips_url,
        force=False,
        metrics=_output(dsl.Metrics, tmp_path, "train-metrics"),
    )
    return {
        "nearby (simsiam)": export.python_func(
            config_json=config_json, clips_url=clips_url, model_url=model_url, baseline="",
            force=False,
        ),
        "random embeddings": export.python_func(
            config_json=config_json, clips_url=clips_url, model_url="", baseline="random",
            force=False,
        ),
    }  # fmt: skip


def test_export_embeds_every_frame_for_the_model_and_the_baseline(store, video_folder, tmp_path):
    experiment = _folder_experiment(video_folder)
    clips_url = _clips(experiment)
    exports = _exports(experiment, clips_url, tmp_path)
    clips = read_manifest(store, store.key_of(clips_url))
    for url in exports.values():
        assert url.startswith(store.url("datasets/folder/export/"))
        embedded = read_manifest(store, store.key_of(url))
        assert set(embedded.splits) == set(clips.splits)
    trained, random = (read_manifest(store, store.key_of(url)) for url in exports.values())
    assert trained.details["model"].endswith("/final.pt")
    assert random.details["baseline"] == "random"


def test_bench_scores_each_export_of_the_mapping(store, video_folder, tmp_path):
    experiment = _folder_experiment(video_folder)
    clips_url = _clips(experiment)
    exports = _exports(experiment, clips_url, tmp_path)
    metrics = _output(dsl.Metrics, tmp_path, "metrics")
    report = _output(dsl.Markdown, tmp_path, "report")
    page = _output(dsl.HTML, tmp_path, "page")
    report_url = bench.python_func(
        config_json=experiment.model_dump_json(),
        exports=exports,
        clips_url=clips_url,
        run_id="r1",
        metrics=metrics,
        report=report,
        page=page,
    )
    assert report_url == store.url("runs/components/r1/report.md")
    logged = metrics.metadata
    # A folder has no boxes: video retrieval only, one metric per export and recall level.
    assert set(logged) == {f"{tag}_R@{k}" for tag in ("nearby", "random") for k in (1, 5, 10, 20)}
    text = Path(report.path).read_text()
    assert text == store.get_text("runs/components/r1/report.md")
    assert "nearby (simsiam)" in text and "random embeddings" in text
    assert "<html" in Path(page.path).read_text().lower()
