"""Similarity of an aligned frame to the reference: weighted normalised cross-correlation."""

from __future__ import annotations

import numpy as np


def weighted_ncc(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> float:
    """Normalised cross-correlation in ``[-1, 1]`` of ``a`` and ``b`` (same shape),
    each pixel counted with ``weight`` (>= 0); 0.0 when either image is flat there."""
    total = float(weight.sum())
    if total <= 0:
        return 0.0
    a = a - np.float32((a * weight).sum() / total)
    b = b - np.float32((b * weight).sum() / total)
    aw = a * weight
    saa = float((aw * a).sum())
    sbb = float((b * b * weight).sum())
    if saa <= 0 or sbb <= 0:
        return 0.0
    return max(-1.0, min(1.0, float((aw * b).sum()) / float(np.sqrt(saa * sbb))))
