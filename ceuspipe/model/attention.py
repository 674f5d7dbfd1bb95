"""Cross-modality spatial-free channel attention (CSA) of CEUSegNet.

``w = softmax_c(W_ceus · GAP(F_ceus) ⊙ W_us · GAP(F_us))`` and
``F_ceus' = F_ceus + w ⊗ F_ceus``, with ``W_ceus, W_us`` learnable ``c x c``
matrices (no bias), the softmax over the ``c`` channels and ``⊗`` the per-channel
broadcast product. The US branch steers which CEUS channels are amplified.
"""

from __future__ import annotations

import torch
from torch import nn


class CSA(nn.Module):
    """``(F_ceus, F_us)`` both ``(B, c, H, W)`` (sizes may differ) -> ``F_ceus'`` ``(B, c, H, W)``."""

    def __init__(self, c: int):
        super().__init__()
        self.w_ceus = nn.Linear(c, c, bias=False)
        self.w_us = nn.Linear(c, c, bias=False)

    def weights(self, f_ceus: torch.Tensor, f_us: torch.Tensor) -> torch.Tensor:
        """Channel weights ``(B, c)``, each row summing to 1."""
        g_ceus = f_ceus.mean(dim=(2, 3))
        g_us = f_us.mean(dim=(2, 3))
        return torch.softmax(self.w_ceus(g_ceus) * self.w_us(g_us), dim=1)

    def forward(self, f_ceus: torch.Tensor, f_us: torch.Tensor) -> torch.Tensor:
        w = self.weights(f_ceus, f_us).to(f_ceus.dtype)
        return f_ceus + w[:, :, None, None] * f_ceus
