"""Estimate the size of each layer images/Dockerfile makes, for its cpu and gpu targets, without a
Docker engine: `python scripts/image_size.py [--target cpu|gpu|all]`.

How each layer is estimated:
- the Python packages: pip (a recent one, in a throwaway venv when the running pip is older)
  resolves the pinned set against PyPI with `install --dry-run --report`, reading metadata through
  HTTP range requests (`fast-deps`), so no wheel is downloaded whole; each wheel's installed size
  is the sum of the file sizes in its zip directory (read with range requests too) plus the
  bytecode pip compiles at install (`PYC_PER_PY` x the .py bytes, measured on this project's venv);
- torch's CPU build: from download.pytorch.org where it is reachable, otherwise a torch CPU wheel
  on this machine's disk (pip's find-links: another torch version, reported as a proxy);
- COPY layers: the build context's files, filtered by .dockerignore, plus compileall's bytecode;
- the base image: an assumed figure (no registry access here), --base-mb to change it.

Two columns: unpacked (what the image takes on a node's disk) and packed (about what the registry
stores and a node pulls: the wheels' compressed sizes; half, assumed, for the project's own files).

It also holds the small Dockerfile and .dockerignore readers that tests/test_image.py uses.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "images" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

PYPI_INDEX = "https://pypi.org/simple"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Installed bytecode per byte of Python source (CPython 3.11; measured on torch, scipy, sklearn,
#: kfp, kubernetes in this project's venv: 1.02-1.41, weighted about 1.2).
PYC_PER_PY = 1.2
#: python:3.11-slim-bookworm (linux/amd64), (unpacked, packed) MB: Debian bookworm-slim (~75 MB)
#: plus CPython 3.11 and pip (~50 MB). Assumed, not measured: no registry access on this machine.
BASE_IMAGE_MB = (125.0, 45.0)
#: Packages that only torch's CUDA build needs (its CPU build requires none of them).
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
MB = 1_000_000


# ---- Dockerfile and .dockerignore readers -------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case), its arguments with line continuations
    joined, and the line it starts on."""

    keyword: str
    arguments: str
    line: int

    def flags(self) -> dict[str, str]:
        """Leading `--name=value` flags (`COPY --from=wheel`, `RUN --mount=...`); repeated flags
        keep the last value."""
        found = {}
        for token in self.arguments.split():
            if not token.startswith("--"):
                break
            name, _, value = token[2:].partition("=")
            found[name] = value
        return found

    def words(self) -> list[str]:
        """The arguments after the leading flags, split on whitespace."""
        tokens = self.arguments.split()
        while tokens and tokens[0].startswith("--"):
            tokens.pop(0)
        return tokens


@dataclass
class Stage:
    """A build stage: the image it starts FROM, its name (`AS name`) and its instructions."""

    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comment lines dropped (also inside a continuation), lines
    ending in a backslash joined to the next. Parser directives and heredocs are not supported
    (the recipe uses neither)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            pending = []
    if pending:
        raise ValueError(f"line {start}: the last instruction ends in a line continuation")
    return instructions


def split_stages(instructions: Iterable[Instruction]) -> tuple[list[Instruction], list[Stage]]:
    """The global instructions before the first FROM (ARGs) and the build stages."""
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, line=instruction.line))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            preamble.append(instruction)
    return preamble, stages


def stage_chain(stages: list[Stage], target: str) -> list[Stage]:
    """The stages a target's image is made of, from the external base to the target itself."""
    by_name = {stage.name: stage for stage in stages if stage.name}
    if target not in by_name:
        raise KeyError(f"no stage named {target!r}; stages: {sorted(by_name)}")
    chain = [by_name[target]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex on slash-separated paths (Go filepath.Match plus `**`)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class DockerIgnore:
    """The exclusion rules of a .dockerignore: a path is left out of the build context when the
    last rule that matches it or one of its parent folders excludes it."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((include, _pattern_regex(pattern)))

    def excluded(self, path: str) -> bool:
        parts = Path(path).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for include, regex in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                verdict = not include
        return verdict

    def context_files(self, root: Path, under: str = ".") -> Iterator[Path]:
        """Files of the build context below `under` (relative to the context root)."""
        for folder, dirs, files in os.walk(root / under):
            relative = Path(folder).relative_to(root)
            dirs[:] = [d for d in dirs if not self.excluded(str(relative / d))]
            for name in files:
                if not self.excluded(str(relative / name)):
                    yield Path(folder) / name


# ---- sizes of Python distributions --------------------------------------------------------------


class _RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP range requests, enough for
    zipfile to read a wheel's central directory without downloading the wheel."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.position = 0
        request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
        with urllib.request.urlopen(request, timeout=60) as response:
            content_range = response.headers.get("Content-Range", "")
            if response.status != 206 or "/" not in content_range:
                raise OSError(f"{url}: the server does not answer range requests")
            self.length = int(content_range.rsplit("/", 1)[1])

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        end = self.length if size < 0 else min(self.length, self.position + size)
        if end <= self.position:
            return b""
        headers = {"Range": f"bytes={self.position}-{end - 1}"}
        request = urllib.request.Request(self.url, headers=headers)
        with urllib.request.urlopen(request, timeout=120) as response:
            data = response.read()
        self.position += len(data)
        return data


class Size(NamedTuple):
    """Bytes a layer holds unpacked (on the node's disk) and packed (roughly what a registry
    stores and a node pulls: wheels are deflated zips, layers gzipped tars)."""

    unpacked: int
    packed: int

    def __add__(self, other: object) -> Size:
        if not isinstance(other, Size):
            return NotImplemented
        return Size(self.unpacked + other.unpacked, self.packed + other.packed)


def total(sizes: Iterable[Size]) -> Size:
    return sum(sizes, Size(0, 0))


def installed_size(archive: zipfile.ZipFile) -> Size:
    """What installing a wheel writes (its files plus the bytecode pip compiles), and its
    compressed size."""
    files = archive.infolist()
    source = sum(info.file_size for info in files if info.filename.endswith(".py"))
    unpacked = sum(info.file_size for info in files) + int(PYC_PER_PY * source)
    return Size(unpacked, sum(info.compress_size for info in files))


def wheel_size(location: str) -> Size:
    """Installed size of a wheel given by URL (range requests) or local path."""
    if location.startswith(("http://", "https://")):
        with zipfile.ZipFile(_RangeFile(location)) as archive:
            return installed_size(archive)
    with zipfile.ZipFile(location) as archive:
        return installed_size(archive)


def _sdist_size(url: str) -> Size:
    """An sdist (kfp-server-api has no wheel) is small: download it and sum its members."""
    with urllib.request.urlopen(url, timeout=120) as response:
        data = response.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
        source = sum(m.size for m in members if m.name.endswith(".py"))
        return Size(sum(m.size for m in members) + int(PYC_PER_PY * source), len(data))


@dataclass(frozen=True)
class Dist:
    """A distribution pip would install: name, version, where it comes from, what it requires."""

    name: str
    version: str
    url: str
    requires: tuple[str, ...]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_with_report(scratch: Path) -> list[str]:
    """A pip whose `install --dry-run --report` does not download whole wheels (26.3 does not,
    23.2 does): the running one when >= 25, otherwise the newest pip in a venv under `scratch`."""
    version = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    if int(version.split(".")[0]) >= 25:
        return [sys.executable, "-m", "pip"]
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--quiet", *_index_options(), "pip>=25"], check=True)
    return pip


def _index_options() -> list[str]:
    """Ignore this machine's pip configuration (local find-links and mirrors): resolve what a
    Docker build resolves, from PyPI; keep a configured CA bundle."""
    options = ["--isolated", "--index-url", PYPI_INDEX]
    cert = os.environ.get("PIP_CERT") or os.environ.get("REQUESTS_CA_BUNDLE")
    return [*options, "--cert", cert] if cert else options


def resolve(requirements: list[str]) -> dict[str, Dist]:
    """What pip installs for `requirements` into an empty Python 3.11 environment on this
    machine's platform, by canonical name."""
    if sys.version_info[:2] != (3, 11) or not sys.platform.startswith("linux"):
        raise SystemExit("run this with the project's Python 3.11 on Linux x86_64 (.venv)")
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "report.json"
        command = [
            *_pip_with_report(Path(scratch)),
            "install",
            *_index_options(),
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--prefer-binary",
            "--use-feature=fast-deps",
            "--report",
            str(report_path),
            *requirements,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"pip could not resolve the image's packages:\n{result.stderr}")
        report = json.loads(report_path.read_text())
    return {
        _canonical(item["metadata"]["name"]): Dist(
            name=item["metadata"]["name"],
            version=item["metadata"]["version"],
            url=item["download_info"]["url"],
            requires=tuple(item["metadata"].get("requires_dist", [])),
        )
        for item in report["install"]
    }


def closure(roots: Iterable[str], dists: dict[str, Dist]) -> set[str]:
    """Canonical names of `roots` and everything they require (markers evaluated for this
    interpreter, extras followed)."""
    from packaging.requirements import Requirement

    extras_of: dict[str, set[str]] = {}
    queue = [(_canonical(root), frozenset[str]()) for root in roots]
    while queue:
        name, extras = queue.pop()
        known = extras_of.get(name)
        if known is not None and extras <= known:
            continue
        active = (known or set()) | set(extras) | {""}
        extras_of[name] = active
        for text in dists[name].requires:
            requirement = Requirement(text)
            marker = requirement.marker
            needed = marker is None or any(marker.evaluate({"extra": e}) for e in active)
            if needed and _canonical(requirement.name) in dists:
                queue.append((_canonical(requirement.name), frozenset(requirement.extras)))
    return set(extras_of)


def _sizes(urls: dict[str, str]) -> dict[str, Size]:
    """Installed size per name, reading wheels' zip directories eight at a time."""

    def size(url: str) -> Size:
        return wheel_size(url) if ".whl" in url else _sdist_size(url)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(urls, pool.map(size, urls.values()), strict=True))


def _torch_cpu_wheel(version: str) -> tuple[str, str]:
    """Where torch's CPU wheel for CPython 3.11 on Linux x86_64 is: (location, note)."""
    name = f"torch-{version}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    try:
        with urllib.request.urlopen(f"{TORCH_CPU_INDEX}/torch/", timeout=20) as response:
            listing = response.read().decode()
        match = re.search(rf'href="([^"#]*{re.escape(name.replace("+", "%2B"))})', listing)
        match = match or re.search(rf'href="([^"#]*{re.escape(name)})', listing)
        if match:
            return (
                urllib.request.urljoin(f"{TORCH_CPU_INDEX}/torch/", match.group(1)),
                "download.pytorch.org",
            )
    except OSError:
        pass
    for folder in os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split():
        local = sorted(Path(folder).glob("torch-*+cpu-cp311-cp311-manylinux*_x86_64.whl"))
        if local:
            return str(local[-1]), f"proxy {local[-1].name} (pytorch.org unreachable)"
    raise SystemExit("torch's CPU wheel: download.pytorch.org unreachable and none on disk")


# ---- layers -------------------------------------------------------------------------------------


def _files_size(files: Iterable[Path]) -> tuple[Size, Size]:
    """(the files, the bytecode compiling their .py makes), packed sizes assumed halved."""
    files = list(files)
    unpacked = sum(f.stat().st_size for f in files)
    pyc = int(PYC_PER_PY * sum(f.stat().st_size for f in files if f.suffix == ".py"))
    return Size(unpacked, unpacked // 2), Size(pyc, pyc // 2)


def _venv_size() -> Size:
    """A fresh venv with its bundled pip, as `python -m venv /opt/venv` makes it."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "venv", f"{scratch}/venv"], check=True)
        unpacked = sum(p.stat().st_size for p in Path(scratch).rglob("*") if p.is_file())
    return Size(unpacked, unpacked // 2)


@dataclass(frozen=True)
class Layer:
    """One row of the table: the instruction that makes the layer and its estimated size."""

    source: str
    size: Size
    note: str = ""


def _pins(stage: Stage) -> list[str]:
    """The `name==version` requirements of a stage's torch RUN, local labels (+cpu) dropped."""
    for instruction in stage.instructions:
        words = instruction.words()
        if instruction.keyword == "RUN" and any(w.startswith("torch==") for w in words):
            return [w.split("+")[0] for w in words if "==" in w]
    raise ValueError(f"stage {stage.name}: no RUN that installs torch==...")


@dataclass
class Packages:
    """The image's Python packages as pip resolves them (torch's PyPI build) and their installed
    sizes; torch's CPU build sized apart."""

    dists: dict[str, Dist]
    torch_set: set[str]
    sizes: dict[str, Size]
    cpu_torch: Size
    cpu_torch_note: str

    @classmethod
    def resolve(cls, pins: list[str], dependencies: list[str]) -> Packages:
        dists = resolve([*pins, *dependencies])
        sizes = _sizes({name: dist.url for name, dist in dists.items()})
        location, note = _torch_cpu_wheel(dists["torch"].version)
        torch_set = closure([pin.split("==")[0] for pin in pins], dists)
        return cls(dists, torch_set, sizes, wheel_size(location), note)

    def torch_layer(self, target: str) -> tuple[Size, str]:
        names = self.torch_set
        if target == "cpu":
            names = {name for name in names if not CUDA_ONLY.match(name)}
            size = total(self.sizes[name] for name in names - {"torch"}) + self.cpu_torch
            return size, f"{len(names)} packages; torch+cpu: {self.cpu_torch_note}"
        cuda = total(self.sizes[name] for name in names if CUDA_ONLY.match(name))
        size = total(self.sizes[name] for name in names)
        return (
            size,
            f"{len(names)} packages, {cuda.unpacked / MB:.0f} MB of them CUDA/NVIDIA/triton",
        )

    def dependency_layer(self) -> tuple[Size, str]:
        names = set(self.dists) - self.torch_set
        largest = sorted(names, key=lambda n: self.sizes[n].unpacked, reverse=True)[:3]
        top = ", ".join(f"{self.dists[n].name} {self.sizes[n].unpacked / MB:.0f}" for n in largest)
        return total(self.sizes[n] for n in names), f"{len(names)} packages; largest: {top}"


def _describe(instruction: Instruction) -> str:
    """A short name for a layer-making instruction of the recipe."""
    words, text = instruction.words(), instruction.arguments
    if any(w.startswith("torch==") for w in words):
        return "RUN pip install " + " ".join(w for w in words if "==" in w)
    if "--requirement" in words:
        return "RUN pip install <pyproject dependencies>"
    if "vidssl-*.whl" in text:
        return "RUN pip install --no-deps vidssl wheel"
    if "compileall" in text:
        return "RUN compileall /opt/vidssl + import checks"
    if "venv" in text:
        return "RUN useradd vidssl, python -m venv /opt/venv"
    return f"{instruction.keyword} {' '.join(words)}"[:48]


def layers(target: str, stages: list[Stage], packages: Packages, base: Size) -> list[Layer]:
    """Estimated layers of a target, base image first."""
    chain = stage_chain(stages, target)
    ignore = DockerIgnore(DOCKERIGNORE.read_text())
    rows = [Layer(f"FROM {chain[0].base.split('@')[0]}", base, "assumed, see --base-mb")]
    for stage in chain:
        for instruction in stage.instructions:
            if instruction.keyword not in {"RUN", "COPY", "ADD"}:
                continue
            words, text = instruction.words(), instruction.arguments
            label = f"{stage.name}:{instruction.line} {_describe(instruction)}"
            if instruction.keyword in {"COPY", "ADD"}:
                files, _ = _files_size(ignore.context_files(REPO_ROOT, words[0]))
                rows.append(Layer(label, files, "build-context files"))
            elif any(w.startswith("torch==") for w in words):
                rows.append(Layer(label, *packages.torch_layer(target)))
            elif "--requirement" in words:
                rows.append(Layer(label, *packages.dependency_layer()))
            elif "vidssl-*.whl" in text:
                files, pyc = _files_size(
                    p for p in ignore.context_files(REPO_ROOT, "src/vidssl") if p.suffix != ".proto"
                )
                rows.append(Layer(label, files + pyc, "src/vidssl + bytecode"))
            elif "compileall" in text:
                copied = [
                    p
                    for w in ("pipelines", "components")
                    for p in ignore.context_files(REPO_ROOT, w)
                ]
                rows.append(Layer(label, _files_size(copied)[1], "bytecode"))
            elif "venv" in text:
                rows.append(Layer(label, _venv_size(), "measured: a fresh venv here"))
            else:
                rows.append(Layer(label, Size(0, 0), "no files of note"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["cpu", "gpu", "all"], default="all")
    parser.add_argument(
        "--base-mb", type=float, nargs=2, default=BASE_IMAGE_MB, metavar=("UNPACKED", "PACKED")
    )
    args = parser.parse_args(argv)
    base = Size(int(args.base_mb[0] * MB), int(args.base_mb[1] * MB))
    _, stages = split_stages(parse_dockerfile(DOCKERFILE.read_text()))
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    print("resolving the image's Python packages against PyPI (a minute or two) ...", flush=True)
    packages = Packages.resolve(
        _pins(stage_chain(stages, "gpu")[-1]), pyproject["project"]["dependencies"]
    )
    print(f"{len(packages.dists)} distributions resolved (torch's PyPI build)")
    for target in ["cpu", "gpu"] if args.target == "all" else [args.target]:
        rows = layers(target, stages, packages, base)
        width = max(len(row.source) for row in rows)
        print(f"\n{target}: images/Dockerfile --target {target}")
        print(f"{'layer':<{width}}  {'MB':>8}  {'packed':>7}  note")
        for row in [*rows, Layer("total", total(row.size for row in rows))]:
            unpacked, packed = row.size.unpacked / MB, row.size.packed / MB
            print(f"{row.source:<{width}}  {unpacked:>8.2f}  {packed:>7.2f}  {row.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
