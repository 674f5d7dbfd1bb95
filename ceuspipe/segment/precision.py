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
from ceuspipe.segment.engines import Engine, EngineMismatch, EngineOptions, choose_engine
from ceuspipe.segment.int8_check import ClipCheck
from ceuspipe.segment.model_spec import ModelSpec
from ceuspipe.segment.predictor import Predictor

log = logging.getLogger("ceuspipe")

PRECISIONS = ("auto", "fp32", "int8")


@dataclass
class PrecisionPlan:
    """``predictor``: what segments the clip; ``fp32``: the fp32 predictor that checks it
    (None when no check runs); ``check``: the per-clip check (None without int8);
    ``quantization``: the int8 model's metadata (empty for fp32); ``record``: the decision."""

    predictor: Predictor | None  # None: masks were given, no model runs
    fp32: Predictor | None = None
    check: ClipCheck | None = None
    quantization: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    @property
    def engine(self) -> str:
        return self.predictor.engine if self.predictor is not None else "none"

    @property
    def device(self) -> str:
        return self.predictor.device if self.predictor is not None else "none"

    def inference_record(self) -> dict:
        """How the model ran (threads, providers...; empty when no model ran)."""
        return self.predictor.inference_record() if self.predictor is not None else {}

    def fall_back(self, reason: str) -> None:
        """Switch to the fp32 predictor (the check failed at precision auto)."""
        assert self.fp32 is not None
        self.predictor, self.quantization = self.fp32, {}
        self.record.update(used="fp32", reason=reason, fell_back=True)


def given_predictor_plan(predictor: Predictor, config) -> PrecisionPlan:
    """The plan of a predictor handed to ``segment_video``: it runs as it is, unchecked."""
    return PrecisionPlan(predictor, record={"requested": config.precision, "used": "as given",
                                            "reason": f"a {predictor.engine} predictor was handed to segment_video"})


def given_masks_plan(config) -> PrecisionPlan:
    """The plan of a run on given masks (``config.masks``): no model, nothing to check."""
    return PrecisionPlan(None, record={"requested": config.precision, "used": "none",
                                       "reason": "masks given (--masks): no model ran"})


def plan_precision(spec: ModelSpec, config, clip: str | os.PathLike, duration_hint_s: float | None,
                   engine: tuple[Engine, str] | None = None) -> PrecisionPlan:
    """Build the predictors for ``spec`` under ``config`` (a ``SegmentConfig``), calibrating
    the int8 model on ``clip`` when it is needed and not cached yet. ``engine``: the
    ``(engine, device)`` already chosen (:func:`~ceuspipe.segment.engines.choose_engine`)."""
    requested = config.precision
    kind = "onnx" if spec.onnx_path is not None else "checkpoint"
    try:
        chosen, device = engine or choose_engine(config.engine, config.device, kind)
    except EngineMismatch as exc:
        raise InputError(spec.path, str(exc)) from None
    options = EngineOptions(cache_dir=config.cache_dir, parallel_frames=True)
    predictor = chosen.build(spec, device, options)
    if spec.onnx_path is not None:
        used = "int8" if spec.quantization else "fp32"
        if requested not in ("auto", used):
            raise InputError(spec.path, f"the model file is {used}; precision {requested} needs the .pt "
                                        "checkpoint (or precision auto)")
        return PrecisionPlan(predictor, quantization=spec.quantization,
                             record={"requested": requested, "used": used, "reason": "the ONNX model file given"})
    if "int8" not in chosen.precisions or device != "cpu":
        if requested == "int8":
            raise InputError(spec.path, f"int8 runs on the CPU with an int8 engine only, not {chosen.name} on "
                                        f"{device} (use precision auto or fp32)")
        used = "fp16 autocast" if getattr(predictor, "amp", False) else "fp32"
        return PrecisionPlan(predictor, record={"requested": requested, "used": used,
                                                "reason": f"{predictor.engine} on {predictor.device}"})
    if requested == "fp32":
        return PrecisionPlan(predictor, record={"requested": requested, "used": "fp32", "reason": "asked"})
    return _int8_plan(spec, config, chosen, predictor, clip, duration_hint_s)


def _int8_plan(spec: ModelSpec, config, engine: Engine, fp32: Predictor, clip, duration_hint_s
               ) -> PrecisionPlan:
    from ceuspipe.segment.int8_cache import cached_int8
    from ceuspipe.segment.onnx_export import cached_onnx

    requested = config.precision
    record = {"requested": requested}
    try:
        cached = cached_int8(spec, cached_onnx(spec, cache_dir=config.cache_dir), clip, config, duration_hint_s)
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
    int8 = engine.build(spec, "cpu", EngineOptions(parallel_frames=True, model_file=cached.path, int8=True))
    return PrecisionPlan(int8, fp32=fp32, check=check, quantization=quant,
                         record={**record, "used": "int8", "reason": "checked int8 on the CPU"})
