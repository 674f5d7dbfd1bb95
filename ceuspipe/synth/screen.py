"""The scanner screen around the two panels: geometry, burned-in text and graphics.

Everything drawn here lies outside the panel boxes (enforced by blanking the
panel boxes, grown by one pixel, in every overlay).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ceuspipe.video.panels import Box, PanelLayout

_FONT = cv2.FONT_HERSHEY_SIMPLEX


#: Screen skins: each name switches on one display feature of real scanners;
#: combine them with ``+`` (``"sector+touching"``). ``"default"`` is the original screen.
SKIN_FEATURES = {
    "default": {},
    "sector": {"probe": "sector"},            # curvilinear probe: fan-shaped panels
    "touching": {"gap": "touching"},          # panels 1-2 px apart
    "separator": {"gap": "separator"},        # thin grey line in a narrow gap
    "dark-start": {"dark_start": True},       # CEUS nearly black (~4 grey levels) before contrast
    "fullhd": {"full_hd": True},              # image area in the middle, thumbnails, colour bars
    "marks": {"marks": True},                 # mode labels, focus mark, ROI circle inside panels
    "frozen-bmode": {"frozen_bmode": True},   # the B-mode panel repeats identically
    "stacked": {"arrangement": "stacked"},    # CEUS and B-mode one above the other
}


@dataclass(frozen=True)
class ScreenSkin:
    """Which display features a phantom screen has (see :data:`SKIN_FEATURES`)."""

    probe: str = "linear"
    arrangement: str = "side"
    gap: str = "wide"
    dark_start: bool = False
    full_hd: bool = False
    marks: bool = False
    frozen_bmode: bool = False

    @classmethod
    def parse(cls, spec: str) -> "ScreenSkin":
        """``"name+name..."`` -> skin; raises ``ValueError`` for unknown names or clashes."""
        merged: dict = {}
        for name in str(spec).split("+"):
            name = name.strip()
            if name not in SKIN_FEATURES:
                raise ValueError(f"unknown screen skin {name!r}; choose from {', '.join(SKIN_FEATURES)}")
            for k, v in SKIN_FEATURES[name].items():
                if k in merged and merged[k] != v:
                    raise ValueError(f"screen skins {spec!r} clash on {k}")
                merged[k] = v
        skin = cls(**merged)
        if skin.arrangement == "stacked" and skin.gap != "wide":
            raise ValueError("the stacked skin has its own gap; do not combine it with touching/separator")
        return skin

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_SKIN = ScreenSkin()


@dataclass(frozen=True)
class ScreenGeometry:
    """Frame size, panel boxes and the decoration positions, all in pixels."""

    layout: PanelLayout
    panel_size: int
    ruler_gap: int
    tick_len: int
    depth_cm: float
    skin: ScreenSkin = DEFAULT_SKIN
    separator_x: int | None = None

    @property
    def width(self) -> int:
        return self.layout.frame_width

    @property
    def height(self) -> int:
        return self.layout.frame_height


def default_panel_size(width: int, height: int, skin: ScreenSkin = DEFAULT_SKIN) -> int:
    """Side of the square panels: ``min(0.8 * height, 0.45 * width)`` (360 at 800x450);
    ``min(0.43 H, 0.6 W)`` for stacked panels, ``min(0.55 H, 0.3 W)`` on full-HD screens."""
    if skin.arrangement == "stacked":
        return int(round(min(0.43 * height, 0.6 * width)))
    if skin.full_hd:
        return int(round(min(0.55 * height, 0.3 * width)))
    return int(round(min(0.8 * height, 0.45 * width)))


def make_geometry(width: int, height: int, ceus_side: str, panel_size: int | None = None,
                  depth_cm: float = 14.0, skin: ScreenSkin = DEFAULT_SKIN) -> ScreenGeometry:
    """Place two square panels side by side (a depth ruler right of each), or as the
    skin says: touching or with a separator (rulers on the outer sides), stacked
    (``ceus_side`` ``"left"`` puts CEUS on top), centred on full-HD screens.

    Raises ``ValueError`` when the frame is too small for the panels and rulers.
    """
    s = int(panel_size or default_panel_size(width, height, skin))
    ruler_gap = max(5, int(round(0.012 * width)))
    tick_len = max(3, int(round(0.01 * width)))
    ruler_w = ruler_gap + tick_len + 1
    if ceus_side not in ("left", "right"):
        raise ValueError(f"ceus_side must be 'left' or 'right', not {ceus_side!r}")
    separator_x = None
    if skin.arrangement == "stacked":
        gap = max(6, int(round(0.02 * height)))
        top = max(12, int(round(0.07 * height)))
        if s < 32 or width - s - 2 * ruler_w < 60 or height - top - 2 * s - gap < 10:
            raise ValueError(f"frame {width}x{height} too small for two stacked {s}px panels")
        x = (width - s) // 2
        first, second = Box(x, top, s, s), Box(x, top + s + gap, s, s)
    elif skin.gap == "wide":
        free = width - 2 * s - 2 * ruler_w
        if s < 32 or free < 6 or height - s < 12:
            raise ValueError(f"frame {width}x{height} too small for two {s}px panels with rulers")
        margin = free // 3
        if skin.full_hd:
            margin = max(2, free // 5)
            x_left = (width - 2 * s - 2 * ruler_w - margin) // 2
        else:
            x_left = margin
        x_right = x_left + s + ruler_w + margin
        y = int(round(0.6 * (height - s))) if not skin.full_hd else (height - s) // 2
        first, second = Box(x_left, y, s, s), Box(x_right, y, s, s)
    else:
        gap = (2 if skin.probe == "sector" else 1) if skin.gap == "touching" else 5
        if s < 32 or width - 2 * s - gap - 2 * ruler_w < 6 or height - s < 12:
            raise ValueError(f"frame {width}x{height} too small for two {s}px panels with rulers")
        x_left = (width - 2 * s - gap) // 2
        y = int(round(0.6 * (height - s))) if not skin.full_hd else (height - s) // 2
        first, second = Box(x_left, y, s, s), Box(x_left + s + gap, y, s, s)
        if skin.gap == "separator":
            separator_x = x_left + s + gap // 2
    ceus, us = (first, second) if ceus_side == "left" else (second, first)
    return ScreenGeometry(PanelLayout(ceus, us, width, height), s, ruler_gap, tick_len, depth_cm,
                          skin, separator_x)


def clear_margin(height: int) -> int:
    """Pixels kept black around each panel (no text or graphics there)."""
    return max(3, int(round(0.012 * height)))


def _blank_panels(img: np.ndarray, layout: PanelLayout) -> None:
    m = clear_margin(layout.frame_height)
    for b in (layout.ceus, layout.us):
        img[max(0, b.y - m): b.y + b.h + m, max(0, b.x - m): b.x + b.w + m] = 0


def _font_scale(geom: ScreenGeometry) -> float:
    return max(0.25, 0.42 * geom.height / 450.0)


def render_static(geom: ScreenGeometry, header_lines: tuple[str, str], footer: str,
                  seed: int = 0) -> np.ndarray:
    """Full-frame ``(H, W, 3) uint8`` RGB background: header text, rulers, grey bar, footer
    (and the skin's separator line, clip thumbnails and colour bars; ``seed`` draws
    the thumbnails).

    The timer is drawn separately by :class:`TimerOverlay`.
    """
    h, w = geom.height, geom.width
    img = np.zeros((h, w, 3), np.uint8)
    lay = geom.layout
    skin = geom.skin
    stacked = skin.arrangement == "stacked"
    top = min(lay.ceus.y, lay.us.y)
    fs = _font_scale(geom)
    th = cv2.getTextSize("Ag", _FONT, fs, 1)[0][1]
    # header: two lines in the band above the panels
    base = cv2.getTextSize("Ag", _FONT, fs, 1)[1]
    line2 = top - clear_margin(h) - base - 1
    line_y = (max(th + 1, min(int(top * 0.42), line2 - th - 3)), line2)
    left_x = min(lay.ceus.x, lay.us.x)
    for text, yy in zip(header_lines, line_y):
        cv2.putText(img, text, (left_x if not stacked else max(2, left_x - w // 4), yy), _FONT, fs,
                    (225, 225, 225), 1, cv2.LINE_AA)
    # panel labels just above each panel, right-aligned (left of each panel when stacked)
    for name, box in (("CEUS", lay.ceus), ("B-MODE", lay.us)):
        (tw, _), _ = cv2.getTextSize(name, _FONT, fs, 1)
        if stacked:
            cv2.putText(img, name, (box.x - tw - 2 * clear_margin(h), box.y + th), _FONT, fs,
                        (200, 200, 120), 1, cv2.LINE_AA)
        else:
            cv2.putText(img, name, (box.x + box.w - tw, line_y[1]), _FONT, fs, (200, 200, 120), 1,
                        cv2.LINE_AA)
    # depth rulers: a vertical line right of each panel with ticks every cm (on the
    # outer side of each panel when the panels touch)
    outer = skin.gap != "wide" and not stacked
    for box in (lay.ceus, lay.us):
        on_left = outer and box.x == left_x
        x = box.x - geom.ruler_gap - 1 if on_left else box.x + box.w + geom.ruler_gap
        sign = -1 if on_left else 1
        cv2.line(img, (x, box.y), (x, box.y + box.h - 1), (170, 170, 170), 1)
        for i in range(int(geom.depth_cm) + 1):
            yy = box.y + int(round(i * (box.h - 1) / geom.depth_cm))
            length = geom.tick_len if i % 5 == 0 else max(2, geom.tick_len // 2)
            cv2.line(img, (x, yy), (x + sign * length, yy), (170, 170, 170), 1)
    # grey bar: horizontal ramp under the left (lower) panel
    bottom = max(lay.ceus.y + lay.ceus.h, lay.us.y + lay.us.h)
    bar_h = max(3, (h - bottom) // 4)
    bar_y = bottom + max(3, (h - bottom) // 3)
    left_box = lay.ceus if lay.ceus.x < lay.us.x else lay.us
    bar_w = max(16, left_box.w // 3)
    ramp = np.linspace(0, 255, bar_w).astype(np.uint8)
    img[bar_y: bar_y + bar_h, left_box.x: left_box.x + bar_w] = ramp[None, :, None]
    # footer text right of the grey bar
    cv2.putText(img, footer, (left_box.x + bar_w + 8, min(h - 2, bar_y + bar_h)), _FONT, fs * 0.9,
                (180, 180, 180), 1, cv2.LINE_AA)
    if skin.full_hd:
        _draw_thumbnails_and_bars(img, geom, seed)
    _blank_panels(img, lay)
    if geom.separator_x is not None:
        c, u = lay.ceus, lay.us
        img[min(c.y, u.y): max(c.y + c.h, u.y + u.h), geom.separator_x] = 120
    return img


def _draw_thumbnails_and_bars(img: np.ndarray, geom: ScreenGeometry, seed: int) -> None:
    """Clip thumbnails (a column of small grey images, left) and a colour bar beside
    each panel's ruler (gold ramp for CEUS, grey for B-mode)."""
    h, w = img.shape[:2]
    lay = geom.layout
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    tw, th = max(12, int(0.13 * h)), max(9, int(0.1 * h))
    x0 = max(2, int(0.02 * w))
    if x0 + tw + 10 >= min(lay.ceus.x, lay.us.x):
        return
    for k in range(4):
        y0 = int(0.15 * h) + k * (th + max(4, int(0.03 * h)))
        if y0 + th >= h - 2:
            break
        thumb = cv2.GaussianBlur(rng.integers(20, 200, (th, tw), dtype=np.uint8), (0, 0), 1.0)
        img[y0: y0 + th, x0: x0 + tw] = thumb[..., None]
        cv2.rectangle(img, (x0 - 1, y0 - 1), (x0 + tw, y0 + th), (90, 90, 90), 1)
    bar_w = max(4, int(0.008 * w))
    for box, lut in ((lay.ceus, gold_lut()), (lay.us, np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, 1))):
        x = box.x + box.w + geom.ruler_gap + geom.tick_len + 6
        bh = box.h // 2
        if x + bar_w >= w:
            continue
        ramp = lut[np.linspace(255, 0, bh).astype(np.uint8)]
        img[box.y: box.y + bh, x: x + bar_w] = ramp[:, None, :]


class TimerOverlay:
    """Draws the running ``mm:ss`` timer into the header, right end; redraws once a second."""

    def __init__(self, geom: ScreenGeometry):
        self.geom = geom
        lay = geom.layout
        self.fs = _font_scale(geom) * 1.3
        (tw, th), base = cv2.getTextSize("00:00", _FONT, self.fs, 1)
        right_box = lay.us if lay.us.x > lay.ceus.x else lay.ceus
        x1 = right_box.x + right_box.w
        top = min(lay.ceus.y, lay.us.y)
        self.x0 = max(0, x1 - tw - 2)
        self.y0 = max(0, int(top * 0.42) - th - 2)
        self.y1 = min(top - clear_margin(geom.height), self.y0 + th + base + 3)
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
