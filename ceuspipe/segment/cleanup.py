"""Optional per-frame mask post-processing: keep the largest connected component, fill holes."""

from __future__ import annotations

import numpy as np

from ceuspipe.masks import fill_holes, largest_component

__all__ = ["clean_mask"]


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """``(H, W) uint8`` 0/1: the largest 8-connected foreground component of ``mask``
    (non-zero = lesion) with its holes filled; an empty mask stays empty."""
    return fill_holes(largest_component(mask)).astype(np.uint8)
