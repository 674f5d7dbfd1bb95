"""Shape geometry for annotations: polygon validity checks and rasterisation of
polygons, discs and mask patches.

Coordinate convention (the same as LabelMe, OpenCV and PIL): a point ``(x, y)``
is in pixels, ``x`` the column and ``y`` the row, and integer coordinates are
pixel *centres*: ``(0, 0)`` is the centre of the top-left pixel. A pixel belongs
to a polygon when its centre lies inside the polygon or on its outline
(``cv2.fillPoly`` fills the interior and draws the boundary), so an axis-aligned
rectangle with integer corners ``(x0, y0)``-``(x1, y1)`` covers
``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels. Vertices are rasterised with 1/16
pixel sub-pixel precision (``shift=4``). An ellipse holds the pixels whose centre
is inside it.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

SHIFT_BITS = 4  # cv2.fillPoly fixed-point fraction bits: 1/16 pixel vertex precision


def as_points(points: Sequence[Sequence[float]]) -> np.ndarray:
    """Return ``points`` as an ``(n, 2)`` float64 array of ``(x, y)`` pixels.

    Raises ``ValueError`` when the input is not a list of finite coordinate pairs.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must be a list of [x, y] pairs, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("points contain NaN or infinite coordinates")
    return arr


def drop_repeated(points: np.ndarray) -> np.ndarray:
    """Remove consecutive duplicate vertices (including last == first), ``(n, 2)`` -> ``(m, 2)``."""
    if len(points) == 0:
        return points
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    out = points[keep]
    if len(out) > 1 and np.all(out[0] == out[-1]):
        out = out[:-1]
    return out


def _orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Twice the signed area of triangle ``abc`` (>0 counter-clockwise in x-right/y-up axes)."""
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))


def _on_segment(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> bool:
    """True when ``p`` (already known collinear with ``ab``) lies within the box of ``ab``."""
    return (min(a[0], b[0]) <= p[0] <= max(a[0], b[0])
            and min(a[1], b[1]) <= p[1] <= max(a[1], b[1]))


def segments_intersect(p1, p2, q1, q2) -> bool:
    """True when closed segments ``p1p2`` and ``q1q2`` share at least one point.

    Standard orientation test, including the collinear and touching cases.
    Points are ``(x, y)`` pairs.
    """
    p1, p2, q1, q2 = (np.asarray(v, dtype=np.float64) for v in (p1, p2, q1, q2))
    d1 = _orient(q1, q2, p1)
    d2 = _orient(q1, q2, p2)
    d3 = _orient(p1, p2, q1)
    d4 = _orient(p1, p2, q2)
    if ((d1 > 0 and d2 < 0) or (d1 < 0 and d2 > 0)) and ((d3 > 0 and d4 < 0) or (d3 < 0 and d4 > 0)):
        return True
    if d1 == 0 and _on_segment(q1, q2, p1):
        return True
    if d2 == 0 and _on_segment(q1, q2, p2):
        return True
    if d3 == 0 and _on_segment(p1, p2, q1):
        return True
    if d4 == 0 and _on_segment(p1, p2, q2):
        return True
    return False


def self_intersection(points: Sequence[Sequence[float]]) -> tuple[int, int] | None:
    """Find a self-intersection of the closed polygon ``points`` (``(n, 2)`` pixels).

    Returns ``(i, j)``, the indices of the first two edges found that cross or
    touch (edge ``i`` joins vertex ``i`` to ``i + 1``, the last edge closes the
    ring), or ``None`` for a simple polygon. Adjacent edges may share their
    common vertex but must not fold back over each other. Consecutive duplicate
    vertices are ignored. O(n^2) pairs, fine for hand-drawn outlines.
    """
    pts = drop_repeated(as_points(points))
    n = len(pts)
    if n < 3:
        return None
    edges = [(pts[i], pts[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        a1, a2 = edges[i]
        for j in range(i + 1, n):
            b1, b2 = edges[j]
            adjacent = j == i + 1 or (i == 0 and j == n - 1)
            if not adjacent:
                if segments_intersect(a1, a2, b1, b2):
                    return (i, j)
                continue
            if n == 3:
                continue  # a triangle's edges only meet at vertices (degenerate ones fold, below)
            # Adjacent edges share one vertex; they intersect elsewhere only when
            # collinear and folding back (the far end of one lies on the other).
            if j == i + 1:
                shared, far_a, far_b = a2, a1, b2
            else:  # i == 0, j == n - 1: edge n-1 ends where edge 0 starts
                shared, far_a, far_b = a1, a2, b1
            if _orient(far_a, shared, far_b) == 0:
                da = far_a - shared
                db = far_b - shared
                if float(np.dot(da, db)) > 0:
                    return (i, j)
    # Triangles: a zero-area (collinear) triangle folds back on itself.
    if n == 3 and _orient(pts[0], pts[1], pts[2]) == 0:
        return (0, 1)
    return None


def fill_polygons(polygons: Sequence[Sequence[Sequence[float]]], height: int, width: int,
                  outline: bool = True) -> np.ndarray:
    """Rasterise and unite ``polygons`` into an ``(height, width)`` uint8 0/1 mask.

    Each polygon is an ``(n, 2)`` list of ``(x, y)`` pixel coordinates under the
    pixel-centre convention of this module; parts outside the image are clipped.
    ``outline=False``: only pixels whose centre is strictly inside (even-odd rule per
    polygon; COCO's rule), not those the outline passes through.
    """
    mask = np.zeros((int(height), int(width)), dtype=np.uint8)
    scale = 1 << SHIFT_BITS
    for poly in polygons:
        pts = as_points(poly)
        if len(pts) == 0:
            continue
        if not outline:
            mask |= _centres_inside(pts, mask.shape)
            continue
        # One call per polygon: a single call would apply the even-odd rule across
        # overlapping polygons and cut holes where they overlap.
        ring = np.round(pts * scale).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [ring], 1, lineType=cv2.LINE_8, shift=SHIFT_BITS)
    return mask


def _centres_inside(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``shape`` uint8 0/1: pixels whose centre is inside ring ``pts`` ``(n, 2)`` (crossing test)."""
    out = np.zeros(shape, dtype=np.uint8)
    x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int), (shape[1] - 1, shape[0] - 1))
    if x0 > x1 or y0 > y1:
        return out
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    inside = np.zeros(xs.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
        if ay == by:
            continue  # a horizontal edge crosses no row of centres
        spans = (ay > ys) != (by > ys)
        inside ^= spans & (xs < ax + (ys - ay) * (bx - ax) / (by - ay))
    out[y0 : y1 + 1, x0 : x1 + 1] = inside
    return out


def points_inside(points: np.ndarray, width: int, height: int, tolerance: float = 1.0) -> bool:
    """True when every ``(x, y)`` lies in ``[-tolerance, width - 1 + tolerance]`` x
    ``[-tolerance, height - 1 + tolerance]`` (pixel-centre coordinates)."""
    pts = as_points(points)
    return bool(np.all(pts[:, 0] >= -tolerance) and np.all(pts[:, 0] <= width - 1 + tolerance)
                and np.all(pts[:, 1] >= -tolerance) and np.all(pts[:, 1] <= height - 1 + tolerance))


def fill_ellipse(cx: float, cy: float, rx: float, ry: float, height: int, width: int) -> np.ndarray:
    """``(height, width)`` uint8 0/1 mask of the pixels whose centre lies in the axis-aligned
    ellipse of centre ``(cx, cy)`` and semi-axes ``rx``, ``ry`` > 0 (pixels; clipped)."""
    ys, xs = np.ogrid[: int(height), : int(width)]
    return ((((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2) <= 1.0).astype(np.uint8)


def paste(patch: np.ndarray, x: int, y: int, height: int, width: int) -> np.ndarray:
    """``(height, width)`` uint8 0/1 mask holding the nonzero pixels of ``patch`` ``(h, w)``
    with its top-left pixel at column ``x``, row ``y``; parts outside are clipped."""
    out = np.zeros((int(height), int(width)), dtype=np.uint8)
    h, w = patch.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, int(width)), min(y + h, int(height))
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x] != 0
    return out


def mask_to_polygons(mask: np.ndarray, min_area_px: float = 4.0) -> list[list[list[float]]]:
    """Outer contours of an ``(h, w)`` 0/1 mask as simple polygons of ``(x, y)``
    pixel centres (a 3x3 opening first removes one-pixel spurs that would make a
    contour touch itself). Contours that still touch themselves are simplified
    with ``approxPolyDP``; tiny or degenerate ones are dropped."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if cv2.contourArea(c) < min_area_px:
            continue
        for eps in (0.0, 0.75, 1.5):
            cand = c if eps == 0 else cv2.approxPolyDP(c, eps, True)
            pts = cand.reshape(-1, 2).astype(float)
            if len(pts) >= 3 and self_intersection(pts) is None:
                polys.append(pts.tolist())
                break
    return polys


def simplify_polygon(points: np.ndarray, tolerance_px: float) -> np.ndarray:
    """``(n, 2)`` ring simplified (Douglas-Peucker, ``cv2.approxPolyDP``) so that no point of
    it moves more than ``tolerance_px``; a smaller tolerance is tried when the result
    would touch itself, and the ring is returned unchanged when every try does."""
    pts = as_points(points)
    for eps in (tolerance_px, tolerance_px / 2, tolerance_px / 4):
        if eps <= 0:
            break
        cand = cv2.approxPolyDP(pts.astype(np.float32).reshape(-1, 1, 2), eps, True).reshape(-1, 2)
        if len(cand) >= 3 and self_intersection(cand) is None:
            return cand.astype(np.float64)
    return pts


def mask_outline(mask: np.ndarray, tolerance_px: float = 0.0, min_area_px: float = 1.0) -> list[np.ndarray]:
    """Outer outlines of an ``(h, w)`` 0/1 mask as ``(n, 2)`` simple polygons (pixel centres)
    that run a quarter pixel inside the mask's pixel edges: every mask pixel's centre is
    0.25 px inside, every other centre at least 0.75 px outside, so both a rasteriser that
    takes the pixels under the outline (LabelMe) and one that takes the centres strictly
    inside (COCO) give the mask back. Traced with :func:`mask_to_polygons` on the mask at
    twice the size (its opening drops one-pixel spurs), then simplified by
    :func:`simplify_polygon` with ``tolerance_px`` (0: every corner kept); outlines of
    fewer than ``min_area_px`` pixels are dropped. Holes are not traced."""
    m = (np.asarray(mask) != 0).astype(np.uint8)
    double = np.kron(m, np.ones((2, 2), np.uint8))
    out = []
    for poly in mask_to_polygons(double, min_area_px=4 * min_area_px):
        pts = np.asarray(poly, dtype=np.float64) / 2 - 0.25  # half-pixel grid -> pixel centres
        out.append(simplify_polygon(pts, tolerance_px) if tolerance_px > 0 else pts)
    return out
