"""The `vidssl` command: stages by hand, and one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from .conftest import REPO_ROOT


def _vidssl(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vidssl.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def _write_experiment(directory, video_folder) -> None:
    (directory / "cli.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "pipeline": "ingest",
                "dataset": {"name": "gen", "source": {"kind": "folder", "root": str(video_folder)}},
                "ingest": {"workers": 1},
            }
        )
    )


def test_ingest_inspect_verify_by_hand(s3_store, video_folder, experiment_dir, tmp_path):
    _write_experiment(experiment_dir, video_folder)
    env = {**os.environ, "VIDSSL_STORE_URI": s3_store.base_url}
    ingested = _vidssl("ingest", "cli", env=env, cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr
    url = ingested.stdout.strip()
    assert url.startswith(f"{s3_store.base_url}/datasets/gen/ingest/")
    assert "garbage.avi" in ingested.stderr  # the skipped video is named in the log
    again = _vidssl("ingest", "cli", env=env, cwd=tmp_path)
    assert again.stdout.strip() == url and "skipping" in again.stderr
    inspected = _vidssl("inspect", "cli", "--clips", url, "--run-id", "x", env=env, cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert "| split | videos | samples | frames |" in inspected.stdout
    verified = _vidssl("verify", url, "--exp", "cli", env=env, cwd=tmp_path)
    assert verified.returncode == 0 and "every shard matches" in verified.stdout
    fetched = _vidssl("report", "cli", env=env, cwd=tmp_path)  # the latest run of `cli`
    assert fetched.returncode == 0, fetched.stderr
    local = tmp_path / fetched.stdout.strip()
    assert local == tmp_path / "build" / "reports" / "cli" / "x" / "data.md"
    assert "| split | videos | samples | frames |" in local.read_text()
    by_id = _vidssl("report", "x", "--exp", "cli", "--out", "elsewhere", env=env, cwd=tmp_path)
    assert by_id.stdout.strip() == "elsewhere/cli/x/data.md", by_id.stderr
    missing = _vidssl("report", "no-such-run", "--exp", "cli", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "no-such-run" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_unknown_config_key_exits_with_the_key_named(experiment_dir, tmp_path):
    (experiment_dir / "bad.yaml").write_text("name: bad\npipeline: ingest\nbogus: 1\n")
    result = _vidssl("config", "show", "bad", env=dict(os.environ), cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "bad.yaml: bogus: unknown key" in result.stderr
