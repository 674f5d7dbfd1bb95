"""Fit a bolus model to a time-intensity curve (seconds, linear units).

:func:`fit_curve` never raises for a bad curve: too few points, a flat or
noise-only curve, or a failed optimisation come back as a :class:`FitResult`
with ``success=False`` and a one-line ``reason``.

Fitting is done in a *peak parametrisation* shared by all models,
``(t0, O, P, m, shape)``, where ``P`` is the peak height above the offset,
``m`` the time from onset to peak (s) and ``shape`` the model's shape parameter
(``sigma`` for the lognormal, ``alpha`` for the gamma variate); each model's
entry in :data:`ceuspipe.tic.models.MODELS` maps it to the model's own
parameters and gives its start values and bounds. Values are rescaled to about
0..1 for the optimiser. The result is converted back to the public parameters
in the curve's own units, with the covariance propagated through the same
mapping.

Noise: CEUS speckle is multiplicative (its SD grows with the level), so by default
the fit is weighted by a noise model estimated from the residuals and made robust
to odd outlier frames (see :func:`fit_curve`); ``noise="additive", robust=False``
is the plain unweighted least-squares fit.

Quality of fit (QOF, %): ``100 * max(0, 1 - SSE / SST)`` over the frames used
in the fit, with ``SSE = sum((y - f(t))**2)`` and ``SST = sum((y - mean(y))**2)``
(the coefficient of determination R² as a percentage, clipped at 0).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, optimize, special

from ceuspipe.tic.models import BolusModel, get_model

__all__ = ["FitResult", "NOISE_MODELS", "fit_curve", "noise_sd_model", "qof_percent"]

log = logging.getLogger("ceuspipe")

MIN_POINTS = 6


@dataclass
class FitResult:
    """Outcome of one model fit.

    ``params``: public model parameters (see :mod:`ceuspipe.tic.models`), empty
    when no fit was possible; ``covariance``: ``(5, 5)`` in ``model.param_names``
    order (from the Jacobian of the weighted residuals at the optimum: the sandwich
    form for the weighted fit, residual variance times ``(J^T J)^-1`` for plain least
    squares), or None when it cannot be represented; ``stderr``:
    standard error per parameter; ``qof``: % (NaN without a fit); ``n_points``:
    frames used; ``reason``: why ``success`` is False ("" on success);
    ``warnings``: notes such as parameters that ended on a bound;
    ``residual_model``: the noise model, weights and loss used (JSON-ready).
    ``x_internal`` ``(5,)`` and ``cov_internal`` ``(5, 5)``: the optimum and its
    covariance in the peak parametrisation ``(t0, O_s, P_s, m, shape)`` with ``O_s``
    and ``P_s`` in units of ``scale`` above ``y_lo`` (see :meth:`public`); this is
    the well-conditioned form to propagate uncertainty from.
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
    residual_model: dict = field(default_factory=dict)
    x_internal: np.ndarray | None = None
    cov_internal: np.ndarray | None = None
    y_lo: float = 0.0
    scale: float = 1.0

    @property
    def units(self) -> dict[str, str]:
        return get_model(self.model).units()

    def predict(self, t) -> np.ndarray:
        """Fitted curve at times ``t`` (s, any shape); NaN everywhere without params."""
        t = np.asarray(t, dtype=np.float64)
        if not self.params:
            return np.full(t.shape, np.nan)
        return get_model(self.model)(t, self.params)

    def noise_sd(self, t) -> np.ndarray:
        """Noise SD of one frame at times ``t`` (s, any shape) by :attr:`residual_model`, in
        the curve's units; NaN without a fit."""
        f = self.predict(t)
        a = float(self.residual_model.get("additive_sd", np.nan))
        b = float(self.residual_model.get("relative_sd", 0.0))
        return np.sqrt(a * a + (b * f) ** 2)

    def public(self, x_internal) -> dict[str, float]:
        """Public parameters for an internal vector ``x_internal`` ``(5,)``."""
        bm = get_model(self.model)
        return dict(zip(bm.param_names, (float(v) for v in _to_public(bm, np.asarray(x_internal, dtype=np.float64),
                                                                        self.y_lo, self.scale))))

    def band(self, t, level: float = 0.90) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise confidence band ``(low, high)`` of the fitted curve at ``t`` (s, any
        shape) at ``level``, from the parameter covariance (delta method); NaN without one."""
        t = np.asarray(t, dtype=np.float64)
        nan = np.full(t.shape, np.nan)
        if self.x_internal is None or self.cov_internal is None or not self.params:
            return nan, nan.copy()
        bm = get_model(self.model)
        x = self.x_internal
        tf = t.ravel()
        J = np.zeros((tf.size, 5))
        se_int = np.sqrt(np.clip(np.diag(self.cov_internal), 0.0, None))
        with np.errstate(all="ignore"):
            for j in range(5):
                h = _step(x[j], se_int[j])
                xp, xm = x.copy(), x.copy()
                xp[j] += h
                xm[j] -= h
                J[:, j] = (bm.func(tf, *_to_public(bm, xp, self.y_lo, self.scale))
                           - bm.func(tf, *_to_public(bm, xm, self.y_lo, self.scale))) / (2 * h)
            sd = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", J, self.cov_internal, J), 0.0, None)).reshape(t.shape)
            f = self.predict(t)
        z = float(special.ndtri(0.5 + level / 2))
        return f - z * sd, f + z * sd


def _leverage(J: np.ndarray) -> np.ndarray:
    """Diagonal of the hat matrix ``J (J^T J)^+ J^T`` of a Jacobian ``J`` ``(n, p)``; ``(n,)``."""
    try:
        return np.clip(np.einsum("ij,ij->i", J @ np.linalg.pinv(J.T @ J), J), 0.0, 1.0)
    except (np.linalg.LinAlgError, ValueError):  # pragma: no cover - defensive
        return np.zeros(J.shape[0])


def _step(x: float, se: float) -> float:
    """Finite-difference step for a parameter of value ``x`` and standard error ``se``:
    2 % of the SE, at most 1e-3 of the parameter's size (stays inside its domain)."""
    cap = 1e-3 * max(abs(float(x)), 1e-3)
    return min(0.02 * se, cap) if se > 0 and math.isfinite(se) else 1e-3 * cap


def qof_percent(y: np.ndarray, f: np.ndarray) -> float:
    """``100 * max(0, 1 - SSE/SST)`` of data ``y`` against fitted ``f`` (same shape)."""
    y = np.asarray(y, dtype=np.float64)
    sse = float(np.sum((y - f) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 0:
        return 0.0
    return 100.0 * max(0.0, 1.0 - sse / sst)


# --- peak parametrisation <-> public parameters -----------------------------------------

def _to_public(model: str | BolusModel, x: np.ndarray, y_lo: float, scale: float) -> np.ndarray:
    """Internal ``(t0, O_s, P_s, m, shape)`` -> public parameter vector (curve units)."""
    bm = get_model(model) if isinstance(model, str) else model
    t0, O_s, P_s, m, shape = (float(v) for v in x)
    return np.array(bm.from_peak(t0, y_lo + O_s * scale, P_s * scale, m, shape), dtype=np.float64)


def _internal_curve(model: BolusModel, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Scaled curve for internal parameters (y_lo = 0, scale = 1)."""
    return model.func(t, *_to_public(model, x, 0.0, 1.0))


def _jac_public(model: str | BolusModel, x: np.ndarray, y_lo: float, scale: float) -> np.ndarray:
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


def _starts(t: np.ndarray, y: np.ndarray, bm: BolusModel, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
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
        for shape in bm.shape_starts(m, mean):
            x = np.array([t0, O0, P0, m, shape])
            starts.append(np.clip(x, lo + 1e-9 * (hi - lo) + 1e-12, hi - 1e-9 * (hi - lo) - 1e-12))
    return starts


# --- the noise model -----------------------------------------------------------------------

def noise_sd_model(f: np.ndarray, r: np.ndarray, *, kind: str = "auto") -> tuple[float, float]:
    """``(a, b)`` of ``sd(f) = sqrt(a**2 + (b*f)**2)`` from fitted values ``f`` and residuals
    ``r`` (both ``(n,)``, one unit).

    ``a**2`` and ``b**2`` solve the normal-theory likelihood equations by Fisher
    scoring: non-negative least squares of ``r**2`` on ``[1, f**2]`` weighted by
    ``1/sd**4`` of the previous iteration; then once more without the frames beyond
    4 SD, so that odd outliers do not inflate it. ``kind``: ``"auto"`` (both terms),
    ``"multiplicative"`` (``a`` held at its floor) or ``"additive"`` (``b = 0``,
    ``a`` a robust SD). ``a`` is at least 0.5 % of the largest ``|f|``: a curve
    that is exactly zero before the bolus must not weigh those frames without limit.
    """
    f = np.abs(np.asarray(f, dtype=np.float64))
    r = np.asarray(r, dtype=np.float64)
    fmax = float(np.max(f)) if f.size else 0.0
    floor = 5e-3 * fmax if fmax > 0 else 1e-12
    mad = 1.4826 * float(np.median(np.abs(r))) if r.size else 0.0
    if kind == "additive" or f.size < 2 * MIN_POINTS or not fmax > 0:
        return max(mad, floor), 0.0
    f2, r2 = f * f, r * r
    hi = f >= np.median(f)
    b0 = 1.4826 * float(np.median(np.abs(r[hi]) / np.maximum(f[hi], floor))) if hi.any() else 0.1
    A, B = max(mad, floor) ** 2, b0 ** 2
    if kind == "multiplicative":
        A = floor ** 2
    keep = np.ones(f.size, bool)
    for _ in range(2):
        for _ in range(12):
            w = 1.0 / (A + B * f2[keep])
            if kind == "multiplicative":
                B_new = max(float(np.sum(w * w * f2[keep] * (r2[keep] - A)) / np.sum((w * f2[keep]) ** 2)), 0.0)
                A_new = A
            else:
                M = np.column_stack([w, f2[keep] * w])
                coef, _ = optimize.nnls(M, r2[keep] * w)
                A_new, B_new = max(float(coef[0]), floor ** 2), float(coef[1])
            done = abs(A_new - A) <= 1e-6 * A and abs(B_new - B) <= 1e-6 * max(B, 1e-300)
            A, B = A_new, B_new
            if done:
                break
        keep = r2 <= 16.0 * (A + B * f2)
        if keep.sum() < 2 * MIN_POINTS:
            break
    return math.sqrt(A), math.sqrt(B)


NOISE_MODELS = ("auto", "multiplicative", "additive")
# Standardised residuals beyond this many noise SDs count less (Huber loss): an odd
# outlier frame cannot pull the fit, while speckle's skewed tail (at 50 % CV about 1 %
# of frames lie beyond 3 SD) hardly biases it.
HUBER_SD = 3.0
WEIGHT_PASSES = 3


# --- the fit -----------------------------------------------------------------------------

def fit_curve(
    times_s,
    values,
    model: str = "lognormal",
    *,
    min_qof: float = 30.0,
    min_snr: float = 3.0,
    noise: str = "auto",
    robust: bool = True,
) -> FitResult:
    """Fit ``model`` (a key of :data:`~ceuspipe.tic.models.MODELS`) to ``values`` at ``times_s``.

    ``times_s``, ``values``: 1-D, same length; seconds and linear units. Points
    where either is non-finite are ignored; times need not be uniform or sorted.

    The search is a bounded multi-start least-squares fit in the peak
    parametrisation. With ``noise="additive"`` and ``robust=False`` that is all (every frame
    weighs the same). Otherwise the residuals of that fit give a noise model
    ``sd(f) = sqrt(a**2 + (b*f)**2)`` (:func:`noise_sd_model`; speckle is
    multiplicative, ``sd`` grows with the level; ``noise="multiplicative"``
    keeps ``a`` at a small floor, ``"additive"`` fixes ``b = 0``) and the fit is
    repeated with weights ``1/sd(f)**2`` from the previous pass (iteratively
    reweighted, :data:`WEIGHT_PASSES` passes, the model re-estimated each time), and
    with ``robust`` a Huber loss at :data:`HUBER_SD` noise SDs. Weights from the
    previous pass, not the current parameters, keep the estimate unbiased (dividing by the
    current ``f`` would favour a curve that is too high). ``FitResult.residual_model`` records
    what was used.

    Success needs at least 6 points, an optimiser that ran (one stopped by its
    evaluation limit only adds a warning), a QOF of at least ``min_qof`` (%) and
    a peak height of at least ``min_snr`` times the noise SD at the offset
    level (the residual SD for additive noise); otherwise ``success`` is False
    and ``reason`` says which test failed (the fitted parameters are still
    returned when there were any). Raises :class:`~ceuspipe.errors.InputError`
    only for an unknown model name, noise model or arrays of different shapes.
    """
    from ceuspipe.errors import InputError

    bm = get_model(model)
    if noise not in NOISE_MODELS:
        raise InputError(None, f"unknown noise model {noise!r}; choose one of {', '.join(NOISE_MODELS)}")
    t = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    if t.shape != y.shape:
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
    shape_lo, shape_hi = bm.shape_bounds
    lo = np.array([t[0] - span, -0.5, 0.0, max(0.5 * med_dt, 1e-3), shape_lo])
    hi = np.array([t[-1], 1.5, 5.0, 5.0 * span + med_dt, shape_hi])
    # the curve's own level, in scaled units (y_lo maps to 0)
    zero_s = -y_lo / scale

    def make_resid(inv_sd):
        def resid(x):
            r = (_internal_curve(bm, t, x) - ys) * inv_sd
            return np.nan_to_num(r, nan=1e6, posinf=1e6, neginf=-1e6)
        return resid

    def solve(resid, x0, nfev, loss="linear", f_scale=1.0):
        try:
            return optimize.least_squares(resid, x0, bounds=(lo, hi), x_scale="jac", max_nfev=nfev, method="trf",
                                          loss=loss, f_scale=f_scale)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:  # pragma: no cover - defensive
            log.debug("TIC fit from %s failed: %s", x0, exc)
            return None

    def search(resid, starts, loss="linear", f_scale=1.0):
        # a short run from every start, then the best one polished to convergence
        best = None
        for x0 in starts:
            sol = solve(resid, x0, 40, loss, f_scale)
            if sol is not None and np.all(np.isfinite(sol.x)) and (best is None or sol.cost < best.cost):
                best = sol
        if best is not None and best.status == 0:
            polished = solve(resid, best.x, 500, loss, f_scale)
            if polished is not None and polished.cost <= best.cost:
                best = polished
        return best

    starts = _starts(t, ys, bm, lo, hi)
    inv_sd = np.ones(n)
    best = search(make_resid(inv_sd), starts)
    if best is None or not np.all(np.isfinite(best.x)):
        res.reason = "optimiser failed from every starting point"
        return res

    weighted = noise != "additive"
    a_s, b_s = 1.0, 0.0
    loss, f_scale = "linear", 1.0
    if weighted or robust:
        for _ in range(WEIGHT_PASSES):
            f_prev = _internal_curve(bm, t, best.x)
            # residuals scaled up by their leverage: where few frames carry the bolus, the
            # fit passes close to them and their raw residuals understate the noise
            r_prev = (ys - f_prev) / np.sqrt(np.maximum(1.0 - _leverage(best.jac), 0.05))
            # levels measured from the curve's zero, not from the scaled y_lo
            a_s, b_s = noise_sd_model(f_prev - zero_s, r_prev, kind=noise)
            sd = np.sqrt(a_s ** 2 + (b_s * (f_prev - zero_s)) ** 2)
            inv_sd = 1.0 / sd
            if robust:
                # residuals / sd are in noise SDs: the threshold needs no further scale
                loss, f_scale = "huber", HUBER_SD
            # the unweighted multi-start has found the basin; each pass refines from there
            sol = search(make_resid(inv_sd), [best.x], loss, f_scale)
            if sol is None:
                break
            best = sol

    x = best.x
    res.x_internal = x.copy()
    res.y_lo, res.scale = y_lo, scale
    res.params = dict(zip(bm.param_names, (float(v) for v in _to_public(bm, x, y_lo, scale))))
    # residual statistics in the scaled units, so that tiny or huge curves neither
    # underflow nor overflow; reported SSE and SDs are converted back
    f_s = _internal_curve(bm, t, x)
    sse_s = float(np.sum((ys - f_s) ** 2))
    with np.errstate(over="ignore"):
        res.sse = sse_s * scale * scale
    res.qof = qof_percent(ys, f_s)
    dof = max(n - 5, 1)
    zr = (ys - f_s) * inv_sd
    if weighted or robust:
        # Pearson estimate over every frame, each frame's share capped as the Huber loss
        # caps it (a frame beyond 3 SD counts as one at 3 SD: for normal noise that
        # changes the estimate by 0.5 %)
        s2_s = float(np.sum(np.minimum(zr ** 2, HUBER_SD ** 2) if robust else zr ** 2)) / dof
        n_down = int(np.count_nonzero(np.abs(zr) > HUBER_SD)) if robust else 0
    else:
        s2_s = sse_s / dof
        n_down = 0
    s_all = math.sqrt(s2_s)
    res.residual_model = {
        "noise": noise,
        "sd": "sqrt(additive_sd**2 + (relative_sd * f)**2)" if weighted else "constant",
        "additive_sd": float(a_s * s_all * scale) if weighted else float(s_all * scale),
        "relative_sd": float(b_s * s_all) if weighted else 0.0,
        "weights": f"1/sd(f)**2 from the previous pass, {WEIGHT_PASSES} passes" if weighted else "equal",
        "loss": f"huber at {HUBER_SD:g} SD" if robust else "squared",
        "n_downweighted": n_down,
    }
    try:
        Jr = best.jac
        # least_squares' Jacobian carries the loss: frames beyond the Huber threshold count less
        bread = np.linalg.pinv(Jr.T @ Jr)
        if weighted or robust:
            # sandwich (heteroscedasticity-consistent) form: right even where the estimated
            # noise model, and so the weights, are somewhat off; squared residuals capped as
            # the loss caps them, scaled by n / (n - 5)
            z2 = np.minimum(zr ** 2, HUBER_SD ** 2) if robust else zr ** 2
            meat = (Jr * z2[:, None]).T @ Jr
            cov_int = bread @ meat @ bread * (n / dof)
        else:
            cov_int = bread * s2_s
        res.cov_internal = cov_int
        G = _jac_public(bm, x, y_lo, scale)
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
    O_level = x[1] - zero_s
    noise_sd = s_all * (math.sqrt(a_s ** 2 + (b_s * O_level) ** 2) if weighted else 1.0)
    t_peak = x[0] + x[3]
    if best.status == 0:
        res.warnings.append("optimiser stopped at its evaluation limit before converging")
    if best.status < 0:
        res.reason = f"optimiser failed: {best.message}"
    elif not (res.qof >= min_qof):
        res.reason = f"poor fit: QOF {res.qof:.1f}% < {min_qof:g}%"
    elif not (peak >= min_snr * noise_sd):
        res.reason = (f"no significant enhancement: peak {peak * scale:.3g} < {min_snr:g} x noise SD "
                      f"{noise_sd * scale:.3g}")
    elif t_peak > t[-1] + span:
        res.reason = f"fitted peak at {t_peak:.1f} s lies far beyond the last frame ({t[-1]:.1f} s)"
    else:
        res.success = True
    return res
