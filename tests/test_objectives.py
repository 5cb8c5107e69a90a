"""Losses against hand-computed values, the stop-gradient, methods, samplers and presets."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from vidssl.config import (
    FramesSampler,
    PairsSampler,
    SimSiamMethod,
    TemporalSampler,
    TrainConfig,
    TripletsSampler,
)
from vidssl.train.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    SeparableGaussianBlur,
    flip_views,
    normalize,
    shift_hue,
    view_transform,
)
from vidssl.train.losses import negative_cosine, nt_xent, simsiam_loss, triplet_margin
from vidssl.train.methods import build_method
from vidssl.train.samplers import build_sampler
from vidssl.train.views import crop_with_padding, shared_crop_window

nt_xent_loss, triplet_loss = nt_xent, triplet_margin


def sample_frames(pairing, num_frames, rng, offset=1, anchor=None):  # type: ignore[no-untyped-def]
    """One example's frames from the sampler the experiment names (pairs, or TCN triplets)."""
    if pairing == "tcn":
        return build_sampler(TripletsSampler()).positions(num_frames, rng, anchor)
    sampler = build_sampler(PairsSampler(pairing=pairing, nearby_offset=offset))
    return sampler.positions(num_frames, rng, anchor)


def anchor_positions(pairing, num_frames, offset=1):  # type: ignore[no-untyped-def]
    if pairing == "tcn":
        return build_sampler(TripletsSampler()).anchors(num_frames)
    return build_sampler(PairsSampler(pairing=pairing, nearby_offset=offset)).anchors(num_frames)


def examples_per_epoch(pairing, frames, clips, offset=1):  # type: ignore[no-untyped-def]
    sampler = build_sampler(PairsSampler(pairing=pairing, nearby_offset=offset))
    return sampler.examples_per_epoch(frames, clips)


def test_negative_cosine_by_hand():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert float(negative_cosine(p, z)) == pytest.approx(-(0.0 + 1.0) / 2)


def test_simsiam_loss_is_the_symmetric_mean():
    p1, p2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    z1, z2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    # D(p1, z2) = -1, D(p2, z1) = -cos(45deg)
    assert float(simsiam_loss(p1, p2, z1, z2)) == pytest.approx(-(1 + math.sqrt(0.5)) / 2)


def test_no_gradient_through_the_stop_gradient_branch():
    p = torch.tensor([[1.0, 2.0]], requires_grad=True)
    z = torch.tensor([[3.0, 1.0]], requires_grad=True)
    simsiam_loss(p, p, z, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_simsiam_model_trains_encoder_through_the_predictor_side_only():
    torch.manual_seed(0)
    cfg = TrainConfig(
        backbone="resnet_small", method=SimSiamMethod(projection_dim=64, predictor_dim=16)
    )
    model = build_method(cfg)
    x = {"first": torch.randn(4, 3, 32, 32), "second": torch.randn(4, 3, 32, 32)}
    losses, z = model(x)
    assert list(losses) == ["simsiam"] and not z.requires_grad
    losses["simsiam"].backward()
    assert model.projector[0].weight.grad.abs().sum() > 0
    assert model.predictor[0].weight.grad.abs().sum() > 0


def test_nt_xent_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    # For view 0: positive (index 2) has sim 1, negatives (1, 3) have sim 0.
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * math.exp(0)))
    assert float(nt_xent_loss(z1, z2, tau)) == pytest.approx(expected, rel=1e-6)


def test_triplet_loss_by_hand():
    # The reference's TripletMarginLoss: Euclidean distances of unnormalised outputs.
    a = torch.tensor([[0.0, 0.0]])
    p = torch.tensor([[3.0, 4.0]])  # |a - p| = 5
    n = torch.tensor([[0.0, 6.0]])  # |a - n| = 6
    assert float(triplet_loss(a, p, n, 0.2)) == pytest.approx(0.0, abs=1e-5)  # 5 - 6 + 0.2 < 0
    assert float(triplet_loss(a, p, n, 2.0)) == pytest.approx(1.0, abs=1e-4)  # 5 - 6 + 2


def test_every_pair_anchors_count_the_reference_epoch():
    # A clip of 5 kept frames: nearby pairs (0,1) (1,2) (2,3) (3,4); with offset 2, three.
    assert anchor_positions("nearby", 5) == [0, 1, 2, 3]
    assert anchor_positions("nearby", 5, offset=2) == [0, 1, 2]
    assert anchor_positions("same", 5) == anchor_positions("distant", 5) == [0, 1, 2, 3, 4]
    assert anchor_positions("tcn", 5) == [0, 1, 2, 3]
    # A split of 3 clips with 5, 4 and 2 frames (11 frames): 4 + 3 + 1 = 8 nearby pairs.
    assert examples_per_epoch("nearby", frames=11, clips=3) == 8
    assert examples_per_epoch("distant", frames=11, clips=3) == 11
    rng = random.Random(0)
    assert [sample_frames("nearby", 5, rng, 1, anchor) for anchor in range(4)] == [
        [0, 1],
        [1, 2],
        [2, 3],
        [3, 4],
    ]


def test_nearby_pairs_are_the_offset_apart():
    rng = random.Random(0)
    for _ in range(500):
        a, b = sample_frames("nearby", 12, rng, offset=2)
        assert abs(a - b) == 2 and 0 <= b < 12


def test_same_pairs_repeat_a_frame():
    rng = random.Random(1)
    assert all(len(set(sample_frames("same", 9, rng))) == 1 for _ in range(100))


def test_distant_pairs_spread_over_the_video():
    rng = random.Random(2)
    gaps = Counter(abs(a - b) for a, b in (sample_frames("distant", 20, rng) for _ in range(4000)))
    assert 0 not in gaps
    assert max(gaps) >= 17 and np.mean([g for g, c in gaps.items() for _ in range(c)]) > 5


def test_tcn_negatives_are_far_and_positives_close():
    rng = random.Random(3)
    for _ in range(1000):
        anchor, positive, negative = sample_frames("tcn", 10, rng)
        assert abs(anchor - positive) == 1 and abs(anchor - negative) > 2
    with pytest.raises(ValueError, match="at least 4 frames"):
        sample_frames("tcn", 3, rng)


def test_shared_window_covers_both_boxes_and_is_square():
    window = shared_crop_window([[0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.5, 0.45]], 200, 100)
    x0, y0, x1, y1 = window
    assert x1 - x0 == y1 - y0
    assert x0 <= 20 and x1 >= 100 and y0 <= 20 and y1 >= 45
    crop = crop_with_padding(np.zeros((100, 200, 3), np.uint8), (-10, -10, 30, 30))
    assert crop.shape == (40, 40, 3)


@pytest.mark.parametrize("preset", ["px", "ulc_px", "lc_px", "full"])
def test_presets(preset):
    transform = view_transform(preset, 32)
    kinds = [type(t).__name__ for t in transform.transforms]
    crops = [t for t in transform.transforms if isinstance(t, v2.RandomResizedCrop)]
    if preset == "px":
        assert not crops and "Resize" in kinds
    else:
        low, _ = crops[0].scale
        assert low == {"ulc_px": 0.8, "lc_px": 0.6, "full": 0.2}[preset]
        assert (crops[0].ratio == (1.0, 1.0)) == (preset != "full")
    assert "RandomGrayscale" in kinds and kinds.count("RandomApply") == 2  # jitter, blur
    out = transform(torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8  # loaders hand over bytes


@pytest.mark.parametrize("size,kernel", [(64, 7), (224, 23)])
def test_separable_blur_matches_torchvision(size, kernel):
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    torch.manual_seed(3)
    ours = SeparableGaussianBlur(kernel, sigma=(1.5, 1.5))(image)
    reference = v2.functional.gaussian_blur(image, [kernel, kernel], [1.5, 1.5])
    assert ours.dtype == torch.uint8 and ours.shape == image.shape
    assert (ours.int() - reference.int()).abs().max() <= 1  # rounding only
    assert (ours.float() - image.float()).abs().mean() > 10  # it did blur noise


def _colour_images(count: int, size: int, seed: int) -> list[torch.Tensor]:
    """Random colours, a grey band (hue undefined) and the six primaries and secondaries."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(count):
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)
        image[:, :4] = image[:1, :4]
        corners = torch.tensor([[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255]])
        image[:, -1, :4] = corners.T.to(torch.uint8)
        images.append(image)
    return images


def test_shift_hue_matches_torchvision_adjust_hue():
    shifts = [-0.5, -0.1, -0.03, 0.0, 0.02, 0.1, 0.37, 0.5]
    worst, differing, total = 0, 0, 0
    for image, shift in zip(_colour_images(len(shifts), 48, seed=5), shifts, strict=True):
        ours, reference = shift_hue(image, shift), v2.functional.adjust_hue(image, shift)
        assert ours.dtype == torch.uint8 and ours.shape == image.shape
        difference = (ours.int() - reference.int()).abs()
        worst = max(worst, int(difference.max()))
        differing, total = differing + int((difference > 0).sum()), total + difference.numel()
    assert worst <= 1  # float rounding at a level's edge only
    assert differing / total < 1e-3
    # It did rotate hue: pure red by a third of the circle is pure green.
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2).contiguous()
    assert shift_hue(red, 1 / 3)[:, 0, 0].tolist() == [0, 255, 0]
    with pytest.raises(ValueError, match="hue_factor"):
        shift_hue(red, 0.6)


def test_colour_jitter_draws_and_applies_as_torchvision():
    """Same seed, same draws (order and factors), same output to one grey level."""
    ours, reference = ColorJitter(0.4, 0.4, 0.4, 0.1), v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    worst = 0
    for index, image in enumerate(_colour_images(12, 32, seed=7)):
        torch.manual_seed(index)
        mine = ours(image)
        torch.manual_seed(index)
        theirs = reference(image)
        worst = max(worst, int((mine.int() - theirs.int()).abs().max()))
        assert (theirs.int() - image.int()).abs().float().mean() > 1  # the jitter did act
    assert worst <= 1


def test_normalize_matches_torchvision_on_a_batch():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    as_float = v2.ToDtype(torch.float32, scale=True)(images)
    expected = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)(as_float)
    assert torch.allclose(normalize(images), expected, atol=1e-6)


def test_one_flip_decision_per_example():
    views = [torch.arange(6.0).reshape(1, 2, 3), torch.arange(6.0).reshape(1, 2, 3) + 10]
    flipped = [flip_views(views, torch.Generator().manual_seed(s)) for s in range(20)]
    for a, b in flipped:
        assert torch.equal(a.flip(-1) if a[0, 0, 0] == 2 else a, views[0])
        assert (a[0, 0, 0] == 2) == (b[0, 0, 0] == 12)  # both flipped or neither
    assert {bool(a[0, 0, 0] == 2) for a, _ in flipped} == {True, False}


def test_all_examples_stream_yields_each_pair_of_a_visit_once_and_mixes_clips():
    import json

    from vidssl.config import TrainConfig
    from vidssl.train.data import TrainingExamples

    cfg = TrainConfig(
        sampler=PairsSampler(pairing="nearby", examples_per_clip="all"), shuffle_buffer=6
    )
    stream = TrainingExamples("file:///unused", "unused", cfg, epoch=0)
    clips = [{"__key__": k, "meta.json": json.dumps({"num_frames": n})} for k, n in
             (("a", 4), ("b", 5), ("c", 3))]  # fmt: skip
    examples = list(stream._shuffled_examples(iter(clips), random.Random(0)))
    pairs = sorted((sample["__key__"], tuple(p)) for sample, _, p in examples)
    assert pairs == sorted(
        [("a", (i, i + 1)) for i in range(3)]
        + [("b", (i, i + 1)) for i in range(4)]
        + [("c", (i, i + 1)) for i in range(2)]
    )  # 3 + 4 + 2 consecutive pairs, each once
    first_six = [sample["__key__"] for sample, _, _ in examples[:6]]
    assert len(set(first_six)) >= 2  # the buffer mixes clips


def test_frames_sampler_takes_three_uniformly_spaced_frames_twice():
    sampler = build_sampler(FramesSampler())
    assert sampler.anchors(31) == [0, 15, 30] and sampler.anchors(2) == [0, 1]
    rng = random.Random(0)
    assert all(a == b for a, b in (sampler.positions(31, rng, None) for _ in range(50)))
    assert sampler.epoch_examples(frames=40, clips=4) == 12


def test_temporal_pairs_are_i_and_i_plus_k_with_i_a_multiple_of_k():
    sampler = build_sampler(TemporalSampler(offset=3))
    assert sampler.min_frames == 4
    assert sampler.anchors(10) == [0, 3, 6]  # (0,3) (3,6) (6,9); 9 has no partner
    rng = random.Random(0)
    for _ in range(100):
        i, j = sampler.positions(10, rng, None)
        assert i % 3 == 0 and j == i + 3 < 10
    with pytest.raises(ValueError, match="at least 4 frames"):
        sampler.positions(3, rng, None)


def test_a_method_and_a_sampler_that_disagree_on_views_are_one_config_error():
    from vidssl.config import ConfigError, parse_experiment

    raw = {
        "name": "x",
        "dataset": {"name": "x", "source": {"kind": "folder", "root": "/videos"}},
        "train": {"method": "tcn", "sampler": {"kind": "pairs"}},
    }
    with pytest.raises(ConfigError, match=r"tcn reads the views .*anchor.*pairs gives"):
        parse_experiment(raw)
