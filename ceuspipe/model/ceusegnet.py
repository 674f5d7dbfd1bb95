"""CEUSegNet (Meng et al., ISBI 2022) and its ablation variants as one configurable net.

Inputs: CEUS and US panels, each ``(B, in_channels, H, W)`` float in [0, 1], any
``H, W`` (both inputs the same size). Output: lesion logits ``(B, 1, H, W)``
(apply a sigmoid, threshold 0.5). Inputs are zero-padded at the bottom/right to a
multiple of 16 (four 2x poolings) and the logits cropped back.

Structure (width multiplier 1; every conv is conv-BN-ReLU unless noted)
----------------------------------------------------------------------
* Two encoders (CEUS, US), five stages of widths 64-64-128-256-256 at 1, 1/2, 1/4,
  1/8, 1/16 of the input size (2x2 max pooling between stages). A stage is two
  3x3 convs plus a residual 1x1-conv-BN shortcut (``ReLU(main + shortcut)``).
* Skip fusion at each of the five levels (the bottleneck included): CSA then CFF
  (see :mod:`ceuspipe.model.attention`, :mod:`ceuspipe.model.fusion`), giving a
  fused ``c``-channel map.
* Bottleneck fusion: there is no decoder at the deepest level, so the fused
  bottleneck map is concatenated with the CSA-refined CEUS bottleneck ``F_ceus'``
  and projected by a 1x1 conv ``512 -> 256``; the decoders start from it.
* Four decoders, each: bilinear x2 up-sampling of the deeper map, concat with the
  fused skip of that level, two 3x3 convs to a constant 128 channels.
* Output: 1x1 conv ``128 -> 1`` (with bias): one-channel logits.

How the block structure was derived from the paper's size
---------------------------------------------------------
The paper gives 9.28 M parameters and 12.74 G MACs at 128x128 (12.65 G by
``torch.utils.flop_counter``, which counts only convolutions and matrix
products). Parameters do not depend on resolution, MACs do (a weight at level
``i`` costs ``16384 / 4^i`` MACs per input), so the two numbers together pin
down where the weights sit. Counting conv weights (k*k*cin*cout):

* encoders, two 3x3 convs + 1x1 shortcut per stage, x2 branches: 4.94 M params,
  2.95 G MACs (a third conv per stage would overshoot 9.28 M by ~2.7 M);
* CSA (2c^2) + CFF (2c^2 + 9c^2 + c^2) at all five levels: 2.18 M, 1.46 G;
* bottleneck 1x1 projection 512 -> 256: 0.13 M, 0.01 G;
* decoders: the paper's MACs need most decoder weight at high resolution. A
  U-Net-style decoder that narrows with the skips (256-128-64-64) gives
  9.26 M but only 7.45 G MACs; decoders of constant width 128 give 1.99 M
  params and 8.2 G MACs. Total 9.24 M conv weights + ~0.02 M BN/bias
  = 9.26 M parameters and 12.63 G MACs, matching both paper numbers within
  0.3 %. Alternatives tried (fusion only on the four skips with a 3x3 bottleneck
  conv, 160-wide single-conv decoders, ...) miss one number by more than 1 %.

``model-info`` / :func:`ceuspipe.model.info.model_info` report the exact counts.

Variants (flags): ``two_branch`` (else one encoder on ``branch``), ``residual``
shortcuts, ``csa``, ``cff`` (else plain concat + 1x1 fusion).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ceuspipe.model.blocks import ConvBNReLU, DecoderBlock, Encoder
from ceuspipe.model.fusion import SkipFusion

BASE_WIDTHS = (64, 64, 128, 256, 256)
BASE_DECODER_WIDTH = 128
MULTIPLE = 16  # four 2x poolings


def scaled(c: int, width: float) -> int:
    """Channel count ``c * width`` rounded to a multiple of 4 (CFF splits in four), >= 4."""
    return max(4, 4 * round(c * width / 4))


class CEUSegNet(nn.Module):
    """Configurable CEUSegNet; ``forward(ceus, us) -> logits (B, 1, H, W)``.

    ``branch`` ("ceus" or "us") picks the input of a single-branch net; the other
    input is ignored (may be ``None``).
    """

    def __init__(self, *, width: float = 1.0, in_channels: int = 1, two_branch: bool = True,
                 branch: str = "ceus", residual: bool = True, csa: bool = True, cff: bool = True):
        super().__init__()
        if branch not in ("ceus", "us"):
            raise ValueError(f"branch must be 'ceus' or 'us', got {branch!r}")
        self.widths = tuple(scaled(c, width) for c in BASE_WIDTHS)
        dec = scaled(BASE_DECODER_WIDTH, width)
        self.two_branch = two_branch
        self.branch = branch
        self.enc_ceus = Encoder(self.widths, in_channels, residual) if two_branch or branch == "ceus" else None
        self.enc_us = Encoder(self.widths, in_channels, residual) if two_branch or branch == "us" else None
        if two_branch:
            self.fusions = nn.ModuleList(SkipFusion(c, csa, cff) for c in self.widths)
            self.bottleneck = ConvBNReLU(2 * self.widths[-1], self.widths[-1], kernel=1)
        else:
            self.fusions = None
            self.bottleneck = None
        deep = [self.widths[-1], dec, dec, dec]
        self.decoders = nn.ModuleList(
            DecoderBlock(deep[k], self.widths[3 - k], dec) for k in range(4))
        self.head = nn.Conv2d(dec, 1, 1)

    def forward(self, ceus: torch.Tensor | None, us: torch.Tensor | None) -> torch.Tensor:
        ref = ceus if (self.two_branch or self.branch == "ceus") else us
        if ref is None or ref.dim() != 4:
            raise ValueError("expected (B, C, H, W) input tensors")
        if self.two_branch and (us is None or us.shape != ceus.shape):
            raise ValueError(f"CEUS and US inputs must have the same shape, got "
                             f"{tuple(ceus.shape)} and {None if us is None else tuple(us.shape)}")
        h, w = ref.shape[-2:]
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE

        def pad(x: torch.Tensor) -> torch.Tensor:
            return F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x

        if self.two_branch:
            fc = self.enc_ceus(pad(ceus))
            fu = self.enc_us(pad(us))
            skips = []
            for i, fusion in enumerate(self.fusions):
                fused, fc_att = fusion(fc[i], fu[i])
                skips.append(fused)
            x = self.bottleneck(torch.cat([skips[-1], fc_att], dim=1))
        else:
            enc = self.enc_ceus if self.branch == "ceus" else self.enc_us
            skips = enc(pad(ref))
            x = skips[-1]
        for k, decoder in enumerate(self.decoders):
            x = decoder(x, skips[3 - k])
        return self.head(x)[..., :h, :w]
