"""How sure a 3D mAP difference is: a bootstrap over test videos (frames of one video are not
independent queries, so whole videos are resampled), each resample scored like the benchmark
(per category the fraction of queries with IoU > 0.5, averaged over categories)."""

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
