"""SiamPose's pairs (section 3): the same frame twice, nearby frames (`nearby_offset` kept
frames apart: 200 ms at 5 fps), or distant frames (uniform over the clip). The anchors are the
reference's loader's (rjean/siampose hdf5_parser.py): every consecutive kept pair (i, i +
offset) for nearby pairs, every kept frame for same and distant pairs."""

from __future__ import annotations

import random

from vidssl.train.samplers import Sampler, register_sampler


@register_sampler("pairs")
class Pairs(Sampler):
    def anchors(self, num_frames: int) -> list[int]:
        if self.cfg.pairing == "nearby":
            return list(range(max(0, num_frames - self.cfg.nearby_offset)))
        return list(range(num_frames))

    def examples_per_epoch(self, frames: int, clips: int) -> int:
        """Exact when every clip has more frames than the offset (cleaning's `min_frames`)."""
        if self.cfg.pairing == "nearby":
            return max(clips, frames - clips * self.cfg.nearby_offset)
        return frames

    def positions(self, num_frames: int, rng: random.Random, anchor: int | None) -> list[int]:
        if num_frames < 1:
            raise ValueError("a clip without frames has no views")
        anchor = rng.randrange(num_frames) if anchor is None else anchor
        pairing, offset = self.cfg.pairing, self.cfg.nearby_offset
        if pairing == "same" or num_frames == 1:
            return [anchor, anchor]
        if pairing == "nearby":
            partner = anchor + offset if anchor + offset < num_frames else anchor - offset
            return [anchor, min(max(partner, 0), num_frames - 1)]
        partner = rng.randrange(num_frames - 1)  # distant: any other frame
        return [anchor, partner + (partner >= anchor)]
