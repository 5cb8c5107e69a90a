"""Stage runs killed at random points and run side by side, as processes on the real SeaweedFS
server: every round ends with one complete, verified output whose shards are byte for byte
those of an undisturbed run, and nothing of a live run is ever removed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest
import yaml

from ..conftest import write_video
from .conftest import assert_only_the_output_is_left, forget_output, kill, shard_digests

#: Rounds per test; raise it to hammer harder (the README's table quotes the default).
ROUNDS = int(os.environ.get("VIDSSL_FAULT_ROUNDS", "6"))


@pytest.fixture
def videos(tmp_path):
    root = tmp_path / "videos"
    for i in range(6):
        write_video(root / ("walk" if i % 2 else "run") / f"v{i}.avi", frames=48)
    return root


def _experiment(experiment_dir, videos, bucket: str, quality: int) -> str:
    """An experiment whose output differs per round (its JPEG quality), so none is cached."""
    name = f"conc{quality}"
    (experiment_dir / f"{name}.yaml").write_text(
        yaml.safe_dump(
            {
                "name": name,
                "store": {"uri": f"s3://{bucket}"},
                "dataset": {"name": "gen", "source": {"kind": "folder", "root": str(videos)}},
                "ingest": {"workers": 1, "clip_frames": 4, "jpeg_quality": quality},
                "shards": {"max_samples": 3},
            }
        )
    )
    return name


def _start(name: str, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vidssl.cli", "ingest", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "VIDSSL_STORE_URI": ""},
    )


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out.strip(), err


def _reference(name: str, cwd) -> tuple[str, float]:
    started = time.monotonic()
    code, url, err = _finish(_start(name, cwd))
    assert code == 0, err
    return url, time.monotonic() - started


def test_kill_minus_nine_at_a_random_point_then_rerun(
    s3_store, experiment_dir, videos, tmp_path, tally
):
    name = _experiment(experiment_dir, videos, s3_store.bucket, 90)
    url, seconds = _reference(name, tmp_path)
    reference = shard_digests(s3_store, url)
    rng = random.Random(0)
    killed = 0
    for _ in range(ROUNDS):
        forget_output(s3_store, url)
        victim = _start(name, tmp_path)
        time.sleep(rng.uniform(0.3, seconds))  # from start-up to the last shard and manifest
        was_running = kill(victim)
        killed += was_running
        code, rerun_url, err = _finish(_start(name, tmp_path))
        assert code == 0 and rerun_url == url, err
        assert shard_digests(s3_store, url) == reference  # byte for byte
        assert_only_the_output_is_left(s3_store, url)
        if was_running:
            tally(True)
    assert killed >= ROUNDS // 2  # most kills landed while the stage ran


def test_two_identical_runs_side_by_side_one_killed_at_random(
    s3_store, experiment_dir, videos, tmp_path, tally
):
    name = _experiment(experiment_dir, videos, s3_store.bucket, 50)
    url, _ = _reference(name, tmp_path)
    reference = shard_digests(s3_store, url)
    rng = random.Random(1)
    for round_ in range(ROUNDS):
        forget_output(s3_store, url)
        pair = [_start(name, tmp_path), _start(name, tmp_path)]
        killed = False
        if round_ % 2:  # even rounds: both run to the end; odd: one dies on the way
            time.sleep(rng.uniform(0.3, 4.0))
            killed = kill(rng.choice(pair))
        results = [_finish(process) for process in pair]
        assert sum(code == 0 for code, _, _ in results) == (1 if killed else 2), results
        assert {out for code, out, _ in results if code == 0} == {url}
        assert shard_digests(s3_store, url) == reference
        assert_only_the_output_is_left(s3_store, url)
        tally(True)
