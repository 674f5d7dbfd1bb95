"""The scanner screen around the two panels: geometry, burned-in text and graphics.

Everything drawn here lies outside the panel boxes (enforced by blanking the
panel boxes, grown by one pixel, in every overlay).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ceuspipe.video.panels import Box, PanelLayout

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class ScreenGeometry:
    """Frame size, panel boxes and the decoration positions, all in pixels."""

    layout: PanelLayout
    panel_size: int
    ruler_gap: int
    tick_len: int
    depth_cm: float

    @property
    def width(self) -> int:
        return self.layout.frame_width

    @property
    def height(self) -> int:
        return self.layout.frame_height


def default_panel_size(width: int, height: int) -> int:
    """Side of the square panels: ``min(0.8 * height, 0.45 * width)`` (360 at 800x450)."""
    return int(round(min(0.8 * height, 0.45 * width)))


def make_geometry(width: int, height: int, ceus_side: str, panel_size: int | None = None,
                  depth_cm: float = 14.0) -> ScreenGeometry:
    """Place two square panels side by side, a depth ruler right of each.

    Raises ``ValueError`` when the frame is too small for the panels and rulers.
    """
    s = int(panel_size or default_panel_size(width, height))
    ruler_gap = max(5, int(round(0.012 * width)))
    tick_len = max(3, int(round(0.01 * width)))
    ruler_w = ruler_gap + tick_len + 1
    free = width - 2 * s - 2 * ruler_w
    if s < 32 or free < 6 or height - s < 12:
        raise ValueError(f"frame {width}x{height} too small for two {s}px panels with rulers")
    margin = free // 3
    x_left = margin
    x_right = x_left + s + ruler_w + margin
    y = int(round(0.6 * (height - s)))
    left, right = Box(x_left, y, s, s), Box(x_right, y, s, s)
    if ceus_side == "left":
        ceus, us = left, right
    elif ceus_side == "right":
        ceus, us = right, left
    else:
        raise ValueError(f"ceus_side must be 'left' or 'right', not {ceus_side!r}")
    return ScreenGeometry(PanelLayout(ceus, us, width, height), s, ruler_gap, tick_len, depth_cm)


def clear_margin(height: int) -> int:
    """Pixels kept black around each panel (no text or graphics there)."""
    return max(3, int(round(0.012 * height)))


def _blank_panels(img: np.ndarray, layout: PanelLayout) -> None:
    m = clear_margin(layout.frame_height)
    for b in (layout.ceus, layout.us):
        img[max(0, b.y - m): b.y + b.h + m, max(0, b.x - m): b.x + b.w + m] = 0


def _font_scale(geom: ScreenGeometry) -> float:
    return max(0.25, 0.42 * geom.height / 450.0)


def render_static(geom: ScreenGeometry, header_lines: tuple[str, str], footer: str) -> np.ndarray:
    """Full-frame ``(H, W, 3) uint8`` RGB background: header text, rulers, grey bar, footer.

    The timer is drawn separately by :class:`TimerOverlay`.
    """
    h, w = geom.height, geom.width
    img = np.zeros((h, w, 3), np.uint8)
    lay = geom.layout
    top = lay.ceus.y
    fs = _font_scale(geom)
    th = cv2.getTextSize("Ag", _FONT, fs, 1)[0][1]
    # header: two lines in the band above the panels
    base = cv2.getTextSize("Ag", _FONT, fs, 1)[1]
    line2 = top - clear_margin(h) - base - 1
    line_y = (max(th + 1, min(int(top * 0.42), line2 - th - 3)), line2)
    for text, yy in zip(header_lines, line_y):
        cv2.putText(img, text, (lay.ceus.x if lay.ceus.x < lay.us.x else lay.us.x, yy), _FONT, fs,
                    (225, 225, 225), 1, cv2.LINE_AA)
    # panel labels just above each panel, right-aligned
    for name, box in (("CEUS", lay.ceus), ("B-MODE", lay.us)):
        (tw, _), _ = cv2.getTextSize(name, _FONT, fs, 1)
        cv2.putText(img, name, (box.x + box.w - tw, line_y[1]), _FONT, fs, (200, 200, 120), 1, cv2.LINE_AA)
    # depth rulers: a vertical line right of each panel with ticks every cm
    for box in (lay.ceus, lay.us):
        x = box.x + box.w + geom.ruler_gap
        cv2.line(img, (x, box.y), (x, box.y + box.h - 1), (170, 170, 170), 1)
        for i in range(int(geom.depth_cm) + 1):
            yy = box.y + int(round(i * (box.h - 1) / geom.depth_cm))
            length = geom.tick_len if i % 5 == 0 else max(2, geom.tick_len // 2)
            cv2.line(img, (x, yy), (x + length, yy), (170, 170, 170), 1)
    # grey bar: horizontal ramp under the left panel
    bottom = lay.ceus.y + lay.ceus.h
    bar_h = max(3, (h - bottom) // 4)
    bar_y = bottom + max(3, (h - bottom) // 3)
    left_box = lay.ceus if lay.ceus.x < lay.us.x else lay.us
    bar_w = max(16, left_box.w // 3)
    ramp = np.linspace(0, 255, bar_w).astype(np.uint8)
    img[bar_y: bar_y + bar_h, left_box.x: left_box.x + bar_w] = ramp[None, :, None]
    # footer text right of the grey bar
    cv2.putText(img, footer, (left_box.x + bar_w + 8, min(h - 2, bar_y + bar_h)), _FONT, fs * 0.9,
                (180, 180, 180), 1, cv2.LINE_AA)
    _blank_panels(img, lay)
    return img


class TimerOverlay:
    """Draws the running ``mm:ss`` timer into the header, right end; redraws once a second."""

    def __init__(self, geom: ScreenGeometry):
        self.geom = geom
        lay = geom.layout
        self.fs = _font_scale(geom) * 1.3
        (tw, th), base = cv2.getTextSize("00:00", _FONT, self.fs, 1)
        right_box = lay.us if lay.us.x > lay.ceus.x else lay.ceus
        x1 = right_box.x + right_box.w
        self.x0 = max(0, x1 - tw - 2)
        self.y0 = max(0, int(lay.ceus.y * 0.42) - th - 2)
        self.y1 = min(lay.ceus.y - clear_margin(geom.height), self.y0 + th + base + 3)
        self.x1 = x1
        self._second: int | None = None
        self._patch: np.ndarray | None = None

    def text(self, time_s: float) -> str:
        sec = int(time_s + 1e-9)
        return f"{sec // 60:02d}:{sec % 60:02d}"

    def apply(self, frame: np.ndarray, time_s: float) -> None:
        """Paint the timer for ``time_s`` into ``frame`` (full frame, in place)."""
        sec = int(time_s + 1e-9)
        if sec != self._second:
            canvas = np.zeros_like(frame[self.y0: self.y1, self.x0: self.x1])
            (_, th), _ = cv2.getTextSize("00:00", _FONT, self.fs, 1)
            cv2.putText(canvas, self.text(time_s), (1, min(canvas.shape[0] - 1, th + 1)), _FONT,
                        self.fs, (255, 255, 255), 1, cv2.LINE_AA)
            self._patch, self._second = canvas, sec
        frame[self.y0: self.y1, self.x0: self.x1] = self._patch


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
