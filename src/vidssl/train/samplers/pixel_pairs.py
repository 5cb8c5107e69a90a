"""PiCo's examples (section 3.3; config `PixelPairsSampler`): an anchor frame, K view frames and
up to P point pairs between them, as the method's batch contract asks (vidssl.train.methods.pico).

One example of a clip:

1. the anchor: a frame drawn uniformly, among those on which a track of two frames or more is
   alive when the sampler reads tracks (a clip without tracks gives no example);
2. the K views (`view_frames`): `anchored`, the top-K frames by track endpoints
   (vidssl.flow.anchors.anchor_views); `random`, K other frames at random (within T of the
   anchor with `trajectory_length`); for `static_frame` the anchor frame itself K times. When
   fewer than K frames qualify, the chosen ones repeat to fill K slots;
3. candidate pairs (`correspondence`): `tracks`, every track alive on the anchor and a view
   (anchors.point_pairs), its positions there; `static_frame` and `static_video`, P pixels drawn
   uniformly in the anchor's crop, each paired with the same (x, y) in a view drawn at random
   (identity correspondence, or zero flow);
4. every frame (anchor and each view slot) its own random resized crop (area fraction in
   `crop_scale`, aspect 3/4..4/3) to `train.image_size` square and a flip with probability 1/2
   (vidssl.train.point_views), the points carried through exactly; a pair is kept when both its
   points stay in their views, then P of the kept ones at random;
5. pixel-only augmentation of each view (colour jitter, grayscale, blur: augment.pixel_transform;
   `train.augmentation` is not used, the geometry being this sampler's).

Pair slots beyond the kept pairs are padding (`valid` False, points 0). An example none of whose
pairs survives the crops is dropped (None), as is a clip of fewer than two frames.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from vidssl.flow.anchors import anchor_views, point_pairs, random_views
from vidssl.flow.tracks import TRACKS_FIELD, Tracks, decode_tracks
from vidssl.train.augment import pixel_transform
from vidssl.train.point_views import ViewWindow, random_window
from vidssl.train.samplers import Sampler, register_sampler


@register_sampler("pixel_pairs")
class PixelPairs(Sampler):
    builds_examples = True

    @property
    def min_frames(self) -> int:
        """Two for every mode: the baselines learn from the clips PiCo learns from."""
        return 2

    def examples_per_epoch(self, frames: int, clips: int) -> int:
        return clips * self.cfg.examples_per_clip

    def example(
        self,
        sample: dict,
        meta: dict,
        rng: random.Random,
        generator: torch.Generator,
        train,  # type: ignore[no-untyped-def]
    ) -> dict[str, torch.Tensor] | None:
        built = self.unaugmented_example(sample, meta, rng, train.image_size)
        if built is None:
            return None
        photometric = pixel_transform(train.image_size)  # each view its own draw
        built["anchor"] = photometric(built["anchor"])
        built["views"] = torch.stack([photometric(view) for view in built["views"]])
        return built

    def unaugmented_example(
        self, sample: dict, meta: dict, rng: random.Random, size: int
    ) -> dict[str, torch.Tensor] | None:
        """`example` up to its pixel augmentation (steps 1-4): the views are the frames'
        crops, flips and resizes only, so a pair's two points show the same colour. Every
        draw comes from `rng` (the pixel augmentation of `example` from torch's own)."""
        cfg = self.cfg
        num_frames = int(meta["num_frames"])
        if num_frames < self.min_frames:
            return None
        tracks = None
        if cfg.needs_tracks:
            if TRACKS_FIELD not in sample:
                return None
            tracks = clip_tracks(sample, num_frames)
        point_rng = np.random.default_rng(rng.getrandbits(64))
        anchor = draw_anchor(tracks, num_frames, rng)
        if anchor is None:
            return None
        views = self._view_frames(tracks, num_frames, anchor, point_rng)
        if views.size == 0:
            return None
        frames = {p: decode_frame(sample, p) for p in {anchor, *views.tolist()}}
        height, width = frames[anchor].shape[-2:]
        anchor_window = random_window(width, height, size, cfg.crop_scale, rng)
        slots = np.resize(views, cfg.num_views)  # fewer frames than K: they repeat
        windows = [random_window(width, height, size, cfg.crop_scale, rng) for _ in slots]
        if tracks is not None and cfg.correspondence == "tracks":
            anchor_xy, view_xy, view_index = track_pairs(
                tracks, anchor, views, (width, height), cfg.trajectory_length, point_rng
            )
            view_index = slot_of_pairs(view_index, views.size, cfg.num_views, point_rng)
        else:
            anchor_xy, view_xy, view_index = static_pairs(
                anchor_window, cfg.num_views, cfg.max_pairs, point_rng
            )
        pairs = carried_pairs(anchor_window, windows, anchor_xy, view_xy, view_index)
        pairs = keep_some(pairs, cfg.max_pairs, point_rng)
        if pairs[0].shape[0] == 0:
            return None
        view_images = [
            window.render(frames[int(frame)]) for window, frame in zip(windows, slots, strict=True)
        ]
        return {
            "anchor": anchor_window.render(frames[anchor]),
            "views": torch.stack(view_images),
            **padded_pairs(*pairs, cfg.max_pairs),
        }

    def _view_frames(
        self, tracks: Tracks | None, num_frames: int, anchor: int, rng: np.random.Generator
    ) -> np.ndarray:
        cfg = self.cfg
        if cfg.correspondence == "static_frame":
            return np.array([anchor], np.int64)
        length = cfg.trajectory_length
        if cfg.view_frames == "anchored":
            assert tracks is not None  # needs_tracks
            return anchor_views(tracks, anchor, cfg.num_views, trajectory_length=length)
        return random_views(num_frames, anchor, cfg.num_views, rng, trajectory_length=length)


def clip_tracks(sample: dict, num_frames: int) -> Tracks:
    """The clip's tracks (its `tracks.npz` field), checked against its frame count."""
    try:
        tracks = decode_tracks(sample[TRACKS_FIELD])
    except ValueError as exc:
        raise ValueError(f"{sample.get('__url__')}: sample {sample['__key__']!r}: {exc}") from None
    if tracks.num_frames != num_frames:
        raise ValueError(
            f"{sample.get('__url__')}: sample {sample['__key__']!r} has {num_frames} frames but "
            f"tracks over {tracks.num_frames}: the tracks were computed on other clips"
        )
    return tracks


def decode_frame(sample: dict, position: int) -> torch.Tensor:
    """Kept frame `position` of a clip sample as uint8 (3, H, W) RGB."""
    # Imported here: the samplers package must import without vidssl.config and the store
    # (the GPU curve tool, vidssl.perf.siampose_curve, loads every sampler on a bare machine).
    from vidssl.clips import frame_name
    from vidssl.train.data import decode_rgb, to_tensor

    return to_tensor(decode_rgb(sample[frame_name(position)]))


def draw_anchor(tracks: Tracks | None, num_frames: int, rng: random.Random) -> int | None:
    """A frame drawn uniformly: with tracks, among the frames on which a track of two frames or
    more is alive (None when there is none)."""
    if tracks is None:
        return rng.randrange(num_frames)
    long = tracks.length >= 2
    change = np.zeros(num_frames + 1, np.int64)
    np.add.at(change, tracks.start[long], 1)
    np.add.at(change, tracks.end[long] + 1, -1)
    candidates = np.flatnonzero(np.cumsum(change[:num_frames]) > 0)
    return int(candidates[rng.randrange(candidates.size)]) if candidates.size else None


def track_pairs(
    tracks: Tracks,
    anchor: int,
    views: np.ndarray,
    frame_size: tuple[int, int],
    trajectory_length: int | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair vidssl.flow.anchors.point_pairs finds (one per track alive on the anchor and
    a view, `view_index` into `views`), in frame pixels: tracks computed at another resolution
    are rescaled about pixel edges."""
    every = tracks.num_tracks * max(1, views.size)
    anchor_xy, view_xy, view_index = point_pairs(
        tracks, anchor, views, every, rng, trajectory_length=trajectory_length
    )
    width, height = frame_size
    if (tracks.width, tracks.height) != (width, height):
        scale = np.array([width / tracks.width, height / tracks.height], np.float32)
        anchor_xy = (anchor_xy + 0.5) * scale - 0.5
        view_xy = (view_xy + 0.5) * scale - 0.5
    return anchor_xy, view_xy, view_index


def slot_of_pairs(
    view_index: np.ndarray, frames: int, slots: int, rng: np.random.Generator
) -> np.ndarray:
    """Pairs on view frame i (of `frames`) to one of the slots holding it (slots i, i + frames,
    ... below `slots`, as `np.resize` fills them), drawn uniformly: a frame that fills several
    slots shares its pairs among them, each slot in a crop of its own."""
    copies = (slots - 1 - view_index) // frames + 1
    return (view_index + frames * rng.integers(0, copies)).astype(np.int64)


def static_pairs(
    anchor_window: ViewWindow, num_views: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` pixels (integer x, y) uniform in the anchor's crop, each paired with the same
    (x, y) in a view slot drawn uniformly."""
    w = anchor_window
    xs = rng.integers(w.x0, w.x0 + w.width, count)
    ys = rng.integers(w.y0, w.y0 + w.height, count)
    xy = np.stack([xs, ys], axis=1).astype(np.float32)
    return xy, xy.copy(), rng.integers(0, num_views, count).astype(np.int64)


def carried_pairs(
    anchor_window: ViewWindow,
    windows: list[ViewWindow],
    anchor_xy: np.ndarray,
    view_xy: np.ndarray,
    view_index: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame-pixel pairs carried into their views; only pairs whose two points stay in their
    views are kept: (anchor_xy (M, 2), view_xy (M, 2), view_index (M,))."""
    mapped_anchor, keep = anchor_window.map_points(anchor_xy)
    mapped_view = np.zeros_like(mapped_anchor)
    for slot, window in enumerate(windows):
        mine = view_index == slot
        mapped_view[mine], inside = window.map_points(view_xy[mine])
        keep[mine] &= inside
    return mapped_anchor[keep], mapped_view[keep], view_index[keep].astype(np.int64)


def keep_some(
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray], count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At most `count` of the pairs, drawn uniformly without replacement (order kept)."""
    total = pairs[0].shape[0]
    if total <= count:
        return pairs
    keep = np.sort(rng.choice(total, size=count, replace=False))
    return tuple(array[keep] for array in pairs)  # type: ignore[return-value]


def padded_pairs(
    anchor_xy: np.ndarray, view_xy: np.ndarray, view_index: np.ndarray, slots: int
) -> dict[str, torch.Tensor]:
    """The batch contract's pair tensors, padded to `slots` pairs (`valid` False, zeros)."""
    count = anchor_xy.shape[0]
    out = {
        "anchor_xy": torch.zeros(slots, 2, dtype=torch.float32),
        "view_xy": torch.zeros(slots, 2, dtype=torch.float32),
        "view_index": torch.zeros(slots, dtype=torch.int64),
        "valid": torch.zeros(slots, dtype=torch.bool),
    }
    out["anchor_xy"][:count] = torch.from_numpy(anchor_xy)
    out["view_xy"][:count] = torch.from_numpy(view_xy)
    out["view_index"][:count] = torch.from_numpy(view_index)
    out["valid"][:count] = True
    return out
