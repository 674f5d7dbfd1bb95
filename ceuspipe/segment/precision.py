"""Which precision segment-video runs a model at, and the record of that decision.

``precision`` (a :class:`~ceuspipe.segment.run.SegmentConfig` field):

* ``auto`` (default): a checkpoint run by ONNX Runtime on the CPU uses its cached
  int8 model (:mod:`ceuspipe.segment.int8_cache`, calibrated on the first clip)
  when the calibration's held-out mask Dice reached ``int8_min_dice``, checked on
  every clip (:mod:`ceuspipe.segment.int8_check`); a clip that fails the check is
  redone with fp32 and says so in a warning. PyTorch (CUDA, ``engine torch``) runs
  as before (fp16 autocast on CUDA), and an ONNX model file runs as it is.
* ``fp32``: ONNX Runtime (or PyTorch) fp32, never int8.
* ``int8``: the checked int8 model even when a check fails (the failure is a warning).

:class:`PrecisionPlan` holds the predictors and the check; its ``record`` goes into
``segment.json`` as ``precision``: requested, used, reason, the int8 model's
calibration and the per-clip check.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ceuspipe.errors import InputError
from ceuspipe.segment.int8_check import ClipCheck
from ceuspipe.segment.model_spec import ModelSpec
from ceuspipe.segment.predictor import OnnxPredictor, Predictor, make_predictor

log = logging.getLogger("ceuspipe")

PRECISIONS = ("auto", "fp32", "int8")


@dataclass
class PrecisionPlan:
    """``predictor``: what segments the clip; ``fp32``: the fp32 predictor that checks it
    (None when no check runs); ``check``: the per-clip check (None without int8);
    ``quantization``: the int8 model's metadata (empty for fp32); ``record``: the decision."""

    predictor: Predictor
    fp32: Predictor | None = None
    check: ClipCheck | None = None
    quantization: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    def fall_back(self, reason: str) -> None:
        """Switch to the fp32 predictor (the check failed at precision auto)."""
        assert self.fp32 is not None
        self.predictor, self.quantization = self.fp32, {}
        self.record.update(used="fp32", reason=reason, fell_back=True)


def plan_precision(spec: ModelSpec, config, clip: str | os.PathLike, duration_hint_s: float | None
                   ) -> PrecisionPlan:
    """Build the predictors for ``spec`` under ``config`` (a ``SegmentConfig``), calibrating
    the int8 model on ``clip`` when it is needed and not cached yet."""
    requested = config.precision
    if spec.onnx_path is not None:
        used = "int8" if spec.quantization else "fp32"
        if requested not in ("auto", used):
            raise InputError(spec.path, f"the model file is {used}; precision {requested} needs the .pt "
                                        "checkpoint (or precision auto)")
        return PrecisionPlan(make_predictor(spec, engine=config.engine, device=config.device,
                                            parallel_frames=True),
                             quantization=spec.quantization,
                             record={"requested": requested, "used": used, "reason": "the ONNX model file given"})
    predictor = make_predictor(spec, engine=config.engine, device=config.device, cache_dir=config.cache_dir,
                               parallel_frames=True)
    if not isinstance(predictor, OnnxPredictor):
        if requested == "int8":
            raise InputError(spec.path, f"int8 runs with ONNX Runtime on the CPU only, not {predictor.engine} on "
                                        f"{predictor.device} (use precision auto or fp32)")
        used = "fp16 autocast" if getattr(predictor, "amp", False) else "fp32"
        return PrecisionPlan(predictor, record={"requested": requested, "used": used,
                                                "reason": f"{predictor.engine} on {predictor.device}"})
    if requested == "fp32":
        return PrecisionPlan(predictor, record={"requested": requested, "used": "fp32", "reason": "asked"})
    return _int8_plan(spec, config, predictor, clip, duration_hint_s)


def _int8_plan(spec: ModelSpec, config, fp32: OnnxPredictor, clip, duration_hint_s) -> PrecisionPlan:
    from ceuspipe.segment.int8_cache import cached_int8

    requested = config.precision
    record = {"requested": requested}
    try:
        cached = cached_int8(spec, fp32.path, clip, config, duration_hint_s)
    except InputError as exc:
        if requested == "int8":
            raise
        log.warning("int8 calibration failed (%s): using fp32", exc.problem)
        return PrecisionPlan(fp32, record={**record, "used": "fp32", "reason": f"int8 calibration failed: "
                                                                                f"{exc.problem}"})
    quant = cached.quantization
    held = (quant.get("agreement_vs_fp32") or {}).get("dice_mean")
    record["int8_model"] = {"file": cached.path.name, "calibrated_on_this_clip": cached.calibrated_now,
                            "calibration_frames": (quant.get("calibration") or {}).get("frames"),
                            "held_out_dice_mean": held}
    if requested == "auto" and not (held is not None and held >= config.int8_min_dice):
        reason = (f"int8 calibration held-out mask Dice {held if held is None else round(held, 4)} "
                  f"< {config.int8_min_dice:g}")
        log.info("%s: using fp32", reason)
        return PrecisionPlan(fp32, record={**record, "used": "fp32", "reason": reason})
    check = ClipCheck(duration_hint_s, spec.threshold, config.dynamic_range_db, min_dice=config.int8_min_dice)
    int8 = OnnxPredictor(cached.path, spec.size, int8=True, parallel_frames=True)
    return PrecisionPlan(int8, fp32=fp32, check=check, quantization=quant,
                         record={**record, "used": "int8", "reason": "checked int8 on the CPU"})
