"""Checks that stage configs (frozen dataclasses) run on themselves in ``__post_init__``.

One source of truth for allowed values: the CLI, pipeline files and library
calls all build the same dataclass, so a bad value fails the same way
everywhere, as :class:`ConfigError` whose text starts with the key::

    device: must be auto, cpu, cuda or cuda:N, got 'gpu'

A pipeline file prefixes the stage (``nightly.toml: stages.segment.device: ...``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable

from ceuspipe.errors import CeuspipeError

_CUDA_N = re.compile(r"cuda:\d+")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


class ConfigError(CeuspipeError, ValueError):
    """A config value that is not allowed; ``key`` names it, ``str()`` is ``key: problem``."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """``value`` must be one of ``allowed`` (``None`` in ``allowed`` permits leaving it unset)."""
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(str(a) for a in allowed if a is not None)
        raise ConfigError(key, f"must be one of {shown}, got {value!r}")


def device(key: str, value: Any) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (availability is checked when the device is used)."""
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda") or _CUDA_N.fullmatch(value)):
        raise ConfigError(key, f"must be auto, cpu, cuda or cuda:N, got {value!r}")


def number(key: str, value: Any, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, integer: bool = False, optional: bool = False,
           unit: str = "") -> None:
    """A finite int/float (``integer``: an int) within the bounds; ``None`` when ``optional``."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
          and math.isfinite(value))
    bounds = []
    if minimum is not None:
        bounds.append(f">= {minimum:g}")
        ok = ok and value >= minimum
    if above is not None:
        bounds.append(f"> {above:g}")
        ok = ok and value > above
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
        ok = ok and value <= maximum
    if not ok:
        what = " ".join([kind, *bounds]) + (f" ({unit})" if unit else "")
        raise ConfigError(key, f"must be {what}, got {value!r}")


def path_or_none(key: str, value: Any) -> None:
    """A non-empty path string (or ``os.PathLike``), or ``None``."""
    import os

    if value is None:
        return
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"must be a path string, got {value!r}")


def build(cls, options: dict, *, exclude: Iterable[str] = ()):
    """``cls(**options)`` with unknown keys refused by name (the dataclass checks the values)."""
    known = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    for key in options:
        if key not in known:
            raise ConfigError(key, f"unknown option (known: {', '.join(sorted(known))})")
    try:
        return cls(**options)
    except TypeError as exc:  # a required field missing
        raise ConfigError(cls.__name__, str(exc)) from None
