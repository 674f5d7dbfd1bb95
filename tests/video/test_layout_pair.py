"""The pair of a dual display held to one size: boxes placed from their partner,
disagreements reported (lower confidence, one-line warning), decorations on panel
edges, touching panels split at a seam, and the geometry report on the layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ceuspipe.video.layout import (DISAGREE_CONFIDENCE, LOW_CONFIDENCE, LayoutError, detect_layout,
                                   resolve_layout)
from ceuspipe.video.panel_finder import Candidate, Projections, find_panels, panel_extent
from ceuspipe.video.panel_pair import reconcile
from ceuspipe.video.panels import Box, PanelLayout

H, W = 300, 640
B_MODE = Box(40, 60, 260, 200)   # left panel
CEUS = Box(300, 60, 260, 200)    # right panel, touching (0 px apart)


def trapezoid(w: int, h: int, top_fraction: float = 0.62) -> np.ndarray:
    """``(h, w) bool`` virtual-convex footprint: narrow top, full-width bottom."""
    out = np.zeros((h, w), np.uint8)
    inset = (1 - top_fraction) * (w - 1) / 2
    pts = np.array([[inset, 0], [w - 1 - inset, 0], [w - 1, h - 1], [0, h - 1]])
    cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1)
    return out.astype(bool)


def screen(n: int = 12, *, ceus_noise: bool = True, blob=(420, 150, 40), seed: int = 0,
           decorations: bool = True) -> list[np.ndarray]:
    """Frames of a GE-like dual display: frozen B-mode trapezoid (left), CEUS trapezoid
    (right) dark but for rare noise and one enhancing blob (centre x, y, radius), a grey
    bar inside the B-mode panel's left edge, ticks along the CEUS panel's right edge, a
    body mark over the B-mode panel's bottom edge, header text and a timer."""
    rng = np.random.default_rng(seed)
    foot = trapezoid(B_MODE.w, B_MODE.h)
    tissue = np.clip(rng.normal(110, 30, foot.shape), 10, 255).astype(np.uint8)
    frames = []
    for k in range(n):
        f = np.zeros((H, W, 3), np.uint8)
        b = B_MODE
        f[b.y: b.y + b.h, b.x: b.x + b.w][foot] = tissue[foot][:, None]
        c = CEUS
        ceus = np.zeros(foot.shape, np.uint8)
        if ceus_noise:  # rare speckle peaks of a few grey levels over the whole footprint
            peaks = rng.random(foot.shape) < 0.08
            ceus[peaks] = rng.integers(5, 12, int(peaks.sum()))
        yy, xx = np.mgrid[0:c.h, 0:c.w]
        cx, cy, r = blob[0] - c.x, blob[1] - c.y, blob[2]
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        level = 40 + 15 * k
        ceus[inside] = np.clip(rng.normal(level, 20, int(inside.sum())), 6, 255).astype(np.uint8)
        ceus[~foot] = 0
        f[c.y: c.y + c.h, c.x: c.x + c.w] = ceus[..., None]
        if decorations:
            f[b.y + 20: b.y + 90, b.x + 2: b.x + 8] = np.linspace(250, 20, 70, dtype=np.uint8)[:, None, None]
            for t in range(0, c.h, 13):  # ticks touching the CEUS panel's right edge
                f[c.y + t, c.x + c.w: c.x + c.w + (7 if t % 65 == 0 else 4)] = 200
            cv2.rectangle(f, (b.x + 180, b.y + b.h - 12), (b.x + 210, b.y + b.h + 14), (230, 230, 230), 1)
            cv2.putText(f, "LOGIQ", (c.x + 4, c.y + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1)
            cv2.putText(f, "DOE^JANE 1234567  MI 0.08", (40, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (220,) * 3, 1)
            cv2.putText(f, f"T1: 0:{k:02d}", (300, 290), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220,) * 3, 1)
        frames.append(f)
    return frames


def test_touching_trapezoids_with_decorations_give_one_size():
    layout = detect_layout(screen())
    assert layout.us == B_MODE and layout.ceus == CEUS
    g = layout.geometry
    assert g["sizes_agree"] and g["size_difference_px"] == [0, 0] and g["arrangement"] == "side-by-side"
    assert layout.confidence >= LOW_CONFIDENCE and layout.warning is None


def test_dark_ceus_panel_is_placed_from_the_b_mode_panel():
    # no noise: the CEUS panel's content is the blob (and its label), far smaller than the panel
    layout = detect_layout(screen(ceus_noise=False, decorations=False))
    g = layout.geometry
    assert layout.us == B_MODE
    assert (layout.ceus.w, layout.ceus.h, layout.ceus.y) == (CEUS.w, CEUS.h, CEUS.y)
    assert g["placed_from_partner"] == "ceus" and g["sizes_agree"]
    found = Box(*g["detected"]["ceus"])
    assert found.w < CEUS.w // 2, "the content-derived CEUS box is the blob"
    # the trapezoid's black corners do not say where along the row the panel sits: the
    # blob fits a range of positions, flush against the partner is chosen, and it is said
    assert layout.ceus.x == B_MODE.x + B_MODE.w
    assert g["position_uncertainty_px"] > 4
    assert layout.confidence < LOW_CONFIDENCE and "placed from the B-mode panel's size flush against it" in layout.warning
    assert "\n" not in layout.warning


def test_boxes_that_cannot_be_reconciled_warn():
    rng = np.random.default_rng(0)
    frame = np.zeros((600, 1000, 3), np.uint8)
    frame[90:510, 40:470] = np.clip(rng.normal(12, 25, (420, 430)), 0, 255).astype(np.uint8)[..., None]
    frame[100:500, 540:940] = np.clip(rng.normal(120, 25, (400, 400)), 0, 255).astype(np.uint8)[..., None]
    layout = detect_layout([frame])
    assert layout.ceus == Box(40, 90, 430, 420) and layout.us == Box(540, 100, 400, 400)  # kept as found
    g = layout.geometry
    assert not g["sizes_agree"] and g["size_difference_px"] == [30, 20]
    assert layout.confidence <= DISAGREE_CONFIDENCE
    assert "panel sizes differ" in layout.warning and "--layout FILE" in layout.warning
    # forcing the side settles the CEUS/B-mode question, not the boxes: the warning stays
    forced = resolve_layout([frame], ceus_side="right")
    assert forced.ceus == layout.us and "panel sizes differ" in forced.warning
    assert forced.geometry["size_difference_px"] == [-30, -20]


def test_reconcile_finds_the_position_from_the_footprint():
    """A partial box beside a trapezoid partner: the partner's black corners pin the
    position when the partial panel's content reaches into its slanted sides."""
    frames = screen(decorations=False)
    pr = Projections.of(frames)
    partial = Box(CEUS.x + 30, CEUS.y + 40, 150, 120)
    geo = reconcile(pr, Candidate(B_MODE, 0.8, level=30.0), Candidate(partial, 0.6, level=5.0))
    assert geo.first == B_MODE and geo.second == CEUS and geo.placed == 1 and geo.agree
    assert geo.uncertainty_px <= 4


def test_extent_ignores_ticks_labels_and_body_marks():
    mask = np.zeros((120, 200), bool)
    mask[10:110, 20:180] = trapezoid(160, 100)
    mask[10:110:9, 180:186] = True           # ruler ticks right of the panel
    mask[104:118, 60:62] = mask[104:118, 80:82] = True  # a body mark hanging below
    mask[117, 60:82] = True
    assert panel_extent(mask) == (20, 10, 160, 100)


def test_touching_rectangles_split_at_the_seam():
    rng = np.random.default_rng(1)
    frame = np.zeros((240, 400, 3), np.uint8)
    left = cv2.GaussianBlur(rng.normal(90, 40, (180, 170)).astype(np.float32), (0, 0), 1.5)
    right = cv2.GaussianBlur(rng.normal(90, 40, (180, 170)).astype(np.float32), (0, 0), 1.5)
    frame[30:210, 30:200] = np.clip(left, 5, 255).astype(np.uint8)[..., None]
    frame[30:210, 200:370] = np.clip(right, 5, 255).astype(np.uint8)[..., None]
    assert sorted(find_panels(Projections.of([frame])), key=lambda b: b.x) == \
        [Box(30, 30, 170, 180), Box(200, 30, 170, 180)]


def test_one_ultrasound_region_is_a_single_panel():
    from ceuspipe.video.dicom import UltrasoundRegion

    frame = np.zeros((200, 300, 3), np.uint8)
    frame[20:180, 40:260] = 90
    regions = [UltrasoundRegion(Box(40, 20, 220, 160), 1, 1, (0.1, 0.1), (3, 3)),
               UltrasoundRegion(Box(40, 185, 220, 10), 4, 10, None, (None, None))]  # an ECG strip
    with pytest.raises(LayoutError, match=r"scan\.dcm: found 1 imaging panel \(DICOM ultrasound region 1"):
        resolve_layout([frame], regions=regions, source="scan.dcm")


def test_geometry_survives_the_layout_file(tmp_path):
    from ceuspipe.video.panels import load_layout, save_layout

    layout = detect_layout(screen())
    save_layout(layout, tmp_path / "l.json")
    back = load_layout(tmp_path / "l.json")
    assert back.geometry == layout.geometry
    given = resolve_layout(screen(n=1), layout_file=tmp_path / "l.json")
    assert given.geometry["sizes_agree"] and given.geometry["detected"] is None
    assert PanelLayout.from_dict({k: v for k, v in layout.to_dict().items() if k != "geometry"}).geometry == {}
