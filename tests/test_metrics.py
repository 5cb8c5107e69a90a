"""Benchmark scores against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from vidssl.evaluate.metrics import (
    average_precision,
    category_accuracy,
    nearest_neighbours,
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


def test_pose_table_counts_fraction_and_ap():
    table = pose_table(
        np.array([0.6, 0.2, 0.9, 0.4]),
        np.array([0.9, 0.8, 0.7, 0.6]),
        ["cup", "cup", "shoe", "shoe"],
    )
    assert table["all"]["fraction_iou_over_0.5"] == 0.5
    # every query is a ground-truth box (4), two detections hit: recall .25 at p=1, .5 at p=2/3
    assert table["all"]["ap_at_0.5"] == pytest.approx(0.25 * 1 + 0.25 * 2 / 3)
    assert table["cup"]["queries"] == 2 and table["shoe"]["median_iou"] == pytest.approx(0.65)


def test_nearest_neighbours_in_chunks_match_brute_force():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries = bank[:50] + 0.01
    found = np.concatenate([i for i, _ in nearest_neighbours(queries, bank, k=3, chunk=7)])
    expected = np.argsort(-(queries @ bank.T), axis=1)[:, :3]
    assert np.array_equal(found, expected)


def test_reidentification_and_category_accuracy():
    features = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    assert reidentification_map(features, ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert reidentification_map(features, ["a", "b", "a", "b"]) < 1.0
    # other-sequence neighbours: 0 -> 1 (same cat), 2 -> 3 (same cat)
    assert category_accuracy(features, ["x", "x", "y", "y"], ["s0", "s1", "s2", "s3"]) == 1.0
    assert category_accuracy(features, ["x", "y", "x", "y"], ["s0", "s1", "s2", "s3"]) == 0.0


def test_video_retrieval_votes_over_frames():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    queries = np.array([[1.0, 0.05], [0.9, 0.2], [0.05, 1.0]])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    recall = video_retrieval_recall(
        train,
        ["run", "jump", "swim"],
        queries,
        ["v1", "v1", "v2"],
        ["run", "run", "swim"],
        ks=(1, 2),
        neighbours=1,
    )
    assert recall == {"R@1": 0.5, "R@2": 0.5}  # v2's frame votes for jump only
