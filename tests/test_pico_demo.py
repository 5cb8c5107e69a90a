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
from vidssl.replicate import DenseSeedResult, dense_difference, run_runs, table

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
    difference = dense_difference(*by_name.values())
    with capsys.disabled():
        for name, rows in by_name.items():
            print(f"\n{name}\n{table(rows)}")
        print("PiCo - Static (Video) PCK avg: {:+.3f}, 95% CI over test clips [{:+.3f}, {:+.3f}]"
              .format(*difference))  # fmt: skip
    for rows in by_name.values():
        for result in rows:
            assert result.trained["pck_avg"] > result.random_embeddings["pck_avg"], result
    pico, static_video = (
        np.mean([r.trained["pck_avg"] for r in by_name[name]]) for name in EXPERIMENTS
    )
    assert pico - static_video >= MARGIN, (pico, static_video)


def test_the_dense_table_has_a_row_per_seed_their_mean_and_intervals_over_clips():
    def scores(pck_avg: float, pck4: float, epe: float, clip_a: float) -> dict:
        # Two clips of 10 queries each; their PCK avg sums pool to pck_avg.
        per_clip = {"a": (clip_a * 10, 10), "b": ((2 * pck_avg - clip_a) * 10, 10)}
        return {"pck_avg": pck_avg, "pck@4px": pck4, "epe": epe, "per_clip": per_clip}

    results = [
        DenseSeedResult(0, scores(0.30, 0.20, 12.0, 0.30), scores(0.20, 0.10, 16.0, 0.20)),
        DenseSeedResult(1, scores(0.32, 0.22, 11.0, 0.42), scores(0.22, 0.12, 15.0, 0.22)),
    ]
    lines = table(results).splitlines()
    assert lines[0].startswith("| seed | trained PCK avg |")
    # Seed 0 gains 0.1 in both clips: every resample of the clips gives +0.1.
    assert lines[2] == (
        "| 0 | 0.300 | 0.200 | 12.00 | 0.200 | 0.100 | 16.00 | +0.100 [+0.100, +0.100] |"
    )
    # Seed 1 gains 0.2 in clip a and 0.0 in b: resamples range from +0.0 to +0.2.
    assert lines[3].endswith("| +0.100 [+0.000, +0.200] |")
    assert lines[-1].startswith("| mean | 0.310 | 0.210 | 11.50 | 0.210 | 0.110 | 15.50 | +0.100")
    other = [DenseSeedResult(s, r.random_embeddings, r.trained) for s, r in enumerate(results)]
    difference, low, high = dense_difference(results, other)
    assert difference == pytest.approx(0.310 - 0.210) and low <= difference <= high


def test_against_compares_dense_models_on_the_same_queries_only(capsys):
    from vidssl.config import ConfigError
    from vidssl.replicate import SeedResult, _comparison, main

    assert main(["pico_synthetic", "--seeds", "0", "--against", "no_such_experiment"]) == 2
    assert "no_such_experiment" in capsys.readouterr().err
    experiments = [load_experiment("pico_synthetic"), load_experiment("siampose_synthetic")]
    box = SeedResult(0, 0.5, 0.3, 0.4, (0.2, 0.1, 0.3), (0.1, 0.0, 0.2))

    def dense(clips: dict) -> DenseSeedResult:
        return DenseSeedResult(0, {"pck_avg": 0.3, "per_clip": clips}, {"per_clip": clips})

    with pytest.raises(ConfigError, match="both experiments must be dense"):
        _comparison(experiments, [[dense({"a": (3.0, 10)})], [box]])
    with pytest.raises(ConfigError, match=r"cannot be compared query for query: .*different clips"):
        _comparison(experiments, [[dense({"a": (3.0, 10)})], [dense({"b": (3.0, 10)})]])
    line = _comparison(experiments, [[dense({"a": (3.0, 10)})], [dense({"a": (2.0, 10)})]])
    assert line == (
        "pico_synthetic - siampose_synthetic: +0.100 PCK avg (mean over seeds), "
        "95% CI over test clips [+0.100, +0.100]"
    )
