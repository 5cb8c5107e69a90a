"""Before a local run: every file and folder the experiment's stages would read from this machine
is checked, and each missing one is named by its config key, all at once (`pico_k400` here: its
Kinetics copy and two weight files are elsewhere). A local run whose task fails ends in one line
naming the task, not kfp.local's traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines import run as pipeline_runner
from vidssl.cli import run as cli_run
from vidssl.config import ConfigError, load_experiment
from vidssl.stages.inputs import (
    LocalInput,
    check_local_inputs,
    cuda_required,
    gpu_stages,
    local_inputs,
)

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
    assert [item.stage for item in local_inputs(experiment)] == [
        "ingest",
        "ingest",
        "flow",
        "train",
    ]
    assert gpu_stages(experiment) == ["flow", "train", "export"]


def test_only_the_missing_inputs_are_named_with_why(tmp_path):
    experiment = load_experiment(_pico_k400_on(tmp_path, root=True, annotations=True, raft=True))
    with pytest.raises(ConfigError) as refused:
        check_local_inputs(experiment)
    assert str(refused.value).splitlines()[1:-1] == [
        f"  train.method.encoder_checkpoint: {tmp_path / 'moco_v2.pth.tar'} (no such file)"
    ]
    check_local_inputs(experiment, ("ingest", "flow"))  # what those stages read is there
    check_local_inputs(
        load_experiment(_pico_k400_on(tmp_path, root=True, annotations=True, raft=True, moco=True))
    )


def test_a_file_where_a_folder_belongs_and_an_unset_key_are_problems(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    root = "dataset.source.root"
    assert LocalInput("ingest", root, str(afile), folder=True).problem() == "not a folder"
    assert LocalInput("ingest", root, f"file://{tmp_path}", folder=True).problem() is None
    assert LocalInput("train", "train.weights", str(tmp_path)).problem() == "not a file"
    # weights are opened as plain paths: a file:// URL would not be found by the stage
    assert LocalInput("train", "train.weights", f"file://{afile}").problem() == "no such file"
    unset = LocalInput("export", "export.imagenet_weights", None)
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
    mine = _pico_k400_on(tmp_path)  # nothing there
    monkeypatch.setenv("VIDSSL_STORE_URI", "s3://no-such-bucket-and-no-server")
    monkeypatch.setenv("VIDSSL_EXPERIMENTS_DIR", str(REPO_ROOT / "pipelines" / "experiments"))
    monkeypatch.chdir(tmp_path)
    assert pipeline_runner.main(["run", mine, "--runner", "local"]) == 2
    error = capsys.readouterr().err
    for key in PICO_KEYS:
        assert f"  {key}: {tmp_path}" in error
    assert "base: my_pico" in error and "RUNNER=kfp" in error
    assert not (tmp_path / "build").exists()  # refused before kfp.local started anything


def test_the_in_process_runner_checks_what_each_step_reads(tmp_path):
    from vidssl.stages.prepare import prepared_clips, prepared_tracks

    nothing = load_experiment(_pico_k400_on(tmp_path))
    with pytest.raises(ConfigError) as refused:
        prepared_clips(nothing)  # the data stages read the dataset's folders only
    listed = [line.split(":")[0].strip() for line in str(refused.value).splitlines()[1:-1]]
    assert listed == ["dataset.source.root", "dataset.source.annotations"]
    with pytest.raises(ConfigError, match=r"(?s)does not have:\n  flow\.weights: [^\n]*\nPoint"):
        prepared_tracks(nothing, "file:///clips-never-read")


def test_a_cuda_flow_device_is_refused_on_a_machine_without_one(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on CI
    mine = _pico_k400_on(tmp_path, root=True, annotations=True, raft=True, moco=True)
    settings = yaml.safe_load(Path(mine).read_text())
    path = tmp_path / "cuda_flow.yaml"
    path.write_text(yaml.safe_dump({**settings, "flow": {**settings["flow"], "device": "cuda"}}))
    experiment = load_experiment(str(path))
    assert cuda_required(experiment) == ["flow.device: cuda"]
    with pytest.raises(ConfigError, match=r"^flow\.device: cuda, and this machine has no CUDA"):
        pipeline_runner.check_local_machine(experiment)
    static_frame = load_experiment("pico_static_frame_k400")  # no flow stage: no flow.device
    assert cuda_required(static_frame) == [] and gpu_stages(static_frame) == ["train", "export"]


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


def test_the_error_is_the_final_exception_of_the_failed_tasks_last_traceback():
    log = [
        "18:24:30.101 - INFO - Executing task \x1b[96m'synth'\x1b[0m",
        "    Traceback (most recent call last):",  # an earlier task's, logged and survived
        "    FileNotFoundError: not this one",
        "",
        "18:24:36.459 - INFO - Executing task \x1b[96m'ingest'\x1b[0m",
        "ERROR vidssl.stages.ingest: skipping video: a.avi: truncated",
        "    Traceback (most recent call last):",
        '      File "ingest.py", line 1, in run',
        "        raise InputError(reason)",
        "    vidssl.errors.InputError: the first",
        "    ",
        "    During handling of the above exception, another exception occurred:",
        "    ",
        "    Traceback (most recent call last):",
        '      File "ingest.py", line 9, in run',
        "        raise IngestFailed(summary)",
        "    vidssl.stages.ingest.IngestFailed: 3 of 4 videos failed (over 0.5):",
        "      a.avi: truncated",
        "      b.avi: no frames",
        "    ",
        "18:24:38.157 - \x1b[91mERROR\x1b[0m - Task 'ingest' finished with status FAILURE",
    ]
    assert pipeline_runner.task_error(log) == (
        "vidssl.stages.ingest.IngestFailed: 3 of 4 videos failed (over 0.5):\n"
        "  a.avi: truncated\n"
        "  b.avi: no frames"
    )
    assert pipeline_runner.task_error(log[:10]) == "vidssl.errors.InputError: the first"
    assert pipeline_runner.task_error(log[:6]) is None  # the ingest task's log has none yet
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
