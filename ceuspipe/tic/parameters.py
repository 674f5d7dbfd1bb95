"""Perfusion parameters (VueBox convention) from a fitted bolus model.

All values are computed on the *fitted* curve ``f(t)`` in the curve's linear
units (a.u., the mean linear power of :mod:`ceuspipe.tic.linearize`), with the
offset ``O`` removed, and times in seconds on the clip's time axis:

========  ========  ==============================================================
name      unit      definition
========  ========  ==============================================================
PE        a.u.      peak enhancement ``f(TTP) - O``
TTP       s         time to peak on the clip's time axis (clip start = its time 0)
TI        s         arrival (wash-in start): first time ``f - O`` reaches 5% of PE
TO        s         wash-out end: the time after TTP when ``f - O`` falls to 5% of PE
RT        s         rise time ``TTP - TI`` (the time to peak measured from arrival)
TTP_from_onset s    ``TTP - t0``: time to peak from the model's onset ``t0``
FT        s         fall time ``TO - TTP``
mTT       s         mean transit time of the model measured from onset ``t0``:
                    ``exp(mu + sigma**2/2)`` (lognormal), ``beta*(alpha+1)`` (gamma)
WiR       a.u./s    wash-in rate: the largest slope of ``f`` on ``[TI, TTP]``
WoR       a.u./s    wash-out rate: the smallest (negative) slope on ``[TTP, TO]``
WiAUC     a.u.·s    area of ``f - O`` from TI to TTP
WoAUC     a.u.·s    area of ``f - O`` from TTP to TO
WiWoAUC   a.u.·s    ``WiAUC + WoAUC``
WiPI      a.u.      wash-in perfusion index ``WiAUC / RT``
QOF       %         quality of fit, ``100*max(0, 1 - SSE/SST)`` (see :mod:`.fit`)
========  ========  ==============================================================

The 5% level is ``fraction`` (default 0.05). Areas use the models' closed-form
integrals, so they are exact.

A parameter is flagged ``extrapolated`` when the part of the curve it depends
on lies outside the frames that were fitted: before the first used frame
(``t_first``) or after the last (``t_last``). Wash-out parameters (TO, FT, WoR,
WoAUC, WiWoAUC, mTT) are therefore extrapolated whenever the clip ends before
the curve has fallen back to 5% of PE (``TO > t_last``); wash-in parameters
when the clip starts after arrival or ends before the peak.

Uncertainty (:func:`propagate_uncertainty`): every parameter but QOF gets a
standard error and a 90 % confidence interval ``value -+ 1.645 * stderr``, from
the fit's covariance in the peak parametrisation propagated through these
definitions by a numerical Jacobian (the delta method). A parameter whose
interval is wider than its magnitude (``ci_high - ci_low > |value|``) is
flagged ``uncertain``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from scipy import optimize, special

from ceuspipe.tic.models import get_model

__all__ = ["Parameter", "PARAMETER_UNITS", "CI_LEVEL", "perfusion_parameters", "empty_parameters",
           "propagate_uncertainty"]

CI_LEVEL = 0.90

PARAMETER_UNITS: dict[str, str] = {
    "PE": "a.u.",
    "TTP": "s",
    "TI": "s",
    "TO": "s",
    "RT": "s",
    "TTP_from_onset": "s",
    "FT": "s",
    "mTT": "s",
    "WiR": "a.u./s",
    "WoR": "a.u./s",
    "WiAUC": "a.u.·s",
    "WoAUC": "a.u.·s",
    "WiWoAUC": "a.u.·s",
    "WiPI": "a.u.",
    "QOF": "%",
}

# Which part of the curve each parameter depends on: (start, end) as names of times.
_SPAN = {
    "PE": ("TTP", "TTP"),
    "TTP": ("TTP", "TTP"),
    "TI": ("TI", "TI"),
    "TO": ("TO", "TO"),
    "RT": ("TI", "TTP"),
    "TTP_from_onset": ("TI", "TTP"),
    "FT": ("TTP", "TO"),
    "mTT": ("TI", "TO"),
    "WiR": ("TI", "TTP"),
    "WoR": ("TTP", "TO"),
    "WiAUC": ("TI", "TTP"),
    "WoAUC": ("TTP", "TO"),
    "WiWoAUC": ("TI", "TO"),
    "WiPI": ("TI", "TTP"),
}


@dataclass
class Parameter:
    """One reported value: ``value`` in ``unit``; ``extrapolated`` when it relies on
    the fitted curve outside the fitted frames; ``stderr`` (same unit) and the
    :data:`CI_LEVEL` confidence interval ``ci_low``..``ci_high`` (NaN when not
    known); ``uncertain`` when that interval is wider than ``|value|``."""

    value: float
    unit: str
    extrapolated: bool = False
    stderr: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    uncertain: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("value", "stderr", "ci_low", "ci_high"):
            v = float(d[k])
            d[k] = v if math.isfinite(v) else None
        return d


def empty_parameters(model: str, qof: float = float("nan")) -> dict[str, Parameter]:
    """All parameter names with NaN values (used when there is no usable fit)."""
    out = {k: Parameter(float("nan"), u) for k, u in PARAMETER_UNITS.items()}
    out["QOF"] = Parameter(float(qof), "%")
    for name, unit in get_model(model).units().items():
        out[f"fit_{name}"] = Parameter(float("nan"), unit)
    return out


def _max_slope(f, a: float, b: float, h: float, largest: bool) -> float:
    if not (b > a):
        return float("nan")
    t = np.linspace(a, b, 4001)
    d = (f(t + h) - f(t - h)) / (2 * h)
    return float(np.max(d) if largest else np.min(d))


def perfusion_parameters(
    model: str,
    params: dict[str, float],
    *,
    t_first: float,
    t_last: float,
    qof: float = float("nan"),
    fraction: float = 0.05,
) -> dict[str, Parameter]:
    """Perfusion parameters of the fitted ``model`` with public ``params``.

    ``t_first``, ``t_last``: times (s) of the first and last frames used in the
    fit, for the ``extrapolated`` flags. Returns ``name -> Parameter`` for every
    name in :data:`PARAMETER_UNITS` plus ``fit_<param>`` for the model
    parameters. Values are NaN when the curve has no positive peak.
    """
    bm = get_model(model)
    out = empty_parameters(model, qof)
    for name in bm.param_names:
        out[f"fit_{name}"].value = float(params[name])
    t0, O = float(params["t0"]), float(params["O"])
    try:
        mode = float(bm.mode(params))
        mtt = float(bm.mean(params))
    except (ValueError, OverflowError, ZeroDivisionError):
        return out
    ttp = t0 + mode
    pe = float(bm(np.array([ttp]), params)[0] - O)
    if not (math.isfinite(pe) and pe > 0 and math.isfinite(ttp) and mode > 0):
        return out

    def g(t):
        return float(bm(np.array([t]), params)[0]) - O - fraction * pe

    times = {"TTP": ttp, "TI": float("nan"), "TO": float("nan")}
    try:
        times["TI"] = optimize.brentq(g, t0 + 1e-12 * mode, ttp, xtol=1e-9 * mode)
    except (ValueError, RuntimeError):
        pass
    b = ttp + mode
    for _ in range(200):
        if g(b) < 0:
            try:
                times["TO"] = optimize.brentq(g, ttp, b, xtol=1e-9 * mode)
            except (ValueError, RuntimeError):
                pass
            break
        b = ttp + 2 * (b - ttp)
        if not math.isfinite(b):
            break
    ti, to = times["TI"], times["TO"]

    def f(t):
        return bm(t, params)

    h = 1e-4 * mode

    def area(a, b):
        return float(np.diff(bm.cum_area(np.array([a - t0, b - t0]), params))[0])

    v = out
    v["PE"].value = pe
    v["TTP"].value = ttp
    v["TI"].value = ti
    v["TO"].value = to
    v["RT"].value = ttp - ti
    v["TTP_from_onset"].value = mode
    v["FT"].value = to - ttp
    v["mTT"].value = mtt
    v["WiR"].value = _max_slope(f, ti, ttp, h, largest=True)
    v["WoR"].value = _max_slope(f, ttp, to, h, largest=False)
    wi = area(ti, ttp) if math.isfinite(ti) else float("nan")
    wo = area(ttp, to) if math.isfinite(to) else float("nan")
    v["WiAUC"].value = wi
    v["WoAUC"].value = wo
    v["WiWoAUC"].value = wi + wo
    v["WiPI"].value = wi / (ttp - ti) if ttp > ti else float("nan")
    for name, (a, b) in _SPAN.items():
        ta, tb = times[a], times[b]
        v[name].extrapolated = bool(not (math.isfinite(ta) and math.isfinite(tb)) or ta < t_first or tb > t_last)
    return out


def propagate_uncertainty(
    model: str,
    values: dict[str, Parameter],
    x: np.ndarray,
    cov: np.ndarray,
    to_public: Callable[[np.ndarray], dict[str, float]],
    *,
    t_first: float,
    t_last: float,
    fraction: float = 0.05,
    level: float = CI_LEVEL,
) -> None:
    """Fill ``stderr``, ``ci_low``/``ci_high`` and ``uncertain`` of ``values`` in place.

    ``values``: the output of :func:`perfusion_parameters` for ``to_public(x)``;
    ``x`` ``(p,)`` and ``cov`` ``(p, p)``: the fit's optimum and covariance in any
    parametrisation that ``to_public`` maps to the model's public parameters.
    Derivatives are central differences with steps of 2 % of each standard error
    (at most 1e-3 of the parameter's size). Parameters that cannot be evaluated keep NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    names = [k for k in values if k != "QOF"]
    base = np.array([values[k].value for k in names])
    se_x = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    G = np.full((len(names), x.size), np.nan)
    for j in range(x.size):
        cap = 1e-3 * max(abs(float(x[j])), 1e-3)
        h = min(0.02 * se_x[j], cap) if se_x[j] > 0 and math.isfinite(se_x[j]) else 1e-3 * cap
        rows = []
        for sign in (1.0, -1.0):
            xs = x.copy()
            xs[j] += sign * h
            try:
                p = perfusion_parameters(model, to_public(xs), t_first=t_first, t_last=t_last, fraction=fraction)
                rows.append(np.array([p[k].value for k in names]))
            except (ValueError, OverflowError, ZeroDivisionError):
                rows.append(np.full(len(names), np.nan))
        G[:, j] = (rows[0] - rows[1]) / (2 * h)
    z = float(special.ndtri(0.5 + level / 2))
    with np.errstate(invalid="ignore", over="ignore"):
        var = np.einsum("ij,jk,ik->i", G, cov, G)
    for k, v, b in zip(names, var, base):
        par = values[k]
        if not (math.isfinite(v) and math.isfinite(b)):
            continue
        se = math.sqrt(max(float(v), 0.0))
        par.stderr = se
        par.ci_low, par.ci_high = b - z * se, b + z * se
        par.uncertain = bool(2 * z * se > abs(b))
