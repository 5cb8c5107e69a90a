"""The flow codec: dense flow <-> two grayscale JPEGs, the two-stream convention.

Simonyan & Zisserman (2014) stored flow as images: "the horizontal and vertical components of
the flow were linearly rescaled to a [0, 255] range and compressed using JPEG (after
decompression, the flow is rescaled back to its original range)"; PiCo stores its RAFT flow the
same way. The range is a symmetric clip, [-bound, bound] pixels; the tools that made the
convention common (yjxiong/dense_flow for TSN, mmaction2's flow extraction) use bound = 20 px and
OpenCV's default JPEG quality, 95, which are this module's defaults.

A value v in pixels is stored as round(255 * (clip(v, -bound, bound) + bound) / (2 * bound)) and
read back as byte * 2 * bound / 255 - bound: the quantisation step is 2 * bound / 255 (0.157 px
at bound 20), so rounding alone errs by at most half a step; JPEG adds its own, small on smooth
flow and larger at motion boundaries. Flow beyond the bound reads back as the bound.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidssl.errors import InputError
from vidssl.video import encode_jpeg

#: Defaults of the convention: clip at +-20 px, JPEG quality 95 (see the module docstring).
DEFAULT_BOUND = 20.0
DEFAULT_QUALITY = 95


def quantisation_step(bound: float) -> float:
    """Pixels per stored grey level for flow clipped to [-bound, bound]."""
    return 2.0 * bound / 255.0


def flow_to_bytes(component: np.ndarray, bound: float) -> np.ndarray:
    """One flow component (H, W) in pixels -> uint8 grey levels, 0 = -bound, 255 = +bound."""
    scaled = (np.clip(component, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def bytes_to_flow(levels: np.ndarray, bound: float) -> np.ndarray:
    """uint8 grey levels -> float32 pixels in [-bound, bound] (the inverse of `flow_to_bytes`
    up to its rounding)."""
    return levels.astype(np.float32) * np.float32(quantisation_step(bound)) - np.float32(bound)


def encode_flow(
    flow: np.ndarray, bound: float = DEFAULT_BOUND, quality: int = DEFAULT_QUALITY
) -> tuple[bytes, bytes]:
    """Flow (H, W, 2) in pixels, (dx, dy) -> (JPEG of dx, JPEG of dy), each a grayscale image
    of u or v clipped to [-bound, bound] and rescaled linearly to 0..255."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise InputError(f"flow: expected shape (H, W, 2), got {tuple(flow.shape)}")
    if not np.all(np.isfinite(flow)):
        raise InputError("flow: contains NaN or infinite values")
    _check_bound(bound)
    if not 1 <= quality <= 100:
        raise InputError(f"flow JPEG quality {quality}: expected 1..100")
    u, v = (
        encode_jpeg(np.ascontiguousarray(flow_to_bytes(flow[..., c], bound)), quality)
        for c in (0, 1)
    )
    return u, v


def decode_flow(bytes_u: bytes, bytes_v: bytes, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """The two JPEGs of `encode_flow` (same `bound`) -> float32 flow (H, W, 2), pixels, (dx, dy)."""
    _check_bound(bound)
    u, v = (_decode_gray(data, name) for data, name in ((bytes_u, "u"), (bytes_v, "v")))
    if u.shape != v.shape:
        raise InputError(f"flow JPEGs differ in size: u {u.shape}, v {v.shape}")
    return np.stack([bytes_to_flow(u, bound), bytes_to_flow(v, bound)], axis=-1)


def _decode_gray(data: bytes, name: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InputError(f"flow component {name}: not a decodable JPEG ({len(data)} bytes)")
    return image


def _check_bound(bound: float) -> None:
    if not (np.isfinite(bound) and bound > 0):
        raise InputError(f"flow bound {bound}: expected a positive number of pixels")
