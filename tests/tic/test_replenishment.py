"""Destruction-replenishment fits: known refills at 14 % noise, failures, tic.json, maps, report."""

import json

import numpy as np
import pytest

from ceuspipe.maps import BlockAccumulator
from ceuspipe.maps.replenishment import replenishment_maps
from ceuspipe.report.replenishment_section import replenishment_section
from ceuspipe.tic.analyse import analyse_curve
from ceuspipe.tic.flags import destructive_flashes
from ceuspipe.tic.replenishment import REASONS, fit_refill, fit_refills
from ceuspipe.tic.simulate import gamma_noise, simulate_replenishment

FPS = 10.0


def refill_curve(A, beta, y0=0.002, span_s=15.0, fps=FPS):
    t = np.arange(int(round(span_s * fps))) / fps
    return t, y0 + A * (1 - np.exp(-beta * t))


def protocol_curve(rng, A, beta, cv=0.14):
    """ROI values of an infusion with destructive flashes at 20 and 40 s (frames 200-201 and
    400-401; refills from frames 202 and 402), and the flash frames."""
    t, y, _, flash = simulate_replenishment(rng, A, beta, noise_cv=cv, fps=FPS)
    return t, y, flash


@pytest.mark.parametrize("A,beta", [(0.1, 0.25), (0.05, 0.6), (0.15, 1.0)])
def test_known_refills_within_10_percent_at_14_percent_noise(A, beta):
    rng = np.random.default_rng(7)
    t, clean = refill_curve(A, beta, span_s=max(12.0, 5.0 / beta))
    fits = [fit_refill(t, clean * gamma_noise(rng, 0.14, t.size)) for _ in range(20)]
    assert all(f.success for f in fits)
    for name, true in (("A", A), ("beta", beta), ("A_beta", A * beta)):
        got = np.array([f.value(name) for f in fits])
        err = np.abs(got / true - 1)
        assert np.median(err) < 0.10, name
        assert np.all(err < (0.10 if name == "A" else 0.25)), name
        inside = np.mean([f.parameters[name].ci_low <= true <= f.parameters[name].ci_high for f in fits])
        assert inside >= 0.7, name  # 90 % intervals: most of 20 cover the truth


def test_batched_fit_is_the_per_curve_fit():
    rng = np.random.default_rng(3)
    t, clean = refill_curve(0.1, 0.4)
    Y = clean * gamma_noise(rng, 0.14, (40, t.size))
    batch = fit_refills(t, Y, dtype=np.float64)
    for i in (0, 17, 39):
        one = fit_refill(t, Y[i])
        assert one.success == batch.success[i]
        for k in ("A", "beta", "A_beta"):
            # the same code; only where the chunk's iterations stop differs
            assert one.value(k) == pytest.approx(batch.params[k][i], rel=1e-6)
            assert one.parameters[k].stderr == pytest.approx(batch.stderr[k][i], rel=1e-4)
    f32 = fit_refills(t, Y.astype(np.float32))  # the default precision moves nothing that matters
    np.testing.assert_allclose(f32.params["beta"], batch.params["beta"], rtol=2e-3)


def test_failures_say_why():
    rng = np.random.default_rng(5)
    t, clean = refill_curve(0.1, 0.2, span_s=4.0)  # 0.8 time constants
    short = fit_refill(t, clean * gamma_noise(rng, 0.14, t.size))
    assert not short.success and short.reason.startswith("refill too short") and "time constants" in short.reason
    few = fit_refill(t[:4], clean[:4])
    assert not few.success and "4 valid frames" in few.reason
    flat = fit_refill(t, np.full(t.size, 0.01) * gamma_noise(rng, 0.14, t.size))
    assert not flat.success and flat.reason
    Y = np.stack([clean, np.full(t.size, np.nan), np.zeros(t.size)])
    batch = fit_refills(t, Y)
    assert [REASONS[c] for c in batch.reason] == ["refill too short", "too few valid points", "flat curve"]
    assert not batch.success.any()


def test_every_destructive_flash_is_found_and_a_harmless_one_is_not():
    rng = np.random.default_rng(2)
    t, y, flash = protocol_curve(rng, 0.1, 0.5)
    a = int(round(50 * FPS))
    flash[a:a + 2] = True  # a flash that destroys nothing
    y[a:a + 2] = 0.5
    runs = destructive_flashes(y, flash, times_s=t)
    assert runs == [(200, 201), (400, 401)]


def test_analyse_curve_fits_each_refill_into_tic_json():
    rng = np.random.default_rng(11)
    A, beta = 0.12, 0.5
    t, y, flash = protocol_curve(rng, A, beta)
    res = analyse_curve(t, y)
    assert res.flags["flash"].sum() == 4 and res.flags["destruction"][202:].all()
    assert [(r.start_s, r.end_s) for r in res.replenishment] == [(t[202], t[399]), (t[402], t[-1])]
    for r in res.replenishment:
        assert r.success, r.reason
        assert r.value("A") == pytest.approx(A, rel=0.1)
        assert r.value("beta") == pytest.approx(beta, rel=0.1)
    d = json.loads(json.dumps(res.to_json_dict()))
    assert {"parameters", "flags", "model_params", "success"} <= set(d)
    rep = d["replenishment"]
    assert len(rep) == 2 and rep[0]["frames"] == [202, 399] and rep[0]["flash_frames"] == [200, 201]
    assert set(rep[0]["parameters"]) == {"A", "beta", "A_beta", "y0"}
    assert rep[0]["parameters"]["beta"]["unit"] == "1/s" and rep[0]["parameters"]["A_beta"]["ci_low"] is not None
    html = replenishment_section(d)
    assert html.count("data-refill=") == 2 and "Replenishment" in html


def test_no_destruction_no_refill():
    rng = np.random.default_rng(4)
    t = np.arange(600) / FPS
    y = (0.002 + 0.1 * np.exp(-((np.log(np.maximum(t - 5, 1e-3)) - 2.5) ** 2) / 0.5)) * gamma_noise(rng, 0.14, 600)
    res = analyse_curve(t, y)
    assert res.replenishment == [] and res.to_json_dict()["replenishment"] == []
    assert replenishment_section(res.to_json_dict()) == ""


def test_grey_curves_are_not_fitted():
    rng = np.random.default_rng(9)
    t, y, _ = protocol_curve(rng, 0.1, 0.5)
    res = analyse_curve(t, y, quantity="mean_gray")
    assert res.replenishment and not any(r.success for r in res.replenishment)
    assert "linear" in res.replenishment[0].reason


def test_replenishment_maps_per_block():
    rng = np.random.default_rng(1)
    H = W = 8
    betas = np.where(np.arange(W) < W // 2, 0.3, 0.8)[None, :].repeat(H, 0)  # two halves
    acc = BlockAccumulator((H, W), block_px=2, bin_s=None)
    t_d = 10.0
    for i in range(300):
        t = i / FPS
        if t < 9.8:
            level = np.full((H, W), 0.1)
        elif t < t_d:
            level = np.full((H, W), 0.5)  # the flash, in the bins before the refill
        else:
            level = 0.1 * (1 - np.exp(-betas * (t - t_d)))
        acc.add(t, ((0.002 + level) * gamma_noise(rng, 0.3, (H, W))).astype(np.float32))
    m = replenishment_maps(acc, [(t_d, 29.9)])
    assert m["beta"].shape == (1, 4, 4) and m["success"].all()
    # 2x2 blocks at 30 % noise per pixel: 15 % per block mean
    assert np.allclose(m["beta"][0, :, :2], 0.3, rtol=0.15) and np.allclose(m["beta"][0, :, 2:], 0.8, rtol=0.15)
    np.testing.assert_allclose(m["A_beta"], m["A"] * m["beta"], rtol=1e-5)
    assert m["bins"][0] == 200
