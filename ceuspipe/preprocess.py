"""The one image preparation shared by training, evaluation and segmentation.

A model only sees pixels prepared the same way it was trained on, so every
path that feeds CEUSegNet calls :func:`panel_to_input`.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_gray(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB uint8 -> ``(H, W)`` uint8 BT.601 luma (0-255); grey input passes through."""
    if image.ndim == 2:
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def panel_to_input(panel: np.ndarray, size: int) -> np.ndarray:
    """Model input for one panel.

    ``panel``: ``(h, w, 3) uint8`` RGB or ``(h, w) uint8`` grey. Returns
    ``(size, size) float32`` grey in ``[0, 1]``: BT.601 luma, resized with area
    averaging (``cv2.INTER_AREA``, no aliasing of speckle) when shrinking,
    bilinear when enlarging.
    """
    gray = to_gray(panel)
    h, w = gray.shape
    interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(gray), (size, size), interpolation=interp)
    return small.astype(np.float32) * np.float32(1 / 255)
