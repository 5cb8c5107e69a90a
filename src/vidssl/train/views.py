"""Where to crop a training example's views (which frames form one: vidssl.train.samplers).
Objectron views share one window, the union of the frames' annotated boxes, so the camera's
motion stays visible between the views."""

from __future__ import annotations

import numpy as np


def shared_crop_window(
    boxes: list[list[float]], width: int, height: int, square: bool = True
) -> tuple[int, int, int, int]:
    """Pixel window (x0, y0, x1, y1) covering every normalized box, squared around its centre."""
    array = np.asarray(boxes, float)
    x0, y0 = array[:, 0].min() * width, array[:, 1].min() * height
    x1, y1 = array[:, 2].max() * width, array[:, 3].max() * height
    if square:
        side = max(x1 - x0, y1 - y0, 2.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, x1, y0, y1 = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
    return round(x0), round(y0), round(x1), round(y1)


def crop_with_padding(image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """The window of `image`; parts outside the image are filled with edge pixels."""
    x0, y0, x1, y1 = window
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        import cv2

        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return image[y0:y1, x0:x1]
