"""TCN triplets as the SiamPose reference makes them: anchor; positive within +-1 kept frame;
negative more than 2 kept frames away, in the same clip. Anchors: every frame with a successor
(the reference's loader), so a clip needs 4 frames."""

from __future__ import annotations

import random

from vidssl.train.samplers import Sampler, register_sampler


@register_sampler("triplets")
class Triplets(Sampler):
    @property
    def min_frames(self) -> int:
        return 4

    def anchors(self, num_frames: int) -> list[int]:
        return list(range(max(0, num_frames - 1)))

    def examples_per_epoch(self, frames: int, clips: int) -> int:
        return max(clips, frames - clips)

    def positions(self, num_frames: int, rng: random.Random, anchor: int | None) -> list[int]:
        if num_frames < self.min_frames:
            raise ValueError("a TCN triplet needs a clip of at least 4 frames")
        anchor = rng.randrange(num_frames) if anchor is None else anchor
        positives = [p for p in (anchor - 1, anchor + 1) if 0 <= p < num_frames]
        negatives = [n for n in range(num_frames) if abs(n - anchor) > 2]
        return [anchor, rng.choice(positives), rng.choice(negatives)]
