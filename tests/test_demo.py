"""The default demo's promise (`make pipeline-run`, EXP=siampose_synthetic): nearby-pair
embeddings beat random embeddings and the random in-category box fit on the paper's 3D mAP of
the test queries, averaged over 3 training seeds (and every seed beats the in-category fit).

The configuration was chosen on val (`make sweep SWEEP=demo`); this asserts it on test. The
demo is itself the small run (1000 CPU steps of a small ResNet at 64 px): the three seeds train
side by side, one process and one thread each (`--jobs 3`), as `make replicate JOBS=3` runs
them and prints the same table with the bootstrap 95% intervals over test videos."""

from __future__ import annotations

import pytest

from vidssl.config import load_experiment
from vidssl.replicate import run_seeds, table

SEEDS = (0, 1, 2)


@pytest.mark.timeout(3600)
def test_demo_beats_random_embeddings_and_random_in_category_fit_over_seeds(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("VIDSSL_STORE_URI", f"file://{tmp_path}")
    demo = load_experiment("siampose_synthetic")
    assert demo.train.sampler.pairing == "nearby"
    results = run_seeds(demo, list(SEEDS), jobs=len(SEEDS))
    with capsys.disabled():
        print("\n" + table(results))
    mean = {key: sum(getattr(r, key) for r in results) / len(results) for key in (
        "trained", "random_embeddings", "in_category_fit")}  # fmt: skip
    # The claim is on the mean over seeds: one seed's margin over random embeddings was
    # measured as small as +0.018 (bootstrap interval [-0.083, +0.109]), within the ~0.02 that
    # numerical noise moves a run. Every seed beats the in-category fit (by 0.068 or more).
    assert mean["trained"] > mean["random_embeddings"], results
    assert mean["trained"] > mean["in_category_fit"], results
    for result in results:
        assert result.trained > result.in_category_fit, result


def test_replicate_refuses_fewer_than_one_job(capsys):
    from vidssl.replicate import main

    assert main(["siampose_synthetic", "--seeds", "0", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


def test_replicate_refuses_a_split_other_than_test_or_val(capsys):
    from vidssl.replicate import main

    assert main(["siampose_synthetic", "--seeds", "0", "--split", "train"]) == 2
    assert "--split must be one of test, val, got 'train'" in capsys.readouterr().err
