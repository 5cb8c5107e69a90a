"""Experiment configuration: one YAML file per experiment, validated by one pydantic schema.

`pipelines/experiments/<EXP>.yaml` -> `Experiment`. Unknown keys and wrong types are errors that
name the file and the key path. Endpoints and credentials never live here: they come from the
environment (see `vidssl.store`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Where `load_experiment("name")` looks; relative to the working directory unless absolute.
EXPERIMENTS_DIR_ENV = "VIDSSL_EXPERIMENTS_DIR"
DEFAULT_EXPERIMENTS_DIR = "pipelines/experiments"
#: Overrides `store.uri` (tests and laptops point it at file:// or another bucket).
STORE_URI_ENV = "VIDSSL_STORE_URI"


class ConfigError(ValueError):
    """An experiment file that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(Strict):
    uri: str = Field("s3://vidssl", description="s3://bucket or file:///folder")


class FolderSource(Strict):
    """A folder of videos; the label of a video is the name of its parent folder."""

    kind: Literal["folder"] = "folder"
    root: str
    extensions: list[str] = Field(default_factory=lambda: [".mp4", ".avi", ".mov", ".mkv", ".webm"])


class DatasetConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    source: FolderSource
    val_fraction: float = Field(0.1, ge=0, lt=1)
    split_seed: int = 0


class IngestConfig(Strict):
    fps: float | None = Field(5.0, gt=0, description="target frame rate; null keeps every frame")
    resize_short: int | None = Field(
        None, gt=0, description="short side in pixels; null keeps size"
    )
    jpeg_quality: int = Field(90, ge=1, le=100)
    clip_frames: int | None = Field(None, gt=0, description="frames per clip; null = whole video")
    max_clips_per_video: int | None = Field(None, gt=0)
    workers: int = Field(0, ge=0, description="decode processes; 0 = one per core")


class ShardConfig(Strict):
    max_samples: int = Field(1000, gt=0)
    max_bytes: int = Field(256 << 20, gt=0)


class Resources(Strict):
    cpu: str = "2"
    memory: str = "8Gi"
    gpu: int = Field(0, ge=0)
    accelerator: str = "nvidia.com/gpu"


class ClusterConfig(Strict):
    """What the compiled pipeline asks of Kubernetes; ignored by the local runner."""

    s3_secret: str = "vidssl-s3"
    resources: dict[str, Resources] = Field(default_factory=dict)

    def for_stage(self, stage: str) -> Resources:
        return self.resources.get(stage, self.resources.get("default", Resources()))


class Experiment(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    pipeline: Literal["smoke"]
    store: StoreConfig = StoreConfig()
    dataset: DatasetConfig
    ingest: IngestConfig = IngestConfig()
    shards: ShardConfig = ShardConfig()
    cluster: ClusterConfig = ClusterConfig()

    def store_uri(self) -> str:
        return os.environ.get(STORE_URI_ENV) or self.store.uri


def experiment_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    directory = Path(os.environ.get(EXPERIMENTS_DIR_ENV, DEFAULT_EXPERIMENTS_DIR))
    return directory / f"{name_or_path}.yaml"


def _key_path(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def load_experiment(name_or_path: str) -> Experiment:
    """Load and validate an experiment by name (`smoke`) or path (`x/smoke.yaml`)."""
    path = experiment_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ConfigError(f"{path}: no such experiment file; known experiments: {known}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return parse_experiment(raw, source=str(path))


def parse_experiment(raw: dict, source: str = "<config>") -> Experiment:
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = _key_path(error["loc"])
            if error["type"] == "extra_forbidden":
                lines.append(f"{source}: {key}: unknown key")
            else:
                lines.append(f"{source}: {key}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def experiment_from_json(text: str) -> Experiment:
    """The resolved experiment a pipeline hands its components."""
    return Experiment.model_validate_json(text)
