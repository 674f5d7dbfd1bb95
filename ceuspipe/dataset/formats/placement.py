"""Where an annotation belongs: its key frame (by name), the image it was drawn on (full
frame or CEUS crop), and moving it onto the CEUS crop.

Shared by the built-in formats. Sizes are ``(w, h)`` in pixels; points are ``(x, y)``
pixel-centre coordinates (:mod:`ceuspipe.dataset.rasterize`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.dataset.rasterize import as_points, drop_repeated, points_inside, self_intersection
from ceuspipe.errors import InputError

#: Points may lie up to this many pixels outside the image's pixel centres.
POINT_TOLERANCE_PX = 1.0


def match_stem(name: str, stems: set[str]) -> str | None:
    """The longest stem that ``name`` starts with, followed by ``_``, ``.``, ``-`` or the end."""
    best = None
    for i in range(1, len(name) + 1):
        if i == len(name) or name[i] in "_.-":
            if name[:i] in stems:
                best = name[:i]
    return best


def _frame_by_name(rest: str) -> str | None:
    rest = rest.lower()
    if "full" in rest:
        return "full"
    if "ceus" in rest or "mask" in rest:
        return "ceus"
    return None


def decide_frame(path: Path, kf: KeyFrame, size: tuple[int, int] | None, name: str | None = None) -> str:
    """``"full"`` or ``"ceus"``: the image an annotation in file ``path`` was drawn on.

    ``size`` ``(w, h)`` equal to the full frame or the CEUS panel decides; when both
    match, or ``size`` is ``None``, ``_full`` / ``_ceus`` / ``mask`` after the stem in
    ``name`` (the image's file name; default ``path``'s) does. :class:`InputError`
    naming ``path`` when neither tells.
    """
    lay = kf.layout
    full = (lay.frame_width, lay.frame_height)
    ceus = (lay.ceus.w, lay.ceus.h)
    by_name = _frame_by_name((name or path.name)[len(kf.stem):].rsplit(".", 1)[0])
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


def parse_points(path: Path, points, name: str, count: int | None = None) -> np.ndarray:
    """``points`` as an ``(n, 2)`` float64 array; :class:`InputError` naming ``path`` and
    shape ``name`` when they are not finite ``[x, y]`` pairs or not ``count`` of them."""
    try:
        pts = as_points(points)
    except (ValueError, TypeError) as exc:
        raise InputError(path, f"{name}: invalid points ({exc})") from None
    if count is not None and len(pts) != count:
        raise InputError(path, f"{name} has {len(pts)} points, needs {count}")
    return pts


def polygon_on_crop(path: Path, kf: KeyFrame, frame: str, points, name: str) -> np.ndarray:
    """``(n, 2)`` CEUS-crop points of a polygon drawn on ``frame`` ("full"/"ceus").

    :class:`InputError` naming ``path`` and ``name`` for invalid points, fewer than 3
    distinct points, points outside the image or panel, or a self-intersection.
    """
    pts = drop_repeated(parse_points(path, points, name))
    if len(pts) < 3:
        raise InputError(path, f"{name} has {len(pts)} distinct points, needs at least 3")
    pts = points_to_crop(path, kf, frame, pts, name)
    crossing = self_intersection(pts)
    if crossing is not None:
        raise InputError(path, f"{name} intersects itself (edges {crossing[0]} and {crossing[1]})")
    return pts
