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
``ValueError("key: problem")``) and makes relative paths absolute, and a
``finish_batch(out: Path)`` attribute that runs once after a run in which exams were
done (e.g. rewriting a manifest over every exam folder under ``out``).
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any, Callable

from ceuspipe.errors import InputError

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


def finish_batch(stages, out: Path) -> None:
    """Run each distinct stage function's ``finish_batch(out)`` once (``stages``: the
    pipeline's :class:`~ceuspipe.batch.pipeline_file.StageSpec` list)."""
    seen = set()
    for spec in stages:
        fn = resolve_stage(spec.function)
        finish = getattr(fn, "finish_batch", None)
        if finish is not None and fn not in seen:
            seen.add(fn)
            finish(Path(out))


def _abs(base_dir: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


# ---------------------------------------------------------------- keyframes


def _paths_absolute(options: dict, keys: tuple[str, ...], base_dir: Path) -> dict:
    """Copy of ``options`` with the path options among ``keys`` made absolute against ``base_dir``."""
    opts = dict(options)
    for key in keys:
        if isinstance(opts.get(key), str):
            opts[key] = _abs(base_dir, opts[key])
    return opts


def _keyframe_config(options: dict):
    """The :class:`KeyframeConfig` of a stage's options (it checks every value itself)."""
    from ceuspipe import configs
    from ceuspipe.keyframes.config import KeyframeConfig

    return configs.build(KeyframeConfig, options, exclude=("overwrite",))


def _prepare_keyframes(options: dict, base_dir: Path) -> dict:
    options = _paths_absolute(options, ("layout_file", "pseudonymize"), base_dir)
    _keyframe_config(options)
    return options


@register_stage("keyframes")
def keyframes_stage(exam, exam_tmp_dir: Path, options: dict) -> dict:
    """1 fps sampling and top-k key frames (as ``ceuspipe keyframes``): PNGs,
    ``keyframes.json`` and ``scores.csv`` directly in the exam folder. Option
    ``pseudonymize``: a key file; the stage's files then carry pseudonymous ids and no
    source path (the batch ledger and folder names of the run are not changed)."""
    from ceuspipe.keyframes.run import extract_exam, pseudonymize_exams

    exam_tmp_dir = Path(exam_tmp_dir)
    scratch = exam_tmp_dir / ".keyframes"
    config = _keyframe_config(options)
    if config.pseudonymize is not None:
        exam = pseudonymize_exams([exam], config.pseudonymize, exam_tmp_dir)[0]
    result = extract_exam(exam, scratch, config)
    if result.status != "done" or result.out_dir is None:
        raise InputError(exam.path, f"key frames: {result.error or result.status}")
    names = sorted(p.name for p in result.out_dir.iterdir())
    for name in names:
        (result.out_dir / name).rename(exam_tmp_dir / name)
    shutil.rmtree(scratch)
    return {"keyframes_json": exam_tmp_dir / "keyframes.json", "scores_csv": exam_tmp_dir / "scores.csv",
            "n_samples": result.n_samples, "n_keyframes": result.n_selected}


keyframes_stage.prepare = _prepare_keyframes


def _keyframes_manifest(out: Path) -> None:
    from ceuspipe.keyframes.run import write_manifest

    write_manifest(out)


keyframes_stage.finish_batch = _keyframes_manifest


# ---------------------------------------------------------------- segment


def _segment_config(options: dict):
    """The :class:`SegmentConfig` of a stage's options (without ``model``; it checks the values)."""
    from ceuspipe import configs
    from ceuspipe.segment.run import SegmentConfig

    return configs.build(SegmentConfig, {k: v for k, v in options.items() if k != "model"},
                         exclude=("overwrite",))


def _prepare_segment(options: dict, base_dir: Path) -> dict:
    """Check the options and the model now, so a bad one fails the pipeline file, not every exam."""
    from ceuspipe.segment.model_spec import load_spec

    model = options.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model: missing; the checkpoint or ONNX path (e.g. model = \"/models/ceusegnet/best.pt\")")
    options = _paths_absolute(options, ("model", "layout_file", "cache_dir"), base_dir)
    if not Path(options["model"]).is_file():
        raise ValueError(f"model: file not found: {options['model']}")
    config = _segment_config(options)
    try:
        spec = load_spec(options["model"], "cpu")
    except InputError as exc:
        raise ValueError(f"model: {exc.problem}") from None
    from ceuspipe.segment.engines import EngineMismatch, check_request, model_file_kind

    try:
        check_request(config.engine, config.device, config.precision, model_file_kind(options["model"]))
    except EngineMismatch as exc:
        raise ValueError(f"{exc.field}: {exc}") from None
    if spec.onnx_path is not None and config.precision not in ("auto", "int8" if spec.quantization else "fp32"):
        raise ValueError(f"precision: the ONNX model file is {'int8' if spec.quantization else 'fp32'}, not "
                         f"{config.precision} (give the .pt checkpoint, or precision = \"auto\")")
    return options


@register_stage("segment")
def segment_stage(exam, exam_tmp_dir: Path, options: dict) -> dict:
    """Every frame -> ``mask.mkv``, ``overlay.mp4``, ``tic.csv``/``tic.json``/``tic.png``,
    ``segment.json`` and ``report.html`` (as ``ceuspipe segment-video``), directly in the exam folder.
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
            "overlay": exam_tmp_dir / "overlay.mp4", "report": exam_tmp_dir / "report.html",
            "frames": report.frames,
            "duration_s": round(report.duration_s, 6), "engine": report.engine,
            "precision": (report.precision or {}).get("used"),
            "tic": {k: v for k, v in tic.items() if isinstance(v, (int, float, str, bool)) or v is None}}


segment_stage.prepare = _prepare_segment
