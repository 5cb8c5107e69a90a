"""The requirements (`name==version`, as this checkout's environment holds them) that a lent GPU
machine needs beside its own PyTorch image to run vidssl's GPU benchmarks: every distribution
whose files importing the named modules loads, except those a CUDA PyTorch image provides and
must keep (torch and its CUDA libraries, and the compiled packages built against them).
Printed one per line for `pip download`. Used by scripts/gpu-carry.sh."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import os
import re
import sys

#: Modules the GPU session imports: the benchmarks, the local S3 server and its client.
MODULES = ("vidssl.perf.train_gpu", "vidssl.perf.flow", "vidssl.store.seaweed", "vidssl.store.s3")
#: Provided by the GPU machine's image, built against its CUDA and numpy: never carried.
PROVIDED = re.compile(
    r"^(torch|torchvision|torchaudio|triton|numpy|opencv-python(-headless)?|pillow|sympy|mpmath"
    r"|networkx|jinja2|markupsafe|filelock|fsspec|setuptools|nvidia-.*|cuda-.*|vidssl)$"
)
#: Imported by a dependency inside `try: ... except ImportError` (kubernetes' dynamic client
#: validates manifests with it when present: 22 MB of schemas the benchmarks never use):
#: blocked while the modules load, so neither it nor what only it needs is carried.
OPTIONAL_MODULES = ("kubernetes_validate",)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _owners() -> dict[str, str]:
    """Every installed Python file's owning distribution (normalised name), by absolute path."""
    owners = {}
    for dist in metadata.distributions():
        name = normalise(dist.metadata["Name"])
        for file in dist.files or ():
            if file.suffix in (".py", ".so", ".pyd"):
                owners[os.path.abspath(dist.locate_file(file))] = name
    return owners


def requirements(modules: tuple[str, ...] = MODULES) -> list[str]:
    """`name==version` of each distribution whose files the modules load, but those the image
    provides."""
    for optional in OPTIONAL_MODULES:
        sys.modules[optional] = None  # type: ignore[assignment]  # its import: ImportError
    for module in modules:
        importlib.import_module(module)
    owners = _owners()
    names = {
        owners.get(os.path.abspath(file))
        for module in list(sys.modules.values())
        if (file := getattr(module, "__file__", None))
    }
    return sorted(
        f"{name}=={metadata.version(name)}" for name in names if name and not PROVIDED.match(name)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES))
    args = parser.parse_args()
    print("\n".join(requirements(tuple(args.modules))))


if __name__ == "__main__":
    main()
