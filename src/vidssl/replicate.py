"""An experiment's claim over training seeds: for each seed, the trained embeddings' 3D mAP on
test next to random embeddings (the same seed's untrained encoder) and the random in-category
box fit, with bootstrap 95% intervals over test videos of the differences; for a dense model
(PiCo) its correspondence on test instead (PCK and end-point error against the ground-truth
flow, `bench.dense`, as the dense bench scores it), next to its untrained encoder's.

    python -m vidssl.replicate siampose_synthetic --seeds 0 1 2 [--jobs 3]
    make replicate EXP=siampose_synthetic [JOBS=3]
    make replicate EXP=pico_synthetic SEEDS="0 1" AGAINST=pico_static_video_synthetic JOBS=4
    make replicate EXP=pico_synthetic AGAINST=pico_static_frame_synthetic SPLIT=val

`--split val` scores the val queries instead of test's (train frames stay the gallery): to
choose a configuration over seeds, with intervals, without looking at test.

For a dense model each seed's row carries the trained - untrained PCK avg difference with its
95% interval over test clips (whole clips resampled: a clip's frames are not independent
queries), and `--against` puts another dense experiment on the same data beside it: the
difference of the two means over seeds, with its interval over clips (which does not count the
seeds' spread; the rows show that).

With `--jobs N` the seeds train in N processes at once, each with a share of the CPU's
threads (at least one): on a small CPU, single-threaded runs side by side waste less than one
run spread over every core, and one seed's data loading overlaps another's compute. The data
stages are prepared once first, so the processes only share finished outputs. Scores depend on
the thread count (float sums in another order), by far less than seed to seed.

tests/test_demo.py asserts the default demo's ordering with it, tests/test_pico_demo.py PiCo's
over Static (Video).
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
from vidssl.evaluate.bootstrap import (
    category_mean_hit_rate,
    difference_interval,
    hits,
    pooled_difference_interval,
)
from vidssl.evaluate.report import markdown_table
from vidssl.store import ObjectStore, StoreError

log = logging.getLogger(__name__)

#: Where a seed's queries come from: test to report, val to choose configurations.
SPLITS = ("test", "val")


@dataclass(frozen=True)
class SeedResult:
    seed: int
    trained: float  # 3D mAP (category mean)
    random_embeddings: float
    in_category_fit: float
    over_random: tuple[float, float, float]  # difference, 95% low, high
    over_in_category: tuple[float, float, float]


@dataclass(frozen=True)
class DenseSeedResult:
    """A dense model's seed: correspondence scores on test (`dense_bench.score_correspondence`'s
    dict: pck_avg, pck@<t>px, epe, queries, per_clip) of its maps and of its untrained
    encoder's."""

    seed: int
    trained: dict
    random_embeddings: dict


def dense_difference(
    results_a: list[DenseSeedResult],
    results_b: list[DenseSeedResult],
    scores_a: str = "trained",
    scores_b: str = "trained",
) -> tuple[float, float, float]:
    """Mean PCK avg over seeds of A's `scores_a` (trained or random_embeddings) minus B's
    `scores_b`, scored on the same queries, with its 95% interval over their clips (the seeds'
    spread is what the table's rows show)."""
    return pooled_difference_interval(
        _mean_over_seeds(results_a, scores_a), _mean_over_seeds(results_b, scores_b)
    )


def _mean_over_seeds(results: list[DenseSeedResult], scores: str) -> dict[str, tuple[float, int]]:
    """{clip: (its PCK avg sum averaged over the seeds, queries)}: every seed has the clip's
    queries (the truth does not depend on the seed)."""
    per_seed = [getattr(r, scores)["per_clip"] for r in results]
    return {
        clip: (float(np.mean([clips[clip][0] for clips in per_seed])), int(queries))
        for clip, (_, queries) in per_seed[0].items()
    }


def run_seed(
    experiment: Experiment, seed: int, split: str = "test"
) -> SeedResult | DenseSeedResult:
    """Train with `train.seed = seed`, embed with the trained and the untrained encoder, and
    score the `split` queries (test; val to choose configurations without looking at test):
    against train frames by box fitting (3D mAP), or, for a dense model (PiCo), by point
    correspondence (PCK against the ground-truth flow, `bench.dense`)."""
    from vidssl.shards import read_manifest
    from vidssl.stages import export, train
    from vidssl.stages.base import store_for
    from vidssl.stages.dense_bench import is_dense_export
    from vidssl.stages.prepare import prepared_clips, training_tracks

    if experiment.train is None:
        raise ConfigError(f"{experiment.name}: no train: section, nothing to train over seeds")
    _check_split(split)
    seeded = experiment.model_copy(
        update={"train": experiment.train.model_copy(update={"seed": seed})}
    )
    clips = prepared_clips(seeded)
    model = train.run(seeded, clips, tracks_url=training_tracks(seeded, clips))
    store = store_for(seeded)
    prefixes = {
        name: store.key_of(output.url)
        for name, output in (
            ("trained", export.run(seeded, clips, model_url=model.model_url)),
            ("random", export.run(seeded, clips, baseline="random")),
        )
    }
    manifest = read_manifest(store, prefixes["trained"])
    if split not in manifest.splits:
        raise ConfigError(f"{seeded.name}: the exports have no {split} split to score")
    if is_dense_export(manifest):
        return _correspondence(store, seeded, store.key_of(clips), prefixes, split)
    return _box_fitting(store, seeded, prefixes, split)


def _correspondence(
    store: ObjectStore, seeded: Experiment, clips: str, prefixes: dict, split: str
) -> DenseSeedResult:
    from vidssl.stages.dense_bench import read_correspondence_truth, score_correspondence

    cfg = seeded.bench.dense
    fraction = seeded.export.dense_clip_fraction
    truth = read_correspondence_truth(store, clips, split, cfg, clip_fraction=fraction)
    if not truth.pairs:
        raise ConfigError(f"{seeded.name}: the {split} clips carry no ground-truth flow to score")
    scores = {
        name: score_correspondence(store, prefix, split, truth, cfg)[0]
        for name, prefix in prefixes.items()
    }
    return DenseSeedResult(seeded.train.seed, scores["trained"], scores["random"])


def _box_fitting(store: ObjectStore, seeded: Experiment, prefixes: dict, split: str) -> SeedResult:
    from vidssl.stages import bench

    splits = {
        name: (bench.load_split(store, prefix, "train"), bench.load_split(store, prefix, split))
        for name, prefix in prefixes.items()
    }
    train_split, queries = splits["trained"]
    categories = [r["category"] for r in queries.records]
    videos = [r["video_id"] for r in queries.records]
    trained = hits(bench.nearest_fit_ious(train_split, queries, seeded))
    random = hits(bench.nearest_fit_ious(*splits["random"], seeded))
    draws = bench.random_fit_draws(train_split, queries, seeded)["random in-category fit"]
    in_category = np.mean([hits(ious) for ious in draws], axis=0)

    def score(per_query_hits: np.ndarray) -> float:
        return category_mean_hit_rate(per_query_hits, np.asarray(categories), np.ones(len(videos)))

    return SeedResult(
        seed=seeded.train.seed,
        trained=score(trained),
        random_embeddings=score(random),
        in_category_fit=score(in_category),  # the mean over draws: the score is linear in hits
        over_random=difference_interval(trained, random, categories, videos),
        over_in_category=difference_interval(trained, in_category, categories, videos),
    )


Result = SeedResult | DenseSeedResult


def run_seeds(
    experiment: Experiment, seeds: list[int], jobs: int = 1, split: str = "test"
) -> list[Result]:
    """`run_seed` for each seed, in order (see `run_runs`)."""
    return run_runs([(experiment, seed) for seed in seeds], jobs, split)


def run_runs(
    runs: list[tuple[Experiment, int]], jobs: int = 1, split: str = "test"
) -> list[Result]:
    """`run_seed` for each (experiment, seed), in order; with `jobs` > 1 in that many processes
    at once (spawned, each with `os.cpu_count() // jobs` torch threads, at least one), after
    each experiment's data stages (clips, and tracks where it trains on them) ran once here."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    _check_split(split)
    if jobs == 1 or len(runs) == 1:
        return [run_seed(experiment, seed, split) for experiment, seed in runs]
    from vidssl.stages.prepare import prepared_clips, training_tracks

    for experiment in {experiment.name: experiment for experiment, _ in runs}.values():
        training_tracks(experiment, prepared_clips(experiment))  # before any process needs them
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [
            pool.submit(_run_seed_with_threads, experiment, seed, threads, split)
            for experiment, seed in runs
        ]
        return [future.result() for future in futures]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")


def _run_seed_with_threads(experiment: Experiment, seed: int, threads: int, split: str) -> Result:
    import torch

    torch.set_num_threads(threads)
    name = f"{experiment.name} seed {seed}"
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}: %(message)s")
    return run_seed(experiment, seed, split)


def table(results: list[Result]) -> str:
    """The seeds' markdown table with a mean row: 3D mAP and its intervals, or PCK."""
    if results and isinstance(results[0], DenseSeedResult):
        return dense_table(results)  # type: ignore[arg-type]

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


def dense_table(results: list[DenseSeedResult]) -> str:
    columns = {"pck_avg": ".3f", "pck@4px": ".3f", "epe": ".2f"}  # key: format
    header = (
        "seed", "trained PCK avg", "trained PCK@4px", "trained EPE px",
        "random PCK avg", "random PCK@4px", "random EPE px",
        "trained - random PCK avg (95% CI over clips)",
    )  # fmt: skip

    def row(label: str, scores: list[dict], randoms: list[dict]) -> list[str]:
        return [
            label,
            *(format(np.mean([s[c] for s in scores]), f) for c, f in columns.items()),
            *(format(np.mean([s[c] for s in randoms]), f) for c, f in columns.items()),
        ]

    def interval(seeds: list[DenseSeedResult]) -> str:
        if any("per_clip" not in r.trained for r in seeds):
            return ""
        difference, low, high = dense_difference(seeds, seeds, "trained", "random_embeddings")
        return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"

    rows = [[*row(str(r.seed), [r.trained], [r.random_embeddings]), interval([r])] for r in results]
    trained, randoms = [r.trained for r in results], [r.random_embeddings for r in results]
    rows.append([*row("mean", trained, randoms), interval(results)])
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
    parser.add_argument(
        "--split",
        default="test",
        help="queries to score: test (to report) or val (to choose configurations; train "
        "frames stay the gallery)",
    )
    parser.add_argument(
        "--against",
        metavar="EXPERIMENT",
        help="a dense baseline on the same data: its seeds too, and the difference of the mean "
        "PCK avg over seeds with a 95%% interval over the split's clips",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        names = [args.experiment, *([args.against] if args.against else [])]
        experiments = [load_experiment(name) for name in names]  # `base:` chains resolved
        runs = [(experiment, seed) for experiment in experiments for seed in args.seeds]
        results = run_runs(runs, args.jobs, args.split)
        by_experiment = [
            results[i * len(args.seeds) : (i + 1) * len(args.seeds)]
            for i in range(len(experiments))
        ]
        for experiment, rows in zip(experiments, by_experiment, strict=True):
            what = "PCK" if isinstance(rows[0], DenseSeedResult) else "3D mAP"
            print(f"# {experiment.name}: {what} on {args.split} over training seeds\n")
            print(table(rows))
        if args.against:
            print(_comparison(experiments, by_experiment, args.split))
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _comparison(
    experiments: list[Experiment], results: list[list[Result]], split: str = "test"
) -> str:
    if not all(isinstance(rows[0], DenseSeedResult) for rows in results):
        raise ConfigError("--against compares dense models (PCK); both experiments must be dense")
    try:
        difference, low, high = dense_difference(*results)  # type: ignore[arg-type]
    except ValueError as exc:
        names = " and ".join(e.name for e in experiments)
        raise ConfigError(f"{names} cannot be compared query for query: {exc}") from None
    a, b = (e.name for e in experiments)
    return (
        f"{a} - {b}: {difference:+.3f} PCK avg (mean over seeds), "
        f"95% CI over {split} clips [{low:+.3f}, {high:+.3f}]"
    )


if __name__ == "__main__":
    sys.exit(main())
