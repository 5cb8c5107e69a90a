"""What a measured training rate means for SiamPose's paper run: one epoch is every kept
consecutive frame pair of the cleaned Objectron training split (the paper's "nearby" pairs:
frames subsampled to ~5 fps, a pair 200 ms apart), 25 epochs (10 warm-up + 15 cosine; the paper
took 24 hours on one RTX 2080 Ti).

The pair count comes from the clean stage's manifest when it has run on real Objectron (its
training split's kept frames minus one per clip), else from public figures, each stated:

- Objectron: 14,819 annotated videos, 4 million annotated images (Ahmadyan et al., CVPR 2021);
- the official train/test split holds about 85 % of the videos in train (an estimate: the
  per-category index files are not on this machine);
- the paper's 90 % / 10 % train/val split of those videos;
- 1 frame kept in 5 (DESIGN.md "the seed's cleaning": ~5-6 fps from 30 fps);
- cleaning removes about 15 % (the paper: "reduced the original dataset size by roughly 15%").

That gives about 509,000 pairs an epoch; at the paper's 24 hours for 25 epochs, about 150
pairs/s (300 images/s) on the RTX 2080 Ti: what ResNet-50 trains at on that card, so the
estimate is of the right size.
"""

from __future__ import annotations

from dataclasses import dataclass

OBJECTRON_VIDEOS = 14_819
OBJECTRON_IMAGES = 4_000_000
TRAIN_SHARE = 0.85  # estimate, see the module docstring
NOT_VAL_SHARE = 0.9
KEEP_EVERY = 5
CLEANING_KEEPS = 0.85
PAPER_EPOCHS = 25
GOAL_HOURS = 2.5


@dataclass(frozen=True)
class PaperRun:
    pairs_per_epoch: int
    epochs: int
    pairs_per_second: float
    source: str  # where the pair count comes from

    @property
    def hours(self) -> float:
        return self.pairs_per_epoch * self.epochs / self.pairs_per_second / 3600

    def line(self) -> str:
        verdict = "within" if self.hours <= GOAL_HOURS else "over"
        return (
            f"paper run: {self.pairs_per_epoch:,} pairs/epoch x {self.epochs} epochs at "
            f"{self.pairs_per_second:,.0f} pairs/s = {self.hours:.2f} GPU-hours ({verdict} the "
            f"{GOAL_HOURS} h goal; pairs from {self.source})"
        )


def estimated_objectron_pairs() -> int:
    """Kept consecutive pairs of the cleaned Objectron training split, from public figures."""
    frames_per_video = OBJECTRON_IMAGES / OBJECTRON_VIDEOS
    videos = OBJECTRON_VIDEOS * TRAIN_SHARE * NOT_VAL_SHARE
    kept_per_video = frames_per_video / KEEP_EVERY * CLEANING_KEEPS
    return round(videos * max(kept_per_video - 1, 0))


def pairs_from_clean_manifest(details: dict) -> int | None:
    """Kept consecutive pairs of the training split from a clean stage manifest's details (its
    report's `kept_by_split`: {"train": {"clips": C, "frames": F}}): F - C, or None."""
    train = ((details.get("report") or {}).get("kept_by_split") or {}).get("train") or {}
    frames, clips = train.get("frames"), train.get("clips")
    if not isinstance(frames, int) or not isinstance(clips, int):
        return None
    return max(frames - clips, 0)


def paper_run(
    pairs_per_second: float, pairs_per_epoch: int | None = None, source: str = ""
) -> PaperRun:
    """The paper's schedule at `pairs_per_second`; the public-figure estimate of the pair
    count unless one is given."""
    if pairs_per_second <= 0:
        raise ValueError(f"pairs_per_second must be positive, got {pairs_per_second}")
    if pairs_per_epoch is None:
        pairs_per_epoch, source = estimated_objectron_pairs(), "public figures (estimate)"
    return PaperRun(pairs_per_epoch, PAPER_EPOCHS, pairs_per_second, source)
