"""Dense evaluation of per-pixel embeddings: point correspondence (PCK, end-point error) and
the linear-probe semantic segmentation of PiCo section 4.1 (mIoU, fIoU).

Conventions (as `vidssl.flow`): a point is (x, y) in input pixels, x the column, y the row,
pixel centres at integer coordinates. A feature map is (D, h, w) at stride s of an H x W input
(h = H / s): feature cell (i, j) covers input rows s*i .. s*i + s - 1, so a point falls in cell
floor(y / s) (the paper's "scale the point indices by 1/4") and a cell stands for its centre
s*i + (s - 1) / 2.

Correspondence. The PiCo paper evaluates no correspondence task; this is the usual
nearest-neighbour protocol of dense self-supervised work: each query point of frame a takes
the embedding of its cell, its match is the cosine-nearest cell of frame b (optionally only
cells within a search radius of the query's own position), reported as that cell's centre.
PCK@t is the fraction of valid queries whose match lies within t input pixels of the truth
(TAP-Vid's thresholds 1, 2, 4, 8, 16 px and their mean by default), optionally also within a
fraction of the image diagonal; EPE is the mean Euclidean error. With stride s a perfect match
is still up to (s - 1) / sqrt(2) px off (the cell centre), so PCK reaches 1 only from there.

Linear probe (PiCo 4.1, after Pinheiro et al. 2020): "the output of each model is processed by
a 1x1 convolutional layer, upsample, and softmax ... The linear predictor weights are trained
using cross entropy." So: frozen features, a 1x1 convolution, logits upsampled bilinearly to the
mask's full resolution, per-pixel cross entropy there (void = 255 ignored), prediction = argmax
of the upsampled logits. Features are standardised per channel with the training set's mean and
standard deviation first (the same linear family, better conditioned for SGD). SGD with momentum
and weight decay, a fixed number of epochs, the learning rate divided by 10 at 2/3 and 8/9 of
the steps (Detectron2's multi-step schedule, which the paper's configurations use).

mIoU from the confusion matrix: IoU_c = TP / (TP + FP + FN); classes with TP + FP + FN = 0
(absent from both prediction and truth) are left out of the mean; pixels whose truth is the
ignore index (255) are not counted. fIoU weights each class's IoU by its share of true pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vidssl.errors import InputError
from vidssl.evaluate.metrics import cosine_similarities
from vidssl.flow.tracks import Tracks, bilinear

IGNORE_INDEX = 255
PCK_PIXELS = (1.0, 2.0, 4.0, 8.0, 16.0)


# --- correspondence -------------------------------------------------------------------------


def point_to_cell(points: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """(M, 2) integer (column, row) of the feature cell holding each (x, y) input point,
    clipped to the (height, width) feature grid."""
    cells = np.floor(np.asarray(points, np.float64) / stride).astype(np.int64)
    cells[:, 0] = cells[:, 0].clip(0, width - 1)
    cells[:, 1] = cells[:, 1].clip(0, height - 1)
    return cells


def cell_centres(height: int, width: int, stride: int) -> np.ndarray:
    """(h * w, 2) input-pixel (x, y) centre of every feature cell, row-major."""
    rows, columns = np.mgrid[0:height, 0:width]
    offset = (stride - 1) / 2
    return np.stack([columns.ravel() * stride + offset, rows.ravel() * stride + offset], axis=1)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(len(points), len(centres)) float32 squared distances between (x, y) points."""
    points, centres = points.astype(np.float32), centres.astype(np.float32)
    dx = points[:, 0, None] - centres[None, :, 0]
    dy = points[:, 1, None] - centres[None, :, 1]
    return dx * dx + dy * dy


def _unit_rows(features: np.ndarray) -> np.ndarray:
    """(h * w, D) float32 L2-normalised embeddings of a (D, h, w) map."""
    rows = np.asarray(features, np.float32).reshape(features.shape[0], -1).T
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def match_points(
    features_a: np.ndarray,
    features_b: np.ndarray,
    points_a: np.ndarray,
    stride: int,
    radius: float | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """(M, 2) input-pixel (x, y) match in frame b of each query point of frame a: the centre of
    the cosine-nearest cell of `features_b` (D, h, w) to the query's cell of `features_a`.
    `radius` (input px) keeps only cells of b whose centre is that close to the query's own
    position; a query with no such cell keeps its own position. A query that is not finite
    (an untracked point) gets NaN. Memory: chunk x h*w floats."""
    if features_a.ndim != 3 or features_a.shape[0] != features_b.shape[0]:
        raise InputError(
            f"features: expected (D, h, w) maps of one D, got {features_a.shape} and "
            f"{features_b.shape}"
        )
    points_a = np.asarray(points_a, np.float64).reshape(-1, 2)
    finite = np.isfinite(points_a).all(axis=1)
    points_a = np.where(finite[:, None], points_a, 0.0)
    _, height_a, width_a = features_a.shape
    cells = point_to_cell(points_a, stride, height_a, width_a)
    queries = _unit_rows(features_a)[cells[:, 1] * width_a + cells[:, 0]]
    centres = cell_centres(features_b.shape[1], features_b.shape[2], stride)
    matches = np.empty_like(points_a)
    for start, similarity in cosine_similarities(queries, _unit_rows(features_b), chunk):
        block = points_a[start : start + len(similarity)]
        if radius is not None:
            similarity[_squared_distances(block, centres) > radius**2] = -np.inf
        best = similarity.argmax(axis=1)
        found = np.isfinite(similarity[np.arange(len(best)), best])
        matches[start : start + len(block)] = np.where(found[:, None], centres[best], block)
    matches[~finite] = np.nan
    return matches


def pck(
    predicted: np.ndarray,
    truth: np.ndarray,
    valid: np.ndarray | None = None,
    pixels: Sequence[float] = PCK_PIXELS,
    diagonal_fractions: Sequence[float] = (),
    image_size: tuple[int, int] | None = None,
) -> dict[str, float]:
    """`pck@<t>px` for each pixel threshold, their mean `pck_avg` (TAP-Vid's delta-avg),
    `pck@<f>diag` for each fraction of the diagonal of `image_size` (H, W), `epe` (mean
    end-point error, px) and `queries` (valid ones), over the valid queries. Pool several frame
    pairs by concatenating their points before calling. A valid query without a finite truth
    or match is an error (mark occluded and untracked queries invalid)."""
    errors = np.linalg.norm(np.asarray(predicted, float) - np.asarray(truth, float), axis=1)
    if valid is not None:
        errors = errors[np.asarray(valid, bool)]
    if not np.isfinite(errors).all():
        raise InputError(
            f"pck: {int((~np.isfinite(errors)).sum())} valid queries have a non-finite true "
            "or matched position; mark occluded or untracked queries invalid"
        )
    scores: dict[str, float] = {"queries": float(len(errors))}
    empty = len(errors) == 0
    for threshold in pixels:
        scores[f"pck@{threshold:g}px"] = (
            float("nan") if empty else float(np.mean(errors <= threshold))
        )
    if pixels:
        scores["pck_avg"] = float(np.mean([scores[f"pck@{t:g}px"] for t in pixels]))
    if diagonal_fractions:
        if image_size is None:
            raise InputError("pck: diagonal_fractions need image_size (H, W)")
        diagonal = float(np.hypot(*image_size))
        for fraction in diagonal_fractions:
            scores[f"pck@{fraction:g}diag"] = (
                float("nan") if empty else float(np.mean(errors <= fraction * diagonal))
            )
    scores["epe"] = float("nan") if empty else float(errors.mean())
    return scores


def correspondence_scores(
    features_a: np.ndarray,
    features_b: np.ndarray,
    points_a: np.ndarray,
    points_b: np.ndarray,
    valid: np.ndarray | None = None,
    stride: int = 4,
    pixels: Sequence[float] = PCK_PIXELS,
    diagonal_fractions: Sequence[float] = (),
    radius: float | None = None,
) -> dict[str, float]:
    """PCK and EPE of nearest-neighbour matches of one frame pair: query points `points_a`
    (M, 2) in frame a, true positions `points_b` (M, 2) in frame b, `valid` (M,) False for
    occluded or untracked queries (not scored). The diagonal for `diagonal_fractions` is that
    of the features' extent, (h * stride, w * stride)."""
    matches = match_points(features_a, features_b, points_a, stride, radius)
    size = (features_b.shape[1] * stride, features_b.shape[2] * stride)
    return pck(matches, points_b, valid, pixels, diagonal_fractions, size)


def chance_pck(
    truth: np.ndarray,
    height: int,
    width: int,
    stride: int,
    pixels: Sequence[float] = PCK_PIXELS,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """The expected `pck@<t>px` of a match drawn uniformly from the h x w cells (what features
    carrying no information score: with i.i.d. random embeddings every cell is equally likely
    the nearest): per query, the number of cell centres within t of its true position over
    h * w, averaged over the valid queries."""
    truth = np.asarray(truth, float)
    if valid is not None:
        truth = truth[np.asarray(valid, bool)]
    centres = cell_centres(height, width, stride)
    within = np.zeros(len(pixels))
    for start in range(0, len(truth), 1024):
        squared = _squared_distances(truth[start : start + 1024], centres)
        within += [np.count_nonzero(squared <= t * t) for t in pixels]
    cases = max(len(truth), 1) * len(centres)
    return {f"pck@{t:g}px": float(n / cases) for t, n in zip(pixels, within, strict=True)}


def flow_correspondences(
    flow: np.ndarray | Sequence[np.ndarray],
    step: int = 8,
    valid: np.ndarray | Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query points on a grid every `step` px of a (H, W, 2) ground-truth flow field (u, v),
    their true positions p + flow(p), and their validity: `valid` (H, W) at the point (e.g. an
    occlusion mask), finite flow, and landing inside the frame.

    A sequence of fields (frames p -> p+1 -> ... -> p+k, with a validity mask each or None)
    chains them (`carry_points`), so the truth is p+k's position of each grid point of frame p."""
    flows = [flow] if isinstance(flow, np.ndarray) else list(flow)
    if not flows:
        raise InputError("flow_correspondences: no flow field")
    height, width = flows[0].shape[:2]
    rows, columns = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    points_a = np.stack([columns.ravel(), rows.ravel()], axis=1).astype(np.float64)
    points_b, ok = carry_points(points_a, flows, valid)
    return points_a, points_b, ok


def carry_points(
    points: np.ndarray,
    flows: Sequence[np.ndarray],
    valid: np.ndarray | Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) points of frame p carried through consecutive flow fields p -> p+1 -> ... -> p+k
    ((H, W, 2) each, with a validity mask (H, W) each or None): each step moves a point by the
    field where it has landed, the pixel's own value at a pixel centre and bilinear in between
    (`vidssl.flow.tracks.bilinear`; a NaN under it invalidates the point). Returns the
    positions on frame p+k (M, 2) and whether each is valid (M,): finite, every step's mask
    true at the nearest pixel, and inside the frame after every step."""
    flows = list(flows)
    valids = [valid] if valid is None or isinstance(valid, np.ndarray) else list(valid)
    valids += [None] * (len(flows) - len(valids))
    height, width = flows[0].shape[:2]
    limits = np.array([width - 1, height - 1], np.float64)
    positions = np.asarray(points, np.float64).reshape(-1, 2).copy()
    ok = np.isfinite(positions).all(axis=1)
    for index, (field_, mask) in enumerate(zip(flows, valids, strict=True)):
        if field_.shape[:2] != (height, width):
            raise InputError(
                f"carry_points: flow field {index} is {field_.shape[:2]}, not {(height, width)}"
            )
        # bilinear() reads inside [0, W-1] x [0, H-1]: the half pixel beyond is clamped.
        inside = np.where(ok[:, None], np.clip(positions, 0.0, limits), 0.0)
        nearest = np.rint(inside).astype(np.intp)
        if mask is not None:
            ok &= np.asarray(mask, bool)[nearest[:, 1], nearest[:, 0]]
        centred = (inside == nearest).all(axis=1)
        motion = np.empty_like(inside)
        motion[centred] = field_[nearest[centred, 1], nearest[centred, 0]]
        motion[~centred] = bilinear(np.asarray(field_, np.float32), inside[~centred])
        positions = positions + motion
        ok &= np.isfinite(positions).all(axis=1)
        ok &= (positions[:, 0] >= -0.5) & (positions[:, 0] <= width - 0.5)
        ok &= (positions[:, 1] >= -0.5) & (positions[:, 1] <= height - 0.5)
    return positions, ok


def track_errors(
    tracks: Tracks,
    flows: Sequence[np.ndarray | None],
    valids: Sequence[np.ndarray | None],
    max_steps: int,
) -> dict[int, np.ndarray]:
    """How far point tracks drift from the ground truth: for every frame p and every track
    alive on it, its frame-p position carried by the true flow over k steps (`carry_points`,
    `flows[p]` the field p -> p+1 with its validity mask, None where there is no truth)
    against the track's own position on frame p+k, for k = 1..`max_steps`. Returns
    {k: (N_k,) float64 distances in px} over the (track, p) whose track is still alive on
    p+k and whose truth is valid; a k with none is left out."""
    dense = tracks.dense()
    found: dict[int, list[np.ndarray]] = {}
    for start in range(tracks.num_frames - 1):
        alive = np.flatnonzero(tracks.alive_on(start))
        truth, ok = dense[alive, start].astype(np.float64), np.ones(alive.size, bool)
        for k in range(1, max_steps + 1):
            step = start + k - 1  # the field from frame start + k - 1 to start + k
            if start + k >= tracks.num_frames or step >= len(flows) or flows[step] is None:
                break
            truth, carried = carry_points(truth, [flows[step]], valids[step])
            ok &= carried & tracks.alive_on(start + k)[alive]
            if ok.any():
                drift = np.linalg.norm(dense[alive[ok], start + k] - truth[ok], axis=1)
                found.setdefault(k, []).append(drift)
    return {k: np.concatenate(v) for k, v in sorted(found.items())}


# --- segmentation scores --------------------------------------------------------------------


def confusion_matrix(
    predicted: np.ndarray, truth: np.ndarray, classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(classes, classes) int64 counts, row = true class, column = predicted class, over the
    pixels whose truth is not `ignore_index`. Sum the matrices of several images to pool."""
    predicted, truth = np.asarray(predicted).ravel(), np.asarray(truth).ravel()
    if predicted.shape != truth.shape:
        raise InputError(f"confusion_matrix: {predicted.size} predicted vs {truth.size} true")
    keep = truth != ignore_index
    predicted, truth = predicted[keep].astype(np.int64), truth[keep].astype(np.int64)
    for name, values in (("truth", truth), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise InputError(
                f"confusion_matrix: {name} holds class {int(values.max())} or "
                f"{int(values.min())}, outside 0..{classes - 1} (and not {ignore_index})"
            )
    counts = np.bincount(truth * classes + predicted, minlength=classes * classes)
    return counts.reshape(classes, classes)


def segmentation_scores(confusion: np.ndarray) -> dict:
    """`miou`, `fiou` (IoU weighted by true-pixel share), `pixel_accuracy` and `iou` (per
    class, NaN where the class is in neither prediction nor truth) of a confusion matrix."""
    confusion = np.asarray(confusion, np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = confusion.sum()
    present = ~np.isnan(iou)
    share = confusion.sum(axis=1) / total if total else np.zeros(len(iou))
    return {
        "miou": float(np.mean(iou[present])) if present.any() else float("nan"),
        "fiou": float(np.sum(share[present] * iou[present])) if total else float("nan"),
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "iou": iou.tolist(),
    }


# --- the linear probe -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    """How the linear probe trains: `epochs` passes over the training images in batches of
    `batch_size`, SGD (`lr`, `momentum`, `weight_decay`), shuffling and initialisation from
    `seed`."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise InputError(f"probe.{key}: must be at least 1, got {getattr(self, key)}")
        for key in ("lr", "momentum", "weight_decay"):
            if not getattr(self, key) >= 0:
                raise InputError(f"probe.{key}: must be >= 0, got {getattr(self, key)}")


@dataclass
class LinearProbe:
    """A trained per-pixel linear classifier over standardised frozen features."""

    weight: np.ndarray  # (classes, D)
    bias: np.ndarray  # (classes,)
    mean: np.ndarray  # (D,) feature mean of the training set
    std: np.ndarray  # (D,) feature standard deviation of the training set
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch

    def logits(self, features, device: str = "cpu"):  # type: ignore[no-untyped-def]
        """(N, classes, h, w) torch logits of (N, D, h, w) features, at the features' stride."""
        import torch

        def tensor(array: np.ndarray):  # type: ignore[no-untyped-def]
            return torch.as_tensor(np.asarray(array, np.float32), device=device)

        return _linear_logits(
            tensor(features),
            tensor(self.mean),
            tensor(self.std),
            tensor(self.weight),
            tensor(self.bias),
        )

    def predict(
        self, features: np.ndarray, size: tuple[int, int], batch: int = 8, device: str = "cpu"
    ) -> np.ndarray:
        """(N, H, W) uint8 classes: logits upsampled bilinearly to `size` (H, W), argmax."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(features), batch):
                logits = _upsample(self.logits(features[start : start + batch], device), size)
                out.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
        return np.concatenate(out)


def _linear_logits(features, mean, std, weight, bias):  # type: ignore[no-untyped-def]
    """The probe itself (torch): standardise each channel, then a 1x1 convolution."""
    import torch

    standardised = (features - mean[None, :, None, None]) / std[None, :, None, None]
    return torch.nn.functional.conv2d(standardised, weight[:, :, None, None], bias)


def _upsample(logits, size: tuple[int, int]):  # type: ignore[no-untyped-def]
    """Bilinear, half-pixel aligned: cell i's value lands on input pixel s*i + (s - 1) / 2."""
    import torch

    return torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _channel_moments(features: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of (N, D, h, w) features, read `batch` images
    at a time (a memory-mapped array never loads whole)."""
    total = np.zeros(features.shape[1])
    squares = np.zeros(features.shape[1])
    for start in range(0, len(features), batch):
        block = np.asarray(features[start : start + batch], np.float64)
        total += block.sum(axis=(0, 2, 3))
        squares += (block**2).sum(axis=(0, 2, 3))
    count = len(features) * features.shape[2] * features.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def _check_probe_inputs(features, masks) -> None:  # type: ignore[no-untyped-def]
    if features.ndim != 4 or masks.ndim != 3 or len(features) != len(masks):
        raise InputError(
            f"linear probe: expected features (N, D, h, w) and masks (N, H, W), got "
            f"{features.shape} and {masks.shape}"
        )


def train_linear_probe(
    features: np.ndarray,
    masks: np.ndarray,
    classes: int,
    settings: ProbeSettings | None = None,
    ignore_index: int = IGNORE_INDEX,
    device: str = "cpu",
) -> LinearProbe:
    """A 1x1-convolution classifier trained on frozen `features` (N, D, h, w) against `masks`
    (N, H, W) of class indices (`ignore_index` = void), logits upsampled bilinearly to (H, W)
    and per-pixel cross entropy there. Both are read a batch at a time, so they may be
    `np.memmap`s larger than memory. Deterministic for a given `settings.seed` on one device
    and thread count."""
    import torch

    settings = settings or ProbeSettings()
    _check_probe_inputs(features, masks)
    mean, std = _channel_moments(features, settings.batch_size)
    mean_t, std_t = torch.as_tensor(mean, device=device), torch.as_tensor(std, device=device)
    generator = torch.Generator().manual_seed(settings.seed)
    bound = 1 / np.sqrt(features.shape[1])
    weight = torch.empty(classes, features.shape[1]).uniform_(-bound, bound, generator=generator)
    weight = weight.to(device).requires_grad_()
    bias = torch.zeros(classes, device=device, requires_grad=True)
    optimiser = torch.optim.SGD(
        [weight, bias],
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    total = settings.epochs * -(-len(features) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimiser, milestones=[int(total * 2 / 3), int(total * 8 / 9)], gamma=0.1
    )
    size = (masks.shape[1], masks.shape[2])
    losses = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(features), generator=generator).numpy()
        epoch_loss = 0.0
        for start in range(0, len(order), settings.batch_size):
            rows = np.sort(order[start : start + settings.batch_size])
            target = np.asarray(masks[rows]).astype(np.int64)
            labelled = target[target != ignore_index]
            if labelled.size and (labelled.min() < 0 or labelled.max() >= classes):
                raise InputError(
                    f"linear probe: masks hold class {int(labelled.max())}, outside "
                    f"0..{classes - 1} (void must be {ignore_index})"
                )
            inputs = torch.as_tensor(np.asarray(features[rows], np.float32), device=device)
            logits = _upsample(_linear_logits(inputs, mean_t, std_t, weight, bias), size)
            loss = torch.nn.functional.cross_entropy(
                logits, torch.as_tensor(target, device=device), ignore_index=ignore_index
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            epoch_loss += loss.item() * len(rows)
        losses.append(epoch_loss / len(features))
    return LinearProbe(
        weight=weight.detach().cpu().numpy().copy(),
        bias=bias.detach().cpu().numpy().copy(),
        mean=mean,
        std=std,
        losses=losses,
    )


def linear_probe_scores(
    train_features: np.ndarray,
    train_masks: np.ndarray,
    test_features: np.ndarray,
    test_masks: np.ndarray,
    classes: int,
    settings: ProbeSettings | None = None,
    ignore_index: int = IGNORE_INDEX,
    device: str = "cpu",
) -> tuple[dict, LinearProbe]:
    """Train the probe on the training set, score it on the test set (`segmentation_scores`
    of the confusion matrix pooled over the test images, built a batch at a time). Pick
    `settings` on val, report on test."""
    probe = train_linear_probe(train_features, train_masks, classes, settings, ignore_index, device)
    _check_probe_inputs(test_features, test_masks)
    size = (test_masks.shape[1], test_masks.shape[2])
    confusion = np.zeros((classes, classes), np.int64)
    batch = (settings or ProbeSettings()).batch_size
    for start in range(0, len(test_features), batch):
        predicted = probe.predict(test_features[start : start + batch], size, batch, device)
        confusion += confusion_matrix(
            predicted, test_masks[start : start + batch], classes, ignore_index
        )
    return segmentation_scores(confusion), probe
