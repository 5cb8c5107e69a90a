"""Benchmark scores against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from vidssl.evaluate.bootstrap import (
    category_mean_hit_rate,
    difference_interval,
    pooled_difference_interval,
)
from vidssl.evaluate.metrics import (
    average_precision,
    category_accuracy,
    nearest_neighbours,
    objectron_average_precision,
    pose_table,
    reidentification_map,
    video_retrieval_recall,
)


def test_average_precision_by_hand():
    # ranked: TP, FP, TP; 2 positives: precision envelope 1 at r=.5, 2/3 at r=1
    assert average_precision([0.9, 0.8, 0.7], [True, False, True], 2) == pytest.approx(
        0.5 + 0.5 * 2 / 3
    )
    assert average_precision([0.1, 0.9], [True, False], 1) == pytest.approx(0.5)
    assert average_precision([0.5], [True], 2) == pytest.approx(0.5)  # a missed positive


def test_3d_map_is_the_unweighted_mean_over_categories():
    # cup: 1 of 4 queries over 0.5 (0.25); shoe: 1 of 1 (1.0). The paper's 3D mAP averages
    # the categories: (0.25 + 1.0) / 2 = 0.625; pooled over the 5 queries: 2 / 5 = 0.4.
    # An IoU of exactly 0.5 is not over 0.5.
    table = pose_table(np.array([0.6, 0.2, 0.5, 0.1, 0.9]), ["cup"] * 4 + ["shoe"])
    assert table["cup"]["fraction_iou_over_0.5"] == 0.25
    assert table["3d_map"] == pytest.approx(0.625)
    assert table["pooled"]["fraction_iou_over_0.5"] == pytest.approx(0.4)
    assert table["pooled"]["queries"] == 5 and table["shoe"]["median_iou"] == 0.9


def test_objectron_ap_counts_hits_in_dataset_order():
    # Objectron's eval.py: hits at IoU >= 0.5 in the order the frames come, recall over every
    # instance. IoUs 0.6, 0.2, 0.5, 0.1: hit, miss, hit, miss; 4 instances.
    # recall .25 .25 .5 .5, precision 1 .5 .667 .5; envelope at the recall steps 0->.25: 1,
    # .25->.5: 2/3, .5->1: 0. AP = .25 * 1 + .25 * 2/3 = 0.41667.
    assert objectron_average_precision(np.array([0.6, 0.2, 0.5, 0.1])) == pytest.approx(
        0.25 + 0.25 * 2 / 3
    )
    # Order matters (no confidence to sort by): misses first halve the first hit's precision.
    assert objectron_average_precision(np.array([0.1, 0.2, 0.6, 0.5])) == pytest.approx(0.5 * 0.5)
    # Unmatched instances lower recall: 2 hits of 4 instances, both first: AP = 0.5.
    assert objectron_average_precision(np.array([0.9, 0.8]), instances=4) == pytest.approx(0.5)


def test_nearest_neighbours_in_chunks_match_brute_force():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries = bank[:50] + 0.01
    found = np.concatenate([i for i, _ in nearest_neighbours(queries, bank, k=3, chunk=7)])
    expected = np.argsort(-(queries @ bank.T), axis=1)[:, :3]
    assert np.array_equal(found, expected)


def test_reidentification_ranks_test_queries_against_val_and_test():
    # Gallery: 2 val crops, 3 test crops; queries: the test crops only, each removed from its
    # own ranking; relevant = same sequence.
    features = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.8, 0.6], [0.1, 0.9]])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    sequences = ["a", "b", "a", "a", "b"]
    is_query = np.array([False, False, True, True, True])
    # query 2 (a): ranking 0 (a), 3 (a), 1, 4 -> AP 1. query 4 (b): 1 (b) first -> AP 1.
    # query 3 (a): similarities to 0, 1, 2, 4 = .8, .6, .78, .64 (normalised [.8,.6]):
    # 0 (a), 2 (a), 4, 1 -> AP 1. All three: mAP 1.
    assert reidentification_map(features, sequences, is_query) == pytest.approx(1.0)
    # Make val crop 1 a sequence-a frame that looks like b: query 2's ranking 0 (a), 3 (a),
    # 4 (b), 1 (a) -> hits at ranks 1, 2, 4 of 3 positives: AP = (1 + 1 + 3/4) / 3.
    # query 3: 0 (a), 2 (a), 4 (b), 1 (a): the same, (1 + 1 + 3/4) / 3. query 4 (b) has no
    # other b frame: not scored. mAP = 11/12.
    sequences = ["a", "a", "a", "a", "b"]
    assert reidentification_map(features, sequences, is_query) == pytest.approx(11 / 12)


def test_category_accuracy_is_the_1nn_training_category_over_queries():
    # 4 test queries whose nearest training crops are of categories cup, cup, shoe, cup:
    # queries cup, shoe, shoe, cup -> 3 of 4 right (over queries, not per category: 0.75).
    assert category_accuracy(
        ["cup", "shoe", "shoe", "cup"], ["cup", "cup", "shoe", "cup"]
    ) == pytest.approx(0.75)


def test_video_retrieval_uses_k_neighbours_for_r_at_k():
    train = np.array([[1.0, 0.0], [0.95, 0.3], [0.0, 1.0], [0.7, 0.7]])
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    queries = np.array([[0.9, 0.35], [0.1, 1.0]])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    labels = ["run", "jump", "swim", "walk"]
    # Video v1 (class run) is one frame whose nearest training frames are 1 (jump), 0 (run),
    # 3 (walk), 2 (swim). R@1: 1 neighbour votes jump -> miss. R@2: 2 neighbours vote jump,
    # run -> run is among the top 2 -> hit. Video v2 (swim): nearest 2 (swim) -> hit at both.
    recall = video_retrieval_recall(
        train, labels, queries, ["v1", "v2"], ["run", "swim"], ks=(1, 2)
    )
    assert recall == {"R@1": 0.5, "R@2": 1.0}


def test_bootstrap_resamples_whole_videos():
    # Video v1's two queries are hits for A, v2's are not; B hits nothing. A - B = 0.5. A
    # resample of the 2 videos is {v1, v1} (difference 1), {v2, v2} (0) or one of each (0.5),
    # so the 95% interval spans [0, 1]; frames of one video never split.
    difference, low, high = difference_interval(
        [1, 1, 0, 0], [0, 0, 0, 0], ["cup"] * 4, ["v1", "v1", "v2", "v2"], resamples=500
    )
    assert (difference, low, high) == (0.5, 0.0, 1.0)
    same = difference_interval([1, 0], [1, 0], ["cup", "shoe"], ["v1", "v2"], resamples=50)
    assert same == (0.0, 0.0, 0.0)


def test_category_mean_hit_rate_weights_queries():
    # cup: hits 1, 0 with weights 3, 1 -> 0.75; shoe: hit 1 -> 1.0; mean 0.875. A category
    # with no weight left (not drawn) does not count.
    hits = np.array([1.0, 0.0, 1.0, 0.0])
    categories = np.array(["cup", "cup", "shoe", "book"])
    assert category_mean_hit_rate(
        hits, categories, np.array([3.0, 1.0, 1.0, 0.0])
    ) == pytest.approx(0.875)


def test_knn_accuracy_takes_the_benchmarks_neighbours_ties_included():
    import torch

    from vidssl.train.embed import knn_accuracy

    # Two identical training embeddings: the bench's 1-NN (the lower index) decides, as for
    # every nearest-neighbour score; of classes with as many votes, the nearer wins.
    train = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])
    (indices, _), *_ = nearest_neighbours(query.numpy(), train.numpy(), k=1)
    assert indices[0, 0] == 0
    assert knn_accuracy(train, ["a", "b", "c"], query, ["a"], k=1) == 1.0
    assert knn_accuracy(train, ["b", "a", "c"], query, ["a"], k=1) == 0.0
    near = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert knn_accuracy(near, ["b", "a", "c"], query, ["b"], k=2) == 1.0  # a vote each: nearest


def test_pooled_difference_interval_agrees_with_scipys_bootstrap_over_clips():
    """The difference of two pooled per-query means, resampling whole clips, against
    scipy.stats.bootstrap's percentile interval of the same statistic over the same clips."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    counts = rng.integers(50, 400, 12)
    rates_a, rates_b = rng.uniform(0.2, 0.5, 12), rng.uniform(0.2, 0.5, 12)
    clips_a = {f"c{i}": (float(rates_a[i] * n), int(n)) for i, n in enumerate(counts)}
    clips_b = {f"c{i}": (float(rates_b[i] * n), int(n)) for i, n in enumerate(counts)}
    difference, low, high = pooled_difference_interval(clips_a, clips_b, resamples=20000)
    assert difference == pytest.approx(((rates_a - rates_b) * counts).sum() / counts.sum())
    assert low < difference < high

    def pooled(sums_a, sums_b, n, axis=-1):
        return (sums_a - sums_b).sum(axis=axis) / n.sum(axis=axis)

    reference = bootstrap(
        (rates_a * counts, rates_b * counts, counts.astype(float)),
        pooled,
        paired=True,
        method="percentile",
        n_resamples=20000,
        random_state=0,
    ).confidence_interval
    width = reference.high - reference.low
    assert low == pytest.approx(reference.low, abs=0.05 * width)
    assert high == pytest.approx(reference.high, abs=0.05 * width)


def test_pooled_difference_interval_refuses_different_queries():
    same = {"a": (3.0, 10), "b": (1.0, 5)}
    assert pooled_difference_interval(same, same) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="different clips"):
        pooled_difference_interval(same, {"a": (3.0, 10)})
    with pytest.raises(ValueError, match="different queries"):
        pooled_difference_interval(same, {"a": (3.0, 10), "b": (1.0, 6)})
