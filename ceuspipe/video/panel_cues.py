"""Which panel of a pair is CEUS: four cues, each a vote in ``[-1, 1]``, combined into
one decision with a confidence in ``[0, 1]`` (see :func:`decide_ceus`):

- colour: gold/hot colour maps are only used for contrast;
- stability: B-mode speckle is frozen in tissue (identical frames count as the
  most stable), contrast speckle is redrawn every frame;
- bolus: over time the CEUS panel's mean brightness rises and falls, the
  B-mode panel's stays nearly flat;
- darkness (weak): before contrast the CEUS panel is nearly black.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ceuspipe.video.panels import Box, PanelLayout

#: below this confidence the layout carries a warning (and resolve_layout logs it).
LOW_CONFIDENCE = 0.5
#: weight of each cue's vote in the decision (see decide_ceus).
CUE_WEIGHTS = {"colour": 1.0, "stability": 0.8, "bolus": 0.8, "darkness": 0.3}
#: temporal cues run on panels downscaled to about this many pixels per side.
_CUE_SIDE = 96
#: mean absolute grey change below which two downscaled crops count as the same frame.
_SAME = 0.05

@dataclass(frozen=True)
class _PanelSeries:
    """Per-panel measurements over the frames: ``means`` ``(n,)`` grey level,
    ``changes`` ``(n - 1,)`` mean absolute grey change between consecutive frames,
    ``responses`` ``(n - 1,)`` phase-correlation peak (nan: pair skipped),
    ``colour`` fraction of bright pixels that are coloured."""

    means: np.ndarray
    changes: np.ndarray
    responses: np.ndarray
    colour: float


def _colour_fraction(frames: list[np.ndarray], box: Box) -> float:
    """Fraction of the box's brighter pixels (max channel > 20) whose saturation
    (max - min channel) exceeds 24, over a few frames (every second row and column).
    Mode labels or an ROI circle in colour cover far less than a gold map does."""
    bright = coloured = 0
    for f in frames:
        sub = f[box.y: box.y + box.h: 2, box.x: box.x + box.w: 2]
        high = np.maximum(np.maximum(sub[..., 0], sub[..., 1]), sub[..., 2])
        low = np.minimum(np.minimum(sub[..., 0], sub[..., 1]), sub[..., 2])
        lit = high > 20
        bright += int(lit.sum())
        coloured += int((lit & ((high - low) > 24)).sum())
    return coloured / bright if bright >= 50 else 0.0


def _small_grey(frame: np.ndarray, box: Box, factor: int) -> np.ndarray:
    """The box of one RGB frame as grey (luma), downscaled ``factor`` times: ``(h', w') float32``."""
    crop = np.ascontiguousarray(frame[box.y: box.y + box.h, box.x: box.x + box.w])
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    if factor > 1:
        grey = cv2.resize(grey, (max(8, box.w // factor), max(8, box.h // factor)), interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32)


def _series(frames: list[np.ndarray], a: Box, b: Box) -> tuple[_PanelSeries, _PanelSeries]:
    """Measurements of both panels over ``frames`` (downscaled to ~96 px per side)."""
    factor = max(1, min(a.w, a.h, b.w, b.h) // _CUE_SIDE)
    out = []
    crops = {0: [], 1: []}
    for f in frames:
        crops[0].append(_small_grey(f, a, factor))
        crops[1].append(_small_grey(f, b, factor))
    changes = np.array([[float(np.abs(c[i + 1] - c[i]).mean()) for i in range(len(c) - 1)]
                        for c in (crops[0], crops[1])]).reshape(2, -1)
    # a pair where neither panel changes is a repeated screen (capture faster than the
    # acquisition): it says nothing about which panel is frozen tissue
    repeat = (changes[0] < _SAME) & (changes[1] < _SAME)
    colour_frames = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, min(8, len(frames)))]
    for k, box in enumerate((a, b)):
        c = crops[k]
        win = cv2.createHanningWindow((c[0].shape[1], c[0].shape[0]), cv2.CV_32F) if len(c) > 1 else None
        resp = np.full(len(c) - 1, np.nan)
        for i in range(len(c) - 1):
            if repeat[i]:
                continue
            if changes[k, i] < _SAME:
                resp[i] = 1.0  # identical (frozen) frames: the most stable there is
                continue
            p, q = c[i], c[i + 1]
            if p.std() < 0.5 or q.std() < 0.5:
                continue
            resp[i] = cv2.phaseCorrelate(p - p.mean(), q - q.mean(), win)[1]
        out.append(_PanelSeries(np.array([float(x.mean()) for x in c]), changes[k], resp,
                                _colour_fraction(colour_frames, box)))
    return out[0], out[1]


def _votes(sa: _PanelSeries, sb: _PanelSeries) -> dict:
    """Each cue's values for panels ``a`` and ``b`` and its vote in ``[-1, 1]``
    (positive: ``a`` is CEUS); cues that cannot be measured are left out."""
    cues = {}
    if max(sa.colour, sb.colour) >= 0.2:
        cues["colour"] = (sa.colour, sb.colour, float(np.clip((sa.colour - sb.colour) / 0.3, -1, 1)))
    ok = ~(np.isnan(sa.responses) | np.isnan(sb.responses))
    if ok.any():
        ra, rb = float(np.mean(sa.responses[ok])), float(np.mean(sb.responses[ok]))
        cues["stability"] = (ra, rb, float(np.clip((rb - ra) / 0.3, -1, 1)))
    if sa.means.size >= 4:
        span_a = float(np.percentile(sa.means, 95) - np.percentile(sa.means, 5))
        span_b = float(np.percentile(sb.means, 95) - np.percentile(sb.means, 5))
        cues["bolus"] = (span_a, span_b, float(np.clip((span_a - span_b) / max(span_a, span_b, 12.0), -1, 1)))
    low_a, low_b = float(np.percentile(sa.means, 10)), float(np.percentile(sb.means, 10))
    cues["darkness"] = (low_a, low_b, float(np.clip((low_b - low_a) / 40.0, -1, 1)))
    return cues


def decide_ceus(cues: dict) -> tuple[bool, float]:
    """Combine cue votes into ``(a_is_ceus, confidence)``.

    ``cues``: name -> ``(value_a, value_b, vote)`` as :func:`_votes` gives. The
    evidence is the weighted sum of the votes (:data:`CUE_WEIGHTS`: colour 1,
    stability and bolus 0.8 each, darkness 0.3); its sign decides and its size,
    capped at 1, is the confidence. Darkness alone never exceeds 0.3; a cue that
    disagrees lowers the confidence by its weighted vote.
    """
    evidence = sum(CUE_WEIGHTS[name] * vote for name, (_, _, vote) in cues.items())
    return evidence >= 0, float(min(1.0, abs(evidence)))


def _cue_report(cues: dict, a_is_ceus: bool) -> dict:
    """``cues`` as stored on a layout: per cue the CEUS and US values and the vote
    for the decision taken (positive: the cue agrees)."""
    out = {}
    for name, (va, vb, vote) in cues.items():
        ceus, us = (va, vb) if a_is_ceus else (vb, va)
        out[name] = {"ceus": round(float(ceus), 3), "us": round(float(us), 3),
                     "vote": round(float(vote if a_is_ceus else -vote), 3)}
    return out


def low_confidence_warning(confidence: float, cues: dict) -> str | None:
    """The one-line warning for a CEUS/US decision below :data:`LOW_CONFIDENCE`, else ``None``."""
    if confidence >= LOW_CONFIDENCE:
        return None
    used = ", ".join(sorted(cues)) or "no cue"
    return (f"CEUS panel told from B-mode with low confidence {confidence:.2f} (cues: {used}); "
            "check it and give --ceus-side left|right or --layout FILE if it is wrong")


def assign_panels(frames: Sequence[np.ndarray], a: Box, b: Box, width: int, height: int, *,
                  origin: str = "detected") -> PanelLayout:
    """Decide which of two panel boxes is CEUS from ``(H, W, 3) uint8`` frames
    (in time order); returns the layout with ``origin``, ``confidence``, ``cues``
    and ``warning`` set."""
    frames = list(frames)
    sa, sb = _series(frames, a, b)
    cues = _votes(sa, sb)
    a_is_ceus, confidence = decide_ceus(cues)
    ceus, us = (a, b) if a_is_ceus else (b, a)
    report = _cue_report(cues, a_is_ceus)
    return PanelLayout(ceus=ceus, us=us, frame_width=width, frame_height=height, origin=origin,
                       confidence=round(confidence, 3), cues=report,
                       warning=low_confidence_warning(confidence, cues))
