"""Bench: score exported embeddings and write the run's report.

Objectron data: zero-shot 9-DoF pose by nearest-neighbour box fitting (test queries against
train references, also with 10% / 1% of the training sequences), against two references-only
baselines (a random training frame; a random training frame of the query's category),
re-identification mAP and category accuracy over val + test. UCF101-style data (no boxes):
video retrieval R@1/5/10/20. Exports carrying per-pixel maps (dense models) are also scored
on correspondence and linear-probe segmentation (`vidssl.stages.dense_bench`, under `dense` in
the metrics). Output: `runs/<EXP>/<run-id>/metrics.json` and `report.md`.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from dataclasses import dataclass, field

import numpy as np

from vidssl.config import Experiment
from vidssl.evaluate import plots
from vidssl.evaluate.boxfit import FrameGeometry, fit_box, fitted_iou
from vidssl.evaluate.iou3d import iou
from vidssl.evaluate.metrics import (
    category_accuracy,
    mean_tables,
    nearest_neighbours,
    pose_table,
    reidentification_map,
    video_retrieval_recall,
)
from vidssl.evaluate.report import render_html, render_markdown, slug
from vidssl.metrics import stage_report
from vidssl.objectron.geometry import project_to_pixels
from vidssl.shards import decode_json, read_manifest, read_split
from vidssl.stages import dense_bench
from vidssl.stages.base import store_for
from vidssl.stages.inspect import new_run_id
from vidssl.train.data import decode_rgb, object_crop

log = logging.getLogger(__name__)


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
    return np.array(
        [
            fitted_iou(
                FrameGeometry.from_annotation(query["annotation"]),
                FrameGeometry.from_annotation(references[match]["annotation"]),
                cfg.refinements,
                cfg.symmetric and query["category"] in cfg.symmetric_categories,
            )
            for query, match in zip(queries, matches, strict=True)
        ]
    )


def pose_benchmarks(
    name: str, train: Split, test: Split, experiment: Experiment, curves: dict | None = None
) -> tuple[dict, float]:
    """Pose tables with 100%, 10%, 1% of the training sequences as references, and the category
    accuracy of the full set's nearest neighbours (the same 1-NN the box fit uses)."""
    results, accuracy = {}, float("nan")
    categories = [r["category"] for r in test.records]
    for fraction in experiment.bench.label_fractions:
        subset = training_subset(train.records, fraction, experiment.bench.seed)
        references = [train.records[i] for i in subset]
        matches, scores = [], []
        for indices, similarities in nearest_neighbours(test.features, train.features[subset], k=1):
            matches.append(indices[:, 0])
            scores.append(similarities[:, 0])
        matched = np.concatenate(matches)
        started = time.perf_counter()
        ious = fitted_ious(test.records, references, matched, experiment)
        rate = len(ious) / (time.perf_counter() - started)
        table = pose_table(ious, categories)
        results[f"{fraction:g}"] = table
        if fraction == 1.0:
            accuracy = category_accuracy(categories, [references[i]["category"] for i in matched])
            if curves is not None:
                curves[name] = (np.concatenate(scores), ious > 0.5)
        log.info(
            "%s, %g of the labels: 3D mAP %.3f (pooled IoU>0.5 %.3f; %.0f fits/s)",
            name,
            fraction,
            table["3d_map"],
            table["pooled"]["fraction_iou_over_0.5"],
            rate,
        )
    return results, accuracy


def nearest_fit_ious(train: Split, test: Split, experiment: Experiment) -> np.ndarray:
    """Per test query, the 3D IoU of the box fitted from its nearest training frame."""
    matches = [i[:, 0] for i, _ in nearest_neighbours(test.features, train.features, k=1)]
    return fitted_ious(test.records, train.records, np.concatenate(matches), experiment)


def random_fit_draws(train: Split, test: Split, experiment: Experiment) -> dict[str, list]:
    """Per draw, the per-query IoUs of boxes fitted from a random training frame, anywhere
    ("random fit") or of the query's category ("random in-category fit")."""
    rng = np.random.default_rng(experiment.bench.seed)
    by_category: dict[str, list[int]] = {}
    for index, record in enumerate(train.records):
        by_category.setdefault(record["category"], []).append(index)
    categories = [r["category"] for r in test.records]
    draws: dict[str, list] = {"random fit": [], "random in-category fit": []}
    for _ in range(experiment.bench.random_fit_draws):
        anywhere = rng.integers(0, len(train.records), size=len(test.records))
        in_category = np.array(
            [rng.choice(by_category.get(c, range(len(train.records)))) for c in categories]
        )
        for name, matched in (("random fit", anywhere), ("random in-category fit", in_category)):
            draws[name].append(fitted_ious(test.records, train.records, matched, experiment))
    return draws


def random_fit_baselines(train: Split, test: Split, experiment: Experiment) -> dict:
    """Table 1's random rows, scored like the models' fits and averaged over
    `bench.random_fit_draws` draws (the reference drew once per query)."""
    categories = [r["category"] for r in test.records]
    return {
        name: mean_tables([pose_table(ious, categories) for ious in draws])
        for name, draws in random_fit_draws(train, test, experiment).items()
    }


def clip_frames(store, clips_url: str, wanted: set[tuple[str, int]]) -> dict:  # type: ignore[no-untyped-def]
    """RGB frames (video id, position) -> image, read from the clip shards the exports embedded."""
    from vidssl.clips import frame_name

    prefix = store.key_of(clips_url)
    found = {}
    for split in read_manifest(store, prefix).splits:
        for sample in read_split(store, prefix, split, split_by_node=False, split_by_worker=False):
            meta = decode_json(sample)
            for position in range(meta["num_frames"]):
                if (meta["video_id"], position) in wanted:
                    found[(meta["video_id"], position)] = decode_rgb(sample[frame_name(position)])
    return found


@dataclass
class QueryExamples:
    """A few test queries (the first frame of the first test video of each category, up to
    `count`), their k nearest training frames and, once read (`frames`, one scan of the clips
    for every export), the RGB frames of both, for the figures."""

    queries: list[dict]
    neighbours: list[list[dict]]
    similarities: np.ndarray
    frames: dict = field(default_factory=dict)

    @classmethod
    def pick(cls, train: Split, test: Split, count: int = 9, k: int = 5) -> QueryExamples:
        first: dict[str, int] = {}
        for index, record in enumerate(test.records):
            first.setdefault(record["category"], index)
        picks = [first[category] for category in sorted(first)][:count]
        (indices, similarities), *_ = list(
            nearest_neighbours(test.features[picks], train.features, k=min(k, len(train.records)))
        )
        queries = [test.records[i] for i in picks]
        neighbours = [[train.records[j] for j in row] for row in indices]
        return cls(queries, neighbours, similarities)

    def wanted(self) -> set[tuple[str, int]]:
        return {_frame_key(r) for r in self.queries} | {
            _frame_key(r) for row in self.neighbours for r in row
        }

    def frame(self, record: dict) -> np.ndarray | None:
        return self.frames.get(_frame_key(record))


def _frame_key(record: dict) -> tuple[str, int]:
    return record["video_id"], record["frame_position"]


def fitted_box_figure(examples: QueryExamples, name: str, experiment: Experiment) -> bytes | None:
    """Query frames with the truth and the box fitted from the nearest neighbour."""
    panels = []
    for query, (reference, *_) in zip(examples.queries, examples.neighbours, strict=True):
        frame, reference_frame = examples.frame(query), examples.frame(reference)
        if frame is None or reference_frame is None:
            continue
        target = FrameGeometry.from_annotation(query["annotation"])
        fitted = fit_box(
            target,
            FrameGeometry.from_annotation(reference["annotation"]),
            experiment.bench.refinements,
        )
        height, width = frame.shape[:2]
        scale = np.array([width / target.image_size[0], height / target.image_size[1]])
        fitted_2d = (
            project_to_pixels(fitted, target.intrinsics) * scale
            if np.all(fitted[:, 2] < 0)
            else fitted[:, :2] * np.nan
        )
        caption = f"{query['category']}: IoU {iou(target.box, fitted):.2f}"
        panels.append((frame, reference_frame, target.box_2d * scale, fitted_2d, caption))
    if not panels:
        return None
    return plots.fitted_boxes(
        panels, f"{name}: truth (green) and box fitted from the nearest neighbour (red)"
    )


def neighbour_gallery_figure(examples: QueryExamples, name: str) -> bytes | None:
    """Each query crop beside its nearest training crops (same category framed green)."""
    rows = []
    for query, neighbours, similarities in zip(
        examples.queries, examples.neighbours, examples.similarities, strict=True
    ):
        frame = examples.frame(query)
        if frame is None:
            continue
        cells = []
        for reference, similarity in zip(neighbours, similarities, strict=True):
            reference_frame = examples.frame(reference)
            if reference_frame is not None:
                crop = object_crop(reference_frame, reference["annotation"])
                caption = f"{reference['category']} {similarity:.2f}"
                cells.append((crop, caption, reference["category"] == query["category"]))
        rows.append((object_crop(frame, query["annotation"]), query["category"], cells))
    if not rows:
        return None
    return plots.neighbour_gallery(
        rows, f"{name}: test crops (left) and their nearest training crops, cosine similarity"
    )


def run(
    experiment: Experiment,
    exports: dict[str, str],
    run_id: str | None = None,
    clips_url: str | None = None,
    queries: str | None = None,
    *,
    tracks_url: str = "",
) -> dict:
    """Score every named export (e.g. {"nearby": url, "random": url}); returns the metrics.
    With `clips_url` (the clips the exports embedded), the report shows fitted boxes on frames
    and dense exports get the dense benchmarks (`tracks_url`, the flow stage's output: its
    tracks are the correspondence truth where the clips carry no ground-truth flow).
    Queries come from the test split (val where there is none); `queries="val"` scores on val
    instead, to choose configurations without looking at test (`vidssl.sweep`). Its summary
    goes to the Pushgateway (vidssl.metrics)."""
    with stage_report(experiment.name, "bench", run_id) as summary:
        metrics = _score(experiment, exports, run_id, clips_url, queries, tracks_url)
        summary.succeeded()
    return metrics


def _score(
    experiment: Experiment,
    exports: dict[str, str],
    run_id: str | None,
    clips_url: str | None,
    queries: str | None,
    tracks_url: str = "",
) -> dict:
    store = store_for(experiment)
    training = experiment.train
    metrics: dict = {
        "experiment": experiment.name,
        "queries": queries or "test",
        "exports": exports,
        "training": {
            "method": training.method.kind,
            "pairing": getattr(training.sampler, "pairing", training.sampler.kind),
            "augmentation": training.augmentation,
        }
        if training
        else None,  # exports made by hand for an experiment that does not train
        "models": {},
    }
    train = test = None
    curves: dict = {}
    figures: dict[str, bytes] = {}
    examples: dict[str, QueryExamples] = {}
    dense: dict[str, str] = {}
    for name, url in exports.items():
        prefix = store.key_of(url)
        manifest = read_manifest(store, prefix)
        splits = manifest.splits
        if dense_bench.is_dense_export(manifest):
            dense[name] = url
        query_split = queries or ("test" if "test" in splits else "val")  # folders: no test
        train, test = load_split(store, prefix, "train"), load_split(store, prefix, query_split)
        model: dict = {}
        objectron = bool(train.records) and "annotation" in train.records[0]
        if objectron:
            model["pose"], model["category_accuracy"] = pose_benchmarks(
                name, train, test, experiment, curves
            )
            # Re-identification: test queries against a val + test gallery (the paper's).
            val = load_split(store, prefix, "val") if "val" in splits else None
            if query_split == "val":  # choosing on val: val queries, val gallery
                val = None
            gallery = [g for g in (val, test) if g is not None and g.records]
            model["reid_map"] = reidentification_map(
                np.concatenate([g.features for g in gallery]),
                [r["video_id"] for g in gallery for r in g.records],
                np.concatenate([np.full(len(g.records), g is test) for g in gallery]),
            )
        else:
            model["retrieval"] = video_retrieval_recall(
                train.features, [r["category"] for r in train.records], test.features,
                [r["video_id"] for r in test.records], [r["category"] for r in test.records],
            )  # fmt: skip
        metrics["models"][name] = model
        if objectron and clips_url and test.records:
            examples[name] = QueryExamples.pick(train, test)
        if len(test.records) > 2:
            figures[f"trajectories-{slug(name)}.png"] = plots.trajectories(
                test.features,
                [r["video_id"] for r in test.records],
                [r["timestamp"] for r in test.records],
                f"{name}: test videos, PCA of the embeddings (colour = time)",
            )
    if examples and clips_url:
        wanted = set().union(*(picked.wanted() for picked in examples.values()))
        frames = clip_frames(store, clips_url, wanted)  # one scan of the clips for every export
        for name, picked in examples.items():
            picked.frames = frames
            for kind, figure in (
                ("fitted-boxes", fitted_box_figure(picked, name, experiment)),
                ("neighbours", neighbour_gallery_figure(picked, name)),
            ):
                if figure:
                    figures[f"{kind}-{slug(name)}.png"] = figure
    if train is not None and train.records and "annotation" in train.records[0]:
        metrics["baselines"] = random_fit_baselines(train, test, experiment)
    if dense and clips_url:
        metrics["dense"], dense_figures = dense_bench.dense_benchmarks(
            store, experiment, dense, clips_url, tracks_url, queries
        )
        figures.update(dense_figures)
    elif dense:
        log.warning("dense exports %s: no clips URL, so no dense benchmarks", sorted(dense))
    if curves:
        figures["precision-recall.png"] = plots.precision_recall(
            curves, "pose: nearest-neighbour fits ranked by similarity (hit: IoU > 0.5)"
        )
    run_prefix = f"runs/{experiment.name}/{run_id or new_run_id()}"
    for figure, data in figures.items():
        store.put(f"{run_prefix}/plots/{figure}", data)
    metrics["figures"] = sorted(figures)
    markdown = render_markdown(metrics)
    store.put_text(f"{run_prefix}/metrics.json", json.dumps(metrics, indent=2))
    store.put_text(f"{run_prefix}/report.md", markdown)
    store.put_text(f"{run_prefix}/report.html", render_html(markdown, figures))
    metrics["report_html_url"] = store.url(f"{run_prefix}/report.html")
    metrics["report_url"] = store.url(f"{run_prefix}/report.md")
    return metrics


def kfp_metrics(result: dict) -> dict[str, float]:
    """The headline numbers of `run`'s result as flat KFP metrics, each named after the first
    word of its export's label (`nearby_3d_map`, `random_reid_map`, `imagenet_R@1`; dense
    exports: `pico_pck_avg`, `pico_epe`, `pico_miou`)."""
    flat: dict[str, float] = {}
    for name, model in result["models"].items():
        tag = name.split(" ")[0]
        if "pose" in model:
            pose = model["pose"]["1"]
            flat[f"{tag}_3d_map"] = pose["3d_map"]
            flat[f"{tag}_iou_over_0.5_pooled"] = pose["pooled"]["fraction_iou_over_0.5"]
            flat[f"{tag}_reid_map"] = model["reid_map"]
            flat[f"{tag}_category_accuracy"] = model["category_accuracy"]
        for key, value in model.get("retrieval", {}).items():
            flat[f"{tag}_{key}"] = value
    for name, scores in result.get("dense", {}).items():
        tag = name.split(" ")[0]
        for section, keys in (("correspondence", ("pck_avg", "epe")), ("segmentation", ("miou",))):
            for key in keys:
                if key in scores.get(section, {}):
                    flat[f"{tag}_{key}"] = scores[section][key]
    return flat
