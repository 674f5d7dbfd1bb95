"""Checkpoints that hold only tensors and plain Python values.

A checkpoint is a dict ``{"format", "config", "epoch", "model", "optimizer",
"scaler", "rng", "best_dice", "history"}`` saved with :func:`torch.save` and read
back with ``torch.load(weights_only=True)``: a file from elsewhere (or a
malicious pickle) cannot run code, it fails with :class:`InputError`.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ceuspipe.errors import InputError
from ceuspipe.fsutil import atomic_write_bytes

FORMAT = "ceuspipe-ceusegnet-v1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (see module doc) atomically to ``path``."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``); any failure -> :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read (permission denied)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notices on foreign files
            data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError,
            TypeError, zipfile.BadZipFile, OSError, ImportError) as exc:
        raise InputError(path, f"not a ceuspipe checkpoint (refused to load: {_reason(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or "config" not in data or "model" not in data:
        raise InputError(path, "not a ceuspipe checkpoint (missing format/config/model entries)")
    return data


def check_matches(path: str | Path, config: dict, variant: str, width: float) -> None:
    """Raise :class:`InputError` when the checkpoint's variant/width differ from those asked for."""
    cv, cw = config.get("variant"), config.get("width")
    if cv != variant or cw is None or abs(float(cw) - float(width)) > 1e-9:
        raise InputError(path, f"trained as variant {cv!r} width {cw}, asked for {variant!r} width {width}")


def _reason(exc: BaseException) -> str:
    """One short line from a torch.load failure (the line naming a refused global when there is one)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported global" in ln or "Unsupported operand" in ln:
            return ln.split("error:")[-1].strip()[:200]
        if "unsupported GLOBAL" in ln or "blocked" in ln:
            return ln[:200]
    return (lines[0] if lines else exc.__class__.__name__)[:200]


def _state_dict_problem(exc: BaseException) -> str:
    """Short description of a ``load_state_dict`` failure (counts and a first example)."""
    text = str(exc)
    import re

    missing = re.search(r'Missing key\(s\) in state_dict: ((?:"[^"]*"(?:, )?)+)', text)
    unexpected = re.search(r'Unexpected key\(s\) in state_dict: ((?:"[^"]*"(?:, )?)+)', text)
    shape = re.search(r"size mismatch for ([^:]+): (.*?)\.(?:\n|$)", text)
    parts = []
    if missing:
        keys = re.findall(r'"([^"]*)"', missing.group(1))
        parts.append(f"{len(keys)} weight(s) missing (e.g. {keys[0]})")
    if unexpected:
        keys = re.findall(r'"([^"]*)"', unexpected.group(1))
        parts.append(f"{len(keys)} unexpected (e.g. {keys[0]})")
    if shape:
        parts.append(f"shape mismatch for {shape.group(1)}")
    if not parts:
        parts.append(text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__)
    return ("; ".join(parts))[:300]


def rng_state() -> dict:
    """Current torch RNG states as tensors (CPU, and every CUDA device)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = [s.cpu() for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def load_model(checkpoint_path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Model in eval mode on ``device`` and its training config dict.

    The config includes at least ``variant``, ``width``, ``size``, ``threshold``.
    """
    from ceuspipe.model import build_model

    data = read_checkpoint(checkpoint_path)
    try:
        config = dict(data["config"])
        model = build_model(config["variant"], float(config["width"]), int(config.get("in_channels", 1)))
        model.load_state_dict(data["model"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        variant = data["config"].get("variant") if isinstance(data["config"], dict) else None
        raise InputError(checkpoint_path, f"weights do not fit a {variant!r} model "
                                          f"(saved from another variant or width?): {_state_dict_problem(exc)}") from None
    return model.to(device).eval(), config
