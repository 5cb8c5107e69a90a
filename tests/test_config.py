"""Experiment files: errors name the file and the key; `config show` prints the resolved config."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from vidssl.cli import app
from vidssl.config import ConfigError, Experiment, experiment_from_json, load_experiment

VALID = {
    "name": "tiny",
    "pipeline": "ingest",
    "dataset": {"name": "tiny", "source": {"kind": "folder", "root": "/videos"}},
}


def _write(directory, name, content):
    path = directory / f"{name}.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_valid_experiment_gets_defaults(experiment_dir):
    _write(experiment_dir, "tiny", VALID)
    experiment = load_experiment("tiny")
    assert experiment.ingest.fps is None and experiment.ingest.jpeg_quality == 90
    assert experiment.clean.blur_categories == ["bike"]
    assert experiment.store.uri == "s3://vidssl"
    assert experiment_from_json(experiment.model_dump_json()) == experiment


def test_unknown_key_names_file_and_key_path(experiment_dir):
    raw = {**VALID, "ingest": {"fps": 5, "jpeg_qualty": 80}}
    path = _write(experiment_dir, "typo", raw)
    with pytest.raises(ConfigError) as caught:
        load_experiment("typo")
    assert f"{path}: ingest.jpeg_qualty: unknown key" in str(caught.value)


def test_wrong_type_names_file_and_key_path(experiment_dir):
    raw = {**VALID, "shards": {"max_samples": "many"}}
    path = _write(experiment_dir, "wrong", raw)
    with pytest.raises(ConfigError, match=rf"{path}: shards\.max_samples: .*integer"):
        load_experiment("wrong")


def test_out_of_range_value_is_refused(experiment_dir):
    raw = {**VALID, "ingest": {"jpeg_quality": 101}}
    _write(experiment_dir, "range", raw)
    with pytest.raises(ConfigError, match=r"ingest\.jpeg_quality"):
        load_experiment("range")


def test_missing_required_key_is_named(experiment_dir):
    raw = {k: v for k, v in VALID.items() if k != "dataset"}
    _write(experiment_dir, "missing", raw)
    with pytest.raises(ConfigError, match=r"dataset: Field required"):
        load_experiment("missing")


def test_broken_yaml_names_the_file(experiment_dir):
    path = _write(experiment_dir, "broken", "name: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_experiment("broken")


def test_unknown_experiment_lists_known_ones(experiment_dir):
    _write(experiment_dir, "tiny", VALID)
    with pytest.raises(
        ConfigError, match=r"no such experiment file; known experiments: \['tiny'\]"
    ):
        load_experiment("nope")


def test_store_uri_comes_from_environment_when_set(monkeypatch):
    experiment = Experiment.model_validate(VALID)
    monkeypatch.setenv("VIDSSL_STORE_URI", "file:///elsewhere")
    assert experiment.store_uri() == "file:///elsewhere"


def test_config_show_prints_resolved_config(experiment_dir):
    _write(experiment_dir, "tiny", VALID)
    result = CliRunner().invoke(app, ["config", "show", "tiny"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["ingest"]["jpeg_quality"] == 90
    assert shown["dataset"]["source"]["root"] == "/videos"


def test_every_shipped_experiment_is_valid():
    from pathlib import Path

    shipped = sorted(Path("pipelines/experiments").glob("*.yaml"))
    assert shipped
    for path in shipped:
        assert load_experiment(str(path)).name == path.stem


def test_fps_and_frame_stride_are_exclusive(experiment_dir):
    _write(experiment_dir, "both", {**VALID, "ingest": {"fps": 5, "frame_stride": 5}})
    with pytest.raises(ConfigError, match=r"ingest\.fps or ingest\.frame_stride"):
        load_experiment("both")


def test_source_kind_selects_the_source_schema(experiment_dir):
    raw = {**VALID, "dataset": {"name": "o", "source": {"kind": "objectron", "rooot": "/x"}}}
    path = _write(experiment_dir, "kind", raw)
    with pytest.raises(ConfigError) as caught:
        load_experiment("kind")
    assert f"{path}: dataset.source.objectron.rooot: unknown key" in str(caught.value)
