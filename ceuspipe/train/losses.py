"""Segmentation loss: soft Dice + binary cross-entropy on logits.

``loss = BCEWithLogits(logits, target) + (1 - soft_dice(sigmoid(logits), target))``,
the soft Dice over the whole batch with smoothing 1 (well defined when a batch
has no lesion pixels). BCE gives stable early gradients, Dice handles the
foreground/background imbalance; both are scale-free, so no weighting.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def soft_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice of ``probs`` and ``target`` (same shape, values in [0, 1]) over all pixels."""
    inter = (probs * target).sum()
    return (2 * inter + smooth) / (probs.sum() + target.sum() + smooth)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scalar loss for logits ``(B, 1, H, W)`` and 0/1 targets of the same shape (float32 math)."""
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce + 1 - soft_dice(torch.sigmoid(logits), target)
