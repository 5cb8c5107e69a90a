"""Before a local run: every file and folder the experiment's stages would read from this machine
is checked, and each missing one is named by its config key, all at once (`pico_k400` here: its
Kinetics copy and two weight files are elsewhere). A local run whose task fails ends in one line
naming the task, not kfp.local's traceback."""

from __future__ import annotations

import pytest
import yaml

from pipelines import run as pipeline_runner
from vidssl.cli import run as cli_run
from vidssl.config import ConfigError, load_experiment
from vidssl.stages.inputs import LocalInput, gpu_stages, local_inputs, missing_inputs

from .conftest import REPO_ROOT, build_experiment

PICO_KEYS = [
    "dataset.source.root",
    "dataset.source.annotations",
    "flow.weights",
    "train.method.encoder_checkpoint",
]


def _pico_k400_on(tmp_path, **present: bool) -> str:
    """An experiment file of a user's own on pico_k400, its paths under tmp_path; the keys named
    True in `present` (root, annotations, raft, moco) point at files or folders that exist."""
    paths = {
        "root": tmp_path / "kinetics400",
        "annotations": tmp_path / "kinetics400" / "annotations",
        "raft": tmp_path / "raft_large.pth",
        "moco": tmp_path / "moco_v2.pth.tar",
    }
    for name, path in paths.items():
        if present.get(name):
            if name in ("root", "annotations"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.write_bytes(b"weights")
    settings = {
        "base": "pico_k400",
        "dataset": {
            "source": {"root": str(paths["root"]), "annotations": str(paths["annotations"])}
        },
        "flow": {"weights": str(paths["raft"])},
        "train": {"method": {"encoder_checkpoint": str(paths["moco"])}},
    }
    mine = tmp_path / "my_pico.yaml"
    mine.write_text(yaml.safe_dump(settings))
    return str(mine)


def test_pico_k400_reads_its_dataset_raft_and_moco_weights_and_asks_for_gpus():
    experiment = load_experiment("pico_k400")
    assert [item.key for item in local_inputs(experiment)] == PICO_KEYS
    assert gpu_stages(experiment) == ["flow", "train", "export"]


def test_only_the_missing_inputs_are_named_with_why(tmp_path):
    experiment = load_experiment(_pico_k400_on(tmp_path, root=True, annotations=True, raft=True))
    assert missing_inputs(experiment) == [
        f"train.method.encoder_checkpoint: {tmp_path / 'moco_v2.pth.tar'} (no such file)"
    ]
    everything = load_experiment(
        _pico_k400_on(tmp_path, root=True, annotations=True, raft=True, moco=True)
    )
    assert missing_inputs(everything) == []


def test_a_file_where_a_folder_belongs_and_an_unset_key_are_problems(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert LocalInput("dataset.source.root", str(afile), folder=True).problem() == "not a folder"
    assert LocalInput("train.weights", str(tmp_path), folder=False).problem() == "not a file"
    assert LocalInput("dataset.source.root", f"file://{tmp_path}", folder=True).problem() is None
    unset = LocalInput("export.imagenet_weights", None)
    assert unset.line() == (
        "export.imagenet_weights: (unset) (not set, and a stage needs it (nothing is downloaded))"
    )


def test_generated_data_s3_roots_and_cpu_flow_read_nothing_local(tmp_path):
    assert local_inputs(load_experiment("siampose_synthetic")) == ()
    assert local_inputs(load_experiment("pico_synthetic")) == ()  # DIS flow takes no weights
    in_store = build_experiment(
        "file:///nowhere",
        {"dataset": {"name": "x", "source": {"kind": "folder", "root": "s3://b/v"}}},
    )
    assert local_inputs(in_store) == ()
    imagenet = build_experiment(
        "file:///nowhere",
        {"export": {"baselines": ["random", "imagenet"]}, "train": {"weights": str(tmp_path)}},
    )
    assert [(item.key, item.problem()) for item in local_inputs(imagenet)] == [
        ("train.weights", "not a file"),
        ("export.imagenet_weights", "not set, and a stage needs it (nothing is downloaded)"),
    ]


def test_config_check_lists_every_input_and_fails_naming_the_missing(tmp_path, capsys):
    mine = _pico_k400_on(tmp_path, root=True, annotations=True)
    with pytest.raises(SystemExit) as exited:
        cli_run(["config", "check", mine])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert f"dataset.source.root: {tmp_path / 'kinetics400'} (ok)" in captured.out
    assert f"flow.weights: {tmp_path / 'raft_large.pth'} (no such file)" in captured.out
    assert "GPU asked for by: flow, train, export" in captured.out
    assert "my_pico reads files this machine does not have" in captured.err
    with pytest.raises(SystemExit) as exited:
        cli_run(["config", "check", "siampose_synthetic"])
    assert exited.value.code == 0
    assert "reads no local files" in capsys.readouterr().out


def test_a_local_run_is_refused_before_it_starts_naming_every_missing_key(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("VIDSSL_STORE_URI", "s3://no-such-bucket-and-no-server")
    monkeypatch.setenv("VIDSSL_EXPERIMENTS_DIR", str(REPO_ROOT / "pipelines" / "experiments"))
    monkeypatch.chdir(tmp_path)
    assert pipeline_runner.main(["run", "pico_k400", "--runner", "local"]) == 2
    error = capsys.readouterr().err
    for key in PICO_KEYS:
        assert f"  {key}: " in error
    assert "base: pico_k400" in error and "RUNNER=kfp" in error
    assert not (tmp_path / "build").exists()  # refused before kfp.local started anything


def test_the_in_process_runner_refuses_the_same_way(tmp_path):
    from vidssl.stages.prepare import prepared_clips

    experiment = load_experiment(_pico_k400_on(tmp_path, root=True, annotations=True, raft=True))
    with pytest.raises(ConfigError, match=r"(?s)does not have:\n  train\.method\.encoder_chec"):
        prepared_clips(experiment)


def test_a_failed_local_task_ends_in_one_plain_line(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "videos"
    empty.mkdir()
    settings = {
        "name": "empty-folder",
        "dataset": {"name": "none", "source": {"kind": "folder", "root": str(empty)}},
    }
    path = tmp_path / "empty-folder.yaml"
    path.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("VIDSSL_STORE_URI", f"file://{tmp_path / 'store'}")
    monkeypatch.chdir(tmp_path)
    assert pipeline_runner.main(["run", str(path), "--runner", "local"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "error: Pipeline 'vidssl-empty-folder' finished with status FAILURE. Inner task failed: "
        "'ingest' inside 'exit-handler-1'. FileNotFoundError: dataset.source (folder): no videos "
        f"found under {empty} (the task's whole log is above)"
    )


def test_the_error_is_the_last_exception_line_of_the_task_logs():
    log = [
        "    [KFP Executor 2026-11-24 18:24:36,495 INFO]: Got executor_input:",
        "ERROR vidssl.stages.ingest: skipping video: a.avi: truncated",
        "    Traceback (most recent call last):",
        "    vidssl.errors.InputError: first",
        '      File "x.py", line 1, in <module>',
        "    FileNotFoundError: /data/k400/annotations/train.csv: no such file",
        "",
        "18:24:38.157 - \x1b[91mERROR\x1b[0m - Task 'ingest' finished with status FAILURE",
    ]
    assert pipeline_runner.last_error(log) == (
        "FileNotFoundError: /data/k400/annotations/train.csv: no such file"
    )
    assert pipeline_runner.last_error(log[:4]) == "vidssl.errors.InputError: first"
    assert pipeline_runner.last_error(log[:3]) is None
    failed = RuntimeError("Pipeline \x1b[95m'p'\x1b[0m finished with status FAILURE.")
    assert str(pipeline_runner._pipeline_failure(failed, [])) == (
        "Pipeline 'p' finished with status FAILURE. Its error ends that task's log, above."
    )


def test_recent_lines_writes_through_and_keeps_the_last_lines():
    import io

    out = io.StringIO()
    recent = pipeline_runner.RecentLines(out, keep=2)
    recent.write("one\ntw")
    recent.write("o\nthree\nfour")
    assert out.getvalue() == "one\ntwo\nthree\nfour"
    assert list(recent.lines) == ["two", "three"]  # "four" has no newline yet


def test_other_runtime_errors_are_not_taken_for_a_failed_task():
    assert pipeline_runner._pipeline_failure(RuntimeError("CUDA out of memory"), []) is None
