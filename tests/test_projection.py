"""The paper-run projection (vidssl.perf.projection): the pair count read from a real clean
stage manifest matches the pairs in its shards, and the public-figure estimate agrees with the
paper's own 24 hours on an RTX 2080 Ti."""

from __future__ import annotations

import pytest

from vidssl.perf.projection import (
    PAPER_EPOCHS,
    estimated_objectron_pairs,
    pairs_from_clean_manifest,
    paper_run,
)
from vidssl.shards import decode_json, read_manifest, read_split
from vidssl.stages import clean, ingest, synth
from vidssl.stages.base import store_for


def test_pair_count_from_the_clean_manifest_matches_its_shards(make_experiment):  # type: ignore[no-untyped-def]
    experiment = make_experiment()
    raw = synth.raw_url(synth.run(experiment))
    cleaned = clean.run(experiment, ingest.run(experiment, source_url=raw).url)
    store = store_for(experiment)
    prefix = store.key_of(cleaned.url)
    counted = sum(
        decode_json(sample)["num_frames"] - 1
        for sample in read_split(store, prefix, "train", split_by_node=False, split_by_worker=False)
    )
    assert counted > 0
    assert pairs_from_clean_manifest(read_manifest(store, prefix).details) == counted
    assert pairs_from_clean_manifest({}) is None


def test_the_estimate_matches_the_papers_own_training_time():
    """24 hours for 25 epochs of the estimated pairs is 100-200 pairs/s (200-400 images/s):
    the rate ResNet-50 trains at on one RTX 2080 Ti, the paper's GPU."""
    implied = estimated_objectron_pairs() * PAPER_EPOCHS / (24 * 3600)
    assert 100 < implied < 200
    assert paper_run(implied).hours == pytest.approx(24)
    run = paper_run(2000.0, pairs_per_epoch=288_000, source="clean manifest")
    assert run.hours == pytest.approx(1.0) and "clean manifest" in run.line()
    with pytest.raises(ValueError, match="positive"):
        paper_run(0)
