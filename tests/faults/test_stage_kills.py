"""kill -9 of the clean, train and export stages at random points (the CLI, as a KFP task runs
it, on the real SeaweedFS server), then a re-run: it finishes, the output verifies, training
ends with the weights of an uninterrupted run, and nothing but the output is left."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest
import torch
import yaml

from vidssl.shards import read_manifest
from vidssl.stages import ingest, synth
from vidssl.train.checkpoint_io import load_state

from ..conftest import build_experiment
from .conftest import assert_only_the_output_is_left, forget_output, kill, shard_digests

ROUNDS = int(os.environ.get("VIDSSL_FAULT_ROUNDS", "6"))
TRAIN = {"train__epochs": 3, "train__steps_per_epoch": 3, "train__checkpoint_every": 1}


@pytest.fixture
def tiny(s3_store, experiment_dir, monkeypatch):
    """The tiny synthetic experiment as a file the CLI reads, with its ingested clips."""
    experiment = build_experiment(s3_store.base_url, **TRAIN)
    (experiment_dir / "tiny.yaml").write_text(yaml.safe_dump(experiment.model_dump(mode="json")))
    monkeypatch.delenv("VIDSSL_STORE_URI", raising=False)
    raw = synth.raw_url(synth.run(experiment))
    return experiment, ingest.run(experiment, source_url=raw).url


def _vidssl(*args: str, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vidssl.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
    )  # fmt: skip


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return out.strip()


def _output_of(printed: str) -> str:
    """The output URL from what a stage printed (synth prints its raw folder inside it)."""
    return printed.split("/attempts/")[0]


def _content(store, url: str) -> list:
    """What an output holds, independent of which attempt wrote it: its shards' sha256s, or
    for synth (raw files, no shards) each file's name and size."""
    manifest = read_manifest(store, store.key_of(url))
    if manifest.splits:
        return shard_digests(store, url)
    raw = f"{store.key_of(url)}/{manifest.details['raw']}/"
    return [(info.key.removeprefix(raw), info.size) for info in store.list(raw)]


def _timed(args: tuple[str, ...], cwd) -> tuple[str, float]:
    started = time.monotonic()
    return _finish(_vidssl(*args, cwd=cwd)), time.monotonic() - started


@pytest.mark.parametrize("stage", ["synth", "clean", "export"])
def test_a_data_stage_killed_anywhere_reruns_to_the_same_output(
    stage, tiny, s3_store, tmp_path, tally
):
    _, clips_url = tiny
    args = {
        "synth": ("synth", "tiny", "--force"),  # the fixture's synth output is in place
        "clean": ("clean", "tiny", "--clips", clips_url),
        "export": ("export", "tiny", "--clips", clips_url, "--baseline", "random"),
    }[stage]
    printed, seconds = _timed(args, tmp_path)
    url = _output_of(printed)
    reference = _content(s3_store, url)
    rng = random.Random(stage)
    killed = 0
    for _ in range(ROUNDS):
        forget_output(s3_store, url)
        victim = _vidssl(*args, cwd=tmp_path)
        time.sleep(rng.uniform(0.5, seconds))
        was_running = kill(victim)
        killed += was_running
        assert _output_of(_finish(_vidssl(*args, cwd=tmp_path))) == url
        assert _content(s3_store, url) == reference
        assert_only_the_output_is_left(s3_store, url)
        if was_running:
            tally(True)
    assert killed >= 1


def _encoder(store, manifest) -> dict[str, torch.Tensor]:
    model_url = manifest.details["model"]
    return load_state(store.get(store.key_of(model_url)), model_url)["encoder"]


def _checkpoint_steps(store, train_prefix: str) -> list[int]:
    return [
        int(info.key.rsplit("step-", 1)[1].removesuffix(".pt"))
        for info in store.list(train_prefix + "/")
        if "/checkpoints/step-" in info.key
    ]


def test_training_killed_after_a_random_step_resumes_to_the_same_weights(
    tiny, s3_store, tmp_path, tally
):
    _, ingested = tiny
    clips_url = _finish(_vidssl("clean", "tiny", "--clips", ingested, cwd=tmp_path))
    args = ("train", "tiny", "--clips", clips_url)
    model_url = _finish(_vidssl(*args, cwd=tmp_path))
    train_url = model_url.split("/attempts/")[0]
    prefix = s3_store.key_of(train_url)
    reference = _encoder(s3_store, read_manifest(s3_store, prefix))
    total = TRAIN["train__epochs"] * TRAIN["train__steps_per_epoch"]
    rng = random.Random(7)
    killed = 0
    for _ in range(max(2, ROUNDS // 2)):
        forget_output(s3_store, train_url)
        kill_after = rng.randrange(1, total)
        victim = _vidssl(*args, cwd=tmp_path)
        while victim.poll() is None and max(_checkpoint_steps(s3_store, prefix), default=0) < (
            kill_after
        ):
            time.sleep(0.05)
        was_running = kill(victim)
        killed += was_running
        _finish(_vidssl(*args, cwd=tmp_path))
        resumed = _encoder(s3_store, read_manifest(s3_store, prefix))
        for key, value in reference.items():
            assert torch.equal(value, resumed[key]), key
        assert_only_the_output_is_left(s3_store, train_url)
        if was_running:
            tally(True)
    assert killed >= 1
