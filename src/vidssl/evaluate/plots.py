"""Figures for the report (PNG bytes, matplotlib's Agg backend): PCA trajectories of each video's
embeddings coloured by time, precision-recall curves of the pose benchmark, fitted boxes drawn on
query frames and nearest-neighbour galleries."""

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
