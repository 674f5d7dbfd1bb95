"""Replenishment maps: ``A``, ``beta`` and ``A*beta`` per block for every refill of a clip.

The refills (destruction to next flash) come from the clip curve's analysis
(``TicResult.replenishment``, or ``tic.json``'s ``replenishment`` list); every block's binned
curve of a :class:`~ceuspipe.maps.accumulate.BlockAccumulator` is fitted over each refill at
once (:func:`ceuspipe.tic.replenishment.fit_refills`).

A time bin of the accumulator may hold flash frames and refill frames together; a bin is
used only when its mean time lies at least half a bin width after the refill's start and
before its end, so that (with frames spread evenly over the bins) it holds refill frames
only. The model is still timed from the refill's start: ``y0`` is then the curve's level
extrapolated back to the destruction.
"""

from __future__ import annotations

import numpy as np

from ceuspipe.tic.replenishment import REFILL_UNITS, fit_refills

__all__ = ["REFILL_MAPS", "replenishment_maps"]

#: The maps returned per refill, with their units (``A_beta``: ``A * beta``).
REFILL_MAPS = {k: REFILL_UNITS[k] for k in ("A", "beta", "A_beta")}


def _window(refill) -> tuple[float, float]:
    """``(start_s, end_s)`` of a :class:`~ceuspipe.tic.replenishment.Refill`, a tic.json
    refill dict or a pair."""
    if isinstance(refill, dict):
        return float(refill["start_s"]), float(refill["end_s"])
    if hasattr(refill, "start_s"):
        return float(refill.start_s), float(refill.end_s)
    a, b = refill
    return float(a), float(b)


def replenishment_maps(acc, refills, **fit_options) -> dict[str, np.ndarray]:
    """Maps of every refill in ``refills`` (objects with ``start_s``/``end_s`` s, tic.json
    dicts or ``(start_s, end_s)`` pairs) from the block curves of ``acc``.

    Returns ``A``, ``beta``, ``A_beta`` (see :data:`REFILL_MAPS`; curve units, 1/s) and
    their standard errors ``<name>_stderr``, each ``(R, ny, nx)`` float32 for ``R`` refills
    (NaN outside the imaged area and where the fit failed), ``success`` ``(R, ny, nx)`` bool,
    ``reason`` ``(R, ny, nx)`` uint8 (index into
    :data:`ceuspipe.tic.replenishment.REASONS`; 1 outside the imaged area), ``start_s`` and
    ``end_s`` ``(R,)`` s and ``bins`` ``(R,)`` int (time bins used). ``fit_options``: as
    :func:`~ceuspipe.tic.replenishment.fit_refills`. Never raises for bad curves.
    """
    times, values = acc.curves()
    ny, nx = acc.grid_shape
    half = 0.5 * (acc.bin_width_s or 0.0)
    inside = np.flatnonzero(acc.imaged_blocks.ravel() & np.isfinite(values).any(axis=1))
    windows = [_window(r) for r in refills]
    R = len(windows)
    out = {k: np.full((R, ny * nx), np.nan, np.float32) for k in REFILL_MAPS}
    out.update({f"{k}_stderr": np.full((R, ny * nx), np.nan, np.float32) for k in REFILL_MAPS})
    success = np.zeros((R, ny * nx), bool)
    reason = np.ones((R, ny * nx), np.uint8)
    bins = np.zeros(R, np.int64)
    for i, (a, b) in enumerate(windows):
        cols = (times >= a + half) & (times <= b - half)
        bins[i] = int(cols.sum())
        fit = fit_refills(times[cols], values[inside][:, cols], start_s=a, end_s=b, **fit_options)
        for k in REFILL_MAPS:
            out[k][i, inside] = np.where(fit.success, fit.params[k], np.nan)
            out[f"{k}_stderr"][i, inside] = np.where(fit.success, fit.stderr[k], np.nan)
        success[i, inside], reason[i, inside] = fit.success, fit.reason
    res = {k: v.reshape(R, ny, nx) for k, v in out.items()}
    res.update(success=success.reshape(R, ny, nx), reason=reason.reshape(R, ny, nx),
               start_s=np.array([w[0] for w in windows]), end_s=np.array([w[1] for w in windows]), bins=bins)
    return res
