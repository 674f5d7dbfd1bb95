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
3. **search**: Levenberg-Marquardt with the analytic Jacobian, per-curve damping, steps
   clipped to the box, every frame weighed the same; a curve leaves the iteration as soon
   as it has converged;
4. **reweight**: :data:`~ceuspipe.tic.fit.WEIGHT_PASSES` passes, each estimating the noise
   model ``sd(f) = sqrt(a**2 + (b*f)**2)`` of every curve from the previous pass' residuals
   (leverage-corrected, Fisher scoring as :func:`~ceuspipe.tic.fit.noise_sd_model`) and
   refitting with weights ``1/sd**2`` and a Huber loss at :data:`~ceuspipe.tic.fit.HUBER_SD`
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
from ceuspipe.tic.fit_steps import HUBER_SD, MIN_POINTS, NOISE_MODELS, WEIGHT_PASSES
from ceuspipe.tic.models import get_model
from ceuspipe.tic.parameters import PARAMETER_UNITS
from ceuspipe.tic.peak_form import DERIVED_NAMES, PeakForm, get_peak_form

__all__ = ["BatchFit", "REASONS", "fit_curves"]

#: Why a curve's fit failed: ``BatchFit.reason`` holds an index into this tuple (0 = success).
REASONS = ("", "too few valid points", "flat curve", "fit did not give finite parameters", "poor fit (QOF)",
           "no significant enhancement", "fitted peak far beyond the last frame", "bolus not resolved in time")
MIN_HALF_MAX_FRAMES = 3  # as ceuspipe.tic.analyse
MIN_BOLUS_FRAMES = 5
# Levenberg-Marquardt stops when a step lowers the cost by less than this fraction (the last
# pass; earlier passes only find the basin and the next pass' weights, FTOL_EARLY)
FTOL = 1e-7
FTOL_EARLY = 1e-4


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


# --- fit state of one chunk ------------------------------------------------------------------------

@dataclass
class _Chunk:
    """One chunk of ``n`` curves on ``T`` times: ``ys`` ``(n, T)`` scaled values (0 where
    invalid), ``valid`` ``(n, T)`` float 0/1, ``y_lo``/``scale`` ``(n,)``, box ``lo``/``hi``
    ``(n, 5)``, ``x`` ``(n, 5)`` current optimum, ``inv_sd`` ``(n, T)`` weights' 1/SD."""

    ys: np.ndarray
    valid: np.ndarray
    y_lo: np.ndarray
    scale: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    x: np.ndarray
    inv_sd: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    a_s: np.ndarray
    b_s: np.ndarray
    live: np.ndarray


def _normalise(t: np.ndarray, y: np.ndarray, shape_bounds, dtype) -> tuple[_Chunk, np.ndarray]:
    """The chunk's scaled curves (in ``dtype``) and boxes as
    :func:`ceuspipe.tic.fit_steps.normalise` makes them; also the reason codes ``(n,)`` of
    curves that cannot be fitted."""
    n, T = y.shape
    valid = np.isfinite(y) & np.isfinite(t)[None, :]
    n_valid = valid.sum(axis=1)
    reason = np.zeros(n, np.uint8)
    with np.errstate(all="ignore"):
        y_lo, y_hi, lo_all, hi_all = _masked_quantiles(y, valid, (0.01, 0.99, 0.0, 1.0))
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
    z = np.zeros(n)
    chunk = _Chunk(ys=ys.astype(dtype), valid=valid.astype(dtype), y_lo=y_lo, scale=scale, lo=lo, hi=hi,
                   x=np.zeros((n, 5)), inv_sd=valid.astype(dtype), converged=np.zeros(n, bool),
                   n_iter=np.zeros(n, np.int32), a_s=z + 1.0, b_s=z.copy(), live=reason == 0)
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


def _start(ch: _Chunk, grid: np.ndarray, basis) -> None:
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


# --- 3. Levenberg-Marquardt ---------------------------------------------------------------------------

def _cost(r: np.ndarray, k: float | None) -> np.ndarray:
    """Per-curve cost ``(n,)`` of weighted residuals ``r`` ``(n, T)``: sum of squares, or the
    Huber form of ``scipy.optimize.least_squares`` at threshold ``k``."""
    if k is None:
        return np.einsum("ij,ij->i", r, r, dtype=np.float64)
    a = np.abs(r)
    return np.where(a <= k, r * r, 2.0 * k * a - k * k).sum(axis=1, dtype=np.float64)


def _lm(t: np.ndarray, ch: _Chunk, form: PeakForm, huber: float | None, max_iter: int,
        ftol: float = 1e-8, xtol: float = 1e-8) -> np.ndarray:
    """Levenberg-Marquardt from ``ch.x`` on the weights ``ch.inv_sd * ch.valid`` (Huber loss
    at ``huber`` weighted SD, by reweighting, when given); updates ``ch.x``, ``ch.converged``,
    ``ch.n_iter``. Returns the weighted Jacobian ``(n, 5, T)`` at the optimum (Huber
    weights included), for the leverage and the noise model. ``form`` may be any model with
    :class:`PeakForm`'s ``curve`` and ``curve_and_jacobian`` over ``p`` parameters (``ch.x``
    ``(n, p)``; the replenishment fit of :mod:`ceuspipe.tic.replenishment` has ``p = 3``)."""
    n = ch.x.shape[0]
    w_all = ch.inv_sd * ch.valid
    lam = np.full(n, 1e-3)
    f, _ = form.curve_and_jacobian(t, ch.x, jacobian=False)
    cost = _cost((f - ch.ys) * w_all, huber)
    ch.converged[:] = False
    active = np.flatnonzero(np.isfinite(cost) & ch.live)
    eye = np.eye(ch.x.shape[1])
    buf = np.empty(ch.x.size * t.size, dtype=t.dtype)  # the Jacobians' memory, reused by every iteration
    for _ in range(max_iter):
        if active.size == 0:
            break
        x, w, ys = ch.x[active], w_all[active], ch.ys[active]
        f, J = form.curve_and_jacobian(t, x, out=buf)
        r = (f - ys) * w
        sw = w
        if huber is not None:
            hw = _huber_sqrt_weights(r, huber)
            r = r * hw
            sw = w * hw
        Jw = np.multiply(J, sw[:, None, :], out=J)
        # the 5x5 systems in float64 whatever the precision of the curves
        A = _gram(Jw).astype(np.float64)
        g = np.einsum("ijt,it->ij", Jw, r, dtype=np.float64)
        d = np.maximum(np.einsum("ijj->ij", A), 1e-12 * np.max(np.einsum("ijj->ij", A), axis=1, keepdims=True) + 1e-300)
        step = _solve(A + (lam[active][:, None] * d)[:, :, None] * eye, -g)
        x_new = np.clip(x + step, ch.lo[active], ch.hi[active])
        f_new, _ = form.curve_and_jacobian(t, x_new, jacobian=False)
        c_new = _cost((f_new - ys) * w, huber)
        c_old = cost[active]
        better = np.isfinite(c_new) & (c_new < c_old)
        dx = np.abs(x_new - x)
        small = np.all(dx <= xtol * (np.abs(x) + xtol), axis=1)
        done = (better & ((c_old - c_new) <= ftol * c_old)) | small | (lam[active] > 1e12)
        ch.x[active[better]] = x_new[better]
        cost[active[better]] = c_new[better]
        lam[active] = np.where(better, np.maximum(lam[active] / 3.0, 1e-9), lam[active] * 4.0)
        ch.n_iter[active] += 1
        ch.converged[active[done]] = True
        active = active[~done]
    f, J = form.curve_and_jacobian(t, ch.x)
    sw = w_all
    if huber is not None:
        sw = w_all * _huber_sqrt_weights((f - ch.ys) * w_all, huber)
    return np.multiply(J, sw[:, None, :], out=J)


def _huber_sqrt_weights(r: np.ndarray, k: float) -> np.ndarray:
    """Square roots of the Huber IRLS weights ``min(1, k/|r|)`` of residuals ``r`` ``(n, T)``."""
    a = np.abs(r)
    return np.sqrt(np.minimum(1.0, k / np.maximum(a, np.finfo(r.dtype).tiny))).astype(r.dtype, copy=False)


def _gram(Jw: np.ndarray) -> np.ndarray:
    """``Jw @ Jw^T`` ``(n, p, p)`` of ``Jw`` ``(n, p, T)`` (``p`` = 5 for the bolus models), as
    ``p(p+1)/2`` row products: faster than a batched matmul of such small matrices, and it
    leaves BLAS threads idle."""
    p = Jw.shape[1]
    A = np.empty((Jw.shape[0], p, p))
    for j in range(p):
        for k in range(j, p):
            A[:, j, k] = A[:, k, j] = np.einsum("it,it->i", Jw[:, j], Jw[:, k])
    return A


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``A x = b`` for ``A`` ``(n, 5, 5)``, ``b`` ``(n, 5)``; zero step where singular."""
    try:
        return np.linalg.solve(A, b[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        out = np.zeros_like(b)
        for i in range(A.shape[0]):  # rare: only when some system is singular
            try:
                out[i] = np.linalg.solve(A[i], b[i])
            except np.linalg.LinAlgError:
                pass
        return out


# --- 4. reweight: the noise model of every curve --------------------------------------------------------

def _leverage(Jw: np.ndarray) -> np.ndarray:
    """Hat-matrix diagonal ``(n, T)`` of weighted Jacobians ``(n, 5, T)``."""
    with np.errstate(all="ignore"):
        Ainv = np.linalg.pinv(_gram(Jw).astype(np.float64)).astype(Jw.dtype)
    return np.clip(np.einsum("ijk,ikt,ijt->it", Ainv, Jw, Jw), 0.0, 1.0)


def _nnls2(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per curve, non-negative ``(A, B)`` minimising ``sum(w2 * (A + B*f2 - r2)**2)`` (the
    two-column NNLS of :func:`ceuspipe.tic.fit.noise_sd_model`), from the weighted sums
    ``S`` ``(n, 6)`` of ``1, f2, f2**2, r2, f2*r2, r2**2``."""
    s00, s01, s11, b0, b1, tt = S.T
    det = s00 * s11 - s01 * s01
    with np.errstate(all="ignore"):
        A = (s11 * b0 - s01 * b1) / det
        B = (s00 * b1 - s01 * b0) / det
        # on a boundary: one column alone (clipped at 0), the better of the two
        A1 = np.maximum(b0 / s00, 0.0)
        B1 = np.maximum(b1 / s11, 0.0)
    res_a = tt - 2 * A1 * b0 + A1 * A1 * s00
    res_b = tt - 2 * B1 * b1 + B1 * B1 * s11
    inside = np.isfinite(A) & np.isfinite(B) & (A >= 0) & (B >= 0)
    use_a = res_a <= res_b
    A = np.where(inside, A, np.where(use_a, A1, 0.0))
    B = np.where(inside, B, np.where(use_a, 0.0, B1))
    return np.nan_to_num(A), np.nan_to_num(B)


def _masked_quantiles(a: np.ndarray, mask: np.ndarray, qs) -> list[np.ndarray]:
    """Quantiles ``qs`` (0..1, numpy's linear rule) ``(n,)`` each of the entries of each row of
    ``a`` ``(n, T)`` where ``mask``; NaN for a row without any. One sort for all of them."""
    k = mask.sum(axis=1)
    srt = np.sort(np.where(mask, a, np.inf), axis=1)
    rows = np.arange(a.shape[0])
    out = []
    for q in qs:
        pos = q * np.maximum(k - 1, 0)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
        frac = pos - lo
        v_lo, v_hi = srt[rows, lo], srt[rows, hi]
        with np.errstate(invalid="ignore"):
            v = np.where(frac > 0, v_lo + frac * (v_hi - v_lo), v_lo)
        out.append(np.where(k > 0, v, np.nan))
    return out


def _masked_median(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median ``(n,)`` over the entries of each row of ``a`` ``(n, T)`` where ``mask``; NaN if none."""
    return _masked_quantiles(a, mask, (0.5,))[0]


def _scoring(cols: np.ndarray, keep: np.ndarray, A: np.ndarray, B: np.ndarray, fl2: np.ndarray,
             multiplicative: bool, iters: int = 12, rtol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Fisher scoring of ``(A, B)`` ``(n,)`` from ``A``, ``B`` for the points where ``keep``
    ``(n, T)``, given ``cols`` ``(n, 6, T)``: ``1, f2, f2**2, r2, f2*r2, r2**2`` (``A`` at least
    ``fl2``; held with ``multiplicative``). A curve stops when ``A`` and ``B`` change by less
    than ``rtol``; the arrays shrink to the curves still moving once half have stopped."""
    A, B = A.copy(), B.copy()
    rows = np.arange(A.size)
    c, k = cols, keep
    for _ in range(iters):
        if rows.size == 0:
            break
        a, b = A[rows], B[rows]
        w2 = k / (a[:, None] + b[:, None] * c[:, 1]) ** 2
        S = np.einsum("ijt,it->ij", c, w2)
        if multiplicative:
            # B from sum(w2 * f2 * (r2 - A)) / sum(w2 * f2**2), A held
            a_new = a
            with np.errstate(all="ignore"):
                b_new = np.maximum(np.nan_to_num((S[:, 4] - a * S[:, 1]) / S[:, 2]), 0.0)
        else:
            a_new, b_new = _nnls2(S)
            a_new = np.maximum(a_new, fl2[rows])
        moving = (np.abs(a_new - a) > rtol * a) | (np.abs(b_new - b) > rtol * np.maximum(b, 1e-300))
        A[rows], B[rows] = a_new, b_new
        if moving.sum() <= rows.size // 2:
            rows, c, k = rows[moving], c[moving], k[moving]
        elif not moving.any():
            break
    return A, B


def _noise_model(f: np.ndarray, r: np.ndarray, valid: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` ``(n,)`` of ``sd(f) = sqrt(a**2 + (b*f)**2)`` per curve from levels ``f`` and
    residuals ``r`` ``(n, T)`` over the ``valid`` points: the estimate of
    :func:`ceuspipe.tic.fit.noise_sd_model` (Fisher scoring, 12 iterations, once more without
    the points beyond 4 SD), vectorised."""
    v = valid > 0
    f = np.abs(np.asarray(f, dtype=np.float64))
    r = np.asarray(r, dtype=np.float64)
    fmax = np.where(v, f, 0.0).max(axis=1)
    floor = np.where(fmax > 0, 5e-3 * fmax, 1e-12)
    mad = 1.4826 * _masked_median(np.abs(r), v)
    n_v = v.sum(axis=1)
    additive = (n_v < 2 * MIN_POINTS) | ~(fmax > 0) | (kind == "additive")
    a_add = np.maximum(np.nan_to_num(mad), floor)
    f2, r2 = f * f, r * r
    med_f = _masked_median(f, v)
    hi = v & (f >= med_f[:, None])
    b0 = 1.4826 * _masked_median(np.abs(r) / np.maximum(f, floor[:, None]), hi)
    b0 = np.where(np.isfinite(b0), b0, 0.1)
    A, B = a_add ** 2, b0 ** 2
    fl2 = floor ** 2
    if kind == "multiplicative":
        A = fl2.copy()
    keep = v.astype(np.float64)
    cols = np.stack([np.ones_like(f2), f2, f2 * f2, r2, f2 * r2, r2 * r2], axis=1)  # (n, 6, T)
    for round_ in range(2):
        A, B = _scoring(cols, keep, A, B, fl2, kind == "multiplicative")
        if round_ == 0:
            new_keep = (v & (r2 <= 16.0 * (A[:, None] + B[:, None] * f2))).astype(np.float64)
            enough = new_keep.sum(1) >= 2 * MIN_POINTS
            A_r1, B_r1 = A.copy(), B.copy()
            keep = np.where(enough[:, None], new_keep, keep)
    # curves whose second round had too few points keep the first round's estimate
    A, B = np.where(enough, A, A_r1), np.where(enough, B, B_r1)
    a, b = np.sqrt(A), np.sqrt(B)
    return np.where(additive, a_add, a), np.where(additive, 0.0, b)


def _reweight(t: np.ndarray, ch: _Chunk, form: PeakForm, Jw: np.ndarray, noise: str, robust: bool,
              max_iter: int) -> None:
    """The iteratively reweighted passes of :func:`ceuspipe.tic.fit_steps.reweight`."""
    weighted = noise != "additive"
    if not (weighted or robust):
        return
    huber = HUBER_SD if robust else None
    zero_s = -ch.y_lo / ch.scale
    for k in range(WEIGHT_PASSES):
        f_prev = form.curve(t, ch.x)
        lev = _leverage(Jw)
        r_prev = (ch.ys - f_prev) / np.sqrt(np.maximum(1.0 - lev, 0.05))
        level = f_prev - zero_s[:, None]
        ch.a_s, ch.b_s = _noise_model(level, r_prev, ch.valid, noise)
        sd = np.sqrt(ch.a_s[:, None] ** 2 + (ch.b_s[:, None] * level) ** 2)
        ch.inv_sd = (1.0 / np.maximum(sd, 1e-300)).astype(ch.ys.dtype)
        # passes before the last only set the next pass' weights: a looser tolerance will do
        Jw = _lm(t, ch, form, huber, max_iter, ftol=FTOL if k == WEIGHT_PASSES - 1 else FTOL_EARLY)


# --- 5. verdict --------------------------------------------------------------------------------------

def _verdict(t: np.ndarray, ch: _Chunk, form: PeakForm, reason: np.ndarray, noise: str, robust: bool,
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


def run_chunks(fit_chunk, n: int, chunk_size: int, workers: int) -> None:
    """Call ``fit_chunk(slice)`` over ``n`` curves in slices of ``chunk_size``, on ``workers``
    threads when there are several slices (numpy lets go of the GIL inside its loops, so
    chunks on threads use several cores)."""
    step = max(int(chunk_size), 1)
    chunks = [slice(a, min(n, a + step)) for a in range(0, n, step)]
    if workers > 1 and len(chunks) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=int(workers)) as pool:
            list(pool.map(fit_chunk, chunks))
    else:
        for sl in chunks:
            fit_chunk(sl)

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
        Jw = _lm(tc, ch, form, None, max_iter, ftol=FTOL_EARLY if (noise != "additive" or robust) else FTOL)
        _reweight(tc, ch, form, Jw, noise, robust, max_iter)
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
