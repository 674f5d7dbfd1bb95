"""Candidate imaging panels of a scanner screen, from projections of a clip's frames.

No positions or sizes are assumed. A max projection over the frames (low
threshold, small closing, connected components) gives regions of image content;
a region that is two panels merged is split (see :func:`split_points`); each
part is then cut to its own extent (see :func:`panel_extent`), so grey-scale
bars, ruler ticks, body marks and labels drawn across a panel edge do not move
the box, and a trapezoid's or a fan's box is its bounding box, black corners
included.

Boxes found here are one panel each; whether two of them are the two panels of
one dual display, and of one size, is decided in :mod:`ceuspipe.video.panel_pair`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ceuspipe.video.panels import Box

#: grey level above which a pixel counts as image content (black background is 0..2).
CONTENT_THRESHOLD = 4
#: smallest accepted panel side, as a fraction of the frame's smaller side.
MIN_PANEL_FRACTION = 0.15
#: at most this many frames (evenly spread) feed the mean and change projections.
EVIDENCE_FRAMES = 16
#: a line beyond a failing edge line may still be panel when the content past it is
#: at least this fraction of the content inside (a dark band across a panel).
_BEYOND_FRACTION = 0.10
#: a seam between touching panels steps at least this many times the median column step.
_SEAM_RATIO = 3.0
#: an edge line may hold this many content pixels fewer than the line inside it (the
#: outermost lines of a fan's or trapezoid's slanted side).
_SLANT_PX = 4


@dataclass(frozen=True)
class Projections:
    """What the geometry looks at, all ``(H, W)``: ``grey_max`` uint8, the per-pixel max
    over all frames and channels; ``grey_mean`` float32, the mean grey level of up to
    :data:`EVIDENCE_FRAMES` frames; ``change`` float32, their mean absolute grey change
    between consecutive ones (``None`` for a single frame)."""

    grey_max: np.ndarray
    grey_mean: np.ndarray
    change: np.ndarray | None

    @classmethod
    def of(cls, frames: Sequence[np.ndarray]) -> "Projections":
        """Projections of ``(H, W, 3) uint8`` RGB frames (in time order)."""
        projection = frames[0].copy()
        for f in frames[1:]:
            cv2.max(projection, f, dst=projection)
        pick = spread(len(frames), EVIDENCE_FRAMES)
        greys = [cv2.cvtColor(np.ascontiguousarray(frames[i]), cv2.COLOR_RGB2GRAY).astype(np.float32)
                 for i in pick]
        mean = np.mean(greys, axis=0, dtype=np.float32)
        change = None
        if len(greys) > 1:
            change = np.mean([cv2.absdiff(p, q) for p, q in zip(greys, greys[1:])], axis=0, dtype=np.float32)
        return cls(channel_max(projection), mean, change)

    def transposed(self) -> "Projections":
        """The same projections with rows and columns exchanged (stacked panels)."""
        return Projections(self.grey_max.T, self.grey_mean.T, None if self.change is None else self.change.T)


def channel_max(image: np.ndarray) -> np.ndarray:
    """Per-pixel max over the last (RGB) axis; elementwise, much faster than ``max(axis=-1)``."""
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])


def spread(n: int, k: int) -> list[int]:
    """``k`` (or ``n``) indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def min_panel_side(height: int, width: int) -> int:
    """Smallest accepted panel side (px) on a ``width`` x ``height`` screen."""
    return max(24, int(MIN_PANEL_FRACTION * min(height, width)))


# ----------------------------------------------------------------------------- runs of lines


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of True in a 1-D bool array ((0, 0) if none)."""
    best = (0, 0)
    for a, b in _runs(flags):
        if b - a > best[1] - best[0]:
            best = (a, b)
    return best


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


def _tighten(bright: np.ndarray, x: int, y: int, w: int, h: int, eps: float = 0.01
             ) -> tuple[int, int, int, int]:
    """Shrink a box to the heaviest run of non-empty columns, then rows (three rounds).

    ``bright``: ``(H, W) bool`` content of the region. A line is empty when under 1%
    of it is content, so a fan's corner columns (a few content pixels) stay while a
    ruler, a text line or a separator line beyond an empty line is cut off.
    """
    for _ in range(3):
        cols = bright[y: y + h, x: x + w].sum(axis=0)
        c0, c1 = _heaviest_run(cols, eps * h)
        if c1 <= c0:
            return x, y, 0, 0
        x, w = x + c0, c1 - c0
        rows = bright[y: y + h, x: x + w].sum(axis=1)
        r0, r1 = _heaviest_run(rows, eps * w)
        if r1 <= r0:
            return x, y, 0, 0
        y, h = y + r0, r1 - r0
    return x, y, w, h


def _walk_out(mask: np.ndarray, support: np.ndarray, start: int) -> int:
    """Index one past the last row of ``mask`` ``(n, m) bool`` that still belongs to the
    panel, walking from row ``start`` towards row ``n - 1``; ``support`` is ``mask``
    closed (sparse content made solid), against which touching is measured.

    A row belongs to the panel when it holds at least a quarter of the previous row's
    content (or at most :data:`_SLANT_PX` pixels or a tenth of the row length less: a
    fan's top arc) and at least half of its content pixels touch content in the previous row
    (one pixel sideways allowed): a trapezoid's or fan's slanted sides pass, ruler
    ticks beside an edge (touching it at one row at most), a body mark or a label
    hanging over it (a few pixels in a full row) do not. A failing row is taken as
    the edge only when the content beyond it is under :data:`_BEYOND_FRACTION` of the
    content before it (a dark band across a panel is not an edge).
    """
    n = mask.shape[0]
    if start + 1 >= n:
        return n
    slack = max(_SLANT_PX, 0.1 * mask.shape[1])
    counts = mask.sum(axis=1).astype(np.int64)
    tail = np.cumsum(counts[::-1])[::-1]  # content from row i on
    head = np.concatenate(([0], np.cumsum(counts)))  # content before row i
    near = support.copy()  # support one pixel wider on each side
    near[:, 1:] |= support[:, :-1]
    near[:, :-1] |= support[:, 1:]
    rows = np.arange(n)
    # the row each row is compared with: the last non-empty one before it (the start row at least)
    last = np.where((counts > 0) & (rows >= start), rows, start)
    prev = np.concatenate(([start], np.maximum.accumulate(last)[:-1]))[start + 1:]
    i = rows[start + 1:]
    touching = (mask[i] & near[prev]).sum(axis=1)
    ok = (counts[i] > 0) & ((counts[i] >= 0.25 * counts[prev]) | (counts[prev] - counts[i] <= slack)) \
        & (touching >= 0.5 * counts[i])
    edge = ~ok & (tail[i] < _BEYOND_FRACTION * np.maximum(1, head[i]))
    hits = np.flatnonzero(edge)
    return int(i[hits[0]]) if hits.size else n


def _fullest_central(counts: np.ndarray) -> int:
    """Index of the fullest line in the middle half of ``counts`` (a walk starts inside
    the panel, not in a full header band at the window's edge)."""
    n = counts.size
    a, b = n // 4, max(n // 4 + 1, (3 * n + 3) // 4)
    return a + int(np.argmax(counts[a:b]))


def panel_extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the panel in ``mask`` ``(h, w) bool`` (content of one panel's
    region), walking out from the fullest central row and column to each edge (see
    :func:`_walk_out`), twice so that rows are measured within the final columns.
    Lines are counted on ``mask`` as it is (codec noise in a gap stays sparse) and
    touching is measured on ``mask`` closed (a dark panel's sparse noise is solid)."""
    # closed on a zero-padded copy: content neither grows into the edge lines nor is
    # eroded from them
    closed = cv2.morphologyEx(np.pad(mask.astype(np.uint8), 2), cv2.MORPH_CLOSE,
                              np.ones((3, 3), np.uint8))[2:-2, 2:-2].astype(bool)
    x0, y0, y1, x1 = 0, 0, mask.shape[0], mask.shape[1]
    for _ in range(2):
        sub, sup = mask[y0:y1, x0:x1], closed[y0:y1, x0:x1]
        if not sub.any():
            return None
        cs, rs = _fullest_central(sup.sum(axis=0)), _fullest_central(sup.sum(axis=1))
        right = _walk_out(sub.T, sup.T, cs)
        left = sub.shape[1] - _walk_out(sub.T[::-1], sup.T[::-1], sub.shape[1] - 1 - cs)
        bottom = _walk_out(sub, sup, rs)
        top = sub.shape[0] - _walk_out(sub[::-1], sup[::-1], sub.shape[0] - 1 - rs)
        x0, x1, y0, y1 = x0 + left, x0 + right, y0 + top, y0 + bottom
    return x0, y0, x1 - x0, y1 - y0


def _well_filled_run(frac: np.ndarray) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of lines whose content fraction ``frac`` is at
    least 60% of the median line's, widened back on a side whose cut-off lines hold
    :data:`_BEYOND_FRACTION` or more of the content (a dark band inside a panel, not
    text or a ruler beside it)."""
    a, b = _longest_run(frac >= 0.6 * float(np.median(frac)))
    if b <= a:
        return a, b
    inside = float(frac[a:b].sum())
    if float(frac[:a].sum()) >= _BEYOND_FRACTION * inside:
        a = 0
    if float(frac[b:].sum()) >= _BEYOND_FRACTION * inside:
        b = frac.size
    return a, b


def _refine(content: np.ndarray, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Shrink a rectangle's box to the runs of well-filled columns and rows
    (:func:`_well_filled_run`), so sparse panels (faint CEUS noise) and text or
    rulers touching the panel are told apart."""
    for _ in range(3):
        c0, c1 = _well_filled_run(content[y: y + h, x: x + w].mean(axis=0))
        if c1 <= c0:
            return x, y, 0, 0
        x, w = x + c0, c1 - c0
        r0, r1 = _well_filled_run(content[y: y + h, x: x + w].mean(axis=1))
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


# ----------------------------------------------------------------------------- splitting


def _valley_split(profile: np.ndarray, min_side: int) -> int | None:
    """Index of the deepest valley between two similar halves of a 1-D profile
    (brightness or content fraction of a region that is two merged panels), or
    ``None`` when there is none.

    The valley is searched in the middle 40% and must be under 30% of the median
    of each half (the gap between panels, or the black corners between two fans or
    trapezoids that nearly touch); both halves must be at least ``min_side``.
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


def _step_profile(image: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Mean absolute difference between neighbouring columns of ``image`` ``(h, w)``
    over the rows where either column is content (``own``): ``(w - 1,)``, entry ``j``
    between columns ``j`` and ``j + 1``; 0 where fewer than 3 rows count."""
    valid = own[:, 1:] | own[:, :-1]
    count = valid.sum(axis=0)
    step = (np.abs(np.diff(image, axis=1)) * valid).sum(axis=0)
    return np.where(count >= 3, step / np.maximum(count, 1), 0.0)


def _seam_split(images: list[np.ndarray], own: np.ndarray, min_side: int) -> int | None:
    """First column of the second panel where two panels touch with no dark column
    between them, or ``None``.

    ``images``: ``(h, w)`` views of the region (mean grey level, temporal change); a
    seam is a column boundary in the middle 40% where one of them steps by at least
    :data:`_SEAM_RATIO` times its median step and 2.5x any other step within 8 columns (the neighbouring
    boundary excepted: a seam may be softened over two): two unrelated images, or a
    bright frozen B-mode next to a dark or flickering CEUS panel.
    """
    n = own.shape[1]
    lo, hi = max(min_side, int(0.3 * n)), min(n - min_side, int(np.ceil(0.7 * n)))
    best, best_ratio = None, 0.0
    for image in images:
        prof = _step_profile(image, own)
        base = float(np.median(prof[prof > 0])) if (prof > 0).any() else 0.0
        if hi <= lo or base <= 0:
            continue
        j = lo - 1 + int(np.argmax(prof[lo - 1: hi - 1]))
        others = np.concatenate((prof[max(0, j - 8): max(0, j - 1)], prof[j + 2: j + 9]))
        ratio = float(prof[j]) / base
        if ratio >= _SEAM_RATIO and (others.size == 0 or prof[j] >= 2.5 * float(others.max())) and ratio > best_ratio:
            best, best_ratio = j + 1, ratio
    return best


def split_points(pr: Projections, own: np.ndarray, x: int, y: int, w: int, h: int,
                 min_side: int) -> tuple[int, int, str] | None:
    """Where a region (box ``x, y, w, h``; ``own`` its content, full-frame ``(H, W) bool``)
    is two panels side by side: ``(end of the first, start of the second, how)`` in
    region columns, ``how`` ``"valley"`` (a darker or emptier column band between them)
    or ``"seam"`` (touching, see :func:`_seam_split`); ``None`` when it is one panel."""
    sub_own = own[y: y + h, x: x + w]
    bright = pr.grey_max[y: y + h, x: x + w].astype(np.float32) * sub_own
    for profile in (bright.mean(axis=0), sub_own.mean(axis=0)):
        k = _valley_split(profile, min_side)
        if k is not None:
            return k, k + 1, "valley"
    images = [pr.grey_mean[y: y + h, x: x + w]]
    if pr.change is not None:
        images.append(pr.change[y: y + h, x: x + w])
    k = _seam_split(images, sub_own, min_side)
    return None if k is None else (k, k, "seam")


def _split_merged(pr: Projections, own: np.ndarray, x: int, y: int, w: int, h: int, min_side: int,
                  axis: str | None = None, depth: int = 0) -> list[tuple[int, int, int, int, str | None]]:
    """Split a component's box into panel boxes where it is two panels merged (side by
    side when wide, stacked when tall): ``[(x, y, w, h, how), ...]``, ``how`` as in
    :func:`split_points` (``None``: not split). Parts are split again only along the
    same ``axis`` (three panels in a row), never across it: a dark band inside one
    half (an anechoic bladder) is not a second row of panels."""
    if depth < 2:
        if axis in (None, "x") and w >= 2 * min_side and w >= 1.2 * h:
            cut = split_points(pr, own, x, y, w, h, min_side)
            if cut is not None:
                a, b, how = cut
                return [p[:4] + (p[4] or how,) for p in
                        _split_merged(pr, own, x, y, a, h, min_side, "x", depth + 1)
                        + _split_merged(pr, own, x + b, y, w - b, h, min_side, "x", depth + 1)]
        if axis in (None, "y") and h >= 2 * min_side and h >= 1.2 * w:
            cut = split_points(pr.transposed(), own.T, y, x, h, w, min_side)
            if cut is not None:
                a, b, how = cut
                return [p[:4] + (p[4] or how,) for p in
                        _split_merged(pr, own, x, y, w, a, min_side, "y", depth + 1)
                        + _split_merged(pr, own, x, y + b, w, h - b, min_side, "y", depth + 1)]
    return [(x, y, w, h, None)]


# ----------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class Candidate:
    """One panel found on the screen: ``box``; ``fill``, the fraction of the box that
    is content (closed); ``split``, how it was cut from a merged region (``"valley"``,
    ``"seam"``) or ``None``; ``level``, the grey level above which its pixels counted
    as content (see :func:`content_level`: a bright panel's edges stand out from codec
    noise, a dark one's do not)."""

    box: Box
    fill: float
    split: str | None = None
    level: float = CONTENT_THRESHOLD


def content_level(grey_max: np.ndarray, where: np.ndarray) -> float:
    """Grey level above which a pixel of a panel region counts as its content: a quarter
    of the region's median content level, at least :data:`CONTENT_THRESHOLD`, so codec
    ringing and a bright panel's faint halo are not content while a dark CEUS panel's
    noise is (each panel of a merged region gets its own level)."""
    vals = grey_max[where]
    return max(CONTENT_THRESHOLD, 0.25 * float(np.median(vals))) if vals.size else CONTENT_THRESHOLD


def _panel_box(pr: Projections, own: np.ndarray, closed: np.ndarray, content: np.ndarray,
               part: tuple[int, int, int, int], min_side: int) -> tuple[Box, float, float] | None:
    """The panel box inside one part of a component, with its fill and content level,
    or ``None``."""
    x, y, w, h = part
    region = np.zeros_like(own)
    region[y: y + h, x: x + w] = own[y: y + h, x: x + w]
    level = content_level(pr.grey_max, region)
    bright = region & (pr.grey_max > level)
    x, y, w, h = _tighten(bright, x, y, w, h)
    if w < min_side or h < min_side:
        return None
    # the outermost lines of a fan (a pixel or two) count as empty above: give them back
    # to the walk, which decides where the panel ends
    px0, py0, pw, ph = part
    x0, y0 = max(px0, x - _SLANT_PX), max(py0, y - _SLANT_PX)
    x1, y1 = min(px0 + pw, x + w + _SLANT_PX), min(py0 + ph, y + h + _SLANT_PX)
    x, y, w, h = x0, y0, x1 - x0, y1 - y0
    extent = panel_extent(bright[y: y + h, x: x + w])
    if extent is None:
        return None
    x, y, w, h = x + extent[0], y + extent[1], extent[2], extent[3]
    if w < min_side or h < min_side:
        return None
    fill = float(closed[y: y + h, x: x + w].mean())
    if fill >= 0.85:  # a rectangle: cut touching text/rulers by line occupancy
        x, y, w, h = _refine(content, x, y, w, h)
        if w >= min_side and h >= min_side:
            x, y, w, h = _trim_ringing(pr.grey_max, x, y, w, h)
        fill = float(closed[y: y + h, x: x + w].mean()) if w and h else 0.0
    if w < min_side or h < min_side or not (1 / 4 <= w / h <= 4):
        return None
    if fill < 0.45:  # neither a filled rectangle nor a fan (a fan fills ~55-80%)
        return None
    return Box(x, y, w, h), fill, level


def find_candidates(pr: Projections) -> list[Candidate]:
    """Large content regions (rectangles, trapezoids, fans) of a screen, largest first;
    text, rulers and bars are rejected by size and fill, merged neighbours are split
    (see the module docstring)."""
    grey_max = pr.grey_max
    H, W = grey_max.shape
    content = grey_max > CONTENT_THRESHOLD
    closed = cv2.morphologyEx(content.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    min_side = min_panel_side(H, W)
    found = []
    for i in range(1, n):
        x0, y0, w0, h0, _area = (int(v) for v in stats[i])
        if w0 < min_side or h0 < min_side:
            continue
        own = np.zeros((H, W), bool)
        own[y0: y0 + h0, x0: x0 + w0] = labels[y0: y0 + h0, x0: x0 + w0] == i
        own &= content
        for x, y, w, h, how in _split_merged(pr, own, x0, y0, w0, h0, min_side):
            got = _panel_box(pr, own, closed, content, (x, y, w, h), min_side)
            if got is not None:
                found.append(Candidate(got[0], got[1], how, got[2]))
    found.sort(key=lambda c: c.box.w * c.box.h, reverse=True)
    return found


def find_panels(grey_max: np.ndarray | Projections) -> list[Box]:
    """The panel boxes of :func:`find_candidates`, largest first (``grey_max``: a
    ``(H, W) uint8`` max projection, or the full :class:`Projections`)."""
    pr = grey_max if isinstance(grey_max, Projections) else \
        Projections(grey_max, grey_max.astype(np.float32), None)
    return [c.box for c in find_candidates(pr)]
