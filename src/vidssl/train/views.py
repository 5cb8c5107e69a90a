"""Which frames of a clip form a training example (SiamPose section 3): the same frame twice,
nearby frames (`offset` kept frames apart: 200 ms at 5 fps), distant frames (uniform over the
video), or a TCN triplet (anchor; positive within +-1 kept frame; negative > 2 frames away).
And where to crop them: Objectron views share one window, the union of the two frames'
annotated boxes, so the camera's motion stays visible between the views."""

from __future__ import annotations

import random
from typing import Literal

import numpy as np

Pairing = Literal["same", "nearby", "distant", "tcn"]


def anchor_positions(pairing: Pairing, num_frames: int, offset: int = 1) -> list[int]:
    """The anchors of one epoch's examples of a clip, as the reference's data loader makes them
    (rjean/siampose hdf5_parser.py): every consecutive kept pair (i, i + offset) for nearby
    pairs and TCN triplets, every kept frame for same and distant pairs."""
    if pairing in ("nearby", "tcn"):
        step = offset if pairing == "nearby" else 1
        return list(range(max(0, num_frames - step)))
    return list(range(num_frames))


def examples_per_epoch(pairing: Pairing, frames: int, clips: int, offset: int = 1) -> int:
    """len(anchor_positions) summed over clips, from a split's frame and clip counts (exact
    when every clip has more frames than the offset, as cleaning's `min_frames` ensures)."""
    if pairing in ("nearby", "tcn"):
        return max(clips, frames - clips * (offset if pairing == "nearby" else 1))
    return frames


def sample_frames(
    pairing: Pairing,
    num_frames: int,
    rng: random.Random,
    offset: int = 1,
    anchor: int | None = None,
) -> list[int]:
    """Frame positions (into the clip's kept frames) of one example: 2 for pairs, 3 for TCN;
    from a random anchor unless one is given (see `anchor_positions`)."""
    if num_frames < 1:
        raise ValueError("a clip without frames has no views")
    anchor = rng.randrange(num_frames) if anchor is None else anchor
    if pairing == "same" or num_frames == 1:
        if pairing == "tcn":
            raise ValueError("a TCN triplet needs a clip of at least 4 frames")
        return [anchor, anchor]
    if pairing == "nearby":
        partner = anchor + offset if anchor + offset < num_frames else anchor - offset
        return [anchor, min(max(partner, 0), num_frames - 1)]
    if pairing == "distant":
        partner = rng.randrange(num_frames - 1)
        return [anchor, partner + (partner >= anchor)]
    if pairing == "tcn":
        positives = [p for p in (anchor - 1, anchor + 1) if 0 <= p < num_frames]
        negatives = [n for n in range(num_frames) if abs(n - anchor) > 2]
        if not negatives:
            raise ValueError("a TCN triplet needs a clip of at least 4 frames")
        return [anchor, rng.choice(positives), rng.choice(negatives)]
    raise ValueError(f"unknown pairing {pairing!r}")


def shared_crop_window(
    boxes: list[list[float]], width: int, height: int, square: bool = True
) -> tuple[int, int, int, int]:
    """Pixel window (x0, y0, x1, y1) covering every normalized box, squared around its centre."""
    array = np.asarray(boxes, float)
    x0, y0 = array[:, 0].min() * width, array[:, 1].min() * height
    x1, y1 = array[:, 2].max() * width, array[:, 3].max() * height
    if square:
        side = max(x1 - x0, y1 - y0, 2.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, x1, y0, y1 = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
    return round(x0), round(y0), round(x1), round(y1)


def crop_with_padding(image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """The window of `image`; parts outside the image are filled with edge pixels."""
    x0, y0, x1, y1 = window
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        import cv2

        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return image[y0:y1, x0:x1]
