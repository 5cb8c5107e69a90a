"""The CPU input-path profile (vidssl.perf.input): its structure on tiny frames, and its chain's
output against the trainer's data path (`TrainingExamples` reading a real shard) for the same
seeds. No speed is asserted: speeds are the benchmark's (`make perf-input`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidssl.config import PairsSampler, TrainConfig
from vidssl.perf.input import (
    OpClock,
    augmented_views,
    object_box,
    profile_chain,
    single_core,
    synthetic_clips,
)
from vidssl.shards import OutputWriter
from vidssl.store import open_store
from vidssl.train.augment import view_transform
from vidssl.train.data import TrainingExamples

FULL_CROP_OPS = [
    "decode", "object_crop", "to_tensor", "flip",
    "resized_crop", "color_jitter", "grayscale", "gaussian_blur",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_clips():
    return synthetic_clips(96, 72, clips=2, frames_per_clip=3, quality=90)


def test_synthetic_frames_are_jpegs_with_their_objects_box(tiny_clips):
    for clip in tiny_clips:
        assert clip.meta["num_frames"] == 3
        for position, frame in enumerate(clip.meta["frames"]):
            image = cv2.imdecode(np.frombuffer(clip.sample[f"f{position:03d}.jpg"], np.uint8), 1)
            assert image.shape == (72, 96, 3)
            x0, y0, x1, y1 = frame["crop_box"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def test_object_box_is_the_masks_extent_plus_a_tenth_a_side():
    mask = np.zeros((100, 200), bool)
    mask[20:60, 50:150] = True  # columns 50..149, rows 20..59: 100 x 40 px
    assert object_box(mask) == pytest.approx([40 / 200, 16 / 100, 160 / 200, 64 / 100])
    mask[:] = False
    mask[0:10, 190:200] = True  # the margin is clipped to the image
    assert object_box(mask) == pytest.approx([189 / 200, 0.0, 1.0, 11 / 100])
    assert object_box(np.zeros((4, 4), bool)) is None


@pytest.mark.parametrize(
    ("views_from", "ops"),
    [("crop", FULL_CROP_OPS), ("frame", [op for op in FULL_CROP_OPS if op != "object_crop"])],
)
def test_profile_names_every_op_with_positive_rates_and_shares_summing_to_one(
    tiny_clips, views_from, ops
):
    profile = profile_chain(tiny_clips, examples=4, views_from=views_from, warmup=1)
    assert list(profile["ops"]) == ops
    assert profile["frames"] == 8
    for op in profile["ops"].values():
        assert op["frames_per_s"] > 0 and op["frames_per_s_wall"] > 0
        assert 0 <= op["applied_share"] <= 1
        assert (op["frames_per_s_applied"] > 0) == (op["applied_share"] > 0)
    assert sum(op["share"] for op in profile["ops"].values()) == pytest.approx(1, abs=1e-3)
    assert profile["slowest_op"] in ops
    slowest_share = profile["ops"][profile["slowest_op"]]["share"]
    assert slowest_share == max(op["share"] for op in profile["ops"].values())
    geometry = profile["decode_crop_flip"]
    assert geometry["ops"] == ops[: ops.index("resized_crop") + 1]
    # The chain's time is its ops' sum: each op and the sub-chain are faster than the chain.
    chain = profile["chain"]["frames_per_s"]
    assert geometry["frames_per_s"] > chain > 0
    assert min(op["frames_per_s"] for op in profile["ops"].values()) > chain
    for op in ("decode", "to_tensor", "resized_crop"):  # applied to every frame
        assert profile["ops"][op]["applied_share"] == 1


def test_single_core_sets_one_thread_and_restores(tiny_clips):
    before = torch.get_num_threads(), cv2.getNumThreads()
    with single_core():
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before


def test_profiled_chain_gives_what_the_trainers_data_path_gives(tiny_clips, tmp_path: Path):
    """One clip of two frames in a real shard: `TrainingExamples` (seed 0, epoch 0: its stream
    seed is 0) yields the pair (0, 1) on every visit; the profiled chain, with a generator of
    seed 0 and the same global torch seed, gives the same uint8 224 px views, draw after draw."""
    clip = tiny_clips[0]
    sample = {name: clip.sample[name] for name in ("f000.jpg", "f001.jpg")}
    meta = {"num_frames": 2, "frames": clip.meta["frames"][:2]}
    uri = f"file://{tmp_path / 'store'}"
    writer = OutputWriter(open_store(uri), "clips", stage="test", stage_version=1, digest="d",
                          dataset="ds", config={}, inputs=[])  # fmt: skip
    writer.write("train", {"__key__": "clip0", "meta.json": meta, **sample})
    writer.publish()
    cfg = TrainConfig(
        sampler=PairsSampler(pairing="nearby"), augmentation="full", image_size=224,
        views_from="crop", shuffle_buffer=0, seed=0,
    )  # fmt: skip
    stream = iter(TrainingExamples(uri, "clips", cfg, epoch=0))
    transform = view_transform("full", 224)
    generator = torch.Generator().manual_seed(0)
    for draw in range(3):
        with single_core():
            torch.manual_seed(100 + draw)
            expected = next(stream)
            torch.manual_seed(100 + draw)
            views = augmented_views(clip, [0, 1], "crop", transform, generator, OpClock())
        assert list(expected) == ["first", "second"]
        for view, reference in zip(views, expected.values(), strict=True):
            assert view.dtype == torch.uint8 and view.shape == (3, 224, 224)
            assert torch.equal(view, reference)
        assert not torch.equal(views[0], views[1])  # two draws, two frames: different views
