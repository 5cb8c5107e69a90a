"""Benchmarks behind `make bench-*`: each prints its numbers and writes them to build/bench/."""

import json
import os
from pathlib import Path


def save_results(name: str, results: dict) -> Path:
    """Write a benchmark's numbers to `$VIDSSL_BENCH_DIR/<name>.json` (default build/bench)."""
    folder = Path(os.environ.get("VIDSSL_BENCH_DIR", "build/bench"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path
