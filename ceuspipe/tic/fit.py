"""Fit a bolus model to a time-intensity curve (seconds, linear units).

:func:`fit_curve` never raises for a bad curve: too few points, a flat or
noise-only curve, or a failed optimisation come back as a :class:`FitResult`
with ``success=False`` and a one-line ``reason``.

Fitting is done in a *peak parametrisation* shared by both models,
``(t0, O, P, m, shape)``, where ``P`` is the peak height above the offset,
``m`` the time from onset to peak (s) and ``shape`` is ``sigma`` (lognormal) or
``alpha`` (gamma variate). Values are rescaled to about 0..1 for the
optimiser. The result is converted back to the public parameters of
:mod:`ceuspipe.tic.models` (``t0, O, A, mu, sigma`` or ``t0, O, K, alpha,
beta``) in the curve's own units, with the covariance propagated through
the same mapping.

Quality of fit (QOF, %): ``100 * max(0, 1 - SSE / SST)`` over the frames used
in the fit, with ``SSE = sum((y - f(t))**2)`` and ``SST = sum((y - mean(y))**2)``
(the coefficient of determination R² as a percentage, clipped at 0).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, optimize

from ceuspipe.tic.models import BolusModel, get_model

__all__ = ["FitResult", "fit_curve", "qof_percent"]

log = logging.getLogger("ceuspipe")

MIN_POINTS = 6


@dataclass
class FitResult:
    """Outcome of one model fit.

    ``params``: public model parameters (see :mod:`ceuspipe.tic.models`), empty
    when no fit was possible; ``covariance``: ``(5, 5)`` in ``model.param_names``
    order (from the Jacobian at the optimum, residual variance SSE/(n-5)), or None
    when it cannot be represented; ``stderr``: standard error per parameter; ``qof``: %
    (NaN without a fit); ``n_points``: frames used; ``reason``: why
    ``success`` is False ("" on success); ``warnings``: notes such as parameters
    that ended on a bound.
    """

    model: str
    success: bool
    reason: str = ""
    params: dict[str, float] = field(default_factory=dict)
    covariance: np.ndarray | None = None
    stderr: dict[str, float] = field(default_factory=dict)
    qof: float = float("nan")
    sse: float = float("nan")
    n_points: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def units(self) -> dict[str, str]:
        return get_model(self.model).units()

    def predict(self, t) -> np.ndarray:
        """Fitted curve at times ``t`` (s, any shape); NaN everywhere without params."""
        t = np.asarray(t, dtype=np.float64)
        if not self.params:
            return np.full(t.shape, np.nan)
        return get_model(self.model)(t, self.params)


def qof_percent(y: np.ndarray, f: np.ndarray) -> float:
    """``100 * max(0, 1 - SSE/SST)`` of data ``y`` against fitted ``f`` (same shape)."""
    y = np.asarray(y, dtype=np.float64)
    sse = float(np.sum((y - f) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 0:
        return 0.0
    return 100.0 * max(0.0, 1.0 - sse / sst)


# --- peak parametrisation <-> public parameters -----------------------------------------

def _to_public(model: str, x: np.ndarray, y_lo: float, scale: float) -> np.ndarray:
    """Internal ``(t0, O_s, P_s, m, shape)`` -> public parameter vector (curve units)."""
    t0, O_s, P_s, m, shape = (float(v) for v in x)
    O = y_lo + O_s * scale
    P = P_s * scale
    if model == "lognormal":
        sigma = shape
        mu = math.log(m) + sigma * sigma
        A = P * math.sqrt(2 * math.pi) * sigma * m * math.exp(0.5 * sigma * sigma)
        return np.array([t0, O, A, mu, sigma])
    alpha = shape
    beta = m / alpha
    # K = P * (e / m)**alpha, kept finite in log space (P may be 0).
    K = P * math.exp(min(alpha * (1.0 - math.log(m)), 700.0)) if P != 0 else 0.0
    return np.array([t0, O, K, alpha, beta])


def _internal_curve(model: BolusModel, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Scaled curve for internal parameters (y_lo = 0, scale = 1)."""
    return model.func(t, *_to_public(model.name, x, 0.0, 1.0))


def _jac_public(model: str, x: np.ndarray, y_lo: float, scale: float) -> np.ndarray:
    """Numerical Jacobian d(public)/d(internal), ``(5, 5)``."""
    J = np.zeros((5, 5))
    for j in range(5):
        h = 1e-6 * max(abs(x[j]), 1e-3)
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        J[:, j] = (_to_public(model, xp, y_lo, scale) - _to_public(model, xm, y_lo, scale)) / (2 * h)
    return J


# --- initial guesses ---------------------------------------------------------------------

def _smooth(y: np.ndarray) -> np.ndarray:
    k = max(3, (len(y) // 15) | 1)
    ys = ndimage.median_filter(y, size=k, mode="nearest")
    return ndimage.uniform_filter1d(ys, size=k, mode="nearest")


def _starts(t: np.ndarray, y: np.ndarray, model: str, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    ys = _smooth(y)
    ipk = int(np.argmax(ys))
    O0 = float(np.min(ys[: ipk + 1]))
    P0 = max(float(ys[ipk] - O0), 0.05)
    tpk = float(t[ipk])
    below = np.nonzero(ys[: ipk + 1] <= O0 + 0.1 * P0)[0]
    ta = float(t[below[-1]]) if below.size else float(t[0])
    rise = max(tpk - ta, 1e-3)
    starts = []
    for back in (0.3, 0.0, 1.0):
        t0 = ta - back * rise
        m = max(tpk - t0, lo[3] * 1.5)
        sel = t > t0
        w = np.clip(ys[sel] - O0, 0.0, None)
        tp = t[sel] - t0
        mean = float(np.trapezoid(tp * w, t[sel]) / np.trapezoid(w, t[sel])) if w.sum() > 0 and sel.sum() > 1 else 2 * m
        if model == "lognormal":
            s0 = math.sqrt(math.log(mean / m) / 1.5) if mean > m else 0.5
            shapes = [float(np.clip(s0, 0.2, 1.5)) * f for f in (1.0, 0.5, 2.0)]
        else:
            a0 = m / (mean - m) if mean > m else 2.0
            shapes = [float(np.clip(a0, 0.5, 50.0)) * f for f in (1.0, 0.4, 2.5)]
        for s in shapes:
            x = np.array([t0, O0, P0, m, s])
            starts.append(np.clip(x, lo + 1e-9 * (hi - lo) + 1e-12, hi - 1e-9 * (hi - lo) - 1e-12))
    return starts


# --- the fit -----------------------------------------------------------------------------

def fit_curve(
    times_s,
    values,
    model: str = "lognormal",
    *,
    min_qof: float = 30.0,
    min_snr: float = 3.0,
) -> FitResult:
    """Fit ``model`` ("lognormal" or "gamma") to ``values`` at ``times_s``.

    ``times_s``, ``values``: 1-D, same length; seconds and linear units. Points
    where either is non-finite are ignored; times need not be uniform or sorted.
    Success needs at least 6 points, an optimiser that ran (one stopped by its
    evaluation limit only adds a warning), a QOF of at least
    ``min_qof`` (%) and a peak height of at least ``min_snr`` times the residual
    standard deviation; otherwise ``success`` is False and ``reason`` says which
    test failed (the fitted parameters are still returned when there were any).
    Raises :class:`~ceuspipe.errors.InputError` only for an unknown model name or
    arrays of different shapes.
    """
    bm = get_model(model)
    t = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    if t.shape != y.shape:
        from ceuspipe.errors import InputError

        raise InputError(None, f"times_s has {t.size} entries but values has {y.size}")
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    n = int(t.size)
    res = FitResult(model=model, success=False, n_points=n)
    if n < MIN_POINTS:
        res.reason = f"too few valid frames to fit ({n} < {MIN_POINTS})"
        return res
    span = float(t[-1] - t[0])
    if span <= 0:
        res.reason = "all valid frames have the same time"
        return res
    y_lo = float(np.percentile(y, 1))
    scale = float(np.percentile(y, 99) - y_lo)
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.max(y) - np.min(y))
        y_lo = float(np.min(y))
    if not np.isfinite(scale) or scale <= 0 or scale <= 1e-12 * max(abs(y_lo), 1e-300):
        res.reason = "flat curve: no enhancement to fit"
        return res
    ys = (y - y_lo) / scale

    dt = np.diff(t)
    med_dt = float(np.median(dt[dt > 0])) if np.any(dt > 0) else span / n
    shape_lo, shape_hi = (0.05, 2.5) if model == "lognormal" else (0.2, 200.0)
    lo = np.array([t[0] - span, -0.5, 0.0, max(0.5 * med_dt, 1e-3), shape_lo])
    hi = np.array([t[-1], 1.5, 5.0, 5.0 * span + med_dt, shape_hi])

    def resid(x):
        r = _internal_curve(bm, t, x) - ys
        return np.nan_to_num(r, nan=1e6, posinf=1e6, neginf=-1e6)

    def solve(x0, nfev):
        try:
            return optimize.least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", max_nfev=nfev, method="trf")
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:  # pragma: no cover - defensive
            log.debug("TIC fit from %s failed: %s", x0, exc)
            return None

    # a short run from every start, then the best one polished to convergence
    best = None
    for x0 in _starts(t, ys, model, lo, hi):
        sol = solve(x0, 40)
        if sol is not None and (best is None or sol.cost < best.cost):
            best = sol
    if best is not None and best.status == 0:
        polished = solve(best.x, 500)
        if polished is not None and polished.cost <= best.cost:
            best = polished
    if best is None or not np.all(np.isfinite(best.x)):
        res.reason = "optimiser failed from every starting point"
        return res

    x = best.x
    res.params = dict(zip(bm.param_names, (float(v) for v in _to_public(model, x, y_lo, scale))))
    # residual statistics in the scaled units, so that tiny or huge curves neither
    # underflow nor overflow; reported SSE and SDs are converted back
    f_s = _internal_curve(bm, t, x)
    sse_s = float(np.sum((ys - f_s) ** 2))
    with np.errstate(over="ignore"):
        res.sse = sse_s * scale * scale
    res.qof = qof_percent(ys, f_s)
    dof = max(n - 5, 1)
    s2_s = sse_s / dof
    try:
        Jr = best.jac
        cov_int = np.linalg.pinv(Jr.T @ Jr) * s2_s
        G = _jac_public(model, x, y_lo, scale)
        with np.errstate(over="ignore", invalid="ignore"):
            cov = G @ cov_int @ G.T
            # standard errors from row-normalised forms: finite even where cov overflows
            norm = np.max(np.abs(G), axis=1)
            norm[norm == 0] = 1.0
            Gn = G / norm[:, None]
            var_n = np.einsum("ij,jk,ik->i", Gn, cov_int, Gn)
            se = norm * np.sqrt(np.clip(var_n, 0.0, None))
        if np.all(np.isfinite(cov)):
            res.covariance = cov
        res.stderr = {k: float(v) for k, v in zip(bm.param_names, se) if np.isfinite(v)}
    except (np.linalg.LinAlgError, ValueError, OverflowError):  # pragma: no cover - defensive
        res.covariance = None

    at_bound = [name for name, v, a, b in zip(("t0", "O", "P", "m", "shape"), x, lo, hi)
                if abs(v - a) <= 1e-6 * (b - a) or abs(v - b) <= 1e-6 * (b - a)]
    if at_bound:
        res.warnings.append("fit parameters on a bound: " + ", ".join(at_bound))

    peak = x[2]  # both in scaled units
    resid_sd = math.sqrt(s2_s)
    t_peak = x[0] + x[3]
    if best.status == 0:
        res.warnings.append("optimiser stopped at its evaluation limit before converging")
    if best.status < 0:
        res.reason = f"optimiser failed: {best.message}"
    elif not (res.qof >= min_qof):
        res.reason = f"poor fit: QOF {res.qof:.1f}% < {min_qof:g}%"
    elif not (peak >= min_snr * resid_sd):
        res.reason = (f"no significant enhancement: peak {peak * scale:.3g} < {min_snr:g} x residual SD "
                      f"{resid_sd * scale:.3g}")
    elif t_peak > t[-1] + span:
        res.reason = f"fitted peak at {t_peak:.1f} s lies far beyond the last frame ({t[-1]:.1f} s)"
    else:
        res.success = True
    return res
