"""Key-frame scorers: how much a 1 fps sample of the CEUS panel differs from the one before.

A scorer is a function ``score(gray, previous) -> float``: ``gray`` and ``previous``
are ``(H, W) uint8`` grey CEUS panels of samples ``n`` and ``n - 1`` (``previous`` is
``None`` for sample 0, which must score 0.0); larger means more worth annotating.
Scorers are looked up by name:

- built in: ``grey-change``, the paper's (Meng et al., ISBI 2022), the default;
- registered in code: :func:`register_scorer` (``@register_scorer("name")``);
- from other packages: an entry point in the group ``ceuspipe.keyframe_scorers``
  (``name = "package.module:function"``), loaded on first lookup.

The name of the scorer used is recorded in ``keyframes.json``. A scorer registered in
code exists in the process that registered it: run several exams in parallel
(``--jobs``) only with built-in or entry-point scorers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

#: the entry-point group other packages register scorers under
ENTRY_POINT_GROUP = "ceuspipe.keyframe_scorers"
#: the scorer of the paper, used unless another is named
DEFAULT_SCORER = "grey-change"

ScoreFn = Callable[[np.ndarray, "np.ndarray | None"], float]


@dataclass(frozen=True)
class Scorer:
    """A named scorer: ``fn(gray, previous) -> float`` (see the module docstring)."""

    name: str
    fn: ScoreFn

    def __call__(self, gray: np.ndarray, previous: np.ndarray | None) -> float:
        return float(self.fn(gray, previous))


_SCORERS: dict[str, Scorer] = {}
_entry_points_loaded = False


def register_scorer(name: str, fn: ScoreFn | None = None, *, replace: bool = False):
    """Register ``fn`` under ``name`` (also usable as ``@register_scorer("name")``).
    Raises ``ValueError`` for a name already taken (unless ``replace``)."""
    if fn is None:
        return lambda f: register_scorer(name, f, replace=replace)
    if not name or not isinstance(name, str):
        raise ValueError(f"a scorer name must be a non-empty string, not {name!r}")
    if name in _SCORERS and not replace:
        raise ValueError(f"a key-frame scorer named {name!r} is already registered")
    _SCORERS[name] = Scorer(name, fn)
    return fn


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _SCORERS:
            register_scorer(ep.name, ep.load())


def scorer_names() -> list[str]:
    """Names of every scorer known (built in, registered, entry points), sorted."""
    _load_entry_points()
    return sorted(_SCORERS)


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in _SCORERS:
        _load_entry_points()
    try:
        return _SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown key-frame scorer {name!r}; known: {', '.join(scorer_names())}") from None


@register_scorer(DEFAULT_SCORER)
def grey_change(gray: np.ndarray, previous: np.ndarray | None) -> float:
    """Mean absolute grey-level change from the previous sample (the paper's)."""
    if previous is None:
        return 0.0
    return float(cv2.absdiff(gray, previous).mean(dtype=np.float64))


def change_scores(grays: Sequence[np.ndarray], scorer: str = DEFAULT_SCORER) -> np.ndarray:
    """Scores ``(n,) float64`` of a sequence of ``(H, W)`` uint8 CEUS panels (first is 0)."""
    fn = get_scorer(scorer)
    out = np.zeros(len(grays), dtype=np.float64)
    for n in range(1, len(grays)):
        out[n] = fn(grays[n], grays[n - 1])
    return out
