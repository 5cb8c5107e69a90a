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

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from vidssl.config import ConfigError, Experiment
from vidssl.stages.graph import INGEST, needs_tracks, stage_graph

RAFT_ESTIMATORS = ("raft_small", "raft_large")


@dataclass(frozen=True)
class LocalInput:
    """A file or folder that `stage` reads, under the config key that names it (`path` None: the
    key is unset and the stage needs it). Dataset folders may be `file://` URLs (FileTree);
    weight files are plain paths, as the stages open them."""

    stage: str
    key: str
    path: str | None
    folder: bool = False

    def problem(self) -> str | None:
        """Why the stage cannot read it (None when it can)."""
        if self.path is None:
            return "not set, and a stage needs it (nothing is downloaded)"
        if self.folder:
            parsed = urlparse(self.path)
            path = Path(parsed.path if parsed.scheme == "file" else self.path)
            return None if path.is_dir() else "not a folder" if path.exists() else "no such folder"
        path = Path(self.path)
        return None if path.is_file() else "not a file" if path.exists() else "no such file"

    def line(self) -> str:
        problem = self.problem()
        return f"{self.key}: {self.path or '(unset)'}" + (f" ({problem})" if problem else " (ok)")


def local_inputs(
    experiment: Experiment, stages: Iterable[str] | None = None
) -> tuple[LocalInput, ...]:
    """Every local file and folder the experiment's stages read (those of `stages` only, when
    given), by config key, in stage order: the dataset's folders (ingest; an `s3://` root is
    the store's), RAFT's weights (flow, when it runs), pretrained weights (train) and the
    imagenet baseline's (export)."""
    source = experiment.dataset.source
    inputs = [
        LocalInput(INGEST, f"dataset.source.{name}", getattr(source, name), folder=True)
        for name in ("root", "annotations")
        if isinstance(getattr(source, name, None), str)
        and urlparse(getattr(source, name)).scheme in ("", "file")
    ]
    if needs_tracks(experiment) and experiment.flow.estimator in RAFT_ESTIMATORS:
        inputs.append(LocalInput("flow", "flow.weights", experiment.flow.weights))
    train = experiment.train
    if train is not None:
        if train.weights:
            inputs.append(LocalInput("train", "train.weights", train.weights))
        checkpoint = getattr(train.method, "encoder_checkpoint", "")
        if checkpoint:
            inputs.append(LocalInput("train", "train.method.encoder_checkpoint", checkpoint))
        if "imagenet" in experiment.export.baselines:
            weights = experiment.export.imagenet_weights
            inputs.append(LocalInput("export", "export.imagenet_weights", weights))
    wanted = None if stages is None else set(stages)
    return tuple(item for item in inputs if wanted is None or item.stage in wanted)


def check_local_inputs(experiment: Experiment, stages: Iterable[str] | None = None) -> None:
    """A ConfigError naming every missing local input (of `stages`, when given) by its key, and
    the two ways on."""
    missing = [item.line() for item in local_inputs(experiment, stages) if item.problem()]
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
    """The stages the experiment runs whose tasks ask for a GPU on a cluster
    (`cluster.<stage>.gpu`)."""
    runs = stage_graph(experiment).stages()
    return [stage for stage in runs if experiment.cluster.for_stage(stage).gpu]


def cuda_required(experiment: Experiment) -> list[str]:
    """The settings that name a CUDA device for a stage the experiment runs (`flow.device`)."""
    device = experiment.flow.device or ""
    if needs_tracks(experiment) and device.startswith("cuda"):
        return [f"flow.device: {device}"]
    return []
