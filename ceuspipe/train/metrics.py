"""Dice and IoU of binary masks: a plain per-case function and a batch helper.

Both masks empty counts as a perfect match (Dice = IoU = 1).
"""

from __future__ import annotations

import numpy as np
import torch


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """``(dice, iou)`` of two boolean/0-1 masks of the same shape."""
    p = np.asarray(pred).astype(bool)
    t = np.asarray(target).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    inter = np.logical_and(p, t).sum()
    total = p.sum() + t.sum()
    union = total - inter
    if total == 0:
        return 1.0, 1.0
    return float(2 * inter / total), float(inter / union)


def batch_dice_iou(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-case ``(dice (B,), iou (B,))`` for masks ``(B, 1, H, W)`` (bool or 0/1)."""
    p = pred.bool().flatten(1)
    t = target.bool().flatten(1)
    inter = (p & t).sum(1).double()
    total = (p.sum(1) + t.sum(1)).double()
    union = total - inter
    empty = total == 0
    dice = torch.where(empty, torch.ones_like(total), 2 * inter / total.clamp(min=1))
    iou = torch.where(empty, torch.ones_like(total), inter / union.clamp(min=1))
    return dice, iou
