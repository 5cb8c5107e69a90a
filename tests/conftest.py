"""Fixtures: a real SeaweedFS S3 server for the session, fresh buckets, generated videos."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from minio.deleteobjects import DeleteObject

from vidssl.store import ObjectStore, open_store, seaweed
from vidssl.store.s3 import S3Store

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENCV_SAMPLES = REPO_ROOT / ".data" / "opencv-samples"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seaweed.LocalS3]:
    """SeaweedFS `weed mini` on free loopback ports, its environment exported for the session."""
    state = tmp_path_factory.mktemp("seaweedfs")
    server = seaweed.start(state, bucket="vidssl")
    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())
    yield server
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    seaweed.stop(state)


@pytest.fixture
def s3_bucket(s3_server: seaweed.LocalS3) -> Iterator[str]:
    """A fresh bucket, removed with its objects afterwards. SeaweedFS gives each bucket its own
    volume and `weed mini` has a fixed number of them (free disk / volume size: 40 on a 45 GiB
    disk), so a suite that left its buckets behind ran out and every later write failed with
    "No writable volumes and no free volumes left"."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    store = S3Store(bucket, s3_server.endpoint, s3_server.access_key, s3_server.secret_key)
    store.ensure_bucket()
    yield bucket
    remove_bucket(store)


def remove_bucket(store: S3Store) -> None:
    """Delete every object of the bucket, then the bucket (which frees its volume)."""
    client = store.client
    try:
        names = (
            DeleteObject(item.object_name)
            for item in client.list_objects(store.bucket, recursive=True)
        )
        failures = list(client.remove_objects(store.bucket, names))
        if failures:
            raise RuntimeError(f"{len(failures)} objects not deleted, first: {failures[0]}")
        client.remove_bucket(store.bucket)
    except Exception as exc:  # a test that left the server stopped must not error here
        warnings.warn(f"bucket {store.bucket!r} left behind: {exc}", stacklevel=1)


@pytest.fixture
def s3_store(s3_bucket: str) -> ObjectStore:
    return open_store(f"s3://{s3_bucket}")


@pytest.fixture
def file_store(tmp_path: Path) -> ObjectStore:
    return open_store(f"file://{tmp_path / 'store'}")


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each test that takes `store` runs on both backends."""
    return request.getfixturevalue(f"{request.param}_store")


def write_video(
    path: Path, frames: int, size: tuple[int, int] = (96, 64), fps: float = 25.0
) -> Path:
    """A real MJPG AVI of a square moving across a gradient (decodable by OpenCV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    gradient = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    for t in range(frames):
        image = cv2.merge([gradient, np.full_like(gradient, (t * 7) % 256), gradient[::-1]])
        x = (t * 3) % (width - 16)
        cv2.rectangle(image, (x, 20), (x + 15, 35), (255, 255, 255), -1)
        writer.write(image)
    writer.release()
    return path


@pytest.fixture
def video_folder(tmp_path: Path) -> Path:
    """Two classes of generated videos, plus one empty and one garbage file to be skipped."""
    root = tmp_path / "videos"
    write_video(root / "walking" / "a.avi", frames=50)
    write_video(root / "walking" / "b.v2.avi", frames=30)
    write_video(root / "running" / "c.avi", frames=40, fps=10)
    (root / "running" / "empty.mp4").write_bytes(b"")
    (root / "running" / "garbage.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    return root


@pytest.fixture
def experiment_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "experiments"
    directory.mkdir()
    monkeypatch.setenv("VIDSSL_EXPERIMENTS_DIR", str(directory))
    return directory


#: The experiment tests start from (`make_experiment`): tiny synthetic Objectron-format data and a
#: training run of a few steps of SimSiam on a small ResNet at 32 px.
TINY_EXPERIMENT = {
    "name": "tiny",
    "dataset": {
        "name": "tiny",
        "source": {
            "kind": "synthetic_objectron",
            "videos_per_class": 4,
            "frames": 30,
            "width": 64,
            "height": 80,
            "categories": ["cup", "laptop", "shoe"],
        },
        "val_fraction": 0.4,
    },
    "ingest": {"frame_stride": 3, "workers": 1},
    "shards": {"max_samples": 4},
    "train": {
        "method": {"kind": "simsiam", "projection_dim": 64, "predictor_dim": 16},
        # One random pair per clip visit: with an 8-example buffer, `all` would fill the tiny
        # batches with one or two videos' pairs (tests/test_samplers.py covers `all`).
        "sampler": {"kind": "pairs", "pairing": "nearby", "examples_per_clip": 1},
        "optimizer": {"base_lr": 0.5, "warmup_epochs": 1},
        "backbone": "resnet_small",
        "image_size": 32,
        "batch_size": 8,
        "epochs": 2,
        "steps_per_epoch": 3,
        "loader_workers": 0,
        "checkpoint_every": 2,
        "shuffle_buffer": 8,
    },
}


def build_experiment(store_uri: str, settings: dict | None = None, **paths: object):
    """TINY_EXPERIMENT on `store_uri`, merged with `settings` (nested, as in an experiment file:
    a mapping with another `kind` replaces the base's) and then `paths` (`train__epochs=3` sets
    train.epochs). `settings={"train": None}` drops a section."""
    from vidssl.config import merge_settings, parse_experiment

    raw = merge_settings(TINY_EXPERIMENT, {"store": {"uri": store_uri}, **(settings or {})})
    for path, value in paths.items():
        *parents, leaf = path.split("__")
        node = raw
        for part in parents:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[leaf] = value
    return parse_experiment({k: v for k, v in raw.items() if v is not None}, source="test")


@pytest.fixture
def make_experiment(tmp_path: Path):
    """The one factory tests build experiments with: `make_experiment(settings, **paths)` on a
    fresh `file://` store under tmp_path (`store_uri=` for another, e.g. the S3 fixture's)."""

    def make(settings: dict | None = None, store_uri: str | None = None, **paths: object):
        return build_experiment(store_uri or f"file://{tmp_path / 'store'}", settings, **paths)

    return make
