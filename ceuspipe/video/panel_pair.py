"""The two panels of a dual display as one pair: same size, same top (or left).

A dual display shows one imaging plane twice, so its two panels have the same
size and sit side by side with the same top (or stacked with the same left). Boxes
found from content alone can disagree: a CEUS panel that is dark in most places
gets a box around where contrast happened to be. :func:`reconcile` holds the pair
to that constraint: boxes that agree to within :data:`SIZE_TOLERANCE_PX` are given
one size (the better-defined panel's; two fully lit rectangles are exact as found);
otherwise the smaller box, when its content does not fill it, is placed
from its larger partner (same size, same top, the position where the partner's
image footprint best covers its content, nearest the partner when several fit);
a pair that cannot be reconciled is kept and reported, never passed silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ceuspipe.video.panel_finder import CONTENT_THRESHOLD, Candidate, Projections, content_level
from ceuspipe.video.panels import Box

#: sizes and tops (lefts) within this many pixels count as one size.
SIZE_TOLERANCE_PX = 2
#: a box whose content fills this much of it is complete: it is never enlarged.
FULL_FILL = 0.97
#: mean temporal change (grey levels) at or below which a pixel is static graphics
_STATIC = 0.25
#: positions whose footprint score is within this fraction of the box height of the best
#: count as a tie (a shift that moves a content edge out costs about a column of content).
_TIE = 0.05


def pair_candidates(found: list[Candidate], pr: Projections | None = None
                    ) -> tuple[Candidate, Candidate] | None:
    """The two candidates of similar size (areas within 3x) that sit side by side (rows
    overlapping by half) or stacked (columns overlapping by half), largest pair first,
    left (top) one first. Without such a pair, the largest candidate and the flickering
    content beside it (:func:`partial_partner`, given ``pr``), if any."""
    best, best_area = None, 0
    for i, ca in enumerate(found):
        for cb in found[i + 1:]:
            a, b = ca.box, cb.box
            big, small = max(a.w * a.h, b.w * b.h), min(a.w * a.h, b.w * b.h)
            if big > 3 * small:
                continue
            overlap_y = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
            overlap_x = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
            side = overlap_y >= 0.5 * min(a.h, b.h) and overlap_x <= 0
            stacked = overlap_x >= 0.5 * min(a.w, b.w) and overlap_y <= 0
            if (side or stacked) and big + small > best_area:
                best, best_area = (ca, cb) if (a.x, a.y) <= (b.x, b.y) else (cb, ca), big + small
    if best is None and found and pr is not None:
        other = partial_partner(pr, found[0].box)
        if other is not None:
            a, b = found[0], other
            best = (a, b) if (a.box.x, a.box.y) <= (b.box.x, b.box.y) else (b, a)
    return best


#: partial_partner: content flickering at least this many times as much as the panel beside it
#: (breathing moves B-mode speckle too: 14 against 24 grey levels on the logiq phantom)
_FLICKER_RATIO = 1.2
#: ...covering at least this fraction of the panel's area
_MIN_PARTIAL = 0.01


def partial_partner(pr: Projections, panel: Box) -> Candidate | None:
    """A CEUS panel too dark to be a candidate of its own, beside ``panel``: the
    flickering content (see :func:`flickering`) of a band as wide as ``panel`` next to
    it (same rows), when it flickers at least :data:`_FLICKER_RATIO` times as much as
    ``panel`` (redrawn contrast speckle beside frozen B-mode) and covers at least
    :data:`_MIN_PARTIAL` of its area, as a :class:`Candidate` for its bounding box
    (placed from ``panel`` by :func:`reconcile`). ``None`` for a single frame, or
    when nothing flickers there."""
    if pr.change is None:
        return None
    width = pr.grey_max.shape[1]
    inside = float(pr.change[panel.y: panel.y + panel.h, panel.x: panel.x + panel.w].mean())
    rows = slice(panel.y, panel.y + panel.h)
    best = None
    for x0, x1 in ((max(0, panel.x - panel.w), panel.x), (panel.x + panel.w, min(width, panel.x + 2 * panel.w))):
        if x1 - x0 < panel.w // 4:
            continue
        live = flickering(pr, rows, slice(x0, x1))
        n = int(live.sum())
        if n < _MIN_PARTIAL * panel.w * panel.h:
            continue
        if float(pr.change[rows, x0:x1][live].mean()) < _FLICKER_RATIO * max(inside, 0.5):
            continue
        ys, xs = np.nonzero(live)
        box = Box(x0 + int(xs.min()), panel.y + int(ys.min()), int(xs.max() - xs.min()) + 1,
                  int(ys.max() - ys.min()) + 1)
        fill = float(live[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].mean())
        if best is None or n > best[1]:
            best = (Candidate(box, fill, level=CONTENT_THRESHOLD), n)
    return None if best is None else best[0]


def flickering(pr: Projections, rows: slice, cols: slice) -> np.ndarray:
    """``(h, w) bool`` content of a window that changes over time (mean change above
    :data:`_STATIC`), not static graphics (labels, ticks, marks); all content for a
    single frame."""
    content = pr.grey_max[rows, cols] > CONTENT_THRESHOLD
    if pr.change is not None:
        content &= pr.change[rows, cols] > _STATIC
    return content


def footprint(pr: Projections, box: Box) -> np.ndarray:
    """``(h, w) bool`` image footprint of a well-defined panel: its largest region of
    content (at its own level, closed), filled from the first to the last pixel of each
    row (rectangles, trapezoids and fans are convex along rows), so dark tissue near a
    slanted edge and a grey bar or label in a black corner do not change its shape."""
    sub = pr.grey_max[box.y: box.y + box.h, box.x: box.x + box.w]
    level = content_level(sub, sub > CONTENT_THRESHOLD)
    mask = cv2.morphologyEx((sub > level).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.ones(sub.shape, bool)
    main = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    cols = np.arange(sub.shape[1])
    first = np.argmax(main, axis=1)[:, None]
    last = sub.shape[1] - 1 - np.argmax(main[:, ::-1], axis=1)[:, None]
    return main.any(axis=1)[:, None] & (cols >= first) & (cols <= last)


@dataclass(frozen=True)
class PairGeometry:
    """The reconciled pair: ``first`` and ``second`` (left/top one first), ``stacked``;
    ``detected`` the boxes as found from content; ``placed`` the index (0, 1) of the
    box placed from its partner, or ``None``; ``uncertainty_px`` how far that box
    could move along the pair's axis and fit its content as well (0 when not placed);
    ``agree`` whether the final boxes have one size and top (left); ``split`` how the
    two were separated when they touched (``"valley"``, ``"seam"``) or ``None``;
    ``problem`` one line on why a pair that disagrees could not be reconciled."""

    first: Box
    second: Box
    stacked: bool
    detected: tuple[Box, Box]
    placed: int | None = None
    uncertainty_px: int = 0
    agree: bool = True
    split: str | None = None
    problem: str | None = field(default=None)

    def size_difference(self) -> tuple[int, int]:
        """``(dw, dh)`` in px between the final boxes (second minus first)."""
        return self.second.w - self.first.w, self.second.h - self.first.h


def _t(box: Box) -> Box:
    return Box(box.y, box.x, box.h, box.w)


def reconcile(pr: Projections, first: Candidate, second: Candidate) -> PairGeometry:
    """Hold a pair of candidates (left/top one first) to one size and top (left); see
    the module docstring."""
    a, b = first.box, second.box
    overlap_x = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    stacked = overlap_x > 0
    split = first.split or second.split
    if stacked:  # solve the side-by-side problem on the transposed screen
        geo = _reconcile_side(pr.transposed(), Candidate(_t(a), first.fill), Candidate(_t(b), second.fill))
        return PairGeometry(_t(geo.first), _t(geo.second), True, (a, b), geo.placed, geo.uncertainty_px,
                            geo.agree, split, geo.problem)
    geo = _reconcile_side(pr, first, second)
    return PairGeometry(geo.first, geo.second, False, (a, b), geo.placed, geo.uncertainty_px, geo.agree,
                        split, geo.problem)


def _reconcile_side(pr: Projections, first: Candidate, second: Candidate) -> PairGeometry:
    """:func:`reconcile` for two boxes side by side, ``first`` on the left."""
    a, b = first.box, second.box
    tol = SIZE_TOLERANCE_PX
    if abs(a.w - b.w) <= tol and abs(a.h - b.h) <= tol and abs(a.y - b.y) <= tol:
        if min(first.fill, second.fill) >= FULL_FILL:  # two lit rectangles: both exact already
            return PairGeometry(a, b, False, (a, b))
        # one size: the better-defined panel's (see _definition)
        ref = 0 if _definition(pr, first) >= _definition(pr, second) else 1
        return _placed(pr, (a, b), ref, lo_hi=None, agree_only=True)
    big_i = 0 if a.w * a.h >= b.w * b.h else 1
    big, small = (a, b) if big_i == 0 else (b, a)
    small_fill = (first, second)[1 - big_i].fill
    size = f"{small.w}x{small.h} against {big.w}x{big.h}"
    if small_fill >= FULL_FILL or (small.w >= big.w and small.h >= big.h):
        return _disagree(a, b, f"panel sizes differ ({size}) and neither box is partial")
    if small.y < big.y - tol or small.y + small.h > big.y + big.h + tol:
        return _disagree(a, b, f"panel sizes differ ({size}) and the smaller one is not within "
                               "the rows of the larger one")
    geo = _placed(pr, (a, b), big_i, lo_hi=(small.x + small.w - big.w, small.x))
    if geo is None:
        return _disagree(a, b, f"panel sizes differ ({size}) and a box of the larger size does not fit "
                               "beside it")
    return geo


def _definition(pr: Projections, c: Candidate) -> float:
    """How clearly a panel's edges stand out: its content level over its mean temporal
    change (+1). A bright, steady B-mode panel scores high; a CEUS panel, whose redrawn
    speckle and noise pile up at its edges in the max projection, scores low."""
    if pr.change is None:
        return c.level
    b = c.box
    return c.level / (1.0 + float(pr.change[b.y: b.y + b.h, b.x: b.x + b.w].mean()))


def _placed(pr: Projections, boxes: tuple[Box, Box], ref: int, lo_hi: tuple[int, int] | None,
            agree_only: bool = False) -> PairGeometry | None:
    """The pair with box ``1 - ref`` given box ``ref``'s size and top, at the left edge in
    ``lo_hi`` (``None``: within the tolerance of where it was found) that does not overlap
    the reference box and best fits its content (:func:`_best_position`); ``None`` when
    no position is left. ``agree_only``: the boxes agreed already, nothing was placed."""
    ref_box, other = boxes[ref], boxes[1 - ref]
    width = pr.grey_max.shape[1]
    lo, hi = lo_hi if lo_hi is not None else (other.x - SIZE_TOLERANCE_PX, other.x + SIZE_TOLERANCE_PX)
    if ref == 0:
        lo = max(lo, ref_box.x + ref_box.w)
    else:
        hi = min(hi, ref_box.x - ref_box.w)
    lo, hi = max(lo, 0), min(hi, width - ref_box.w)
    if lo > hi:
        if agree_only:  # touching boxes that each fit their content: keep them as found
            return PairGeometry(boxes[0], boxes[1], False, boxes)
        return None
    toward = other.x if agree_only else ref_box.x
    x, spread = _best_position(pr, ref_box, lo, hi, toward=toward)
    moved = Box(x, ref_box.y, ref_box.w, ref_box.h)
    pair = (ref_box, moved) if ref == 0 else (moved, ref_box)
    if agree_only:
        return PairGeometry(pair[0], pair[1], False, boxes)
    return PairGeometry(pair[0], pair[1], False, boxes, placed=1 - ref, uncertainty_px=spread)


def _disagree(a: Box, b: Box, why: str) -> PairGeometry:
    return PairGeometry(a, b, False, (a, b), agree=False, problem=why)


def _best_position(pr: Projections, partner: Box, lo: int, hi: int, toward: int) -> tuple[int, int]:
    """``(x, spread)``: the left edge in ``[lo, hi]`` of a box of ``partner``'s size and
    rows whose copy of the partner's image footprint best covers the content around it
    (content inside the footprint counts, content in the footprint's black corners counts
    against; with several frames only content that changes, not static graphics),
    nearest ``toward`` among ties; ``spread`` the width (px) of the tied range."""
    if lo == hi:
        return lo, 0
    y0, y1 = partner.y, partner.y + partner.h
    weights = np.where(footprint(pr, partner), 1.0, -1.0).astype(np.float32)
    rows, cols = slice(y0, y1), slice(lo, hi + partner.w)
    live = flickering(pr, rows, cols)
    # codec ringing spills a few grey levels past a bright edge: count what stands out
    live &= pr.grey_max[rows, cols] > content_level(pr.grey_max[rows, cols], live)
    content = live.astype(np.float32)
    scores = cv2.matchTemplate(content, weights, cv2.TM_CCORR)[0]  # (hi - lo + 1,)
    best = float(scores.max())
    tied = np.flatnonzero(scores >= best - _TIE * partner.h)
    xs = lo + tied
    x = int(xs[np.argmin(np.abs(xs - toward))])
    return x, int(xs.max() - xs.min())
