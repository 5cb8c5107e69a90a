"""What an experiment's stages read from the disk of the machine they run on, and what they ask
of it, checked before a local run starts.

The stages find their inputs only when they reach them: without this check, a local run of an
experiment whose dataset or weights are elsewhere (`pico_k400` on a laptop) fails in its first
stage's log, one missing path at a time. `check_local_inputs` names every missing one at once,
by its config key: the local runner (`pipelines.run`) and the in-process one (`stages.prepare`)
refuse to start with that list, and `vidssl config check` prints it. On a cluster the paths are
the pods' (volumes), so nothing here applies there.

A dataset root given as `s3://bucket/prefix` is read through the store and not checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vidssl.config import CLUSTER_STAGES, ConfigError, Experiment
from vidssl.stages.graph import needs_tracks

RAFT_ESTIMATORS = ("raft_small", "raft_large")


@dataclass(frozen=True)
class LocalInput:
    """A file or folder a stage reads, under the config key that names it (`path` None: the key
    is unset and the stage needs it)."""

    key: str
    path: str | None
    folder: bool = False

    def problem(self) -> str | None:
        """Why the stage cannot read it (None when it can)."""
        if self.path is None:
            return "not set, and a stage needs it (nothing is downloaded)"
        path = _local_path(self.path)
        if self.folder and not path.is_dir():
            return "no such folder" if not path.exists() else "not a folder"
        if not self.folder and not path.is_file():
            return "no such file" if not path.exists() else "not a file"
        return None

    def line(self) -> str:
        problem = self.problem()
        return f"{self.key}: {self.path or '(unset)'}" + (f" ({problem})" if problem else " (ok)")


def _local_path(value: str) -> Path:
    parsed = urlparse(value)
    return Path(parsed.path) if parsed.scheme == "file" else Path(value)


def _is_local(value: str) -> bool:
    return urlparse(value).scheme in ("", "file")


def local_inputs(experiment: Experiment) -> tuple[LocalInput, ...]:
    """Every local file and folder the experiment's stages read, by config key, in stage order:
    the dataset's folders (ingest), RAFT's weights (flow, when it runs), pretrained weights
    (train) and the imagenet baseline's (export)."""
    source = experiment.dataset.source
    inputs = [
        LocalInput(f"dataset.source.{name}", getattr(source, name), folder=True)
        for name in ("root", "annotations")
        if isinstance(getattr(source, name, None), str) and _is_local(getattr(source, name))
    ]
    if needs_tracks(experiment) and experiment.flow.estimator in RAFT_ESTIMATORS:
        inputs.append(LocalInput("flow.weights", experiment.flow.weights))
    train = experiment.train
    if train is not None:
        if train.weights:
            inputs.append(LocalInput("train.weights", train.weights))
        checkpoint = getattr(train.method, "encoder_checkpoint", "")
        if checkpoint:
            inputs.append(LocalInput("train.method.encoder_checkpoint", checkpoint))
        if "imagenet" in experiment.export.baselines:
            inputs.append(LocalInput("export.imagenet_weights", experiment.export.imagenet_weights))
    return tuple(inputs)


def missing_inputs(experiment: Experiment) -> list[str]:
    """`key: path (why)` for each local input a stage could not read; empty when all are there."""
    return [item.line() for item in local_inputs(experiment) if item.problem()]


def check_local_inputs(experiment: Experiment) -> None:
    """A ConfigError naming every missing local input by its key, and the two ways on."""
    missing = missing_inputs(experiment)
    if not missing:
        return
    listed = "\n".join(f"  {line}" for line in missing)
    raise ConfigError(
        f"{experiment.name} reads files this machine does not have:\n{listed}\n"
        f"Point these keys at your copies in an experiment file of your own that starts with "
        f"`base: {experiment.name}` and holds only them (`vidssl config check FILE` checks "
        "it), or run it on a cluster (RUNNER=kfp), where the paths are the pods'."
    )


def gpu_stages(experiment: Experiment) -> list[str]:
    """The stages whose tasks ask for a GPU on a cluster (`cluster.<stage>.gpu`)."""
    return [stage for stage in CLUSTER_STAGES if experiment.cluster.for_stage(stage).gpu]
