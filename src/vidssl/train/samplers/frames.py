"""Temporal MoCo's baseline (Purushwalkam & Gupta, section 5: "we extract 3 frames per video
uniformly spaced apart in time"): `frames_per_clip` frames evenly spread over the clip, each an
image of its own; an example is two augmentations of one of them."""

from __future__ import annotations

import random

from vidssl.train.samplers import Sampler, register_sampler


@register_sampler("frames")
class Frames(Sampler):
    def anchors(self, num_frames: int) -> list[int]:
        count = min(self.cfg.frames_per_clip, num_frames)
        if count == 1:
            return [(num_frames - 1) // 2]
        return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})

    def examples_per_epoch(self, frames: int, clips: int) -> int:
        return min(frames, clips * self.cfg.frames_per_clip)

    def positions(self, num_frames: int, rng: random.Random, anchor: int | None) -> list[int]:
        frame = rng.choice(self.anchors(num_frames)) if anchor is None else anchor
        return [frame, frame]
