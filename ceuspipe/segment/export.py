"""``ceuspipe export``: a checkpoint to an ONNX file, checked against PyTorch before it is kept."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ceuspipe.errors import InputError
from ceuspipe.segment.model_spec import load_spec
from ceuspipe.segment.onnx_export import export_onnx, max_logit_difference


@dataclass(frozen=True)
class ExportReport:
    """What ``ceuspipe export`` wrote: file, input size, batch (None = dynamic), check result."""

    path: Path
    size: int
    batch: int | None
    max_abs_diff: float
    config: dict


def export_checkpoint(checkpoint: str | os.PathLike, out_path: str | os.PathLike, *,
                      batch: int | None = None, tolerance: float = 1e-4) -> ExportReport:
    """Export a checkpoint to ONNX for deployment and check it against PyTorch.

    Raises :class:`InputError` when the exported model's logits differ from
    eager PyTorch by more than ``tolerance`` (the file is then removed).
    """
    spec = load_spec(checkpoint, "cpu")
    out = export_onnx(spec.model, out_path, spec.size, batch=batch, config=spec.config)
    diff = max_logit_difference(spec.model, out, spec.size, batch=batch or 2)
    if not diff <= tolerance:
        out.unlink(missing_ok=True)
        raise InputError(checkpoint, f"ONNX export differs from PyTorch by {diff:.3g} "
                                     f"(> {tolerance:g}); nothing written")
    return ExportReport(path=out, size=spec.size, batch=batch, max_abs_diff=diff, config=spec.config)
