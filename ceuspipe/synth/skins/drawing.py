"""Drawing helpers shared by the screen skins: text size, the black margin around the
panels, header rows, image footprints of the probes and the gold colour map."""

from __future__ import annotations

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def font_scale(geom) -> float:
    """OpenCV font scale of the screen text: 0.42 at a frame height of 450 px (at least 0.25)."""
    return max(0.25, 0.42 * geom.height / 450.0)


def clear_margin(height: int) -> int:
    """Pixels kept black around each panel (no text or graphics there)."""
    return max(3, int(round(0.012 * height)))


def blank_panels(img: np.ndarray, layout) -> None:
    """Zero ``img`` ``(H, W, 3)`` over both panel boxes grown by :func:`clear_margin`."""
    m = clear_margin(layout.frame_height)
    for b in (layout.ceus, layout.us):
        img[max(0, b.y - m): b.y + b.h + m, max(0, b.x - m): b.x + b.w + m] = 0


def header_rows(geom) -> tuple[int, int]:
    """Baselines (rows, px) of the two header lines in the band above the panels."""
    h = geom.height
    top = min(geom.layout.ceus.y, geom.layout.us.y)
    fs = font_scale(geom)
    (_, th), base = cv2.getTextSize("Ag", FONT, fs, 1)
    line2 = top - clear_margin(h) - base - 1
    return max(th + 1, min(int(top * 0.42), line2 - th - 3)), line2


def fan_mask(size: int, half_angle_deg: float = 28.0) -> np.ndarray:
    """``(size, size) bool`` curvilinear sector whose bounding box is the whole square:
    apex above the top edge, straight sides at ``half_angle_deg`` from vertical, the
    probe face an arc along the top and the deepest arc along the bottom."""
    s = int(size)
    theta = np.deg2rad(half_angle_deg)
    half = (s - 1) / 2.0 + 0.49
    r1 = half / np.sin(theta)
    ay = (s - 1 + 0.49) - r1
    r0 = max(0.0, (-0.49 - ay) / np.cos(theta))
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64)
    dx, dy = xs - (s - 1) / 2.0, ys - ay
    rho = np.hypot(dx, dy)
    ang = np.abs(np.arctan2(dx, dy))
    return (rho <= r1) & (rho >= r0) & (ang <= theta + 1e-9)


#: width of the trapezoid image's top edge / panel width (the steered linear probe of a
#: GE LOGIQ, measured on its CEUS dual display)
TRAPEZOID_TOP_WIDTH = 0.62


def trapezoid_mask(height: int, width: int, top_fraction: float = TRAPEZOID_TOP_WIDTH) -> np.ndarray:
    """``(height, width) bool`` trapezoid image of a steered linear probe (virtual
    convex): the top row ``top_fraction`` of the width, centred, widening linearly to
    the full width in the bottom row; its bounding box is the whole panel."""
    h, w = int(height), int(width)
    ys = np.arange(h, dtype=np.float64)[:, None]
    xs = np.arange(w, dtype=np.float64)[None, :]
    half = 0.5 * w * (top_fraction + (1.0 - top_fraction) * ys / max(1, h - 1))
    return np.abs(xs + 0.5 - 0.5 * w) <= half + 1e-9


#: image footprint of each probe with one, ``(h, w) -> (h, w) bool``; a linear probe's
#: image fills the panel
_FOOTPRINTS = {"sector": lambda h, w: fan_mask(w), "trapezoid": trapezoid_mask}


def panel_footprint(skin, shape: tuple[int, int]) -> np.ndarray | None:
    """``(h, w) bool`` pixels of a panel of ``shape`` that show the image under
    ``skin.probe`` (the rest is black), or ``None`` when the image fills the panel."""
    footprint = _FOOTPRINTS.get(skin.probe)
    return None if footprint is None else footprint(*shape)


def gold_lut() -> np.ndarray:
    """``(256, 3) uint8`` gold/hot colour map: black -> brown -> gold -> pale yellow."""
    x = np.linspace(0.0, 1.0, 256)
    r = np.clip(1.45 * x, 0, 1)
    g = np.clip(1.2 * x - 0.15, 0, 1)
    b = np.clip(1.8 * x - 1.0, 0, 1)
    return np.rint(np.stack([r, g, b], axis=1) * 255).astype(np.uint8)


def gold_to_grey(rgb: np.ndarray) -> np.ndarray:
    """Approximate inverse of :func:`gold_lut`: ``(..., 3) uint8`` RGB -> ``(...) uint8`` grey.

    The red channel carries the grey level until it saturates (g ~ 176), then the
    green channel (to g ~ 244), then the blue one.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    from_r = rgb[..., 0] / 1.45
    from_g = (rgb[..., 1] + 0.15 * 255.0) / 1.2
    from_b = (rgb[..., 2] + 255.0) / 1.8
    g = np.where(rgb[..., 0] < 250, from_r,
                 np.where(rgb[..., 1] < 250, np.maximum(from_r, from_g), np.maximum(from_g, from_b)))
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)
