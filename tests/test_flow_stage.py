"""The flow stage (vidssl.stages.flow): track shards that follow the clip shards one for one,
checked against OpenCV's DIS called directly (the stored flow and the tracks' steps), against
the analytic motion of a translating texture, and read back beside the clips
(`read_split(beside=...)`); its place in the stage graph, its component and its command."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml
from kfp import dsl
from typer.testing import CliRunner

from components.flow import flow as flow_component
from vidssl.cli import app
from vidssl.clips import frame_name
from vidssl.flow.codec import decode_flow, quantisation_step
from vidssl.flow.tracks import TRACKS_FIELD, decode_tracks
from vidssl.shards import OutputWriter, ShardReadError, read_manifest, read_split
from vidssl.shards.reader import samples_from_shard, shard_refs
from vidssl.stages import flow
from vidssl.stages.graph import stage_graph
from vidssl.stages.prepare import prepared_clips, prepared_tracks
from vidssl.store import StoreError, open_store
from vidssl.video import decode_jpeg, encode_jpeg

from .conftest import build_experiment

torch.set_num_threads(1)

FLOW = {"tracks": {"starts_per_frame": 48, "min_length": 2}, "batch_size": 4}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Tiny synthetic Objectron clips (tests/conftest.py's TINY_EXPERIMENT: 64x80 frames, up
    to 4 clips per shard) and their tracks, through the data stages and the flow stage."""
    uri = f"file://{tmp_path_factory.mktemp('flow') / 'store'}"
    experiment = build_experiment(uri, {"flow": FLOW, "train": None})
    store = open_store(uri)
    clips_url = prepared_clips(experiment)
    output = flow.run(experiment, clips_url)
    return SimpleNamespace(
        experiment=experiment,
        store=store,
        clips_url=clips_url,
        clips=store.key_of(clips_url),
        output=output,
        tracks=store.key_of(output.url),
    )


def _keys(refs) -> list[list[str]]:
    return [[s["__key__"] for s in samples_from_shard(ref)] for ref in refs]


def _flat(lists: list[list[str]]) -> list[str]:
    return [item for part in lists for item in part]


def _rgb(data: bytes) -> np.ndarray:
    return cv2.cvtColor(decode_jpeg(data), cv2.COLOR_BGR2RGB)


def test_track_shards_follow_the_clip_shards_one_for_one(synthetic):
    store, output = synthetic.store, synthetic.output
    clips = read_manifest(store, synthetic.clips)
    manifest = output.manifest
    assert manifest.details["follows"] == synthetic.clips_url
    assert set(manifest.splits) == {"train", "val", "test", "flow_train", "flow_val", "flow_test"}
    assert manifest.skipped == [] and manifest.details["skipped"] == 0
    for split, entry in clips.splits.items():
        assert len(manifest.splits[split].shards) == len(entry.shards) >= 1
        clip_keys = _keys(shard_refs(store, synthetic.clips, clips, split))
        assert _keys(shard_refs(store, synthetic.tracks, manifest, split)) == clip_keys
        flow_keys = _keys(shard_refs(store, synthetic.tracks, manifest, f"flow_{split}"))
        assert _flat(flow_keys) == _flat(clip_keys)
        assert manifest.details["splits"][split]["tracked"] == entry.samples
    assert manifest.details["tracks_per_clip"] > 0 and manifest.details["mean_track_length"] >= 2


def test_tracks_decode_with_the_clip_s_geometry(synthetic):
    store = synthetic.store
    beside = [synthetic.tracks]
    samples = list(read_split(store, synthetic.clips, "train", beside=beside))
    assert samples and all(TRACKS_FIELD in sample for sample in samples)
    for sample in samples:
        meta = json.loads(sample["meta.json"])  # the clip's (a companion never overwrites)
        height, width = _rgb(sample[frame_name(0)]).shape[:2]
        tracks = decode_tracks(sample[TRACKS_FIELD])
        assert (tracks.num_frames, tracks.height, tracks.width) == (
            meta["num_frames"],
            height,
            width,
        )
        assert tracks.num_tracks > 0 and tracks.length.min() >= FLOW["tracks"]["min_length"]
        assert np.all((tracks.xy >= 0) & (tracks.xy <= [width - 1, height - 1]))


def _dis(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """OpenCV's DIS (medium preset, the stage's default) called directly on luma."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (first, second)]
    return dis.calc(gray[0], gray[1], None)


def _sample_flow(flow_field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """OpenCV's bilinear remap of a flow field at points (x, y): (N, 2)."""
    maps = xy.astype(np.float32).reshape(-1, 1, 2)
    return cv2.remap(flow_field, maps, None, cv2.INTER_LINEAR).reshape(-1, 2)


def test_stored_flow_and_track_steps_match_opencv_dis_called_directly(synthetic):
    store, bound = synthetic.store, synthetic.experiment.flow.bound
    clip = next(iter(read_split(store, synthetic.clips, "val", beside=[synthetic.tracks])))
    count = json.loads(clip["meta.json"])["num_frames"]
    frames = [_rgb(clip[frame_name(p)]) for p in range(count)]
    stored = next(
        s
        for s in read_split(store, synthetic.tracks, "flow_val")
        if s["__key__"] == clip["__key__"]
    )
    assert json.loads(stored["meta.json"]) == {"bound": bound}
    tracks = decode_tracks(clip[TRACKS_FIELD])
    errors, steps = [], []
    for p in range(count - 1):
        forward = _dis(frames[p], frames[p + 1])
        backward = _dis(frames[p + 1], frames[p])
        for direction, reference in (("fwd", forward), ("bwd", backward)):
            decoded = decode_flow(stored[f"{direction}_f{p:03d}_u.jpg"],
                                  stored[f"{direction}_f{p:03d}_v.jpg"], bound)  # fmt: skip
            errors.append(np.abs(decoded - np.clip(reference, -bound, bound)).ravel())
        alive = np.flatnonzero(tracks.alive_on(p) & tracks.alive_on(p + 1))
        step = tracks.at(alive, p + 1) - tracks.at(alive, p)
        steps.append(np.abs(step - _sample_flow(forward, tracks.at(alive, p))).ravel())
    errors, steps = np.concatenate(errors), np.concatenate(steps)
    # The codec: rounding errs by half a grey level; JPEG adds a little, more at motion edges.
    half_step = quantisation_step(bound) / 2
    assert np.median(errors) <= half_step and np.percentile(errors, 99) < 4 * half_step
    # Each step of a track is the flow at its point: fp16 offsets and OpenCV's 1/32 px remap.
    assert steps.size > 100 and np.percentile(steps, 99) < 0.05


def test_a_rerun_is_cached_and_prepared_tracks_finds_it(synthetic):
    again = flow.run(synthetic.experiment, synthetic.clips_url)
    assert again.cached and again.url == synthetic.output.url
    assert prepared_tracks(synthetic.experiment, synthetic.clips_url) == synthetic.output.url


# -- hand-made clips: a translating texture, a corrupt frame, a one-frame clip -----------------

SHIFT = (2, 1)  # px per frame, (dx, dy): the texture's motion
SIZE = (72, 56)  # (W, H) of the frames


def _texture_frames(count: int, seed: int) -> list[bytes]:
    """JPEG frames of a smooth random texture moving by SHIFT per frame: frame t shows the
    texture's pixel (x - t dx, y - t dy) at (x, y)."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    big = rng.uniform(0, 255, size=(height + 40, width + 40, 3)).astype(np.float32)
    big = cv2.GaussianBlur(big, (0, 0), 1.5)
    big = np.clip((big - big.mean()) * 3 + 128, 0, 255).astype(np.uint8)
    dx, dy = SHIFT
    return [
        encode_jpeg(big[30 - t * dy : 30 - t * dy + height, 30 - t * dx : 30 - t * dx + width], 95)
        for t in range(count)
    ]


def _clip(key: str, frames: list[bytes]) -> dict:
    sample = {"__key__": key, "meta.json": {"num_frames": len(frames), "video_id": key}}
    sample.update({frame_name(p): data for p, data in enumerate(frames)})
    return sample


def _write_clips(store, prefix: str, shards: list[list[dict]]) -> str:
    """A published clips output whose `train` split has exactly these shards."""
    writer = OutputWriter(
        store, prefix, stage="ingest", stage_version=1, digest=prefix.rsplit("/", 1)[-1],
        dataset="hand", config={}, inputs=[],
    )  # fmt: skip
    for shard in shards:
        for sample in shard:
            writer.write("train", sample)
        writer.end_shard("train")
    writer.publish()
    return store.url(prefix)


@pytest.fixture
def hand_made(tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    store = open_store(uri)
    corrupt = _texture_frames(5, 2)
    corrupt[1] = corrupt[1][:40] + bytes(len(corrupt[1]) - 40)  # header kept, data zeroed
    shards = [
        [_clip("moving_a", _texture_frames(6, 0)), _clip("corrupt", corrupt)],
        [_clip("single", _texture_frames(1, 3))],  # no good clip: an empty track shard
        [_clip("moving_b", _texture_frames(5, 1))],
    ]
    clips_url = _write_clips(store, "datasets/hand/ingest/abc", shards)
    experiment = build_experiment(
        uri, {"dataset": {"name": "hand"}, "flow": {**FLOW, "keep_flow": False}, "train": None}
    )
    output = flow.run(experiment, clips_url)
    return SimpleNamespace(store=store, experiment=experiment, clips_url=clips_url, output=output)


def test_failed_clips_are_skipped_and_named_and_the_shards_still_follow(hand_made):
    store, manifest = hand_made.store, hand_made.output.manifest
    clips = store.key_of(hand_made.clips_url)
    reasons = {s.input.rsplit("#", 1)[1]: (s.input, s.reason) for s in manifest.skipped}
    assert set(reasons) == {"corrupt", "single"}
    source, reason = reasons["corrupt"]
    assert source.startswith(hand_made.clips_url) and "shard-000000.tar" in source
    assert "f001.jpg" in reason and "not a decodable JPEG" in reason
    assert "1 frame" in reasons["single"][1]
    assert set(manifest.splits) == {"train"}  # keep_flow off; only the clips' split
    counts = [entry.samples for entry in manifest.splits["train"].shards]
    assert counts == [1, 0, 1]
    assert manifest.details["splits"]["train"] == {
        "clips": 4, "tracked": 2, "skipped": 2, "frames": 11,
        "tracks": manifest.details["splits"]["train"]["tracks"],
    }  # fmt: skip
    joined = {
        s["__key__"]: s
        for s in read_split(store, clips, "train", beside=[store.key_of(hand_made.output.url)])
    }
    assert set(joined) == {"moving_a", "corrupt", "single", "moving_b"}
    assert {k for k, s in joined.items() if TRACKS_FIELD in s} == {"moving_a", "moving_b"}


def test_tracks_of_a_translating_texture_move_with_it(hand_made):
    store = hand_made.store
    tracks_prefix = store.key_of(hand_made.output.url)
    for sample in read_split(store, tracks_prefix, "train"):
        tracks = decode_tracks(sample[TRACKS_FIELD])
        assert json.loads(sample["meta.json"]) == {
            "key": sample["__key__"], "num_frames": tracks.num_frames,
            "height": SIZE[1], "width": SIZE[0], "estimator": "dis",
        }  # fmt: skip
        positions = tracks.dense()  # (P, T, 2), NaN where not alive
        steps = (positions[:, 1:] - positions[:, :-1]).reshape(-1, 2)
        start = positions[:, :-1].reshape(-1, 2)
        # Points away from the border, where new texture enters: the analytic motion.
        inner = np.all((start >= 8) & (start <= [SIZE[0] - 9, SIZE[1] - 9]), axis=1)
        moved = steps[inner & ~np.isnan(steps[:, 0])]
        assert len(moved) > 100
        assert np.percentile(np.abs(moved - SHIFT), 90) < 0.1
        # Uniform motion is forward-backward consistent: interior tracks reach the last frame
        # unless the motion carries them out of the frame.
        assert tracks.length.max() == tracks.num_frames


def test_read_split_beside_works_shuffled_and_resampled(synthetic):
    store = synthetic.store
    beside = [synthetic.tracks]
    shuffled = read_split(
        store, synthetic.clips, "train", beside=beside, shuffle_shards=True, shuffle_buffer=3,
        seed=4,
    )  # fmt: skip
    keys = [s["__key__"] for s in shuffled if TRACKS_FIELD in s]
    clips = read_manifest(store, synthetic.clips)
    assert sorted(keys) == sorted(_flat(_keys(shard_refs(store, synthetic.clips, clips, "train"))))
    by_url = [synthetic.output.url]  # a URL of the store works as well as a prefix
    resampled = read_split(store, synthetic.clips, "train", beside=by_url, resampled=True, seed=1)
    for _, sample in zip(range(12), resampled, strict=False):
        tracks = decode_tracks(sample[TRACKS_FIELD])
        assert tracks.num_frames == json.loads(sample["meta.json"])["num_frames"]


def test_read_split_beside_refuses_outputs_that_do_not_follow(synthetic, hand_made):
    store = synthetic.store
    # Tracks of other clips, with another shard count: refused before reading, naming both.
    other = hand_made.store.key_of(hand_made.output.url)
    foreign = open_store(synthetic.experiment.store_uri())
    _copy_output(hand_made.store, other, foreign, "datasets/hand/flow/x")
    with pytest.raises(StoreError) as refused:
        read_split(store, synthetic.clips, "train", beside=["datasets/hand/flow/x"])
    message = str(refused.value)
    assert store.url("datasets/hand/flow/x") in message and store.url(synthetic.clips) in message
    assert "shards" in message
    # A companion whose fields the clips already have (here: the clips themselves).
    with pytest.raises(ShardReadError, match=r"f000\.jpg") as clash:
        list(read_split(store, synthetic.clips, "train", beside=[synthetic.clips]))
    assert str(clash.value).count(store.url(synthetic.clips)) == 2


def _copy_output(source, prefix: str, target, target_prefix: str) -> None:
    """Every object of an output under another prefix (its manifest names shards relatively)."""
    for info in source.list(prefix + "/"):
        relative = info.key[len(prefix) + 1 :]
        target.put(f"{target_prefix}/{relative}", source.get(info.key))


# -- the stage graph, the pipeline, the component and the command --------------------------------

PICO_TRAIN = {
    "method": {"kind": "pico", "queue_size": 64, "hidden_dim": 32, "projection_dim": 16},
    "sampler": {"kind": "pixel_pairs", "max_pairs": 16},
}


@pytest.mark.parametrize(
    ("sampler", "tracks"),
    [
        ({"correspondence": "tracks", "view_frames": "anchored"}, True),
        ({"correspondence": "tracks", "view_frames": "random"}, True),
        ({"correspondence": "static_video", "view_frames": "anchored"}, True),
        ({"correspondence": "static_video", "view_frames": "random"}, False),
        ({"correspondence": "static_frame", "view_frames": "random"}, False),
    ],
)
def test_the_graph_runs_flow_only_for_a_sampler_that_reads_tracks(make_experiment, sampler, tracks):
    train = {**PICO_TRAIN, "sampler": {**PICO_TRAIN["sampler"], **sampler}}
    assert stage_graph(make_experiment({"train": train})).tracks is tracks


def test_the_graph_has_no_flow_without_pixel_pairs(make_experiment):
    assert not stage_graph(make_experiment()).tracks  # SimSiam on pairs
    assert not stage_graph(make_experiment({"train": None})).tracks


def test_the_pipeline_passes_the_tracks_to_train_and_bench(make_experiment, tmp_path):
    from kfp import compiler

    from pipelines.experiment import build

    package = tmp_path / "pico.yaml"
    compiler.Compiler().compile(build(make_experiment({"train": PICO_TRAIN})), str(package))
    spec = next(yaml.safe_load_all(package.read_text()))
    handler = next(c for c in spec["components"].values() if "dag" in c)
    tasks = {t["taskInfo"]["name"]: (key, t) for key, t in handler["dag"]["tasks"].items()}
    assert {"flow", "train", "bench"} <= set(tasks)
    flow_key, flow_task = tasks["flow"]
    assert flow_task["dependentTasks"] == [tasks["clean"][0]]
    for name in ("train", "bench"):
        given = tasks[name][1]["inputs"]["parameters"]["tracks_url"]["taskOutputParameter"]
        assert given["producerTask"] == flow_key


def test_the_component_returns_the_tracks_and_logs_metrics(synthetic, tmp_path):
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    url = flow_component.python_func(
        config_json=synthetic.experiment.model_dump_json(),
        clips_url=synthetic.clips_url,
        force=False,
        metrics=metrics,
    )
    assert url == synthetic.output.url
    logged = metrics.metadata
    details = synthetic.output.manifest.details
    assert logged["clips"] == details["tracked"] > 0
    assert logged["tracks_per_clip"] == details["tracks_per_clip"] > 0
    assert logged["flow_frames_per_second"] > 0


def test_the_command_prints_the_output_url(synthetic, tmp_path: Path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(synthetic.experiment.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["flow", "run", str(path), "--clips", synthetic.clips_url])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == synthetic.output.url


def test_a_damaged_clip_shard_stops_the_stage_naming_it(tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    store = open_store(uri)
    clips_url = _write_clips(
        store, "datasets/hand/ingest/bad", [[_clip("moving_a", _texture_frames(4, 0))]]
    )
    manifest = read_manifest(store, "datasets/hand/ingest/bad")
    shard = f"datasets/hand/ingest/bad/{manifest.splits['train'].shards[0].name}"
    data = store.get(shard)
    store.put(shard, data[: len(data) // 2])  # truncated after the manifest was written
    experiment = build_experiment(uri, {"dataset": {"name": "hand"}, "flow": FLOW, "train": None})
    with pytest.raises(ShardReadError, match="truncated"):
        flow.run(experiment, clips_url)
    assert not any(i.key.endswith("manifest.json") for i in store.list("datasets/hand/flow/"))
