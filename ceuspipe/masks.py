"""Binary mask operations shared by the stages (segmentation clean-up, reference regions)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ceuspipe.errors import InputError

__all__ = ["fill_holes", "largest_component", "read_mask_png"]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: ``mask`` with every background region not connected to the border filled."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    h, w = m.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = m
    flood = pad.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return (pad | (1 - flood))[1:-1, 1:-1].astype(bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` 0/1: the largest 8-connected foreground component of ``mask``
    (non-zero = foreground); an empty mask stays empty."""
    m = (np.asarray(mask) != 0).astype(np.uint8)
    if not m.any():
        return m
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n > 2:
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        m = (labels == keep).astype(np.uint8)
    return m


def read_mask_png(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
    """``(H, W) bool`` of a mask PNG (grey, RGB or RGBA; non-zero in any colour channel is
    inside). Raises :class:`InputError` naming the file (``what``: how to call it) when it
    cannot be read."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if img is None:
        raise InputError(path, f"cannot read {what} (expected a PNG)")
    if img.ndim == 3:
        img = img[..., :3].max(axis=2)
    return img != 0
