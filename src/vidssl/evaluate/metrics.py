"""Scores of the benchmarks, each a plain function over arrays, defined as the SiamPose paper
(section 4 and its supplement) and its public code (rjean/siampose `zero_shot_pose.py`,
`other_metrics.py`) define them; where the two disagree the paper wins, noted at the function.

- pose: per category, the fraction of queries whose fitted box has 3D IoU > 0.5; the paper's
  "3D mAP" is the unweighted mean of the 9 categories' fractions (its Table 1 "overall" column);
  the fraction over all queries pooled is reported too, named apart. Objectron's AP@0.5 is
  computed as Objectron's `objectron/dataset/eval.py` does (see `objectron_average_precision`).
- re-identification mAP: test queries ranked against a val + test gallery (the query removed),
  same-sequence frames relevant, AP averaged over queries;
- category accuracy: the 1-NN training crop's category, averaged over test queries;
- retrieval R@k: per query video, the k nearest training frames of each of its frames vote;
  a hit when the video's class is among the k most voted classes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

import numpy as np

IOU_THRESHOLD = 0.5


def cosine_similarities(
    queries: np.ndarray, bank: np.ndarray, chunk: int = 4096
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float32 similarities of queries[start : start + chunk] to every bank row), chunk
    by chunk of queries (L2-normalised inputs): the one scan behind every nearest-neighbour
    score (kNN, box-fit references, retrieval, re-identification); memory stays at
    chunk x len(bank)."""
    bank32 = bank.astype(np.float32, copy=False)
    for start in range(0, len(queries), chunk):
        yield start, queries[start : start + chunk].astype(np.float32) @ bank32.T


def nearest_neighbours(
    queries: np.ndarray, bank: np.ndarray, k: int = 1, chunk: int = 4096, exclude_self: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices, similarities) of the k cosine nearest bank rows, nearest first, chunk by chunk
    of queries (L2-normalised inputs); memory stays at chunk x len(bank)."""
    for start, similarity in cosine_similarities(queries, bank, chunk):
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


def _voc_average_precision(hits_in_rank_order: np.ndarray, positives: int) -> float:
    """VOC all-point interpolated AP: recall/precision of the cumulative hits, the precision
    envelope, summed over the recall steps (recall 0 and 1 appended with precision 0)."""
    if positives == 0:
        return float("nan")
    hits = np.asarray(hits_in_rank_order, bool)
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, 1)
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    steps = np.where(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def average_precision(scores: np.ndarray, true_positive: np.ndarray, positives: int) -> float:
    """VOC all-point interpolated AP of detections ranked by score."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    return _voc_average_precision(np.asarray(true_positive, bool)[order], positives)


def objectron_average_precision(ious: np.ndarray, instances: int | None = None) -> float:
    """AP at 3D IoU 0.5 as Objectron's evaluation computes it (`eval.py` + `metrics.py`): one
    prediction per query, a hit when IoU >= 0.5, hits and misses accumulated in dataset order
    (Objectron's boxes carry no confidence to sort by), recall over every annotated instance,
    VOC interpolation. With one box per frame this is close to the squared hit rate, so it is
    not on the paper's "3D mAP" scale."""
    ious = np.asarray(ious, float)
    return _voc_average_precision(
        ious >= IOU_THRESHOLD, len(ious) if instances is None else instances
    )


def pose_scores(ious: np.ndarray) -> dict:
    ious = np.asarray(ious, float)
    return {
        "queries": len(ious),
        "fraction_iou_over_0.5": float((ious > IOU_THRESHOLD).mean())
        if len(ious)
        else float("nan"),
        "objectron_ap_at_0.5": objectron_average_precision(ious),
        "mean_iou": float(ious.mean()) if len(ious) else float("nan"),
        "median_iou": float(np.median(ious)) if len(ious) else float("nan"),
    }


def pose_table(ious: np.ndarray, categories: list[str]) -> dict:
    """Pose scores per category, `pooled` over all queries, and the paper's `3d_map`: the
    unweighted mean over categories of the fraction with IoU > 0.5 (Table 1's "overall"; the
    reference code prints the per-category fractions only, the paper averages them)."""
    categories_array, ious = np.asarray(categories), np.asarray(ious, float)
    table: dict = {"pooled": pose_scores(ious)}
    for category in sorted(set(categories)):
        table[category] = pose_scores(ious[categories_array == category])
    per_category = [table[c]["fraction_iou_over_0.5"] for c in sorted(set(categories))]
    table["3d_map"] = float(np.mean(per_category)) if per_category else float("nan")
    return table


def mean_tables(tables: list[dict]) -> dict:
    """The entry-wise mean of tables of the same shape (nested dicts averaged alike): pose
    tables of several random draws."""
    return {
        key: mean_tables([t[key] for t in tables])
        if isinstance(value, dict)
        else float(np.mean([t[key] for t in tables]))
        for key, value in tables[0].items()
    }


def reidentification_map(
    features: np.ndarray, sequences: list[str], is_query: np.ndarray | None = None
) -> float:
    """Mean over queries of the AP of same-sequence frames in the query's cosine ranking of the
    whole gallery (`features`), the query itself removed. The paper: the gallery is val + test,
    the queries are test crops (`is_query`); the reference code ranked one set against itself."""
    labels = np.asarray(sequences)
    queries = np.flatnonzero(np.ones(len(features), bool) if is_query is None else is_query)
    aps = []
    for start, similarity in cosine_similarities(features[queries], features, chunk=1024):
        for row, query in enumerate(queries[start : start + len(similarity)]):
            scores = np.delete(similarity[row], query)
            relevant = np.delete(labels == labels[query], query)
            if relevant.any():
                aps.append(average_precision(scores, relevant, int(relevant.sum())))
    return float(np.mean(aps)) if aps else float("nan")


def category_accuracy(query_categories: list[str], neighbour_categories: list[str]) -> float:
    """The fraction of test queries whose nearest training crop has their category, over all
    queries of all categories (the reference's `other_metrics.py`: matches / queries; the
    paper's "average accuracy across all categories" read the same way)."""
    if not query_categories:
        return float("nan")
    return float(np.mean(np.asarray(query_categories) == np.asarray(neighbour_categories)))


def video_retrieval_recall(
    train_features: np.ndarray,
    train_labels: list[str],
    query_features: np.ndarray,
    query_videos: list[str],
    query_labels: list[str],
    ks: tuple[int, ...] = (1, 5, 10, 20),
) -> dict[str, float]:
    """R@k (the paper's supplement): for each frame of a query video, its k nearest training
    frames; their classes' frequencies over the whole video; a hit when the video's class is
    among the k most frequent."""
    labels = np.asarray(train_labels)
    truth = dict(zip(query_videos, query_labels, strict=True))
    recalls = {}
    for k in ks:
        votes: dict[str, Counter] = defaultdict(Counter)
        position = 0
        for indices, _ in nearest_neighbours(query_features, train_features, k=k):
            for row in indices:
                votes[query_videos[position]].update(labels[row].tolist())
                position += 1
        hits = [
            truth[video] in [c for c, _ in counter.most_common(k)]
            for video, counter in votes.items()
        ]
        recalls[f"R@{k}"] = float(np.mean(hits)) if hits else float("nan")
    return recalls
