"""Stages a batch run can apply to each new exam, and how a name becomes a function.

A stage is a function ``stage(exam: ExamInput, exam_tmp_dir: Path, options: dict) -> dict``.
It writes its files into ``exam_tmp_dir`` (the exam's private temporary folder,
renamed to ``OUT/<patient_id>/<exam_id>/`` once every stage succeeded) and
returns a JSON-able dict describing its outputs; paths inside ``exam_tmp_dir``
are stored relative to the exam folder. It raises (ideally
:class:`~ceuspipe.errors.InputError`) to fail the exam.

Names: the built-in registry (``keyframes``, ``segment``) or an importable
``"package.module:function"``, so a site can add its own stages without
touching ceuspipe. A function may carry a ``prepare(options, base_dir) -> dict``
attribute that checks options when the pipeline file is loaded (raise
``ValueError("key: problem")``) and makes relative paths absolute.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from pathlib import Path
from typing import Any, Callable

from ceuspipe.errors import InputError
from ceuspipe.tic.models import MODELS

StageFn = Callable[[Any, Path, dict], dict]

_REGISTRY: dict[str, StageFn] = {}


def register_stage(name: str) -> Callable[[StageFn], StageFn]:
    """Decorator adding a stage to the built-in registry under ``name``."""

    def deco(fn: StageFn) -> StageFn:
        _REGISTRY[name] = fn
        return fn

    return deco


def stage_names() -> list[str]:
    """Names of the built-in stages."""
    return sorted(_REGISTRY)


def resolve_stage(function: str) -> StageFn:
    """Return the stage for a registry name or an importable ``module:function``."""
    if function in _REGISTRY:
        return _REGISTRY[function]
    if ":" not in function:
        raise ValueError(f": unknown stage {function!r} (built-in: {', '.join(stage_names())}; "
                         "or give function = 'module:function')")
    module_name, _, attr = function.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f": cannot import stage module {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f": {module_name!r} has no function {attr!r}")
    return fn


def prepare_options(function: str, options: dict, base_dir: Path) -> dict:
    """Check a stage's options at load time; relative paths resolve against ``base_dir``."""
    fn = resolve_stage(function)
    prepare = getattr(fn, "prepare", None)
    return dict(prepare(dict(options), Path(base_dir))) if prepare else dict(options)


def _abs(base_dir: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


# ---------------------------------------------------------------- keyframes


def _with_boxes(options: dict) -> dict:
    """Copy of stage options with ``[x, y, w, h]`` panel boxes turned into :class:`Box`."""
    from ceuspipe.video.panels import Box

    opts = dict(options)
    for key in ("ceus_box", "us_box"):
        if opts.get(key) is not None:
            opts[key] = Box(*opts[key])
    return opts


def _check_boxes(options: dict) -> None:
    """Validate the optional ``ceus_box`` / ``us_box`` pair (``[x, y, w, h]`` integers)."""
    for key in ("ceus_box", "us_box"):
        v = options.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != 4
                              or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
            raise ValueError(f"{key}: must be [x, y, w, h] in full-frame pixels, got {v!r}")
    if (options.get("ceus_box") is None) != (options.get("us_box") is None):
        raise ValueError("ceus_box: ceus_box and us_box go together")


def _keyframe_config(options: dict):
    from ceuspipe.keyframes_run import KeyframeConfig

    return KeyframeConfig(**_with_boxes(options))


def _prepare_keyframes(options: dict, base_dir: Path) -> dict:
    from ceuspipe.keyframes_run import KeyframeConfig

    fields = {f.name for f in dataclasses.fields(KeyframeConfig)} - {"overwrite"}
    for key, value in options.items():
        if key not in fields:
            raise ValueError(f"{key}: unknown option (known: {', '.join(sorted(fields))})")
    if "sample_fps" in options:
        v = options["sample_fps"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"sample_fps: must be a number > 0 (frames per second), got {v!r}")
    for key in ("k", "layout_samples"):
        v = options.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key}: must be an integer >= 1, got {v!r}")
    _check_boxes(options)
    if options.get("ceus_side") not in (None, "left", "right"):
        raise ValueError(f"ceus_side: must be 'left' or 'right', got {options['ceus_side']!r}")
    if options.get("layout_file") is not None:
        if not isinstance(options["layout_file"], str):
            raise ValueError("layout_file: must be a path string")
        options["layout_file"] = _abs(base_dir, options["layout_file"])
    _keyframe_config(options)  # anything else KeyframeConfig itself rejects
    return options


@register_stage("keyframes")
def keyframes_stage(exam, exam_tmp_dir: Path, options: dict) -> dict:
    """1 fps sampling and top-k key frames (as ``ceuspipe keyframes``): PNGs,
    ``keyframes.json`` and ``scores.csv`` directly in the exam folder."""
    from ceuspipe.keyframes_run import extract_exam

    exam_tmp_dir = Path(exam_tmp_dir)
    scratch = exam_tmp_dir / ".keyframes"
    result = extract_exam(exam, scratch, _keyframe_config(options))
    if result.status != "done" or result.out_dir is None:
        raise InputError(exam.path, f"key frames: {result.error or result.status}")
    names = sorted(p.name for p in result.out_dir.iterdir())
    for name in names:
        (result.out_dir / name).rename(exam_tmp_dir / name)
    shutil.rmtree(scratch)
    return {"keyframes_json": exam_tmp_dir / "keyframes.json", "scores_csv": exam_tmp_dir / "scores.csv",
            "n_samples": result.n_samples, "n_keyframes": result.n_selected}


keyframes_stage.prepare = _prepare_keyframes


# ---------------------------------------------------------------- segment


def _segment_config(options: dict):
    from ceuspipe.segment.run import SegmentConfig

    return SegmentConfig(**_with_boxes({k: v for k, v in options.items() if k != "model"}))


def _prepare_segment(options: dict, base_dir: Path) -> dict:
    from ceuspipe.segment.run import SegmentConfig

    fields = {f.name for f in dataclasses.fields(SegmentConfig)} - {"overwrite"}
    for key in options:
        if key != "model" and key not in fields:
            raise ValueError(f"{key}: unknown option (known: model, {', '.join(sorted(fields))})")
    model = options.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model: missing; the checkpoint or ONNX path (e.g. model = \"/models/ceusegnet/best.pt\")")
    options["model"] = _abs(base_dir, model)
    if not Path(options["model"]).is_file():
        raise ValueError(f"model: file not found: {options['model']}")
    for key in ("layout_file", "cache_dir"):
        if options.get(key) is not None:
            if not isinstance(options[key], str):
                raise ValueError(f"{key}: must be a path string")
            options[key] = _abs(base_dir, options[key])
    for key, lo in (("sample_fps", 0.0), ("dynamic_range_db", 0.0), ("threshold", 0.0)):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= lo):
            raise ValueError(f"{key}: must be a number > {lo:g}, got {v!r}")
    for key in ("batch_size", "layout_samples", "queue_frames"):
        v = options.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key}: must be an integer >= 1, got {v!r}")
    choices = {"device": ("auto", "cpu", "cuda"), "engine": ("auto", "torch", "onnx"),
               "tic_model": tuple(MODELS), "ceus_side": (None, "left", "right")}
    for key, allowed in choices.items():
        if key in options and options[key] not in allowed and not (
                key == "device" and isinstance(options[key], str) and options[key].startswith("cuda:")):
            raise ValueError(f"{key}: must be one of {', '.join(str(a) for a in allowed if a)}, "
                             f"got {options[key]!r}")
    _check_boxes(options)
    _segment_config(options)
    return options


@register_stage("segment")
def segment_stage(exam, exam_tmp_dir: Path, options: dict) -> dict:
    """Every frame -> ``mask.mkv``, ``overlay.mp4``, ``tic.csv``/``tic.json``/``tic.png``
    and ``segment.json`` (as ``ceuspipe segment-video``), directly in the exam folder.
    Option ``model``: the checkpoint or exported ONNX file; the others are :class:`SegmentConfig` fields."""
    from ceuspipe.segment.run import segment_video

    exam_tmp_dir = Path(exam_tmp_dir)
    scratch = exam_tmp_dir / ".segment"
    report = segment_video(exam.path, options["model"], scratch, _segment_config(options))
    for item in sorted(scratch.iterdir()):
        item.rename(exam_tmp_dir / item.name)
    shutil.rmtree(scratch)
    tic = report.tic if isinstance(report.tic, dict) else {}
    return {"segment_json": exam_tmp_dir / "segment.json", "mask": exam_tmp_dir / "mask.mkv",
            "overlay": exam_tmp_dir / "overlay.mp4", "frames": report.frames,
            "duration_s": round(report.duration_s, 6), "engine": report.engine,
            "tic": {k: v for k, v in tic.items() if isinstance(v, (int, float, str, bool)) or v is None}}


segment_stage.prepare = _prepare_segment
