"""The trainer on CPU: schedule, exact resume, a tiny run that learns, divergence stop, export."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from tests.conftest import build_experiment
from vidssl.config import Experiment, OptimizerConfig, TrainConfig
from vidssl.shards import decode_json, read_split
from vidssl.stages import clean, export, ingest, synth, train
from vidssl.store import open_store
from vidssl.train.embed import knn_accuracy
from vidssl.train.monitor import DivergenceGuard, TrainingDiverged, collapse_std
from vidssl.train.trainer import learning_rate


def _experiment(store_uri: str, **paths) -> Experiment:
    return build_experiment(store_uri, **paths)


def _clips(experiment: Experiment) -> str:
    raw = synth.raw_url(synth.run(experiment))
    return clean.run(experiment, ingest.run(experiment, source_url=raw).url).url


def test_warmup_then_cosine_over_the_epochs_trained():
    cfg = TrainConfig(
        optimizer=OptimizerConfig(base_lr=0.1, warmup_epochs=2), batch_size=512, epochs=5
    )
    peak = 0.2
    assert learning_rate(cfg, 0, 10) == pytest.approx(peak / 20)
    assert learning_rate(cfg, 19, 10) == pytest.approx(peak)
    assert learning_rate(cfg, 35, 10) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(cfg, 49, 10) == pytest.approx(
        peak * 0.5 * (1 + math.cos(math.pi * 29 / 30))
    )
    assert learning_rate(cfg, 49, 10) < 0.01 * peak  # it reaches ~0 where training stops


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    finals = []
    for name, interrupt in (("straight", None), ("resumed", 4)):
        experiment = _experiment(f"file://{tmp_path / name}")
        clips_url = _clips(experiment)
        if interrupt:
            stopped = train.run(experiment, clips_url, stop_after_step=interrupt)
            assert stopped.manifest is None
            assert train.published(experiment, clips_url) is None  # a checkpoint, no model
        output = train.run(experiment, clips_url)
        assert output.manifest.details["steps"] == 6
        looked_up = train.published(experiment, clips_url)
        assert looked_up.model_url == output.model_url and looked_up.url == output.url
        store = __import__("vidssl.store", fromlist=["open_store"]).open_store(
            f"file://{tmp_path / name}"
        )
        finals.append(
            torch.load(io.BytesIO(store.get(store.key_of(output.model_url))), weights_only=False)
        )
    for key, value in finals[0]["encoder"].items():
        assert torch.equal(value, finals[1]["encoder"][key]), key


def test_tiny_run_lowers_the_loss_and_reports_everything(tmp_path):
    experiment = _experiment(
        f"file://{tmp_path}",
        train__epochs=6,
        train__steps_per_epoch=5,
        train__optimizer={"base_lr": 1.0, "warmup_epochs": 1},
        train__checkpoint_every=100,
    )
    clips_url = _clips(experiment)
    output = train.run(experiment, clips_url)
    history = output.manifest.details["history"]
    assert len(history) == 6
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(0 <= h["knn_accuracy"] <= 1 for h in history)
    assert all(h["collapse_std"] > 0 for h in history)
    assert train.run(experiment, clips_url).cached


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    experiment = _experiment(
        f"file://{tmp_path}",
        train__optimizer={"base_lr": 1e9, "warmup_epochs": 1},
        train__epochs=3,
        train__steps_per_epoch=4,
        train__checkpoint_every=1,
    )
    with pytest.raises(TrainingDiverged, match="last good checkpoint is kept") as caught:
        train.run(experiment, _clips(experiment))
    assert "lower train.optimizer.base_lr" in str(caught.value)
    store = open_store(f"file://{tmp_path}")
    assert [i.key for i in store.list("datasets/tiny/train/") if i.key.endswith(".pt")]


def test_divergence_guard_and_collapse_monitor():
    guard = DivergenceGuard(factor=10)
    for _ in range(20):
        guard.check(1.0, 0)
    guard.check(9.0, 20)  # a rise within 10 x max(|median|, 1) is allowed
    with pytest.raises(TrainingDiverged, match="rose from a recent median of 1 to 50"):
        guard.check(50.0, 21)
    with pytest.raises(TrainingDiverged, match="nan"):
        DivergenceGuard(10).check(float("nan"), 0)
    assert collapse_std(torch.ones(16, 8)) == pytest.approx(0.0, abs=1e-6)
    healthy = collapse_std(torch.randn(4096, 64))
    assert healthy == pytest.approx(1 / math.sqrt(64), rel=0.05)


def test_knn_accuracy_by_hand():
    train_features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    queries = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    assert knn_accuracy(train_features, ["a", "a", "b"], queries, ["a", "b"], k=1) == 1.0
    assert knn_accuracy(train_features, ["a", "a", "b"], queries, ["a", "a"], k=1) == 0.5


def test_export_writes_normalised_fp16_embeddings_per_split(tmp_path):
    experiment = _experiment(f"file://{tmp_path}")
    clips_url = _clips(experiment)
    model = train.run(experiment, clips_url)
    store = open_store(f"file://{tmp_path}")
    clip_prefix = store.key_of(clips_url)
    clip_frames = {
        split: sum(decode_json(s)["num_frames"] for s in read_split(store, clip_prefix, split))
        for split in ("train", "val", "test")
    }
    for output in (
        export.run(experiment, clips_url, model_url=model.model_url),
        export.run(experiment, clips_url, baseline="random"),
    ):
        assert output.manifest.details["dimension"] == 512
        prefix = store.key_of(output.url)
        for split, frames in clip_frames.items():
            samples = list(read_split(store, prefix, split))
            assert len(samples) == frames
            for sample in samples[:5]:
                embedding = np.load(io.BytesIO(sample["emb.npy"]))
                assert embedding.dtype == np.float16 and embedding.shape == (512,)
                assert np.linalg.norm(embedding.astype(np.float32)) == pytest.approx(1.0, abs=2e-3)
                meta = decode_json(sample)
                assert meta["split"] == split and "crop_box" in meta["annotation"]
    with pytest.raises(ValueError, match="imagenet_weights"):
        export.run(experiment, clips_url, baseline="imagenet")


def test_two_processes_under_torchrun(tmp_path):
    """DDP on CPU (gloo): two processes train one model; rank 0 writes it."""
    import socket
    import subprocess
    import sys

    import yaml

    experiment = _experiment(f"file://{tmp_path / 'store'}", train__steps_per_epoch=2)
    clips_url = _clips(experiment)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(experiment.model_dump(mode="json")))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={port}", "--master_addr=127.0.0.1",
         "-m", "vidssl.cli", "train", str(path), "--clips", clips_url],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = train.run(experiment, clips_url)
    assert output.cached and output.manifest.details["steps"] == 4


def test_whole_frame_views_and_an_imagenet_weights_file(tmp_path, video_folder):
    """UCF101-style training on whole frames, and the ImageNet baseline from a local file."""
    from vidssl.train.backbones import build_backbone

    experiment = build_experiment(
        f"file://{tmp_path / 'store'}",
        {
            "name": "frames",
            "dataset": {
                "name": "frames",
                "source": {"kind": "folder", "root": str(video_folder)},
                "val_fraction": 0.0,
            },
            "ingest": {"fps": 5, "workers": 1, "frame_stride": None},
            "train": {"views_from": "frame", "batch_size": 2, "shuffle_buffer": 2},
        },
    )
    clips_url = ingest.run(experiment).url
    output = train.run(experiment, clips_url)
    assert output.manifest.details["steps"] == 6
    weights = tmp_path / "imagenet-like.pt"
    torch.save(build_backbone("resnet_small")[0].state_dict(), weights)
    with_weights = experiment.model_copy(
        update={"export": experiment.export.model_copy(update={"imagenet_weights": str(weights)})}
    )
    exported = export.run(with_weights, clips_url, baseline="imagenet")
    assert exported.manifest.details["baseline"] == "imagenet"
    store = open_store(f"file://{tmp_path / 'store'}")
    frames = [
        decode_json(s)["num_frames"] for s in read_split(store, store.key_of(clips_url), "train")
    ]
    assert exported.manifest.samples == sum(frames)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_backbone("resnet_small", str(tmp_path / "missing.pt"))
