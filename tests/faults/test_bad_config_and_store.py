"""Through the CLI, as a user meets them: bad experiment files (tests/faults/corpus/configs),
truncated and bit-flipped shards, an unreachable store, wrong credentials. Each gives one
`error:` line naming the file, key, shard or endpoint, exit status 2, no traceback, no secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vidssl.shards import read_manifest

from ..conftest import write_video

CONFIGS = Path(__file__).parent / "corpus" / "configs"

#: corpus config -> what the one error line must name
CONFIG_CASES = {
    "unknown_key.yaml": "bogus: unknown key",
    "unknown_nested_key.yaml": "ingest.frame_rate: unknown key",
    "unknown_method_key.yaml": "train.method.moco.queue_sizee: unknown key",
    "removed_pipeline_key.yaml": "pipeline: the stages come from the experiment",
    "wrong_type.yaml": "ingest.fps:",
    "out_of_range.yaml": "ingest.max_failed_fraction:",
    "not_a_mapping.yaml": "expected a mapping",
    "invalid_yaml.yaml": "not valid YAML",
}


def _vidssl(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vidssl.cli", *args],
        capture_output=True, text=True, env=env or dict(os.environ), cwd=cwd, timeout=300,
    )  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_every_corpus_config_has_a_stated_outcome():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(CONFIG_CASES)


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_a_bad_experiment_file_is_one_line_naming_file_and_key(name, tally):
    line = _one_error_line(_vidssl("config", "show", str(CONFIGS / name)))
    assert name in line and CONFIG_CASES[name] in line, line
    tally(True)


@pytest.fixture
def ingested(tmp_path, experiment_dir):
    """A finished ingest output in a file:// store, made through the CLI."""
    for name in ("a", "b", "c"):
        write_video(tmp_path / "videos" / "walk" / f"{name}.avi", frames=30)
    (experiment_dir / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "bad",
                "dataset": {
                    "name": "gen",
                    "source": {"kind": "folder", "root": str(tmp_path / "videos")},
                },
                "ingest": {"workers": 1, "fps": 10},
                "shards": {"max_samples": 1},
            }
        )
    )
    env = {**os.environ, "VIDSSL_STORE_URI": f"file://{tmp_path / 'store'}"}
    result = _vidssl("ingest", "bad", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), env


def _shard_path(url: str, env: dict) -> Path:
    from vidssl.store import open_store

    store = open_store(env["VIDSSL_STORE_URI"])
    prefix = store.key_of(url)
    shard = read_manifest(store, prefix).splits["train"].shards[0]
    return Path(store.root) / prefix / shard.name


@pytest.mark.parametrize("damage", ["truncate", "bit_flip"])
def test_a_damaged_shard_is_named_by_inspect_and_verify(ingested, tmp_path, damage, tally):
    url, env = ingested
    path = _shard_path(url, env)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[1024 + 700] ^= 0x10  # inside the first frame's JPEG bytes
        path.write_bytes(bytes(data))
    line = _one_error_line(_vidssl("inspect", "bad", "--clips", url, env=env, cwd=tmp_path))
    assert path.name in line and path.parent.name in line, line
    verify = _vidssl("verify", url, "--exp", "bad", env=env, cwd=tmp_path)
    assert verify.returncode == 1 and "Traceback" not in verify.stderr
    assert path.name in verify.stderr and ("bytes" in verify.stderr or "sha256" in verify.stderr)
    tally(True)


def test_an_unreachable_store_is_one_line_naming_the_endpoint(ingested, tmp_path, tally):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "VIDSSL_STORE_URI": "s3://vidssl",
        "VIDSSL_S3_ENDPOINT": f"http://127.0.0.1:{port}",
        "VIDSSL_S3_ACCESS_KEY": "someone",
        "VIDSSL_S3_SECRET_KEY": "not-this-one",
        "VIDSSL_S3_RETRY_BUDGET_S": "1",
    }
    line = _one_error_line(_vidssl("ingest", "bad", env=env, cwd=tmp_path))
    assert f"127.0.0.1:{port}" in line
    tally(True)


def test_wrong_credentials_are_one_line_and_the_secret_is_never_printed(
    ingested, s3_server, tmp_path, tally
):
    secret = "wrong-secret-do-not-print-" + "x" * 12
    env = {
        **os.environ,
        **s3_server.env(),
        "VIDSSL_STORE_URI": "s3://vidssl",
        "VIDSSL_S3_SECRET_KEY": secret,
    }
    result = _vidssl("ingest", "bad", env=env, cwd=tmp_path)
    line = _one_error_line(result)
    assert "access refused" in line and "VIDSSL_S3_SECRET_KEY" in line
    assert secret not in result.stderr + result.stdout
    assert s3_server.secret_key not in result.stderr + result.stdout
    tally(True)
