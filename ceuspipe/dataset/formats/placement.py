"""Which image an annotation was drawn on, and moving it onto the CEUS crop.

Shared by the built-in formats. Sizes are ``(w, h)`` in pixels; points are ``(x, y)``
pixel-centre coordinates (:mod:`ceuspipe.dataset.rasterize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.dataset.rasterize import points_inside
from ceuspipe.errors import InputError

#: Points may lie up to this many pixels outside the image's pixel centres.
POINT_TOLERANCE_PX = 1.0


def _frame_by_name(rest: str) -> str | None:
    rest = rest.lower()
    if "full" in rest:
        return "full"
    if "ceus" in rest or "mask" in rest:
        return "ceus"
    return None


def decide_frame(path: Path, kf: KeyFrame, size: tuple[int, int] | None) -> str:
    """``"full"`` or ``"ceus"``: the image annotation file ``path`` was drawn on.

    ``size`` ``(w, h)`` equal to the full frame or the CEUS panel decides; when both
    match, or ``size`` is ``None``, ``_full`` / ``_ceus`` / ``mask`` after the stem in
    the file name does. :class:`InputError` naming ``path`` when neither tells.
    """
    lay = kf.layout
    full = (lay.frame_width, lay.frame_height)
    ceus = (lay.ceus.w, lay.ceus.h)
    by_name = _frame_by_name(path.name[len(kf.stem):].rsplit(".", 1)[0])
    if size is not None:
        matches = [name for name, s in (("full", full), ("ceus", ceus)) if s == size]
        if len(matches) == 1:
            return matches[0]
        if len(matches) == 2 and by_name:
            return by_name
        if not matches:
            raise InputError(path, f"image size {size[0]}x{size[1]} matches neither the full frame "
                                   f"({full[0]}x{full[1]}) nor the CEUS panel ({ceus[0]}x{ceus[1]})")
    if by_name:
        return by_name
    raise InputError(path, "cannot tell whether it was drawn on the full frame or the CEUS crop "
                           "(no image size and no _full/_ceus in the name)")


def points_to_crop(path: Path, kf: KeyFrame, frame: str, pts: np.ndarray, name: str) -> np.ndarray:
    """``(n, 2)`` points drawn on ``frame`` ("full"/"ceus") moved onto the CEUS crop.

    :class:`InputError` naming ``path`` and shape ``name`` when a point lies outside the
    image or (full frame) outside the CEUS panel, beyond :data:`POINT_TOLERANCE_PX`.
    """
    lay = kf.layout
    c = lay.ceus
    if frame == "full":
        if not points_inside(pts, lay.frame_width, lay.frame_height, POINT_TOLERANCE_PX):
            raise InputError(path, f"{name} has points outside the {lay.frame_width}x{lay.frame_height} frame")
        pts = pts - np.array([c.x, c.y], dtype=np.float64)
        if not points_inside(pts, c.w, c.h, POINT_TOLERANCE_PX):
            raise InputError(path, f"{name} has points outside the CEUS panel "
                                   f"(x {c.x}-{c.x + c.w - 1}, y {c.y}-{c.y + c.h - 1})")
    elif not points_inside(pts, c.w, c.h, POINT_TOLERANCE_PX):
        raise InputError(path, f"{name} has points outside the {c.w}x{c.h} CEUS crop")
    return pts


def mask_to_crop(mask: np.ndarray, kf: KeyFrame, frame: str) -> np.ndarray:
    """An ``(h, w)`` mask of image ``frame`` ("full"/"ceus") as a CEUS-crop mask."""
    if frame != "full":
        return mask
    b = kf.layout.ceus
    return np.ascontiguousarray(mask[b.y : b.y + b.h, b.x : b.x + b.w])
