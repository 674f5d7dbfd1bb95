"""Small named building blocks of CEUSegNet and its variants.

All blocks take and return ``(B, C, H, W)`` float tensors. Convolutions that are
followed by batch norm carry no bias.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBNReLU(nn.Sequential):
    """``k x k`` conv (no bias, 'same' padding, optional dilation) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, dilation: int = 1):
        pad = dilation * (kernel // 2)
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class EncoderStage(nn.Module):
    """Two 3x3 conv-BN-ReLU, plus (``residual=True``) a 1x1 conv-BN shortcut.

    ``(B, cin, H, W) -> (B, cout, H, W)``. With the shortcut the output is
    ``ReLU(conv-BN(conv-BN-ReLU(x)) + BN(conv1x1(x)))``; without it, a plain U-Net
    double conv.
    """

    def __init__(self, cin: int, cout: int, residual: bool = True):
        super().__init__()
        self.residual = residual
        if residual:
            self.conv1 = ConvBNReLU(cin, cout)
            self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(cout))
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        else:
            self.conv1 = ConvBNReLU(cin, cout)
            self.conv2 = ConvBNReLU(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        if self.residual:
            y = F.relu(y + self.shortcut(x), inplace=True)
        return y


class Encoder(nn.Module):
    """Five stages with 2x2 max pooling between them.

    Input ``(B, in_channels, H, W)`` with ``H, W`` multiples of 16; returns the
    list of five stage outputs, level ``i`` of shape ``(B, widths[i], H/2^i, W/2^i)``.
    """

    def __init__(self, widths: tuple[int, ...], in_channels: int = 1, residual: bool = True):
        super().__init__()
        chans = (in_channels, *widths)
        self.stages = nn.ModuleList(
            EncoderStage(chans[i], chans[i + 1], residual) for i in range(len(widths)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            if i:
                x = F.max_pool2d(x, 2)
            x = stage(x)
            feats.append(x)
        return feats


class DecoderBlock(nn.Module):
    """Bilinear up-sampling to the skip's size, concat with the skip, two conv-BN-ReLU.

    ``deep (B, cdeep, h, w)``, ``skip (B, cskip, H, W)`` -> ``(B, cout, H, W)``.
    """

    def __init__(self, cdeep: int, cskip: int, cout: int):
        super().__init__()
        self.conv1 = ConvBNReLU(cdeep + cskip, cout)
        self.conv2 = ConvBNReLU(cout, cout)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv2(self.conv1(torch.cat([up, skip], dim=1)))


class PlainFusion(nn.Module):
    """Plain two-branch fusion: ``concat(F_us, F_ceus)`` -> 1x1 conv-BN-ReLU, ``2c -> c``."""

    def __init__(self, c: int):
        super().__init__()
        self.proj = ConvBNReLU(2 * c, c, kernel=1)

    def forward(self, f_ceus: torch.Tensor, f_us: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([f_us, f_ceus], dim=1))
