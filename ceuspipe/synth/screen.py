"""The scanner screen around the two panels, as its skin says: geometry, the static
background (burned-in text and graphics) and the running timer.

What varies from screen to screen lives in the skins (:mod:`ceuspipe.synth.skins`,
one file per family); this module asks the skin's :class:`~ceuspipe.synth.skins.Screen`.
"""

from __future__ import annotations

import cv2
import numpy as np

from ceuspipe.synth.skins import DEFAULT_SKIN, ScreenGeometry, ScreenSkin
from ceuspipe.synth.skins.drawing import FONT, font_scale, gold_lut, gold_to_grey, panel_footprint, trapezoid_mask

__all__ = ["DEFAULT_SKIN", "ScreenGeometry", "ScreenSkin", "TimerOverlay", "gold_lut", "gold_to_grey",
           "make_geometry", "panel_footprint", "render_static", "trapezoid_mask"]


def make_geometry(width: int, height: int, ceus_side: str, panel_size: int | None = None,
                  depth_cm: float | None = None, skin: ScreenSkin = DEFAULT_SKIN) -> ScreenGeometry:
    """Place the two panels of a ``width x height`` px frame, CEUS on ``ceus_side``
    (``"left"``/``"right"``; ``"left"`` is on top when stacked), as the skin's screen
    lays them out; ``panel_size`` (px) and ``depth_cm``: ``None`` for the screen's own.

    Raises ``ValueError`` when the frame is too small for the panels and rulers.
    """
    if ceus_side not in ("left", "right"):
        raise ValueError(f"ceus_side must be 'left' or 'right', not {ceus_side!r}")
    return skin.screen.geometry(width, height, ceus_side, panel_size, depth_cm, skin)


def render_static(geom: ScreenGeometry, header_lines: tuple[str, str], footer: str,
                  seed: int = 0) -> np.ndarray:
    """Full-frame ``(H, W, 3) uint8`` RGB background of every frame: header text, footer
    and the screen's graphics (``seed`` draws any random part), black on the panels.

    The timer is drawn separately by :class:`TimerOverlay`.
    """
    return geom.screen.render_static(geom, header_lines, footer, seed)


class TimerOverlay:
    """Draws the running timer where the skin's screen puts it; redraws once a second."""

    def __init__(self, geom: ScreenGeometry):
        self.geom = geom
        self.screen = geom.screen
        self.fs = font_scale(geom) * 1.3
        self.x0, self.y0, self.x1, self.y1 = self.screen.timer_box(geom, self.fs)
        self._second: int | None = None
        self._patch: np.ndarray | None = None

    def text(self, time_s: float) -> str:
        return self.screen.timer_text(int(time_s + 1e-9))

    def apply(self, frame: np.ndarray, time_s: float) -> None:
        """Paint the timer for ``time_s`` into ``frame`` (full frame, in place)."""
        sec = int(time_s + 1e-9)
        if sec != self._second:
            canvas = np.zeros_like(frame[self.y0: self.y1, self.x0: self.x1])
            (_, th), _ = cv2.getTextSize("00:00", FONT, self.fs, 1)
            cv2.putText(canvas, self.text(time_s), (1, min(canvas.shape[0] - 1, th + 1)), FONT,
                        self.fs, (255, 255, 255), 1, cv2.LINE_AA)
            self._patch, self._second = canvas, sec
        frame[self.y0: self.y1, self.x0: self.x1] = self._patch

