"""How sure a difference between two models' scores is: a bootstrap over test videos (frames
of one video are not independent queries, so whole videos are resampled), each resample scored
like the benchmark. 3D mAP: per category the fraction of queries with IoU > 0.5, averaged over
categories. A pooled per-query mean (the dense bench's PCK avg): the sum over the resampled
clips' queries over their count."""

from __future__ import annotations

import numpy as np

from vidssl.evaluate.metrics import IOU_THRESHOLD


def hits(ious: np.ndarray) -> np.ndarray:
    """1.0 where a query's fitted box has 3D IoU over 0.5."""
    return (np.asarray(ious) > IOU_THRESHOLD).astype(float)


def category_mean_hit_rate(hits: np.ndarray, categories: np.ndarray, weights: np.ndarray) -> float:
    """The paper's 3D mAP with each query counted `weights` times (a resample's multiplicity)."""
    rates = []
    for category in np.unique(categories):
        mask = categories == category
        total = weights[mask].sum()
        if total > 0:
            rates.append(float((hits[mask] * weights[mask]).sum() / total))
    return float(np.mean(rates))


def difference_interval(
    hits_a: np.ndarray,
    hits_b: np.ndarray,
    categories: list[str],
    videos: list[str],
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(difference, low, high): 3D mAP of A minus that of B on the same queries, and the 95%
    percentile interval of that difference over resamples of the test videos. A hit is 1 when
    the query's IoU is over 0.5 (`hits`), or a fraction: the share of several random draws."""
    hits_a, hits_b = np.asarray(hits_a, float), np.asarray(hits_b, float)
    categories_array = np.asarray(categories)
    video_ids, video_of_query = np.unique(np.asarray(videos), return_inverse=True)
    ones = np.ones(len(hits_a))
    difference = category_mean_hit_rate(hits_a, categories_array, ones) - category_mean_hit_rate(
        hits_b, categories_array, ones
    )
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(resamples):
        picked = np.bincount(
            rng.integers(0, len(video_ids), len(video_ids)), minlength=len(video_ids)
        )
        weights = picked[video_of_query].astype(float)
        samples.append(
            category_mean_hit_rate(hits_a, categories_array, weights)
            - category_mean_hit_rate(hits_b, categories_array, weights)
        )
    low, high = np.percentile(samples, [2.5, 97.5])
    return difference, float(low), float(high)


def pooled_difference_interval(
    clips_a: dict[str, tuple[float, int]],
    clips_b: dict[str, tuple[float, int]],
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(difference, low, high): A's pooled mean minus B's on the same queries, and the 95%
    percentile interval of that difference over resamples of the clips. Each model gives, per
    clip, (sum of its per-query scores, number of queries); both must score the same queries."""
    if set(clips_a) != set(clips_b):
        raise ValueError(
            f"the two models were scored on different clips: {sorted(set(clips_a) ^ set(clips_b))}"
        )
    names = sorted(clips_a)
    sums_a = np.array([clips_a[name][0] for name in names], float)
    sums_b = np.array([clips_b[name][0] for name in names], float)
    counts = np.array([clips_a[name][1] for name in names], float)
    if not np.array_equal(counts, [clips_b[name][1] for name in names]):
        raise ValueError("the two models were scored on different queries (counts differ per clip)")
    if counts.sum() == 0:
        raise ValueError("no queries to compare")
    difference = float((sums_a - sums_b).sum() / counts.sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), (resamples, len(names)))
    weights = np.stack([np.bincount(row, minlength=len(names)) for row in picks]).astype(float)
    totals = weights @ counts
    samples = (weights @ (sums_a - sums_b))[totals > 0] / totals[totals > 0]
    low, high = np.percentile(samples, [2.5, 97.5])
    return difference, float(low), float(high)
