"""scripts/gpu_wheels.py: what a lent GPU machine (its own CUDA PyTorch, offline) must be given
to run the GPU benchmarks. Checked against this environment: the list must hold what the
benchmarks import and leave out what the machine's image provides or what is optional."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_carried_requirements_are_what_the_benchmarks_load_minus_the_image():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_wheels.py")],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    pinned = dict(line.split("==") for line in out.stdout.split())
    # What vidssl's stages, configs, shards and store client import at module level:
    for needed in ("pydantic", "pydantic-core", "webdataset", "minio", "pyyaml", "protobuf"):
        assert needed in pinned, f"{needed} missing from {sorted(pinned)}"
    # The image's own, built against its CUDA and numpy (a carried copy would shadow them):
    for provided in ("torch", "torchvision", "numpy", "triton", "opencv-python-headless"):
        assert provided not in pinned
    assert not any(name.startswith(("nvidia-", "cuda-")) for name in pinned)
    # kubernetes imports it only if present (try/except ImportError); 22 MB of schemas:
    assert "kubernetes-validate" not in pinned and "jsonschema" not in pinned
    from importlib.metadata import version

    assert pinned["pydantic"] == version("pydantic")  # this environment's versions
