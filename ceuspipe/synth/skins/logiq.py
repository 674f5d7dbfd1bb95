"""The ``logiq`` skin: a GE LOGIQ CEUS dual display (breast), measured on one of
1346x748 with panels about 720x520.

Two touching panels with trapezoid images (linear probe, virtual convex), a CEUS panel
dark but for a territory around the lesion, header text above the panels, a ``T1: m:ss``
timer and the footer below them, and decorations that touch and overlap the panels
(:func:`logiq_decorations`; the renderer keeps them off the lesion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ceuspipe.synth import anatomy
from ceuspipe.synth.anatomy import LesionShape, RespiratoryMotion, inside_footprint
from ceuspipe.synth.skins.base import SKINS, ScreenGeometry, ScreenSkin, Skin
from ceuspipe.synth.skins.drawing import (FONT, TRAPEZOID_TOP_WIDTH, blank_panels, clear_margin, font_scale,
                                          header_rows, trapezoid_mask)
from ceuspipe.synth.skins.generic import GenericScreen
from ceuspipe.video.panels import Box, PanelLayout

#: panel width / height, columns between the two panels, depth shown (breast), top of
#: the panels / frame height
LOGIQ_ASPECT = 720.0 / 520.0
LOGIQ_GAP = 1
LOGIQ_DEPTH_CM = 6.0
LOGIQ_TOP = 0.14
#: the lesion is drawn for a square of this fraction of the panel height (breast lesions
#: of 1-2 cm in 6 cm of depth), and contrast reaches a territory around it of about this
#: fraction of the image (see :meth:`LogiqScreen.truth_extras`)
LOGIQ_LESION_SCALE = 0.7
LOGIQ_TERRITORY_FRACTION = 0.3
LOGIQ_INSTITUTION = "SYNTH GENERAL HOSPITAL"


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
    tri_w = 0.5 * (1.0 - TRAPEZOID_TOP_WIDTH) * pw
    w1 = cv2.getTextSize("LOGIQ", FONT, 1.0, 1)[0][0]
    fs = max(0.25, min(0.6, 0.55 * tri_w / w1))
    (_, th), _ = cv2.getTextSize("LOGIQ", FONT, fs, 1)
    m = max(2, int(round(0.012 * pw)))
    cv2.putText(canvas, "LOGIQ", (cb.x + m, cb.y + m + th), FONT, fs, (230, 230, 230), 1, cv2.LINE_AA)
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


class LogiqScreen(GenericScreen):
    """The GE LOGIQ dual display (:class:`~ceuspipe.synth.skins.base.Screen`); of the
    original screen it keeps only the way the header text is filled in."""

    HEADER = (LOGIQ_INSTITUTION + "   {name}   ID {id}   {date} {time}",
              "ML6-15  Breast  CEUS MI {mi_ceus:.2f}  B MI {mi_bmode:.2f}  {fps:g} Hz")
    FOOTER = "G {gain_db}  DR {dr:g}  D {depth_cm:g} cm"

    def check(self, skin: ScreenSkin, spec: str) -> None:
        if skin.arrangement != "side" or skin.full_hd:
            raise ValueError(f"screen skins {spec!r} clash: the logiq screen has its own layout "
                             "(two touching panels side by side); do not combine it with stacked/fullhd")

    def geometry(self, width: int, height: int, ceus_side: str, panel_size: int | None,
                 depth_cm: float | None, skin: ScreenSkin) -> ScreenGeometry:
        """Two panels of ``w x round(w / LOGIQ_ASPECT)`` px (``w`` = ``panel_size``, default
        ``min(0.48 W, H)``: 646x467 at 1346x748, 215x155 at 448x250), :data:`LOGIQ_GAP`
        column apart (they touch), centred horizontally, their top at :data:`LOGIQ_TOP`
        of the height; room for the header above, body mark and timer below, depth ticks
        against the CEUS panel's outer edge (``ruler_gap`` 0); ``depth_cm`` default 6 cm."""
        depth_cm = LOGIQ_DEPTH_CM if depth_cm is None else float(depth_cm)
        pw = int(panel_size or round(min(0.48 * width, height)))
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

    def render_static(self, geom: ScreenGeometry, header_lines: tuple[str, str], footer: str,
                      seed: int) -> np.ndarray:
        """Header text above the panels, footer text below the B-mode panel right of the
        body mark, and :func:`logiq_decorations` (whose parts inside the panels are
        painted again over every frame, :meth:`overlay`)."""
        h = geom.height
        img = np.zeros((h, geom.width, 3), np.uint8)
        lay = geom.layout
        fs = font_scale(geom)
        left_x = min(lay.ceus.x, lay.us.x)
        for text, yy in zip(header_lines, header_rows(geom)):
            cv2.putText(img, text, (left_x, yy), FONT, fs, (225, 225, 225), 1, cv2.LINE_AA)
        ub = lay.us
        bottom = ub.y + ub.h
        (_, th), _ = cv2.getTextSize("Ag", FONT, fs, 1)
        cv2.putText(img, footer, (ub.x + int(round(0.28 * ub.w)), min(h - 2, bottom + clear_margin(h) + 2 * th)),
                    FONT, fs * 0.9, (180, 180, 180), 1, cv2.LINE_AA)
        blank_panels(img, lay)
        deco = logiq_decorations(geom)
        on = deco.image.any(axis=2)
        img[on] = deco.image[on]
        return img

    def timer_box(self, geom: ScreenGeometry, font_scale: float) -> tuple[int, int, int, int]:
        """Below the CEUS panel, at its left end."""
        cb = geom.layout.ceus
        (tw, th), base = cv2.getTextSize("T1: 00:00", FONT, font_scale, 1)
        bottom = cb.y + cb.h
        x0 = cb.x + int(round(0.04 * cb.w))
        y0 = bottom + clear_margin(geom.height) + max(0, (geom.height - bottom) // 5)
        return x0, y0, min(geom.width, x0 + tw + 4), min(geom.height, y0 + th + base + 3)

    def timer_text(self, seconds: int) -> str:
        return f"T1: {seconds // 60}:{seconds % 60:02d}"

    def noise_floor_db(self, skin: ScreenSkin) -> float:
        """9 dB below the display floor: the CEUS panel is black but for rare peaks, all
        clipped long outside the perfused territory (a max projection over a minute of
        frames stays dark there)."""
        return -9.0

    def draw_lesion(self, rng, geom: ScreenGeometry) -> tuple[LesionShape, RespiratoryMotion]:
        """A smaller lesion, drawn for a square of :data:`LOGIQ_LESION_SCALE` of the panel
        height in the middle of the wide panel, moved inside the trapezoid and off the
        decorations inside the panels (towards the centre line at 55 % of the depth)."""
        ph, pw = geom.panel_shape
        square = LOGIQ_LESION_SCALE * ph
        shape = anatomy.draw_lesion(rng, square)
        shape = replace(shape, center_x=shape.center_x + (pw - square) / 2.0,
                        center_y=shape.center_y + (ph - square) / 2.0)
        motion = anatomy.draw_motion(rng, geom.panel_size)
        return inside_footprint(shape, motion, _lesion_room(geom), ((pw - 1) / 2.0, 0.55 * ph)), motion

    def truth_extras(self, shape: LesionShape, geom: ScreenGeometry) -> dict:
        """``ceus_territory``: the tissue that contrast reaches (the CEUS panel stays dark
        elsewhere): a disc around the lesion centre (panel px at rest; it moves with
        breathing), weight 1 out to ``inner_radius_px`` (the ROI and a ring around it),
        then fading smoothly to exactly 0 at ``radius_px`` (made irregular by two
        ``harmonics`` whose phases follow the lesion's, so no random draw is added): 2-3
        times the ROI's mean radius, about :data:`LOGIQ_TERRITORY_FRACTION` of the
        footprint's area where the lesion's size allows (see
        :func:`ceuspipe.synth.tissue.territory_weight`)."""
        ph, pw = geom.panel_shape
        area = float(trapezoid_mask(ph, pw).sum())
        r_roi = shape.radius * (1.0 + shape.roi_dilation)
        outer = float(np.clip(math.sqrt(LOGIQ_TERRITORY_FRACTION * area / math.pi), 2.0 * r_roi, 3.0 * r_roi))
        inner = min(max(1.5 * r_roi, 1.15 * shape.max_roi_radius), 0.65 * outer)
        phases = [h.phase for h in shape.harmonics] + [0.0, 0.0]
        return {"ceus_territory": {
            "center_x": shape.center_x, "center_y": shape.center_y, "inner_radius_px": inner, "radius_px": outer,
            "harmonics": [{"k": 2, "amplitude": 0.12, "phase": (phases[0] + 1.0) % (2 * math.pi)},
                          {"k": 3, "amplitude": 0.08, "phase": (phases[1] + 2.0) % (2 * math.pi)}]}}

    def overlay(self, geom: ScreenGeometry) -> np.ndarray:
        """The decorations (:func:`logiq_decorations`); inside the panels: the grey bar,
        the label and the body mark's upper half."""
        return logiq_decorations(geom).image


def _lesion_room(geom: ScreenGeometry) -> np.ndarray:
    """``(h, w) bool`` panel px where the lesion's ROI may lie: the trapezoid footprint
    less the decorations inside either panel (both panels show the same plane) and a
    few pixels around them."""
    ph, pw = geom.panel_shape
    inside = logiq_decorations(geom).inside_panels(geom.layout)
    deco = np.zeros((ph, pw), bool)
    for b in (geom.layout.ceus, geom.layout.us):
        deco |= inside[b.y: b.y + ph, b.x: b.x + pw]
    deco = cv2.dilate(deco.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    return trapezoid_mask(ph, pw) & ~deco


# touching 720x520-like panels, trapezoid images, CEUS dark but around the lesion,
# decorations on and inside the panels
SKINS.register("logiq", Skin({"probe": "trapezoid", "gap": "touching", "dark_start": True}, LogiqScreen()))
