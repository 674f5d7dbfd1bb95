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

Each model is one :class:`BolusModel` entry of :data:`MODELS`, which also carries
what :mod:`ceuspipe.tic.fit` needs to fit it: the map from the shared *peak
parametrisation* ``(t0, O, P, m, shape)`` (onset, offset, peak height above the
offset, time from onset to peak, one shape parameter) to the model's own
parameters, start values of the shape parameter from the curve's first moment,
and the shape parameter's bounds. Adding a model is adding one entry here; the
CLI's ``--tic-model`` choices come from :data:`MODELS` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

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
    from scipy import special  # imported here: the CLI reads MODELS without loading scipy

    out[pos] = p["A"] * special.ndtr((np.log(tp[pos]) - p["mu"]) / p["sigma"])
    return out


def _lognormal_from_peak(t0: float, O: float, P: float, m: float, sigma: float) -> tuple[float, ...]:
    mu = math.log(m) + sigma * sigma
    A = P * _SQRT_2PI * sigma * m * math.exp(0.5 * sigma * sigma)
    return (t0, O, A, mu, sigma)


def _lognormal_shape_starts(mode: float, mean: float) -> list[float]:
    # mean / mode = exp(1.5 sigma**2)
    s0 = math.sqrt(math.log(mean / mode) / 1.5) if mean > mode else 0.5
    s0 = min(max(s0, 0.2), 1.5)
    return [s0, 0.5 * s0, 2.0 * s0]


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
    from scipy import special

    log_total = math.log(abs(K)) + (a + 1.0) * math.log(b) + special.gammaln(a + 1.0)
    out[pos] = math.copysign(math.exp(min(log_total, 700.0)), K) * special.gammainc(a + 1.0, tp[pos] / b)
    return out


def _gamma_from_peak(t0: float, O: float, P: float, m: float, alpha: float) -> tuple[float, ...]:
    # K = P * (e / m)**alpha, kept finite in log space (P may be 0)
    K = P * math.exp(min(alpha * (1.0 - math.log(m)), 700.0)) if P != 0 else 0.0
    return (t0, O, K, alpha, m / alpha)


def _gamma_shape_starts(mode: float, mean: float) -> list[float]:
    # mean / mode = (alpha + 1) / alpha
    a0 = mode / (mean - mode) if mean > mode else 2.0
    a0 = min(max(a0, 0.5), 50.0)
    return [a0, 0.4 * a0, 2.5 * a0]


@dataclass(frozen=True)
class BolusModel:
    """A named bolus model with its parameters, units and closed forms.

    ``func(t, *params)`` evaluates the curve; ``mode(p)`` and ``mean(p)`` give the
    time to peak and the mean transit time after onset ``t0`` (s, from the
    parameter dict ``p``); ``cum_area(t', p)`` is the area of ``f - O`` from
    ``t0`` to ``t0 + t'`` (a.u.·s).

    Fitting (see :mod:`ceuspipe.tic.fit`): ``from_peak(t0, O, P, m, shape)`` gives
    the model's parameters, in ``param_names`` order, of the curve with onset
    ``t0`` (s), offset ``O``, peak height ``P`` above the offset (a.u.) reached
    ``m`` seconds after onset, and shape parameter ``shape`` (named
    ``shape_name``, bounded by ``shape_bounds``); ``shape_starts(mode, mean)``
    gives start values of ``shape`` from a curve's time to peak and first moment
    after onset (s).
    """

    name: str
    param_names: tuple[str, ...]
    param_units: tuple[str, ...]
    func: Callable[..., np.ndarray]
    mode: Callable[[dict], float]
    mean: Callable[[dict], float]
    cum_area: Callable[[np.ndarray, dict], np.ndarray]
    from_peak: Callable[..., tuple[float, ...]]
    shape_name: str
    shape_bounds: tuple[float, float]
    shape_starts: Callable[[float, float], list[float]]

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
        from_peak=_lognormal_from_peak,
        shape_name="sigma",
        shape_bounds=(0.05, 2.5),
        shape_starts=_lognormal_shape_starts,
    ),
    "gamma": BolusModel(
        name="gamma",
        param_names=("t0", "O", "K", "alpha", "beta"),
        param_units=("s", "a.u.", "a.u./s^alpha", "1", "s"),
        func=gamma_variate,
        mode=_gamma_mode,
        mean=_gamma_mean,
        cum_area=_gamma_cum,
        from_peak=_gamma_from_peak,
        shape_name="alpha",
        shape_bounds=(0.2, 200.0),
        shape_starts=_gamma_shape_starts,
    ),
}


def get_model(name: str) -> BolusModel:
    """The :class:`BolusModel` called ``name`` (a key of :data:`MODELS`)."""
    from ceuspipe.errors import InputError

    try:
        return MODELS[name]
    except KeyError:
        raise InputError(None, f"unknown TIC model {name!r}; choose one of {', '.join(MODELS)}") from None
