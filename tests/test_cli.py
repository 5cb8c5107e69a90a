"""The `vidssl` command: stages by hand, and one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from vidssl.cli import app

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
    (experiment_dir / "bad.yaml").write_text("name: bad\nbogus: 1\n")
    result = _vidssl("config", "show", "bad", env=dict(os.environ), cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "bad.yaml: bogus: unknown key" in result.stderr


def _write_synthetic_experiment(directory) -> None:
    """Two categories, one 6-frame 48 x 64 video each: the synth stage in about a second."""
    source = {
        "kind": "synthetic_objectron",
        "videos_per_class": 1,
        "frames": 6,
        "width": 48,
        "height": 64,
        "categories": ["cup", "shoe"],
    }
    (directory / "tiny.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "dataset": {"name": "tiny-synth", "source": source},
                "ingest": {"workers": 1},
            }
        )
    )


def test_synth_exp_runs_the_synth_stage(experiment_dir, tmp_path, monkeypatch):
    _write_synthetic_experiment(experiment_dir)
    monkeypatch.setenv("VIDSSL_STORE_URI", f"file://{tmp_path / 'store'}")
    shown = CliRunner().invoke(app, ["synth", "--help"])
    assert shown.exit_code == 0 and "synthetic_objectron" in shown.output
    assert CliRunner().invoke(app, ["synth-objectron", "--help"]).exit_code == 0
    result = CliRunner().invoke(app, ["synth", "tiny"])
    assert result.exit_code == 0, result.output
    raw = result.stdout.strip().splitlines()[-1]
    assert raw.startswith(f"file://{tmp_path / 'store'}/datasets/tiny-synth/synth/")
    assert raw.endswith("/raw")
    videos = sorted((tmp_path / "store").rglob("video.MOV"))
    assert len(videos) == 2 and all(str(v).startswith(raw[len("file://") :]) for v in videos)


def test_bench_scores_labelled_embeddings_and_prints_the_report(experiment_dir, monkeypatch):
    from vidssl.stages import bench as stage

    _write_synthetic_experiment(experiment_dir)
    calls = []

    def scored(experiment, exports, run_id=None, clips_url=None):  # the stage, without the work
        calls.append((experiment.name, exports, run_id, clips_url))
        return {
            "experiment": experiment.name,
            "models": {"random": {"retrieval": {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "R@20": 1.0}}},
            "figures": ["trajectories-random.png"],
            "report_url": "file:///store/runs/tiny/r1/report.md",
        }

    monkeypatch.setattr(stage, "run", scored)
    args = ["bench", "tiny", "--embeddings", "random=file:///e/1", "--embeddings", "b=file:///e/2"]
    result = CliRunner().invoke(app, [*args, "--clips", "file:///c", "--run-id", "r1"])
    assert result.exit_code == 0, result.output
    assert calls == [("tiny", {"random": "file:///e/1", "b": "file:///e/2"}, "r1", "file:///c")]
    printed = result.stdout.strip().splitlines()
    assert "| random | 0.500 | 1.000 | 1.000 | 1.000 |" in printed
    assert "![trajectories-random.png](plots/trajectories-random.png)" in printed  # no markup
    assert printed[-1] == "file:///store/runs/tiny/r1/report.md"


def test_bench_refuses_a_malformed_embeddings_value_in_one_line(tmp_path):
    env = dict(os.environ)
    for args in (["--embeddings", "random"], ["--embeddings", "=file:///e"], []):
        result = _vidssl("bench", "smoke", *args, env=env, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --embeddings"), lines
        assert not args or repr(args[1]) in lines[0]
