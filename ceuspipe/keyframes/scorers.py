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

from ceuspipe.registry import Registry

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


#: every scorer known, by name (:class:`ceuspipe.registry.Registry`)
SCORERS: Registry[Scorer] = Registry("key-frame scorer", ENTRY_POINT_GROUP, wrap=lambda name, fn: Scorer(name, fn))


def register_scorer(name: str, fn: ScoreFn | None = None, *, replace: bool = False):
    """Register ``fn`` under ``name`` (also usable as ``@register_scorer("name")``).
    Raises ``ValueError`` for a name already taken (unless ``replace``)."""
    return SCORERS.register(name, fn, replace=replace)


def scorer_names() -> list[str]:
    """Names of every scorer known (built in, registered, entry points), sorted."""
    return SCORERS.names()


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name``; ``ValueError`` naming the known ones otherwise."""
    return SCORERS.get(name)


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
