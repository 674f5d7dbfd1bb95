"""Bolus models of a CEUS time-intensity curve, in seconds and linear units.

Both models are zero (``f = O``) for ``t' = t - t0 <= 0``:

* lognormal:      ``f = O + A / (sqrt(2*pi) * sigma * t') * exp(-(ln t' - mu)**2 / (2 sigma**2))``
* gamma variate:  ``f = O + K * t'**alpha * exp(-t' / beta)``

``t`` and ``t0`` are seconds on the clip's time axis; ``O`` (offset) is in the
curve's linear units ("a.u."). For the lognormal ``A`` is the area under the
bolus (a.u.·s), ``mu`` is in ln(s) and ``sigma`` is dimensionless. For the gamma
variate ``K`` is in a.u./s**alpha, ``alpha`` is dimensionless and ``beta`` in s.

The functions are evaluated in log space so that no combination of finite
parameters overflows; non-physical shape parameters (``sigma <= 0``,
``beta <= 0``) give the offset alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

__all__ = ["lognormal", "gamma_variate", "BolusModel", "MODELS", "get_model"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def lognormal(t, t0: float, O: float, A: float, mu: float, sigma: float) -> np.ndarray:
    """Lognormal bolus at times ``t`` (s, any shape); returns float64 of ``t``'s shape."""
    t = np.asarray(t, dtype=np.float64)
    out = np.full(t.shape, float(O))
    if not (sigma > 0) or not np.isfinite(sigma):
        return out
    tp = t - t0
    pos = tp > 0
    if np.any(pos):
        lt = np.log(tp[pos])
        z = (lt - mu) / sigma
        with np.errstate(over="ignore", under="ignore"):
            out[pos] += A / (_SQRT_2PI * sigma) * np.exp(-0.5 * z * z - lt)
    return out


def gamma_variate(t, t0: float, O: float, K: float, alpha: float, beta: float) -> np.ndarray:
    """Gamma-variate bolus at times ``t`` (s, any shape); float64 of ``t``'s shape."""
    t = np.asarray(t, dtype=np.float64)
    out = np.full(t.shape, float(O))
    if not (beta > 0) or not np.isfinite(beta) or K == 0:
        return out
    tp = t - t0
    pos = tp > 0
    if np.any(pos):
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            e = math.log(abs(K)) + alpha * np.log(tp[pos]) - tp[pos] / beta
            out[pos] += math.copysign(1.0, K) * np.exp(np.minimum(e, 700.0))
    return out


def _lognormal_mode(p: dict) -> float:
    return math.exp(p["mu"] - p["sigma"] ** 2)


def _lognormal_mean(p: dict) -> float:
    return math.exp(p["mu"] + 0.5 * p["sigma"] ** 2)


def _lognormal_cum(tp, p: dict) -> np.ndarray:
    tp = np.asarray(tp, dtype=np.float64)
    out = np.zeros(tp.shape)
    pos = tp > 0
    out[pos] = p["A"] * special.ndtr((np.log(tp[pos]) - p["mu"]) / p["sigma"])
    return out


def _gamma_mode(p: dict) -> float:
    return p["alpha"] * p["beta"]


def _gamma_mean(p: dict) -> float:
    return p["beta"] * (p["alpha"] + 1.0)


def _gamma_cum(tp, p: dict) -> np.ndarray:
    tp = np.asarray(tp, dtype=np.float64)
    out = np.zeros(tp.shape)
    K, a, b = p["K"], p["alpha"], p["beta"]
    if K == 0:
        return out
    pos = tp > 0
    log_total = math.log(abs(K)) + (a + 1.0) * math.log(b) + special.gammaln(a + 1.0)
    out[pos] = math.copysign(math.exp(min(log_total, 700.0)), K) * special.gammainc(a + 1.0, tp[pos] / b)
    return out


@dataclass(frozen=True)
class BolusModel:
    """A named bolus model with its parameters, units and closed forms.

    ``func(t, *params)`` evaluates the curve; ``mode(p)`` and ``mean(p)`` give the
    time to peak and the mean transit time after onset ``t0`` (s, from the
    parameter dict ``p``); ``cum_area(t', p)`` is the area of ``f - O`` from
    ``t0`` to ``t0 + t'`` (a.u.·s).
    """

    name: str
    param_names: tuple[str, ...]
    param_units: tuple[str, ...]
    func: Callable[..., np.ndarray]
    mode: Callable[[dict], float]
    mean: Callable[[dict], float]
    cum_area: Callable[[np.ndarray, dict], np.ndarray]

    def __call__(self, t, params: dict) -> np.ndarray:
        return self.func(t, *(params[n] for n in self.param_names))

    def units(self) -> dict[str, str]:
        return dict(zip(self.param_names, self.param_units))


MODELS: dict[str, BolusModel] = {
    "lognormal": BolusModel(
        name="lognormal",
        param_names=("t0", "O", "A", "mu", "sigma"),
        param_units=("s", "a.u.", "a.u.·s", "ln(s)", "1"),
        func=lognormal,
        mode=_lognormal_mode,
        mean=_lognormal_mean,
        cum_area=_lognormal_cum,
    ),
    "gamma": BolusModel(
        name="gamma",
        param_names=("t0", "O", "K", "alpha", "beta"),
        param_units=("s", "a.u.", "a.u./s^alpha", "1", "s"),
        func=gamma_variate,
        mode=_gamma_mode,
        mean=_gamma_mean,
        cum_area=_gamma_cum,
    ),
}


def get_model(name: str) -> BolusModel:
    """The :class:`BolusModel` called ``name`` ("lognormal" or "gamma")."""
    from ceuspipe.errors import InputError

    try:
        return MODELS[name]
    except KeyError:
        raise InputError(None, f"unknown TIC model {name!r}; choose one of {', '.join(MODELS)}") from None
