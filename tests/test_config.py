"""Experiment files: errors name the file and the key; `base:` composes experiments; `config show`
prints the resolved config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vidssl.cli import app
from vidssl.config import (
    ConfigError,
    Experiment,
    FramesSampler,
    NTXentMethod,
    ObjectronSource,
    OptimizerConfig,
    PairsSampler,
    Resources,
    SimSiamMethod,
    TripletsSampler,
    experiment_from_json,
    load_experiment,
)

SHIPPED = Path(__file__).resolve().parents[1] / "pipelines" / "experiments"

VALID = {
    "name": "tiny",
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
    shipped = sorted(SHIPPED.glob("*.yaml"))
    assert shipped
    for path in shipped:
        assert load_experiment(str(path)).name == path.stem


#: The NT-Xent baseline's own settings (the reference's temperature and projection).
NTXENT_OWN = {"temperature": 0.5, "projection_dim": 128}

#: What the five siampose_objectron_* experiments were before they were rewritten on `base:`
#: (flat keys of the old schema): method, pairing / sampler, augmentation, batch, learning rate,
#: epochs, and the method's own settings.
SIAMPOSE_OBJECTRON = {
    "same": ("simsiam", "same", "lc_px", 64, 0.03, 25, {"projection_dim": 2048}),
    "nearby": ("simsiam", "nearby", "lc_px", 64, 0.03, 25, {"projection_dim": 2048}),
    "distant": ("simsiam", "distant", "full", 64, 0.03, 25, {"projection_dim": 2048}),
    "ntxent": ("ntxent", "nearby", "full", 64, 0.4, 100, NTXENT_OWN),
    "tcn": ("tcn", "triplets", "full", 32, 0.03, 25, {"margin": 0.2, "projection_dim": 2048}),
}


@pytest.mark.parametrize("variant", sorted(SIAMPOSE_OBJECTRON))
def test_siampose_objectron_experiments_keep_their_settings(variant):
    method, pairing, augmentation, batch, base_lr, epochs, own = SIAMPOSE_OBJECTRON[variant]
    path = SHIPPED / f"siampose_objectron_{variant}.yaml"
    experiment = load_experiment(str(path))
    train = experiment.train
    assert experiment.name == f"siampose_objectron_{variant}"
    assert train.method.kind == method
    assert {key: getattr(train.method, key) for key in own} == own
    assert getattr(train.sampler, "pairing", train.sampler.kind) == pairing
    assert train.sampler.examples_per_clip == "all"  # the old default, every_pair
    assert (train.augmentation, train.batch_size, train.epochs) == (augmentation, batch, epochs)
    assert train.optimizer == OptimizerConfig(base_lr=base_lr, weight_decay=5e-4, warmup_epochs=10)
    # what every one of them spelled out before, now inherited from siampose_objectron_nearby
    assert (train.backbone, train.image_size, train.loader_workers) == ("resnet50", 224, 8)
    assert experiment.dataset.source == ObjectronSource(root="/data/objectron")
    assert experiment.dataset.val_fraction == 0.1
    assert (experiment.ingest.frame_stride, experiment.ingest.resize_short) == (5, 320)
    assert experiment.shards.max_samples == 256 and experiment.export.baselines == ["random"]
    assert experiment.cluster.for_stage("train") == Resources(
        cpu="16", memory="64Gi", gpu=1, shm="4Gi"
    )
    assert experiment.cluster.for_stage("clean") == Resources(cpu="4", memory="16Gi")
    assert experiment.description == yaml.safe_load(path.read_text())["description"]  # its own


# -- base: composition ---------------------------------------------------------------------------

BASE = {
    **VALID,
    "name": "parent",
    "description": "the parent experiment",
    "ingest": {"fps": 5, "jpeg_quality": 80},
    "train": {
        "method": {"kind": "ntxent", "temperature": 0.5, "projection_dim": 128},
        "sampler": {"kind": "pairs", "pairing": "distant", "examples_per_clip": 2},
        "optimizer": {"base_lr": 0.4, "weight_decay": 5e-4},
        "batch_size": 64,
    },
}


def test_a_child_overriding_one_nested_key_keeps_the_base_siblings(experiment_dir):
    _write(experiment_dir, "parent", BASE)
    child = {"base": "parent", "ingest": {"fps": 10}, "train": {"optimizer": {"base_lr": 0.1}}}
    _write(experiment_dir, "child", child)
    experiment = load_experiment("child")
    assert experiment.ingest.fps == 10 and experiment.ingest.jpeg_quality == 80
    assert experiment.train.optimizer == OptimizerConfig(base_lr=0.1, weight_decay=5e-4)
    assert experiment.train.method == NTXentMethod(temperature=0.5, projection_dim=128)
    assert experiment.train.sampler.pairing == "distant"
    assert experiment.train.sampler.examples_per_clip == 2
    assert experiment.train.batch_size == 64
    assert experiment.dataset.source.root == "/videos"


def test_a_different_kind_replaces_the_base_mapping(experiment_dir):
    _write(experiment_dir, "parent", BASE)
    child = {
        "base": "parent",
        "dataset": {"source": {"kind": "objectron", "root": "/objectron"}},
        "train": {"method": {"kind": "simsiam", "predictor_dim": 64}, "sampler": "frames"},
    }
    _write(experiment_dir, "child", child)
    experiment = load_experiment("child")  # merged, temperature would be an unknown key
    assert experiment.train.method == SimSiamMethod(predictor_dim=64)  # projection_dim 2048
    assert experiment.train.sampler == FramesSampler()  # examples_per_clip all, not the base's 2
    assert experiment.dataset.source == ObjectronSource(root="/objectron")
    assert experiment.dataset.name == "tiny"  # the dataset's other keys still merge
    # the same kind merges: only the key given changes
    warmer = {"base": "parent", "train": {"method": {"kind": "ntxent", "temperature": 1.0}}}
    _write(experiment_dir, "warmer", warmer)
    method = load_experiment("warmer").train.method
    assert method == NTXentMethod(temperature=1.0, projection_dim=128)


def test_a_chain_of_two_bases(experiment_dir):
    _write(experiment_dir, "parent", BASE)
    _write(experiment_dir, "middle", {"base": "parent", "train": {"batch_size": 32, "epochs": 40}})
    _write(experiment_dir, "leaf", {"base": "middle", "train": {"epochs": 50}})
    experiment = load_experiment("leaf")
    assert experiment.name == "leaf"
    assert experiment.train.epochs == 50  # the leaf's
    assert experiment.train.batch_size == 32  # the middle's
    assert experiment.train.optimizer.base_lr == 0.4  # the parent's
    assert experiment.ingest.jpeg_quality == 80  # the parent's


def test_a_cycle_of_bases_is_one_error_naming_the_files(experiment_dir):
    _write(experiment_dir, "one", {**VALID, "base": "two"})
    _write(experiment_dir, "two", {"base": "one"})
    with pytest.raises(ConfigError) as caught:
        load_experiment("one")
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert "include each other (one -> two -> one)" in message
    assert str(experiment_dir / "one.yaml") in message
    _write(experiment_dir, "self", {**VALID, "base": "self"})
    with pytest.raises(ConfigError, match=r"include each other \(self -> self\)"):
        load_experiment("self")


def test_a_missing_base_is_named(experiment_dir):
    _write(experiment_dir, "orphan", {**VALID, "base": "nowhere"})
    with pytest.raises(ConfigError) as caught:
        load_experiment("orphan")
    message = str(caught.value)  # the file that asks, and the base it asks for
    orphan, nowhere = experiment_dir / "orphan.yaml", experiment_dir / "nowhere.yaml"
    assert message == f"{orphan}: base: {nowhere} does not exist"


def test_a_file_elsewhere_starts_from_a_shipped_experiment(experiment_dir, tmp_path):
    _write(experiment_dir, "parent", BASE)
    mine = tmp_path / "mine"
    mine.mkdir()
    kid = load_experiment(str(_write(mine, "kid", {"base": "parent", "ingest": {"fps": 2}})))
    assert kid.name == "kid" and kid.ingest.fps == 2
    assert kid.train.optimizer.base_lr == BASE["train"]["optimizer"]["base_lr"]
    named_after = load_experiment(str(_write(mine, "parent", {"base": "parent"})))
    assert named_after.train.batch_size == BASE["train"]["batch_size"]  # not a cycle
    _write(mine, "orphan", {"base": "nowhere"})
    with pytest.raises(ConfigError) as caught:
        load_experiment(str(mine / "orphan.yaml"))
    assert str(caught.value) == (
        f"{mine / 'orphan.yaml'}: base: neither {mine / 'nowhere.yaml'} nor "
        f"{experiment_dir / 'nowhere.yaml'} exists"
    )


def test_shipped_experiments_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDSSL_EXPERIMENTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no pipelines/experiments here: the checkout's are used
    assert load_experiment("pico_k400").dataset.source.kind == "kinetics400"
    (tmp_path / "pipelines" / "experiments").mkdir(parents=True)
    _write(tmp_path / "pipelines" / "experiments", "local", VALID)
    assert load_experiment("local").name == "tiny"  # the working directory's come first
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment("pico_k400")


def test_a_base_is_an_experiment_name(experiment_dir):
    _write(experiment_dir, "odd", {**VALID, "base": ["parent"]})
    with pytest.raises(ConfigError, match=r"odd\.yaml: base: expected an experiment name"):
        load_experiment("odd")


def test_the_name_defaults_to_the_file_stem_and_the_description_is_not_inherited(
    experiment_dir,
):
    _write(experiment_dir, "parent", BASE)
    _write(experiment_dir, "kid", {"base": "parent"})
    kid = load_experiment("kid")
    assert kid.name == "kid" and kid.description == ""
    assert load_experiment("parent").description == "the parent experiment"
    _write(experiment_dir, "nameless", {k: v for k, v in VALID.items() if k != "name"})
    assert load_experiment("nameless").name == "nameless"


def test_config_show_prints_a_child_resolved(experiment_dir):
    _write(experiment_dir, "parent", BASE)
    _write(experiment_dir, "child", {"base": "parent", "train": {"optimizer": {"base_lr": 0.1}}})
    result = CliRunner().invoke(app, ["config", "show", "child"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert "base" not in shown and shown["name"] == "child" and shown["description"] == ""
    assert shown["ingest"]["jpeg_quality"] == 80  # inherited
    assert shown["train"]["optimizer"] == {
        "base_lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "warmup_epochs": 10,
    }  # fmt: skip
    assert shown["train"]["method"] == {"kind": "ntxent", "projection_dim": 128, "temperature": 0.5}
    assert shown["train"]["sampler"]["pairing"] == "distant"
    assert load_experiment("child") == Experiment.model_validate(shown)  # it loads as shown


def test_config_show_of_a_shipped_child_has_its_base_settings():
    result = CliRunner().invoke(
        app, ["config", "show", str(SHIPPED / "siampose_objectron_tcn.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "base:" not in result.output
    shown = yaml.safe_load(result.output)
    assert shown["name"] == "siampose_objectron_tcn"
    assert shown["dataset"]["source"]["root"] == "/data/objectron"  # siampose_objectron_nearby's
    assert shown["train"]["optimizer"]["base_lr"] == 0.03 and shown["train"]["loader_workers"] == 8
    assert shown["train"]["sampler"] == {"kind": "triplets", "examples_per_clip": "all"}


# -- the schema: no pipeline: key, nested train ---------------------------------------------------


def test_the_pipeline_key_is_refused_with_what_replaced_it(experiment_dir):
    path = _write(experiment_dir, "old", {**VALID, "pipeline": "siampose"})
    with pytest.raises(ConfigError) as caught:
        load_experiment("old")
    message = str(caught.value)
    assert message.startswith(f"{path}: pipeline: ")
    assert "a train: section adds training, export and bench" in message


def test_without_train_an_experiment_has_the_data_stages_only(experiment_dir):
    _write(experiment_dir, "data", VALID)
    assert load_experiment("data").train is None


@pytest.mark.parametrize(
    "old_key", ["objective", "pairing", "base_lr", "projection_dim", "warmup_epochs"]
)
def test_the_old_flat_train_keys_are_unknown(experiment_dir, old_key):
    path = _write(experiment_dir, "flat", {**VALID, "train": {old_key: 1}})
    with pytest.raises(ConfigError) as caught:
        load_experiment("flat")
    assert f"{path}: train.{old_key}: unknown key" in str(caught.value)


def test_a_method_whose_views_the_sampler_lacks_is_refused(experiment_dir):
    _write(experiment_dir, "mismatch", {**VALID, "train": {"method": "tcn", "sampler": "pairs"}})
    with pytest.raises(ConfigError, match=r"train\.method tcn reads the views \['anchor'"):
        load_experiment("mismatch")
    _write(experiment_dir, "match", {**VALID, "train": {"method": "tcn", "sampler": "triplets"}})
    assert load_experiment("match").train.sampler == TripletsSampler()


def test_a_bare_kind_is_shorthand_for_the_mapping(experiment_dir):
    _write(experiment_dir, "short", {**VALID, "train": {"method": "ntxent"}})
    _write(experiment_dir, "long", {**VALID, "train": {"method": {"kind": "ntxent"}}})
    short = load_experiment("short").train
    assert short.method == NTXentMethod() and short.method.temperature == 0.1
    assert short == load_experiment("long").train
    assert short.sampler == PairsSampler()  # the default sampler gives ntxent's views


def test_an_unknown_key_of_a_method_names_its_kind(experiment_dir):
    raw = {**VALID, "train": {"method": {"kind": "moco", "queue_sizee": 4096}}}
    path = _write(experiment_dir, "typo", raw)
    with pytest.raises(ConfigError) as caught:
        load_experiment("typo")
    assert f"{path}: train.method.moco.queue_sizee: unknown key" in str(caught.value)


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


def test_a_bare_kind_over_the_same_kind_keeps_the_base_settings(experiment_dir):
    base = {**VALID, "train": {"method": {"kind": "ntxent", "temperature": 0.5}}}
    _write(experiment_dir, "parent", base)
    _write(experiment_dir, "child", {"base": "parent", "train": {"method": "ntxent"}})
    assert load_experiment("child").train.method.temperature == 0.5
