"""The scanner screen around the two panels: geometry, burned-in text and graphics.

Everything drawn here lies outside the panel boxes (enforced by blanking the
panel boxes, grown by one pixel, in every overlay), except on the ``logiq`` screen,
whose decorations touch and overlap the panels as a GE LOGIQ's do
(:func:`logiq_decorations`; the renderer keeps them off the lesion).
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
    # GE LOGIQ CEUS dual display: touching 720x520-like panels, trapezoid images (linear
    # probe, virtual convex), CEUS dark but for a territory around the lesion,
    # decorations on and inside the panels (see logiq_decorations)
    "logiq": {"scanner": "logiq", "probe": "trapezoid", "gap": "touching", "dark_start": True},
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
    scanner: str = "generic"

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
        if skin.scanner == "logiq" and (skin.arrangement != "side" or skin.full_hd):
            raise ValueError(f"screen skins {spec!r} clash: the logiq screen has its own layout "
                             "(two touching panels side by side); do not combine it with stacked/fullhd")
        if skin.arrangement == "stacked" and skin.gap != "wide":
            raise ValueError("the stacked skin has its own gap; do not combine it with touching/separator")
        return skin

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["scanner"] == "generic":  # added with the logiq skin: older skins' truths stay as they were
            del d["scanner"]
        return d


DEFAULT_SKIN = ScreenSkin()

#: The ``logiq`` screen (measured on a GE LOGIQ CEUS dual display of 1346x748, panels about
#: 720x520): panel width / height, width of the trapezoid image's top edge / panel width,
#: columns between the two panels, depth shown (breast), top of the panels / frame height.
LOGIQ_ASPECT = 720.0 / 520.0
LOGIQ_TOP_WIDTH = 0.62
LOGIQ_GAP = 1
LOGIQ_DEPTH_CM = 6.0
LOGIQ_TOP = 0.14


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
    def panel_shape(self) -> tuple[int, int]:
        """``(h, w)`` of each panel in pixels (both panels are the same size); the tissue
        is rendered on a ``panel_size`` square and a non-square panel shows its top
        ``h`` rows."""
        return self.layout.ceus.h, self.layout.ceus.w

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
                  depth_cm: float | None = None, skin: ScreenSkin = DEFAULT_SKIN) -> ScreenGeometry:
    """Place two square panels side by side (a depth ruler right of each), or as the
    skin says: touching or with a separator (rulers on the outer sides), stacked
    (``ceus_side`` ``"left"`` puts CEUS on top), centred on full-HD screens, or the
    ``logiq`` screen (:func:`_logiq_geometry`; ``panel_size`` is then the panel width).
    ``depth_cm``: depth shown by the panels (default 14 cm, 6 cm on the logiq screen).

    Raises ``ValueError`` when the frame is too small for the panels and rulers.
    """
    if ceus_side not in ("left", "right"):
        raise ValueError(f"ceus_side must be 'left' or 'right', not {ceus_side!r}")
    if skin.scanner == "logiq":
        return _logiq_geometry(width, height, ceus_side, panel_size,
                               LOGIQ_DEPTH_CM if depth_cm is None else float(depth_cm), skin)
    depth_cm = 14.0 if depth_cm is None else float(depth_cm)
    s = int(panel_size or default_panel_size(width, height, skin))
    ruler_gap = max(5, int(round(0.012 * width)))
    tick_len = max(3, int(round(0.01 * width)))
    ruler_w = ruler_gap + tick_len + 1
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


def _logiq_geometry(width: int, height: int, ceus_side: str, panel_width: int | None, depth_cm: float,
                    skin: ScreenSkin) -> ScreenGeometry:
    """The GE LOGIQ dual display: two panels of ``w x round(w / LOGIQ_ASPECT)`` px
    (``w = min(0.48 W, H)`` unless given: 646x467 at 1346x748, 215x155 at 448x250),
    :data:`LOGIQ_GAP` column apart (they touch), centred horizontally, their top at
    :data:`LOGIQ_TOP` of the height; header text above, body mark and timer below,
    depth ticks against the CEUS panel's outer edge (``ruler_gap`` 0)."""
    pw = int(panel_width or round(min(0.48 * width, height)))
    ph = int(round(pw / LOGIQ_ASPECT))
    tick_len = max(3, int(round(0.01 * width)))
    top = int(round(LOGIQ_TOP * height))
    below = height - top - ph
    if pw < 48 or width - 2 * pw - LOGIQ_GAP < 2 * (tick_len + 1) or top < 12 or below < max(16, 0.12 * height):
        raise ValueError(f"frame {width}x{height} too small for two touching {pw}x{ph}px logiq panels "
                         "with header, ticks, body mark and timer")
    x_left = (width - 2 * pw - LOGIQ_GAP) // 2
    first, second = Box(x_left, top, pw, ph), Box(x_left + pw + LOGIQ_GAP, top, pw, ph)
    ceus, us = (first, second) if ceus_side == "left" else (second, first)
    return ScreenGeometry(PanelLayout(ceus, us, width, height), pw, 0, tick_len, depth_cm, skin)


def trapezoid_mask(height: int, width: int, top_fraction: float = LOGIQ_TOP_WIDTH) -> np.ndarray:
    """``(height, width) bool`` trapezoid image of a steered linear probe (virtual
    convex): the top row ``top_fraction`` of the width, centred, widening linearly to
    the full width in the bottom row; its bounding box is the whole panel."""
    h, w = int(height), int(width)
    ys = np.arange(h, dtype=np.float64)[:, None]
    xs = np.arange(w, dtype=np.float64)[None, :]
    half = 0.5 * w * (top_fraction + (1.0 - top_fraction) * ys / max(1, h - 1))
    return np.abs(xs + 0.5 - 0.5 * w) <= half + 1e-9


def panel_footprint(skin: ScreenSkin, shape: tuple[int, int]) -> np.ndarray | None:
    """``(h, w) bool`` pixels of a panel that show the image (the rest is black), or
    ``None`` when the image fills the panel (linear probe)."""
    h, w = shape
    if skin.probe == "sector":
        return fan_mask(w)
    if skin.probe == "trapezoid":
        return trapezoid_mask(h, w)
    return None


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
    if geom.skin.scanner == "logiq":
        return _render_static_logiq(geom, header_lines, footer)
    h, w = geom.height, geom.width
    img = np.zeros((h, w, 3), np.uint8)
    lay = geom.layout
    skin = geom.skin
    stacked = skin.arrangement == "stacked"
    top = min(lay.ceus.y, lay.us.y)
    fs = _font_scale(geom)
    th = cv2.getTextSize("Ag", _FONT, fs, 1)[0][1]
    line_y = _header_rows(geom)  # header: two lines in the band above the panels
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


def _header_rows(geom: ScreenGeometry) -> tuple[int, int]:
    """Baselines of the two header lines in the band above the panels."""
    h = geom.height
    top = min(geom.layout.ceus.y, geom.layout.us.y)
    fs = _font_scale(geom)
    (_, th), base = cv2.getTextSize("Ag", _FONT, fs, 1)
    line2 = top - clear_margin(h) - base - 1
    return max(th + 1, min(int(top * 0.42), line2 - th - 3)), line2


def _render_static_logiq(geom: ScreenGeometry, header_lines: tuple[str, str], footer: str) -> np.ndarray:
    """Background of the logiq screen: header text above the panels, footer text below
    the B-mode panel right of the body mark, and :func:`logiq_decorations` (whose parts
    inside the panels are painted again over every frame)."""
    h, w = geom.height, geom.width
    img = np.zeros((h, w, 3), np.uint8)
    lay = geom.layout
    fs = _font_scale(geom)
    left_x = min(lay.ceus.x, lay.us.x)
    for text, yy in zip(header_lines, _header_rows(geom)):
        cv2.putText(img, text, (left_x, yy), _FONT, fs, (225, 225, 225), 1, cv2.LINE_AA)
    ub = lay.us
    bottom = ub.y + ub.h
    (_, th), _ = cv2.getTextSize("Ag", _FONT, fs, 1)
    cv2.putText(img, footer, (ub.x + int(round(0.28 * ub.w)), min(h - 2, bottom + clear_margin(h) + 2 * th)),
                _FONT, fs * 0.9, (180, 180, 180), 1, cv2.LINE_AA)
    _blank_panels(img, lay)
    deco = logiq_decorations(geom)
    on = deco.image.any(axis=2)
    img[on] = deco.image[on]
    return img


@dataclass(frozen=True)
class LogiqDecorations:
    """What the logiq screen draws on and beside its panels, in full-frame pixels.

    ``image``: ``(H, W, 3) uint8`` RGB, 0 where nothing is drawn; ``parts``: name ->
    ``(H, W) bool`` where each part is drawn: ``grey_bar`` (inside the B-mode panel's
    top-left black triangle), ``label`` ("LOGIQ", inside the CEUS panel's top-left
    black triangle), ``ticks`` (depth ticks every cm, longer every 5 cm, against the CEUS
    panel's outer edge: right of it when CEUS is on the right, left of it otherwise),
    ``body_mark`` (breast outline with a probe bar, centred on the B-mode panel's bottom
    edge: half inside, half below).
    """

    image: np.ndarray
    parts: dict

    def inside_panels(self, layout: PanelLayout) -> np.ndarray:
        """``(H, W) bool``: the decoration pixels that lie inside either panel box."""
        inside = np.zeros(self.image.shape[:2], bool)
        for b in (layout.ceus, layout.us):
            inside[b.y: b.y + b.h, b.x: b.x + b.w] = True
        return inside & self.image.any(axis=2)


def logiq_decorations(geom: ScreenGeometry) -> LogiqDecorations:
    """Draw the logiq screen's grey bar, label, depth ticks and body mark (see
    :class:`LogiqDecorations`). The grey bar and the label are clipped to the panels'
    black triangles; the body mark is the only part that covers image pixels."""
    H, W = geom.height, geom.width
    lay = geom.layout
    cb, ub = lay.ceus, lay.us
    ph, pw = geom.panel_shape
    outside_fp = ~trapezoid_mask(ph, pw)
    image = np.zeros((H, W, 3), np.uint8)
    parts = {}

    def part(name: str, canvas: np.ndarray, clip_box=None) -> None:
        on = canvas.any(axis=2)
        if clip_box is not None:  # keep only the box's black triangles
            keep = np.zeros_like(on)
            keep[clip_box.y: clip_box.y + ph, clip_box.x: clip_box.x + pw] = outside_fp
            on &= keep
        parts[name] = on
        image[on] = canvas[on]

    # grey bar: white (top) to dark grey, rows 8-45 % of the panel, a column in from the edge
    canvas = np.zeros_like(image)
    bw = max(2, int(round(0.012 * pw)))
    y0, y1 = ub.y + int(round(0.08 * ph)), ub.y + int(round(0.45 * ph))
    ramp = np.linspace(255, 16, y1 - y0).astype(np.uint8)
    canvas[y0: y1, ub.x + 1: ub.x + 1 + bw] = ramp[:, None, None]
    part("grey_bar", canvas, ub)
    # "LOGIQ" label in the CEUS panel's top-left triangle
    canvas = np.zeros_like(image)
    tri_w = 0.5 * (1.0 - LOGIQ_TOP_WIDTH) * pw
    w1 = cv2.getTextSize("LOGIQ", _FONT, 1.0, 1)[0][0]
    fs = max(0.25, min(0.6, 0.55 * tri_w / w1))
    (_, th), _ = cv2.getTextSize("LOGIQ", _FONT, fs, 1)
    m = max(2, int(round(0.012 * pw)))
    cv2.putText(canvas, "LOGIQ", (cb.x + m, cb.y + m + th), _FONT, fs, (230, 230, 230), 1, cv2.LINE_AA)
    part("label", canvas, cb)
    # depth ticks against the CEUS panel's outer edge, every cm, longer every 5 cm, no line
    canvas = np.zeros_like(image)
    on_left = cb.x < ub.x
    x = cb.x - 1 if on_left else cb.x + cb.w
    sign = -1 if on_left else 1
    for i in range(int(geom.depth_cm) + 1):
        yy = cb.y + int(round(i * (ph - 1) / geom.depth_cm))
        length = geom.tick_len if i % 5 == 0 else max(2, geom.tick_len // 2)
        cv2.line(canvas, (x, yy), (x + sign * (length - 1), yy), (200, 200, 200), 1)
    part("ticks", canvas)
    # body mark: breast outline, nipple and probe bar, centred on the B-mode panel's bottom edge
    canvas = np.zeros_like(image)
    r = max(5, int(round(0.045 * pw)))
    cx, cy = ub.x + int(round(0.12 * pw)), ub.y + ph
    cv2.circle(canvas, (cx, cy), r, (200, 200, 200), 1, cv2.LINE_AA)
    cv2.circle(canvas, (cx, cy), max(1, r // 6), (200, 200, 200), -1)
    a = np.deg2rad(-40.0)
    px, py = cx + 0.55 * r * np.cos(a), cy + 0.55 * r * np.sin(a)
    dx, dy = 0.5 * r * -np.sin(a), 0.5 * r * np.cos(a)
    cv2.line(canvas, (int(round(px - dx)), int(round(py - dy))), (int(round(px + dx)), int(round(py + dy))),
             (110, 190, 255), max(2, r // 4))
    part("body_mark", canvas)
    return LogiqDecorations(image, parts)


class TimerOverlay:
    """Draws the running ``mm:ss`` timer into the header, right end; redraws once a second.

    On the logiq screen: ``T1: m:ss`` below the CEUS panel, left end."""

    def __init__(self, geom: ScreenGeometry):
        self.geom = geom
        self.logiq = geom.skin.scanner == "logiq"
        if self.logiq:
            self._init_logiq()
            return
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

    def _init_logiq(self) -> None:
        geom = self.geom
        cb = geom.layout.ceus
        self.fs = _font_scale(geom) * 1.3
        (tw, th), base = cv2.getTextSize("T1: 00:00", _FONT, self.fs, 1)
        bottom = cb.y + cb.h
        self.x0 = cb.x + int(round(0.04 * cb.w))
        self.x1 = min(geom.width, self.x0 + tw + 4)
        self.y0 = bottom + clear_margin(geom.height) + max(0, (geom.height - bottom) // 5)
        self.y1 = min(geom.height, self.y0 + th + base + 3)
        self._second = None
        self._patch = None

    def text(self, time_s: float) -> str:
        sec = int(time_s + 1e-9)
        if self.logiq:
            return f"T1: {sec // 60}:{sec % 60:02d}"
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
