"""Display orientation of a clip: FFmpeg's display matrix as a transpose and mirrors,
applied to decoded ``(H, W[, C])`` images."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("ceuspipe")

__all__ = ["IDENTITY", "Orientation", "apply_orientation", "frame_orientation", "orientation_from_display_matrix",
           "rotation_matrix_ccw"]


@dataclass(frozen=True)
class Orientation:
    """Axis-aligned display transform: transpose first, then mirror columns/rows."""

    transpose: bool = False
    flip_x: bool = False
    flip_y: bool = False
    rotation: int = 0  # counter-clockwise degrees of the rotation part, for reporting

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_x or self.flip_y)


IDENTITY = Orientation()


def orientation_from_display_matrix(matrix) -> Orientation:
    """Turn FFmpeg's 3x3 display matrix (9 int32, 16.16 fixed point) into an :class:`Orientation`.

    FFmpeg maps a source pixel ``(p, q)`` to ``(a*p + c*q, b*p + d*q)`` with
    ``a, b, c, d = m[0], m[1], m[3], m[4]`` (x right, y down). Only multiples of
    90 degrees (with optional mirroring) are supported; other angles are logged
    and ignored.
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1)
    if m.size != 9:
        raise ValueError("display matrix must have 9 elements")
    a, b, c, d = m[0] / 65536.0, m[1] / 65536.0, m[3] / 65536.0, m[4] / 65536.0
    # Rotation part for reporting: undo a column mirror first (negative determinant).
    ra, rb = (-a, b) if a * d - b * c < 0 else (a, b)
    ccw = int(round(-math.degrees(math.atan2(rb, ra)))) % 360 if (ra or rb) else 0
    eps = 1e-3
    if abs(b) < eps and abs(c) < eps and abs(a) > eps and abs(d) > eps:
        return Orientation(False, a < 0, d < 0, ccw)
    if abs(a) < eps and abs(d) < eps and abs(b) > eps and abs(c) > eps:
        return Orientation(True, c < 0, b < 0, ccw)
    log.warning("display matrix rotates by %s degrees (not a multiple of 90): ignored", ccw)
    return IDENTITY


def apply_orientation(image: np.ndarray, orient: Orientation) -> np.ndarray:
    """Return ``image`` (``(H, W, C)`` or ``(H, W)``) transformed by ``orient``, C-contiguous."""
    if orient.identity:
        return image
    if orient.transpose:
        image = image.swapaxes(0, 1)
    if orient.flip_x:
        image = image[:, ::-1]
    if orient.flip_y:
        image = image[::-1]
    return np.ascontiguousarray(image)


def rotation_matrix_ccw(degrees: int, hflip: bool = False) -> list[int]:
    """Display matrix (9 ints) rotating ``degrees`` counter-clockwise, then mirroring columns.

    Pure-Python equivalent of FFmpeg's ``av_display_rotation_set`` for multiples
    of 90 degrees; used by tests and by anyone writing oriented clips.
    """
    rad = math.radians(degrees)
    cs, sn = round(math.cos(rad)), round(math.sin(rad))
    m = [cs, -sn, 0, sn, cs, 0, 0, 0, 1]
    if hflip:
        m[0], m[3] = -m[0], -m[3]
    fixed = [int(v * 65536) for v in m[:8]] + [1 << 30]
    return fixed


def frame_orientation(frame) -> Orientation:
    """The :class:`Orientation` of a decoded PyAV frame from its display-matrix side data
    (identity without one). Read once per clip: every ``side_data`` access leaks in PyAV 18."""
    for sd in frame.side_data:
        if getattr(getattr(sd, "type", None), "name", "") == "DISPLAYMATRIX":
            raw = bytes(sd)
            if len(raw) >= 36:
                return orientation_from_display_matrix(np.frombuffer(raw[:36], dtype="=i4"))
    return IDENTITY
