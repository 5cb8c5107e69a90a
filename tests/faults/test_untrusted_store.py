"""Whatever is in the bucket is data, never code: crafted pickles in place of a model or a
checkpoint are refused and run nothing; manifest and index names cannot leave their folder;
the CLI names the culprit in one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from vidssl.config import OptimizerConfig, TrainConfig
from vidssl.shards import read_manifest, read_split, verify_output
from vidssl.stages.train import load_encoder
from vidssl.store import StoreError
from vidssl.store.tree import FileTree
from vidssl.train.checkpoint_io import UnsafeCheckpointError
from vidssl.train.methods import build_method
from vidssl.train.trainer import LATEST, Trainer

from ..conftest import write_video


class _RunsACommand:
    """Unpickling this runs `touch <marker>`: what a hostile final.pt would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _crafted(marker, **other) -> bytes:
    buffer = io.BytesIO()
    torch.save({"backbone": "resnet18", "encoder": _RunsACommand(str(marker)), **other}, buffer)
    return buffer.getvalue()


def test_the_crafted_file_is_live_when_unpickled(tmp_path):
    """The payload works (so the tests below can fail): plain unpickling runs the command."""
    marker = tmp_path / "ran"
    data = _crafted(marker)
    script = (
        "import io, sys, torch; torch.load(io.BytesIO(sys.stdin.buffer.read()), weights_only=False)"
    )
    subprocess.run([sys.executable, "-c", script], input=data, check=True, timeout=120)
    assert marker.exists()


def test_a_crafted_model_is_refused_and_runs_nothing(store, tmp_path):
    marker = tmp_path / "ran"
    store.put("models/final.pt", _crafted(marker))
    with pytest.raises(UnsafeCheckpointError, match=r"final\.pt: refused") as caught:
        load_encoder(store, store.url("models/final.pt"))
    assert "could run code" in str(caught.value)
    assert not marker.exists()


def test_a_crafted_checkpoint_is_refused_on_resume(file_store, tmp_path):
    marker = tmp_path / "ran"
    file_store.put("run/checkpoints/step-00000004.pt", _crafted(marker, step=4))
    file_store.put_text(
        f"run/{LATEST}", json.dumps({"step": 4, "key": "checkpoints/step-00000004.pt"})
    )
    cfg = TrainConfig(
        backbone="resnet18", epochs=2, optimizer=OptimizerConfig(warmup_epochs=1), batch_size=4
    )
    trainer = Trainer(build_method(cfg), cfg, file_store, "run", file_store.base_url, "c", 1)
    with pytest.raises(UnsafeCheckpointError, match=r"step-00000004\.pt: refused"):
        trainer.resume()
    assert not marker.exists()


def test_garbage_in_place_of_a_model_is_named(store):
    store.put("models/final.pt", b"not a torch file at all")
    with pytest.raises(UnsafeCheckpointError, match=r"final\.pt: not a readable torch file"):
        load_encoder(store, store.url("models/final.pt"))


def _manifest_naming(store, shard_name: str) -> None:
    store.put("outside/x.tar", b"secret")
    manifest = {
        "stage": "ingest", "stage_version": 2, "digest": "d", "dataset": "ds",
        "package_version": "0", "splits": {"train": {"shards": [
            {"name": shard_name, "samples": 1, "bytes": 6, "sha256": "0" * 64},
        ]}},
    }  # fmt: skip
    store.put_text("datasets/ds/ingest/d/manifest.json", json.dumps(manifest))


@pytest.mark.parametrize(
    "name", ["train/../../../../outside/x.tar", "/etc/passwd", "train/./x.tar", "a\\..\\b"]
)
def test_a_manifest_naming_shards_outside_its_output_is_refused(store, name):
    _manifest_naming(store, name)
    for read in (
        lambda: read_manifest(store, "datasets/ds/ingest/d"),
        lambda: list(read_split(store, "datasets/ds/ingest/d", "train")),
        lambda: verify_output(store, "datasets/ds/ingest/d"),
    ):
        with pytest.raises(StoreError, match="not a plain relative path"):
            read()


def test_index_files_cannot_name_files_outside_the_dataset(tmp_path):
    (tmp_path / "secret").write_text("x")
    tree = FileTree(str(tmp_path / "dataset"))
    for relative in ("../secret", "/etc/passwd", "a/../../secret"):
        with pytest.raises(StoreError, match="would leave the dataset's folder"):
            tree.read_bytes(relative)


def _vidssl(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vidssl.cli", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )  # fmt: skip


def test_cli_export_of_a_crafted_model_is_one_line_and_runs_nothing(tmp_path, experiment_dir):
    for name in ("a", "b"):
        write_video(tmp_path / "videos" / "walk" / f"{name}.avi", frames=12)
    (experiment_dir / "untrusted.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "untrusted",
                "dataset": {
                    "name": "gen",
                    "source": {"kind": "folder", "root": str(tmp_path / "videos")},
                },
                "ingest": {"workers": 1, "fps": 5},
            }
        )
    )
    env = {**os.environ, "VIDSSL_STORE_URI": f"file://{tmp_path / 'store'}"}
    ingested = _vidssl("ingest", "untrusted", env=env, cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr
    marker = tmp_path / "ran"
    (tmp_path / "store" / "models").mkdir()
    (tmp_path / "store" / "models" / "final.pt").write_bytes(_crafted(marker))
    model_url = f"file://{tmp_path / 'store'}/models/final.pt"
    args = ("export", "untrusted", "--clips", ingested.stdout.strip(), "--model", model_url)
    result = _vidssl(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "final.pt: refused" in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    debug = _vidssl("--debug", *args, env=env, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert not marker.exists()
