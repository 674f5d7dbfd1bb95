"""Cross-modality feature fusion (CFF) of CEUSegNet and the skip-fusion wrapper.

CFF: ``concat(F_us, F_ceus')`` ``(B, 2c, H, W)`` -> 1x1 conv ``2c -> c`` -> four
parallel 3x3 convs ``c -> c/4`` with dilations 1, 2, 4, 8 -> concat ``(B, c, H, W)``
-> 1x1 conv ``c -> c``. Every conv is followed by BN and ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from ceuspipe.model.attention import CSA
from ceuspipe.model.blocks import ConvBNReLU, PlainFusion

DILATIONS = (1, 2, 4, 8)


class CFF(nn.Module):
    """``(F_ceus', F_us)`` both ``(B, c, H, W)`` -> fused ``(B, c, H, W)``; ``c`` divisible by 4."""

    def __init__(self, c: int):
        super().__init__()
        if c % len(DILATIONS):
            raise ValueError(f"CFF needs channels divisible by {len(DILATIONS)}, got {c}")
        self.reduce = ConvBNReLU(2 * c, c, kernel=1)
        self.branches = nn.ModuleList(
            ConvBNReLU(c, c // len(DILATIONS), kernel=3, dilation=d) for d in DILATIONS)
        self.project = ConvBNReLU(c, c, kernel=1)

    def forward(self, f_ceus: torch.Tensor, f_us: torch.Tensor) -> torch.Tensor:
        x = self.reduce(torch.cat([f_us, f_ceus], dim=1))
        x = torch.cat([b(x) for b in self.branches], dim=1)
        return self.project(x)


class SkipFusion(nn.Module):
    """Fuses the two branches at one level: optional CSA, then CFF or plain 1x1 fusion.

    ``forward(F_ceus, F_us) -> (fused (B, c, H, W), F_ceus' (B, c, H, W))``; ``F_ceus'``
    is ``F_ceus`` itself when ``csa=False``.
    """

    def __init__(self, c: int, csa: bool, cff: bool):
        super().__init__()
        self.csa = CSA(c) if csa else None
        self.fuse = CFF(c) if cff else PlainFusion(c)

    def forward(self, f_ceus: torch.Tensor, f_us: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.csa is not None:
            f_ceus = self.csa(f_ceus, f_us)
        return self.fuse(f_ceus, f_us), f_ceus
