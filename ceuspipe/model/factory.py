"""One factory for CEUSegNet and its ablation variants (paper Table 2 plus the U-Net baseline)."""

from __future__ import annotations

from torch import nn

from ceuspipe.model.ceusegnet import CEUSegNet
from ceuspipe.model.variants import VARIANT_FLAGS, VARIANTS

def build_model(variant: str, width: float = 1.0, in_channels: int = 1) -> nn.Module:
    """Build ``variant`` (one of :data:`VARIANTS`) with channel widths scaled by ``width``.

    Every model has ``forward(ceus, us) -> logits (B, 1, H, W)``.
    """
    if variant not in VARIANT_FLAGS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return CEUSegNet(width=width, in_channels=in_channels, **VARIANT_FLAGS[variant])
