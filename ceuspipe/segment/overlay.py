"""Overlay frames: panels only, with the mask contour on CEUS and mirrored on US.

The overlay is the full dual-amplitude frame with everything outside the two
panel boxes set to black (no burned-in patient text or scanner graphics leaves
the program). The lesion mask's outer contour is drawn inside the CEUS panel
and the same contour, scaled by the panel size ratio, at the same relative
position inside the US panel. Drawing is clipped to each panel.
"""

from __future__ import annotations

import cv2
import numpy as np

from ceuspipe.video.panels import PanelLayout, black_outside_panels

#: Contour colour, RGB.
CONTOUR_RGB = (255, 220, 0)


def contour_thickness(layout: PanelLayout) -> int:
    """Line thickness in pixels: about 1/180 of the smaller CEUS panel side, at least 1."""
    return max(1, round(min(layout.ceus.w, layout.ceus.h) / 180))


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a ``(h, w)`` 0/1 (or 0/255) mask, each ``(n, 1, 2) int32`` (x, y)."""
    m = np.ascontiguousarray((mask != 0).astype(np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)


def _draw_in_box(frame: np.ndarray, box, contours, color, thickness: int) -> None:
    if not contours:
        return
    panel = np.ascontiguousarray(frame[box.y:box.y + box.h, box.x:box.x + box.w])
    cv2.drawContours(panel, contours, -1, color, thickness, lineType=cv2.LINE_AA)
    frame[box.y:box.y + box.h, box.x:box.x + box.w] = panel


def overlay_frame(frame: np.ndarray, mask: np.ndarray, layout: PanelLayout, *,
                  color: tuple[int, int, int] = CONTOUR_RGB, thickness: int | None = None) -> np.ndarray:
    """Return the overlay of one frame.

    ``frame``: ``(H, W, 3) uint8`` RGB full frame; ``mask``: ``(ceus.h, ceus.w)``
    0/1 lesion mask of the CEUS panel. Returns a new ``(H, W, 3) uint8`` array,
    zero outside the two panels.
    """
    ceus, us = layout.ceus, layout.us
    if mask.shape != (ceus.h, ceus.w):
        raise ValueError(f"mask {mask.shape} does not match the CEUS panel {(ceus.h, ceus.w)}")
    out = black_outside_panels(frame, layout)
    contours = mask_contours(mask)
    if contours:
        t = thickness or contour_thickness(layout)
        _draw_in_box(out, ceus, contours, color, t)
        sx, sy = us.w / ceus.w, us.h / ceus.h
        mirrored = [np.round(c.astype(np.float64) * (sx, sy)).astype(np.int32) for c in contours]
        _draw_in_box(out, us, mirrored, color, t)
    return out
