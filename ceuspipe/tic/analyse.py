"""One call from a per-frame curve to flags, a bolus fit and perfusion parameters.

:func:`analyse_curve` never raises for a bad curve (all NaN, flat, noise,
non-increasing times): it returns a :class:`TicResult` with ``success=False``
and a one-line ``reason``. It raises :class:`~ceuspipe.errors.InputError` only
when the arrays do not match or the model name is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy

import ceuspipe
from ceuspipe.errors import InputError
from ceuspipe.tic.fit import NOISE_MODELS, FitResult, fit_curve
from ceuspipe.tic.flags import FLAG_NAMES, confirm_jumps, frame_flags
from ceuspipe.tic.models import get_model
from ceuspipe.tic.parameters import CI_LEVEL, Parameter, empty_parameters, perfusion_parameters, propagate_uncertainty
from ceuspipe.tic.replenishment import analyse_refills

__all__ = ["TicResult", "analyse_curve", "versions"]

JSON_FORMAT = "ceuspipe.tic/1"
# A fitted bolus must be seen by this many used frames above half its peak and from TI
# to TO; otherwise a single noise spike could pass for a very narrow bolus.
MIN_HALF_MAX_FRAMES = 3
MIN_BOLUS_FRAMES = 5


def versions() -> dict[str, str]:
    """Versions of the code that produced a result."""
    return {"ceuspipe": ceuspipe.__version__, "numpy": np.__version__, "scipy": scipy.__version__}


def _num(v):
    """JSON-safe float: NaN/inf -> None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class TicResult:
    """A time-intensity curve, its per-frame flags, its fit and its parameters.

    Per-frame arrays, all ``(N,)``: ``frame_index`` (int), ``times_s`` (s),
    ``values`` (the fitted quantity, linear a.u.), ``fitted`` (model at
    ``times_s``, NaN without a fit), ``flags[name]`` (bool, see
    :mod:`ceuspipe.tic.flags`), and optional ``columns`` such as ``area_px``,
    ``mean_gray``, ``mean_linear``, ``panel_mean``. ``params``/``param_units``/
    ``param_stderr``: fitted model parameters; ``parameters``: perfusion
    parameters (:mod:`ceuspipe.tic.parameters`) with standard errors and 90 %
    intervals, NaN when ``success`` is False. ``fitted_low``/``fitted_high``
    ``(N,)``: the 90 % confidence band of the fitted curve; ``residual_model``:
    the fit's noise model, weights and loss (:func:`~ceuspipe.tic.fit.fit_curve`).
    ``reference``: the reference (parenchyma) region's curve analysed the same way,
    or None; ``relative``: lesion-over-reference parameters
    (:func:`~ceuspipe.tic.reference.relative_parameters`), empty without a reference.
    ``replenishment``: the refill after each destructive flash, fitted
    (:class:`~ceuspipe.tic.replenishment.Refill`, :mod:`ceuspipe.tic.replenishment`); empty
    without a destruction.
    """

    model: str
    success: bool
    reason: str
    frame_index: np.ndarray
    times_s: np.ndarray
    values: np.ndarray
    fitted: np.ndarray
    flags: dict[str, np.ndarray]
    parameters: dict[str, Parameter]
    params: dict[str, float] = field(default_factory=dict)
    param_stderr: dict[str, float] = field(default_factory=dict)
    covariance: np.ndarray | None = None
    qof: float = float("nan")
    quantity: str = "mean_linear"
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=versions)
    fitted_low: np.ndarray | None = None
    fitted_high: np.ndarray | None = None
    residual_model: dict = field(default_factory=dict)
    reference: "TicResult | None" = None
    relative: dict = field(default_factory=dict)
    replenishment: list = field(default_factory=list)

    @property
    def param_units(self) -> dict[str, str]:
        return get_model(self.model).units()

    @property
    def excluded(self) -> np.ndarray:
        """``(N,) bool``: frames left out of the fit (any flag set)."""
        out = np.zeros(self.times_s.shape, dtype=bool)
        for v in self.flags.values():
            out |= v
        return out

    @property
    def n_used(self) -> int:
        return int(np.count_nonzero(~self.excluded))

    def value(self, name: str) -> float:
        """Shortcut for ``parameters[name].value``."""
        return self.parameters[name].value

    def to_json_dict(self) -> dict:
        """JSON-ready summary (no per-frame arrays): NaN becomes ``null``.

        ``flags`` maps each flag name to the list of flagged frame indices. With a
        reference curve: ``reference`` (its own summary, same keys, without versions)
        and ``relative_parameters`` (name -> value, unit, stderr, extrapolated, definition).
        """
        d = self._json_core()
        if self.reference is not None:
            ref = self.reference._json_core()
            ref.pop("versions", None)
            ref.pop("format", None)
            d["reference"] = ref
            d["relative_parameters"] = {
                k: {kk: (_num(vv) if kk in ("value", "stderr") else vv) for kk, vv in v.items()}
                for k, v in self.relative.items()}
        return d

    def _json_core(self) -> dict:
        fi = self.frame_index
        t = self.times_s
        used = ~self.excluded
        return {
            "format": JSON_FORMAT,
            "model": self.model,
            "quantity": self.quantity,
            "success": bool(self.success),
            "reason": self.reason,
            "qof_percent": _num(self.qof),
            "parameters": {k: p.to_dict() for k, p in self.parameters.items()},
            "model_params": {
                k: {"value": _num(v), "unit": self.param_units[k], "stderr": _num(self.param_stderr.get(k))}
                for k, v in self.params.items()
            },
            "covariance": None if self.covariance is None else [[_num(v) for v in row] for row in self.covariance],
            "residual_model": {k: (_num(v) if isinstance(v, float) else v) for k, v in self.residual_model.items()},
            "uncertainty": {
                "level": CI_LEVEL,
                "method": "fit covariance propagated through each parameter's definition (numerical "
                          "Jacobian, delta method); interval value -+ z*stderr",
                "uncertain_parameters": sorted(k for k, p in self.parameters.items() if p.uncertain),
            },
            "n_frames": int(t.size),
            "n_used": self.n_used,
            "time_range_s": [_num(np.min(t[used])), _num(np.max(t[used]))] if used.any() else None,
            "flags": {k: fi[v].astype(int).tolist() for k, v in self.flags.items()},
            "replenishment": [r.to_dict() for r in self.replenishment],
            "warnings": list(self.warnings),
            "settings": dict(self.settings),
            "versions": dict(self.versions),
        }


def analyse_curve(
    times_s,
    values,
    *,
    model: str = "lognormal",
    exclude=None,
    panel_means=None,
    frame_index=None,
    columns: dict | None = None,
    quantity: str = "mean_linear",
    detect_flash: bool = True,
    detect_jumps: bool = True,
    min_qof: float = 30.0,
    min_snr: float = 3.0,
    fraction: float = 0.05,
    noise: str = "auto",
    robust: bool = True,
) -> TicResult:
    """Flag frames, fit ``model`` and compute perfusion parameters.

    ``times_s`` ``(N,)``: true frame times in seconds (need not be uniform; must
    not decrease); ``values`` ``(N,)``: linear ROI intensity (NaN for an empty
    mask); ``exclude`` ``(N,)`` bool: frames the caller leaves out;
    ``panel_means`` ``(N,)``: whole-panel mean grey for flash detection;
    ``frame_index`` ``(N,)`` int (default ``0..N-1``); ``columns``: extra per-frame
    ``(N,)`` arrays kept for the CSV. ``min_qof`` (%), ``min_snr``: success tests
    of :func:`~ceuspipe.tic.fit.fit_curve`; ``fraction``: the PE fraction that
    defines TI and TO. A fit also fails when fewer than 3 used frames lie above
    half the fitted peak or fewer than 5 between TI and TO (the bolus is not resolved).
    ``noise`` (``"auto"``, ``"multiplicative"``, ``"additive"``) and ``robust``: the
    fit's noise model and loss (:func:`~ceuspipe.tic.fit.fit_curve`;
    ``noise="additive", robust=False`` is plain least squares). Every perfusion
    parameter gets a standard error and a 90 % interval
    (:func:`~ceuspipe.tic.parameters.propagate_uncertainty`). The refill after every
    destructive flash (to the next flash or the clip's end) is fitted with the replenishment
    model (:func:`~ceuspipe.tic.replenishment.analyse_refills`, same QOF, SNR and noise
    settings) into ``replenishment``.
    """
    get_model(model)
    t, y, fi, cols = _checked_arrays(times_s, values, frame_index, exclude, panel_means, columns)
    settings = {
        "detect_flash": bool(detect_flash),
        "detect_jumps": bool(detect_jumps),
        "min_qof_percent": float(min_qof),
        "min_snr": float(min_snr),
        "ti_to_fraction_of_pe": float(fraction),
        "noise": noise,
        "robust": bool(robust),
    }
    if noise not in NOISE_MODELS:
        raise InputError(None, f"unknown noise model {noise!r}; choose one of {', '.join(NOISE_MODELS)}")
    flags = frame_flags(y, times_s=t, panel_means=panel_means, exclude=exclude, flash=detect_flash, jumps=detect_jumps,
                        log_values=quantity != "mean_gray")
    res = TicResult(
        model=model, success=False, reason="", frame_index=fi, times_s=t, values=y,
        fitted=np.full(t.size, np.nan), flags={k: flags[k] for k in FLAG_NAMES}, parameters=empty_parameters(model),
        quantity=quantity, columns=cols, settings=settings,
    )
    tf = t[np.isfinite(t)]
    if tf.size > 1 and np.any(np.diff(tf) < 0):
        res.reason = "frame times decrease: times_s must be in presentation order"
        return res
    fit_options = {"min_qof": min_qof, "min_snr": min_snr, "noise": noise, "robust": robust}
    if res.flags["flash"].any():
        _replenishment(res, fit_options)
    if res.flags["jump"].any():
        _confirm_jump_flags(res, fit_options)
    used = ~res.excluded
    fit = fit_curve(t[used], y[used], model, **fit_options)
    _take_fit(res, fit)
    if fit.success:
        _perfusion(res, fit, used, fraction)
    else:
        res.parameters = empty_parameters(model, fit.qof)
    return res


def _checked_arrays(times_s, values, frame_index, exclude, panel_means, columns):
    """``(t, y, frame_index, columns)``: times (s) and values as float ``(N,)``, frame
    indices int ``(N,)`` (default ``0..N-1``), columns name -> float ``(N,)``. Raises
    :class:`~ceuspipe.errors.InputError` when any array's size is not ``N``."""
    t = np.asarray(times_s, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    n = t.size
    if y.size != n:
        raise InputError(None, f"times_s has {n} entries but values has {y.size}")
    fi = np.arange(n) if frame_index is None else np.asarray(frame_index).astype(np.int64).ravel()
    cols = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in (columns or {}).items()}
    for name, arr in [("frame_index", fi), ("exclude", exclude), ("panel_means", panel_means), *cols.items()]:
        if arr is not None and np.asarray(arr).size != n:
            raise InputError(None, f"{name} has {np.asarray(arr).size} entries but the curve has {n} frames")
    return t, y, fi, cols


def _confirm_jump_flags(res: TicResult, fit_options: dict) -> None:
    """Keeps only the jump candidates in ``res.flags["jump"]`` ``(N,)`` that are still outliers
    against a fit that includes them: the running median is biased at sharp, coarsely
    sampled peaks."""
    t, y, jump = res.times_s, res.values, res.flags["jump"]
    with_cands = ~res.excluded | jump
    trial = fit_curve(t[with_cands], y[with_cands], res.model, **fit_options)
    if trial.params:
        with np.errstate(all="ignore"):
            res.flags["jump"] = confirm_jumps(y, trial.predict(t), jump, with_cands, noise_sd=trial.noise_sd(t))


def _replenishment(res: TicResult, fit_options: dict) -> None:
    """Fits the refill after every destructive flash into ``res.replenishment``. A destruction
    seen only by that per-flash test on the linear values (the panel-level test of
    :func:`~ceuspipe.tic.flags.frame_flags` misses refills from a floor tens of dB down) is
    flagged too: ``destruction`` from the first refill on, and no ``jump`` there (the bolus
    model does not describe refills)."""
    linear = res.quantity != "mean_gray"
    res.replenishment = analyse_refills(res.times_s, res.values, res.flags, frame_index=res.frame_index,
                                        linear=linear, **fit_options)
    if res.replenishment and not res.flags["destruction"].any():
        first = int(np.searchsorted(res.frame_index, res.replenishment[0].frames[0]))
        res.flags["destruction"][first:] = True
        res.flags["jump"] &= ~res.flags["destruction"]


def _take_fit(res: TicResult, fit: FitResult) -> None:
    """Copies the fit's reason, noise model, warnings, QOF, parameters and covariance into
    ``res``, with the fitted curve and its confidence band at every frame (``(N,)`` each)."""
    res.reason = fit.reason
    res.residual_model = dict(fit.residual_model)
    res.warnings = list(fit.warnings)
    res.qof = fit.qof
    res.params = dict(fit.params)
    res.param_stderr = dict(fit.stderr)
    res.covariance = fit.covariance
    if fit.params:
        with np.errstate(all="ignore"):
            res.fitted = fit.predict(res.times_s)
            res.fitted_low, res.fitted_high = fit.band(res.times_s, CI_LEVEL)


def _perfusion(res: TicResult, fit: FitResult, used: np.ndarray, fraction: float) -> None:
    """Perfusion parameters of a successful fit over the used frames (``used`` ``(N,)``
    bool), with their uncertainty; sets ``res.success``, or ``res.reason`` when the fitted
    bolus has no positive peak or too few frames resolve it."""
    tu = res.times_s[used]
    t_first, t_last = float(tu.min()), float(tu.max())
    params = perfusion_parameters(res.model, fit.params, t_first=t_first, t_last=t_last, qof=fit.qof,
                                  fraction=fraction)
    ti, to, pe = (params[k].value for k in ("TI", "TO", "PE"))
    n_half = int(np.count_nonzero(res.fitted[used] - fit.params["O"] >= 0.5 * pe))
    n_bolus = int(np.count_nonzero((tu >= ti) & (tu <= (to if math.isfinite(to) else np.inf))))
    if not math.isfinite(pe):
        res.reason = "fitted curve has no positive peak"
    elif n_half < MIN_HALF_MAX_FRAMES or n_bolus < MIN_BOLUS_FRAMES:
        res.reason = (f"bolus not resolved in time: {n_half} frames above half the peak (need "
                      f"{MIN_HALF_MAX_FRAMES}), {n_bolus} from arrival to wash-out end (need {MIN_BOLUS_FRAMES})")
    else:
        if fit.cov_internal is not None:
            with np.errstate(all="ignore"):
                propagate_uncertainty(res.model, params, fit.x_internal, fit.cov_internal, fit.public,
                                      t_first=t_first, t_last=t_last, fraction=fraction)
        res.parameters = params
        res.success = True
