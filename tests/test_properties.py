"""Property-based tests (hypothesis) for pure functions not covered by the other files'
properties: layout detection, polygon rasterisation against a brute-force point test,
Dice/IoU scoring, grey-level linearisation and curve analysis under a time shift.

(Sampling and top-k scoring: test_keyframes_pure; star polygons: test_annotations;
random curves never raising: test_tic; balance KS: test_balance.)
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ceuspipe.dataset.rasterize import fill_polygons
from ceuspipe.tic import analyse_curve
from ceuspipe.tic.linearize import linearize
from ceuspipe.tic.models import lognormal
from ceuspipe.train.metrics import dice_iou
from ceuspipe.video.layout import detect_layout
from ceuspipe.video.panels import Box

# --------------------------------------------------------------------------- layout detection


@st.composite
def screens(draw):
    """Black frame, two panels side by side at random places and sizes within the
    detector's documented domain (areas within 3x, vertical overlap at least half the
    smaller height, sides a few px over the minimum), and small bright text boxes in
    the margins (at least 4 px from any panel)."""
    H = draw(st.integers(90, 200))
    min_side = max(24, int(0.15 * H))
    h1 = draw(st.integers(min_side + 6, H - 4))
    h2 = draw(st.integers(min_side + 6, H - 4))
    w1 = draw(st.integers(max(min_side + 6, math.ceil(h1 * 0.6)), math.floor(h1 * 1.6)))
    w2 = draw(st.integers(max(min_side + 6, math.ceil(h2 * 0.6)), math.floor(h2 * 1.6)))
    areas = sorted((w1 * h1, w2 * h2))
    assume(areas[1] <= 2.8 * areas[0])
    gap = draw(st.integers(6, 60))
    W = draw(st.integers(w1 + w2 + gap + 4, w1 + w2 + gap + 120))
    assume(min(H, W) * 0.15 <= min_side)
    x1 = draw(st.integers(2, W - w1 - w2 - gap - 2))
    x2 = x1 + w1 + gap
    y1 = draw(st.integers(2, H - h1 - 2))
    y2 = draw(st.integers(2, H - h2 - 2))
    overlap = min(y1 + h1, y2 + h2) - max(y1, y2)
    assume(overlap >= 0.6 * min(h1, h2))
    a, b = Box(x1, y1, w1, h1), Box(x2, y2, w2, h2)
    texts = []
    for _ in range(draw(st.integers(0, 4))):
        tw, th = draw(st.integers(3, 30)), draw(st.integers(2, 7))
        tx, ty = draw(st.integers(0, W - tw)), draw(st.integers(0, H - th))
        far = all(tx + tw + 4 <= p.x or p.x + p.w + 4 <= tx or ty + th + 4 <= p.y or p.y + p.h + 4 <= ty
                  for p in (a, b))
        if far:
            texts.append((tx, ty, tw, th))
    ceus_first = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return H, W, (a, b) if ceus_first else (b, a), texts, seed


def _render(H, W, ceus: Box, us: Box, texts, seed, n=4):
    rng = np.random.default_rng(seed)
    frozen = rng.integers(40, 220, (us.h, us.w), dtype=np.uint8)
    frames = []
    for i in range(n):
        f = np.zeros((H, W, 3), np.uint8)
        f[ceus.y:ceus.y + ceus.h, ceus.x:ceus.x + ceus.w] = rng.integers(8, 90, (ceus.h, ceus.w, 1), dtype=np.uint8)
        f[us.y:us.y + us.h, us.x:us.x + us.w] = frozen[..., None]
        for tx, ty, tw, th in texts:
            f[ty:ty + th, tx:tx + tw] = 255 if i % 2 else 200
        frames.append(f)
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(screens())
def test_detected_panels_are_the_drawn_ones(screen):
    H, W, (ceus, us), texts, seed = screen
    layout = detect_layout(_render(H, W, ceus, us, texts, seed))
    assert (layout.frame_width, layout.frame_height) == (W, H)
    assert layout.ceus == ceus and layout.us == us


# --------------------------------------------------------------------------- rasterisation


def _inside_even_odd(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Crossing-number point-in-polygon test for arrays of points (brute force, per edge)."""
    inside = np.zeros(x.shape, bool)
    for i in range(len(poly)):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % len(poly)]
        crosses = (y1 > y) != (y2 > y)
        # edges that do not cross a point's row may divide by ~0; those points are masked out
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (xc > x)
    return inside


def _dist_to_edges(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    best = np.full(x.shape, np.inf)
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        ab = b - a
        denom = float(np.dot(ab, ab))
        t = np.zeros(x.shape) if denom == 0 else np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / denom, 0, 1)
        best = np.minimum(best, np.hypot(x - (a[0] + t * ab[0]), y - (a[1] + t * ab[1])))
    return best


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 30), st.floats(0, 25)), min_size=3, max_size=9))
def test_fill_matches_brute_force_even_odd_away_from_edges(points):
    """Any polygon inside the image (also self-intersecting or degenerate): a pixel whose
    centre lies more than 1.5 px (the width of a drawn edge) from every edge is set
    exactly when its centre is inside by the even-odd rule. (Vertices outside the image
    are left out: OpenCV's clipping draws the image border for zero-area parts.)"""
    poly = np.asarray(points, dtype=np.float64)
    H, W = 26, 31
    mask = fill_polygons([poly.tolist()], H, W)
    assert mask.shape == (H, W) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    far = _dist_to_edges(poly, xx, yy) > 1.5
    expected = _inside_even_odd(poly, xx, yy)
    bad = np.argwhere(far & (mask.astype(bool) != expected))
    assert bad.size == 0, bad[:5]


# --------------------------------------------------------------------------- scoring

masks = st.integers(0, 2**20).map(lambda s: np.random.default_rng(s).random((9, 11)) < np.random.default_rng(s + 1).random())


@settings(max_examples=150, deadline=None)
@given(masks, masks)
def test_dice_iou_relations(a, b):
    d, j = dice_iou(a, b)
    assert (d, j) == dice_iou(b, a)
    assert 0.0 <= j <= d <= 1.0
    assert math.isclose(j, d / (2 - d), rel_tol=1e-12, abs_tol=1e-12)
    assert (d == 1.0) == bool(np.array_equal(a, b))
    assert dice_iou(a, a) == (1.0, 1.0)
    if a.any() and not (a & b).any():
        assert (d, j) == (0.0, 0.0)


# --------------------------------------------------------------------------- curve analysis


@settings(max_examples=60, deadline=None)
@given(st.floats(20, 90), st.lists(st.floats(0, 255), min_size=2, max_size=30))
def test_linearize_is_monotonic_and_inverts_the_log_compression(dr, greys):
    g = np.sort(np.asarray(greys))
    p = linearize(g, dr)
    assert np.all(np.diff(p) >= 0) and np.all(p > 0)
    np.testing.assert_allclose(255 * (1 + 10 * np.log10(p) / dr), g, atol=1e-9)
    u8 = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(linearize(u8, dr), linearize(u8.astype(np.float64), dr))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(2, 12), st.floats(math.log(6), math.log(20)), st.floats(0.3, 0.7),
       st.floats(0.5, 40), st.floats(0, 0.3))
def test_curve_parameters_shift_with_the_time_axis(t0, mu, sigma, shift, offset):
    """A clip whose clock starts ``shift`` seconds later gives the same curve shifted:
    TTP and the onset move by ``shift``, PE and mTT do not change."""
    t = np.arange(0, 90, 0.5)
    y = lognormal(t, t0, offset, 10.0, mu, sigma)
    a = analyse_curve(t, y, model="lognormal")
    b = analyse_curve(t + shift, y, model="lognormal")
    assert a.success == b.success
    if a.success:
        assert math.isclose(b.value("TTP"), a.value("TTP") + shift, abs_tol=0.05)
        assert math.isclose(b.value("PE"), a.value("PE"), rel_tol=1e-3)
        assert math.isclose(a.value("TTP"), t0 + math.exp(mu - sigma**2), abs_tol=0.3)
