"""Inference engines, one file each, registered with their capabilities
(:mod:`ceuspipe.segment.engines.base`): ``torch`` (PyTorch, CPU or CUDA, fp16 autocast on
CUDA) and ``onnx`` (ONNX Runtime on the CPU, fp32 or int8). :func:`make_predictor` builds
the predictor of a request."""

from __future__ import annotations

import os

from ceuspipe.errors import InputError
from ceuspipe.segment.engines.base import (AUTO, ENGINES, Engine, EngineMismatch, EngineOptions, check_request,
                                           choose_engine, device_kind, engine_names, model_file_kind,
                                           register_engine)
from ceuspipe.segment.engines import onnx_engine as _onnx, torch_engine as _torch  # noqa: F401 (register)
from ceuspipe.segment.model_spec import ModelSpec

__all__ = ["AUTO", "ENGINES", "Engine", "EngineMismatch", "EngineOptions", "check_request", "choose_engine",
           "device_kind", "engine_names", "make_predictor", "model_file_kind", "register_engine"]


def make_predictor(spec: ModelSpec, *, engine: str = AUTO, device: str = AUTO,
                   cache_dir: str | os.PathLike | None = None, parallel_frames: bool = False):
    """Choose the engine and device (:func:`choose_engine`) and build the predictor.

    Raises :class:`InputError` naming the model file when no engine can run it as asked."""
    kind = "onnx" if spec.onnx_path is not None else "checkpoint"
    try:
        chosen, dev = choose_engine(engine, device, kind)
    except EngineMismatch as exc:
        raise InputError(spec.path, str(exc)) from None
    return chosen.build(spec, dev, EngineOptions(cache_dir=cache_dir, parallel_frames=parallel_frames))
