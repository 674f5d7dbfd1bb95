"""``segment_video``: every frame of a clip -> lesion masks, overlay, time-intensity curve.

The steps, each in a module of its own:

1. the model and how it runs: an engine chosen by capability (:mod:`ceuspipe.segment.engines`)
   at a precision (:mod:`ceuspipe.segment.precision`: on the CPU a checkpoint runs its cached
   int8 model, checked against fp32 on 8 frames spread over the clip and redone with fp32
   when they disagree), or a predictor handed in by the caller;
2. the stream (:mod:`ceuspipe.segment.stream`): the panel layout is resolved (a cheap 1 fps
   pass over the first minute), then decode, inference and encode stages run joined by
   bounded channels; repeated frames (a 30 fps capture of a 10 Hz acquisition,
   :mod:`ceuspipe.segment.repeats`) skip inference and reuse their anchor's mask.
   ``mask.mkv`` and ``overlay.mp4`` have every frame at its own time; the curve
   (``tic.csv``) has one row per acquired frame;
3. the curve fitted and written (:mod:`ceuspipe.tic`), then ``segment.json`` and
   ``report.html``.

Outputs go to a temporary folder beside ``out_dir`` that is renamed to
``out_dir`` only when everything succeeded (see :func:`ceuspipe.fsutil.atomic_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ceuspipe import __version__
from ceuspipe.errors import InputError, OutputError
from ceuspipe.fsutil import atomic_dir, atomic_write_text, safe_name
from ceuspipe.report.exam import REPORT_NAME, write_exam_report
from ceuspipe.segment.config import OVERLAY_PRESETS, SegmentConfig  # noqa: F401 (re-exported)
from ceuspipe.segment.model_spec import ModelSpec, load_spec
from ceuspipe.segment.given_masks import REPEAT_CHECK_SIZE
from ceuspipe.segment.precision import PrecisionPlan, given_masks_plan, given_predictor_plan, plan_precision
from ceuspipe.segment.predictor import Predictor
from ceuspipe.segment.reference_region import reference_record
from ceuspipe.segment.stream import (MASK_NAME, OVERLAY_NAME, Int8Check, Int8Disagrees, StreamResult,
                                     run_stream)
from ceuspipe.video.panels import Box, PanelLayout

log = logging.getLogger("ceuspipe")

OUTPUT_SUFFIX = ".ceuspipe"


@dataclass
class SegmentReport:
    """What :func:`segment_video` did.

    ``frames``: frames segmented; ``frames_decoded``: frames decoded (all, also
    those skipped by ``sample_fps``); ``duration_s``: time of the last segmented
    frame (s from the first frame); ``wall_s``: seconds the run took (model
    loading included); ``fps``: segmented frames per wall-clock second of the
    streaming part; ``engine``/``device``: what ran the model;
    ``model_quantization``: an int8 model's calibration and fp32 agreement (empty for fp32);
    ``precision``: what was asked and used and why, with the per-clip int8 check
    (:mod:`ceuspipe.segment.precision`);
    ``frames_repeated``: segmented frames that repeated an earlier one (no inference, its
    mask; not in the curve); ``acquisition_fps``: acquired (non-repeated) frames per
    second of clip time, ``(n - 1) / (last - first first-appearance time)`` (None with
    fewer than two).
    """

    source: Path
    out_dir: Path
    frames: int
    frames_decoded: int
    duration_s: float
    wall_s: float
    stream_s: float
    fps: float
    engine: str
    device: str
    batch_size: int
    layout: PanelLayout
    checkpoint: Path | None
    model_config: dict = field(default_factory=dict)
    model_quantization: dict = field(default_factory=dict)
    precision: dict = field(default_factory=dict)
    tic: dict = field(default_factory=dict)
    frames_repeated: int = 0
    acquisition_fps: float | None = None

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("layout",)}
        d["layout"] = self.layout.to_dict()
        for k in ("source", "out_dir", "checkpoint"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d


def default_out_dir(clip: str | os.PathLike) -> Path:
    """``<clip folder>/<clip stem>.ceuspipe`` (the stem sanitised)."""
    clip = Path(clip)
    return clip.parent / f"{safe_name(clip.stem)}{OUTPUT_SUFFIX}"


def segment_video(clip: str | os.PathLike, checkpoint: str | os.PathLike | None,
                  out_dir: str | os.PathLike | None = None,
                  config: SegmentConfig = SegmentConfig(), progress: bool = False,
                  command_line: list[str] | None = None, *, predictor: Predictor | None = None) -> SegmentReport:
    """Segment every (or every sampled) frame of ``clip`` with ``checkpoint``.

    Writes into ``out_dir`` (default :func:`default_out_dir`): ``mask.mkv``
    (FFV1 grey, CEUS-panel size, 0/255), ``overlay.mp4`` (H.264 full frame,
    black outside the panels, mask contour on CEUS and mirrored on US), both
    with the clip's frame times; ``tic.csv``, ``tic.json``, ``tic.png``;
    ``segment.json`` (this report, with ``command_line``: the CLI passes its
    argv, library calls record None); ``report.html`` (built from those files,
    :mod:`ceuspipe.report.exam`). Nothing appears under ``out_dir`` unless
    the whole run succeeds. Raises :class:`InputError` for an unreadable clip,
    checkpoint or layout, :class:`OutputError` when ``out_dir`` exists and
    ``overwrite`` is False.

    ``predictor``: run this instead of building one from ``checkpoint`` (any object with
    the :class:`~ceuspipe.segment.predictor.Predictor` interface; it runs as it is, no
    int8 check). ``checkpoint`` may then be None: the model input size is the
    predictor's ``size`` and the threshold ``config.threshold`` or 0.5.

    ``config.masks``: use these masks instead of a model (``checkpoint`` and ``predictor``
    are then not used; :mod:`ceuspipe.segment.given_masks`).
    """
    t_start = time.perf_counter()
    clip = Path(clip)
    out = Path(out_dir) if out_dir is not None else default_out_dir(clip)
    if out.exists() and not config.overwrite:
        raise OutputError(out, "output folder exists (use --overwrite to replace it)")
    given = config.masks is not None
    if checkpoint is None and predictor is None and not given:
        raise InputError(clip, "no model: give a checkpoint, a predictor or masks")

    from ceuspipe.video.reader import is_dicom_path, probe

    info = probe(clip)  # fails early, with the clip's name, on a non-video
    if config.dicom_seg and not is_dicom_path(clip):
        raise InputError(clip, "--dicom-seg needs a DICOM input; this clip is not DICOM (--nifti works for any)")
    if given:
        spec, plan = None, given_masks_plan(config)
        size, threshold = REPEAT_CHECK_SIZE, None
    else:
        spec, plan = _model(clip, checkpoint, config, info.duration_s, predictor)
        size = spec.size if spec is not None else int(predictor.size)
        default_threshold = spec.threshold if spec is not None else 0.5
        threshold = default_threshold if config.threshold is None else float(config.threshold)
    fps_hint = info.nominal_fps or 30.0
    if config.sample_fps is not None:
        fps_hint = min(fps_hint, config.sample_fps)

    with atomic_dir(out, overwrite=config.overwrite) as tmp:
        if given:
            stats = run_stream(clip, tmp, None, size, config, threshold, fps_hint, progress)
        else:
            stats = _stream_with_check(clip, tmp, plan, size, config, threshold, fps_hint, progress)
        report = SegmentReport(
            source=clip, out_dir=out, frames=stats.frames, frames_decoded=stats.frames_decoded,
            duration_s=stats.duration_s, wall_s=0.0, stream_s=stats.stream_s,
            fps=stats.frames / stats.stream_s if stats.stream_s > 0 else float("nan"),
            engine=plan.engine, device=plan.device, batch_size=config.batch_size,
            layout=stats.layout, checkpoint=Path(checkpoint) if checkpoint is not None and not given else None,
            model_config=spec.config if spec is not None else {}, model_quantization=plan.quantization,
            precision=plan.record, frames_repeated=stats.frames_repeated, acquisition_fps=stats.acquisition_fps)
        motion = _write_motion(tmp, clip, stats)
        exported = _export_masks(tmp, clip, stats, config, spec)
        meta = {**_model_record(spec, report), "threshold": threshold, "layout": report.layout.to_dict(),
                "dynamic_range_db": config.dynamic_range_db, "versions": _versions(),
                "layout_decision": stats.layout_decision, "warnings": stats.warnings, "precision": plan.record,
                "inference": plan.inference_record(), "masks": stats.masks,
                "reference_region": reference_record(config),
                "clean_masks": config.clean_masks, "motion": motion,
                "command_line": list(command_line) if command_line is not None else None}
        report.tic = _write_tic(tmp, stats.tic, meta, config, exclude=stats.out_of_plane())
        meta["maps"] = maps = _write_maps(tmp, stats, config, report.tic.get("replenishment") or [])
        report.wall_s = time.perf_counter() - t_start
        summary = {**meta, **report.to_dict(), "tic": _tic_summary(report.tic),
                   "temporal_smoothing": config.temporal_smoothing,
                   "sample_fps": config.sample_fps, "dedupe": config.dedupe,
                   "outputs": [MASK_NAME, OVERLAY_NAME, "tic.csv", "tic.json", "tic.png",
                               *(["motion.csv", "motion.png"] if motion is not None else []),
                               *([maps["file"], *maps["pngs"]] if maps is not None else []), *exported,
                               REPORT_NAME]}
        atomic_write_text(tmp / "segment.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
        write_exam_report(tmp)  # last: a folder without report.html is never a complete output
    return report


def _model(clip: Path, checkpoint, config: SegmentConfig, duration_s: float | None,
           predictor: Predictor | None) -> tuple[ModelSpec | None, PrecisionPlan]:
    """The model spec (None for a predictor given without a checkpoint) and how it runs."""
    from ceuspipe.segment.engines import EngineMismatch, choose_engine, model_file_kind

    if predictor is not None:
        spec = load_spec(checkpoint, "cpu") if checkpoint is not None else None
        return spec, given_predictor_plan(predictor, config)
    try:
        engine, device = choose_engine(config.engine, config.device, model_file_kind(checkpoint))
    except EngineMismatch as exc:
        raise InputError(checkpoint, str(exc)) from None
    spec = load_spec(checkpoint, device)
    return spec, plan_precision(spec, config, clip, duration_s, engine=(engine, device))


def _tic_summary(tic: dict) -> dict:
    """The curve's verdict and parameter values, for segment.json (the whole fit is in tic.json)."""
    short = {"success": tic.get("success"), "reason": tic.get("reason"), "model": tic.get("model"),
             "qof_percent": tic.get("qof_percent"),
             "parameters": {k: (v or {}).get("value") for k, v in (tic.get("parameters") or {}).items()
                            if not k.startswith("fit_")}}
    if "relative_parameters" in tic:
        short["relative_parameters"] = {k: v.get("value") for k, v in tic["relative_parameters"].items()}
        short["reference_success"] = (tic.get("reference") or {}).get("success")
    return short


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Box):
        return obj.as_list()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _versions() -> dict:
    import av
    import cv2
    import torch

    v = {"ceuspipe": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "numpy": np.__version__, "av": av.__version__, "opencv": cv2.__version__}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return v


def _model_record(spec: ModelSpec | None, report: SegmentReport) -> dict:
    """The source and the model that segmented it (None fields for a predictor given alone)."""
    return {"source": str(report.source),
            "model_checkpoint": str(spec.path.resolve()) if spec is not None else None,
            "model_sha256": spec.sha256 if spec is not None else None,
            "model_config": report.model_config, "model_quantization": report.model_quantization}


def _stream_with_check(clip: Path, tmp: Path, plan: PrecisionPlan, size: int, config: SegmentConfig,
                       threshold: float, fps_hint: float, progress: bool) -> StreamResult:
    """:func:`~ceuspipe.segment.stream.run_stream` with the plan's int8 check; when it fails at precision ``auto`` the clip
    is redone with fp32 (one warning); at ``int8`` the int8 outputs stay (one warning).
    ``stream_s`` counts both passes."""
    t0 = time.perf_counter()
    auto = config.precision == "auto"
    check = Int8Check(plan.check, plan.fp32, stop_early=auto) if plan.check is not None else None
    try:
        stats = run_stream(clip, tmp, plan.predictor, size, config, threshold, fps_hint, progress, check)
    except Int8Disagrees:
        stats = None
    if plan.check is None:
        return stats
    result = plan.check.result()
    plan.record["check"] = result
    if result["passed"]:
        return stats
    curve = result["curve_max_difference"]
    warning = (f"int8 masks disagree with fp32 on {result['frames']} check frames of this clip (mask Dice mean "
               f"{result['dice_mean']:.3f}, bound {config.int8_min_dice:g}; curve difference "
               f"{'n/a' if curve is None else f'{curve:.3f}'}, bound {result['bounds']['curve_max_difference']:g})")
    if not auto:
        warning += ": int8 kept (precision int8)"
        log.warning("%s: %s", clip.name, warning)
        stats.warnings.append(warning)
        return stats
    warning += ": segmented with fp32 instead"
    log.warning("%s: %s", clip.name, warning)
    plan.fall_back(warning)
    for name in (MASK_NAME, OVERLAY_NAME):
        (tmp / name).unlink(missing_ok=True)
    stats = run_stream(clip, tmp, plan.predictor, size, config, threshold, fps_hint, progress)
    stats.warnings.append(warning)
    stats.stream_s = time.perf_counter() - t0
    return stats


def _write_motion(tmp: Path, clip: Path, stats: StreamResult) -> dict | None:
    """Write ``motion.csv`` and ``motion.png``; the summary for segment.json (None: motion off).
    Frames out of plane add one warning: they are left out of the curve."""
    if stats.motion is None:
        return None
    from ceuspipe.motion import SCORE_THRESHOLD, motion_summary, write_motion_csv
    from ceuspipe.motion.plot import plot_motion

    write_motion_csv(tmp / "motion.csv", stats.motion)
    if stats.motion:
        plot_motion(stats.motion, tmp / "motion.png", SCORE_THRESHOLD)
    summary = motion_summary(stats.motion)
    if summary["frames_out_of_plane"]:
        line = (f"{clip}: {summary['frames_out_of_plane']} of {summary['frames']} frames out of plane "
                f"(B-mode match score < {SCORE_THRESHOLD:g}): left out of the curve")
        log.warning("%s", line)
        stats.warnings.append(line)
    return summary


def _export_masks(tmp: Path, clip: Path, stats: StreamResult, config: SegmentConfig,
                  spec: ModelSpec | None) -> list[str]:
    """``masks.nii.gz`` and ``mask_seg.dcm`` as asked (:mod:`ceuspipe.mask_export`); the names
    written. A DICOM SEG of a non-DICOM clip is refused before anything is segmented."""
    if not (config.nifti or config.dicom_seg):
        return []
    from ceuspipe.mask_export import export_masks

    algorithm = ("ceuspipe CEUSegNet", spec.sha256[:12]) if spec is not None else None
    return export_masks(tmp, nifti=config.nifti, dicom_seg=config.dicom_seg, source=clip, layout=stats.layout,
                        algorithm=algorithm)


def _write_maps(tmp: Path, stats: StreamResult, config: SegmentConfig, refills: list) -> dict | None:
    """Fit and write the perfusion maps (``maps.npz``, ``map_*.png``; ``refills``: the curve's
    refills, each with its own maps); their summary for segment.json (None: maps off)."""
    if stats.maps is None:
        return None
    t0 = time.perf_counter()
    px = stats.layout.pixel_size_mm
    summary = stats.maps.write(tmp, model=config.tic_model, pixel_size_mm=None if px is None else float(np.mean(px)),
                               refills=refills)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _write_tic(tmp: Path, acc, meta: dict, config: SegmentConfig, exclude=None) -> dict:
    """Fit the curve and write ``tic.csv``, ``tic.json`` (with ``meta``), ``tic.png``;
    ``exclude``: ``(n,) bool`` rows left out (frames out of plane)."""
    from ceuspipe.tic import write_tic_outputs

    result = acc.result(model=config.tic_model, exclude=exclude)
    write_tic_outputs(result, tmp, source=meta["source"], extra=meta)
    return result.to_json_dict()
