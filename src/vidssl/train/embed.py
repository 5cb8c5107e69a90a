"""Embedding every frame (or crop) of a split with a frozen encoder: the kNN monitor during
training and the export stage share this one function."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.evaluate.metrics import nearest_neighbours
from vidssl.shards import decode_json, read_split
from vidssl.store import ObjectStore
from vidssl.train.augment import normalize
from vidssl.train.data import frame_crops


def frame_record(meta: dict, position: int) -> dict:
    """What a benchmark needs to know about one embedded frame."""
    record = {
        "video_id": meta["video_id"],
        "clip_index": meta.get("clip_index", 0),
        "frame_position": position,
        "frame_index": meta["source_frame_indices"][position],
        "timestamp": meta["timestamps"][position],
        "category": meta["category"],
        "split": meta["split"],
        "width": meta["width"],
        "height": meta["height"],
    }
    if "frames" in meta:
        record["annotation"] = meta["frames"][position]
        record["objects"] = meta["objects"]
    return record


def global_features(features: torch.Tensor) -> torch.Tensor:
    """An encoder's output as one vector per image: (N, D) as is; a dense encoder's feature map
    (N, D, h, w) averaged over its cells (global average pooling)."""
    if features.ndim == 4:
        return features.mean(dim=(2, 3))
    if features.ndim != 2:
        raise ValueError(f"an encoder gave features of shape {tuple(features.shape)}: "
                         "expected (N, D) or a map (N, D, h, w)")  # fmt: skip
    return features


def _batches(store, prefix, split, views_from, size, batch_size, limit):  # type: ignore[no-untyped-def]
    images, records, count = [], [], 0
    for sample in read_split(store, prefix, split, split_by_node=False, split_by_worker=False):
        meta = decode_json(sample)
        for position, image in frame_crops(sample, views_from, size):
            images.append(image)
            records.append((sample["__key__"], frame_record(meta, position)))
            count += 1
            if len(images) == batch_size:
                yield torch.stack(images), records
                images, records = [], []
            if limit and count >= limit:
                break
        if limit and count >= limit:
            break
    if images:
        yield torch.stack(images), records


@torch.no_grad()
def embed_split(
    encoder: nn.Module,
    store: ObjectStore,
    prefix: str,
    split: str,
    *,
    views_from: str,
    size: int,
    batch_size: int = 256,
    device: torch.device | None = None,
    limit: int | None = None,
) -> Iterator[tuple[torch.Tensor, list[tuple[str, dict]]]]:
    """Batches of (L2-normalised float32 embeddings on CPU, [(clip key, frame record)]); a
    dense encoder's maps are pooled to one vector per frame first (`global_features`)."""
    was_training = encoder.training
    encoder.eval()
    device = device or next(encoder.parameters()).device
    try:
        for images, records in _batches(store, prefix, split, views_from, size, batch_size, limit):
            features = global_features(encoder(normalize(images.to(device))))
            yield F.normalize(features.float(), dim=-1).cpu(), records
    finally:
        encoder.train(was_training)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: list[str],
    query_features: torch.Tensor,
    query_labels: list[str],
    k: int,
) -> float:
    """Majority vote among the k cosine nearest training embeddings (L2-normalised; found by
    vidssl.evaluate.metrics.nearest_neighbours, the benchmarks' search; ties: the nearest wins)."""
    if not len(query_labels) or not len(train_labels):
        return float("nan")
    names = sorted(set(train_labels) | set(query_labels))
    index = {name: i for i, name in enumerate(names)}
    train_ids = torch.tensor([index[n] for n in train_labels])
    truth = torch.tensor([index[n] for n in query_labels])
    k = min(k, len(train_labels))
    weights = 1 + 1e-3 * torch.linspace(1, 0, k)  # nearest first breaks ties
    correct, start = 0, 0
    for indices, _ in nearest_neighbours(
        query_features.cpu().numpy(), train_features.cpu().numpy(), k=k, chunk=1024
    ):
        top = torch.from_numpy(indices)
        votes = torch.zeros(len(top), len(names))
        votes.scatter_add_(1, train_ids[top], weights.expand_as(top).contiguous())
        predicted = votes.argmax(dim=1)
        correct += int((predicted == truth[start : start + len(top)]).sum())
        start += len(top)
    return correct / len(query_labels)
