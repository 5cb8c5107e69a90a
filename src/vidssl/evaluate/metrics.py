"""Scores of the benchmarks, each a plain function over arrays.

- pose: the fraction of queries with 3D IoU > 0.5 (the seed paper's "3D mAP"), Objectron's
  AP at 0.5 (detections ranked by confidence, cumulative TP/FP, VOC all-point interpolated AP),
  mean and median IoU;
- re-identification mAP: per query, the AP of its same-sequence neighbours, averaged;
- category accuracy: 1-NN category among frames of other sequences, averaged over categories;
- retrieval R@k: per query video, classes ranked by votes of its frames' nearest neighbours.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

import numpy as np

IOU_THRESHOLD = 0.5


def nearest_neighbours(
    queries: np.ndarray, bank: np.ndarray, k: int = 1, chunk: int = 4096, exclude_self: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices, similarities) of the k cosine nearest bank rows, chunk by chunk of queries
    (L2-normalised inputs); memory stays at chunk x len(bank)."""
    bank32 = bank.astype(np.float32, copy=False)
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk].astype(np.float32) @ bank32.T
        if exclude_self:
            rows = np.arange(similarity.shape[0])
            similarity[rows, rows + start] = -np.inf
        if k == 1:  # argmax allocates nothing the size of the chunk
            indices = similarity.argmax(axis=1)[:, None]
            yield indices, np.take_along_axis(similarity, indices, axis=1)
            continue
        top = np.argpartition(-similarity, min(k, similarity.shape[1] - 1), axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1)
        indices = np.take_along_axis(top, order, axis=1)
        yield indices, np.take_along_axis(similarity, indices, axis=1)


def average_precision(scores: np.ndarray, true_positive: np.ndarray, positives: int) -> float:
    """VOC all-point interpolated AP of detections ranked by score."""
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    hits = np.asarray(true_positive, bool)[order]
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, 1)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def pose_scores(ious: np.ndarray, confidences: np.ndarray) -> dict:
    ious = np.asarray(ious, float)
    hits = ious > IOU_THRESHOLD
    return {
        "queries": len(ious),
        "fraction_iou_over_0.5": float(hits.mean()) if len(ious) else float("nan"),
        "ap_at_0.5": average_precision(confidences, hits, len(ious)),
        "mean_iou": float(ious.mean()) if len(ious) else float("nan"),
        "median_iou": float(np.median(ious)) if len(ious) else float("nan"),
    }


def pose_table(ious: np.ndarray, confidences: np.ndarray, categories: list[str]) -> dict:
    """Pose scores overall and per category."""
    categories_array = np.asarray(categories)
    table = {"all": pose_scores(ious, confidences)}
    for category in sorted(set(categories)):
        mask = categories_array == category
        table[category] = pose_scores(np.asarray(ious)[mask], np.asarray(confidences)[mask])
    return table


def reidentification_map(features: np.ndarray, sequences: list[str]) -> float:
    """Mean over queries of the AP of same-sequence frames in its cosine ranking (self excluded)."""
    labels = np.asarray(sequences)
    aps = []
    for start in range(0, len(features), 1024):
        similarity = (
            features[start : start + 1024].astype(np.float32) @ features.astype(np.float32).T
        )
        for row, query in enumerate(range(start, min(start + 1024, len(features)))):
            scores = np.delete(similarity[row], query)
            relevant = np.delete(labels == labels[query], query)
            if relevant.any():
                aps.append(average_precision(scores, relevant, int(relevant.sum())))
    return float(np.mean(aps)) if aps else float("nan")


def category_accuracy(features: np.ndarray, categories: list[str], sequences: list[str]) -> float:
    """1-NN category accuracy among frames of other sequences, averaged over categories."""
    labels, seqs = np.asarray(categories), np.asarray(sequences)
    correct: dict[str, list[bool]] = defaultdict(list)
    for start in range(0, len(features), 1024):
        similarity = (
            features[start : start + 1024].astype(np.float32) @ features.astype(np.float32).T
        )
        for row, query in enumerate(range(start, min(start + 1024, len(features)))):
            scores = np.where(seqs == seqs[query], -np.inf, similarity[row])
            if np.isfinite(scores).any():
                correct[labels[query]].append(labels[int(np.argmax(scores))] == labels[query])
    return float(np.mean([np.mean(v) for v in correct.values()])) if correct else float("nan")


def video_retrieval_recall(
    train_features: np.ndarray,
    train_labels: list[str],
    query_features: np.ndarray,
    query_videos: list[str],
    query_labels: list[str],
    ks: tuple[int, ...] = (1, 5, 10, 20),
    neighbours: int = 20,
) -> dict[str, float]:
    """R@k: a query video hits if its class is among the k classes most voted for by the nearest
    training frames of its frames."""
    votes: dict[str, Counter] = defaultdict(Counter)
    labels = np.asarray(train_labels)
    position = 0
    for indices, _ in nearest_neighbours(query_features, train_features, k=neighbours):
        for row in indices:
            votes[query_videos[position]].update(labels[row].tolist())
            position += 1
    truth = dict(zip(query_videos, query_labels, strict=True))
    recalls = {}
    for k in ks:
        hits = [
            truth[video] in [c for c, _ in counter.most_common(k)]
            for video, counter in votes.items()
        ]
        recalls[f"R@{k}"] = float(np.mean(hits)) if hits else float("nan")
    return recalls
