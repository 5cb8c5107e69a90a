"""PiCo's CPU demo (`make pipeline-run EXP=pico_synthetic`): its point tracks carry what a zero
flow field does not. On the synthetic correspondence benchmark (test queries, PCK averaged over
1-16 px against the ground-truth flow), PiCo's embeddings beat its Static (Video) baseline, the
same frames and training with the same pixel taken to correspond in every frame, by at least
MARGIN on the mean over training seeds, and every seed of both beats its untrained encoder.

The configuration and the margin were chosen on val (docs/results/pico_demo-val.md: PiCo led
Static (Video) there by 0.018 and 0.021 PCK avg with seeds 0 and 1; the margin is a quarter of
that). The ordering over Static (Frame) that issue 13 asks for is not established on CPU, so
nothing asserts it (same document). The four runs train side by side, one process and one
thread each, as `make replicate EXP=... JOBS=N` runs them."""

from __future__ import annotations

import numpy as np
import pytest

from vidssl.config import load_experiment
from vidssl.replicate import DenseSeedResult, run_runs, table

SEEDS = (0, 1)
MARGIN = 0.005
EXPERIMENTS = ("pico_synthetic", "pico_static_video_synthetic")


@pytest.mark.timeout(3600)
def test_pico_beats_static_video_on_correspondence_over_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIDSSL_STORE_URI", f"file://{tmp_path}")
    runs = [(load_experiment(name), seed) for name in EXPERIMENTS for seed in SEEDS]
    results = run_runs(runs, jobs=len(runs))
    by_name = {
        name: results[i * len(SEEDS) : (i + 1) * len(SEEDS)] for i, name in enumerate(EXPERIMENTS)
    }
    with capsys.disabled():
        for name, rows in by_name.items():
            print(f"\n{name}\n{table(rows)}")
    for rows in by_name.values():
        for result in rows:
            assert result.trained["pck_avg"] > result.random_embeddings["pck_avg"], result
    pico, static_video = (
        np.mean([r.trained["pck_avg"] for r in by_name[name]]) for name in EXPERIMENTS
    )
    assert pico - static_video >= MARGIN, (pico, static_video)


def test_the_dense_table_has_a_row_per_seed_and_their_mean():
    def scores(pck_avg: float, pck4: float, epe: float) -> dict:
        return {"pck_avg": pck_avg, "pck@4px": pck4, "epe": epe, "queries": 10.0}

    results = [
        DenseSeedResult(0, scores(0.30, 0.20, 12.0), scores(0.20, 0.10, 16.0)),
        DenseSeedResult(1, scores(0.32, 0.22, 11.0), scores(0.22, 0.12, 15.0)),
    ]
    lines = table(results).splitlines()
    assert lines[0].startswith("| seed | trained PCK avg |")
    assert lines[2] == "| 0 | 0.300 | 0.200 | 12.00 | 0.200 | 0.100 | 16.00 |"
    assert lines[-1] == "| mean | 0.310 | 0.210 | 11.50 | 0.210 | 0.110 | 15.50 |"
