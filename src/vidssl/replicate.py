"""An experiment's pose claim over training seeds: for each seed, the trained embeddings' 3D mAP
on test next to random embeddings (the same seed's untrained encoder) and the random
in-category box fit, with bootstrap 95% intervals over test videos of the differences.

    python -m vidssl.replicate siampose_synthetic --seeds 0 1 2
    make replicate EXP=siampose_synthetic

tests/test_demo.py asserts the default demo's ordering with it.
"""

from __future__ import annotations

import argparse
import logging
import sys
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        experiment = load_experiment(args.experiment)  # its `base:` chain resolved
        results = [run_seed(experiment, seed) for seed in args.seeds]
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# {experiment.name}: 3D mAP on test over training seeds\n\n{table(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
