"""Reference region of parenchyma around the lesion, and lesion/reference parameters.

VueBox users read lesion parameters relative to the surrounding parenchyma: the ratio
cancels gain, depth and attenuation that scale both curves alike.

- :func:`reference_ring`: ``(H, W)`` bool ring outside a lesion mask, at ``distance_px``
  from it and ``width_px`` wide, restricted to the imaged area.
- :class:`ImagedArea`: the part of the panel that shows tissue (not the black outside
  a sector), from the running maximum over a clip's first frames of both panels.
- :func:`relative_parameters`: rPE, rWiAUC, rWoAUC, rWiWoAUC, rWiR, rWiPI (lesion over
  reference, dimensionless) and dTTP (lesion TTP minus reference TTP, s).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ceuspipe.masks import fill_holes

__all__ = ["RATIO_PARAMETERS", "RELATIVE_UNITS", "ImagedArea", "reference_ring", "relative_parameters"]

#: lesion / reference ratios (dimensionless)
RATIO_PARAMETERS = ("PE", "WiAUC", "WoAUC", "WiWoAUC", "WiR", "WiPI")
RELATIVE_UNITS = {**{f"r{k}": "1" for k in RATIO_PARAMETERS}, "dTTP": "s"}


class ImagedArea:
    """Imaged part of a panel, learnt from the first ``frames`` frames.

    Each :meth:`update` takes the grey CEUS panel ``(H, W)`` uint8 and optionally the
    grey B-mode panel (any size: resized to the CEUS panel; the same probe images the
    same sector, and B-mode shows it from the first frame while CEUS may still be
    black). A pixel is imaged when its running maximum is above ``threshold`` grey
    levels; holes (anechoic vessels, cysts) are filled and the area is eroded by
    ``margin_px`` to keep off the sector edge. After ``frames`` frames it is frozen.
    """

    def __init__(self, frames: int = 8, threshold: int = 4, margin_px: int = 2):
        self.frames = int(frames)
        self.threshold = int(threshold)
        self.margin_px = int(margin_px)
        self._max: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._seen = 0

    @property
    def learning(self) -> bool:
        """Whether :meth:`update` still learns from its frames (after that they are ignored)."""
        return self._seen < self.frames or self._mask is None

    def update(self, ceus_gray: np.ndarray, us_gray: np.ndarray | None = None) -> np.ndarray:
        """Add one frame (while still learning) and return the current ``(H, W)`` bool mask."""
        if not self.learning:
            return self._mask
        g = np.asarray(ceus_gray, dtype=np.uint8)
        cur = g
        if us_gray is not None:
            u = np.asarray(us_gray, dtype=np.uint8)
            if u.shape != g.shape:
                u = cv2.resize(u, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST)
            cur = np.maximum(g, u)
        self._max = cur.copy() if self._max is None else np.maximum(self._max, cur)
        self._seen += 1
        m = fill_holes(self._max > self.threshold)
        if self.margin_px > 0 and m.any():
            k = 2 * self.margin_px + 1
            m = cv2.erode(m.astype(np.uint8), np.ones((k, k), np.uint8), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0).astype(bool)
        self._mask = m
        return m


def reference_ring(mask: np.ndarray, distance_px: float, width_px: float,
                   imaged: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` bool: pixels farther than ``distance_px`` and at most ``distance_px +
    width_px`` (Euclidean, pixels) from the lesion ``mask`` (non-zero inside), within
    ``imaged`` (``(H, W)`` bool) when given. An empty mask gives an empty ring."""
    m = np.asarray(mask) != 0
    ring = np.zeros(m.shape, dtype=bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if not len(rows):
        return ring
    # The distance transform runs on the lesion's bounding box grown by the ring's outer
    # radius (+2 px): the same values there (the 5x5 chamfer path from a pixel to its
    # nearest lesion pixel stays inside the box of the two, and OpenCV treats the image
    # border as far), and no ring pixel lies outside it. A small lesion costs a fraction
    # of the panel.
    reach = int(math.ceil(float(distance_px) + float(width_px))) + 2
    y0, y1 = max(0, rows[0] - reach), min(m.shape[0], rows[-1] + 1 + reach)
    x0, x1 = max(0, cols[0] - reach), min(m.shape[1], cols[-1] + 1 + reach)
    d = cv2.distanceTransform((~m[y0:y1, x0:x1]).astype(np.uint8), cv2.DIST_L2, 5)
    ring[y0:y1, x0:x1] = (d > float(distance_px)) & (d <= float(distance_px) + float(width_px))
    if imaged is not None:
        ring &= np.asarray(imaged, dtype=bool)
    return ring


def _ratio_stderr(a, b) -> float:
    """Standard error of ``a.value / b.value`` from both relative errors in quadrature
    (treats the two fits as independent)."""
    ra = a.stderr / a.value if a.value else math.nan
    rb = b.stderr / b.value if b.value else math.nan
    return abs(a.value / b.value) * math.hypot(ra, rb)


def relative_parameters(lesion, reference) -> dict[str, dict]:
    """Lesion over reference parameters from two :class:`~ceuspipe.tic.analyse.TicResult`.

    Returns ``{name: {"value", "unit", "stderr", "extrapolated", "definition"}}`` for
    ``rPE, rWiAUC, rWoAUC, rWiWoAUC, rWiR, rWiPI`` (ratios, unit ``"1"``) and ``dTTP``
    (s); values are NaN unless both fits succeeded. Standard errors combine the two
    fits' errors in quadrature (relative errors for ratios), as if independent.
    ``extrapolated``: either parameter was.
    """
    ok = bool(lesion.success and reference is not None and reference.success)
    out: dict[str, dict] = {}
    for k in RATIO_PARAMETERS:
        a, b = lesion.parameters.get(k), (reference.parameters.get(k) if reference is not None else None)
        v = se = math.nan
        ex = False
        if ok and a is not None and b is not None and b.value:
            with np.errstate(all="ignore"):
                v = a.value / b.value
                se = _ratio_stderr(a, b)
            ex = bool(a.extrapolated or b.extrapolated)
        out[f"r{k}"] = {"value": v, "unit": "1", "stderr": se, "extrapolated": ex,
                        "definition": f"lesion {k} / reference {k}"}
    v = se = math.nan
    ex = False
    if ok:
        a, b = lesion.parameters["TTP"], reference.parameters["TTP"]
        v = a.value - b.value
        se = math.hypot(a.stderr, b.stderr)
        ex = bool(a.extrapolated or b.extrapolated)
    out["dTTP"] = {"value": v, "unit": "s", "stderr": se, "extrapolated": ex,
                   "definition": "lesion TTP - reference TTP"}
    return out
