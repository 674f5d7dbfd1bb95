"""Int8 ONNX models for fast CPU segmentation, checked against fp32 before they are written.

Post-training static quantisation with ONNX Runtime: QDQ format, weights int8
per output channel in 7 bits ([-64, 64]), activations uint8 per tensor with ranges
set on calibration frames (:mod:`ceuspipe.segment.calibration`). On CPUs with
AVX-512 VNNI or AVX-VNNI the convolutions run as int8 dot products, about 3x the
fp32 speed.

Why 7-bit weights: x86 CPUs without VNNI multiply uint8 activations by int8
weights with VPMADDUBSW, which adds each pair of products into a saturating int16.
With 8-bit weights a pair reaches 2 * 255 * 127 = 64770 and is clipped to 32767;
a model calibrated on a VNNI machine then gives wrong masks on an older one (most
likely what made one CI run's calibration fail, held-out Dice 0.05 against 0.995
on this VNNI machine). With weights in [-64, 64] a pair is at most 2 * 255 * 64 =
32640, so the same file is exact on every x86 CPU.

A quantised model is only written when its masks agree with the fp32 model's on
held-out frames: Dice between the two masks of each frame (both empty counts as
1) must average at least ``min_dice``. The agreement, the calibration source and
method are stored in the ONNX metadata key ``ceuspipe_quantization`` and copied
into each segment-video run's ``segment.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.segment.calibration import CalibrationSet, PanelPairs, calibration_set
from ceuspipe.video.layout import LayoutOptions

log = logging.getLogger("ceuspipe")

METHODS = ("minmax", "percentile", "entropy")
DEFAULT_METHOD = "minmax"
SCHEME = "QDQ; weights int8 (7-bit range) per output channel; activations uint8 per tensor"
#: Largest weight magnitude after quantisation: 7-bit range, no int16 saturation without VNNI.
WEIGHT_LIMIT = 64


@dataclass(frozen=True)
class Agreement:
    """Int8 vs fp32 masks on held-out frames: per-frame Dice mean and minimum, share of
    pixels with the same label, largest probability difference, frame count."""

    frames: int
    dice_mean: float
    dice_min: float
    pixel_agreement: float
    max_probability_difference: float


@dataclass(frozen=True)
class Int8Report:
    """What :func:`export_int8` wrote and measured."""

    path: Path
    size: int
    batch: int | None
    method: str
    calibration_frames: int
    agreement: Agreement
    config: dict


def mask_dice(prob_a: np.ndarray, prob_b: np.ndarray, threshold: float) -> np.ndarray:
    """Per-frame Dice of ``prob >= threshold`` masks; ``(N, S, S)`` each -> ``(N,)``, 1 when both are
    empty (:func:`ceuspipe.train.metrics.batch_dice_iou`, the training metric)."""
    import torch

    from ceuspipe.train.metrics import batch_dice_iou

    a, b = (torch.from_numpy(np.ascontiguousarray(p >= threshold))[:, None] for p in (prob_a, prob_b))
    return batch_dice_iou(a, b)[0].numpy()


def agreement(fp32: np.ndarray, int8: np.ndarray, threshold: float) -> Agreement:
    """:class:`Agreement` of two ``(N, S, S)`` probability stacks."""
    dice = mask_dice(fp32, int8, threshold)
    same = np.mean((fp32 >= threshold) == (int8 >= threshold)) if fp32.size else 1.0
    return Agreement(frames=len(fp32), dice_mean=float(dice.mean()) if len(dice) else float("nan"),
                     dice_min=float(dice.min()) if len(dice) else float("nan"),
                     pixel_agreement=float(same),
                     max_probability_difference=float(np.abs(fp32 - int8).max()) if fp32.size else 0.0)


def probabilities(onnx_path: str | os.PathLike, pairs: PanelPairs, size: int, batch: int = 8) -> np.ndarray:
    """``(N, S, S)`` lesion probabilities of an ONNX model on ``pairs``."""
    from ceuspipe.segment.engines.onnx_engine import OnnxPredictor

    predictor = OnnxPredictor(onnx_path, size)
    if len(pairs) == 0:
        return np.zeros((0, size, size), np.float32)
    return np.concatenate([predictor(pairs.ceus[i:i + batch], pairs.us[i:i + batch])
                           for i in range(0, len(pairs), batch)])


def _reader(pairs: PanelPairs, input_names: set[str], batch: int):
    """An ONNX Runtime calibration reader feeding ``pairs`` in batches of ``batch`` (wrapping around)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            n = len(pairs)
            self._starts = iter(range(0, n, batch))
            self._n = n

        def get_next(self):
            start = next(self._starts, None)
            if start is None:
                return None
            rows = np.arange(start, start + batch) % self._n
            return {k: np.ascontiguousarray(v[rows][:, None])
                    for k, v in (("ceus", pairs.ceus), ("us", pairs.us)) if k in input_names}

    return _Reader()


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibrate: PanelPairs, *,
                  method: str = DEFAULT_METHOD) -> Path:
    """Write the int8 QDQ version of an fp32 ONNX model to ``out_path`` (atomically).

    ``calibrate``: the frames whose activations set the int8 ranges. ``method``:
    ``minmax`` (full observed range), ``percentile`` (99.999th percentile) or
    ``entropy`` (KL divergence). The fp32 model's metadata is not carried over.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ceuspipe.segment.onnx_export import read_metadata

    if method not in METHODS:
        raise InputError(None, f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
    if len(calibrate) == 0:
        raise InputError(None, "no calibration frames")
    calib_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                    "entropy": CalibrationMethod.Entropy}[method]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = read_metadata(fp32_path)["inputs"]
    fixed = next(iter(inputs.values()))[0]
    batch = fixed if isinstance(fixed, int) else 1
    with tempfile.TemporaryDirectory(prefix=".ceuspipe-int8-", dir=out.parent) as work:
        pre = Path(work) / "pre.onnx"
        quantized = Path(work) / "int8.onnx"
        with _quiet():
            quant_pre_process(str(fp32_path), str(pre))
            quantize_static(str(pre), str(quantized), _reader(calibrate, set(inputs), batch),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calib_method,
                            extra_options={"CalibTensorRangeSymmetric": False})
        os.replace(quantized, out)  # same folder: a rename, never half a file
    return out


@contextlib.contextmanager
def _quiet():
    """Silence the quantiser's progress prints and its logging (library code does not print)."""
    import io

    quant_log = logging.getLogger("onnxruntime.quantization")
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        quant_log.setLevel(level)


def export_int8(checkpoint: str | os.PathLike, out_path: str | os.PathLike,
                calibration: Sequence[str | os.PathLike] | CalibrationSet, *, frames: int = 64,
                batch: int | None = None, method: str = DEFAULT_METHOD, min_dice: float = 0.95,
                layout: LayoutOptions | None = None) -> Int8Report:
    """Export a checkpoint as an int8 ONNX model, checked against its fp32 export.

    ``calibration``: a ``build-dataset`` folder or clips (see
    :func:`ceuspipe.segment.calibration.calibration_set`), or a ready
    :class:`CalibrationSet`; ``frames``: how many frames calibrate. Raises
    :class:`InputError` (and writes nothing) when the int8 masks agree with fp32
    ones on the held-out frames with mean Dice below ``min_dice``.
    """
    import onnx

    from ceuspipe.segment.onnx_export import EXPORT_FORMAT, export_onnx, save_atomic, set_metadata
    from ceuspipe.segment.model_spec import load_spec

    spec = load_spec(checkpoint, "cpu")
    if spec.onnx_path is not None:
        raise InputError(checkpoint, "expected a PyTorch checkpoint (.pt), not an ONNX model")
    calib = calibration if isinstance(calibration, CalibrationSet) else \
        calibration_set(list(calibration), spec.size, frames, layout)
    if len(calib.calibrate) == 0:
        raise InputError(calib.source, "no calibration frames found")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ceuspipe-export-", dir=out.parent) as work:
        fp32 = export_onnx(spec.model, Path(work) / "fp32.onnx", spec.size, batch=batch, config=spec.config)
        int8_tmp = quantize_onnx(fp32, Path(work) / "int8.onnx", calib.calibrate, method=method)
        check = calib.held_out if len(calib.held_out) else calib.calibrate
        agree = agreement(probabilities(fp32, check, spec.size), probabilities(int8_tmp, check, spec.size),
                          spec.threshold)
        if not agree.dice_mean >= min_dice:
            raise InputError(checkpoint, f"int8 masks agree with fp32 at mean Dice {agree.dice_mean:.3f} on "
                                         f"{agree.frames} held-out frames (< {min_dice:g}); nothing written")
        quant = {"precision": "int8", "scheme": SCHEME, "method": method,
                 "calibration": {"source": calib.source, "frames": len(calib.calibrate)},
                 "agreement_vs_fp32": asdict(agree),
                 "held_out_is_calibration": not len(calib.held_out)}
        proto = onnx.load(str(int8_tmp))
        set_metadata(proto, {"ceuspipe_config": json.dumps(spec.config, sort_keys=True, default=str),
                             "ceuspipe_export_format": str(EXPORT_FORMAT),
                             "ceuspipe_quantization": json.dumps(quant, sort_keys=True)})
        save_atomic(proto, out)
    return Int8Report(path=out, size=spec.size, batch=batch, method=method,
                      calibration_frames=len(calib.calibrate), agreement=agree, config=spec.config)
