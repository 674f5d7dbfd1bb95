"""Destruction-replenishment: the refill after every destructive flash (Wei et al. 1998).

A high-MI flash destroys the bubbles in the beam; the region then refills as

    ``y(t) = y0 + A * (1 - exp(-beta * (t - t_d)))``  for ``t >= t_d``

on the linearised intensity (mean linear power, a.u.): ``A`` (a.u.) is proportional to the
blood volume, ``beta`` (1/s) to the blood velocity and ``A * beta`` (a.u./s) to the flow.
``t_d`` (``start_s``) is the time of the first frame after the flash frames (the phantom's
replenishment protocol, :mod:`ceuspipe.synth.replenishment`, times its refills the same way).
A refill runs from there until the frame before the next flash (any flash) or the clip's end.

``y0`` is fitted, not fixed from the post-destruction floor:

* the floor is seen only in the first frames after the flash, which are already refilling
  (at ``beta = 1/s`` and 10 fps the second frame has 10 % of ``A``) and are few and noisy
  (speckle of 14 % CV on each), so a floor taken from them biases ``beta`` one way or the
  other; the fit takes ``y0`` from the whole refill at the cost of one parameter;
* destruction is often incomplete (bubbles outside the high-MI beam, tissue harmonics, the
  noise floor), so the floor is not the pre-contrast level either; with ``y0`` fitted,
  ``A`` is what refilled after the destruction, whatever was left.

The fit handles noise as the bolus fit does (:mod:`ceuspipe.tic.fit`): an unweighted
Levenberg-Marquardt search from the best point of a grid of ``beta`` (``y0`` and ``A`` in
closed form for each), then :data:`~ceuspipe.tic.fit_steps.WEIGHT_PASSES` passes weighted by
the noise model ``sd(f) = sqrt(a**2 + (b*f)**2)`` with a Huber loss at
:data:`~ceuspipe.tic.fit_steps.HUBER_SD` SD. It is the machinery of
:mod:`ceuspipe.tic.batched_lm` (``levenberg_marquardt``, ``reweight``) over a 3-parameter model, vectorised
over many curves (:func:`fit_refills`, for maps of ``beta`` and ``A*beta``); one curve
(:func:`fit_refill`) is the same code with one row. The covariance is the sandwich form of
:func:`ceuspipe.tic.fit_steps.covariance`; every parameter gets a :data:`CI_LEVEL` interval
``value -+ z * stderr`` (``A * beta`` by the delta method).

A fit fails (``success`` False, with a reason) when the refill has fewer than
:data:`~ceuspipe.tic.fit_steps.MIN_POINTS` valid frames or is flat, the refill is not
significant (``A`` under ``min_snr`` noise SDs at the level ``y0``), it refills faster than the
frames resolve (``beta * dt > MAX_BETA_DT``), the refill is too short to pin the plateau
(``beta * span < MIN_TIME_CONSTANTS``) or the QOF is under ``min_qof``. ``A`` is flagged
``extrapolated`` when the refill covers fewer than :data:`PLATEAU_TIME_CONSTANTS` time
constants ``1/beta`` (the plateau was not reached within 5 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from ceuspipe.errors import InputError
from ceuspipe.tic.batched_lm import (FTOL, FTOL_EARLY, Chunk, gram, huber_sqrt_weights, levenberg_marquardt,
                                     masked_quantiles, reweight, run_chunks)
from ceuspipe.tic.fit_steps import HUBER_SD, MIN_POINTS, NOISE_MODELS
from ceuspipe.tic.flags import destructive_flashes
from ceuspipe.tic.parameters import CI_LEVEL, Parameter
from ceuspipe.tic.peak_form import _h_floor

__all__ = ["MODEL_TEXT", "REFILL_UNITS", "REASONS", "BatchRefill", "Refill", "fit_refills", "fit_refill",
           "analyse_refills"]

MODEL_TEXT = "y0 + A*(1 - exp(-beta*(t - start_s)))"
#: Reported parameters and their units (``A_beta``: the flow index ``A * beta``).
REFILL_UNITS = {"A": "a.u.", "beta": "1/s", "A_beta": "a.u./s", "y0": "a.u."}
#: Why a refill's fit failed: ``BatchRefill.reason`` indexes this tuple (0 = success).
REASONS = ("", "too few valid points", "flat curve", "fit did not give finite parameters", "poor fit (QOF)",
           "no significant refill", "refill too short", "refill faster than the frames resolve")
# A refill must cover this many time constants 1/beta (78 % refilled): with fewer the plateau
# A is an extrapolation that trades off against beta (only their product, the initial slope,
# is measured).
MIN_TIME_CONSTANTS = 1.5
# beta * (frame interval) above this: the second frame already holds 63 % of A, so beta is
# not resolved (it only has a lower bound).
MAX_BETA_DT = 1.0
# A is flagged extrapolated when the refill covers fewer time constants (95 % refilled).
PLATEAU_TIME_CONSTANTS = 3.0
N_PARAMS = 3
_BETA_GRID = 24


class _RefillForm:
    """The replenishment model for :func:`ceuspipe.tic.batched_lm.levenberg_marquardt`: ``x = (y0, A, beta)``
    ``(n, 3)`` (scaled units, 1/s), times ``t`` ``(T,)`` s after the destruction."""

    name = "replenishment"

    def curve(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``f`` ``(n, T)``."""
        return self.curve_and_jacobian(t, x, jacobian=False)[0]

    def curve_and_jacobian(self, t: np.ndarray, x: np.ndarray, jacobian: bool = True, out: np.ndarray | None = None):
        """``(f, J)``: ``f`` ``(n, T)`` and ``J = df/dx`` ``(n, 3, T)`` (None unless ``jacobian``),
        in the precision of ``t``; ``out``: a buffer of at least ``n * 3 * T`` elements for ``J``."""
        x = np.asarray(x, dtype=t.dtype)
        y0, A, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        tp = np.maximum(t, 0)[None, :]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            # exp kept above the smallest normal number's quarter-log: no subnormal products
            E = np.exp(np.maximum(-b * tp, _h_floor(t.dtype)))
            rise = 1 - E
            f = y0 + A * rise
            if not jacobian:
                return f, None
            size = x.shape[0] * N_PARAMS * t.size
            J = (np.empty(size, dtype=t.dtype) if out is None else out.ravel()[:size]).reshape(x.shape[0], N_PARAMS,
                                                                                                 t.size)
            J[:, 0] = 1.0
            J[:, 1] = rise
            np.multiply(A * tp, E, out=J[:, 2])
        return f, J


_FORM = _RefillForm()


@dataclass
class BatchRefill:
    """Replenishment fits of ``N`` curves over one refill. Arrays are ``(N,)``.

    ``params``: ``A``, ``y0`` (curve units), ``beta`` (1/s), ``A_beta`` (curve units/s) for
    every curve with a fit (NaN without one; check ``success``); ``stderr``: their standard
    errors; ``reason``: uint8 index into :data:`REASONS`; ``qof`` (%); ``n_points``: valid
    points in the refill; ``span_s``: time from the destruction to the last valid point (s);
    ``converged``, ``n_iter``: as :class:`~ceuspipe.tic.batch_fit.BatchFit`.
    """

    success: np.ndarray
    reason: np.ndarray
    qof: np.ndarray
    n_points: np.ndarray
    span_s: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    params: dict[str, np.ndarray] = field(default_factory=dict)
    stderr: dict[str, np.ndarray] = field(default_factory=dict)

    def interval(self, name: str, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` ``(N,)``: the ``level`` interval ``value -+ z * stderr`` of ``name``."""
        z = float(special.ndtri(0.5 + level / 2))
        v, se = self.params[name], self.stderr[name]
        return v - z * se, v + z * se

    def reasons(self) -> dict[str, int]:
        """How many curves failed for each reason (successes under ``""``)."""
        counts = np.bincount(self.reason, minlength=len(REASONS))
        return {REASONS[i]: int(c) for i, c in enumerate(counts) if c}


def _normalise(t: np.ndarray, y: np.ndarray, dtype) -> tuple[Chunk, np.ndarray, np.ndarray]:
    """The chunk of curves ``y`` ``(n, T)`` at times ``t`` ``(T,)`` s after the destruction:
    values scaled to about 0..1 (1st to 99th percentile) and the box of ``(y0_s, A_s, beta)``
    (``beta`` from a twentieth of a refill over the span to ten per frame interval); also the
    reason codes ``(n,)`` of curves that cannot be fitted and each curve's span ``(n,)`` s."""
    n, T = y.shape
    valid = np.isfinite(y) & (np.isfinite(t) & (t >= 0))[None, :]
    reason = np.zeros(n, np.uint8)
    with np.errstate(all="ignore"):
        y_lo, y_hi, lo_all, hi_all = masked_quantiles(y, valid, (0.01, 0.99, 0.0, 1.0))
        scale = y_hi - y_lo
    bad = ~np.isfinite(scale) | (scale <= 0)
    y_lo, scale = np.where(bad, lo_all, y_lo), np.where(bad, hi_all - lo_all, scale)
    flat = ~np.isfinite(scale) | (scale <= 0) | (scale <= 1e-12 * np.maximum(np.abs(y_lo), 1e-300))
    reason[flat] = 2
    reason[valid.sum(axis=1) < MIN_POINTS] = 1
    scale = np.where(reason > 0, 1.0, scale)
    y_lo = np.where(reason > 0, 0.0, y_lo)
    ys = np.where(valid, (y - y_lo[:, None]) / scale[:, None], 0.0)
    span = np.where(valid, t[None, :], -np.inf).max(axis=1)
    reason[(reason == 0) & ~(span > 0)] = 1
    span = np.where(span > 0, span, 1.0)
    lo = np.stack([np.full(n, -1.0), np.zeros(n), 0.05 / span], axis=1)
    hi = np.stack([np.full(n, 1.5), np.full(n, 5.0), np.full(n, 10.0 / _frame_dt(t))], axis=1)
    chunk = Chunk.fresh(ys, valid, y_lo, scale, lo, hi, reason == 0, dtype)
    return chunk, reason, span


def _frame_dt(t: np.ndarray) -> float:
    """Median interval (s) of the times ``t`` ``(T,)`` (1 s without two distinct ones)."""
    d = np.diff(t[np.isfinite(t)])
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def _start(t: np.ndarray, ch: Chunk, betas: np.ndarray) -> None:
    """Sets ``ch.x``: for each grid ``beta`` ``(G,)`` the least-squares ``y0`` and ``A`` of each
    curve in closed form (one product over the grid for all curves), the best with ``A >= 0``,
    clipped into the box."""
    v = ch.valid.astype(np.float64)
    ys = ch.ys.astype(np.float64) * v
    E = 1.0 - np.exp(-np.outer(betas, np.maximum(t, 0)))  # (G, T)
    s1, sy, syy = v.sum(1)[:, None], ys.sum(1)[:, None], (ys * ys).sum(1)[:, None]
    # einsum, not a BLAS product, whose idle threads spin against the fit (as batch_fit)
    se, see, sey = (np.einsum("it,gt->ig", a, b) for a, b in ((v, E), (v, E * E), (ys, E)))
    with np.errstate(all="ignore"):
        det = s1 * see - se * se
        A = (s1 * sey - se * sy) / det
        y0 = (sy - A * se) / s1
        sse = syy - 2 * (y0 * sy + A * sey) + y0 * y0 * s1 + 2 * y0 * A * se + A * A * see
    sse = np.where(np.isfinite(sse) & (det > 1e-12 * s1 * see) & (A >= 0), sse, np.inf)
    best = np.argmin(sse, axis=1)
    rows = np.arange(best.size)
    x = np.stack([y0[rows, best], A[rows, best], betas[best]], axis=1)
    x = np.where(np.isfinite(x), x, np.array([0.0, 1.0, float(np.median(betas))]))
    width = ch.hi - ch.lo
    ch.x = np.clip(x, ch.lo + 1e-9 * width, ch.hi - 1e-9 * width)


def _covariance(t: np.ndarray, ch: Chunk, weighted: bool, robust: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(cov, s_all)``: the covariance ``(n, 3, 3)`` of the internal parameters (the sandwich
    form of :func:`ceuspipe.tic.fit_steps.covariance`, or residual variance times
    ``(J^T J)^-1`` for plain least squares) and the factor ``(n,)`` that calibrates the noise
    model, in float64."""
    v, ys = ch.valid.astype(np.float64), ch.ys.astype(np.float64)
    inv_sd = ch.inv_sd.astype(np.float64)
    f, J = _FORM.curve_and_jacobian(t, ch.x)
    zr = (ys - f) * inv_sd * v
    dof = np.maximum(v.sum(axis=1) - N_PARAMS, 1)
    sw = inv_sd * v
    if robust:
        sw = sw * huber_sqrt_weights(zr, HUBER_SD)
    Jr = J * sw[:, None, :]
    with np.errstate(all="ignore"):
        bread = np.linalg.pinv(gram(Jr))
        if weighted or robust:
            z2 = np.minimum(zr * zr, HUBER_SD ** 2) if robust else zr * zr
            meat = np.einsum("ijt,it,ikt->ijk", Jr, z2, Jr)
            cov = bread @ meat @ bread * (v.sum(axis=1) / dof)[:, None, None]
        else:
            z2 = zr * zr
            cov = bread * (z2.sum(axis=1) / dof)[:, None, None]
    return cov, np.sqrt(z2.sum(axis=1) / dof)


def _verdict(t: np.ndarray, ch: Chunk, reason: np.ndarray, span: np.ndarray, weighted: bool, robust: bool,
             min_qof: float, min_snr: float) -> tuple[np.ndarray, dict, dict]:
    """``(qof, params, stderr)``: QOF ``(n,)`` (%), the public parameters and their standard
    errors (name -> ``(n,)``, curve units); sets the reason codes ``(n,)`` of failed tests."""
    v, ys = ch.valid.astype(np.float64), ch.ys.astype(np.float64)
    f = _FORM.curve(t, ch.x)
    n_v = v.sum(axis=1)
    ymean = (ys * v).sum(axis=1) / np.maximum(n_v, 1)
    sst = (((ys - ymean[:, None]) * v) ** 2).sum(axis=1)
    sse = (((ys - f) * v) ** 2).sum(axis=1)
    with np.errstate(all="ignore"):
        qof = np.where(sst > 0, 100.0 * np.maximum(0.0, 1.0 - sse / sst), 0.0)
    cov, s_all = _covariance(t, ch, weighted, robust)
    y0_s, A_s, beta = ch.x.T
    floor = y0_s + ch.y_lo / ch.scale  # from the curve's zero, scaled units
    # as the bolus fit: the enhancement against the noise at the level it starts from
    noise_sd = s_all * (np.sqrt(ch.a_s ** 2 + (ch.b_s * floor) ** 2) if weighted else 1.0)
    dt = _frame_dt(t)
    tests = [(3, ~np.all(np.isfinite(ch.x), axis=1)),
             (5, ~(A_s >= min_snr * noise_sd)),
             (7, ~(beta * dt <= MAX_BETA_DT)),
             (6, ~(beta * span >= MIN_TIME_CONSTANTS)),
             (4, ~(qof >= min_qof))]
    for code, failed in tests:
        reason[failed & (reason == 0)] = code
    sc = ch.scale
    with np.errstate(all="ignore"):
        var = np.einsum("ijj->ij", cov)
        se = np.sqrt(np.clip(var, 0.0, None))
        A, b = A_s * sc, beta
        var_ab = (b * sc) ** 2 * var[:, 1] + A ** 2 * var[:, 2] + 2 * A * b * sc * cov[:, 1, 2]
        params = {"A": A, "beta": b, "A_beta": A * b, "y0": ch.y_lo + y0_s * sc}
        stderr = {"A": se[:, 1] * sc, "beta": se[:, 2], "A_beta": np.sqrt(np.clip(var_ab, 0.0, None)),
                  "y0": se[:, 0] * sc}
    return qof, params, stderr


def fit_refills(
    times_s,
    values,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    min_qof: float = 30.0,
    min_snr: float = 3.0,
    noise: str = "auto",
    robust: bool = True,
    chunk_size: int = 1024,
    max_iter: int = 100,
    dtype=np.float32,
    workers: int = 1,
) -> BatchRefill:
    """Fit the replenishment model to every row of ``values`` over one refill.

    ``times_s`` ``(T,)`` s, one increasing time axis for all curves; ``values`` ``(N, T)``
    linear intensity (NaN marks a missing point). The refill is the points with
    ``start_s <= t <= end_s`` (defaults: the first and last time), timed from ``start_s``
    (the destruction, ``t_d``). ``min_qof`` (%), ``min_snr``, ``noise``, ``robust``: as
    :func:`~ceuspipe.tic.analyse.analyse_curve`; ``chunk_size``, ``max_iter``, ``dtype``,
    ``workers``: as :func:`~ceuspipe.tic.batch_fit.fit_curves`. Never raises for a bad
    curve; raises :class:`~ceuspipe.errors.InputError` for an unknown noise model or arrays
    that do not match.
    """
    if noise not in NOISE_MODELS:
        raise InputError(None, f"unknown noise model {noise!r}; choose one of {', '.join(NOISE_MODELS)}")
    t_all = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values)
    if y.ndim != 2 or y.shape[1] != t_all.size:
        raise InputError(None, f"values must be (N, {t_all.size}) for {t_all.size} times, got shape {y.shape}")
    fin = t_all[np.isfinite(t_all)]
    t_d = float(start_s) if start_s is not None else (float(fin.min()) if fin.size else 0.0)
    t_end = float(end_s) if end_s is not None else np.inf
    cols = np.flatnonzero(np.isfinite(t_all) & (t_all >= t_d) & (t_all <= t_end))
    t = t_all[cols] - t_d
    N = y.shape[0]
    out = {k: np.full(N, np.nan) for k in REFILL_UNITS}
    err = {k: np.full(N, np.nan) for k in REFILL_UNITS}
    qof, span_s = np.full(N, np.nan), np.full(N, np.nan)
    reason = np.ones(N, np.uint8)
    converged, n_iter = np.zeros(N, bool), np.zeros(N, np.int32)
    n_points = np.zeros(N, np.int32)
    weighted = noise != "additive"
    tc = t.astype(dtype)
    dt = _frame_dt(t)
    betas = np.geomspace(0.1 / max(float(t.max()) if t.size else 1.0, dt), 2.0 / dt, _BETA_GRID) if t.size else None

    def fit_chunk(sl: slice) -> None:
        yc = np.asarray(y[sl][:, cols], dtype=np.float64)
        ch, rc, span = _normalise(t, yc, dtype)
        n_points[sl] = ch.valid.sum(axis=1)
        _start(t, ch, betas)
        Jw = levenberg_marquardt(tc, ch, _FORM, None, max_iter, ftol=FTOL_EARLY if (weighted or robust) else FTOL)
        reweight(tc, ch, _FORM, Jw, noise, robust, max_iter)
        fitted = rc == 0  # a fit was made (it may still fail a test of the verdict)
        q, p, s = _verdict(t, ch, rc, span, weighted, robust, min_qof, min_snr)
        qof[sl] = np.where(fitted, q, np.nan)
        for k in REFILL_UNITS:
            out[k][sl] = np.where(fitted, p[k], np.nan)
            err[k][sl] = np.where(fitted, s[k], np.nan)
        reason[sl], converged[sl], n_iter[sl] = rc, ch.converged & fitted, ch.n_iter
        span_s[sl] = np.where(rc != 1, span, np.nan)

    if t.size >= MIN_POINTS and N:
        run_chunks(fit_chunk, N, chunk_size, workers)
    else:
        n_points[:] = np.isfinite(np.asarray(y[:, cols], dtype=np.float64)).sum(axis=1) if N else 0
    return BatchRefill(success=reason == 0, reason=reason, qof=qof, n_points=n_points, span_s=span_s,
                       converged=converged, n_iter=n_iter, params=out, stderr=err)


# --- one curve -------------------------------------------------------------------------------------------

@dataclass
class Refill:
    """One refill of a curve and its fit.

    ``start_s``: the destruction (the first frame after the flash, s); ``end_s``: the last
    frame before the next flash or the clip's end (s); ``flash_frames``: the flash's first and
    last frame index; ``frames``: the refill's first and last frame index; ``n_points``: valid
    frames fitted; ``parameters``: ``A``, ``beta``, ``A_beta``, ``y0``
    (:class:`~ceuspipe.tic.parameters.Parameter` with standard error and :data:`CI_LEVEL`
    interval; NaN without a fit); ``reason``: why ``success`` is False, one line.
    """

    start_s: float
    end_s: float
    success: bool
    reason: str
    n_points: int
    qof: float = float("nan")
    parameters: dict[str, Parameter] = field(default_factory=dict)
    flash_frames: tuple[int, int] | None = None
    frames: tuple[int, int] | None = None

    def value(self, name: str) -> float:
        """Shortcut for ``parameters[name].value``."""
        return self.parameters[name].value

    def to_dict(self) -> dict:
        """JSON-ready (NaN becomes ``null``)."""
        def num(v):
            v = float(v)
            return v if math.isfinite(v) else None

        return {"model": MODEL_TEXT, "start_s": num(self.start_s), "end_s": num(self.end_s),
                "flash_frames": None if self.flash_frames is None else [int(v) for v in self.flash_frames],
                "frames": None if self.frames is None else [int(v) for v in self.frames],
                "n_points": int(self.n_points), "success": bool(self.success), "reason": self.reason,
                "qof_percent": num(self.qof), "parameters": {k: p.to_dict() for k, p in self.parameters.items()}}


def _reason_text(fit: BatchRefill, i: int, dt: float) -> str:
    """The one-line reason of curve ``i``'s failure, with its numbers."""
    code = int(fit.reason[i])
    b, span = fit.params["beta"][i], fit.span_s[i]
    if code == 1:
        return f"refill too short: {int(fit.n_points[i])} valid frames (need {MIN_POINTS})"
    if code == 6:
        return (f"refill too short: {span:.1f} s covers {b * span:.2f} time constants 1/beta "
                f"(need {MIN_TIME_CONSTANTS:g}; beta {b:.3g}/s)")
    if code == 7:
        return (f"refill faster than the frames resolve: beta {b:.3g}/s times the frame interval "
                f"{dt:.3g} s is {b * dt:.2f} (at most {MAX_BETA_DT:g})")
    if code == 4:
        return f"poor fit: QOF {fit.qof[i]:.1f}% under the minimum"
    return REASONS[code]


def _parameters(fit: BatchRefill, i: int) -> dict[str, Parameter]:
    """The fitted parameters of curve ``i`` with their intervals; ``A`` extrapolated when the
    refill covers fewer than :data:`PLATEAU_TIME_CONSTANTS` time constants."""
    out = {}
    for k, unit in REFILL_UNITS.items():
        v, se = float(fit.params[k][i]), float(fit.stderr[k][i])
        p = Parameter(v, unit)
        if math.isfinite(v) and math.isfinite(se):
            lo, hi = (float(a[i]) for a in fit.interval(k))
            p.stderr, p.ci_low, p.ci_high = se, lo, hi
            p.uncertain = bool(hi - lo > abs(v))
        out[k] = p
    covered = float(fit.params["beta"][i] * fit.span_s[i])
    if math.isfinite(covered) and covered < PLATEAU_TIME_CONSTANTS:
        out["A"].extrapolated = out["A_beta"].extrapolated = True
    return out


def fit_refill(times_s, values, *, start_s: float | None = None, end_s: float | None = None,
               **fit_options) -> Refill:
    """Fit one refill: ``values`` ``(N,)`` linear intensity at ``times_s`` ``(N,)`` s, the
    points from ``start_s`` (the destruction; default the first time) to ``end_s`` (default
    the last). ``fit_options``: as :func:`fit_refills` (float64 here). Never raises for a bad
    curve: ``success`` is False with a one-line ``reason``."""
    t = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    if t.size != y.size:
        raise InputError(None, f"times_s has {t.size} entries but values has {y.size}")
    fit_options.setdefault("dtype", np.float64)
    fit = fit_refills(t, y[None, :], start_s=start_s, end_s=end_s, **fit_options)
    fin = t[np.isfinite(t)]
    t0 = float(start_s) if start_s is not None else (float(fin.min()) if fin.size else math.nan)
    t1 = float(end_s) if end_s is not None else (float(fin.max()) if fin.size else math.nan)
    sel = fin[(fin >= t0) & (fin <= t1)]
    ok = bool(fit.success[0])
    return Refill(start_s=t0, end_s=t1, success=ok, reason="" if ok else _reason_text(fit, 0, _frame_dt(sel)),
                  n_points=int(fit.n_points[0]), qof=float(fit.qof[0]), parameters=_parameters(fit, 0))


def refill_windows(flash: np.ndarray, destructive: list[tuple[int, int]], n: int) -> list[tuple[int, int, int, int]]:
    """``(flash_first, flash_last, first, last)`` frame positions of each refill: from the
    frame after each destructive flash run in ``destructive`` to the frame before the next
    flash frame of ``flash`` ``(n,) bool`` or the last frame (``n - 1``); refills without a
    frame are left out."""
    out = []
    for a, b in destructive:
        nxt = np.flatnonzero(flash[b + 1:])
        last = b + int(nxt[0]) if nxt.size else n - 1
        if last >= b + 1:
            out.append((a, b, b + 1, last))
    return out


def analyse_refills(times_s, values, flags: dict[str, np.ndarray], *, frame_index=None, linear: bool = True,
                    **fit_options) -> list[Refill]:
    """The refills of one curve, each fitted: a list of :class:`Refill` in time order (empty
    without a destructive flash).

    ``times_s``, ``values`` ``(N,)``: frame times (s) and the ROI's linear intensity;
    ``flags``: :func:`~ceuspipe.tic.flags.frame_flags` of the curve (``flash``, ``user``,
    ``empty_mask``); ``frame_index`` ``(N,)``: reported frame numbers (default ``0..N-1``).
    Every flash is judged on its own, on this curve's values
    (:func:`~ceuspipe.tic.flags.destructive_flashes`). ``linear`` False (values in grey
    levels) reports the refills without fitting them. ``fit_options``: as
    :func:`fit_refills`.
    """
    t = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    n = t.size
    fi = np.arange(n) if frame_index is None else np.asarray(frame_index).astype(np.int64).ravel()
    flash = np.asarray(flags["flash"], dtype=bool)
    skip = flags["empty_mask"] | flags["user"] | flash
    runs = destructive_flashes(y, flash, times_s=t, exclude=flags["user"])
    out = []
    for a, b, first, last in refill_windows(flash, runs, n):
        start, end = float(t[first]), float(t[last])
        frames = (int(fi[first]), int(fi[last]))
        flash_frames = (int(fi[a]), int(fi[b]))
        if not linear:
            out.append(Refill(start_s=start, end_s=end, success=False, n_points=0, flash_frames=flash_frames,
                              frames=frames, parameters={k: Parameter(math.nan, u) for k, u in REFILL_UNITS.items()},
                              reason="not fitted: the replenishment model needs linear intensity (mean_linear)"))
            continue
        idx = np.arange(first, last + 1)
        idx = idx[~skip[idx]]
        r = fit_refill(t[idx], y[idx], start_s=start, end_s=end, **fit_options)
        r.flash_frames, r.frames = flash_frames, frames
        out.append(r)
    return out
