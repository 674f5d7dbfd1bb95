"""The original phantom screen and the skins that switch on one display feature of
real scanners each (combine them with ``+``: ``"sector+touching"``).

Two panels side by side with a depth ruler right of each, or as the features say:
touching or with a separator (rulers on the outer sides), stacked, centred on a
full-HD screen with clip thumbnails and colour bars. Everything drawn lies outside the
panel boxes (blanked, grown by :func:`~ceuspipe.synth.skins.drawing.clear_margin`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ceuspipe.synth import anatomy
from ceuspipe.synth.anatomy import LesionShape, RespiratoryMotion, inside_footprint
from ceuspipe.synth.skins.base import DEFAULT, SKINS, ScreenGeometry, ScreenSkin, Skin
from ceuspipe.synth.skins.drawing import (FONT, blank_panels, clear_margin, fan_mask, font_scale, gold_lut,
                                          header_rows)
from ceuspipe.video.panels import Box, PanelLayout


def default_panel_size(width: int, height: int, skin: ScreenSkin) -> int:
    """Side of the square panels: ``min(0.8 * height, 0.45 * width)`` (360 at 800x450);
    ``min(0.43 H, 0.6 W)`` for stacked panels, ``min(0.55 H, 0.3 W)`` on full-HD screens."""
    if skin.arrangement == "stacked":
        return int(round(min(0.43 * height, 0.6 * width)))
    if skin.full_hd:
        return int(round(min(0.55 * height, 0.3 * width)))
    return int(round(min(0.8 * height, 0.45 * width)))


class GenericScreen:
    """The original screen (:class:`~ceuspipe.synth.skins.base.Screen`): square panels,
    header text and a ``mm:ss`` timer above them, depth rulers beside them, a grey bar
    and the footer below; a base to subclass for a new screen."""

    def check(self, skin: ScreenSkin, spec: str) -> None:
        if skin.arrangement == "stacked" and skin.gap != "wide":
            raise ValueError("the stacked skin has its own gap; do not combine it with touching/separator")

    def geometry(self, width: int, height: int, ceus_side: str, panel_size: int | None,
                 depth_cm: float | None, skin: ScreenSkin) -> ScreenGeometry:
        """Square panels of ``panel_size`` (default :func:`default_panel_size`) side by
        side, touching or with a separator, stacked (``ceus_side`` ``"left"`` puts CEUS
        on top) or centred on a full-HD screen; ``depth_cm`` default 14 cm."""
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

    #: the header's two lines and the footer: :meth:`str.format` templates of the truth's
    #: ``screen.header`` entries, ``dr`` (dynamic range, dB) and ``depth_cm``
    HEADER = ("{name}  ID {id}  {date} {time}", "CEUS MI {mi_ceus:.2f}  B MI {mi_bmode:.2f}  {fps:g} Hz")
    FOOTER = "C5-1  G {gain_db}  DR {dr:g}"

    def header_text(self, header: dict, dynamic_range_db: float, geom: ScreenGeometry
                    ) -> tuple[tuple[str, str], str]:
        """:attr:`HEADER` and :attr:`FOOTER` filled in."""
        values = {**header, "dr": dynamic_range_db, "depth_cm": geom.depth_cm}
        line1, line2 = (t.format(**values) for t in self.HEADER)
        return (line1, line2), self.FOOTER.format(**values)

    def render_static(self, geom: ScreenGeometry, header_lines: tuple[str, str], footer: str,
                      seed: int) -> np.ndarray:
        """Header text, panel labels, rulers, grey bar and footer (and the separator
        line, clip thumbnails and colour bars; ``seed`` draws the thumbnails)."""
        h, w = geom.height, geom.width
        img = np.zeros((h, w, 3), np.uint8)
        lay = geom.layout
        skin = geom.skin
        stacked = skin.arrangement == "stacked"
        fs = font_scale(geom)
        th = cv2.getTextSize("Ag", FONT, fs, 1)[0][1]
        line_y = header_rows(geom)  # header: two lines in the band above the panels
        left_x = min(lay.ceus.x, lay.us.x)
        for text, yy in zip(header_lines, line_y):
            cv2.putText(img, text, (left_x if not stacked else max(2, left_x - w // 4), yy), FONT, fs,
                        (225, 225, 225), 1, cv2.LINE_AA)
        # panel labels just above each panel, right-aligned (left of each panel when stacked)
        for name, box in (("CEUS", lay.ceus), ("B-MODE", lay.us)):
            (tw, _), _ = cv2.getTextSize(name, FONT, fs, 1)
            if stacked:
                cv2.putText(img, name, (box.x - tw - 2 * clear_margin(h), box.y + th), FONT, fs,
                            (200, 200, 120), 1, cv2.LINE_AA)
            else:
                cv2.putText(img, name, (box.x + box.w - tw, line_y[1]), FONT, fs, (200, 200, 120), 1,
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
        cv2.putText(img, footer, (left_box.x + bar_w + 8, min(h - 2, bar_y + bar_h)), FONT, fs * 0.9,
                    (180, 180, 180), 1, cv2.LINE_AA)
        if skin.full_hd:
            _draw_thumbnails_and_bars(img, geom, seed)
        blank_panels(img, lay)
        if geom.separator_x is not None:
            c, u = lay.ceus, lay.us
            img[min(c.y, u.y): max(c.y + c.h, u.y + u.h), geom.separator_x] = 120
        return img

    def timer_box(self, geom: ScreenGeometry, font_scale: float) -> tuple[int, int, int, int]:
        """In the header band, right-aligned on the right panel."""
        lay = geom.layout
        (tw, th), base = cv2.getTextSize("00:00", FONT, font_scale, 1)
        right_box = lay.us if lay.us.x > lay.ceus.x else lay.ceus
        x1 = right_box.x + right_box.w
        top = min(lay.ceus.y, lay.us.y)
        y0 = max(0, int(top * 0.42) - th - 2)
        return max(0, x1 - tw - 2), y0, x1, min(top - clear_margin(geom.height), y0 + th + base + 3)

    def timer_text(self, seconds: int) -> str:
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def noise_floor_db(self, skin: ScreenSkin) -> float:
        """3 dB above the display floor (pre-contrast panel faint grey); 5 dB below it
        for dark-start (black but for rare peaks of a few grey levels)."""
        return -5.0 if skin.dark_start else 3.0

    def draw_lesion(self, rng, geom: ScreenGeometry) -> tuple[LesionShape, RespiratoryMotion]:
        """Lesion and breathing for the ``panel_size`` square; with a sector probe the
        lesion is moved inside the fan (towards its centre line and mid-depth)."""
        s = geom.panel_size
        shape = anatomy.draw_lesion(rng, s)
        motion = anatomy.draw_motion(rng, s)
        if geom.skin.probe == "sector":
            # edge_is_outside=False: as the sector skin always placed its lesions (byte-identical clips)
            shape = inside_footprint(shape, motion, fan_mask(s), ((s - 1) / 2.0, 0.62 * s), edge_is_outside=False)
        return shape, motion

    def truth_extras(self, shape: LesionShape, geom: ScreenGeometry) -> dict:
        return {}

    def overlay(self, geom: ScreenGeometry) -> np.ndarray | None:
        return None


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


GENERIC_SCREEN = GenericScreen()
SKINS.register(DEFAULT, Skin(screen=GENERIC_SCREEN))                  # the original screen
SKINS.register("sector", Skin({"probe": "sector"}))                  # curvilinear probe: fan-shaped panels
SKINS.register("touching", Skin({"gap": "touching"}))                # panels 1-2 px apart
SKINS.register("separator", Skin({"gap": "separator"}))              # thin grey line in a narrow gap
SKINS.register("dark-start", Skin({"dark_start": True}))             # CEUS nearly black before contrast
SKINS.register("fullhd", Skin({"full_hd": True}))                    # image area centred, thumbnails, bars
SKINS.register("marks", Skin({"marks": True}))                       # mode labels, focus mark, ROI circle
SKINS.register("frozen-bmode", Skin({"frozen_bmode": True}))         # the B-mode panel repeats identically
SKINS.register("stacked", Skin({"arrangement": "stacked"}))          # CEUS and B-mode one above the other
