"""Speed benchmarks behind `make perf-*`: each prints its numbers and writes them to build/perf/.
(The representation benchmarks are the bench stage, vidssl.stages.bench.)"""

import json
import os
from pathlib import Path


def save_results(name: str, results: dict) -> Path:
    """Write a speed benchmark's numbers to `$VIDSSL_PERF_DIR/<name>.json` (default build/perf)."""
    folder = Path(os.environ.get("VIDSSL_PERF_DIR", "build/perf"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path
