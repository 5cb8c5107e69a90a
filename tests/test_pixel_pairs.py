"""PiCo's training examples (train.sampler `pixel_pairs`) on clips whose motion is known: a
camera panning over a smooth texture, so the flow is an analytic translation and the tracks
(vidssl.flow.tracks.track_points through that flow) follow scene points exactly.

The check is the scene itself, not our geometry: a pair's two points, carried through their
frames' crops, resizes and flips, must show the same colour (measured against pairs matched at
random), as the batch contract (vidssl.train.methods.pico) promises."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from vidssl.clips import frame_name
from vidssl.config import PixelPairsSampler, TrainConfig
from vidssl.flow.tracks import TRACKS_FIELD, encode_tracks, track_points
from vidssl.train.samplers import build_sampler

WIDTH, HEIGHT, FRAMES = 96, 72, 6
SIZE = 48  # train.image_size
PAN = (5, 3)  # the camera's window moves by (dx, dy) px per frame: the scene by (-dx, -dy)


def _scene(seed: int = 0) -> np.ndarray:
    """A smooth random colour texture (H, W, 3) uint8, features ~8 px wide: two points a pixel
    apart differ by a few levels, random points by ~65 (the scale the tests compare with)."""
    noise = np.random.default_rng(seed).random((24, 28, 3)).astype(np.float32)
    smooth = cv2.resize(noise, (28 * 8, 24 * 8), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth * 255, 0, 255).astype(np.uint8)


def clip_sample(
    key: str = "clip",
    *,
    pan: tuple[int, int] = PAN,
    frames: int = FRAMES,
    tracks: bool = True,
    track_scale: int = 1,
    seed: int = 0,
) -> dict:
    """A clip sample as the shards hold it (meta.json, f000.jpg...) with its tracks.npz: the
    tracks come from the tracker run on the exact flow of the pan (at 1/`track_scale` of the
    frame resolution when > 1: tracks computed on smaller frames)."""
    scene = _scene(seed)
    sample: dict = {"__key__": key, "__url__": "memory://clips"}
    for t in range(frames):
        x0, y0 = 10 + t * pan[0], 12 + t * pan[1]
        frame = scene[y0 : y0 + HEIGHT, x0 : x0 + WIDTH]
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 98])  # fmt: skip
        assert ok
        sample[frame_name(t)] = jpeg.tobytes()
    meta = {"key": key, "num_frames": frames, "width": WIDTH, "height": HEIGHT}
    sample["meta.json"] = json.dumps(meta).encode()
    if tracks:
        h, w = HEIGHT // track_scale, WIDTH // track_scale
        forward = np.zeros((frames - 1, h, w, 2), np.float32)
        forward[..., 0], forward[..., 1] = -pan[0] / track_scale, -pan[1] / track_scale
        sample[TRACKS_FIELD] = encode_tracks(
            track_points(forward, -forward, starts_per_frame=400, rng=np.random.default_rng(1))
        )
    return sample


def _sampler(**fields):  # type: ignore[no-untyped-def]
    settings = {"num_views": 2, "max_pairs": 256, "crop_scale": (0.5, 1.0), **fields}
    return build_sampler(PixelPairsSampler(**settings))


def _bilinear(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Colours (N, 3) of a (3, H, W) image at points (N, 2), pixel centres at integers."""
    height, width = image.shape[-2:]
    x = xy[:, 0].clamp(0, width - 1)
    y = xy[:, 1].clamp(0, height - 1)
    x0 = x.floor().long().clamp(max=width - 2)
    y0 = y.floor().long().clamp(max=height - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image.double()

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return img[:, yy, xx].T

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def colour_errors(example: dict) -> tuple[float, float]:
    """Mean absolute colour difference (0..255) between anchor and view at the valid pairs,
    and at the same anchor points paired with view points of other pairs (random pairs)."""
    valid = example["valid"]
    anchor_xy, view_xy = example["anchor_xy"][valid], example["view_xy"][valid]
    view_index = example["view_index"][valid]
    anchor_colour = _bilinear(example["anchor"], anchor_xy)
    views = example["views"]
    view_colour = torch.stack(
        [_bilinear(views[i], p[None])[0] for i, p in zip(view_index.tolist(), view_xy, strict=True)]
    )
    shuffled = torch.randperm(len(view_colour), generator=torch.Generator().manual_seed(0))
    matched = (anchor_colour - view_colour).abs().mean().item()
    random_pairs = (anchor_colour - view_colour[shuffled]).abs().mean().item()
    return matched, random_pairs


def _check_contract(example: dict, views: int, pairs: int) -> None:
    assert example["anchor"].shape == (3, SIZE, SIZE) and example["anchor"].dtype == torch.uint8
    assert example["views"].shape == (views, 3, SIZE, SIZE)
    assert example["views"].dtype == torch.uint8
    assert example["anchor_xy"].shape == (pairs, 2) and example["view_xy"].shape == (pairs, 2)
    assert example["anchor_xy"].dtype == example["view_xy"].dtype == torch.float32
    assert example["view_index"].shape == (pairs,) and example["view_index"].dtype == torch.int64
    assert example["valid"].shape == (pairs,) and example["valid"].dtype == torch.bool
    valid = example["valid"]
    count = int(valid.sum())
    assert count > 0 and valid[:count].all() and not valid[count:].any()  # padding at the end
    assert (example["anchor_xy"][~valid] == 0).all() and (example["view_index"][~valid] == 0).all()
    for xy in (example["anchor_xy"][valid], example["view_xy"][valid]):
        assert xy.min() >= -0.5 and xy.max() < SIZE - 0.5  # inside their views
    assert example["view_index"].min() >= 0 and example["view_index"].max() < views


def test_examples_follow_the_batch_contract_and_batch_by_the_default_collate():
    torch.manual_seed(0)
    sampler = _sampler(num_views=3, max_pairs=128)
    train = SimpleNamespace(image_size=SIZE)
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    examples = [sampler.example(clip_sample(), {"num_frames": FRAMES}, rng, generator, train)
                for _ in range(4)]  # fmt: skip
    for example in examples:
        _check_contract(example, views=3, pairs=128)
    batch = torch.utils.data.default_collate(examples)
    assert batch["views"].shape == (4, 3, 3, SIZE, SIZE) and batch["valid"].shape == (4, 128)


@pytest.mark.parametrize("view_frames", ["anchored", "random"])
@pytest.mark.parametrize("track_scale", [1, 2])
def test_track_pairs_point_at_the_same_scene_content(view_frames, track_scale):
    sampler = _sampler(view_frames=view_frames)
    sample = clip_sample(track_scale=track_scale)
    rng = random.Random(1)
    moved = set()
    for _ in range(6):
        example = sampler.unaugmented_example(sample, {"num_frames": FRAMES}, rng, SIZE)
        _check_contract(example, views=2, pairs=256)
        matched, random_pairs = colour_errors(example)
        assert matched < 3 and random_pairs > 10 * matched, (matched, random_pairs)
        valid = example["valid"]
        # the views really are other frames: the scene moved between them
        moved.add(bool((example["anchor_xy"][valid] != example["view_xy"][valid]).any()))
    assert moved == {True}


def test_anchored_views_are_the_frames_furthest_along_the_tracks():
    """A pan keeps every track alive until it leaves the frame: the frames holding most
    endpoints are far from the anchor, and pairs come from both views."""
    sampler = _sampler(view_frames="anchored", num_views=2)
    rng = random.Random(2)
    for _ in range(4):
        example = sampler.unaugmented_example(clip_sample(), {"num_frames": FRAMES}, rng, SIZE)
        used = set(example["view_index"][example["valid"]].tolist())
        assert used == {0, 1}


def test_static_frame_pairs_are_the_same_scene_point_in_other_crops_of_the_anchor():
    sampler = _sampler(correspondence="static_frame", view_frames="random", num_views=2)
    sample = clip_sample(tracks=False)  # needs no tracks
    rng = random.Random(3)
    for _ in range(4):
        example = sampler.unaugmented_example(sample, {"num_frames": FRAMES}, rng, SIZE)
        _check_contract(example, views=2, pairs=256)
        matched, random_pairs = colour_errors(example)
        assert matched < 3 and random_pairs > 10 * matched, (matched, random_pairs)


def test_static_video_pairs_assume_zero_flow():
    """Other frames, the same (x, y): right on a still camera, wrong (by the pan) on a moving
    one, where the track pairs are right."""
    sampler = _sampler(correspondence="static_video", view_frames="random")
    still, panning = clip_sample(pan=(0, 0), tracks=False), clip_sample(tracks=False)
    rng = random.Random(4)
    errors = {"still": [], "panning": []}
    for _ in range(4):
        for name, sample in (("still", still), ("panning", panning)):
            example = sampler.unaugmented_example(sample, {"num_frames": FRAMES}, rng, SIZE)
            _check_contract(example, views=2, pairs=256)
            errors[name].append(colour_errors(example))
    assert all(matched < 3 and shuffled > 10 * matched for matched, shuffled in errors["still"])
    # on the pan, zero flow pairs other content: as far off as random pairs
    assert all(matched > 0.7 * shuffled for matched, shuffled in errors["panning"])


def test_full_examples_add_pixel_augmentation_only():
    """`example` = `unaugmented_example` + colour operations: same points, same views' layout
    (the augmented anchor's brightness profile still correlates with the unaugmented one)."""
    sampler = _sampler()
    sample = clip_sample()
    train = SimpleNamespace(image_size=SIZE)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(5)
    augmented = sampler.example(sample, {"num_frames": FRAMES}, random.Random(9), generator, train)
    plain = sampler.unaugmented_example(sample, {"num_frames": FRAMES}, random.Random(9), SIZE)
    for key in ("anchor_xy", "view_xy", "view_index", "valid"):
        assert torch.equal(augmented[key], plain[key])
    grey = [image.double().mean(0).flatten() for image in (augmented["anchor"], plain["anchor"])]
    assert torch.corrcoef(torch.stack(grey))[0, 1] > 0.5


def test_clips_without_tracks_or_frames_give_no_example():
    sampler = _sampler()
    rng = random.Random(0)
    assert sampler.unaugmented_example(clip_sample(tracks=False), {"num_frames": FRAMES}, rng,
                                       SIZE) is None  # fmt: skip
    one = clip_sample(frames=2)
    assert sampler.unaugmented_example(one, {"num_frames": 1}, rng, SIZE) is None
    for correspondence in ("static_video", "static_frame"):
        static = _sampler(correspondence=correspondence, view_frames="random")
        assert static.unaugmented_example(one, {"num_frames": 1}, rng, SIZE) is None
    mismatched = clip_sample()
    with pytest.raises(ValueError, match="'clip' has 5 frames but tracks over 6"):
        sampler.unaugmented_example(mismatched, {"num_frames": 5}, rng, SIZE)


def test_a_pixel_pairs_epoch_is_examples_per_clip_per_clip():
    cfg = TrainConfig(
        method={"kind": "pico"}, sampler={"kind": "pixel_pairs", "examples_per_clip": 3}
    )
    assert build_sampler(cfg.sampler).epoch_examples(frames=500, clips=7) == 21


def test_the_same_seed_draws_the_same_example():
    """A resumed run redraws the batches it skips: examples depend on the stream's seed only."""
    sampler, sample = _sampler(), clip_sample()
    first, again = (
        sampler.unaugmented_example(sample, {"num_frames": FRAMES}, random.Random(11), SIZE)
        for _ in range(2)
    )
    assert all(torch.equal(first[key], again[key]) for key in first)
    other = sampler.unaugmented_example(sample, {"num_frames": FRAMES}, random.Random(12), SIZE)
    assert not torch.equal(first["anchor_xy"], other["anchor_xy"])
