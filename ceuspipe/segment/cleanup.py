"""Optional per-frame mask post-processing: keep the largest connected component, fill holes."""

from __future__ import annotations

import cv2
import numpy as np

from ceuspipe.tic.reference import fill_holes

__all__ = ["clean_mask"]


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` 0/1: the largest 8-connected foreground component of ``mask``
    (non-zero = lesion) with its holes filled; an empty mask stays empty."""
    m = (np.asarray(mask) != 0).astype(np.uint8)
    if not m.any():
        return m
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n > 2:
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        m = (labels == keep).astype(np.uint8)
    return fill_holes(m).astype(np.uint8)
