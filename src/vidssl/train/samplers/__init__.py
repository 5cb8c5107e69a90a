"""Samplers: what one training example is — which frames of a clip, under which view names.
One module per sampler, each a `Sampler` registered for its config class (`train.sampler.kind`).

A sampler owns the minimum frame count a clip needs, the examples a clip holds (`anchors`: one
per example of an epoch's visit, as the reference's loaders enumerate them), how to draw the
frames of one example (`positions`), and how many examples an epoch has. The data code
(vidssl.train.data) crops, flips and augments the frames and hands the method a dict of
tensors named by `views`.

A sampler whose examples are more than frames (PiCo's point pairs: `pixel_pairs`) sets
`builds_examples` and builds each whole example itself (`example`); the data code then draws
`examples_per_clip` of them per clip visit and only batches them.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from collections.abc import Callable, Iterator

import torch

_SAMPLERS: dict[str, type[Sampler]] = {}


class Sampler:
    """Base class; `cfg` is the `train.sampler` section (read by attribute: samplers import
    nothing from vidssl.config), `views` the names of its frames, from the config class."""

    #: Whether `example` builds whole examples (the data code then neither crops nor
    #: augments); `positions` and `anchors` are then unused.
    builds_examples: bool = False

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        self.cfg = cfg

    @property
    def views(self) -> tuple[str, ...]:
        return self.cfg.views

    @property
    def min_frames(self) -> int:
        return 1

    def anchors(self, num_frames: int) -> list[int]:
        """Every example of a clip of `num_frames` kept frames, by its first frame."""
        raise NotImplementedError

    def positions(self, num_frames: int, rng: random.Random, anchor: int | None) -> list[int]:
        """The frames (positions in the clip) of one example, one per view; from a random
        anchor when none is given."""
        raise NotImplementedError

    def example(
        self,
        sample: dict,
        meta: dict,
        rng: random.Random,
        generator: torch.Generator,
        train,  # type: ignore[no-untyped-def]
    ) -> dict[str, torch.Tensor] | None:
        """Samplers with `builds_examples`: one whole example of the clip `sample` (its decoded
        `meta`; `train` the `train:` section), named tensors as the method reads them, drawn
        from `rng` and `generator`; None when this clip cannot give one."""
        raise NotImplementedError

    def examples_per_epoch(self, frames: int, clips: int) -> int:
        """len(anchors) summed over a split's clips, from its frame and clip counts."""
        raise NotImplementedError

    @property
    def every_example(self) -> bool:
        """`examples_per_clip: all`: a clip visit gives every example the clip holds."""
        return self.cfg.examples_per_clip == "all"

    def clip_examples(self, num_frames: int, rng: random.Random) -> Iterator[list[int]]:
        """One clip visit's examples: all of them in random order (`examples_per_clip: all`),
        or so many drawn at random."""
        if self.every_example:
            anchors: list[int | None] = list(self.anchors(num_frames))
            rng.shuffle(anchors)
        else:
            anchors = [None] * self.cfg.examples_per_clip
        for anchor in anchors:
            yield self.positions(num_frames, rng, anchor)

    def epoch_examples(self, frames: int, clips: int) -> int:
        """Examples in an epoch of a split with these counts (see `examples_per_clip`)."""
        if self.every_example:
            return self.examples_per_epoch(frames, clips)
        return clips * self.cfg.examples_per_clip


def register_sampler(kind: str) -> Callable[[type[Sampler]], type[Sampler]]:
    """Class decorator: the sampler used when `train.sampler.kind` is `kind`."""

    def register(sampler: type[Sampler]) -> type[Sampler]:
        _SAMPLERS[kind] = sampler
        return sampler

    return register


def build_sampler(cfg) -> Sampler:  # type: ignore[no-untyped-def]
    """The sampler for `train.sampler`."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    try:
        return _SAMPLERS[cfg.kind](cfg)
    except KeyError:
        raise ValueError(f"train.sampler {cfg.kind!r}: no sampler is registered for it") from None
