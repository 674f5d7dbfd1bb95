"""The int8 model of a checkpoint, calibrated once on the first clip it segments and cached.

When segment-video runs a checkpoint with ONNX Runtime on the CPU at precision
``auto`` or ``int8`` and no int8 model of it is cached yet, the clip being
segmented calibrates one: its frames sampled at :data:`CALIBRATION_FPS` (raised so
that a short clip still gives :data:`MIN_SAMPLES`), at most ``2 * MAX_FRAMES``
spread evenly, alternately calibrate (ORT static QDQ quantisation,
:func:`ceuspipe.segment.quantize.quantize_onnx`) and are held out to measure
agreement with the fp32 model. The file is written beside the fp32 ONNX cache
(:func:`ceuspipe.segment.onnx_export.cached_onnx`) as
``<digest>-s<size>-f<format>-int8-<settings>.onnx``: keyed by the checkpoint's
SHA-256 and the calibration settings, written by rename (never half a file) under
an exclusive lock, so parallel batch workers calibrate once and the others wait
and reuse it.

The file always keeps its held-out agreement (metadata ``ceuspipe_quantization``);
whether it is good enough is decided where it is used. No image leaves the
process: the metadata records only counts, rates and agreement, not the clip's
name or frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ceuspipe.errors import InputError
from ceuspipe.fsutil import exclusive_lock
from ceuspipe.segment.calibration import PanelPairs, clip_frames
from ceuspipe.video.layout import LayoutOptions

log = logging.getLogger("ceuspipe")

#: Bump when calibration changes, so cached int8 models are rebuilt.
INT8_FORMAT = 1
CALIBRATION_FPS = 1.0
MIN_SAMPLES = 16
MAX_FRAMES = 64
METHOD = "minmax"


@dataclass(frozen=True)
class CachedInt8:
    """``path``: the int8 ONNX file; ``quantization``: its ``ceuspipe_quantization``
    metadata (calibration counts, held-out agreement); ``calibrated_now``: this call
    calibrated it (on the clip it was given)."""

    path: Path
    quantization: dict
    calibrated_now: bool


def settings() -> dict:
    """The calibration settings that key the cache (with the ORT version: its quantiser)."""
    import onnxruntime

    from ceuspipe.segment.quantize import SCHEME

    return {"format": INT8_FORMAT, "method": METHOD, "sample_fps": CALIBRATION_FPS,
            "min_samples": MIN_SAMPLES, "max_frames": MAX_FRAMES, "scheme": SCHEME,
            "onnxruntime": ".".join(onnxruntime.__version__.split(".")[:2])}


def int8_path(fp32_path: str | os.PathLike) -> Path:
    """Where the int8 model of the cached fp32 export ``fp32_path`` lives."""
    fp32_path = Path(fp32_path)
    key = hashlib.sha256(json.dumps(settings(), sort_keys=True).encode()).hexdigest()[:10]
    return fp32_path.with_name(f"{fp32_path.stem}-int8-{key}.onnx")


def cached_int8(spec, fp32_path: str | os.PathLike, clip: str | os.PathLike,
                layout: LayoutOptions, duration_hint_s: float | None = None) -> CachedInt8:
    """The cached int8 model of checkpoint ``spec`` (exported to ``fp32_path``), calibrating
    it on ``clip`` when missing. ``duration_hint_s``: the clip's probed duration (s), used
    only to raise the sampling rate of a short clip. Raises :class:`InputError` when the
    clip gives no calibration frame."""
    from ceuspipe.segment.onnx_export import read_metadata

    path = int8_path(fp32_path)
    if path.is_file():
        return CachedInt8(path, read_metadata(path)["quantization"], False)
    with exclusive_lock(path.with_name(path.name + ".lock")):
        if path.is_file():  # another process calibrated it while this one waited
            return CachedInt8(path, read_metadata(path)["quantization"], False)
        log.info("calibrating an int8 model of %s on %s (cached at %s)", spec.path, Path(clip).name, path)
        quant = _calibrate(spec, Path(fp32_path), Path(clip), layout, duration_hint_s, path)
    return CachedInt8(path, quant, True)


def calibration_fps(duration_hint_s: float | None) -> float:
    """Sampling rate (frames/s) for calibration: :data:`CALIBRATION_FPS`, raised to give
    about :data:`MIN_SAMPLES` frames on a clip shorter than ``MIN_SAMPLES`` seconds."""
    if duration_hint_s and duration_hint_s > 0:
        return max(CALIBRATION_FPS, MIN_SAMPLES / duration_hint_s)
    return CALIBRATION_FPS


def _calibrate(spec, fp32_path: Path, clip: Path, layout: LayoutOptions, duration_hint_s: float | None,
               out: Path) -> dict:
    import onnx

    from ceuspipe.segment.onnx_export import EXPORT_FORMAT, save_atomic, set_metadata
    from ceuspipe.segment.quantize import SCHEME, agreement, probabilities, quantize_onnx

    fps = calibration_fps(duration_hint_s)
    pairs = PanelPairs.stack(clip_frames(clip, spec.size, 2 * MAX_FRAMES, layout, sample_fps=fps), spec.size)
    if len(pairs) == 0:
        raise InputError(clip, "no frames to calibrate the int8 model on")
    calibrate, held_out = (pairs.take(slice(0, None, 2)), pairs.take(slice(1, None, 2))) if len(pairs) > 1 \
        else (pairs, pairs)
    with tempfile.TemporaryDirectory(prefix=".ceuspipe-int8-", dir=out.parent) as work:
        tmp = quantize_onnx(fp32_path, Path(work) / "int8.onnx", calibrate, method=METHOD)
        agree = agreement(probabilities(fp32_path, held_out, spec.size),
                          probabilities(tmp, held_out, spec.size), spec.threshold)
        quant = {"precision": "int8", "scheme": SCHEME, "method": METHOD,
                 "calibration": {"source": "frames of the first clip segmented with this checkpoint",
                                 "frames": len(calibrate), "sample_fps": round(fps, 6)},
                 "agreement_vs_fp32": asdict(agree), "held_out_is_calibration": len(pairs) == 1,
                 "settings": settings()}
        proto = onnx.load(str(tmp))
        set_metadata(proto, {"ceuspipe_config": json.dumps(spec.config, sort_keys=True, default=str),
                             "ceuspipe_export_format": str(EXPORT_FORMAT),
                             "ceuspipe_quantization": json.dumps(quant, sort_keys=True)})
        save_atomic(proto, out)
    log.info("int8 model calibrated on %d frames; held-out mask Dice vs fp32 %.4f", len(calibrate),
             agree.dice_mean)
    return quant
