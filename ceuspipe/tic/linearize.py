"""Undo the display log-compression of CEUS grey levels.

Scanners display echo power ``P`` log-compressed over a dynamic range of
``DR`` dB: ``g = 255 * (1 + 10*log10(P) / DR)`` (clipped to 0..255), with
``P = 1`` at full white. The inverse used here is

    I_lin = 10 ** ((g / 255 - 1) * DR / 10)

so ``I_lin`` is in linear power units relative to full scale (1.0 at g = 255,
``10**(-DR/10)`` at g = 0). Averaging grey levels instead of ``I_lin`` averages
logarithms and biases every perfusion parameter, so ROI means are taken on
``I_lin``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ceuspipe.errors import InputError

__all__ = ["linearize", "lut", "mean_linear_power", "mean_gray", "to_gray"]

# ITU-R BT.601 luma weights (what cv2.COLOR_RGB2GRAY uses).
_LUMA = np.array([0.299, 0.587, 0.114])


def _check_dr(dynamic_range_db: float) -> float:
    dr = float(dynamic_range_db)
    if not np.isfinite(dr) or dr <= 0:
        raise InputError(None, f"dynamic range must be a positive number of dB, got {dynamic_range_db!r}")
    return dr


@lru_cache(maxsize=32)
def _lut_cached(dr: float) -> np.ndarray:
    table = 10.0 ** ((np.arange(256, dtype=np.float64) / 255.0 - 1.0) * dr / 10.0)
    table.setflags(write=False)
    return table


def lut(dynamic_range_db: float = 60.0) -> np.ndarray:
    """The ``(256,) float64`` read-only table ``I_lin[g]`` for uint8 grey levels."""
    return _lut_cached(_check_dr(dynamic_range_db))


def to_gray(panel: np.ndarray) -> np.ndarray:
    """Return a 2-D grey panel: ``(H, W)`` unchanged, ``(H, W, 3)`` RGB -> BT.601 luma.

    The luma of a uint8 RGB panel is rounded back to uint8 so the lookup table
    still applies. ``(H, W, 1)`` is squeezed.
    """
    a = np.asarray(panel)
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 1:
        return a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 3:
        y = a.astype(np.float64) @ _LUMA
        if a.dtype == np.uint8:
            return np.clip(np.rint(y), 0, 255).astype(np.uint8)
        return y
    raise InputError(None, f"expected an (H, W) grey or (H, W, 3) RGB panel, got shape {a.shape}")


def linearize(gray: np.ndarray, dynamic_range_db: float = 60.0) -> np.ndarray:
    """Per-pixel linear power ``10**((g/255 - 1)*DR/10)`` of grey levels ``g``.

    ``gray``: any shape; uint8 (0..255, through a 256-entry table) or float
    (grey-level units 0..255, not 0..1; values outside are not clipped).
    Returns float64 of the same shape, in linear power relative to full scale.
    """
    dr = _check_dr(dynamic_range_db)
    a = np.asarray(gray)
    if a.dtype == np.uint8:
        return _lut_cached(dr)[a]
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
        raise InputError(None, f"grey levels must be uint8 or float, got dtype {a.dtype}")
    return np.power(10.0, (a.astype(np.float64) / 255.0 - 1.0) * (dr / 10.0))


def _inside(gray_panel: np.ndarray, mask: np.ndarray) -> np.ndarray:
    g = to_gray(gray_panel)
    m = np.asarray(mask)
    if m.shape != g.shape:
        raise InputError(None, f"mask shape {m.shape} does not match panel shape {g.shape}")
    return g[m != 0] if m.dtype != np.bool_ else g[m]


def mean_linear_power(gray_panel: np.ndarray, mask: np.ndarray, dynamic_range_db: float = 60.0) -> float:
    """Mean of ``linearize(gray_panel)`` over pixels where ``mask`` is non-zero.

    ``gray_panel``: ``(H, W)`` grey (or ``(H, W, 3)`` RGB, converted to luma);
    ``mask``: ``(H, W)``, any non-zero value is inside (0/1 or 0/255).
    Returns linear power relative to full scale (dimensionless, "a.u."), NaN for
    an empty mask. For uint8 input only a 256-bin histogram is built, so the
    cost is one pass over the masked pixels.
    """
    dr = _check_dr(dynamic_range_db)
    v = _inside(gray_panel, mask)
    if v.size == 0:
        return float("nan")
    if v.dtype == np.uint8:
        hist = np.bincount(v, minlength=256)
        return float(hist @ _lut_cached(dr) / v.size)
    return float(np.mean(linearize(v, dr)))


def mean_gray(gray_panel: np.ndarray, mask: np.ndarray) -> float:
    """Mean grey level (0..255) over pixels where ``mask`` is non-zero; NaN if empty.

    Shapes as in :func:`mean_linear_power`. Reported for reference only: perfusion
    parameters are computed on :func:`mean_linear_power`.
    """
    v = _inside(gray_panel, mask)
    if v.size == 0:
        return float("nan")
    return float(np.mean(v, dtype=np.float64))
