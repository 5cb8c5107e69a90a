"""Figures for the report (PNG bytes, matplotlib's Agg backend): PCA trajectories of each video's
embeddings coloured by time, precision-recall curves of the pose benchmark, fitted boxes drawn on
query frames and nearest-neighbour galleries; and for dense evaluation: point tracks on frames,
optical flow in the Middlebury colour coding, nearest-pixel correspondences between two frames,
predicted against true segmentation masks."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _png(figure) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def trajectories(
    features: np.ndarray, videos: list[str], times: list[float], title: str, limit: int = 9
) -> bytes:
    """Each video's embeddings projected on the first two principal components of all of them,
    joined in time order and coloured by time (viridis)."""
    centred = features - features.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes[:2].T
    figure, axis = plt.subplots(figsize=(5.5, 5))
    names = list(dict.fromkeys(videos))[:limit]
    order = np.asarray(times)
    for name in names:
        rows = [i for i, v in enumerate(videos) if v == name]
        rows.sort(key=lambda i: order[i])
        points = projected[rows]
        axis.plot(points[:, 0], points[:, 1], color="0.75", linewidth=0.8, zorder=1)
        axis.scatter(
            points[:, 0],
            points[:, 1],
            c=np.linspace(0, 1, len(rows)),
            cmap="viridis",
            s=14,
            zorder=2,
        )
        axis.annotate(name.split("/")[0], points[0], fontsize=7)
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    return _png(figure)


def precision_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    """One curve per embedding: detections ranked by similarity, hit = IoU > 0.5."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for name, (scores, hits) in curves.items():
        order = np.argsort(-np.asarray(scores), kind="stable")
        ranked = np.asarray(hits, bool)[order]
        tp = np.cumsum(ranked)
        recall = tp / max(len(ranked), 1)
        precision = tp / np.arange(1, len(ranked) + 1)
        axis.plot(recall, precision, label=name)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    return _png(figure)


def _draw_box(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int]) -> None:
    import cv2

    from vidssl.evaluate.iou3d import EDGES

    for a, b in EDGES:
        pa, pb = points[a], points[b]
        if np.all(np.isfinite([*pa, *pb])):
            cv2.line(
                image, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), colour, 1, cv2.LINE_AA
            )


def fitted_boxes(
    panels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]], title: str
) -> bytes:
    """Query frames (RGB) with the ground-truth box (green) and the box fitted from the nearest
    neighbour (red): panels of (frame, reference frame, truth 2D, fitted 2D, caption)."""
    figure, axes = plt.subplots(2, len(panels), figsize=(2.2 * len(panels), 5.2), squeeze=False)
    for column, (frame, reference, truth, fitted, caption) in enumerate(panels):
        image = frame.copy()
        _draw_box(image, truth, (0, 200, 0))
        _draw_box(image, fitted, (230, 0, 0))
        axes[0, column].imshow(image)
        axes[0, column].set_title(caption, fontsize=7)
        axes[1, column].imshow(reference)
        axes[1, column].set_title("nearest training frame", fontsize=7)
        for row in (0, 1):
            axes[row, column].axis("off")
    figure.suptitle(title, fontsize=9)
    return _png(figure)


def neighbour_gallery(
    rows: list[tuple[np.ndarray, str, list[tuple[np.ndarray, str, bool]]]], title: str
) -> bytes:
    """One row per query: its crop, then its nearest neighbours' crops, each captioned and
    framed green when its category matches the query's, red otherwise. Rows are
    (query crop, caption, [(neighbour crop, caption, same category)])."""
    columns = 1 + max(len(cells) for _, _, cells in rows)
    figure, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(1.5 * columns, 1.65 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for row, (query, caption, cells) in enumerate(rows):
        axes[row, 0].imshow(query)
        axes[row, 0].set_title(f"query: {caption}", fontsize=7)
        for column, (crop, label, same) in enumerate(cells, start=1):
            axes[row, column].imshow(crop)
            axes[row, column].set_title(label, fontsize=7)
            for spine in axes[row, column].spines.values():
                spine.set_edgecolor("tab:green" if same else "tab:red")
                spine.set_linewidth(2.5)
        for column in range(columns):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if column > len(cells):
                axes[row, column].axis("off")
    figure.suptitle(title, fontsize=9)
    return _png(figure)


def _track_colours(count: int) -> np.ndarray:
    """(count, 3) RGB floats, distinct hues spread evenly."""
    return plt.get_cmap("hsv")(np.linspace(0, 1, max(count, 1), endpoint=False))[:count, :3]


def tracks_on_frames(
    frames: list[np.ndarray], positions: np.ndarray, title: str, tail: int = 8
) -> bytes:
    """Point tracks drawn on the frames they cross: one panel per frame (RGB), each track a
    colour, its position on that frame a dot and its last `tail` positions a trail.
    `positions` is (tracks, frames, 2) pixels (x, y), NaN where a track is not alive."""
    positions = np.asarray(positions, float)
    colours = _track_colours(len(positions))
    figure, axes = plt.subplots(1, len(frames), figsize=(2.6 * len(frames), 2.6), squeeze=False)
    for time, (axis, frame) in enumerate(zip(axes[0], frames, strict=True)):
        axis.imshow(frame)
        trail = positions[:, max(0, time - tail) : time + 1]
        for track, colour in zip(trail, colours, strict=True):
            alive = np.isfinite(track).all(axis=1)
            if alive.sum() > 1:
                axis.plot(track[alive, 0], track[alive, 1], color=colour, linewidth=0.8)
        now = positions[:, time]
        alive = np.isfinite(now).all(axis=1)
        axis.scatter(now[alive, 0], now[alive, 1], c=colours[alive], s=6)
        axis.set_title(f"frame {time}  ({int(alive.sum())} alive)", fontsize=7)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    return _png(figure)


def _middlebury_wheel() -> np.ndarray:
    """(55, 3) RGB floats of the Middlebury flow colour wheel (Baker et al. 2011, `colorwheel`
    of its `flowToColor`): red -> yellow -> green -> cyan -> blue -> magenta -> red, with
    15, 6, 4, 11, 13, 6 steps."""
    segments = [
        ((1, 0, 0), (1, 1, 0), 15),
        ((1, 1, 0), (0, 1, 0), 6),
        ((0, 1, 0), (0, 1, 1), 4),
        ((0, 1, 1), (0, 0, 1), 11),
        ((0, 0, 1), (1, 0, 1), 13),
        ((1, 0, 1), (1, 0, 0), 6),
    ]
    rows = [
        np.outer(1 - np.arange(n) / n, start) + np.outer(np.arange(n) / n, end)
        for start, end, n in segments
    ]
    return np.concatenate(rows)


def flow_colours(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 Middlebury colour coding of a (H, W, 2) flow field (u, v) in pixels:
    hue = direction, saturation = magnitude / `max_magnitude` (default: the largest finite
    magnitude), saturated vectors darkened; non-finite vectors black."""
    flow = np.asarray(flow, np.float64)
    u, v = flow[..., 0], flow[..., 1]
    finite = np.isfinite(u) & np.isfinite(v)
    u, v = np.where(finite, u, 0.0), np.where(finite, v, 0.0)
    magnitude = np.hypot(u, v)
    scale = max_magnitude or (float(magnitude.max()) if magnitude.size else 0.0)
    radius = magnitude / scale if scale > 0 else np.zeros_like(magnitude)
    wheel = _middlebury_wheel()
    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (len(wheel) - 1)
    low = np.floor(position).astype(int)
    high = (low + 1) % len(wheel)
    weight = (position - low)[..., None]
    colour = (1 - weight) * wheel[low] + weight * wheel[high]
    inside = (radius <= 1)[..., None]
    colour = np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)
    colour[~finite] = 0
    return (colour * 255).round().astype(np.uint8)


def flow_figure(frame: np.ndarray, flow: np.ndarray, title: str) -> bytes:
    """A frame (RGB), its flow in the Middlebury colour coding, and the colour key (the flow of
    a disc: each direction's hue, brighter towards the centre)."""
    radius = 32
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(float)
    key = np.stack([xs, ys], axis=-1)
    key[np.hypot(xs, ys) > radius] = np.nan
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    largest = float(np.nanmax(magnitude)) if np.isfinite(magnitude).any() else 0.0
    figure, axes = plt.subplots(1, 3, figsize=(8.5, 3), gridspec_kw={"width_ratios": [1, 1, 0.35]})
    axes[0].imshow(frame)
    axes[0].set_title("frame", fontsize=8)
    axes[1].imshow(flow_colours(flow, largest or None))
    axes[1].set_title(f"flow (max {largest:.1f} px)", fontsize=8)
    axes[2].imshow(flow_colours(key, radius))
    axes[2].set_title("key", fontsize=8)
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    return _png(figure)


def correspondences(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    points_a: np.ndarray,
    matched_b: np.ndarray,
    correct: np.ndarray,
    title: str,
    limit: int = 60,
) -> bytes:
    """Two frames side by side (RGB, same height), a line from each query in frame a to its
    nearest-pixel match in frame b: green where the match is within the PCK threshold
    (`correct`), red otherwise; at most `limit` queries, evenly spread."""
    rows = np.linspace(0, len(points_a) - 1, min(limit, len(points_a))).round().astype(int)
    offset = frame_a.shape[1]
    canvas = np.concatenate([frame_a, frame_b], axis=1)
    figure, axis = plt.subplots(figsize=(7, 7 * canvas.shape[0] / canvas.shape[1] + 0.4))
    axis.imshow(canvas)
    correct = np.asarray(correct, bool)
    for row in rows:
        (xa, ya), (xb, yb) = points_a[row], matched_b[row]
        colour = "tab:green" if correct[row] else "tab:red"
        axis.plot([xa, xb + offset], [ya, yb], color=colour, linewidth=0.7, alpha=0.8)
        axis.scatter([xa, xb + offset], [ya, yb], color=colour, s=5)
    axis.set_title(
        f"{title}  ({int(correct[rows].sum())}/{len(rows)} within threshold)", fontsize=9
    )
    axis.axis("off")
    return _png(figure)


def _colour_mask(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[np.asarray(mask, np.uint8)]


def predicted_masks(
    panels: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]],
    title: str,
    palette: np.ndarray | None = None,
) -> bytes:
    """One row per image: the image (RGB), its true mask and the predicted mask, classes
    coloured by `palette` ((256, 3) uint8; default the VOC colour map, void 255 cream). Panels
    are (image, true mask, predicted mask, caption)."""
    if palette is None:
        from vidssl.datasets.voc import voc_palette

        palette = voc_palette()
    figure, axes = plt.subplots(len(panels), 3, figsize=(7.5, 2.5 * len(panels)), squeeze=False)
    for row, (image, truth, predicted, caption) in enumerate(panels):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(caption, fontsize=7)
        axes[row, 1].imshow(_colour_mask(truth, palette))
        axes[row, 1].set_title("truth", fontsize=7)
        axes[row, 2].imshow(_colour_mask(predicted, palette))
        axes[row, 2].set_title("prediction", fontsize=7)
        for column in range(3):
            axes[row, column].axis("off")
    figure.suptitle(title, fontsize=9)
    return _png(figure)
