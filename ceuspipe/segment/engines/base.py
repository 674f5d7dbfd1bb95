"""What an inference engine is, the registry of engines, and the one place their
capabilities are checked against a request (engine, device, precision, model file).

An :class:`Engine` declares what it can do: the device kinds it runs on (``cpu``,
``cuda``), the precisions (``fp32``, ``fp16``, ``int8``: the latter runs ceuspipe's
cached quantised ONNX model, :mod:`ceuspipe.segment.int8_cache`), the model files it
reads (``checkpoint``: a ceuspipe ``.pt``; ``onnx``: an exported ``.onnx``), where
``engine auto`` picks it, and the modules it needs. Its ``build(spec, device,
options)`` returns a :class:`~ceuspipe.segment.predictor.Predictor`.

Engines register themselves (one file each, :data:`ENGINES`); other packages add
theirs through the entry point group ``ceuspipe.inference_engines``
(``name = "package.module:ENGINE"``, an :class:`Engine`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ceuspipe.registry import Registry

log = logging.getLogger("ceuspipe")

#: the engine name that picks one by device (see :func:`choose_engine`)
AUTO = "auto"
ENTRY_POINT_GROUP = "ceuspipe.inference_engines"
#: what a model file is: a ceuspipe checkpoint or an exported ONNX model
MODEL_FILES = ("checkpoint", "onnx")


@dataclass(frozen=True)
class EngineOptions:
    """How to build a predictor: ``cache_dir`` for exported models; ``parallel_frames``:
    run a batch's frames as concurrent one-thread runs (where the engine can);
    ``model_file``: run this exported file instead of the spec's model (an int8 model)."""

    cache_dir: str | os.PathLike | None = None
    parallel_frames: bool = False
    model_file: Path | None = None
    int8: bool = False


@dataclass(frozen=True)
class Engine:
    """An inference engine and its capabilities (see the module docstring).

    ``auto_for``: device kinds where ``engine auto`` may pick it, lowest ``auto_rank``
    first; ``requires``: importable modules it needs (checked without importing them)."""

    name: str
    build: Callable  # (ModelSpec, device: str, EngineOptions) -> Predictor
    devices: tuple[str, ...] = ("cpu",)
    precisions: tuple[str, ...] = ("fp32",)
    model_files: tuple[str, ...] = ("checkpoint",)
    auto_for: tuple[str, ...] = ()
    auto_rank: int = 100
    requires: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """The first required module that cannot be imported, else None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return module
        return None


def _as_engine(name: str, obj) -> Engine:
    if not isinstance(obj, Engine):
        raise ValueError(f"inference engine {name!r} must be a ceuspipe Engine, not {type(obj).__name__}")
    return obj if obj.name == name else replace(obj, name=name)


#: every inference engine known, by name
ENGINES: Registry[Engine] = Registry("inference engine", ENTRY_POINT_GROUP, wrap=_as_engine)


def register_engine(engine: Engine, *, replace: bool = False) -> Engine:
    """Register ``engine`` under its name (``ValueError`` for a name taken, unless ``replace``)."""
    return ENGINES.register(engine.name, engine, replace=replace)


def engine_names() -> list[str]:
    """``auto`` and every registered engine's name."""
    return [AUTO, *ENGINES.names()]


def model_file_kind(path: str | os.PathLike) -> str:
    """``onnx`` for an ``.onnx`` file, else ``checkpoint``."""
    return "onnx" if Path(path).suffix.lower() == ".onnx" else "checkpoint"


def device_kind(device: str) -> str:
    """``cpu``, ``cuda`` or ``auto`` of a device name (``cuda:1`` -> ``cuda``)."""
    return device.split(":", 1)[0]


class EngineMismatch(ValueError):
    """A request an engine cannot serve; ``field`` names the option to change."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _serving(kind: str | None = None, precision: str | None = None, model_file: str | None = None) -> list[Engine]:
    return [e for e in ENGINES if (kind is None or kind in e.devices)
            and (precision is None or precision in e.precisions)
            and (model_file is None or model_file in e.model_files)]


def _names(engines: list[Engine]) -> str:
    return ", ".join(e.name for e in engines) or "none"


def check_request(engine: str, device: str = AUTO, precision: str = AUTO, model_file: str | None = None) -> None:
    """Raise :class:`EngineMismatch` (one sentence) unless some engine can serve the request:
    ``engine`` (a name or ``auto``) on ``device`` (``auto|cpu|cuda|cuda:N``, availability
    not checked) at ``precision`` (``auto|fp32|int8``) for ``model_file`` (a
    :data:`MODEL_FILES` kind, or None when not known yet)."""
    if engine != AUTO and engine not in ENGINES:
        raise EngineMismatch("engine", f"unknown inference engine {engine!r}; known: {', '.join(engine_names())}")
    kind = device_kind(device)
    kinds = None if kind == AUTO else kind
    chosen = [ENGINES.get(engine)] if engine != AUTO else None
    if model_file is not None:
        able = _serving(model_file=model_file)
        what = "an ONNX model file" if model_file == "onnx" else "a checkpoint"
        hint = "; give the .pt checkpoint" if model_file == "onnx" else ""
        if chosen and model_file not in chosen[0].model_files:
            raise EngineMismatch("engine", f"engine {engine} cannot run {what} (engines that can: {_names(able)}){hint}")
        if not _serving(kinds, model_file=model_file):
            devices = sorted({d for e in able for d in e.devices})
            raise EngineMismatch("device", f"{what} runs on {'/'.join(devices) or 'no device'} only "
                                           f"(engines: {_names(able)}), not on {device}{hint}")
    if chosen and kinds and kinds not in chosen[0].devices:
        raise EngineMismatch("engine", f"engine {engine} runs on {'/'.join(chosen[0].devices)} only "
                                       f"(engines for {kinds}: {_names(_serving(kinds))})")
    if precision not in (AUTO, "fp32") and (
            (chosen and precision not in chosen[0].precisions) or not _serving(kinds, precision)):
        able = _serving(precision=precision)
        where = "; ".join(f"engine {e.name} on {'/'.join(e.devices)}" for e in able) or "no engine"
        raise EngineMismatch("precision", f"{precision} runs with {where} only (not engine {engine} "
                                          f"on device {device})")


def choose_engine(engine: str, device: str, model_file: str = "checkpoint") -> tuple[Engine, str]:
    """``(engine, resolved device)`` for a request, checked by :func:`check_request`.

    ``engine auto``: the lowest-ranked available engine whose ``auto_for`` has the
    device's kind and that runs ``model_file`` (a skipped unavailable one is logged);
    with ``device auto`` and no such engine for the resolved kind (a GPU machine and an
    ONNX file), the CPU. A named engine with ``device auto`` runs on the resolved device
    when it can, else on its first device. Raises ``EngineMismatch``, or
    :class:`~ceuspipe.errors.InputError` for an unavailable engine or device."""
    from ceuspipe.devices import resolve_device
    from ceuspipe.errors import InputError

    check_request(engine, device, model_file=model_file)
    if engine != AUTO:
        chosen = ENGINES.get(engine)
        missing = chosen.missing()
        if missing:
            raise InputError(None, f"engine {engine} unavailable (module {missing!r} not installed)")
        resolved = resolve_device(device)
        if device == AUTO and device_kind(resolved) not in chosen.devices:
            resolved = resolve_device(chosen.devices[0])
        return chosen, resolved
    resolved = resolve_device(device)
    picked = _auto_engine(device_kind(resolved), model_file)
    if picked is None and device == AUTO:
        resolved, picked = "cpu", _auto_engine("cpu", model_file)
    if picked is None:
        raise InputError(None, f"no available engine runs a {model_file} on {resolved} "
                               f"(registered: {', '.join(ENGINES.names())})")
    return picked, resolved


def _auto_engine(kind: str, model_file: str) -> Engine | None:
    ranked = sorted((e for e in _serving(kind, model_file=model_file) if kind in e.auto_for),
                    key=lambda e: (e.auto_rank, e.name))
    for e in ranked:
        missing = e.missing()
        if missing is None:
            return e
        log.warning("engine %s unavailable (module %r not installed): trying the next one", e.name, missing)
    return None
