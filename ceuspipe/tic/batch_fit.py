"""Fit a bolus model to many curves at once (perfusion maps: one curve per pixel block).

:func:`fit_curves` does for ``N`` curves on one time axis what
:func:`~ceuspipe.tic.fit.fit_curve` does for one, with numpy arrays over the curves
instead of a loop:

1. **normalise**: each curve scaled to about 0..1 (1st to 99th percentile) and the same
   box of the peak parametrisation ``(t0, O_s, P_s, m, shape)`` as ``fit_curve``;
2. **start**: a grid of onsets, times to peak and shapes; for each grid curve the best
   offset and height of every curve are linear least squares in closed form, so one matrix
   product scores the whole grid for all curves and each curve starts from its best grid
   point (a data-driven global start instead of ``fit_curve``'s nine local starts);
3. **search** (:mod:`ceuspipe.tic.batched_lm`): Levenberg-Marquardt with the analytic Jacobian, per-curve damping, steps
   clipped to the box, every frame weighed the same; a curve leaves the iteration as soon
   as it has converged;
4. **reweight** (same module): :data:`~ceuspipe.tic.fit_steps.WEIGHT_PASSES` passes, each estimating the noise
   model ``sd(f) = sqrt(a**2 + (b*f)**2)`` of every curve from the previous pass' residuals
   (leverage-corrected, Fisher scoring as :func:`~ceuspipe.tic.fit.noise_sd_model`) and
   refitting with weights ``1/sd**2`` and a Huber loss at :data:`~ceuspipe.tic.fit_steps.HUBER_SD`
   SD (iteratively reweighted);
5. **verdict**: QOF, peak over noise, peak time and bolus resolution tested as
   ``fit_curve`` and :func:`~ceuspipe.tic.analyse.analyse_curve` test them; perfusion
   parameters from the closed forms of :mod:`ceuspipe.tic.peak_form`.

Curves are processed in chunks of ``chunk_size`` so that the working set stays in cache;
memory is about ``12 * chunk_size * T`` numbers besides the input and the outputs. The
iterations run in float32 by default (``dtype``); QOF and the parameters are float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.tic.batched_lm import (FTOL, FTOL_EARLY, Chunk, levenberg_marquardt, masked_quantiles, reweight,
                                     run_chunks)
from ceuspipe.tic.fit_steps import HUBER_SD, MIN_POINTS, NOISE_MODELS
from ceuspipe.tic.models import get_model
from ceuspipe.tic.parameters import PARAMETER_UNITS
from ceuspipe.tic.peak_form import DERIVED_NAMES, PeakForm, get_peak_form

__all__ = ["BatchFit", "REASONS", "fit_curves"]

#: Why a curve's fit failed: ``BatchFit.reason`` holds an index into this tuple (0 = success).
REASONS = ("", "too few valid points", "flat curve", "fit did not give finite parameters", "poor fit (QOF)",
           "no significant enhancement", "fitted peak far beyond the last frame", "bolus not resolved in time")
MIN_HALF_MAX_FRAMES = 3  # as ceuspipe.tic.analyse
MIN_BOLUS_FRAMES = 5


@dataclass
class BatchFit:
    """Fits of ``N`` curves. Arrays are ``(N,)``.

    ``params``: the model's public parameters (``MODELS[model].param_names``, curve units);
    ``parameters``: perfusion parameters named as :data:`~ceuspipe.tic.parameters.PARAMETER_UNITS`
    (``PE`` a.u., ``TTP`` s, ..., ``QOF`` %); both NaN where ``success`` is False (QOF is kept
    in ``qof`` for every curve with a fit). ``reason``: uint8 index into :data:`REASONS`;
    ``converged``: the optimiser met its tolerance (a curve at the iteration limit may still
    succeed, as in ``fit_curve``); ``n_iter``: iterations over all passes;
    ``washout_extrapolated``: the fitted curve falls to 5 % of PE only after the last point;
    ``x_peak`` ``(N, 5)``: the optimum in the peak parametrisation, curve units.
    """

    model: str
    success: np.ndarray
    reason: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    qof: np.ndarray
    params: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[str, np.ndarray] = field(default_factory=dict)
    washout_extrapolated: np.ndarray | None = None
    x_peak: np.ndarray | None = None

    @property
    def units(self) -> dict[str, str]:
        """Unit of every entry of ``parameters`` and ``params``."""
        return {**{k: PARAMETER_UNITS[k] for k in self.parameters}, **get_model(self.model).units()}

    def reasons(self) -> dict[str, int]:
        """How many curves failed for each reason (successes under ``""``)."""
        counts = np.bincount(self.reason, minlength=len(REASONS))
        return {REASONS[i]: int(c) for i, c in enumerate(counts) if c}


def _normalise(t: np.ndarray, y: np.ndarray, shape_bounds, dtype) -> tuple[Chunk, np.ndarray]:
    """The chunk's scaled curves (in ``dtype``) and boxes as
    :func:`ceuspipe.tic.fit_steps.normalise` makes them; also the reason codes ``(n,)`` of
    curves that cannot be fitted."""
    n, T = y.shape
    valid = np.isfinite(y) & np.isfinite(t)[None, :]
    n_valid = valid.sum(axis=1)
    reason = np.zeros(n, np.uint8)
    with np.errstate(all="ignore"):
        y_lo, y_hi, lo_all, hi_all = masked_quantiles(y, valid, (0.01, 0.99, 0.0, 1.0))
        scale = y_hi - y_lo
    bad = ~np.isfinite(scale) | (scale <= 0)
    y_lo = np.where(bad, lo_all, y_lo)
    scale = np.where(bad, hi_all - lo_all, scale)
    flat = ~np.isfinite(scale) | (scale <= 0) | (scale <= 1e-12 * np.maximum(np.abs(y_lo), 1e-300))
    reason[flat] = 2
    reason[n_valid < MIN_POINTS] = 1
    scale = np.where(reason > 0, 1.0, scale)
    y_lo = np.where(reason > 0, 0.0, y_lo)
    ys = np.where(valid, (y - y_lo[:, None]) / scale[:, None], 0.0)
    # per-curve first and last valid time
    ti = np.where(valid, t[None, :], np.inf).min(axis=1)
    tl = np.where(valid, t[None, :], -np.inf).max(axis=1)
    ok_t = np.isfinite(ti) & np.isfinite(tl) & (tl > ti)
    reason[(reason == 0) & ~ok_t] = 1
    ti, tl = np.where(ok_t, ti, t[0]), np.where(ok_t, tl, t[-1])
    span = tl - ti
    dt = np.diff(t[np.isfinite(t)])
    med_dt = float(np.median(dt[dt > 0])) if np.any(dt > 0) else float(np.nanmax(span)) / max(T, 1)
    s_lo, s_hi = shape_bounds
    lo = np.stack([ti - span, np.full(n, -0.5), np.zeros(n), np.full(n, max(0.5 * med_dt, 1e-3)),
                   np.full(n, s_lo)], axis=1)
    hi = np.stack([tl, np.full(n, 1.5), np.full(n, 5.0), 5.0 * span + med_dt, np.full(n, s_hi)], axis=1)
    chunk = Chunk.fresh(ys, valid, y_lo, scale, lo, hi, reason == 0, dtype)
    return chunk, reason


# --- 2. start: grid scored by a matrix product ----------------------------------------------------

def _grid(t: np.ndarray, form: PeakForm, shape_bounds, n_peak: int = 24, n_m: int = 10) -> np.ndarray:
    """Grid points ``(G, 3)`` of ``(t0, m, shape)``: peaks across the time axis ``t`` ``(T,)``,
    times from onset to peak log-spaced from 2 intervals to the span, three shapes."""
    tf = t[np.isfinite(t)]
    span = float(tf[-1] - tf[0])
    dt = np.diff(tf)
    med_dt = float(np.median(dt[dt > 0])) if np.any(dt > 0) else span / max(tf.size, 1)
    peaks = np.linspace(tf[0] + 0.02 * span, tf[-1], n_peak)
    ms = np.geomspace(max(2.0 * med_dt, 1e-2 * span), max(0.6 * span, 4.0 * med_dt), n_m)
    lo, hi = shape_bounds
    shapes = np.array([0.35, 0.6, 1.0]) if form.name == "lognormal" else np.array([1.5, 4.0, 12.0])
    shapes = np.clip(shapes, lo, hi)
    P, M, S = np.meshgrid(peaks, ms, shapes, indexing="ij")
    return np.stack([(P - M).ravel(), M.ravel(), S.ravel()], axis=1)


def _basis(t: np.ndarray, form: PeakForm, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid curves with offset 0 and height 1 at ``t`` ``(T,)``, centred: ``(Ec, var,
    mean)``, ``(G, T)`` and ``(G,)`` twice (``var`` and ``mean`` float64)."""
    xg = np.zeros((grid.shape[0], 5))
    xg[:, 0], xg[:, 2], xg[:, 3], xg[:, 4] = grid[:, 0], 1.0, grid[:, 1], grid[:, 2]
    E = form.curve(t, xg)
    mean = E.mean(axis=1, dtype=np.float64)
    Ec = E - mean[:, None].astype(E.dtype)
    return Ec, np.maximum(np.einsum("gt,gt->g", Ec, Ec, dtype=np.float64), 1e-300), mean


def _start(ch: Chunk, grid: np.ndarray, basis) -> None:
    """Sets ``ch.x``: each curve's best grid point ``grid`` ``(G, 3)`` with its least-squares
    offset and height (height clipped at 0), clipped into its box; ``basis``: :func:`_basis`."""
    Ec, var, mean = basis
    v = ch.valid
    nv = np.maximum(v.sum(axis=1, keepdims=True, dtype=np.float64), 1.0)
    ymean = (ch.ys * v).sum(axis=1, keepdims=True, dtype=np.float64) / nv
    yc = (ch.ys - ymean.astype(ch.ys.dtype)) * v  # centred, 0 where invalid
    # with every point valid: cov(y, E_g) and var(E_g) per grid curve; missing points only
    # blur the start. einsum, not a BLAS product, whose idle threads spin against the fit
    cov = np.einsum("it,gt->ig", yc, Ec).astype(np.float64)  # (n, G)
    score = np.where(cov > 0, cov * cov / var[None, :], 0.0)
    best = np.argmax(score, axis=1)
    P = np.maximum(cov[np.arange(cov.shape[0]), best] / var[best], 0.0)
    O = ymean[:, 0] - P * mean[best]
    x = np.stack([grid[best, 0], O, P, grid[best, 1], grid[best, 2]], axis=1)
    width = ch.hi - ch.lo
    ch.x = np.clip(x, ch.lo + 1e-9 * width, ch.hi - 1e-9 * width)


# --- (3. search and 4. reweight: ceuspipe.tic.batched_lm) 5. verdict -------------------------

def _verdict(t: np.ndarray, ch: Chunk, form: PeakForm, reason: np.ndarray, noise: str, robust: bool,
             min_qof: float, min_snr: float, fraction: float):
    """``(qof, derived, x, t_last)``: QOF ``(n,)`` (%), derived parameters name -> ``(n,)``
    (curve units), the optimum ``x`` ``(n, 5)`` in curve units and each curve's last valid
    time ``(n,)`` (s); sets the reason codes ``(n,)`` of failed tests in place."""
    v, ys = ch.valid.astype(np.float64), ch.ys.astype(np.float64)
    f = form.curve(t, ch.x)
    res = (ys - f) * v
    n_v = v.sum(axis=1)
    ymean = (ys * v).sum(axis=1) / np.maximum(n_v, 1)
    sst = (((ys - ymean[:, None]) * v) ** 2).sum(axis=1)
    sse = (res * res).sum(axis=1)
    with np.errstate(all="ignore"):
        qof = np.where(sst > 0, 100.0 * np.maximum(0.0, 1.0 - sse / sst), 0.0)
    weighted = noise != "additive"
    zr = res * ch.inv_sd
    z2 = np.minimum(zr * zr, HUBER_SD ** 2) if (weighted or robust) else zr * zr
    s_all = np.sqrt(z2.sum(axis=1) / np.maximum(n_v - 5, 1))
    zero_s = -ch.y_lo / ch.scale
    o_level = ch.x[:, 1] - zero_s
    noise_sd = s_all * (np.sqrt(ch.a_s ** 2 + (ch.b_s * o_level) ** 2) if weighted else 1.0)
    t_last = np.where(v > 0, t[None, :], -np.inf).max(axis=1)
    t_first = np.where(v > 0, t[None, :], np.inf).min(axis=1)
    # public peak parametrisation in the curve's units
    x = ch.x.copy()
    x[:, 1] = ch.y_lo + ch.x[:, 1] * ch.scale
    x[:, 2] = ch.x[:, 2] * ch.scale
    derived = form.derived(x, fraction)
    # bolus resolution (analyse_curve): points above half the peak and from TI to TO
    n_half = ((f - ch.x[:, 1:2] >= 0.5 * ch.x[:, 2:3]) & (v > 0)).sum(axis=1)
    to = np.where(np.isfinite(derived["TO"]), derived["TO"], np.inf)
    n_bolus = ((t[None, :] >= derived["TI"][:, None]) & (t[None, :] <= to[:, None]) & (v > 0)).sum(axis=1)
    span = t_last - t_first
    tests = [
        (3, ~np.all(np.isfinite(ch.x), axis=1)),
        (4, ~(qof >= min_qof)),
        (5, ~(ch.x[:, 2] >= min_snr * noise_sd)),
        (6, ch.x[:, 0] + ch.x[:, 3] > t_last + span),
        (3, ~np.isfinite(derived["PE"])),
        (7, (n_half < MIN_HALF_MAX_FRAMES) | (n_bolus < MIN_BOLUS_FRAMES)),
    ]
    for code, failed in tests:
        reason[failed & (reason == 0)] = code
    return qof, derived, x, t_last


# --- the public call ----------------------------------------------------------------------------------

def fit_curves(
    times_s,
    values,
    model: str = "lognormal",
    *,
    min_qof: float = 30.0,
    min_snr: float = 3.0,
    fraction: float = 0.05,
    noise: str = "auto",
    robust: bool = True,
    chunk_size: int = 1024,
    max_iter: int = 100,
    dtype=np.float32,
    workers: int = 1,
) -> BatchFit:
    """Fit ``model`` to every row of ``values`` at ``times_s``; see the module docstring.

    ``times_s`` ``(T,)`` s, one time axis for all curves (need not be uniform or sorted);
    ``values`` ``(N, T)`` linear power (float32 or float64; NaN marks a missing point).
    ``min_qof`` (%), ``min_snr``, ``fraction``, ``noise``, ``robust``: as
    :func:`~ceuspipe.tic.analyse.analyse_curve`. ``chunk_size``: curves fitted together;
    ``max_iter``: Levenberg-Marquardt iterations per pass; ``dtype``: precision of the
    curves and Jacobians in the iterations (float32, the default, is 2.5x faster than
    float64 and moves PE, TTP and mTT by less than 0.1 %; the 5x5 systems, the noise model,
    QOF and the parameters are always float64); ``workers``: threads fitting chunks at once
    (results do not depend on it). Never raises for a bad curve;
    raises :class:`~ceuspipe.errors.InputError` for an unknown model or noise model or
    arrays that do not match.
    """
    get_model(model)
    form = get_peak_form(model)
    if noise not in NOISE_MODELS:
        raise InputError(None, f"unknown noise model {noise!r}; choose one of {', '.join(NOISE_MODELS)}")
    t = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values)
    if y.ndim != 2 or y.shape[1] != t.size:
        raise InputError(None, f"values must be (N, {t.size}) for {t.size} times, got shape {y.shape}")
    order = np.argsort(np.where(np.isfinite(t), t, np.inf), kind="stable")
    t = t[order]
    N = y.shape[0]
    bm = get_model(model)
    out_x = np.full((N, 5), np.nan)
    qof = np.full(N, np.nan)
    reason = np.zeros(N, np.uint8)
    converged = np.zeros(N, bool)
    n_iter = np.zeros(N, np.int32)
    t_last = np.full(N, np.nan)
    derived = {k: np.full(N, np.nan) for k in DERIVED_NAMES}
    if np.count_nonzero(np.isfinite(t)) < MIN_POINTS:
        reason[:], N = 1, 0  # no curve can be fitted: skip the chunks
    else:
        grid = _grid(t, form, bm.shape_bounds)
        tc = t.astype(dtype)
        basis = _basis(tc, form, grid)

    def fit_chunk(sl: slice) -> None:
        yc = np.asarray(y[sl], dtype=np.float64)[:, order]
        ch, rc = _normalise(t, yc, bm.shape_bounds, dtype)
        _start(ch, grid, basis)
        ftol = FTOL_EARLY if (noise != "additive" or robust) else FTOL
        Jw = levenberg_marquardt(tc, ch, form, None, max_iter, ftol=ftol)
        reweight(tc, ch, form, Jw, noise, robust, max_iter)
        q, d, x, tl = _verdict(t, ch, form, rc, noise, robust, min_qof, min_snr, fraction)
        fitted = rc < 3  # a fit was made (it may still fail a test)
        qof[sl] = np.where(fitted, q, np.nan)
        out_x[sl] = np.where(fitted[:, None], x, np.nan)
        reason[sl], converged[sl], n_iter[sl], t_last[sl] = rc, ch.converged & fitted, ch.n_iter, tl
        for k in DERIVED_NAMES:
            derived[k][sl] = d[k]

    run_chunks(fit_chunk, N, chunk_size, workers)
    success = reason == 0
    nan = np.where(success, 1.0, np.nan)
    params = dict(zip(bm.param_names, (c * nan for c in form.public_params(out_x).T)))
    parameters = {k: derived[k] * nan for k in DERIVED_NAMES}
    parameters["QOF"] = qof * nan
    with np.errstate(invalid="ignore"):
        wo_extra = success & ~(parameters["TO"] <= t_last)
    return BatchFit(model=model, success=success, reason=reason, converged=converged, n_iter=n_iter, qof=qof,
                    params=params, parameters=parameters, washout_extrapolated=wo_extra,
                    x_peak=np.where(success[:, None], out_x, np.nan))
