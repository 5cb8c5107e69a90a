"""Pixel contrastive loss (VADeR / PiCo eq. 1) and the sampling of pixel embeddings at points.

For a pixel p seen in two views, query q = g(view 1)[p], positive key k+ = g'(view 2)[p'] (the
same scene point after the views' transformation or the point's track), negatives k- pixel
embeddings of past batches (a queue), all L2-normalised:

    l(p) = -log( exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k-} exp(q.k- / tau)) )

which is MoCo's InfoNCE with pixels for images (`info_nce`), averaged over the point pairs.

Optionally (`batch_negatives`; not in the paper) the keys of the batch's other point pairs are
negatives too, so a query also meets other points of its own image, which the queue of past
batches never holds. A key whose anchor point lies in the query's anchor image within
`exclusion_px` of the query's point is left out: it is (nearly) the same scene point.

Points are (x, y) in pixels of the input image, with pixel centres at integer coordinates
(vidssl.flow's convention: an H x W frame spans [0, W-1] x [0, H-1]). The paper maps a point to
the feature index (x/4, y/4) of the stride-4 output; that is exact in coordinates measured from
the image's edge, i.e. x + 0.5 here. Feature cell j summarises input pixels 4j .. 4j+3, whose
centre is x = 4j + 1.5; `sample_features` reads cell j there exactly and interpolates
bilinearly in between (see there for the grid_sample convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidssl.train.losses.contrastive import info_nce


def feature_coordinates(points: torch.Tensor, stride: int) -> torch.Tensor:
    """(x, y) input pixels -> continuous feature indices (cell centres at integers):
    u = (x + 0.5) / stride - 0.5."""
    return (points + 0.5) / stride - 0.5


def sample_features(
    feature_map: torch.Tensor, points: torch.Tensor, batch_index: torch.Tensor, stride: int = 4
) -> torch.Tensor:
    """The embeddings of `feature_map` (N, D, h, w) at `points` (M, 2), (x, y) input pixels of
    image `batch_index` (M,): (M, D), bilinear, differentiable with respect to the map.

    `F.grid_sample(align_corners=False)`: normalised -1 and +1 are the outer edges of the
    feature map, so feature index u sits at g = (2u + 1) / w - 1 = 2 (x + 0.5) / (stride w) - 1,
    the point's position relative to the image edges when the input is stride x w wide.
    Points within 1.5 px of the border, beyond the outermost cell centres, take the border
    cells' values (`padding_mode="border"`). All points are sampled in one grid_sample call:
    each image's points form one row of a grid padded to the busiest image's count. Sampling
    is in float32 whatever the map's dtype (under autocast, bf16 coordinates would be coarse).
    """
    if points.ndim != 2 or points.shape[1] != 2 or batch_index.shape != points.shape[:1]:
        raise ValueError(
            f"points must be (M, 2) and batch_index (M,): got {tuple(points.shape)} and "
            f"{tuple(batch_index.shape)}"
        )
    count, dim = points.shape[0], feature_map.shape[1]
    if count == 0:
        return feature_map.new_zeros(0, dim)
    images, _, height, width = feature_map.shape
    feature_map = feature_map.float()  # a bf16 grid would be off by up to 1/256 of the side
    u = feature_coordinates(points.float(), stride)
    size = torch.tensor([width, height], dtype=u.dtype, device=u.device)
    grid_points = (2 * u + 1) / size - 1
    batch_index = batch_index.long()
    order = torch.argsort(batch_index, stable=True)
    per_image = torch.bincount(batch_index, minlength=images)
    starts = torch.cumsum(per_image, 0) - per_image
    sorted_image = batch_index[order]
    slot = torch.arange(count, device=points.device) - starts[sorted_image]
    grid = feature_map.new_zeros(images, int(per_image.max()), 1, 2)
    grid[sorted_image, slot, 0] = grid_points[order]
    sampled = F.grid_sample(
        feature_map, grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (N, D, max points, 1)
    features = torch.empty(count, dim, dtype=sampled.dtype, device=sampled.device)
    features[order] = sampled[sorted_image, :, slot, 0]
    return features


def pixel_info_nce(
    queries: torch.Tensor,
    keys: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    batch_exclusion: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel InfoNCE over M point pairs: `queries` (M, D) and their positive `keys` (M, D, no
    gradient), both L2-normalised, against the queue's `negatives` (Q, D). With
    `batch_exclusion` (M, M) bool, the batch's keys are negatives as well, except where it is
    True (it must be on the diagonal: a query's own key is its positive). A batch without pairs
    gives 0, still attached to the graph (the step then changes nothing)."""
    if queries.shape != keys.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} differ")
    if queries.shape[0] == 0:
        return queries.sum() * 0.0
    if batch_exclusion is None:
        return info_nce(queries, keys, negatives, temperature)
    count = queries.shape[0]
    if batch_exclusion.shape != (count, count) or not bool(batch_exclusion.diagonal().all()):
        raise ValueError(
            f"batch_exclusion must be ({count}, {count}) and True on its diagonal, got "
            f"{tuple(batch_exclusion.shape)}"
        )
    positive = (queries * keys).sum(dim=1, keepdim=True)
    in_batch = (queries @ keys.T).masked_fill(batch_exclusion, float("-inf"))
    logits = torch.cat([positive, in_batch, queries @ negatives.T], dim=1) / temperature
    targets = torch.zeros(count, dtype=torch.long, device=queries.device)
    return F.cross_entropy(logits, targets)


def same_point_mask(
    points: torch.Tensor, image_index: torch.Tensor, exclusion_px: float
) -> torch.Tensor:
    """(M, M) bool: pairs i, j whose (x, y) `points` lie in the same image (`image_index`)
    within `exclusion_px` of each other (i == j included)."""
    same_image = image_index[:, None] == image_index[None, :]
    return same_image & (torch.cdist(points.float(), points.float()) <= exclusion_px)
