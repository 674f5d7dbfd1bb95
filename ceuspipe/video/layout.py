"""Find the CEUS and the B-mode (US) panels of dual-amplitude frames.

No positions or sizes are assumed. Geometry: a max projection over the given
frames (low threshold, small closing, connected components); a region that is
two panels merged (touching panels, fans a few pixels apart, a thin separator
line in a narrow gap) is split at the deepest column (or row) valley between two
halves of similar size; each region is then tightened to its fan's or
rectangle's bounding box (rulers, text and separator lines beyond a darker line
are cut off). Side-by-side and top/bottom pairs are accepted.

Which panel is CEUS: four cues, each a vote in ``[-1, 1]``, combined into one
decision with a confidence in ``[0, 1]`` (see :func:`decide_ceus`):

- colour: gold/hot colour maps are only used for contrast;
- stability: B-mode speckle is frozen in tissue (identical frames count as the
  most stable), contrast speckle is redrawn every frame;
- bolus: over time the CEUS panel's mean brightness rises and falls, the
  B-mode panel's stays nearly flat;
- darkness (weak): before contrast the CEUS panel is nearly black.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.video.panels import Box, PanelLayout, load_layout

log = logging.getLogger("ceuspipe")

#: grey level above which a pixel counts as image content (black background is 0..2).
CONTENT_THRESHOLD = 4
#: smallest accepted panel side, as a fraction of the frame's smaller side.
MIN_PANEL_FRACTION = 0.15
_HINT = "give the layout with --layout FILE or --ceus-box/--us-box"
#: below this confidence the layout carries a warning (and resolve_layout logs it).
LOW_CONFIDENCE = 0.5
#: weight of each cue's vote in the decision (see decide_ceus).
CUE_WEIGHTS = {"colour": 1.0, "stability": 0.8, "bolus": 0.8, "darkness": 0.3}
#: at most this many frames (evenly spread) feed the temporal cues.
MAX_CUE_FRAMES = 64
#: temporal cues run on panels downscaled to about this many pixels per side.
_CUE_SIDE = 96
#: mean absolute grey change below which two downscaled crops count as the same frame.
_SAME = 0.05
#: swapped_panels_warning: a CEUS panel changing less than this (grey levels) is still...
SWAP_STILL = 0.5
#: ...while a US panel changing at least this much is not.
SWAP_MOVING = 1.5


class LayoutError(InputError):
    """The panels could not be found or the given layout does not fit the frames."""


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of True in a 1-D bool array ((0, 0) if none)."""
    best, start = (0, 0), None
    for i, v in enumerate(np.append(flags, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def _refine(content: np.ndarray, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Shrink a component's bounding box to the longest runs of well-filled columns and rows.

    A line counts as panel when its fraction of content pixels is at least 60% of
    the median line's, so sparse panels (faint CEUS noise) and text or rulers
    separated from the panel by a few empty lines are told apart.
    """
    for _ in range(3):
        sub = content[y: y + h, x: x + w]
        frac = sub.mean(axis=0)
        c0, c1 = _longest_run(frac >= 0.6 * float(np.median(frac)))
        if c1 <= c0:
            return x, y, 0, 0
        x, w = x + c0, c1 - c0
        frac = content[y: y + h, x: x + w].mean(axis=1)
        r0, r1 = _longest_run(frac >= 0.6 * float(np.median(frac)))
        if r1 <= r0:
            return x, y, 0, 0
        y, h = y + r0, r1 - r0
    return x, y, w, h


def _trim_ringing(grey_max: np.ndarray, x: int, y: int, w: int, h: int, max_px: int = 3
                  ) -> tuple[int, int, int, int]:
    """Drop up to ``max_px`` border rows/columns that are much darker than the panel
    (codec ringing just outside a bright panel edge)."""
    sub = grey_max[y: y + h, x: x + w].astype(np.float32)
    cols, rows = sub.mean(axis=0), sub.mean(axis=1)
    floor_c, floor_r = 0.4 * float(np.median(cols)), 0.4 * float(np.median(rows))
    c0, c1, r0, r1 = 0, w, 0, h
    while c0 < max_px and cols[c0] < floor_c:
        c0 += 1
    while w - c1 < max_px and cols[c1 - 1] < floor_c:
        c1 -= 1
    while r0 < max_px and rows[r0] < floor_r:
        r0 += 1
    while h - r1 < max_px and rows[r1 - 1] < floor_r:
        r1 -= 1
    return x + c0, y + r0, c1 - c0, r1 - r0


def _channel_max(image: np.ndarray) -> np.ndarray:
    """Per-pixel max over the last (RGB) axis; elementwise, much faster than ``max(axis=-1)``."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the runs of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _heaviest_run(counts: np.ndarray, eps: float) -> tuple[int, int]:
    """``(start, stop)`` of the run of ``counts > eps`` with the largest sum ((0, 0) if none)."""
    best, best_mass = (0, 0), -1.0
    for a, b in _runs(counts > eps):
        mass = float(counts[a:b].sum())
        if mass > best_mass:
            best, best_mass = (a, b), mass
    return best


def _tighten(bright: np.ndarray, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Shrink a box to the heaviest run of non-empty columns, then rows (three rounds).

    ``bright``: ``(H, W) bool`` content of the region at a brightness-adapted
    threshold. A line is empty when under 1% of it is content, so a fan's
    corner columns (a few content pixels) stay while a ruler, a text line or a
    separator line beyond an empty line is cut off.
    """
    for _ in range(3):
        cols = bright[y: y + h, x: x + w].sum(axis=0)
        c0, c1 = _heaviest_run(cols, 0.01 * h)
        if c1 <= c0:
            return x, y, 0, 0
        x, w = x + c0, c1 - c0
        rows = bright[y: y + h, x: x + w].sum(axis=1)
        r0, r1 = _heaviest_run(rows, 0.01 * w)
        if r1 <= r0:
            return x, y, 0, 0
        y, h = y + r0, r1 - r0
    return x, y, w, h


def _valley_split(profile: np.ndarray, min_side: int) -> int | None:
    """Index of the deepest valley between two similar halves of a 1-D brightness
    profile (a region that is two merged panels), or ``None`` when there is none.

    The valley is searched in the middle 40% and must be darker than 30% of the
    median of each half (the gap between panels, or the black corners between
    two fans that nearly touch); both halves must be at least ``min_side``.
    """
    n = profile.size
    lo, hi = max(min_side, int(0.3 * n)), min(n - min_side, int(np.ceil(0.7 * n)))
    if hi <= lo:
        return None
    k = lo + int(np.argmin(profile[lo:hi]))
    left, right = profile[int(0.05 * n): k], profile[k + 1: n - int(0.05 * n)]
    if left.size < 2 or right.size < 2:
        return None
    ref = min(float(np.median(left)), float(np.median(right)))
    return k if ref > 0 and profile[k] < 0.3 * ref else None


def _split_merged(grey_max: np.ndarray, own: np.ndarray, x: int, y: int, w: int, h: int,
                  min_side: int, depth: int = 0) -> list[tuple[int, int, int, int]]:
    """Split a component's box into panel boxes where it is two panels merged
    (side by side when wide, stacked when tall); returns ``[(x, y, w, h), ...]``."""
    if depth < 2:
        sub = grey_max[y: y + h, x: x + w].astype(np.float32) * own[y: y + h, x: x + w]
        if w >= 2 * min_side and w >= 1.2 * h:
            k = _valley_split(sub.mean(axis=0), min_side)
            if k is not None:
                return (_split_merged(grey_max, own, x, y, k, h, min_side, depth + 1)
                        + _split_merged(grey_max, own, x + k + 1, y, w - k - 1, h, min_side, depth + 1))
        if h >= 2 * min_side and h >= 1.2 * w:
            k = _valley_split(sub.mean(axis=1), min_side)
            if k is not None:
                return (_split_merged(grey_max, own, x, y, w, k, min_side, depth + 1)
                        + _split_merged(grey_max, own, x, y + k + 1, w, h - k - 1, min_side, depth + 1))
    return [(x, y, w, h)]


def find_panels(grey_max: np.ndarray) -> list[Box]:
    """Large content regions (rectangles or fans) of a ``(H, W) uint8`` max
    projection, largest first; text, rulers and bars are rejected by size and
    fill, merged neighbours are split (see the module docstring).

    A fan's box is its bounding box (the black corners are part of the box).
    """
    H, W = grey_max.shape
    content = grey_max > CONTENT_THRESHOLD
    closed = cv2.morphologyEx(content.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    min_side = max(24, int(MIN_PANEL_FRACTION * min(H, W)))
    boxes = []
    for i in range(1, n):
        x0, y0, w0, h0, _area = (int(v) for v in stats[i])
        if w0 < min_side or h0 < min_side:
            continue
        own = np.zeros((H, W), bool)
        own[y0: y0 + h0, x0: x0 + w0] = labels[y0: y0 + h0, x0: x0 + w0] == i
        own &= content
        vals = grey_max[own]
        # content at a brightness-adapted threshold: codec ringing and the faint
        # halo of a bright panel are not content, a dark CEUS panel's noise is
        level = max(CONTENT_THRESHOLD, 0.25 * float(np.median(vals))) if vals.size else CONTENT_THRESHOLD
        bright = own & (grey_max > level)
        for x, y, w, h in _split_merged(grey_max, own, x0, y0, w0, h0, min_side):
            x, y, w, h = _tighten(bright, x, y, w, h)
            if w < min_side or h < min_side:
                continue
            fill = float(closed[y: y + h, x: x + w].mean())
            if fill >= 0.85:  # a rectangle: cut touching text/rulers by line occupancy
                x, y, w, h = _refine(content, x, y, w, h)
                if w >= min_side and h >= min_side:
                    x, y, w, h = _trim_ringing(grey_max, x, y, w, h)
                fill = float(closed[y: y + h, x: x + w].mean()) if w and h else 0.0
            if w < min_side or h < min_side or not (1 / 4 <= w / h <= 4):
                continue
            if fill < 0.45:  # neither a filled rectangle nor a fan (a fan fills ~55-80%)
                continue
            boxes.append(Box(x, y, w, h))
    boxes.sort(key=lambda b: b.w * b.h, reverse=True)
    return boxes


def _pair(boxes: list[Box]) -> tuple[Box, Box] | None:
    """The two boxes of similar size (areas within 3x) that sit side by side (rows
    overlapping by half) or stacked (columns overlapping by half), largest pair first."""
    best, best_area = None, 0
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            big, small = max(a.w * a.h, b.w * b.h), min(a.w * a.h, b.w * b.h)
            if big > 3 * small:
                continue
            overlap_y = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
            overlap_x = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
            side = overlap_y >= 0.5 * min(a.h, b.h) and overlap_x <= 0
            stacked = overlap_x >= 0.5 * min(a.w, b.w) and overlap_y <= 0
            if (side or stacked) and big + small > best_area:
                best, best_area = (a, b) if (a.x, a.y) <= (b.x, b.y) else (b, a), big + small
    return best


# ----------------------------------------------------------------------------- cues


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


def _spread(n: int, k: int) -> list[int]:
    """``k`` (or ``n``) indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def detect_layout(frames: Sequence[np.ndarray], *, times_s: Sequence[float] | None = None,
                  source: str | os.PathLike | None = None) -> PanelLayout:
    """Find the CEUS and US panels in ``(H, W, 3) uint8`` RGB frames of one clip.

    Give up to ~64 frames spread over the clip's first minute (1 fps samples;
    ``times_s`` their times in seconds, used only to order them), or a handful
    from its first seconds: the CEUS panel may be nearly black before contrast
    arrives, and the bolus cue needs the minute. The geometry uses all frames
    (a max projection); the temporal cues at most :data:`MAX_CUE_FRAMES` of them,
    downscaled. Raises :class:`LayoutError` (an :class:`InputError` naming
    ``source``) unless two panels side by side or stacked are found. The result
    has ``origin="detected"``, ``confidence``, ``cues`` and, when the confidence
    is below :data:`LOW_CONFIDENCE`, ``warning``.
    """
    src = None if source is None else os.fspath(source)
    frames = _checked_frames(frames, src)
    if times_s is not None:
        times = list(times_s)
        if len(times) != len(frames):
            raise LayoutError(src, f"{len(times)} frame times for {len(frames)} frames")
        order = sorted(range(len(frames)), key=lambda i: float(times[i]))
        frames = [frames[i] for i in order]
    projection = frames[0].copy()
    for f in frames[1:]:
        cv2.max(projection, f, dst=projection)
    grey_max = _channel_max(projection)
    panels = find_panels(grey_max)
    pair = _pair(panels)
    if pair is None:
        n = min(len(panels), 1)
        raise LayoutError(src, f"found {n} imaging panel{'s' if n != 1 else ''}, expected 2 "
                               f"(CEUS and B-mode); {_HINT}")
    if len(panels) > 2:
        log.debug("%s: %d candidate panels, using the best-matching pair", src or "frames", len(panels))
    height, width = grey_max.shape
    cue_frames = [frames[i] for i in _spread(len(frames), MAX_CUE_FRAMES)]
    layout = assign_panels(cue_frames, pair[0], pair[1], width, height)
    log.debug("%s: CEUS %s, US %s (confidence %.2f, cues %s)", src or "frames", layout.ceus,
              layout.us, layout.confidence, layout.cues)
    return layout


def _checked_frames(frames: Sequence[np.ndarray], src: str | None) -> list[np.ndarray]:
    """The frames as a list of ``(H, W, 3) uint8`` arrays of one size (grey expanded)."""
    out = []
    for f in frames:
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, axis=2)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise LayoutError(src, f"frames must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
        if out and f.shape != out[0].shape:
            raise LayoutError(src, f"frames differ in size: {out[0].shape} and {f.shape}")
        out.append(f)
    if not out:
        raise LayoutError(src, "no frames to find the panel layout in")
    return out


def swapped_panels_warning(ceus_changes, us_changes) -> str | None:
    """A one-line warning when the panels look swapped, else ``None``.

    ``ceus_changes``, ``us_changes``: per-sample mean absolute grey change of the
    chosen CEUS and US panels over the clip (e.g. the key-frame scores), grey
    levels. Warns when the CEUS panel barely changes (median under
    :data:`SWAP_STILL` grey levels) while the US panel does (median at least
    :data:`SWAP_MOVING` and 4x the CEUS one): contrast speckle changes every
    frame, frozen B-mode does not.
    """
    c = np.asarray(ceus_changes, dtype=np.float64).ravel()
    u = np.asarray(us_changes, dtype=np.float64).ravel()
    c, u = c[np.isfinite(c)], u[np.isfinite(u)]
    if c.size == 0 or u.size == 0:
        return None
    mc, mu = float(np.median(c)), float(np.median(u))
    if mc < SWAP_STILL and mu >= SWAP_MOVING and mu >= 4 * mc:
        return (f"the CEUS panel barely changes (median change {mc:.2f} grey levels) while the B-mode "
                f"panel does ({mu:.2f}): the panels look swapped; give --ceus-side left|right "
                "or --layout FILE")
    return None


def layout_warnings(path, layout, ceus_changes, us_changes) -> list[str]:
    """One-line warnings about a clip's panel layout, each naming ``path``: detection
    was unsure (:attr:`PanelLayout.warning`), or the chosen CEUS panel barely changed
    over the clip while the B-mode one did (panels swapped?). Each is logged once."""
    lines = []
    if layout.warning:
        lines.append(f"{path}: {layout.warning}")  # already logged by the layout step
    swapped = swapped_panels_warning(ceus_changes, us_changes)
    if swapped:
        lines.append(f"{path}: {swapped}")
        log.warning("%s", lines[-1])
    return lines


def _box(value, name: str, src: str | None) -> Box:
    if isinstance(value, Box):
        return value
    try:
        x, y, w, h = (int(v) for v in value)
        return Box(x, y, w, h)
    except (TypeError, ValueError):
        raise LayoutError(src, f"{name} must be x,y,w,h with w, h > 0 (got {value!r})") from None


def check_layout(layout: PanelLayout, width: int, height: int, source: str | None = None) -> PanelLayout:
    """Raise :class:`LayoutError` unless both boxes fit a ``width`` x ``height`` frame and do not overlap."""
    if (layout.frame_width, layout.frame_height) != (width, height):
        raise LayoutError(source, f"layout is for {layout.frame_width}x{layout.frame_height} frames, "
                                  f"the video is {width}x{height}")
    for name, b in (("CEUS", layout.ceus), ("US", layout.us)):
        if not b.fits(width, height):
            raise LayoutError(source, f"{name} box {b.as_list()} does not fit the {width}x{height} frame")
    c, u = layout.ceus, layout.us
    if c.x < u.x + u.w and u.x < c.x + c.w and c.y < u.y + u.h and u.y < c.y + c.h:
        raise LayoutError(source, f"CEUS box {c.as_list()} and US box {u.as_list()} overlap")
    return layout


def regions_layout(frames: Sequence[np.ndarray], regions: Sequence, *,
                   source: str | None = None) -> tuple[PanelLayout | None, str]:
    """The layout from a DICOM Sequence of Ultrasound Regions, or ``(None, why not)``.

    ``regions``: objects with ``box`` (:class:`Box`), ``spatial_format``,
    ``data_type`` and ``pixel_size_mm`` (see
    :func:`ceuspipe.video.dicom.read_ultrasound_regions`). The two largest
    2-D image regions (spatial format 1, data type tissue or unknown) are the
    panels when they fit the frame, do not overlap, are of similar size and hold
    image content (at least 30% of each box above the background in a max
    projection of ``frames``); which one is CEUS is still told by the cues. The
    returned reason is one line naming region numbers and boxes only.
    """
    frames = _checked_frames(frames, source)
    height, width = frames[0].shape[:2]
    usable = [(i + 1, r) for i, r in enumerate(regions)
              if r.box is not None and r.spatial_format in (None, 1) and r.data_type in (None, 0, 1, 2)]
    if len(usable) < 2:
        return None, f"{len(regions)} ultrasound region(s), {len(usable)} of them 2-D images; need 2"
    usable.sort(key=lambda ir: ir[1].box.w * ir[1].box.h, reverse=True)
    (ia, ra), (ib, rb) = usable[:2]
    a, b = ra.box, rb.box
    for i, box in ((ia, a), (ib, b)):
        if not box.fits(width, height):
            return None, f"region {i} box {box.as_list()} does not fit the {width}x{height} frame"
    if a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h:
        return None, f"regions {ia} and {ib} overlap"
    if max(a.w * a.h, b.w * b.h) > 3 * min(a.w * a.h, b.w * b.h):
        return None, f"regions {ia} and {ib} differ more than 3x in area"
    projection = frames[0].copy()
    for f in frames[1:]:
        cv2.max(projection, f, dst=projection)
    content = _channel_max(projection) > CONTENT_THRESHOLD
    for i, box in ((ia, a), (ib, b)):
        filled = float(content[box.y: box.y + box.h, box.x: box.x + box.w].mean())
        if filled < 0.3:
            return None, f"region {i} box {box.as_list()} is mostly background ({filled:.0%} content)"
    if (a.x, a.y) > (b.x, b.y):
        (ia, ra, a), (ib, rb, b) = (ib, rb, b), (ia, ra, a)
    cue_frames = [frames[i] for i in _spread(len(frames), MAX_CUE_FRAMES)]
    layout = assign_panels(cue_frames, a, b, width, height, origin="dicom-regions")
    ceus_region = ra if layout.ceus == a else rb
    cues = dict(layout.cues)
    cues["dicom_regions"] = f"regions {min(ia, ib)} and {max(ia, ib)} used"
    return replace(layout, cues=cues, pixel_size_mm=getattr(ceus_region, "pixel_size_mm", None)), "used"


def resolve_layout(frames: Sequence[np.ndarray], *, layout_file: str | os.PathLike | None = None,
                   ceus_box=None, us_box=None, ceus_side: str | None = None,
                   source: str | os.PathLike | None = None, times_s: Sequence[float] | None = None,
                   regions: Sequence | None = None, log_warning: bool = True) -> PanelLayout:
    """The panel layout of a clip: from ``layout_file`` (JSON, see
    :func:`ceuspipe.video.panels.load_layout`), else from ``ceus_box`` and ``us_box``
    (``Box`` or ``(x, y, w, h)`` in full-frame pixels, both required), else from
    the DICOM ``regions`` (:func:`regions_layout`) when they are given and fit the
    pixels, else detected (:func:`detect_layout`; ``times_s`` the frames' times in
    seconds). Why regions were not used is recorded in ``cues["dicom_regions"]``.

    ``ceus_side`` then forces which panel is CEUS: ``"left"``/``"right"``
    (for stacked panels ``"top"``/``"bottom"``, or ``"left"`` for the top one and
    ``"right"`` for the bottom one). ``frames``: at least one ``(H, W, 3)`` frame
    (for its size; all of them for detection). The result's ``origin`` says
    where it came from; a low-confidence ``warning`` is also logged (unless not
    ``log_warning``: a tentative attempt that more frames may settle).
    """
    src = None if source is None else os.fspath(source)
    frames = list(frames)
    if not frames:
        raise LayoutError(src, "no frames to check the panel layout against")
    height, width = np.asarray(frames[0]).shape[:2]
    if ceus_side not in (None, "left", "right", "top", "bottom"):
        raise LayoutError(src, f"CEUS side must be 'left' or 'right', not {ceus_side!r}")
    if layout_file is not None:
        if ceus_box is not None or us_box is not None:
            raise LayoutError(src, "give either a layout file or --ceus-box/--us-box, not both")
        layout = replace(load_layout(layout_file), origin="layout-file", warning=None)
        src_check = os.fspath(layout_file)
    elif ceus_box is not None or us_box is not None:
        if ceus_box is None or us_box is None:
            raise LayoutError(src, "give both --ceus-box and --us-box")
        layout = PanelLayout(_box(ceus_box, "CEUS box", src), _box(us_box, "US box", src), width, height,
                             origin="boxes")
        src_check = src
    else:
        layout, why = None, "absent"
        if regions:
            layout, why = regions_layout(frames, regions, source=src)
            if layout is None:
                log.info("%s: DICOM ultrasound regions not used: %s", src or "frames", why)
        if layout is None:
            layout = detect_layout(frames, times_s=times_s, source=src)
            if regions is not None:
                layout = replace(layout, cues={**layout.cues, "dicom_regions": why})
        src_check = src
    check_layout(layout, width, height, src_check)
    if ceus_side is not None:
        want = ceus_side
        if layout.stacked and want in ("left", "right"):
            want = "top" if want == "left" else "bottom"
        if layout.ceus_side != want:
            layout = layout.swapped()
        layout = replace(layout, warning=None, cues={**layout.cues, "ceus_side": f"given ({ceus_side})"})
    if layout.warning and log_warning:
        log.warning("%s: %s", src or "frames", layout.warning)
    return layout


@dataclass(frozen=True)
class LayoutOptions:
    """Panel-layout settings shared by every command that reads clips.

    ``layout_file`` / ``ceus_box`` + ``us_box`` / ``ceus_side`` override the
    automatic detection. Detection looks at 1 fps samples of the first
    ``layout_window_s`` seconds of each clip, at most ``layout_samples`` of them
    spread evenly, and stops early once it is sure (see
    :mod:`ceuspipe.video.clip_stream`). Stage configs inherit these fields; the
    values are checked here, for the CLI, pipeline files and library calls alike.
    """

    layout_file: str | None = None
    ceus_box: Box | None = None
    us_box: Box | None = None
    ceus_side: str | None = None
    layout_samples: int = 64
    layout_window_s: float = 60.0

    def __post_init__(self) -> None:
        from ceuspipe import configs

        configs.path_or_none("layout_file", self.layout_file)
        for key in ("ceus_box", "us_box"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Box):
                try:
                    object.__setattr__(self, key, Box(*(int(v) for v in value)))
                except (TypeError, ValueError):
                    raise configs.ConfigError(key, f"must be [x, y, w, h] in full-frame pixels with w, h > 0, "
                                                   f"got {value!r}") from None
        if (self.ceus_box is None) != (self.us_box is None):
            raise configs.ConfigError("ceus_box", "ceus_box and us_box go together")
        if self.layout_file is not None and self.ceus_box is not None:
            raise configs.ConfigError("layout_file", "give either a layout file or ceus_box/us_box, not both")
        configs.choice("ceus_side", self.ceus_side, (None, "left", "right", "top", "bottom"))
        configs.number("layout_samples", self.layout_samples, minimum=1, integer=True)
        configs.number("layout_window_s", self.layout_window_s, above=0, unit="seconds")

    def resolve(self, frames: Sequence[np.ndarray], source: str | os.PathLike | None = None, *,
                times_s: Sequence[float] | None = None, regions: Sequence | None = None,
                log_warning: bool = True) -> PanelLayout:
        """:func:`resolve_layout` with these settings (``times_s``: the frames' times
        in seconds; ``regions``: a DICOM file's ultrasound regions)."""
        return resolve_layout(frames, layout_file=self.layout_file, ceus_box=self.ceus_box,
                              us_box=self.us_box, ceus_side=self.ceus_side, source=source,
                              times_s=times_s, regions=regions, log_warning=log_warning)
