"""Batched weighted Levenberg-Marquardt for many small curve fits on one time axis, with the
per-curve noise model and its reweighting passes: the numerical core shared by the bolus
fits of :mod:`ceuspipe.tic.batch_fit` and the refill fits of :mod:`ceuspipe.tic.replenishment`.

A model is any object with ``curve(t, x)`` and ``curve_and_jacobian(t, x, jacobian=True,
out=None)`` over ``x`` ``(n, p)``; a :class:`Chunk` holds the state of ``n`` curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ceuspipe.tic.fit_steps import HUBER_SD, MIN_POINTS, WEIGHT_PASSES

__all__ = ["Chunk", "FTOL", "FTOL_EARLY", "gram", "huber_sqrt_weights", "levenberg_marquardt", "masked_median",
           "masked_quantiles", "reweight", "run_chunks"]

# Levenberg-Marquardt stops when a step lowers the cost by less than this fraction (the last
# pass; earlier passes only find the basin and the next pass' weights, FTOL_EARLY)
FTOL = 1e-7
FTOL_EARLY = 1e-4


@dataclass
class Chunk:
    """One chunk of ``n`` curves on ``T`` times: ``ys`` ``(n, T)`` scaled values (0 where
    invalid), ``valid`` ``(n, T)`` float 0/1, ``y_lo``/``scale`` ``(n,)``, box ``lo``/``hi``
    ``(n, p)``, ``x`` ``(n, p)`` current optimum, ``inv_sd`` ``(n, T)`` weights' 1/SD."""

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

    @classmethod
    def fresh(cls, ys: np.ndarray, valid: np.ndarray, y_lo: np.ndarray, scale: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, live: np.ndarray, dtype) -> "Chunk":
        """A chunk before the start: curves and ``valid`` in ``dtype``, ``x`` zeros ``(n, p)`` (``p``
        from the box), unit weights where valid, nothing converged, the noise model ``a = 1, b = 0``."""
        n = ys.shape[0]
        return cls(ys=ys.astype(dtype), valid=valid.astype(dtype), y_lo=y_lo, scale=scale, lo=lo, hi=hi,
                   x=np.zeros((n, lo.shape[1])), inv_sd=valid.astype(dtype), converged=np.zeros(n, bool),
                   n_iter=np.zeros(n, np.int32), a_s=np.ones(n), b_s=np.zeros(n), live=live)


# --- search: Levenberg-Marquardt ---------------------------------------------------------------------------

def _cost(r: np.ndarray, k: float | None) -> np.ndarray:
    """Per-curve cost ``(n,)`` of weighted residuals ``r`` ``(n, T)``: sum of squares, or the
    Huber form of ``scipy.optimize.least_squares`` at threshold ``k``."""
    if k is None:
        return np.einsum("ij,ij->i", r, r, dtype=np.float64)
    a = np.abs(r)
    return np.where(a <= k, r * r, 2.0 * k * a - k * k).sum(axis=1, dtype=np.float64)


def levenberg_marquardt(t: np.ndarray, ch: Chunk, form, huber: float | None, max_iter: int,
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
            hw = huber_sqrt_weights(r, huber)
            r = r * hw
            sw = w * hw
        Jw = np.multiply(J, sw[:, None, :], out=J)
        # the 5x5 systems in float64 whatever the precision of the curves
        A = gram(Jw).astype(np.float64)
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
        sw = w_all * huber_sqrt_weights((f - ch.ys) * w_all, huber)
    return np.multiply(J, sw[:, None, :], out=J)


def huber_sqrt_weights(r: np.ndarray, k: float) -> np.ndarray:
    """Square roots of the Huber IRLS weights ``min(1, k/|r|)`` of residuals ``r`` ``(n, T)``."""
    a = np.abs(r)
    return np.sqrt(np.minimum(1.0, k / np.maximum(a, np.finfo(r.dtype).tiny))).astype(r.dtype, copy=False)


def gram(Jw: np.ndarray) -> np.ndarray:
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


# --- reweight: the noise model of every curve --------------------------------------------------------

def _leverage(Jw: np.ndarray) -> np.ndarray:
    """Hat-matrix diagonal ``(n, T)`` of weighted Jacobians ``(n, 5, T)``."""
    with np.errstate(all="ignore"):
        Ainv = np.linalg.pinv(gram(Jw).astype(np.float64)).astype(Jw.dtype)
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


def masked_quantiles(a: np.ndarray, mask: np.ndarray, qs) -> list[np.ndarray]:
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


def masked_median(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median ``(n,)`` over the entries of each row of ``a`` ``(n, T)`` where ``mask``; NaN if none."""
    return masked_quantiles(a, mask, (0.5,))[0]


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
    mad = 1.4826 * masked_median(np.abs(r), v)
    n_v = v.sum(axis=1)
    additive = (n_v < 2 * MIN_POINTS) | ~(fmax > 0) | (kind == "additive")
    a_add = np.maximum(np.nan_to_num(mad), floor)
    f2, r2 = f * f, r * r
    med_f = masked_median(f, v)
    hi = v & (f >= med_f[:, None])
    b0 = 1.4826 * masked_median(np.abs(r) / np.maximum(f, floor[:, None]), hi)
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


def reweight(t: np.ndarray, ch: Chunk, form, Jw: np.ndarray, noise: str, robust: bool, max_iter: int) -> None:
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
        Jw = levenberg_marquardt(t, ch, form, huber, max_iter, ftol=FTOL if k == WEIGHT_PASSES - 1 else FTOL_EARLY)


# --- chunks of curves on threads ----------------------------------------------------------------

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
