"""One factory for CEUSegNet and its ablation variants (paper Table 2 plus the U-Net baseline)."""

from __future__ import annotations

from torch import nn

from ceuspipe.model.ceusegnet import CEUSegNet

VARIANTS = ("unet", "ceus_only", "us_only", "both", "both_csa", "both_cff", "full")

_FLAGS = {
    # two encoders, no residual shortcuts, a 1x1 conv fusing the two skips at every level
    "unet": dict(two_branch=True, residual=False, csa=False, cff=False),
    "ceus_only": dict(two_branch=False, branch="ceus"),
    "us_only": dict(two_branch=False, branch="us"),
    "both": dict(two_branch=True, csa=False, cff=False),
    "both_csa": dict(two_branch=True, csa=True, cff=False),
    "both_cff": dict(two_branch=True, csa=False, cff=True),
    "full": dict(two_branch=True, csa=True, cff=True),
}


def build_model(variant: str, width: float = 1.0, in_channels: int = 1) -> nn.Module:
    """Build ``variant`` (one of :data:`VARIANTS`) with channel widths scaled by ``width``.

    Every model has ``forward(ceus, us) -> logits (B, 1, H, W)``.
    """
    if variant not in _FLAGS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return CEUSegNet(width=width, in_channels=in_channels, **_FLAGS[variant])
