"""Parametric perfusion maps from block mean curves: a bolus fit per block, plus model-free maps.

:func:`compute_maps` fits every block's curve at once (:func:`ceuspipe.tic.batch_fit.fit_curves`),
so a map pixel's PE, TTP, RT, mTT, WiR, WiAUC, WoAUC, WiWoAUC and QOF mean exactly what the
clip curve's parameters mean (:mod:`ceuspipe.tic.parameters`), and adds three model-free maps
taken on each block's curve smoothed over ``smooth_s`` seconds:

==========  ======  ==================================================================
name        unit    definition
==========  ======  ==================================================================
MaxI        a.u.    maximum of the smoothed curve (linear power)
TMaxI       s       time of that maximum
AT          s       arrival: the first time the smoothed curve rises ``arrival_fraction``
                    (10 %) of the way from its minimum before ``TMaxI`` to ``MaxI``
==========  ======  ==================================================================

Every map is NaN outside the imaged area; fitted maps also where the block's fit failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.tic.batch_fit import REASONS, fit_curves
from ceuspipe.tic.parameters import PARAMETER_UNITS

__all__ = ["PerfusionMaps", "compute_maps", "maps_from_curves", "MODEL_FREE_UNITS", "FIT_MAPS"]

#: The fitted maps written by default (all of PARAMETER_UNITS but TTP_from_onset).
FIT_MAPS = ("PE", "TTP", "RT", "mTT", "WiR", "WiAUC", "WoAUC", "WiWoAUC", "QOF", "TI", "TO", "FT", "WoR", "WiPI")
MODEL_FREE_UNITS = {"MaxI": "a.u.", "TMaxI": "s", "AT": "s"}


@dataclass
class PerfusionMaps:
    """Perfusion maps on a block grid over the CEUS panel.

    ``maps``: name -> ``(ny, nx)`` float32 (NaN where the fit failed or outside the imaged
    area; model-free maps only outside); ``units``: name -> unit; ``success``: ``(ny, nx)``
    bool, the block's fit passed; ``imaged``: ``(ny, nx)`` bool, the block lies in the imaged
    area; ``reason``: ``(ny, nx)`` uint8 index into :data:`ceuspipe.tic.batch_fit.REASONS`.
    Block ``(i, j)`` covers panel pixels ``x0 + j*block_px .. x0 + (j+1)*block_px`` and
    ``y0 + i*block_px ..`` with ``origin_px = (x0, y0)``; ``pixel_size_mm``: panel pixel
    size when known. ``times_s``: the curves' time axis ``(T,)`` (s); ``model``: the bolus model.
    """

    maps: dict[str, np.ndarray]
    units: dict[str, str]
    success: np.ndarray
    imaged: np.ndarray
    reason: np.ndarray
    block_px: int
    origin_px: tuple[int, int]
    model: str
    times_s: np.ndarray
    pixel_size_mm: float | None = None
    settings: dict = field(default_factory=dict)

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(self.success.shape)

    def reasons(self) -> dict[str, int]:
        """Blocks of the imaged area by outcome (``""``: success)."""
        counts = np.bincount(self.reason[self.imaged].ravel(), minlength=len(REASONS))
        return {REASONS[i]: int(c) for i, c in enumerate(counts) if c}


def model_free(times_s: np.ndarray, values: np.ndarray, *, smooth_s: float = 2.0,
               arrival_fraction: float = 0.1, chunk: int = 4096) -> dict[str, np.ndarray]:
    """``MaxI``, ``TMaxI``, ``AT`` ``(N,)`` float64 (see the module docstring) of curves
    ``values`` ``(N, T)`` at ``times_s`` ``(T,)`` (s, increasing); NaN points are skipped, and a
    curve without any gives NaN."""
    t = np.asarray(times_s, dtype=np.float64)
    N, T = np.shape(values)
    out = {k: np.full(N, np.nan) for k in MODEL_FREE_UNITS}
    if T == 0:
        return out
    dt = float(np.median(np.diff(t))) if T > 1 else 1.0
    k = max(1, int(round(smooth_s / dt)) if dt > 0 else 1)
    for a in range(0, N, chunk):  # chunks keep the temporaries small
        with np.errstate(invalid="ignore", divide="ignore"):
            part = _model_free_chunk(t, np.asarray(values[a:a + chunk], dtype=np.float64), k, arrival_fraction)
        for name, v in part.items():
            out[name][a:a + chunk] = v
    return out


def _model_free_chunk(t: np.ndarray, y: np.ndarray, k: int, arrival_fraction: float) -> dict[str, np.ndarray]:
    """:func:`model_free` of ``y`` ``(n, T)`` with a ``k``-point moving average."""
    N, T = y.shape
    ok = np.isfinite(y)
    # moving average over k points, NaN-aware, by cumulative sums
    cs = np.concatenate([np.zeros((N, 1)), np.cumsum(np.where(ok, y, 0.0), axis=1)], axis=1)
    cn = np.concatenate([np.zeros((N, 1)), np.cumsum(ok, axis=1)], axis=1)
    lo = np.clip(np.arange(T) - k // 2, 0, T)
    hi = np.clip(np.arange(T) + (k - k // 2), 0, T)
    sm = (cs[:, hi] - cs[:, lo]) / (cn[:, hi] - cn[:, lo])
    return _peak_and_arrival(t, sm, arrival_fraction)


def _peak_and_arrival(t: np.ndarray, sm: np.ndarray, arrival_fraction: float) -> dict[str, np.ndarray]:
    """The model-free maps of smoothed curves ``sm`` ``(N, T)`` at ``t`` ``(T,)``."""
    N, T = sm.shape
    has = np.isfinite(sm).any(axis=1)
    filled = np.where(np.isfinite(sm), sm, -np.inf)
    imax = np.argmax(filled, axis=1)
    rows = np.arange(N)
    maxi = np.where(has, sm[rows, imax], np.nan)
    before = np.arange(T)[None, :] <= imax[:, None]
    base = np.min(np.where(before & np.isfinite(sm), sm, np.inf), axis=1)
    level = base + arrival_fraction * (maxi - base)
    above = before & (sm >= level[:, None])
    ia = np.argmax(above, axis=1)
    # linear interpolation between the last point below the level and the first above it
    ib = np.maximum(ia - 1, 0)
    y0, y1 = sm[rows, ib], sm[rows, ia]
    frac = np.where((ia > 0) & (y1 > y0), (level - y0) / (y1 - y0), 0.0)
    at = np.where(ia > 0, t[ib] + np.clip(frac, 0.0, 1.0) * (t[ia] - t[ib]), t[ia])
    return {"MaxI": maxi, "TMaxI": np.where(has, t[imax], np.nan), "AT": np.where(has & above.any(axis=1), at, np.nan)}


def maps_from_curves(
    times_s,
    values,
    grid_shape: tuple[int, int],
    *,
    block_px: int,
    origin_px: tuple[int, int] = (0, 0),
    imaged: np.ndarray | None = None,
    model: str = "lognormal",
    pixel_size_mm: float | None = None,
    names: tuple[str, ...] = FIT_MAPS,
    smooth_s: float = 2.0,
    arrival_fraction: float = 0.1,
    **fit_options,
) -> PerfusionMaps:
    """Maps of block curves ``values`` ``(ny*nx, T)`` (linear power, row-major grid order) at
    ``times_s`` ``(T,)`` s on a grid of ``grid_shape = (ny, nx)`` blocks; ``imaged``: ``(ny,
    nx)`` bool (default: blocks with any finite value). ``names``: fitted maps to keep (keys
    of :data:`~ceuspipe.tic.parameters.PARAMETER_UNITS`); ``fit_options``: passed to
    :func:`~ceuspipe.tic.batch_fit.fit_curves` (``min_qof``, ``min_snr``, ``fraction``, ...)."""
    ny, nx = (int(v) for v in grid_shape)
    t = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values)
    if y.shape != (ny * nx, t.size):
        raise InputError(None, f"values must be ({ny * nx}, {t.size}) for a {ny}x{nx} grid, got {y.shape}")
    unknown = [n for n in names if n not in PARAMETER_UNITS]
    if unknown:
        raise InputError(None, f"unknown map names {unknown}; choose from {', '.join(PARAMETER_UNITS)}")
    has_data = np.isfinite(y).any(axis=1).reshape(ny, nx)
    imaged = has_data if imaged is None else (np.asarray(imaged, bool).reshape(ny, nx) & has_data)
    inside = np.flatnonzero(imaged.ravel())
    fit = fit_curves(t, y[inside], model, **fit_options)
    free = model_free(t, y[inside], smooth_s=smooth_s, arrival_fraction=arrival_fraction)

    def scatter(v, fill=np.nan, dtype=np.float32):
        out = np.full(ny * nx, fill, dtype=dtype)
        out[inside] = v
        return out.reshape(ny, nx)

    maps = {k: scatter(fit.parameters[k]) for k in names}
    maps.update({k: scatter(v) for k, v in free.items()})
    units = {**{k: PARAMETER_UNITS[k] for k in names}, **MODEL_FREE_UNITS}
    settings = {"model": model, "smooth_s": float(smooth_s), "arrival_fraction": float(arrival_fraction),
                **{k: v for k, v in fit_options.items() if isinstance(v, (int, float, str, bool))}}
    return PerfusionMaps(maps=maps, units=units, success=scatter(fit.success, False, bool), imaged=imaged,
                         reason=scatter(fit.reason, 0, np.uint8), block_px=int(block_px),
                         origin_px=(int(origin_px[0]), int(origin_px[1])), model=model, times_s=t,
                         pixel_size_mm=None if pixel_size_mm is None else float(pixel_size_mm), settings=settings)


def compute_maps(acc, *, model: str = "lognormal", pixel_size_mm: float | None = None, **options) -> PerfusionMaps:
    """Maps of everything a :class:`~ceuspipe.maps.accumulate.BlockAccumulator` ``acc`` has
    collected: its block curves, grid, origin and imaged blocks; ``options``: as
    :func:`maps_from_curves` (``names``, ``smooth_s``, ``min_qof``, ...). Never raises for
    bad curves: their blocks fail (NaN) with a reason."""
    times, values = acc.curves()
    return maps_from_curves(times, values, acc.grid_shape, block_px=acc.block_px, origin_px=acc.origin_px,
                            imaged=acc.imaged_blocks, model=model, pixel_size_mm=pixel_size_mm, **options)
