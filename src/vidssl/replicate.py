"""An experiment's pose claim over training seeds: for each seed, the trained embeddings' 3D mAP
on test next to random embeddings (the same seed's untrained encoder) and the random
in-category box fit, with bootstrap 95% intervals over test videos of the differences.

    python -m vidssl.replicate siampose_synthetic --seeds 0 1 2 [--jobs 3]
    make replicate EXP=siampose_synthetic [JOBS=3]

With `--jobs N` the seeds train in N processes at once, each with a share of the CPU's
threads (at least one): on a small CPU, single-threaded runs side by side waste less than one
run spread over every core, and one seed's data loading overlaps another's compute. The data
stages are prepared once first, so the processes only share finished outputs. Scores depend on
the thread count (float sums in another order), by far less than seed to seed.

tests/test_demo.py asserts the default demo's ordering with it.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from vidssl.config import ConfigError, Experiment, load_experiment
from vidssl.evaluate.bootstrap import category_mean_hit_rate, difference_interval, hits
from vidssl.evaluate.report import markdown_table
from vidssl.store import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedResult:
    seed: int
    trained: float  # 3D mAP (category mean)
    random_embeddings: float
    in_category_fit: float
    over_random: tuple[float, float, float]  # difference, 95% low, high
    over_in_category: tuple[float, float, float]


def run_seed(experiment: Experiment, seed: int) -> SeedResult:
    """Train with `train.seed = seed`, embed, and score test queries against train frames."""
    from vidssl.stages import bench, export, train
    from vidssl.stages.base import store_for
    from vidssl.stages.prepare import prepared_clips, training_tracks

    if experiment.train is None:
        raise ConfigError(f"{experiment.name}: no train: section, nothing to train over seeds")
    seeded = experiment.model_copy(
        update={"train": experiment.train.model_copy(update={"seed": seed})}
    )
    clips = prepared_clips(seeded)
    model = train.run(seeded, clips, tracks_url=training_tracks(seeded, clips))
    store = store_for(seeded)
    splits = {}
    for name, output in (
        ("trained", export.run(seeded, clips, model_url=model.model_url)),
        ("random", export.run(seeded, clips, baseline="random")),
    ):
        prefix = store.key_of(output.url)
        splits[name] = (
            bench.load_split(store, prefix, "train"),
            bench.load_split(store, prefix, "test"),
        )
    train_split, test_split = splits["trained"]
    categories = [r["category"] for r in test_split.records]
    videos = [r["video_id"] for r in test_split.records]
    trained = hits(bench.nearest_fit_ious(train_split, test_split, seeded))
    random = hits(bench.nearest_fit_ious(*splits["random"], seeded))
    draws = bench.random_fit_draws(train_split, test_split, seeded)["random in-category fit"]
    in_category = np.mean([hits(ious) for ious in draws], axis=0)

    def score(per_query_hits: np.ndarray) -> float:
        return category_mean_hit_rate(per_query_hits, np.asarray(categories), np.ones(len(videos)))

    return SeedResult(
        seed=seed,
        trained=score(trained),
        random_embeddings=score(random),
        in_category_fit=score(in_category),  # the mean over draws: the score is linear in hits
        over_random=difference_interval(trained, random, categories, videos),
        over_in_category=difference_interval(trained, in_category, categories, videos),
    )


def run_seeds(experiment: Experiment, seeds: list[int], jobs: int = 1) -> list[SeedResult]:
    """`run_seed` for each seed, in order; with `jobs` > 1 in that many processes at once
    (spawned, each with `os.cpu_count() // jobs` torch threads, at least one), after the data
    stages ran once here."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if jobs == 1 or len(seeds) == 1:
        return [run_seed(experiment, seed) for seed in seeds]
    from vidssl.stages.prepare import prepared_clips

    prepared_clips(experiment)  # the shared stages, before any process needs them
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_run_seed_with_threads, experiment, seed, threads) for seed in seeds]
        return [future.result() for future in futures]


def _run_seed_with_threads(experiment: Experiment, seed: int, threads: int) -> SeedResult:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s seed {seed}: %(message)s")
    return run_seed(experiment, seed)


def table(results: list[SeedResult]) -> str:
    def interval(values: tuple[float, float, float]) -> str:
        return f"{values[0]:+.3f} [{values[1]:+.3f}, {values[2]:+.3f}]"

    header = (
        "seed", "trained 3D mAP", "random embeddings", "random in-category fit",
        "trained - random embeddings (95% CI)", "trained - in-category fit (95% CI)",
    )  # fmt: skip
    scores = ("trained", "random_embeddings", "in_category_fit")
    rows = [
        [
            str(r.seed),
            *(f"{getattr(r, key):.3f}" for key in scores),
            interval(r.over_random),
            interval(r.over_in_category),
        ]
        for r in results
    ]
    mean = [f"{np.mean([getattr(r, key) for r in results]):.3f}" for key in scores]
    rows.append(("mean", *mean, "", ""))
    return markdown_table(header, rows, align="r" * len(header)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vidssl.replicate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--jobs", type=int, default=1, help="seeds trained at once, in processes of their own"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        experiment = load_experiment(args.experiment)  # its `base:` chain resolved
        results = run_seeds(experiment, args.seeds, args.jobs)
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# {experiment.name}: 3D mAP on test over training seeds\n\n{table(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
