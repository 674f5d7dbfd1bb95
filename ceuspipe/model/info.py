"""Model size: parameter count and MACs (multiply-accumulates) at a given input size."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, size: int | tuple[int, int] = 128, in_channels: int = 1) -> int:
    """MACs of one forward pass at batch 1, ``size`` x ``size`` pixels per input.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and
    matrix products only) as FLOPs / 2.
    """
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.zeros(1, in_channels, h, w)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, x.clone())
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def model_info(variant: str, width: float = 1.0, size: int = 128, in_channels: int = 1) -> dict:
    """``{"variant", "width", "size", "parameters", "macs"}`` for a freshly built model."""
    from ceuspipe.model.factory import build_model

    model = build_model(variant, width, in_channels)
    return {"variant": variant, "width": width, "size": size,
            "parameters": count_parameters(model),
            "macs": count_macs(model, size, in_channels)}
