"""How :func:`ceuspipe.tic.fit.fit_curve` computes a fit: its steps, in order, over one state.

1. :func:`normalise`: the valid frames in the optimiser's units (values about 0..1)
   and the box of the peak parametrisation; a :class:`FitState`.
2. :func:`search`: bounded multi-start least squares, every frame weighed the same.
3. :func:`reweight`: the noise model from the residuals and iteratively reweighted
   passes (Huber loss when robust).
4. :func:`residuals`: parameters, SSE, QOF and the scale of the noise model.
5. :func:`covariance`: parameter covariance and standard errors.
6. :func:`verdict`: warnings, success or the reason for failure.

:func:`normalise` and :func:`search` raise :class:`NoFit` when there is nothing to fit;
the later steps always complete. The pieces the steps share with
:class:`~ceuspipe.tic.fit.FitResult` (the peak parametrisation, the noise model, QOF)
live here too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from ceuspipe.tic.models import BolusModel, get_model

log = logging.getLogger("ceuspipe")

# The steps fill a ``FitResult`` (ceuspipe.tic.fit), named in annotations only: fit.py
# imports this module, so importing it back would be a circle.

MIN_POINTS = 6
NOISE_MODELS = ("auto", "multiplicative", "additive")
# Standardised residuals beyond this many noise SDs count less (Huber loss): an odd
# outlier frame cannot pull the fit, while speckle's skewed tail (at 50 % CV about 1 %
# of frames lie beyond 3 SD) hardly biases it.
HUBER_SD = 3.0
WEIGHT_PASSES = 3
PEAK_NAMES = ("t0", "O", "P", "m", "shape")


class NoFit(Exception):
    """There is nothing to fit; ``str(exc)`` is the one-line reason."""


@dataclass
class FitState:
    """What the steps of one fit share. Arrays ``(n,)`` run over the valid frames, by time.

    From :func:`normalise`: ``model``; ``t`` (s); ``ys``, the values as
    ``(y - y_lo) / scale`` (about 0..1; ``y_lo`` and ``scale`` in the curve's units);
    ``lo``, ``hi`` ``(5,)``: bounds of the peak parametrisation ``(t0, O_s, P_s, m, shape)``
    (s, scaled units, s); ``noise``, ``robust``: as :func:`~ceuspipe.tic.fit.fit_curve`.
    From :func:`search`, refined by :func:`reweight`: ``best``, the optimiser's result
    (``best.x`` ``(5,)``, ``best.jac`` ``(n, 5)``); ``inv_sd``, the weights' 1/SD per frame
    (scaled units; ones for the unweighted search); ``a_s``, ``b_s``: the noise model
    ``sd(f) = sqrt(a_s**2 + (b_s*f)**2)`` in scaled units, before ``s_all``.
    From :func:`residuals`: ``zr``, residuals over the weights' SD; ``s2_s``, their
    variance per degree of freedom; ``s_all = sqrt(s2_s)``, the factor that calibrates
    the noise model (or the residual SD of the unweighted fit).
    """

    model: BolusModel
    t: np.ndarray
    ys: np.ndarray
    y_lo: float
    scale: float
    lo: np.ndarray
    hi: np.ndarray
    noise: str = "auto"
    robust: bool = True
    best: optimize.OptimizeResult | None = None
    inv_sd: np.ndarray | None = None
    a_s: float = 1.0
    b_s: float = 0.0
    zr: np.ndarray | None = None
    s2_s: float = float("nan")
    s_all: float = float("nan")

    @property
    def n(self) -> int:
        return int(self.t.size)

    @property
    def span(self) -> float:
        """Time from the first to the last frame (s)."""
        return float(self.t[-1] - self.t[0])

    @property
    def weighted(self) -> bool:
        """Whether the fit is weighted by a noise model (else every frame weighs the same)."""
        return self.noise != "additive"

    @property
    def zero_s(self) -> float:
        """The curve's own zero level in scaled units (``y_lo`` maps to 0)."""
        return -self.y_lo / self.scale

    @property
    def dof(self) -> int:
        return max(self.n - 5, 1)


# --- shared pieces: the peak parametrisation, QOF, the noise model -------------------------

def to_public(model: str | BolusModel, x: np.ndarray, y_lo: float, scale: float) -> np.ndarray:
    """Internal ``(t0, O_s, P_s, m, shape)`` -> public parameter vector (curve units)."""
    bm = get_model(model) if isinstance(model, str) else model
    t0, O_s, P_s, m, shape = (float(v) for v in x)
    return np.array(bm.from_peak(t0, y_lo + O_s * scale, P_s * scale, m, shape), dtype=np.float64)


def _internal_curve(model: BolusModel, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Scaled curve for internal parameters (y_lo = 0, scale = 1)."""
    return model.func(t, *to_public(model, x, 0.0, 1.0))


def _jac_public(model: str | BolusModel, x: np.ndarray, y_lo: float, scale: float) -> np.ndarray:
    """Numerical Jacobian d(public)/d(internal), ``(5, 5)``."""
    J = np.zeros((5, 5))
    for j in range(5):
        h = 1e-6 * max(abs(x[j]), 1e-3)
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        J[:, j] = (to_public(model, xp, y_lo, scale) - to_public(model, xm, y_lo, scale)) / (2 * h)
    return J


def qof_percent(y: np.ndarray, f: np.ndarray) -> float:
    """``100 * max(0, 1 - SSE/SST)`` of data ``y`` against fitted ``f`` (same shape)."""
    y = np.asarray(y, dtype=np.float64)
    sse = float(np.sum((y - f) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 0:
        return 0.0
    return 100.0 * max(0.0, 1.0 - sse / sst)


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


# --- 1. normalise --------------------------------------------------------------------------

def valid_frames(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames where time ``t`` (s) and value ``y`` are both finite, sorted by time
    (stable); ``(n,)`` each, from ``(N,)`` each."""
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    order = np.argsort(t, kind="stable")
    return t[order], y[order]


def normalise(bm: BolusModel, t: np.ndarray, y: np.ndarray, noise: str, robust: bool) -> FitState:
    """The state of a fit of ``bm`` to valid frames ``t`` (s) and ``y`` (curve units), both
    ``(n,)`` sorted by time: values scaled to about 0..1 (1st to 99th percentile, or
    min to max) and the box of the peak parametrisation (onset up to a span before the
    first frame, peak up to 5 times the range, time to peak from half a frame interval
    to 5 spans). Raises :class:`NoFit` for too few frames, one time or a flat curve."""
    n = int(t.size)
    if n < MIN_POINTS:
        raise NoFit(f"too few valid frames to fit ({n} < {MIN_POINTS})")
    span = float(t[-1] - t[0])
    if span <= 0:
        raise NoFit("all valid frames have the same time")
    y_lo = float(np.percentile(y, 1))
    scale = float(np.percentile(y, 99) - y_lo)
    if not np.isfinite(scale) or scale <= 0:
        scale = float(np.max(y) - np.min(y))
        y_lo = float(np.min(y))
    if not np.isfinite(scale) or scale <= 0 or scale <= 1e-12 * max(abs(y_lo), 1e-300):
        raise NoFit("flat curve: no enhancement to fit")
    dt = np.diff(t)
    med_dt = float(np.median(dt[dt > 0])) if np.any(dt > 0) else span / n
    shape_lo, shape_hi = bm.shape_bounds
    lo = np.array([t[0] - span, -0.5, 0.0, max(0.5 * med_dt, 1e-3), shape_lo])
    hi = np.array([t[-1], 1.5, 5.0, 5.0 * span + med_dt, shape_hi])
    return FitState(model=bm, t=t, ys=(y - y_lo) / scale, y_lo=y_lo, scale=scale, lo=lo, hi=hi,
                    noise=noise, robust=robust)


# --- 2. search -------------------------------------------------------------------------------

def _smooth(y: np.ndarray) -> np.ndarray:
    k = max(3, (len(y) // 15) | 1)
    ys = ndimage.median_filter(y, size=k, mode="nearest")
    return ndimage.uniform_filter1d(ys, size=k, mode="nearest")


def _starts(t: np.ndarray, y: np.ndarray, bm: BolusModel, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """Start vectors ``(5,)`` in the box ``lo``..``hi``, from the smoothed curve ``y`` at ``t``
    (``(n,)`` each): onsets at, before and well before the rise, each model's shape starts."""
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


def _weighted_residuals(x: np.ndarray, bm: BolusModel, t: np.ndarray, ys: np.ndarray, inv_sd: np.ndarray) -> np.ndarray:
    """Weighted residuals ``(n,)`` of internal parameters ``x`` ``(5,)``; finite always."""
    r = (_internal_curve(bm, t, x) - ys) * inv_sd
    return np.nan_to_num(r, nan=1e6, posinf=1e6, neginf=-1e6)


def _solve(st: FitState, x0: np.ndarray, nfev: int, loss: str, f_scale: float):
    """One bounded least-squares run from ``x0`` weighted by ``st.inv_sd``; None if it failed."""
    try:
        return optimize.least_squares(_weighted_residuals, x0, bounds=(st.lo, st.hi), x_scale="jac", max_nfev=nfev,
                                      method="trf", loss=loss, f_scale=f_scale,
                                      args=(st.model, st.t, st.ys, st.inv_sd))
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:  # pragma: no cover - defensive
        log.debug("TIC fit from %s failed: %s", x0, exc)
        return None


def _best_of(st: FitState, starts: list[np.ndarray], loss: str = "linear", f_scale: float = 1.0):
    """A short run from every start, then the best one polished to convergence; None when
    none gave finite parameters."""
    best = None
    for x0 in starts:
        sol = _solve(st, x0, 40, loss, f_scale)
        if sol is not None and np.all(np.isfinite(sol.x)) and (best is None or sol.cost < best.cost):
            best = sol
    if best is not None and best.status == 0:
        polished = _solve(st, best.x, 500, loss, f_scale)
        if polished is not None and polished.cost <= best.cost:
            best = polished
    return best


def search(st: FitState) -> None:
    """Sets ``st.best``: the unweighted multi-start fit (every frame weighs the same).
    Raises :class:`NoFit` when the optimiser failed from every start."""
    st.inv_sd = np.ones(st.n)
    st.best = _best_of(st, _starts(st.t, st.ys, st.model, st.lo, st.hi))
    if st.best is None or not np.all(np.isfinite(st.best.x)):
        raise NoFit("optimiser failed from every starting point")


# --- 3. reweight ------------------------------------------------------------------------------

def _leverage(J: np.ndarray) -> np.ndarray:
    """Diagonal of the hat matrix ``J (J^T J)^+ J^T`` of a Jacobian ``J`` ``(n, p)``; ``(n,)``."""
    try:
        return np.clip(np.einsum("ij,ij->i", J @ np.linalg.pinv(J.T @ J), J), 0.0, 1.0)
    except (np.linalg.LinAlgError, ValueError):  # pragma: no cover - defensive
        return np.zeros(J.shape[0])


def reweight(st: FitState) -> None:
    """Unless the fit is plain least squares (``noise="additive"``, not robust):
    :data:`WEIGHT_PASSES` passes, each estimating the noise model (``st.a_s``, ``st.b_s``)
    from the previous pass' residuals and refitting from its optimum with weights
    ``st.inv_sd`` ``(n,)`` (and a Huber loss at :data:`HUBER_SD` SD when robust)."""
    if not (st.weighted or st.robust):
        return
    loss, f_scale = ("huber", HUBER_SD) if st.robust else ("linear", 1.0)
    for _ in range(WEIGHT_PASSES):
        f_prev = _internal_curve(st.model, st.t, st.best.x)
        # residuals scaled up by their leverage: where few frames carry the bolus, the
        # fit passes close to them and their raw residuals understate the noise
        r_prev = (st.ys - f_prev) / np.sqrt(np.maximum(1.0 - _leverage(st.best.jac), 0.05))
        # levels measured from the curve's zero, not from the scaled y_lo
        st.a_s, st.b_s = noise_sd_model(f_prev - st.zero_s, r_prev, kind=st.noise)
        sd = np.sqrt(st.a_s ** 2 + (st.b_s * (f_prev - st.zero_s)) ** 2)
        st.inv_sd = 1.0 / sd
        # residuals / sd are in noise SDs: the Huber threshold needs no further scale;
        # the unweighted multi-start has found the basin, each pass refines from there
        sol = _best_of(st, [st.best.x], loss, f_scale)
        if sol is None:
            break
        st.best = sol


# --- 4. residuals -----------------------------------------------------------------------------

def residuals(st: FitState, res: FitResult) -> None:
    """Fills ``res``' parameters, SSE, QOF and residual model, and ``st.zr``, ``st.s2_s``,
    ``st.s_all``. Statistics are taken in the scaled units, so that tiny or huge curves
    neither underflow nor overflow; the reported SSE and SDs are in the curve's units."""
    x = st.best.x
    res.x_internal = x.copy()
    res.y_lo, res.scale = st.y_lo, st.scale
    res.params = dict(zip(st.model.param_names, (float(v) for v in to_public(st.model, x, st.y_lo, st.scale))))
    f_s = _internal_curve(st.model, st.t, x)
    sse_s = float(np.sum((st.ys - f_s) ** 2))
    with np.errstate(over="ignore"):
        res.sse = sse_s * st.scale * st.scale
    res.qof = qof_percent(st.ys, f_s)
    st.zr = (st.ys - f_s) * st.inv_sd
    if st.weighted or st.robust:
        # Pearson estimate over every frame, each frame's share capped as the Huber loss
        # caps it (a frame beyond 3 SD counts as one at 3 SD: for normal noise that
        # changes the estimate by 0.5 %)
        st.s2_s = float(np.sum(_capped_z2(st))) / st.dof
        n_down = int(np.count_nonzero(np.abs(st.zr) > HUBER_SD)) if st.robust else 0
    else:
        st.s2_s = sse_s / st.dof
        n_down = 0
    st.s_all = s_all = math.sqrt(st.s2_s)
    weighted = st.weighted
    res.residual_model = {
        "noise": st.noise,
        "sd": "sqrt(additive_sd**2 + (relative_sd * f)**2)" if weighted else "constant",
        "additive_sd": float(st.a_s * s_all * st.scale) if weighted else float(s_all * st.scale),
        "relative_sd": float(st.b_s * s_all) if weighted else 0.0,
        "weights": f"1/sd(f)**2 from the previous pass, {WEIGHT_PASSES} passes" if weighted else "equal",
        "loss": f"huber at {HUBER_SD:g} SD" if st.robust else "squared",
        "n_downweighted": n_down,
    }


def _capped_z2(st: FitState) -> np.ndarray:
    """Squared standardised residuals ``(n,)``, capped at :data:`HUBER_SD` squared when robust."""
    return np.minimum(st.zr ** 2, HUBER_SD ** 2) if st.robust else st.zr ** 2


# --- 5. covariance ----------------------------------------------------------------------------

def covariance(st: FitState, res: FitResult) -> None:
    """Fills ``res.cov_internal`` ``(5, 5)`` (peak parametrisation, from the Jacobian of the
    weighted residuals), ``res.covariance`` ``(5, 5)`` (public parameters, None unless
    finite) and ``res.stderr`` (curve units)."""
    n, x = st.n, st.best.x
    try:
        Jr = st.best.jac
        # least_squares' Jacobian carries the loss: frames beyond the Huber threshold count less
        bread = np.linalg.pinv(Jr.T @ Jr)
        if st.weighted or st.robust:
            # sandwich (heteroscedasticity-consistent) form: right even where the estimated
            # noise model, and so the weights, are somewhat off; squared residuals capped as
            # the loss caps them, scaled by n / (n - 5)
            meat = (Jr * _capped_z2(st)[:, None]).T @ Jr
            cov_int = bread @ meat @ bread * (n / st.dof)
        else:
            cov_int = bread * st.s2_s
        res.cov_internal = cov_int
        G = _jac_public(st.model, x, st.y_lo, st.scale)
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
        res.stderr = {k: float(v) for k, v in zip(st.model.param_names, se) if np.isfinite(v)}
    except (np.linalg.LinAlgError, ValueError, OverflowError):  # pragma: no cover - defensive
        res.covariance = None


# --- 6. verdict -------------------------------------------------------------------------------

def verdict(st: FitState, res: FitResult, min_qof: float, min_snr: float) -> None:
    """Adds warnings (parameters on a bound, optimiser at its evaluation limit) and sets
    ``res.success`` or ``res.reason``: the optimiser failed, QOF under ``min_qof`` (%), peak
    under ``min_snr`` noise SDs at the offset level, or a peak far beyond the last frame."""
    x, lo, hi = st.best.x, st.lo, st.hi
    at_bound = [name for name, v, a, b in zip(PEAK_NAMES, x, lo, hi)
                if abs(v - a) <= 1e-6 * (b - a) or abs(v - b) <= 1e-6 * (b - a)]
    if at_bound:
        res.warnings.append("fit parameters on a bound: " + ", ".join(at_bound))

    peak = x[2]  # both in scaled units
    O_level = x[1] - st.zero_s
    noise_sd = st.s_all * (math.sqrt(st.a_s ** 2 + (st.b_s * O_level) ** 2) if st.weighted else 1.0)
    t_peak = x[0] + x[3]
    t_last = st.t[-1]
    if st.best.status == 0:
        res.warnings.append("optimiser stopped at its evaluation limit before converging")
    if st.best.status < 0:
        res.reason = f"optimiser failed: {st.best.message}"
    elif not (res.qof >= min_qof):
        res.reason = f"poor fit: QOF {res.qof:.1f}% < {min_qof:g}%"
    elif not (peak >= min_snr * noise_sd):
        res.reason = (f"no significant enhancement: peak {peak * st.scale:.3g} < {min_snr:g} x noise SD "
                      f"{noise_sd * st.scale:.3g}")
    elif t_peak > t_last + st.span:
        res.reason = f"fitted peak at {t_peak:.1f} s lies far beyond the last frame ({t_last:.1f} s)"
    else:
        res.success = True
