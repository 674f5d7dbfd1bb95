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

:func:`fit_curve` is a short sequence of named steps over one state; the steps, and the
pieces they share with :class:`FitResult`, are in :mod:`ceuspipe.tic.fit_steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

# HUBER_SD, MIN_POINTS, WEIGHT_PASSES: the fit's constants, named here for its readers
from ceuspipe.tic.fit_steps import (  # noqa: F401
    HUBER_SD,
    MIN_POINTS,
    NOISE_MODELS,
    WEIGHT_PASSES,
    NoFit,
    to_public,
    covariance,
    noise_sd_model,
    normalise,
    qof_percent,
    residuals,
    reweight,
    search,
    valid_frames,
    verdict,
)
from ceuspipe.tic.models import get_model

__all__ = ["FitResult", "NOISE_MODELS", "fit_curve", "noise_sd_model", "qof_percent"]


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
        return dict(zip(bm.param_names, (float(v) for v in to_public(bm, np.asarray(x_internal, dtype=np.float64),
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
                J[:, j] = (bm.func(tf, *to_public(bm, xp, self.y_lo, self.scale))
                           - bm.func(tf, *to_public(bm, xm, self.y_lo, self.scale))) / (2 * h)
            sd = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", J, self.cov_internal, J), 0.0, None)).reshape(t.shape)
            f = self.predict(t)
        z = float(special.ndtri(0.5 + level / 2))
        return f - z * sd, f + z * sd


def _step(x: float, se: float) -> float:
    """Finite-difference step for a parameter of value ``x`` and standard error ``se``:
    2 % of the SE, at most 1e-3 of the parameter's size (stays inside its domain)."""
    cap = 1e-3 * max(abs(float(x)), 1e-3)
    return min(0.02 * se, cap) if se > 0 and math.isfinite(se) else 1e-3 * cap


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
    t, y = valid_frames(t, y)
    res = FitResult(model=model, success=False, n_points=int(t.size))
    try:
        state = normalise(bm, t, y, noise, robust)
        search(state)
    except NoFit as exc:
        res.reason = str(exc)
        return res
    reweight(state)
    residuals(state, res)
    covariance(state, res)
    verdict(state, res, min_qof, min_snr)
    return res
