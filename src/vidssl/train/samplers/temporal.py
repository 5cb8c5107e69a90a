"""Frame Temporal Invariance (Purushwalkam & Gupta, section 5): the pairs
V_pairs = {(z_i, z_{i+k}) | i mod k = 0}, each frame then augmented on its own, so the positive
pair differs by what happened in the video over k frames (viewpoint, deformation, lighting)."""

from __future__ import annotations

import random

from vidssl.train.samplers import Sampler, register_sampler


@register_sampler("temporal")
class Temporal(Sampler):
    @property
    def min_frames(self) -> int:
        return self.cfg.offset + 1

    def anchors(self, num_frames: int) -> list[int]:
        k = self.cfg.offset
        return list(range(0, num_frames - k, k))

    def examples_per_epoch(self, frames: int, clips: int) -> int:
        """Estimated from the counts: a clip of n frames holds floor((n - 1) / k) pairs."""
        return max(clips, (frames - clips) // self.cfg.offset)

    def positions(self, num_frames: int, rng: random.Random, anchor: int | None) -> list[int]:
        anchors = self.anchors(num_frames)
        if not anchors:
            raise ValueError(f"a temporal pair needs a clip of at least {self.min_frames} frames")
        start = rng.choice(anchors) if anchor is None else anchor
        return [start, start + self.cfg.offset]
