"""Training from point tracks: the train stage with the flow stage's output (PiCo on a tiny
synthetic dataset, end to end on CPU), its digest (unchanged without tracks), and the errors
for a sampler that needs tracks and has none, or tracks of other clips."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import build_experiment
from vidssl.errors import InputError
from vidssl.shards import read_manifest
from vidssl.stages import clean, flow, ingest, synth, train
from vidssl.stages.base import stage_digest
from vidssl.store import open_store

PICO = {
    "train__method": {"kind": "pico", "hidden_dim": 32, "queue_size": 256},
    "train__sampler": {"kind": "pixel_pairs", "max_pairs": 64, "examples_per_clip": 2},
    "train__image_size": 64,
    "train__batch_size": 4,
    "train__steps_per_epoch": 2,
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):  # type: ignore[no-untyped-def]
    """(store URI, clips URL, tracks URL): synth -> ingest -> clean -> flow, once."""
    uri = f"file://{tmp_path_factory.mktemp('tracks') / 'store'}"
    experiment = build_experiment(uri, **PICO)
    raw = synth.raw_url(synth.run(experiment))
    clips_url = clean.run(experiment, ingest.run(experiment, source_url=raw).url).url
    return uri, clips_url, flow.run(experiment, clips_url).url


def test_pico_trains_on_the_flow_stages_tracks_end_to_end(data):
    uri, clips_url, tracks_url = data
    experiment = build_experiment(uri, **PICO)
    output = train.run(experiment, clips_url, tracks_url=tracks_url)
    history = output.manifest.details["history"]
    assert output.manifest.details["steps"] == 4
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in history)
    assert all(0 <= h["knn_accuracy"] <= 1 for h in history)  # the map, pooled, embeds frames
    store = open_store(uri)
    clips = read_manifest(store, store.key_of(clips_url))
    tracks = read_manifest(store, store.key_of(tracks_url))
    assert output.manifest.inputs == [clips.digest, tracks.digest]
    looked_up = train.published(experiment, clips_url, tracks_url=tracks_url)
    assert looked_up is not None and looked_up.model_url == output.model_url
    encoder, config = train.load_encoder(store, output.model_url)
    assert config["method"]["kind"] == "pico"
    assert encoder.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 128, 16, 16)
    with pytest.raises(InputError, match=r"train\.sampler pixel_pairs .* learns from point tracks"):
        train.published(experiment, clips_url)


def test_static_frame_needs_no_tracks(data):
    uri, clips_url, _ = data
    static = {"correspondence": "static_frame", "view_frames": "random"}
    settings = {**PICO, "train__sampler": {**PICO["train__sampler"], **static}}
    experiment = build_experiment(uri, **{**settings, "train__steps_per_epoch": 1})
    output = train.run(experiment, clips_url)
    assert math.isfinite(output.manifest.details["history"][-1]["loss"])
    assert len(output.manifest.inputs) == 1


def test_the_digest_of_a_training_without_tracks_is_what_it_always_was(data):
    """Existing experiments keep their outputs: without tracks the digest hashes the config and
    the clips' digest exactly as before tracks existed; with tracks it differs."""
    uri, clips_url, tracks_url = data
    experiment = build_experiment(uri)  # the tiny SimSiam run
    stopped = train.run(experiment, clips_url, stop_after_step=1)
    store = open_store(uri)
    clips = read_manifest(store, store.key_of(clips_url))
    # (`input: cpu`, the default, is left out as it was before the GPU input path existed.)
    fields = {"train": experiment.train.model_dump(exclude=train._NOT_IN_DIGEST | {"input"})}
    before = stage_digest("train", train.SPEC.version, fields, [clips.digest])
    assert stopped.url.endswith(f"/train/{before}")
    with_tracks = train.run(experiment, clips_url, tracks_url=tracks_url, stop_after_step=1)
    assert with_tracks.url != stopped.url


def test_missing_or_foreign_tracks_are_clear_input_errors(data):
    uri, clips_url, tracks_url = data
    experiment = build_experiment(uri, **PICO)
    with pytest.raises(InputError, match=r"train\.sampler pixel_pairs .*--tracks URL"):
        train.run(experiment, clips_url)
    raw = synth.raw_url(synth.run(experiment))  # cached: the clips before cleaning
    other_clips = ingest.run(experiment, source_url=raw).url
    with pytest.raises(InputError, match="these tracks follow the clips"):
        train.run(experiment, other_clips, tracks_url=tracks_url)


def test_the_cli_passes_the_tracks_on(data, monkeypatch):
    from typer.testing import CliRunner

    from vidssl.cli import app
    from vidssl.cluster import EXPERIMENT_JSON_ENV

    uri, clips_url, tracks_url = data
    calls = []

    def run(experiment, clips, *, tracks_url="", force=False):  # type: ignore[no-untyped-def]
        calls.append((clips, tracks_url, force))
        return train.TrainOutput("file:///out", None, False)

    monkeypatch.setattr("vidssl.stages.train.run", run)
    env = {EXPERIMENT_JSON_ENV: build_experiment(uri, **PICO).model_dump_json()}
    result = CliRunner().invoke(
        app, ["train", "--clips", clips_url, "--tracks", tracks_url], env=env
    )
    assert result.exit_code == 0, result.output
    assert calls == [(clips_url, tracks_url, False)]


def test_every_way_of_launching_training_passes_the_tracks_on(make_experiment, monkeypatch):
    """In process, under torchrun (`vidssl train --tracks`) and on a TrainJob; a training
    without tracks keeps its command and TrainJob name."""
    from vidssl.cluster.launch import run_train
    from vidssl.cluster.trainjob import train_command, trainjob_manifest, trainjob_name

    clips, tracks = "s3://b/datasets/d/clean/c", "s3://b/datasets/d/flow/f"
    assert train_command(clips, force=True, procs_per_node=2, tracks_url=tracks)[-4:] == [
        clips, "--tracks", tracks, "--force",
    ]  # fmt: skip
    assert "--tracks" not in train_command(clips, force=False, procs_per_node=None)
    experiment = make_experiment({"cluster": {"train": {"nodes": 2}}})
    assert trainjob_name(experiment, clips, False, "") == trainjob_name(experiment, clips, False)
    assert trainjob_name(experiment, clips, False, tracks) != trainjob_name(
        experiment, clips, False
    )
    job = trainjob_manifest(experiment, clips, image="i", namespace="n", tracks_url=tracks)
    assert job["spec"]["trainer"]["command"][-2:] == ["--tracks", tracks]
    calls = []

    def run(experiment, clips_url, *, tracks_url="", force=False):  # type: ignore[no-untyped-def]
        calls.append((clips_url, tracks_url))

    monkeypatch.setattr("vidssl.stages.train.run", run)
    run_train(make_experiment(), clips, tracks_url=tracks)
    assert calls == [(clips, tracks)]
