"""Bench: score exported embeddings and write the run's report.

Objectron data: zero-shot 9-DoF pose by nearest-neighbour box fitting (test queries against
train references, also with 10% / 1% of the training sequences), against two references-only
baselines (a random training frame; a random training frame of the query's category),
re-identification mAP and category accuracy over val + test. UCF101-style data (no boxes):
video retrieval R@1/5/10/20. Output: `runs/<EXP>/<run-id>/metrics.json` and `report.md`.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from dataclasses import dataclass

import numpy as np

from vidssl.config import Experiment
from vidssl.evaluate.boxfit import FrameGeometry, fit_box
from vidssl.evaluate.iou3d import iou, symmetric_iou
from vidssl.evaluate.metrics import (
    category_accuracy,
    nearest_neighbours,
    pose_table,
    reidentification_map,
    video_retrieval_recall,
)
from vidssl.shards import decode_json, read_manifest, read_split
from vidssl.stages.base import store_for
from vidssl.stages.inspect import new_run_id

log = logging.getLogger(__name__)

#: SiamPose paper, Table 5 (Objectron, ResNet-50, 25 epochs): classif. acc., re-ID mAP, 3D mAP.
PAPER_TABLE_5 = {
    "Same - Full": (96.8, 0.59, 0.67),
    "Nearby - LC+PX": (95.7, 0.53, 0.69),
    "Nearby - Full": (94.5, 0.71, 0.66),
    "Distant - Full": (94.8, 0.85, 0.58),
}


@dataclass
class Split:
    features: np.ndarray
    records: list[dict]


def load_split(store, prefix: str, split: str) -> Split:  # type: ignore[no-untyped-def]
    features, records = [], []
    for sample in read_split(store, prefix, split, split_by_node=False, split_by_worker=False):
        features.append(np.load(io.BytesIO(sample["emb.npy"])).astype(np.float32))
        records.append(decode_json(sample))
    return Split(np.stack(features) if features else np.zeros((0, 1), np.float32), records)


def training_subset(records: list[dict], fraction: float, seed: int) -> np.ndarray:
    """Indices of the frames of a seeded `fraction` of the training sequences (at least one)."""
    videos = sorted({r["video_id"] for r in records})
    chosen = set(random.Random(seed).sample(videos, max(1, round(fraction * len(videos)))))
    return np.array([i for i, r in enumerate(records) if r["video_id"] in chosen])


def fitted_ious(
    queries: list[dict], references: list[dict], matches: np.ndarray, experiment: Experiment
) -> np.ndarray:
    cfg = experiment.bench
    ious = []
    for query, match in zip(queries, matches, strict=True):
        target = FrameGeometry.from_annotation(query["annotation"])
        fitted = fit_box(
            target, FrameGeometry.from_annotation(references[match]["annotation"]), cfg.refinements
        )
        symmetric = cfg.symmetric and query["category"] in cfg.symmetric_categories
        ious.append(symmetric_iou(target.box, fitted) if symmetric else iou(target.box, fitted))
    return np.array(ious)


def pose_benchmarks(name: str, train: Split, test: Split, experiment: Experiment) -> dict:
    results = {}
    for fraction in experiment.bench.label_fractions:
        subset = training_subset(train.records, fraction, experiment.bench.seed)
        references = [train.records[i] for i in subset]
        matches, scores = [], []
        for indices, similarities in nearest_neighbours(test.features, train.features[subset], k=1):
            matches.append(indices[:, 0])
            scores.append(similarities[:, 0])
        started = time.perf_counter()
        ious = fitted_ious(test.records, references, np.concatenate(matches), experiment)
        rate = len(ious) / (time.perf_counter() - started)
        categories = [r["category"] for r in test.records]
        table = pose_table(ious, np.concatenate(scores), categories)
        results[f"{fraction:g}"] = table
        share = table["all"]["fraction_iou_over_0.5"]
        log.info(
            "%s, %g of the labels: IoU>0.5 for %.3f (%.0f fits/s)", name, fraction, share, rate
        )
    return results


def random_fit_baselines(train: Split, test: Split, experiment: Experiment) -> dict:
    rng = np.random.default_rng(experiment.bench.seed)
    by_category: dict[str, list[int]] = {}
    for index, record in enumerate(train.records):
        by_category.setdefault(record["category"], []).append(index)
    categories = [r["category"] for r in test.records]
    anywhere = rng.integers(0, len(train.records), size=len(test.records))
    in_category = np.array(
        [rng.choice(by_category.get(c, range(len(train.records)))) for c in categories]
    )
    confidence = rng.uniform(size=len(test.records))
    return {
        "random fit": pose_table(
            fitted_ious(test.records, train.records, anywhere, experiment), confidence, categories
        ),
        "random in-category fit": pose_table(
            fitted_ious(test.records, train.records, in_category, experiment),
            confidence,
            categories,
        ),
    }


def run(experiment: Experiment, exports: dict[str, str], run_id: str | None = None) -> dict:
    """Score every named export (e.g. {"nearby": url, "random": url}); returns the metrics."""
    store = store_for(experiment)
    metrics: dict = {"experiment": experiment.name, "exports": exports, "models": {}}
    train = test = None
    for name, url in exports.items():
        prefix = store.key_of(url)
        splits = read_manifest(store, prefix).splits
        queries = "test" if "test" in splits else "val"  # a folder of videos has no test split
        train, test = load_split(store, prefix, "train"), load_split(store, prefix, queries)
        model: dict = {}
        objectron = bool(train.records) and "annotation" in train.records[0]
        if objectron:
            model["pose"] = pose_benchmarks(name, train, test, experiment)
            gallery = [load_split(store, prefix, s) for s in ("val", "test") if s in splits]
            features = np.concatenate([g.features for g in gallery])
            records = [r for g in gallery for r in g.records]
            sequences = [r["video_id"] for r in records]
            model["reid_map"] = reidentification_map(features, sequences)
            model["category_accuracy"] = category_accuracy(
                features, [r["category"] for r in records], sequences
            )
        else:
            model["retrieval"] = video_retrieval_recall(
                train.features, [r["category"] for r in train.records], test.features,
                [r["video_id"] for r in test.records], [r["category"] for r in test.records],
            )  # fmt: skip
        metrics["models"][name] = model
    if train is not None and train.records and "annotation" in train.records[0]:
        metrics["baselines"] = random_fit_baselines(train, test, experiment)
    run_prefix = f"runs/{experiment.name}/{run_id or new_run_id()}"
    store.put_text(f"{run_prefix}/metrics.json", json.dumps(metrics, indent=2))
    store.put_text(f"{run_prefix}/report.md", render_markdown(metrics))
    metrics["report_url"] = store.url(f"{run_prefix}/report.md")
    return metrics


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


POSE_HEADER = (
    "| embeddings | IoU>0.5 | AP@0.5 | mean IoU | median IoU | IoU>0.5, 10% labels "
    "| IoU>0.5, 1% labels | re-ID mAP | category acc. |"
)


def _pose_row(name: str, table: dict, pose: dict | None = None, reid=None, accuracy=None) -> str:  # type: ignore[no-untyped-def]
    full = table["all"]
    subsets = [
        _f((pose or {}).get(key, {}).get("all", {}).get("fraction_iou_over_0.5")) if pose else ""
        for key in ("0.1", "0.01")
    ]
    cells = [
        name,
        _f(full["fraction_iou_over_0.5"]),
        _f(full["ap_at_0.5"]),
        _f(full["mean_iou"]),
        _f(full["median_iou"]),
        *subsets,
        _f(reid) if pose else "",
        _f(accuracy) if pose else "",
    ]
    return "| " + " | ".join(cells) + " |"


def render_markdown(metrics: dict) -> str:
    lines = [f"# {metrics['experiment']}: benchmarks", ""]
    models = metrics["models"]
    if any("pose" in model for model in models.values()):
        lines += [
            "Zero-shot 9-DoF pose on the test split by nearest-neighbour box fitting. "
            "'IoU>0.5' is the fraction of queries whose fitted box has 3D IoU above 0.5 (the "
            "SiamPose paper's \"3D mAP\"); 'AP@0.5' is Objectron's average precision.",
            "",
            POSE_HEADER,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, model in models.items():
            if "pose" in model:
                pose = model["pose"]
                lines.append(
                    _pose_row(name, pose["1"], pose, model["reid_map"], model["category_accuracy"])
                )
        for name, table in metrics.get("baselines", {}).items():
            lines.append(_pose_row(f"{name} (no embeddings)", table))
        lines += [
            "",
            "The paper's numbers (SiamPose, Table 5: real Objectron, ResNet-50, 25 epochs):",
            "",
            "| paper's configuration | 3D mAP (IoU>0.5) | re-ID mAP | category acc. |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {m:.2f} | {r:.2f} | {a / 100:.3f} |"
            for name, (a, r, m) in PAPER_TABLE_5.items()
        ]
    retrieval = {name: model["retrieval"] for name, model in models.items() if "retrieval" in model}
    if retrieval:
        lines += ["", "| embeddings | R@1 | R@5 | R@10 | R@20 |", "|---|---:|---:|---:|---:|"]
        for name, recall in retrieval.items():
            values = " | ".join(_f(recall[k]) for k in ("R@1", "R@5", "R@10", "R@20"))
            lines.append(f"| {name} | {values} |")
    return "\n".join(lines) + "\n"
