"""Bolus models, fits and perfusion parameters against known synthetic curves."""

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, special

from ceuspipe.errors import InputError
from ceuspipe.tic.analyse import analyse_curve
from ceuspipe.tic.fit import fit_curve, qof_percent
from ceuspipe.tic.models import MODELS, gamma_variate, get_model, lognormal
from ceuspipe.tic.parameters import PARAMETER_UNITS, perfusion_parameters

LN = dict(t0=8.0, O=0.01, A=2.0, mu=math.log(10.0), sigma=0.6)  # TTP = 8 + 10*exp(-0.36) = 14.98 s
GV = dict(t0=6.0, O=0.02, K=0.004, alpha=3.0, beta=4.0)  # TTP = 6 + 12 = 18 s
WASH_OUT = ("TO", "FT", "WoR", "WoAUC", "WiWoAUC", "mTT")
WASH_IN = ("PE", "TTP", "TI", "RT", "WiR", "WiAUC", "WiPI", "TTP_from_onset")


def vfr_times(rng, t_end, mean_dt=0.5):
    """Variable frame times (s): intervals drawn between 0.1 and 2*mean_dt - 0.1."""
    dt = rng.uniform(0.1, 2 * mean_dt - 0.1, size=int(3 * t_end / mean_dt))
    t = np.cumsum(dt)
    return t[t <= t_end]


def noisy(y, rng, rel=0.05):
    """Multiplicative speckle-like noise of relative SD ``rel``."""
    return y * (1.0 + rel * rng.standard_normal(y.shape))


# --- models ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,p", [("lognormal", LN), ("gamma", GV)])
def test_models_equal_offset_before_onset_and_integrate_to_closed_form(name, p):
    bm = get_model(name)
    t = np.linspace(-5, 200, 20001)
    f = bm(t, p)
    assert np.all(f[t <= p["t0"]] == p["O"])
    assert np.all(f[t > p["t0"] + 0.5] > p["O"])
    num = integrate.trapezoid(f - p["O"], t)
    exact = float(bm.cum_area(np.array([200 - p["t0"]]), p)[0])
    assert num == pytest.approx(exact, rel=1e-4)
    # mean transit time from onset = first moment of the bolus
    m1 = integrate.trapezoid((t - p["t0"]) * (f - p["O"]), t) / num
    assert m1 == pytest.approx(bm.mean(p), rel=1e-3)


def test_models_are_numerically_safe_for_extreme_parameters():
    t = np.array([-1e9, 0.0, 1e-300, 1e-12, 1.0, 1e6, 1e12])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for args in [(0, 0, 1e30, 50, 0.01), (0, 1, 1, -50, 10), (0, 0, 1, 0, 0), (0, 0, 1, 0, -1)]:
            assert np.all(np.isfinite(lognormal(t, *args)))
        for args in [(0, 0, 1e-300, 200, 1e-3), (0, 0, 1e300, 200, 1e6), (0, 0, 1, 0.2, 0), (0, 0, -1, 3, 2)]:
            assert np.all(np.isfinite(gamma_variate(t, *args)))
    assert lognormal(np.array([1.0]), 0, 5, 1, 0, 0.0)[0] == 5.0


def test_unknown_model_is_an_input_error():
    with pytest.raises(InputError, match="unknown TIC model"):
        get_model("gauss")
    with pytest.raises(InputError):
        analyse_curve([0, 1], [1, 2], model="gauss")
    with pytest.raises(InputError, match="entries"):
        analyse_curve([0, 1, 2], [1, 2])


# --- analytic parameters -----------------------------------------------------------------

def test_lognormal_parameters_match_closed_forms():
    p = perfusion_parameters("lognormal", LN, t_first=0.0, t_last=120.0)
    ttp = LN["t0"] + math.exp(LN["mu"] - LN["sigma"] ** 2)
    assert p["TTP"].value == pytest.approx(ttp, abs=1e-9)
    pe = LN["A"] / (math.sqrt(2 * math.pi) * LN["sigma"] * (ttp - LN["t0"])) * math.exp(-LN["sigma"] ** 2 / 2)
    assert p["PE"].value == pytest.approx(pe, rel=1e-9)
    assert p["mTT"].value == pytest.approx(math.exp(LN["mu"] + LN["sigma"] ** 2 / 2))
    # TI/TO are where the curve is at 5% of PE above offset
    f = lambda t: lognormal(np.array([t]), **LN)[0] - LN["O"]  # noqa: E731
    assert f(p["TI"].value) == pytest.approx(0.05 * pe, rel=1e-6)
    assert f(p["TO"].value) == pytest.approx(0.05 * pe, rel=1e-6)
    assert p["TI"].value < ttp < p["TO"].value
    assert p["RT"].value == pytest.approx(ttp - p["TI"].value)
    assert p["FT"].value == pytest.approx(p["TO"].value - ttp)
    # areas: closed-form lognormal CDF
    cdf = lambda t: LN["A"] * special.ndtr((math.log(t - LN["t0"]) - LN["mu"]) / LN["sigma"])  # noqa: E731
    assert p["WiAUC"].value == pytest.approx(cdf(ttp) - cdf(p["TI"].value), rel=1e-9)
    assert p["WoAUC"].value == pytest.approx(cdf(p["TO"].value) - cdf(ttp), rel=1e-9)
    assert p["WiWoAUC"].value == pytest.approx(p["WiAUC"].value + p["WoAUC"].value)
    assert p["WiPI"].value == pytest.approx(p["WiAUC"].value / p["RT"].value)
    # slopes against a dense numerical derivative
    t = np.linspace(p["TI"].value, p["TO"].value, 200001)
    d = np.gradient(lognormal(t, **LN), t)
    assert p["WiR"].value == pytest.approx(d.max(), rel=1e-4)
    assert p["WoR"].value == pytest.approx(d.min(), rel=1e-4)
    assert p["WoR"].value < 0 < p["WiR"].value
    assert {k: v.unit for k, v in p.items() if k in PARAMETER_UNITS} == PARAMETER_UNITS
    assert not any(v.extrapolated for v in p.values())


def test_gamma_parameters_match_closed_forms():
    p = perfusion_parameters("gamma", GV, t_first=0.0, t_last=200.0)
    a, b, K = GV["alpha"], GV["beta"], GV["K"]
    assert p["TTP"].value == pytest.approx(GV["t0"] + a * b)
    assert p["PE"].value == pytest.approx(K * (a * b) ** a * math.exp(-a))
    assert p["mTT"].value == pytest.approx(b * (a + 1))
    t = np.linspace(GV["t0"], 200, 400001)
    f = gamma_variate(t, **GV) - GV["O"]
    sel = (t >= p["TI"].value) & (t <= p["TTP"].value)
    assert p["WiAUC"].value == pytest.approx(integrate.trapezoid(f[sel], t[sel]), rel=1e-4)


@pytest.mark.parametrize("model,p", [("lognormal", LN), ("gamma", GV)])
def test_wash_out_parameters_flagged_extrapolated_only_when_clip_ends_early(model, p):
    full = perfusion_parameters(model, p, t_first=0.0, t_last=150.0)
    cut = full["TTP"].value + 3.0
    trunc = perfusion_parameters(model, p, t_first=0.0, t_last=cut)
    assert full["TO"].value > cut
    for k in WASH_OUT:
        assert trunc[k].extrapolated, k
        assert not full[k].extrapolated, k
    for k in WASH_IN:
        assert not trunc[k].extrapolated, k
    # a clip that ends before the peak: wash-in is extrapolated too
    early = perfusion_parameters(model, p, t_first=0.0, t_last=full["TTP"].value - 1)
    assert early["PE"].extrapolated and early["TTP"].extrapolated and not early["TI"].extrapolated


# --- fits ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("model,p", [("lognormal", LN), ("gamma", GV)])
def test_fit_recovers_known_curves_from_noisy_variable_rate_frames(model, p, seed):
    rng = np.random.default_rng(seed)
    t = vfr_times(rng, 90.0)
    y = noisy(get_model(model)(t, p), rng, 0.06)
    truth = perfusion_parameters(model, p, t_first=t[0], t_last=t[-1])
    r = analyse_curve(t, y, model=model)
    assert r.success, r.reason
    assert r.value("TTP") == pytest.approx(truth["TTP"].value, abs=0.6)
    assert r.value("PE") == pytest.approx(truth["PE"].value, rel=0.05)
    assert r.value("mTT") == pytest.approx(truth["mTT"].value, rel=0.08)
    assert r.value("WiAUC") == pytest.approx(truth["WiAUC"].value, rel=0.1)
    assert r.qof > 90
    assert not r.excluded.any()
    for k in ("t0", "O"):
        assert r.params[k] == pytest.approx(p[k], abs=max(4 * r.param_stderr[k], 0.05 * abs(p[k]) + 0.3))
    assert r.covariance.shape == (5, 5)
    assert np.allclose(r.covariance, r.covariance.T, rtol=1e-6, atol=1e-12)


def test_fit_is_in_seconds_not_frames_for_non_uniform_sampling():
    """Dense frames during wash-in, sparse later: seconds must still come out right."""
    rng = np.random.default_rng(5)
    t = np.r_[np.arange(0, 20, 0.1), np.arange(20, 90, 2.0)]
    y = noisy(lognormal(t, **LN), rng, 0.03)
    r = analyse_curve(t, y)
    ttp = LN["t0"] + math.exp(LN["mu"] - LN["sigma"] ** 2)
    assert r.success
    assert r.value("TTP") == pytest.approx(ttp, abs=0.3)
    # the frame index at the peak is far from its time: a frame-unit result could not pass
    assert abs(np.argmax(lognormal(t, **LN)) - ttp) > 100


def test_fit_of_a_clip_ending_after_the_peak_extrapolates_wash_out():
    rng = np.random.default_rng(3)
    t = np.arange(0, 22, 0.25)
    r = analyse_curve(t, noisy(lognormal(t, **LN), rng, 0.03))
    assert r.success, r.reason
    assert r.value("TTP") == pytest.approx(14.98, abs=0.6)
    assert all(r.parameters[k].extrapolated for k in WASH_OUT)
    assert not any(r.parameters[k].extrapolated for k in WASH_IN)
    full = analyse_curve(np.arange(0, 90, 0.25), noisy(lognormal(np.arange(0, 90, 0.25), **LN), rng, 0.03))
    assert full.success and not any(p.extrapolated for p in full.parameters.values())


@pytest.mark.parametrize("seed", range(4))
def test_flat_noise_is_a_failed_fit_with_a_reason(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(0, 60, 0.5)
    for model in MODELS:
        r = analyse_curve(t, 0.05 + 0.005 * rng.standard_normal(t.size), model=model)
        assert not r.success
        assert r.reason
        assert all(math.isnan(r.value(k)) for k in ("PE", "TTP", "WiAUC"))


@pytest.mark.parametrize("values,expected", [
    (np.full(40, np.nan), "too few"),
    (np.full(40, 0.3), "flat"),
    (np.r_[np.full(35, np.nan), np.ones(5)], "too few"),
])
def test_hopeless_curves_fail_without_raising(values, expected):
    r = analyse_curve(np.arange(40.0), values)
    assert not r.success and expected in r.reason
    fit = fit_curve(np.arange(40.0), values)
    assert not fit.success and expected in fit.reason
    assert np.all(np.isnan(fit.predict(np.arange(3.0))))


def test_decreasing_times_fail_with_a_reason():
    t = np.arange(60.0)[::-1]
    r = analyse_curve(t, lognormal(t, **LN))
    assert not r.success and "decrease" in r.reason


def test_qof_definition():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert qof_percent(y, y) == 100.0
    assert qof_percent(y, np.full(4, y.mean())) == 0.0
    assert qof_percent(y, -y) == 0.0  # clipped at 0
    assert qof_percent(y, y + np.array([0.5, -0.5, 0.5, -0.5])) == pytest.approx(100 * (1 - 1.0 / 5.0))


@pytest.mark.parametrize("factor", [1e-200, 1e-6, 1e6, 1e200])
def test_fit_is_unit_free(factor):
    """Linear power has no fixed unit: any scale gives the same times and scaled amplitudes."""
    rng = np.random.default_rng(7)
    t = np.arange(0, 60, 0.5)
    y = noisy(lognormal(t, **LN), rng, 0.04)
    ref = analyse_curve(t, y)
    r = analyse_curve(t, y * factor)
    assert r.success and ref.success
    assert r.value("TTP") == pytest.approx(ref.value("TTP"), rel=1e-4)
    assert r.value("PE") == pytest.approx(ref.value("PE") * factor, rel=1e-4)
    assert r.value("WiAUC") == pytest.approx(ref.value("WiAUC") * factor, rel=1e-3)
    assert r.qof == pytest.approx(ref.qof, abs=1e-3)
    assert r.param_stderr["A"] == pytest.approx(ref.param_stderr["A"] * factor, rel=1e-2)


@pytest.mark.parametrize("model", ["lognormal", "gamma"])
def test_a_single_spike_is_not_a_bolus(model):
    rng = np.random.default_rng(11)
    t = np.arange(0, 60, 1.0)
    y = 1 + 0.01 * rng.standard_normal(t.size)
    y[30] = 3.0
    r = analyse_curve(t, y, model=model, detect_jumps=False, detect_flash=False)
    assert not r.success and r.reason
    assert math.isnan(r.value("PE"))
    r = analyse_curve(t, y, model=model)  # with the detectors on, the spike is flagged
    assert r.excluded[30] and not r.success


def test_a_bolus_seen_by_too_few_frames_is_not_resolved():
    t = np.arange(1.0, 90, 7.0)  # one frame every 7 s: FWHM of the bolus is about 8 s
    r = analyse_curve(t, lognormal(t, **LN))
    assert not r.success and "not resolved" in r.reason, r.reason
    dense = np.arange(1.0, 90, 1.0)
    assert analyse_curve(dense, lognormal(dense, **LN)).success
