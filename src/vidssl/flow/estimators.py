"""Optical-flow estimators behind one interface: OpenCV DIS and Farneback, torchvision RAFT.

Every estimator takes batches of RGB uint8 frames, shape (N, H, W, 3), and returns flow as a
float32 array (N, H, W, 2) in **pixels, channel 0 = dx (along the columns), channel 1 = dy (down
the rows)**, with the convention shared by OpenCV and RAFT: the point seen at pixel (x, y) of
`frames_a[n]` is seen at (x + dx, y + dy) in `frames_b[n]`. `forward_backward(clip)` gives, for a
clip of T frames, the forward flows t -> t+1 and the backward flows t+1 -> t (T-1 each), which the
tracker's forward-backward occlusion test needs (Sundaram et al. 2010).

`build_estimator(name, ...)` is the one way to get one; the names are `ESTIMATORS`' keys.
Nothing is downloaded: RAFT loads its weights from a local file (torchvision's published
`Raft_Large_Weights.C_T_SKHT_V2` is the closest to PiCo's RAFT, trained on Chairs, Things,
Sintel, KITTI and HD1K).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np

from vidssl.errors import InputError

if TYPE_CHECKING:
    import torch

#: DIS presets by name (OpenCV's `DISOPTICAL_FLOW_PRESET_*`): speed against accuracy.
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

#: RAFT precisions on CUDA (autocast dtypes); on the CPU RAFT always runs in float32.
RAFT_PRECISIONS = ("bf16", "fp16", "fp32")


def check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    """`frames` as a C-contiguous uint8 array (N, H, W, 3) of RGB images, or an InputError."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(
            f"{what}: expected RGB uint8 frames of shape (N, H, W, 3), "
            f"got {frames.dtype} {tuple(frames.shape)}"
        )
    return np.ascontiguousarray(frames)


#: Registry name -> estimator class; `register` fills it, `build_estimator` reads it.
ESTIMATORS: dict[str, type[FlowEstimator]] = {}


def register(cls: type[FlowEstimator]) -> type[FlowEstimator]:
    """Class decorator: make `cls` available to `build_estimator` under `cls.name`."""
    ESTIMATORS[cls.name] = cls
    return cls


class FlowEstimator(ABC):
    """Dense optical flow between pairs of RGB frames; see the module docstring for units."""

    #: The registry name (`dis`, `farneback`, `raft_small`, `raft_large`).
    name: ClassVar[str]

    @classmethod
    def build(cls, weights: str | Path | None, device: str | None, **options: Any) -> FlowEstimator:
        """An instance from `build_estimator`'s arguments. The OpenCV estimators take no weights
        and run on the CPU whatever `device` says."""
        if weights:
            raise InputError(f"{cls.name} takes no weights (only raft_small and raft_large do)")
        _check_options(cls, options)
        return cls(**options)

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """Flow from `frames_a[n]` to `frames_b[n]`: float32 (N, H, W, 2), pixels, (dx, dy)."""
        a = check_frames(frames_a, "frames_a")
        b = check_frames(frames_b, "frames_b")
        if a.shape != b.shape:
            raise InputError(f"frames_a {a.shape} and frames_b {b.shape} differ in shape")
        if len(a) == 0:
            return np.zeros((0, *a.shape[1:3], 2), np.float32)
        flow = self._estimate(a, b)
        assert flow.shape == (*a.shape[:3], 2) and flow.dtype == np.float32
        return flow

    def forward_backward(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For a clip (T, H, W, 3), T >= 2: `forward[t]` is the flow t -> t+1 and `backward[t]`
        the flow t+1 -> t, each float32 (T-1, H, W, 2) in pixels (dx, dy). Both directions go
        through the estimator as one batch."""
        clip = check_frames(frames, "clip")
        if len(clip) < 2:
            raise InputError(f"a clip needs at least 2 frames for flow, got {len(clip)}")
        earlier, later = clip[:-1], clip[1:]
        both = self(np.concatenate([earlier, later]), np.concatenate([later, earlier]))
        return both[: len(earlier)], both[len(earlier) :]

    @abstractmethod
    def _estimate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow for checked, same-shaped, non-empty batches; float32 (N, H, W, 2)."""


def _gray(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 (N, H, W, 3) -> luma uint8 (N, H, W), OpenCV's BT.601 weights."""
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])


@register
class DisEstimator(FlowEstimator):
    """OpenCV's DIS (Kroeger et al. 2016, dense inverse search) on luma, the CPU default.
    `preset` is one of `DIS_PRESETS`; `medium` uses variational refinement and is accurate to a
    fraction of a pixel on textured images."""

    name = "dis"

    def __init__(self, preset: str = "medium") -> None:
        if preset not in DIS_PRESETS:
            raise InputError(f"DIS preset {preset!r}: expected one of {sorted(DIS_PRESETS)}")
        self.preset = preset

    def _estimate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
        return np.stack([dis.calc(x, y, None) for x, y in zip(_gray(a), _gray(b), strict=True)])


@dataclass(frozen=True)
class FarnebackParams:
    """`cv2.calcOpticalFlowFarneback`'s parameters (Farneback 2003, polynomial expansion).

    pyr_scale: each pyramid level is this fraction of the one below.
    levels: pyramid levels including the full image; 5 at 0.5 reaches motions of ~30 px.
    winsize: side of the averaging window in pixels; larger is smoother and more robust.
    iterations: refinement iterations per level.
    poly_n: neighbourhood (pixels) of the polynomial fit; 5 or 7.
    poly_sigma: Gaussian sigma of that fit; OpenCV suggests 1.1 for poly_n 5, 1.5 for 7.
    gaussian_window: a Gaussian instead of a box window (OPTFLOW_FARNEBACK_GAUSSIAN).
    """

    pyr_scale: float = 0.5
    levels: int = 5
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.1
    gaussian_window: bool = False


@register
class FarnebackEstimator(FlowEstimator):
    """OpenCV's Farneback dense flow on luma, with `FarnebackParams`."""

    name = "farneback"

    def __init__(self, params: FarnebackParams | None = None) -> None:
        self.params = params or FarnebackParams()

    def _estimate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        p = self.params
        flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if p.gaussian_window else 0
        return np.stack(
            [
                cv2.calcOpticalFlowFarneback(
                    x,
                    y,
                    None,
                    p.pyr_scale,
                    p.levels,
                    p.winsize,
                    p.iterations,
                    p.poly_n,
                    p.poly_sigma,
                    flags,
                )
                for x, y in zip(_gray(a), _gray(b), strict=True)
            ]
        )


class RaftEstimator(FlowEstimator):
    """torchvision's RAFT (Teed & Deng 2020), weights from a local state-dict file; the
    registered subclasses are `RaftSmall` and `RaftLarge`. Frames are scaled to [-1, 1] as
    `Raft_Large_Weights.DEFAULT.transforms()` does, replicate-padded symmetrically to a multiple
    of 8 (and to at least the 128 px the correlation pyramid needs), run in batches of
    `batch_size` pairs, and the last of the `num_flow_updates` refinements is cropped back to
    (H, W). On CUDA the model runs under autocast in `precision` (bf16 by default); on the CPU in
    float32."""

    #: torchvision's builder name: `raft_small` or `raft_large`.
    name: ClassVar[str]

    def __init__(
        self,
        weights: str | Path | None,
        device: str | None = None,
        precision: str = "bf16",
        num_flow_updates: int = 12,
        batch_size: int = 8,
    ) -> None:
        import torch
        from torchvision.models import optical_flow

        if precision not in RAFT_PRECISIONS:
            raise InputError(f"RAFT precision {precision!r}: expected one of {RAFT_PRECISIONS}")
        if num_flow_updates < 1 or batch_size < 1:
            raise InputError(
                f"RAFT num_flow_updates ({num_flow_updates}) and batch_size ({batch_size}) "
                "must be at least 1"
            )
        state = load_raft_weights(self.name, weights)
        model = getattr(optical_flow, self.name)(weights=None, progress=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # missing or unexpected keys, wrong shapes
            first = str(exc).strip().splitlines()[0]
            raise InputError(f"{weights}: not {self.name} weights ({first})") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision
        self.num_flow_updates = num_flow_updates
        self.batch_size = batch_size
        self.model = model.eval().to(self.device)
        # Feature maps are 1/8 of the image and are pooled (levels - 1) times, to >= 2 cells.
        self.min_size = 8 * 2 * 2 ** (model.corr_block.num_levels - 1)

    @classmethod
    def build(cls, weights: str | Path | None, device: str | None, **options: Any) -> FlowEstimator:
        _check_options(cls, {"weights": weights, "device": device, **options})
        return cls(weights, device=device, **options)

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) pixels of replicate padding for an (H, W) frame."""
        padded_h = max(self.min_size, math.ceil(height / 8) * 8)
        padded_w = max(self.min_size, math.ceil(width / 8) * 8)
        top, left = (padded_h - height) // 2, (padded_w - width) // 2
        return left, padded_w - width - left, top, padded_h - height - top

    def _estimate(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import torch

        height, width = a.shape[1:3]
        left, _, top, _ = pads = self.padding(height, width)
        autocast = (
            torch.autocast("cuda", dtype=_autocast_dtypes()[self.precision])
            if self.device.type == "cuda" and self.precision != "fp32"
            else nullcontext()
        )
        flows = []
        with torch.inference_mode(), autocast:
            for start in range(0, len(a), self.batch_size):
                images = [
                    self._prepare(frames[start : start + self.batch_size], pads)
                    for frames in (a, b)
                ]
                flow = self.model(*images, num_flow_updates=self.num_flow_updates)[-1]
                flow = flow[:, :, top : top + height, left : left + width]
                flows.append(flow.float().permute(0, 2, 3, 1).cpu().numpy())
        return np.ascontiguousarray(np.concatenate(flows), dtype=np.float32)

    def _prepare(self, frames: np.ndarray, pads: tuple[int, int, int, int]) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> float32 (n, 3, H', W') in [-1, 1] on the device, padded."""
        import torch
        import torch.nn.functional as F

        images = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        images = images / 127.5 - 1.0  # = normalize(x / 255, mean 0.5, std 0.5)
        return F.pad(images, pads, mode="replicate").contiguous()


@register
class RaftSmall(RaftEstimator):
    """RAFT-small (1M parameters, no convex upsampling)."""

    name = "raft_small"


@register
class RaftLarge(RaftEstimator):
    """RAFT-large (5.3M parameters), PiCo's estimator."""

    name = "raft_large"


def _autocast_dtypes() -> dict[str, torch.dtype]:
    """Autocast dtypes by precision name (torch imported only when RAFT runs)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}


def load_raft_weights(variant: str, weights: str | Path | None) -> dict:
    """The state dict in the local file `weights`, or an InputError that names the file: no
    weights are ever downloaded."""
    import torch

    if not weights:
        raise InputError(
            f"{variant} needs a local weights file (--weights, or the experiment's flow weights); "
            "nothing is downloaded. torchvision publishes them as "
            f"{'Raft_Large_Weights' if variant == 'raft_large' else 'Raft_Small_Weights'}; "
            "copy the .pth file to this machine and name it."
        )
    path = Path(weights)
    if not path.is_file():
        raise InputError(
            f"{path}: no such {variant} weights file (weights are read from a local file, "
            "nothing is downloaded)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch each raise their own kinds
        raise InputError(f"{path}: not a readable PyTorch state dict ({exc})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict, found a {type(state).__name__}")
    return state


def _check_options(cls: type[FlowEstimator], options: dict[str, Any]) -> None:
    """An InputError naming the option if `cls(**options)` would not accept them."""
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as exc:
        raise InputError(f"flow method {cls.name!r}: {exc}") from None


def build_estimator(
    name: str, weights: str | Path | None = None, device: str | None = None, **options: Any
) -> FlowEstimator:
    """The estimator registered as `name` (a key of `ESTIMATORS`). `weights`: local RAFT
    state-dict file (RAFT only, required there); `device`: torch device for RAFT (default: cuda
    when available); `options`: the estimator's own keyword arguments (`preset` for DIS,
    `params` for Farneback; `precision`, `num_flow_updates`, `batch_size` for RAFT)."""
    if name not in ESTIMATORS:
        raise InputError(f"flow method {name!r}: expected one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name].build(weights, device, **options)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), or an InputError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
