"""The bench's dense path: exports carrying per-pixel maps (`dense.npy`, vidssl.stages.export;
their manifest's details say `dense: true`) are scored on the clips they embedded.

(a) Correspondence, on the query split's (test; val where there is none) consecutive frame
pairs (p, p+1): where a clip carries ground-truth flow (`vidssl.clips.ground_truth`; the
synthetic data), queries on a grid every `bench.dense.query_step` px with their true positions
(`flow_correspondences`, invalid where the flow is, or where the point leaves the frame); where
none does and the bench has the flow stage's tracks (`tracks_url`), the tracks alive on both
frames. Each query's match is the cosine-nearest cell of frame p+1 (`match_points`, within
`search_radius` when set); PCK at `pck_pixels` and EPE pooled over up to `max_pairs` pairs,
spread evenly over the clips, beside `chance_pck` (what a uniformly random cell scores).

(b) Linear-probe segmentation (PiCo 4.1): `train_linear_probe` on the training split's maps
against the `category_f*` masks (0 background, 1 + index in `vidssl.synth.shapes.CATEGORIES`),
up to `probe_max_train_frames` frames spread evenly over the clips; mIoU / fIoU on the query
split (as many frames at most), beside the mIoU of predicting the training set's most frequent
class everywhere.

Points. Truth (flow, masks, tracks) is in pixels of the stored frame (its grid); a map is
(D, h, w) at stride s of the encoder's input, in which the frame spans `dense_frame_hw` (the
stored size: frames are not resized, only padded bottom and right). Points move between the
two grids by scaling about pixel centres, (x + 0.5) * W_to / W_from - 0.5 (the identity here);
matches come back to frame pixels before they are scored, so thresholds are frame pixels. A
mask is padded with the ignore index to the map's extent (h s, w s), the grid the probe's
upsampled logits lie on.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from vidssl.clips import frame_name, in_clip_fraction
from vidssl.config import DenseBenchConfig, Experiment
from vidssl.errors import InputError
from vidssl.evaluate import plots
from vidssl.evaluate.dense import (
    IGNORE_INDEX,
    LinearProbe,
    ProbeSettings,
    chance_pck,
    confusion_matrix,
    flow_correspondences,
    linear_probe_scores,
    match_points,
    pck,
    segmentation_scores,
)
from vidssl.evaluate.report import slug
from vidssl.flow.tracks import TRACKS_FIELD
from vidssl.progress import track
from vidssl.shards import Manifest, decode_json, read_manifest, read_split
from vidssl.store import ObjectStore
from vidssl.train.data import decode_rgb

log = logging.getLogger(__name__)

DENSE_FIELD = "dense.npy"
#: Frames drawn per clip in the tracks figure, and tracks drawn at most.
TRACK_FIGURE_FRAMES = 4
TRACK_FIGURE_TRACKS = 40


def is_dense_export(manifest: Manifest) -> bool:
    """Whether an export's frames carry `dense.npy` maps (the export stage says so)."""
    return bool(manifest.details.get("dense"))


def rescale_points(points: np.ndarray, source_hw, target_hw) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(x, y) pixels of a `source_hw` (H, W) grid in pixels of a `target_hw` grid covering the
    same image: scaled about pixel centres, (x + 0.5) * W_t / W_s - 0.5."""
    scale = np.array([target_hw[1] / source_hw[1], target_hw[0] / source_hw[0]])
    if np.all(scale == 1):
        return np.asarray(points, np.float64)
    return (np.asarray(points, np.float64) + 0.5) * scale - 0.5


def query_split(manifest: Manifest) -> str:
    """Where the dense benchmarks query: test, val where there is none (as the bench)."""
    return "test" if "test" in manifest.splits else "val"


def _spread(candidates: list[int], count: int) -> list[int]:
    """`count` of `candidates` evenly spaced (all of them when there are no more)."""
    if len(candidates) <= count:
        return candidates
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return [candidates[i] for i in picks]


def _per_clip(manifest: Manifest, split: str, limit: int, fraction: float = 1.0) -> int:
    """Items to take per clip to spread `limit` over the split's clips (of `fraction`)."""
    clips = manifest.splits[split].samples if split in manifest.splits else 0
    return max(1, math.ceil(limit / max(clips * fraction, 1)))


def _clips(store: ObjectStore, prefix: str, split: str, beside: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return read_split(
        store, prefix, split, split_by_node=False, split_by_worker=False, beside=list(beside)
    )


# --- what the clips know ----------------------------------------------------------------------


@dataclass
class PairTruth:
    """One scored frame pair of a clip: frames `position` and `position + gap`, query points
    in the first and their true positions in the second, (x, y) pixels of a `grid_hw` grid (the
    stored frame's), `valid` False where a query has no truth (occluded, leaves the frame)."""

    clip: str
    position: int
    points_a: np.ndarray
    points_b: np.ndarray
    valid: np.ndarray
    grid_hw: tuple[int, int]
    gap: int = 1

    @property
    def end(self) -> int:
        return self.position + self.gap


@dataclass
class CorrespondenceTruth:
    """The pairs of the query split that are scored, and the examples the figures draw."""

    source: str  # "flow", "tracks" or "" (none)
    pairs: list[PairTruth] = field(default_factory=list)
    figure_pairs: list[tuple[str, int]] = field(default_factory=list)  # one per clip
    frames: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # of those pairs
    flow_figures: list[tuple[np.ndarray, np.ndarray, str]] = field(default_factory=list)
    track_figures: list[tuple[list[np.ndarray], np.ndarray, str]] = field(default_factory=list)


def _flow_pairs(
    sample: dict, meta: dict, step: int, count: int, gap: int = 1
) -> list[tuple[PairTruth, object]]:
    """Pairs (p, p + gap) whose every consecutive step has ground-truth flow, with the first
    step's flow (for the figure)."""
    from vidssl.clips import ground_truth

    steps = [ground_truth(sample, position) for position in range(meta["num_frames"] - 1)]
    found = [
        position
        for position in range(len(steps) - gap + 1)
        if all(steps[position + k].flow is not None for k in range(gap))
    ]
    pairs = []
    for position in (found[i] for i in _spread(list(range(len(found))), count)):
        chain = steps[position : position + gap]
        flows = [np.asarray(truth.flow, np.float32) for truth in chain]
        valids = [None if t.flow_valid is None else np.asarray(t.flow_valid) > 0 for t in chain]
        points_a, points_b, ok = flow_correspondences(flows, step, valids)
        grid = flows[0].shape[:2]
        pair = PairTruth(sample["__key__"], position, points_a, points_b, ok, grid, gap)
        pairs.append((pair, flows[0]))
    return pairs


def _track_pairs(sample: dict, meta: dict, count: int, gap: int = 1) -> list[PairTruth]:
    from vidssl.flow.tracks import decode_tracks

    tracks = decode_tracks(sample[TRACKS_FIELD])
    candidates = []
    for position in range(min(tracks.num_frames, meta["num_frames"]) - gap):
        both = np.flatnonzero(tracks.alive_on(position) & tracks.alive_on(position + gap))
        if both.size:
            candidates.append((position, both))
    pairs = []
    for position, both in (candidates[i] for i in _spread(list(range(len(candidates))), count)):
        points_a = tracks.at(both, position).astype(np.float64)
        points_b = tracks.at(both, position + gap).astype(np.float64)
        valid = np.ones(len(both), bool)
        grid = (tracks.height, tracks.width)
        pairs.append(PairTruth(sample["__key__"], position, points_a, points_b, valid, grid, gap))
    return pairs


def _track_figure(sample: dict, meta: dict) -> tuple[list[np.ndarray], np.ndarray, str]:
    """A few frames spread over the clip with the tracks alive on the first, in frame px."""
    from vidssl.flow.tracks import decode_tracks

    tracks = decode_tracks(sample[TRACKS_FIELD])
    last = min(tracks.num_frames, meta["num_frames"]) - 1
    positions = sorted({int(p) for p in np.linspace(0, last, TRACK_FIGURE_FRAMES).round()})
    frames = [decode_rgb(sample[frame_name(p)]) for p in positions]
    alive = np.flatnonzero(tracks.alive_on(positions[0]))
    alive = alive[_spread(list(range(len(alive))), TRACK_FIGURE_TRACKS)]
    points = tracks.dense()[alive][:, positions]
    points = rescale_points(
        points.reshape(-1, 2), (tracks.height, tracks.width), frames[0].shape[:2]
    ).reshape(points.shape)
    shown = ", ".join(str(p) for p in positions)
    return frames, points, f"{sample['__key__']}: point tracks, frames {shown}"


def read_correspondence_truth(
    store: ObjectStore,
    clips_prefix: str,
    split: str,
    cfg: DenseBenchConfig,
    tracks_prefix: str = "",
    clip_fraction: float = 1.0,
) -> CorrespondenceTruth:
    """Up to `cfg.max_pairs` frame pairs of `split` with their truth: ground-truth flow where
    the clips carry it, else the tracks of `tracks_prefix` (the flow stage's output) when it
    has the split; and for the figures the frames of the first pair of each of the first
    `cfg.figures` clips. Only clips in `clip_fraction` (those the export wrote maps of)."""
    manifest = read_manifest(store, clips_prefix)
    if split not in manifest.splits:
        log.warning("dense bench: the clips have no %s split (%s)", split, sorted(manifest.splits))
        return CorrespondenceTruth("")
    beside: tuple[str, ...] = ()
    if tracks_prefix:
        tracked = read_manifest(store, tracks_prefix).splits
        if split in tracked:
            beside = (tracks_prefix,)
        else:
            log.warning("dense bench: the tracks have no %s split (%s)", split, sorted(tracked))
    per_clip = _per_clip(manifest, split, cfg.max_pairs, clip_fraction)
    flow_truth = CorrespondenceTruth("flow")
    track_truth = CorrespondenceTruth("tracks")
    samples = _clips(store, clips_prefix, split, beside)
    for sample in track(samples, manifest.splits[split].samples, f"dense truth {split}", "clips"):
        if not in_clip_fraction(sample["__key__"], clip_fraction):
            continue
        meta = decode_json(sample)
        room = cfg.max_pairs - len(flow_truth.pairs)
        if meta.get("ground_truth", {}).get("flow") and room > 0:
            pairs = _flow_pairs(sample, meta, cfg.query_step, min(per_clip, room), cfg.frame_gap)
            for index, (pair, flow) in enumerate(pairs):
                if index == 0 and len(flow_truth.figure_pairs) < cfg.figures:
                    _keep_frames(flow_truth, sample, pair)
                    frame = flow_truth.frames[pair.clip, pair.position]
                    caption = f"{pair.clip}: ground-truth flow, frames {pair.position}-"
                    caption += str(pair.position + 1)
                    flow_truth.flow_figures.append((frame, flow, caption))
                flow_truth.pairs.append(pair)
        elif not flow_truth.pairs and TRACKS_FIELD in sample:
            room = cfg.max_pairs - len(track_truth.pairs)
            count, gap = min(per_clip, room), cfg.frame_gap
            pairs = _track_pairs(sample, meta, count, gap) if room > 0 else []
            for index, pair in enumerate(pairs):
                if index == 0 and len(track_truth.figure_pairs) < cfg.figures:
                    _keep_frames(track_truth, sample, pair)
                track_truth.pairs.append(pair)
        if TRACKS_FIELD in sample and len(track_truth.track_figures) < cfg.figures:
            track_truth.track_figures.append(_track_figure(sample, meta))
    chosen = flow_truth if flow_truth.pairs else track_truth
    if not chosen.pairs:
        chosen.source = ""
    chosen.track_figures = track_truth.track_figures
    return chosen


def _keep_frames(truth: CorrespondenceTruth, sample: dict, pair: PairTruth) -> None:
    truth.figure_pairs.append((pair.clip, pair.position))
    for position in (pair.position, pair.end):
        truth.frames[pair.clip, position] = decode_rgb(sample[frame_name(position)])


@dataclass
class MaskSet:
    """Category masks of some frames of a split, (clip key, position) -> (H, W) uint8, in
    reading order, and the RGB frame of the first of them in each of the first few clips (for
    the figure)."""

    masks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    frames: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)


def read_masks(
    store: ObjectStore,
    clips_prefix: str,
    split: str,
    limit: int,
    keep_frames: int = 0,
    clip_fraction: float = 1.0,
) -> MaskSet:
    """Up to `limit` frames of `split` with a category mask, spread evenly over the clips (of
    `clip_fraction`: those the export wrote maps of)."""
    from vidssl.clips import ground_truth

    manifest = read_manifest(store, clips_prefix)
    found = MaskSet()
    if split not in manifest.splits:
        return found
    per_clip = _per_clip(manifest, split, limit, clip_fraction)
    for sample in _clips(store, clips_prefix, split):
        if not in_clip_fraction(sample["__key__"], clip_fraction):
            continue
        meta = decode_json(sample)
        if not meta.get("ground_truth", {}).get("category_masks"):
            continue
        for index, position in enumerate(_spread(list(range(meta["num_frames"])), per_clip)):
            if len(found.masks) >= limit:
                return found
            mask = ground_truth(sample, position).category
            if mask is None:
                continue
            key = (sample["__key__"], position)
            found.masks[key] = np.asarray(mask, np.uint8)
            if index == 0 and len(found.frames) < keep_frames:  # one frame per clip
                found.frames[key] = decode_rgb(sample[frame_name(position)])
    return found


# --- the exported maps ------------------------------------------------------------------------


def frame_key(export_key: str) -> tuple[str, int]:
    """(clip key, position) of an export sample key `<clip key>_f<position>`."""
    clip, _, position = export_key.rpartition("_f")
    if not clip or not position.isdigit():
        raise InputError(f"export sample {export_key!r}: not <clip key>_f<position>")
    return clip, int(position)


def dense_maps(
    store: ObjectStore, export_prefix: str, split: str, wanted: set[tuple[str, int]] | None = None
) -> Iterator[tuple[tuple[str, int], dict, np.ndarray]]:
    """((clip key, position), record, (D, h, w) float32 map) of the export's frames (only
    `wanted` ones when given), in the export's order."""
    for sample in _clips(store, export_prefix, split):
        key = frame_key(sample["__key__"])
        if wanted is not None and key not in wanted:
            continue
        if DENSE_FIELD not in sample:
            raise InputError(
                f"{sample.get('__url__')}: sample {sample['__key__']!r} has no {DENSE_FIELD}; "
                "the export is not dense"
            )
        record = decode_json(sample)
        for name in ("dense_stride", "dense_frame_hw"):
            if name not in record:
                raise InputError(f"{sample.get('__url__')}: {sample['__key__']}: no {name}")
        yield key, record, np.load(io.BytesIO(sample[DENSE_FIELD])).astype(np.float32)


# --- (a) correspondence -----------------------------------------------------------------------


@dataclass
class MatchedPair:
    """A scored pair's queries, matches and truth in frame pixels, for the figure."""

    pair: PairTruth
    matches: np.ndarray


def score_correspondence(
    store: ObjectStore, export_prefix: str, split: str, truth: CorrespondenceTruth,
    cfg: DenseBenchConfig,
) -> tuple[dict, list[MatchedPair]]:  # fmt: skip
    """PCK, EPE and chance PCK of the export's maps over the truth's pairs (pooled), with
    the matches of the truth's figure pairs."""
    by_start = {(p.clip, p.position): p for p in truth.pairs}
    by_end = {(p.clip, p.end): p for p in truth.pairs}
    wanted = set(by_start) | set(by_end)
    held: dict[tuple[str, int], tuple[dict, np.ndarray]] = {}
    matched: list[np.ndarray] = []
    scored: list[PairTruth] = []
    chance = np.zeros(len(cfg.pck_pixels))
    examples: list[MatchedPair] = []
    maps = dense_maps(store, export_prefix, split, wanted)
    for key, record, features in track(maps, len(wanted), f"dense pairs {split}", "frames"):
        if key in by_start:
            held[key] = (record, features)
        pair = by_end.get(key)
        if pair is None or (pair.clip, pair.position) not in held:
            continue
        record_a, features_a = held.pop((pair.clip, pair.position))
        stride = int(record["dense_stride"])
        frame_hw = tuple(record_a["dense_frame_hw"])
        scale = float(np.mean(np.divide(frame_hw, pair.grid_hw)))
        radius = None if cfg.search_radius is None else cfg.search_radius * scale
        queries = rescale_points(pair.points_a, pair.grid_hw, frame_hw)
        found = match_points(features_a, features, queries, stride, radius)
        matches = rescale_points(found, frame_hw, pair.grid_hw)
        matched.append(matches)
        scored.append(pair)
        true_b = rescale_points(pair.points_b, pair.grid_hw, frame_hw)
        _, height, width = features.shape
        thresholds = [t * scale for t in cfg.pck_pixels]
        by_chance = chance_pck(true_b, height, width, stride, thresholds, pair.valid)
        chance += int(pair.valid.sum()) * np.array(list(by_chance.values()))
        if (pair.clip, pair.position) in truth.figure_pairs:
            examples.append(MatchedPair(pair, matches))
    if not scored:
        return {"truth": truth.source, "pairs": 0}, examples
    valid = np.concatenate([p.valid for p in scored])
    truth_b = np.concatenate([p.points_b for p in scored])
    scores = pck(np.concatenate(matched), truth_b, valid, cfg.pck_pixels)
    per_clip = _pck_avg_per_clip(scored, matched, cfg.pck_pixels)
    queries = max(int(valid.sum()), 1)
    chance_scores = {
        f"pck@{t:g}px": float(c / queries) for t, c in zip(cfg.pck_pixels, chance, strict=True)
    }
    if cfg.pck_pixels:
        chance_scores["pck_avg"] = float(np.mean(list(chance_scores.values())))
    gap = scored[0].gap
    result = {"truth": truth.source, "pairs": len(scored), "frame_gap": gap, **scores}
    return {**result, "chance": chance_scores, "per_clip": per_clip}, examples


def _pck_avg_per_clip(
    scored: list[PairTruth], matched: list[np.ndarray], pixels: list[float]
) -> dict[str, list[float]]:
    """{clip: [sum over its valid queries of their PCK avg, number of them]}: pooled, the
    benchmark's PCK avg; per clip, what `bootstrap.pooled_difference_interval` resamples."""
    per_clip: dict[str, list[float]] = {}
    thresholds = np.asarray(pixels, float)
    if not len(thresholds):
        return per_clip  # no PCK avg to break down
    for pair, matches in zip(scored, matched, strict=True):
        errors = np.linalg.norm(matches[pair.valid] - pair.points_b[pair.valid], axis=1)
        hits = (errors[:, None] <= thresholds[None, :]).mean(axis=1)
        total = per_clip.setdefault(pair.clip, [0.0, 0])
        total[0] += float(hits.sum())
        total[1] += int(pair.valid.sum())
    return per_clip


def correspondence_figure(
    example: MatchedPair, truth: CorrespondenceTruth, threshold: float, name: str
) -> bytes | None:
    pair = example.pair
    frame_a = truth.frames.get((pair.clip, pair.position))
    frame_b = truth.frames.get((pair.clip, pair.end))
    if frame_a is None or frame_b is None or not pair.valid.any():
        return None
    valid = pair.valid
    to_frame = (frame_a.shape[0], frame_a.shape[1])
    points_a = rescale_points(pair.points_a[valid], pair.grid_hw, to_frame)
    matches = rescale_points(example.matches[valid], pair.grid_hw, to_frame)
    errors = np.linalg.norm(example.matches[valid] - pair.points_b[valid], axis=1)
    return plots.correspondences(
        frame_a, frame_b, points_a, matches, errors <= threshold,
        f"{name}: {pair.clip} frames {pair.position}->{pair.end}, nearest-pixel "
        f"matches (green within {threshold:g} px)",
    )  # fmt: skip


# --- (b) linear-probe segmentation ------------------------------------------------------------


def mask_on_map_grid(mask: np.ndarray, frame_hw, map_hw, stride: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A frame's (H, W) mask on the input grid a (h, w) map at `stride` covers: resized
    (nearest) to the frame's extent in the input `frame_hw` if it differs, then padded with
    the ignore index to (h * stride, w * stride)."""
    import cv2

    mask = np.asarray(mask, np.uint8)
    if mask.shape != tuple(frame_hw):
        mask = cv2.resize(mask, (frame_hw[1], frame_hw[0]), interpolation=cv2.INTER_NEAREST)
    height, width = map_hw[0] * stride, map_hw[1] * stride
    if height < mask.shape[0] or width < mask.shape[1]:
        raise InputError(
            f"a dense map of {map_hw} cells at stride {stride} does not cover a {mask.shape} frame"
        )
    out = np.full((height, width), IGNORE_INDEX, np.uint8)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


@dataclass
class ProbeData:
    """Maps and masks on the maps' grid of the frames found in both, one map size."""

    keys: list[tuple[str, int]]
    features: np.ndarray  # (N, D, h, w) float16
    masks: np.ndarray  # (N, h s, w s) uint8
    frame_hw: list[tuple[int, int]]
    skipped: int = 0


def probe_data(store: ObjectStore, export_prefix: str, split: str, masks: MaskSet) -> ProbeData:
    """The export's maps of the frames `masks` holds (the first map's size; others skipped)."""
    keys, features, grid_masks, sizes, skipped = [], [], [], [], 0
    maps = dense_maps(store, export_prefix, split, set(masks.masks))
    for key, record, feature in track(maps, len(masks.masks), f"probe maps {split}", "frames"):
        if features and feature.shape != features[0].shape:
            skipped += 1
            continue
        stride = int(record["dense_stride"])
        frame_hw = tuple(record["dense_frame_hw"])
        keys.append(key)
        features.append(feature.astype(np.float16))
        grid_masks.append(mask_on_map_grid(masks.masks[key], frame_hw, feature.shape[1:], stride))
        sizes.append(masks.masks[key].shape)
    if skipped:
        log.warning(
            "dense bench %s: %d frames of another size left out of the probe", split, skipped
        )
    if not features:
        empty = np.zeros((0, 1, 1, 1), np.float16)
        return ProbeData([], empty, np.zeros((0, 1, 1), np.uint8), [], skipped)
    return ProbeData(keys, np.stack(features), np.stack(grid_masks), sizes, skipped)


def majority_miou(train_masks: np.ndarray, test_masks: np.ndarray, classes: int) -> float:
    """mIoU on the test masks of predicting the training masks' most frequent class."""
    labelled = train_masks[train_masks != IGNORE_INDEX]
    majority = int(np.bincount(labelled, minlength=classes).argmax()) if labelled.size else 0
    confusion = confusion_matrix(np.full_like(test_masks, majority), test_masks, classes)
    return segmentation_scores(confusion)["miou"]


def score_probe(
    train: ProbeData, test: ProbeData, classes: int, settings: ProbeSettings, device: str
) -> tuple[dict, LinearProbe]:
    """Probe scores on the test frames, and the probe."""
    scores, probe = linear_probe_scores(
        train.features, train.masks, test.features, test.masks, classes, settings, device=device
    )
    scores.update(
        train_frames=len(train.keys),
        test_frames=len(test.keys),
        majority_miou=majority_miou(train.masks, test.masks, classes),
    )
    return scores, probe


def masks_figure(
    test: ProbeData, probe: LinearProbe, frames: dict, name: str, device: str = "cpu"
) -> bytes | None:
    """The test frames of `frames` with their true and predicted masks."""
    shown = [index for index, key in enumerate(test.keys) if key in frames]
    if not shown:
        return None
    size = (test.masks.shape[1], test.masks.shape[2])
    predicted = probe.predict(test.features[shown], size, len(shown), device)
    panels = []
    for index, guess in zip(shown, predicted, strict=True):
        key = test.keys[index]
        height, width = test.frame_hw[index]
        truth = test.masks[index][:height, :width]
        panels.append((frames[key], truth, guess[:height, :width], f"{key[0]} frame {key[1]}"))
    return plots.predicted_masks(panels, f"{name}: linear probe, true and predicted categories")


# --- the whole dense path ---------------------------------------------------------------------


def dense_benchmarks(
    store: ObjectStore,
    experiment: Experiment,
    exports: dict[str, str],
    clips_url: str,
    tracks_url: str = "",
    queries: str | None = None,
) -> tuple[dict, dict[str, bytes]]:
    """Every export of `exports` (label -> URL, all dense) scored on the clips they embedded:
    {label: {"correspondence": ..., "segmentation": ...}} and the figures (name -> PNG).
    Queries come from `queries` (a split; default test, val where there is none)."""
    import torch

    from vidssl.synth.shapes import CATEGORIES

    cfg = experiment.bench.dense
    clips_prefix = store.key_of(clips_url)
    split = queries or query_split(read_manifest(store, clips_prefix))
    tracks_prefix = store.key_of(tracks_url) if tracks_url else ""
    fraction = experiment.export.dense_clip_fraction
    truth = read_correspondence_truth(store, clips_prefix, split, cfg, tracks_prefix, fraction)
    log.info("dense bench: %d %s pairs (truth: %s)", len(truth.pairs), split, truth.source)
    limit = cfg.probe_max_train_frames
    train_masks = read_masks(store, clips_prefix, "train", limit, clip_fraction=fraction)
    test_masks = read_masks(store, clips_prefix, split, limit, cfg.figures, fraction)
    figures: dict[str, bytes] = {}
    for index, (frame, flow, caption) in enumerate(truth.flow_figures):
        figures[f"flow-{index}.png"] = plots.flow_figure(frame, flow, caption)
    for index, (frames, points, caption) in enumerate(truth.track_figures):
        figures[f"tracks-{index}.png"] = plots.tracks_on_frames(frames, points, caption)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = ProbeSettings(
        epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size, lr=cfg.probe_lr,
        seed=experiment.bench.seed,
    )  # fmt: skip
    threshold = sorted(cfg.pck_pixels)[len(cfg.pck_pixels) // 2] if cfg.pck_pixels else 4.0
    results: dict = {}
    for name, url in exports.items():
        prefix = store.key_of(url)
        result: dict = {}
        if truth.pairs:
            result["correspondence"], examples = score_correspondence(
                store, prefix, split, truth, cfg
            )
            for index, example in enumerate(examples):
                figure = correspondence_figure(example, truth, threshold, name)
                if figure:
                    figures[f"correspondences-{slug(name)}-{index}.png"] = figure
        if train_masks.masks and test_masks.masks:
            train = probe_data(store, prefix, "train", train_masks)
            test = probe_data(store, prefix, split, test_masks)
            if train.keys and test.keys:
                classes = 1 + len(CATEGORIES)
                result["segmentation"], probe = score_probe(train, test, classes, settings, device)
                figure = masks_figure(test, probe, test_masks.frames, name, device)
                if figure:
                    figures[f"masks-{slug(name)}.png"] = figure
        results[name] = result
        log.info("dense bench %s: %s", name, _summary(result))
    return results, figures


def _summary(result: dict) -> str:
    parts = []
    correspondence = result.get("correspondence", {})
    if "pck_avg" in correspondence:
        parts.append(f"PCK avg {correspondence['pck_avg']:.3f}, EPE {correspondence['epe']:.2f}")
    if "segmentation" in result:
        parts.append(f"mIoU {result['segmentation']['miou']:.3f}")
    return "; ".join(parts) or "nothing to score"
