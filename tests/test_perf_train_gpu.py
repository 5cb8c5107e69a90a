"""`make perf-train-gpu`'s driver (vidssl.perf.train_gpu) on the CPU (`--smoke`): every row of
the GPU benchmark runs through the real trainer, switches added one at a time, and the paper
run is projected from the fastest SimSiam row. Its numbers mean nothing here; the GPU's are in
the issue notes."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from vidssl.perf import train_gpu
from vidssl.perf.train import GpuUtilisation, parse_utilisation


def experiment_file(experiment, tmp_path, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """The experiment as a YAML file the driver loads, its store and results folder set, one
    torch thread (as the driver runs rows one after another)."""
    torch.set_num_threads(1)
    path = tmp_path / "perf.yaml"
    path.write_text(yaml.safe_dump(experiment.model_dump(mode="json")))
    monkeypatch.setenv("VIDSSL_STORE_URI", experiment.store.uri)
    monkeypatch.setenv("VIDSSL_PERF_DIR", str(tmp_path / "perf"))
    return str(path)


def test_smoke_run_measures_every_row_and_projects_the_paper_run(  # type: ignore[no-untyped-def]
    make_experiment, tmp_path, monkeypatch
):
    path = experiment_file(make_experiment({"name": "perf-gpu"}), tmp_path, monkeypatch)
    results = train_gpu.main(
        ["--smoke", "--exp", path, "--steps", "2", "--warmup", "1", "--batch", "4",
         "--workers", "0"]
    )  # fmt: skip
    names = [row["name"] for row in results["rows"]]
    for method in ("simsiam", "moco"):
        assert f"{method}: trainer, CPU input" in names
        assert f"{method}: trainer, GPU input" in names
        for switch in train_gpu.SWITCHES:
            assert f"{method}: + {switch}" in names
    for row in results["rows"]:
        assert row["steps"] == 2 and row["examples_per_second"] > 0
        assert abs(row["images_per_second"] - 2 * row["examples_per_second"]) <= 0.2
        assert 0 <= row["data_wait_share"] <= 1
        assert row["gpu_busy_percent"] is None  # no GPU: nothing sampled
        if row["name"].endswith(("+ compile", "+ cuda_graphs")):  # aot_eager under --smoke
            assert row["compiled"] is True and row["graphs"] >= 1
        elif "+" in row["name"] or "trainer" in row["name"]:
            assert row["compiled"] is None and row["graphs"] is None
    fastest = max(
        (r for r in results["rows"] if r["name"].startswith("simsiam")),
        key=lambda r: r["examples_per_second"],
    )
    assert results["paper_run"]["from_row"] == fastest["name"]
    assert results["paper_run"]["pairs_per_second"] == fastest["examples_per_second"]
    saved = json.loads((tmp_path / "perf" / "train_gpu.json").read_text())
    assert saved["rows"] == results["rows"]


def test_row_names_give_back_their_settings():
    for name in train_gpu.E2E_SETUPS:  # every setup --e2e accepts is one rows_for measures
        assert train_gpu._settings_of(name)["input"] in ("cpu", "gpu")
    assert train_gpu._settings_of("simsiam: trainer, CPU input") == {
        **train_gpu.ALL_OFF,
        "input": "cpu",
    }
    settings = train_gpu._settings_of("simsiam: + fused_optimizer")
    assert settings["input"] == "gpu"
    assert [s for s in train_gpu.SWITCHES if settings[s]] == [
        "amp",
        "channels_last",
        "fused_optimizer",
    ]


def test_smoke_run_of_pico_reports_pixels_per_second(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from tests.conftest import build_experiment
    from tests.test_train_tracks import PICO

    experiment = build_experiment(f"file://{tmp_path / 'store'}", **PICO)
    path = experiment_file(experiment, tmp_path, monkeypatch)
    results = train_gpu.main(
        ["--smoke", "--exp", path, "--methods", "--pico", path, "--steps", "2",
         "--warmup", "1", "--batch", "4", "--workers", "0"]
    )  # fmt: skip
    names = [row["name"] for row in results["rows"]]
    assert names == ["pico: trainer, CPU input"] + [f"pico: + {s}" for s in train_gpu.SWITCHES]
    for row in results["rows"]:  # every image through the encoder, 64 x 64 px (--smoke)
        expected = row["images_per_second"] * 64 * 64
        assert abs(row["pixels_per_second"] - expected) <= 0.05 * 64 * 64 + 1  # (rounding)
    assert "paper_run" not in results  # SimSiam's projection needs a SimSiam row


def test_end_to_end_run_alone_with_a_named_setup(make_experiment, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """`--e2e ROW --minutes M` skips the rows and runs that setup alone for M minutes, then
    projects the paper run from its sustained rate (the GPU session's long run)."""
    path = experiment_file(make_experiment({"name": "perf-gpu-e2e"}), tmp_path, monkeypatch)
    results = train_gpu.main(
        ["--smoke", "--exp", path, "--methods", "--e2e", "simsiam: + amp",
         "--minutes", "0.02", "--warmup", "1", "--batch", "4", "--workers", "0",
         "--out", "e2e"]
    )  # fmt: skip
    assert results["rows"] == []
    long = results["end_to_end"]
    assert long["setup"] == "simsiam: + amp" and long["steps"] >= 1
    assert long["seconds"] >= 0.02 * 60  # ran until the deadline, not a step count
    projection = results["paper_run_end_to_end"]
    assert projection["pairs_per_second"] == long["examples_per_second"]
    assert projection["from_row"] == "simsiam: end to end"
    assert json.loads((tmp_path / "perf" / "e2e.json").read_text())["end_to_end"] == long


def test_bad_arguments_are_refused_before_any_row(capsys):  # type: ignore[no-untyped-def]
    for argv, said in (
        (["--e2e", "simsiam: + amp"], "give --minutes too"),
        (["--e2e", "moco: + amp", "--minutes", "1"], "one of the SimSiam trainer rows"),
        (["--e2e", "simsiam: + bogus", "--minutes", "1"], "one of the SimSiam trainer rows"),
        (["--e2e", "simsiam: plain fp32 loop", "--minutes", "1"], "SimSiam trainer rows"),
        (["--steps", "0"], "at least 1 step"),
    ):
        with pytest.raises(SystemExit):
            train_gpu.main(argv)
        assert said in capsys.readouterr().err


def test_nvidia_smi_utilisation_parses_numbers_and_skips_not_available():
    assert parse_utilisation("57\n") == 57.0
    assert parse_utilisation(" 100 \n3\n") == 100.0  # the first GPU listed: --id picks ours
    assert parse_utilisation("[N/A]\n") is None  # MIG slices
    assert parse_utilisation("") is None


def test_gpu_busy_averages_the_timed_window_alone():
    """Samples taken while the loader starts or the step compiles (the GPU idle by design)
    must not dilute a row's GPU busy share."""
    busy = GpuUtilisation(interval=3600.0)  # no sample is taken by the thread in this test
    with busy:
        busy.samples[:] = [(1.0, 0.0), (2.0, 0.0), (10.0, 90.0), (11.0, 100.0), (20.0, 0.0)]
    assert busy.mean_between(10.0, 11.0) == 95.0
    assert busy.mean == 38.0
    assert math.isnan(busy.mean_between(12.0, 13.0))
