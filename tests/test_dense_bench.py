"""The dense export and the bench's dense path, on tiny clips built here whose answer is known.

Each clip is a window sliding over a larger scene by multiples of 4 px, so the truth is exact:
the ground-truth flow from frame p to p+1 is the window's offset o_p - o_{p+1}, the category
masks are windows of the scene's category map (rectangles on the 4-px grid), and a point's scene
coordinate is its pixel plus o_p. An oracle export gives each stride-4 cell a fixed random code
of the scene cell it covers: its nearest cell in the next frame covers the same scene cell, so
each query's match is its own cell's centre moved by the true flow, (1.5, 1.5) px from the
truth: PCK@4 = 1, PCK@1 = 0, EPE = 1.5 sqrt(2). A noise export scores what `chance_pck` says a
random cell scores. A mask oracle (one-hot of the cell's category) gives mIoU 1 on the probe."""

from __future__ import annotations

import io
import json
import math

import cv2
import numpy as np
import pytest
import torch

from vidssl.clips import category_name, flow_gt_name, flow_valid_name, frame_name
from vidssl.evaluate.report import render_markdown
from vidssl.flow.tracks import STOP_CLIP_END, Tracks, encode_tracks
from vidssl.shards import OutputWriter, read_manifest, read_split
from vidssl.stages import bench, export
from vidssl.stages.base import stage_digest, store_for
from vidssl.synth.shapes import CATEGORIES

STRIDE = 4
FRAME_H, FRAME_W = 60, 76  # not multiples of 32: the export pads to 64 x 96
SCENE_H, SCENE_W = 96, 128
#: Window offsets (x, y) per frame, multiples of the stride: flows (-4, -4), (-8, 0), (-4, -8).
OFFSETS = [(0, 0), (4, 4), (12, 4), (16, 12)]
CELLS_H, CELLS_W = math.ceil(FRAME_H / STRIDE), math.ceil(FRAME_W / STRIDE)
CLASSES = 1 + len(CATEGORIES)


@pytest.fixture(autouse=True)
def _one_torch_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Scene:
    """A textured scene with two rectangles of two categories, and its cell codes."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.image = rng.integers(0, 256, (SCENE_H, SCENE_W, 3), dtype=np.uint8)
        self.category = np.zeros((SCENE_H, SCENE_W), np.uint8)
        for category in (1, 2):  # the first two of CATEGORIES, in every scene
            top, left = 4 * rng.integers(2, 12), 4 * rng.integers(2, 18)
            height, width = 4 * rng.integers(4, 9), 4 * rng.integers(4, 9)
            self.category[top : top + height, left : left + width] = category
        codes = rng.normal(size=(32, SCENE_H // STRIDE, SCENE_W // STRIDE)).astype(np.float32)
        self.codes = codes / np.linalg.norm(codes, axis=0, keepdims=True)

    def window(self, array: np.ndarray, position: int) -> np.ndarray:
        x, y = OFFSETS[position]
        return array[y : y + FRAME_H, x : x + FRAME_W]

    def cell_codes(self, position: int) -> np.ndarray:
        """(32, h, w): cell (i, j) of frame `position` gets the code of the scene cell it
        covers (the frame's offset is a multiple of the stride)."""
        x, y = OFFSETS[position]
        return self.codes[
            :, y // STRIDE : y // STRIDE + CELLS_H, x // STRIDE : x // STRIDE + CELLS_W
        ]

    def flow(self, position: int) -> np.ndarray:
        (xa, ya), (xb, yb) = OFFSETS[position], OFFSETS[position + 1]
        return np.broadcast_to(np.float32([xa - xb, ya - yb]), (FRAME_H, FRAME_W, 2)).copy()


def _png(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask)
    assert ok
    return data.tobytes()


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    assert ok
    return data.tobytes()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


CLIPS = {"train": ["tr0", "tr1", "tr2"], "test": ["te0", "te1"]}


def _scenes() -> dict[str, Scene]:
    return {key: Scene(seed) for seed, key in enumerate(CLIPS["train"] + CLIPS["test"])}


def _meta(key: str, split: str, flow: bool) -> dict:
    frames = len(OFFSETS)
    return {
        "dataset": "dense", "video_id": key, "clip_index": 0, "category": "cup",
        "split": split, "fps": 10.0, "source_fps": 10.0,
        "source_frame_indices": list(range(frames)),
        "timestamps": [t / 10 for t in range(frames)], "shot_boundaries": [0],
        "width": FRAME_W, "height": FRAME_H, "num_frames": frames,
        "ground_truth": {"flow": flow, "category_masks": True},
    }  # fmt: skip


def _writer(store, prefix: str, stage: str, **details: object) -> OutputWriter:  # type: ignore[no-untyped-def]
    writer = OutputWriter(
        store, prefix, stage=stage, stage_version=1, digest=prefix.replace("/", "-"),
        dataset="dense", config={}, inputs=[],
    )  # fmt: skip
    writer.details.update(details)
    return writer


def write_clips(store, scenes: dict[str, Scene], prefix: str, *, flow: bool = True) -> str:  # type: ignore[no-untyped-def]
    """Clip shards per the contract: frames, and per frame the ground truth."""
    writer = _writer(store, prefix, "clean")
    for split, keys in CLIPS.items():
        for key in keys:
            scene = scenes[key]
            sample: dict = {"__key__": key, "meta.json": _meta(key, split, flow)}
            for p in range(len(OFFSETS)):
                sample[frame_name(p)] = _jpeg(scene.window(scene.image, p))
                sample[category_name(p)] = _png(scene.window(scene.category, p))
                if flow and p + 1 < len(OFFSETS):
                    sample[flow_gt_name(p)] = _npy(scene.flow(p).astype(np.float16))
                    sample[flow_valid_name(p)] = _png(np.full((FRAME_H, FRAME_W), 255, np.uint8))
            writer.write(split, sample)
    writer.publish()
    return store.url(prefix)


def write_tracks(store, scenes: dict[str, Scene], prefix: str) -> str:  # type: ignore[no-untyped-def]
    """The flow stage's layout: track shards following the clips' (test split), tracks from
    every 5th pixel of frame 0 moved by the true offsets while they stay in the frame."""
    writer = _writer(store, prefix, "flow")
    for split, keys in CLIPS.items():
        for key in keys:
            rows, columns = np.mgrid[2:FRAME_H:5, 2:FRAME_W:5]
            start = np.stack([columns.ravel(), rows.ravel()], axis=1).astype(np.float32)
            positions = [start + np.float32(OFFSETS[0]) - np.float32(o) for o in OFFSETS]
            inside = [((p >= 0) & (p <= [FRAME_W - 1, FRAME_H - 1])).all(axis=1) for p in positions]
            length = np.cumprod(np.stack(inside), axis=0).sum(axis=0).astype(np.int64)
            xy = np.concatenate([np.stack(positions)[:n, i] for i, n in enumerate(length)])
            tracks = Tracks(
                num_frames=len(OFFSETS), height=FRAME_H, width=FRAME_W,
                start=np.zeros(len(start), np.int64), length=length, xy=xy,
                stop=np.full(len(start), STOP_CLIP_END, np.uint8), alpha=0.01, beta=0.5,
            )  # fmt: skip
            meta = {"key": key, "num_frames": len(OFFSETS)}
            writer.write(
                split, {"__key__": key, "tracks.npz": encode_tracks(tracks), "meta.json": meta}
            )
    writer.publish()
    return store.url(prefix)


def write_export(store, scenes: dict[str, Scene], prefix: str, maps) -> str:  # type: ignore[no-untyped-def]
    """A dense export as the export stage writes it; `maps(scene, position)` -> (D, h, w)."""
    writer = _writer(store, prefix, "export", dense=True)
    for split, keys in CLIPS.items():
        for key in keys:
            for p in range(len(OFFSETS)):
                dense = maps(scenes[key], p).astype(np.float32)
                dense /= np.linalg.norm(dense, axis=0, keepdims=True)
                pooled = dense.mean(axis=(1, 2))
                record = {
                    "video_id": key, "clip_index": 0, "frame_position": p, "frame_index": p,
                    "timestamp": p / 10, "category": "cup", "split": split,
                    "width": FRAME_W, "height": FRAME_H, "frame_hw": [FRAME_H, FRAME_W],
                    "dense_input_hw": [64, 96], "dense_frame_hw": [FRAME_H, FRAME_W],
                    "dense_stride": STRIDE,
                }  # fmt: skip
                writer.write(split, {
                    "__key__": f"{key}_f{p:03d}", "meta.json": record,
                    "emb.npy": (pooled / np.linalg.norm(pooled)).astype(np.float16),
                    "dense.npy": dense.astype(np.float16),
                })  # fmt: skip
    writer.publish()
    return store.url(prefix)


def _noise(seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return lambda scene, position: rng.normal(size=(32, CELLS_H, CELLS_W))


def _mask_code(scene: Scene, position: int) -> np.ndarray:
    """One-hot of the category at each cell's top-left pixel (masks lie on the 4-px grid)."""
    cells = scene.window(scene.category, position)[::STRIDE, ::STRIDE]
    return np.eye(16, dtype=np.float32)[cells].transpose(2, 0, 1) + 0.05


@pytest.fixture
def dense_setup(make_experiment):  # type: ignore[no-untyped-def]
    experiment = make_experiment(
        {
            "name": "dense",
            "bench": {"dense": {"probe_epochs": 30, "probe_batch_size": 4, "figures": 2}},
        }
    )
    store = store_for(experiment)
    scenes = _scenes()
    return experiment, store, scenes, write_clips(store, scenes, "datasets/dense/clean/gt")


def _chance(result: dict, threshold: str) -> float:
    return result["correspondence"]["chance"][threshold]


def test_oracle_maps_match_exactly_and_noise_scores_chance(dense_setup):  # type: ignore[no-untyped-def]
    experiment, store, scenes, clips_url = dense_setup
    exports = {
        "oracle": write_export(store, scenes, "exports/oracle", Scene.cell_codes),
        "noise": write_export(store, scenes, "exports/noise", _noise(0)),
        "masks": write_export(store, scenes, "exports/masks", _mask_code),
    }
    result = bench.run(experiment, exports, "r1", clips_url=clips_url)
    dense = result["dense"]
    oracle = dense["oracle"]["correspondence"]
    # 2 test clips x 3 pairs; queries every 8 px from (4, 4) whose truth stays in the frame.
    assert oracle["truth"] == "flow" and oracle["pairs"] == 6
    expected_queries = 0
    for p in range(3):
        (dx, dy) = np.subtract(OFFSETS[p], OFFSETS[p + 1])
        xs, ys = np.arange(4, FRAME_W, 8) + dx, np.arange(4, FRAME_H, 8) + dy
        expected_queries += (
            2 * np.sum((xs >= 0) & (xs <= FRAME_W - 1)) * np.sum((ys >= 0) & (ys <= FRAME_H - 1))
        )
    assert oracle["queries"] == expected_queries
    assert oracle["pck@4px"] == 1.0 and oracle["pck@2px"] == 0.0
    # Per clip (for the bootstrap over clips): the sums pool back to the benchmark's numbers.
    for scores in (oracle, dense["noise"]["correspondence"]):
        sums, counts = np.sum(list(scores["per_clip"].values()), axis=0)
        assert set(scores["per_clip"]) == set(CLIPS["test"]) and counts == expected_queries
        assert sums / counts == pytest.approx(scores["pck_avg"])
    assert oracle["epe"] == pytest.approx(1.5 * math.sqrt(2), abs=1e-6)
    noise = dense["noise"]["correspondence"]
    assert noise["queries"] == expected_queries
    for threshold, margin in (("pck@4px", 0.04), ("pck@8px", 0.06), ("pck@16px", 0.1)):
        assert abs(noise[threshold] - _chance(dense["noise"], threshold)) < margin, noise
    # Chance by hand for one threshold: cell centres within 16 px of the truth, over all cells.
    assert 0.05 < _chance(dense["noise"], "pck@16px") < 0.5
    # The probe: the mask code is perfect; noise does no better than the most frequent class.
    masks, noise_probe = dense["masks"]["segmentation"], dense["noise"]["segmentation"]
    assert masks["miou"] > 0.9 and masks["train_frames"] == 12 and masks["test_frames"] == 8
    truth = np.stack([s.window(s.category, p) for k, s in scenes.items() if k in CLIPS["test"]
                      for p in range(len(OFFSETS))])  # fmt: skip
    present = len(np.unique(truth))
    majority = np.mean(truth == 0) / present  # background everywhere: IoU_bg = its share
    assert masks["majority_miou"] == pytest.approx(majority)
    assert noise_probe["miou"] < majority + 0.15
    # The report: its dense tables and figures; metrics.json holds the same numbers.
    report = store.get_text("runs/dense/r1/report.md")
    assert "## Dense correspondence" in report and "## Linear-probe segmentation" in report
    assert "| oracle | 6 |" in report and "| random cell (chance) |" in report
    assert "| masks | 1.000 |" in report or "| masks | 0.9" in report
    for figure in (
        "flow-0.png",
        "correspondences-oracle-0.png",
        "correspondences-oracle-1.png",
        "masks-masks.png",
    ):
        assert figure in result["figures"] and f"plots/{figure}" in report
        assert store.get(f"runs/dense/r1/plots/{figure}")[:4] == b"\x89PNG"
    stored = json.loads(store.get_text("runs/dense/r1/metrics.json"))
    assert stored["dense"]["oracle"]["correspondence"]["pck@4px"] == 1.0
    flat = bench.kfp_metrics(result)
    assert flat["oracle_pck_avg"] == oracle["pck_avg"] and "masks_miou" in flat


def test_search_radius_limits_the_matches(dense_setup):  # type: ignore[no-untyped-def]
    """Flows here are 5.7 to 8.9 px: a 12 px radius keeps the oracle exact; within 3 px of the
    query only its own cell and a neighbour remain, all farther than 4 px from the truth."""
    from vidssl.stages.dense_bench import read_correspondence_truth, score_correspondence

    experiment, store, scenes, clips_url = dense_setup
    oracle = store.key_of(write_export(store, scenes, "exports/oracle", Scene.cell_codes))
    for radius, expected in ((12.0, 1.0), (3.0, 0.0)):
        cfg = experiment.bench.dense.model_copy(update={"search_radius": radius})
        truth = read_correspondence_truth(store, store.key_of(clips_url), "test", cfg)
        scores, _ = score_correspondence(store, oracle, "test", truth, cfg)
        assert scores["pck@4px"] == expected, (radius, scores)


def test_tracks_are_the_truth_where_clips_have_no_flow(dense_setup):  # type: ignore[no-untyped-def]
    experiment, store, scenes, _ = dense_setup
    clips_url = write_clips(store, scenes, "datasets/dense/clean/noflow", flow=False)
    tracks_url = write_tracks(store, scenes, "datasets/dense/flow/t")
    exports = {"oracle": write_export(store, scenes, "exports/oracle", Scene.cell_codes)}
    result = bench.run(experiment, exports, "r2", clips_url=clips_url, tracks_url=tracks_url)
    oracle = result["dense"]["oracle"]["correspondence"]
    assert oracle["truth"] == "tracks" and oracle["pairs"] == 6
    # Track points sit anywhere in their cell: at most 1.5 px off per axis from its centre.
    assert oracle["pck@4px"] == 1.0 and oracle["epe"] <= 1.5 * math.sqrt(2) + 1e-3
    assert "tracks-0.png" in result["figures"]
    without = bench.run(experiment, exports, "r3", clips_url=clips_url)
    assert "correspondence" not in without["dense"]["oracle"]  # no truth: not scored


def test_non_dense_bench_has_no_dense_section(make_experiment):  # type: ignore[no-untyped-def]
    metrics = {"experiment": "x", "models": {}, "figures": []}
    assert "Dense" not in render_markdown(metrics)
    assert render_markdown({**metrics, "dense": {}}) == render_markdown(metrics)


# --- export -----------------------------------------------------------------------------------


def _pico(make_experiment, **settings):  # type: ignore[no-untyped-def]
    return make_experiment(
        {
            "name": "dense",
            "train": {
                "method": {
                    "kind": "pico",
                    "embedding_dim": 32,
                    "projection_dim": 16,
                    "hidden_dim": 32,
                    "queue_size": 64,
                    "freeze_encoder": False,
                },
                "sampler": {"kind": "pixel_pairs", "max_pairs": 16},
                "views_from": "frame",
            },
            **settings,
        }
    )


def test_dense_export_embeds_whole_frames_with_the_methods_fresh_encoder(make_experiment):  # type: ignore[no-untyped-def]
    from vidssl.train.augment import normalize
    from vidssl.train.methods import build_method

    experiment = _pico(make_experiment)
    store = store_for(experiment)
    scenes = _scenes()
    clips_url = write_clips(store, scenes, "datasets/dense/clean/gt")
    output = export.run(experiment, clips_url, baseline="random")
    assert output.manifest.details["dense"] is True and output.manifest.details["dimension"] == 32
    assert output.manifest.config["dense"] == {"input": "whole_frame", "pad_multiple": 32}
    samples = list(read_split(store, store.key_of(output.url), "test", split_by_node=False,
                              split_by_worker=False))  # fmt: skip
    assert len(samples) == len(CLIPS["test"]) * len(OFFSETS)
    sample = samples[1]
    record = json.loads(sample["meta.json"])
    assert record["frame_hw"] == [FRAME_H, FRAME_W] and record["dense_input_hw"] == [64, 96]
    assert record["dense_frame_hw"] == [FRAME_H, FRAME_W] and record["dense_stride"] == STRIDE
    dense = np.load(io.BytesIO(sample["dense.npy"]))
    assert dense.dtype == np.float16 and dense.shape == (32, CELLS_H, CELLS_W)
    assert np.allclose(np.linalg.norm(dense.astype(np.float32), axis=0), 1, atol=2e-3)
    # The random baseline is the method's own encoder built under the seed, run on the frame
    # zero-padded after normalisation; the map is cropped to the cells covering the frame.
    torch.manual_seed(experiment.train.seed)
    encoder = build_method(experiment.train).encoder.eval()
    frame = cv2.imdecode(np.frombuffer(_jpeg(scenes["te0"].window(scenes["te0"].image, 1)),
                                       np.uint8), cv2.IMREAD_COLOR)[..., ::-1]  # fmt: skip
    image = normalize(torch.from_numpy(frame.copy()).permute(2, 0, 1)[None])
    padded = torch.zeros(1, 3, 64, 96)
    padded[..., :FRAME_H, :FRAME_W] = image
    with torch.no_grad():
        expected = encoder(padded)[0, :, :CELLS_H, :CELLS_W]
    assert np.allclose(dense, torch.nn.functional.normalize(expected, dim=0).numpy(), atol=4e-3)
    pooled = torch.nn.functional.normalize(expected.mean(dim=(1, 2)), dim=0).numpy()
    assert np.allclose(np.load(io.BytesIO(sample["emb.npy"])), pooled, atol=2e-3)


def test_non_dense_export_fields_digest_and_random_encoder_are_unchanged():  # type: ignore[no-untyped-def]
    """The demo's export (SimSiam on a ResNet): the same fields, digest and random weights as
    before dense export existed."""
    from vidssl.config import load_experiment
    from vidssl.train.backbones import build_backbone

    demo = load_experiment("siampose_synthetic")
    cfg = demo.train
    identity = {"baseline": "random", "seed": cfg.seed}
    before = {"model": identity, "views_from": cfg.views_from, "image_size": cfg.image_size}
    fields = export.export_fields(demo, identity, dense=False)
    assert fields == before
    inputs = ["abc", str(identity)]
    assert stage_digest("export", 1, fields, inputs) == stage_digest("export", 1, before, inputs)
    encoder, got = export._random_encoder(demo)
    assert got == identity and not export.is_dense(encoder)
    torch.manual_seed(cfg.seed)
    reference = build_backbone(cfg.backbone)[0].state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in encoder.state_dict().items())


def test_dense_manifest_detection(dense_setup):  # type: ignore[no-untyped-def]
    _, store, scenes, _ = dense_setup
    url = write_export(store, scenes, "exports/oracle", Scene.cell_codes)
    from vidssl.stages.dense_bench import frame_key, is_dense_export

    assert is_dense_export(read_manifest(store, store.key_of(url)))
    assert frame_key("clip_c000_f012") == ("clip_c000", 12)


def test_clip_fraction_is_a_stable_share_of_the_keys():  # type: ignore[no-untyped-def]
    from vidssl.clips import in_clip_fraction

    keys = [f"clip{index:05d}" for index in range(4000)]
    chosen = [key for key in keys if in_clip_fraction(key, 0.25)]
    assert abs(len(chosen) / len(keys) - 0.25) < 0.03
    assert chosen == [key for key in keys if in_clip_fraction(key, 0.25)]  # every run the same
    assert set(chosen) <= {key for key in keys if in_clip_fraction(key, 0.5)}  # nested
    assert all(in_clip_fraction(key, 1.0) for key in keys)


def test_dense_maps_only_for_the_clip_fraction_and_the_bench_reads_those(make_experiment):  # type: ignore[no-untyped-def]
    from vidssl.clips import in_clip_fraction

    # 0.35 keeps te0 and tr0, tr1 (key hashes 0.19, 0.34, 0.12) and leaves te1, tr2 (0.37, 0.51)
    experiment = _pico(make_experiment, export={"dense_clip_fraction": 0.35})
    store = store_for(experiment)
    clips_url = write_clips(store, _scenes(), "datasets/dense/clean/gt")
    output = export.run(experiment, clips_url, baseline="random")
    assert output.manifest.config["dense"]["clip_fraction"] == 0.35
    prefix = store.key_of(output.url)
    samples = list(read_split(store, prefix, "test", split_by_node=False, split_by_worker=False))
    assert len(samples) == len(CLIPS["test"]) * len(OFFSETS)  # every frame: its pooled embedding
    with_maps = {s["__key__"].rpartition("_f")[0] for s in samples if "dense.npy" in s}
    assert with_maps == {key for key in CLIPS["test"] if in_clip_fraction(key, 0.35)} == {"te0"}
    # the truth and the probe read the clips with maps only (a missing map would be an error)
    result = bench.run(experiment, {"random": output.url}, run_id="fraction", clips_url=clips_url)
    scored = result["dense"]["random"]
    assert scored["correspondence"]["queries"] > 0
    assert scored["segmentation"]["test_frames"] == len(OFFSETS)


def test_frame_gap_scores_frames_k_apart_on_chained_flow_and_on_tracks(dense_setup):  # type: ignore[no-untyped-def]
    """Two clips of 4 frames: k = 2 gives 2 pairs a clip, k = 3 one. Chaining the exact flows
    (sums of window offsets) keeps the oracle exact, as do the tracks, which see every frame."""
    from vidssl.stages.dense_bench import read_correspondence_truth, score_correspondence

    experiment, store, scenes, clips_url = dense_setup
    oracle = store.key_of(write_export(store, scenes, "exports/oracle", Scene.cell_codes))
    noflow = store.key_of(write_clips(store, scenes, "datasets/dense/clean/gapnoflow", flow=False))
    tracks = store.key_of(write_tracks(store, scenes, "datasets/dense/flow/gap"))
    for gap, pairs in ((2, 4), (3, 2)):
        cfg = experiment.bench.dense.model_copy(update={"frame_gap": gap})
        for source, prefix, tracks_prefix in (
            ("flow", store.key_of(clips_url), ""), ("tracks", noflow, tracks)
        ):  # fmt: skip
            truth = read_correspondence_truth(store, prefix, "test", cfg, tracks_prefix)
            assert truth.source == source and len(truth.pairs) == pairs
            assert all(pair.end == pair.position + gap for pair in truth.pairs)
            scores, _ = score_correspondence(store, oracle, "test", truth, cfg)
            assert scores["pairs"] == pairs and scores["frame_gap"] == gap
            assert scores["pck@4px"] == 1.0, (gap, source, scores)
    # Where the clip is shorter than the gap there is nothing to score.
    cfg = experiment.bench.dense.model_copy(update={"frame_gap": len(OFFSETS)})
    assert not read_correspondence_truth(store, store.key_of(clips_url), "test", cfg).pairs


def test_replicate_scores_the_split_it_is_asked_for(dense_setup):  # type: ignore[no-untyped-def]
    """`make replicate SPLIT=...`'s dense scoring: the test queries by default; val (to choose
    configurations) where the clips have it, and a clear error where they have none."""
    from vidssl.config import ConfigError
    from vidssl.replicate import _correspondence

    experiment, store, scenes, clips_url = dense_setup
    prefixes = {
        "trained": store.key_of(write_export(store, scenes, "exports/oracle", Scene.cell_codes)),
        "random": store.key_of(write_export(store, scenes, "exports/noise", _noise(0))),
    }
    result = _correspondence(store, experiment, store.key_of(clips_url), prefixes, "test")
    assert result.trained["pck@4px"] == 1.0 and result.random_embeddings["pck@4px"] < 0.5
    assert set(result.trained["per_clip"]) == set(CLIPS["test"])
    with pytest.raises(ConfigError, match="the val clips carry no ground-truth flow"):
        _correspondence(store, experiment, store.key_of(clips_url), prefixes, "val")
