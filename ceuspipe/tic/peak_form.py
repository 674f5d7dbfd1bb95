"""The bolus models in the peak parametrisation, vectorised over many curves.

:mod:`ceuspipe.tic.fit` fits every model in the *peak parametrisation*
``x = (t0, O, P, m, shape)`` (onset s, offset a.u., peak height above the offset a.u.,
time from onset to peak s, shape parameter). In it both models take one form: with
``u = ln((t - t0) / m)`` for ``t > t0``,

* lognormal:      ``f = O + P * exp(-u**2 / (2 sigma**2))``
* gamma variate:  ``f = O + P * exp(alpha * (1 + u - exp(u)))``

and ``f = O`` for ``t <= t0``. These are exactly :func:`~ceuspipe.tic.models.lognormal` and
:func:`~ceuspipe.tic.models.gamma_variate` at ``MODELS[name].from_peak(*x)``, so the
closed forms below (curve, Jacobian, public parameters and the perfusion parameters of
:mod:`ceuspipe.tic.parameters`) mean what the per-curve code means; tests check them against
it. Here they work on arrays: ``x`` is ``(N, 5)`` (one row per curve), times ``(T,)`` s, and
every result is ``(N,)`` or ``(N, T)`` float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ceuspipe.errors import InputError

__all__ = ["PeakForm", "PEAK_FORMS", "get_peak_form", "DERIVED_NAMES"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
# the names :func:`PeakForm.derived` returns, in the order of PARAMETER_UNITS
DERIVED_NAMES = ("PE", "TTP", "TI", "TO", "RT", "TTP_from_onset", "FT", "mTT", "WiR", "WoR", "WiAUC", "WoAUC",
                 "WiWoAUC", "WiPI")


@dataclass(frozen=True)
class PeakForm:
    """One model as ``f - O = P * exp(h(u, s))``: ``h``, ``h_u = dh/du``, ``h_s = dh/ds`` of
    ``u`` and shape ``s`` (arrays that broadcast); ``mtt_over_m(s)``, the mean transit time
    over ``m``; ``inflections(s)``, ``(v_in, v_out)``: ``t'/m`` where the slope is largest
    and smallest (NaN where there is none); ``ti_to(s, ln_fraction)``: ``(v_TI, v_TO)``,
    ``t'/m`` where ``f - O`` is ``fraction`` of ``P``; ``area(v, P, m, s)``: the area of
    ``f - O`` from ``t0`` to ``t0 + v*m`` (a.u.·s); ``public(O, P, m, s)``: the model's own
    parameters after ``t0``, in ``MODELS[name].param_names[1:]`` order."""

    name: str
    h: Callable
    h_u: Callable
    h_s: Callable
    mtt_over_m: Callable
    inflections: Callable
    ti_to: Callable
    area: Callable
    public: Callable

    def curve(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``f`` ``(N, T)`` at times ``t`` ``(T,)`` s for parameters ``x`` ``(N, 5)``."""
        return self.curve_and_jacobian(t, x, jacobian=False)[0]

    def curve_and_jacobian(self, t: np.ndarray, x: np.ndarray, jacobian: bool = True, out: np.ndarray | None = None):
        """``(f, J)``: ``f`` ``(N, T)`` and ``J = df/dx`` ``(N, 5, T)``, parameter-major so that
        ``J @ J.transpose(0, 2, 1)`` is one batched product (None unless ``jacobian``); zero
        derivatives (but ``df/dO = 1``) before onset. ``out``: a float64 buffer of at least
        ``N * 5 * T`` elements to hold ``J`` (reused across calls, it saves page faults)."""
        x = np.asarray(x, dtype=t.dtype)  # computed in the precision of t
        t0, O, P, m, s = (x[:, j:j + 1] for j in range(5))
        tp = t[None, :] - t0
        pos = tp > 0
        tp = np.where(pos, tp, 1.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            # u beyond 50 (t' > 5e21 m) changes nothing but keeps exp(u) finite; h is kept
            # above a quarter of the log of the smallest normal number (-177 in float64,
            # -21.8 in float32) so that no product of two Jacobian entries is subnormal (100x
            # slower arithmetic): exp(-21.8) = 3e-10 of the peak is zero for every purpose here
            u = np.minimum(np.log(tp / m), 50.0)
            E = np.exp(np.clip(self.h(u, s), _h_floor(t.dtype), 80.0))
            E[~pos] = 0.0
            f = O + P * E
            if not jacobian:
                return f, None
            size = x.shape[0] * 5 * t.size
            J = (np.empty(size) if out is None else out.ravel()[:size]).reshape(x.shape[0], 5, t.size)
            PE = P * E
            dhu = PE * self.h_u(u, s)
            np.divide(-dhu, tp, out=J[:, 0])
            J[:, 1] = 1.0
            J[:, 2] = E
            np.divide(-dhu, m, out=J[:, 3])
            np.multiply(PE, self.h_s(u, s), out=J[:, 4])
        return f, J

    def slope(self, v: np.ndarray, P: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
        """``df/dt`` (a.u./s) at ``t' = v*m`` (``v > 0``), arrays that broadcast."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            u = np.log(v)
            return P * np.exp(self.h(u, s)) * self.h_u(u, s) / (v * m)

    def derived(self, x: np.ndarray, fraction: float = 0.05) -> dict[str, np.ndarray]:
        """The perfusion parameters of :func:`ceuspipe.tic.parameters.perfusion_parameters`
        (all but QOF) for ``x`` ``(N, 5)`` in curve units: name -> ``(N,)``, NaN where the
        curve has no positive peak. Closed forms; slopes at the inflection points."""
        t0, O, P, m, s = (np.asarray(x[:, j], dtype=np.float64) for j in range(5))
        ok = (P > 0) & (m > 0) & (s > 0) & np.isfinite(x).all(axis=1)
        nan = np.full(P.shape, np.nan)
        P, m, s, t0 = (np.where(ok, a, np.nan) for a in (P, m, s, t0))
        with np.errstate(all="ignore"):
            v_ti, v_to = self.ti_to(s, math.log(fraction))
            v_in, v_out = self.inflections(s)
            v_in = np.clip(np.where(np.isfinite(v_in), v_in, v_ti), v_ti, 1.0)
            v_out = np.clip(np.where(np.isfinite(v_out), v_out, v_to), 1.0, v_to)
            ttp = t0 + m
            ti, to = t0 + v_ti * m, t0 + v_to * m
            a_ti, a_pk, a_to = (self.area(v, P, m, s) for v in (v_ti, 1.0, v_to))
            wi, wo = a_pk - a_ti, a_to - a_pk
            out = {"PE": np.where(ok, P, nan), "TTP": ttp, "TI": ti, "TO": to, "RT": ttp - ti,
                   "TTP_from_onset": m, "FT": to - ttp, "mTT": m * self.mtt_over_m(s),
                   "WiR": self.slope(v_in, P, m, s), "WoR": self.slope(v_out, P, m, s),
                   "WiAUC": wi, "WoAUC": wo, "WiWoAUC": wi + wo, "WiPI": np.where(ttp > ti, wi / (ttp - ti), nan)}
        return {k: out[k] for k in DERIVED_NAMES}

    def public_params(self, x: np.ndarray) -> np.ndarray:
        """The model's public parameters ``(N, 5)`` (``MODELS[name].param_names`` order) of
        ``x`` ``(N, 5)``, as ``MODELS[name].from_peak`` gives them one curve at a time."""
        t0, O, P, m, s = (np.asarray(x[:, j], dtype=np.float64) for j in range(5))
        with np.errstate(all="ignore"):
            return np.stack([t0, *self.public(O, P, m, s)], axis=1)


def _h_floor(dtype) -> float:
    return 0.25 * math.log(float(np.finfo(dtype).tiny))


def _newton(h, h_u, u, s, target, steps: int = 3):
    """``u`` polished by Newton steps on ``h(u, s) = target``."""
    for _ in range(steps):
        d = h_u(u, s)
        u = np.where(d != 0, u - (h(u, s) - target) / np.where(d != 0, d, 1.0), u)
    return u


# --- lognormal: h = -u**2 / (2 s**2) ------------------------------------------------------------

def _ln_h(u, s):
    return -0.5 * (u / s) ** 2


def _ln_h_u(u, s):
    return -u / (s * s)


def _ln_h_s(u, s):
    return u * u / (s * s * s)


def _ln_inflections(s):
    # slope ~ -u exp(-u - u**2/(2 s**2)); extremes where u**2/s**2 + u - 1 = 0
    r = np.sqrt(1.0 + 4.0 / (s * s))
    return np.exp(-0.5 * s * s * (1.0 + r)), np.exp(0.5 * s * s * (r - 1.0))


def _ln_ti_to(s, ln_fraction):
    w = s * math.sqrt(-2.0 * ln_fraction)
    return np.exp(-w), np.exp(w)


def _ln_area(v, P, m, s):
    from scipy import special

    # A * ndtr((ln t' - mu) / s) with mu = ln m + s**2, A = P sqrt(2 pi) s m exp(s**2 / 2)
    A = P * _SQRT_2PI * s * m * np.exp(0.5 * s * s)
    return A * special.ndtr((np.log(v) - s * s) / s)


def _ln_public(O, P, m, s):
    return O, P * _SQRT_2PI * s * m * np.exp(0.5 * s * s), np.log(m) + s * s, s


# --- gamma variate: h = a (1 + u - e**u) ---------------------------------------------------------

def _gv_h(u, a):
    return a * (1.0 + u - np.exp(u))


def _gv_h_u(u, a):
    return a * (1.0 - np.exp(u))


def _gv_h_s(u, a):
    return 1.0 + u - np.exp(u)


def _gv_inflections(a):
    # f'' = 0 at t'/beta = alpha -+ sqrt(alpha), i.e. v = 1 -+ 1/sqrt(alpha); none before the
    # peak for alpha <= 1 (the slope falls from onset on)
    r = 1.0 / np.sqrt(a)
    return np.where(r < 1.0, 1.0 - r, np.nan), 1.0 + r


def _gv_ti_to(a, ln_fraction):
    from scipy import special

    # a (1 + ln v - v) = ln f  <=>  v = -W_k(-exp(ln f / a - 1)), branch 0 below the peak, -1 after
    z = -np.exp(ln_fraction / a - 1.0)
    v_ti = -special.lambertw(z, 0).real
    v_to = -special.lambertw(z, -1).real
    # near the branch point (large alpha) W loses digits: polish in u
    u_ti = _newton(_gv_h, _gv_h_u, np.log(v_ti), a, ln_fraction)
    u_to = _newton(_gv_h, _gv_h_u, np.log(v_to), a, ln_fraction)
    return np.exp(u_ti), np.exp(u_to)


def _gv_area(v, P, m, a):
    from scipy import special

    # total * gammainc(a + 1, t'/beta), beta = m/a, total = K beta**(a+1) Gamma(a+1), K = P (e/m)**a
    log_total = np.log(P) + np.log(m) + a - (a + 1.0) * np.log(a) + special.gammaln(a + 1.0)
    return np.exp(np.minimum(log_total, 700.0)) * special.gammainc(a + 1.0, a * v)


def _gv_public(O, P, m, a):
    K = np.where(P != 0, P * np.exp(np.minimum(a * (1.0 - np.log(m)), 700.0)), 0.0)
    return O, K, a, m / a


PEAK_FORMS: dict[str, PeakForm] = {
    "lognormal": PeakForm("lognormal", _ln_h, _ln_h_u, _ln_h_s, lambda s: np.exp(1.5 * s * s), _ln_inflections,
                          _ln_ti_to, _ln_area, _ln_public),
    "gamma": PeakForm("gamma", _gv_h, _gv_h_u, _gv_h_s, lambda a: (a + 1.0) / a, _gv_inflections, _gv_ti_to,
                      _gv_area, _gv_public),
}


def get_peak_form(name: str) -> PeakForm:
    """The :class:`PeakForm` of model ``name`` (a key of :data:`~ceuspipe.tic.models.MODELS`)."""
    try:
        return PEAK_FORMS[name]
    except KeyError:
        raise InputError(None, f"no batched form of TIC model {name!r}; choose one of {', '.join(PEAK_FORMS)}") \
            from None
