"""A run's report copied home from the store: the latest run, a run by id, plots included."""

from __future__ import annotations

import pytest

from vidssl.run_reports import fetch_report, find_run, run_ids
from vidssl.store import StoreError


def _run(store, experiment: str, run_id: str, figures=("pca.png",)) -> None:
    prefix = f"runs/{experiment}/{run_id}"
    store.put_text(f"{prefix}/report.md", f"# {run_id}\n")
    store.put_text(f"{prefix}/report.html", f"<h1>{run_id}</h1>")
    store.put_text(f"{prefix}/metrics.json", "{}")
    for figure in figures:
        store.put(f"{prefix}/plots/{figure}", b"\x89PNG" + run_id.encode())


def test_latest_run_and_its_files(file_store, tmp_path):
    _run(file_store, "exp", "20260101-000000")
    _run(file_store, "exp", "20260301-000000", figures=("pca.png", "boxes.png"))
    file_store.put_text("runs/exp/20260401-000000/plots/unfinished.png", "no report yet")
    assert run_ids(file_store, "exp") == ["20260101-000000", "20260301-000000"]
    page = fetch_report(file_store, "exp", "20260301-000000", tmp_path / "reports")
    assert page == tmp_path / "reports" / "exp" / "20260301-000000" / "report.html"
    assert page.read_text() == "<h1>20260301-000000</h1>"
    folder = page.parent
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "metrics.json",
        "plots",
        "plots/boxes.png",
        "plots/pca.png",
        "report.html",
        "report.md",
    ]
    assert (folder / "plots" / "pca.png").read_bytes() == b"\x89PNG20260301-000000"


def test_run_found_by_id_alone(file_store):
    _run(file_store, "a", "r1")
    _run(file_store, "b", "r2")
    assert find_run(file_store, "r2") == "b"
    _run(file_store, "b", "r1")
    with pytest.raises(StoreError, match="2 experiments"):
        find_run(file_store, "r1")
    with pytest.raises(StoreError, match="'r9': no experiment"):
        find_run(file_store, "r9")


def test_a_run_without_a_report_is_a_clear_error(file_store, tmp_path):
    file_store.put_text("runs/exp/r1/plots/x.png", "half a run")
    with pytest.raises(StoreError, match="runs/exp/r1: no report"):
        fetch_report(file_store, "exp", "r1", tmp_path)
