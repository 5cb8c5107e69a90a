"""Progress for long work: a rich bar on a terminal, periodic log lines with rate and ETA elsewhere
(KFP pods and `kfp.local` subprocesses write to a pipe, where a bar would never show)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("vidssl.progress")


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def track(
    items: Iterable[T],
    total: int | None,
    description: str,
    unit: str = "items",
    every_s: float = 10.0,
) -> Iterator[T]:
    """Yield `items`, showing done/total, rate and ETA."""
    if sys.stderr.isatty():
        from rich.progress import track as rich_track

        yield from rich_track(items, total=total, description=description, transient=False)
        return
    start = last = time.monotonic()
    for done, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= every_s or (total is not None and done == total):
            last = now
            rate = done / max(now - start, 1e-9)
            eta = format_eta((total - done) / rate) if total and rate > 0 else "?"
            of_total = f"/{total}" if total is not None else ""
            log.info(
                "%s: %d%s %s, %.2f %s/s, ETA %s", description, done, of_total, unit, rate, unit, eta
            )
