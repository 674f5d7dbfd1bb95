"""TIC end to end: linearisation, grey-level bias, accumulator, files, plot, robustness."""

import gc
import json
import math
import weakref

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceuspipe.errors import InputError
from ceuspipe.tic import (
    TicAccumulator, analyse_curve, linearize, lognormal, mean_gray, mean_linear_power, read_tic_csv,
    read_tic_json, write_tic_outputs,
)
from ceuspipe.tic.linearize import lut
from ceuspipe.tic.plot import plot_tic

DR = 60.0
LN = dict(t0=6.0, O=2e-4, A=0.1, mu=math.log(8.0), sigma=0.5)  # mean linear power; peak ~0.0098


def speckle(rng, mean_power, shape=(48, 48), dr=DR):
    """Log-compressed speckle: P ~ Exponential(mean), g = 255*clip(1 + 10 log10 P / DR, 0, 1)."""
    p = rng.exponential(mean_power, size=shape)
    with np.errstate(divide="ignore"):
        g = 255.0 * np.clip(1.0 + 10.0 * np.log10(p) / dr, 0.0, 1.0)
    return np.rint(g).astype(np.uint8)


def fwhm(t, f):
    """Full width at half maximum (s) of a curve sampled densely, offset = its first value."""
    h = f - f[0]
    above = t[h >= 0.5 * h.max()]
    return float(above[-1] - above[0])


# --- linearisation ---------------------------------------------------------------------------

def test_linearize_lut_and_float_paths_agree():
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    lin = linearize(g, DR)
    assert lin.shape == (16, 16) and lin.dtype == np.float64
    assert lin[15, 15] == 1.0 and lin[0, 0] == pytest.approx(1e-6)
    assert np.allclose(lin, linearize(g.astype(np.float32), DR), rtol=1e-6)
    assert np.all(np.diff(lut(DR)) > 0)
    assert linearize(np.array([255 - 255 / 6]), DR)[0] == pytest.approx(0.1)  # 10 dB below white
    with pytest.raises(InputError, match="dynamic range"):
        linearize(g, 0)


def test_mean_linear_power_of_log_compressed_speckle_is_the_true_mean():
    rng = np.random.default_rng(0)
    for m in (1e-3, 1e-2, 5e-2):
        g = speckle(rng, m, shape=(160, 160))
        mask = np.ones(g.shape, np.uint8)
        assert mean_linear_power(g, mask, DR) == pytest.approx(m, rel=0.03)
        # the mean grey level is the log of the geometric mean: E[10 log10 P] = 10 log10 m - 2.51 dB
        expected_gray = 255 * (1 + (10 * math.log10(m) - 10 * np.euler_gamma / math.log(10)) / DR)
        assert mean_gray(g, mask) == pytest.approx(expected_gray, abs=1.0)


def test_masks_and_panel_forms():
    g = np.full((4, 5), 255, np.uint8)
    g[0, 0] = 0
    mask = np.zeros((4, 5), np.uint8)
    assert math.isnan(mean_linear_power(g, mask, DR)) and math.isnan(mean_gray(g, mask))
    mask[0, :2] = 255  # 0/255 video masks work as well as 0/1
    assert mean_linear_power(g, mask, DR) == pytest.approx((1e-6 + 1.0) / 2)
    assert mean_gray(g, mask.astype(bool)) == 127.5
    rgb = np.repeat(g[:, :, None], 3, axis=2)
    assert mean_linear_power(rgb, mask, DR) == mean_linear_power(g, mask, DR)
    with pytest.raises(InputError, match="mask shape"):
        mean_linear_power(g, np.ones((5, 4)), DR)


def test_grey_level_averaging_biases_the_curve_shape():
    """Fitting mean grey instead of mean linear power gives a much wider, shifted bolus."""
    rng = np.random.default_rng(1)
    t = np.arange(0.0, 60.0, 0.5)
    truth = lognormal(t, **LN)
    acc = TicAccumulator(dynamic_range_db=DR)
    mask = np.ones((48, 48), np.uint8)
    for i, (ti, m) in enumerate(zip(t, truth)):
        acc.add(i, ti, speckle(rng, m), mask)
    lin = acc.result(model="lognormal")
    gray = acc.result(model="lognormal", quantity="mean_gray")
    assert lin.success and gray.success, (lin.reason, gray.reason)
    ttp_true = LN["t0"] + math.exp(LN["mu"] - LN["sigma"] ** 2)
    pe_true = float(lognormal(np.array([ttp_true]), **LN)[0] - LN["O"])
    assert lin.value("TTP") == pytest.approx(ttp_true, abs=0.5)
    assert lin.value("PE") == pytest.approx(pe_true, rel=0.05)
    tt = np.linspace(0, 60, 6001)
    w_true = fwhm(tt, lognormal(tt, **LN))
    w_lin = fwhm(tt, _curve(lin, tt))
    w_gray = fwhm(tt, _curve(gray, tt))
    assert w_lin == pytest.approx(w_true, rel=0.1)
    assert w_gray > 1.5 * w_true  # log compression flattens the peak: a clear, measurable bias
    assert abs(gray.value("TI") - lin.value("TI")) > 1.0 or abs(gray.value("mTT") / lin.value("mTT") - 1) > 0.2


def _curve(result, t):
    from ceuspipe.tic.models import get_model

    return get_model(result.model)(t, result.params)


# --- accumulator ------------------------------------------------------------------------------

def test_accumulator_stores_scalars_only_and_drops_frames():
    acc = TicAccumulator(DR)
    refs = []
    for i in range(30):
        panel = np.full((64, 64), 100 + i, np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[10:20, 10:30] = 1 if i != 7 else 0
        refs += [weakref.ref(panel), weakref.ref(mask)]
        acc.add(i, 0.2 * i, panel, mask)
        del panel, mask
    gc.collect()
    assert all(r() is None for r in refs)  # nothing holds on to frames or masks
    a = acc.arrays()
    assert len(acc) == 30 and a["frame_index"].tolist() == list(range(30))
    assert a["area_px"][0] == 200 and a["area_px"][7] == 0 and math.isnan(a["mean_linear"][7])
    assert a["mean_gray"][3] == 103.0 and a["panel_mean"][3] == 103.0
    assert a["mean_linear"][3] == pytest.approx(10 ** ((103 / 255 - 1) * 6))
    r = acc.result()
    assert r.flags["empty_mask"][7] and r.excluded[7]
    assert not r.success  # a ramp of uniform grey is no bolus; reported, not raised
    # storage is a few numbers per frame, whatever the panel size
    big = TicAccumulator(DR)
    big.add(0, 0.0, np.zeros((600, 800), np.uint8), np.ones((600, 800), np.uint8))
    assert sum(v.buffer_info()[1] * v.itemsize for v in big._cols.values()) <= 64


# --- files and plot -----------------------------------------------------------------------------

def make_result(seed=2, t_end=40.0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.1, 0.5, 400))
    t = t[t < t_end]
    y = lognormal(t, **LN) * (1 + 0.04 * rng.standard_normal(t.size))
    y[20] = np.nan
    panel = 20 + 2000 * lognormal(t, **LN) + rng.normal(0, 0.3, t.size)
    panel[60:62] += 80
    y[60:62] += 0.02
    return analyse_curve(t, y, panel_means=panel, frame_index=np.arange(t.size) + 100,
                         columns={"area_px": np.full(t.size, 321.0)})


def test_outputs_round_trip(tmp_path):
    r = make_result()
    assert r.success, r.reason
    paths = write_tic_outputs(r, tmp_path / "clip", source="exam/clip.mp4", extra={"dynamic_range_db": DR})
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == ["tic.csv", "tic.json", "tic.png"]
    table = read_tic_csv(paths["csv"])
    assert table["frame_index"][0] == 100 and table["time_s"].size == r.times_s.size
    assert np.allclose(table["time_s"], r.times_s, rtol=1e-9)
    assert np.allclose(table["mean_linear"], r.values, rtol=1e-9, equal_nan=True)
    assert math.isnan(table["mean_linear"][20]) and table["empty_mask"][20] == 1
    assert table["flash"][[60, 61]].tolist() == [1, 1] and table["excluded"].sum() == r.excluded.sum()
    assert np.allclose(table["fitted"], r.fitted, rtol=1e-9)
    assert np.all(table["area_px"] == 321) and np.all(np.isnan(table["mean_gray"]))
    d = read_tic_json(paths["json"])
    json.loads(paths["json"].read_text())  # strict JSON: no NaN tokens
    assert d["source"] == "exam/clip.mp4" and d["extra"]["dynamic_range_db"] == DR
    assert d["success"] is True and d["model"] == "lognormal"
    assert d["flags"]["flash"] == [160, 161] and d["flags"]["empty_mask"] == [120]
    assert d["parameters"]["TTP"]["unit"] == "s" and d["parameters"]["WiAUC"]["unit"] == "a.u.·s"
    assert d["parameters"]["PE"]["value"] == pytest.approx(r.value("PE"))
    assert d["model_params"]["sigma"]["stderr"] > 0
    pe = d["parameters"]["PE"]
    assert pe["ci_low"] < pe["value"] < pe["ci_high"] and pe["stderr"] > 0 and pe["uncertain"] is False
    assert d["parameters"]["QOF"]["stderr"] is None
    rm = d["residual_model"]
    assert rm["noise"] == "auto" and rm["relative_sd"] > 0 and "huber" in rm["loss"]
    assert d["uncertainty"]["level"] == 0.9
    ok = np.isfinite(table["fitted"])
    assert np.all(table["fitted_ci90_low"][ok] <= table["fitted"][ok] + 1e-12)
    assert np.all(table["fitted"][ok] <= table["fitted_ci90_high"][ok] + 1e-12)
    assert set(d["versions"]) >= {"ceuspipe", "numpy", "scipy"}
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.rglob("*.tmp"))


def test_failed_result_still_writes_clean_files(tmp_path):
    t = np.arange(30.0)
    r = analyse_curve(t, np.full(30, np.nan))
    paths = write_tic_outputs(r, tmp_path)
    d = read_tic_json(paths["json"])
    assert d["success"] is False and "too few" in d["reason"]
    assert d["parameters"]["PE"]["value"] is None and d["time_range_s"] is None
    plot_tic(r, tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 1000


def test_readers_reject_other_files(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="x.csv"):
        read_tic_csv(bad)
    with pytest.raises(InputError, match="missing.json"):
        read_tic_json(tmp_path / "missing.json")
    (tmp_path / "y.json").write_text("{}")
    with pytest.raises(InputError, match="format"):
        read_tic_json(tmp_path / "y.json")


# --- robustness ---------------------------------------------------------------------------------

finite_or_nan = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan")), st.just(float("inf")))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(finite_or_nan, min_size=0, max_size=80),
    st.lists(st.floats(0.0, 5.0), min_size=80, max_size=80),
    st.sampled_from(["lognormal", "gamma"]),
    st.booleans(),
)
def test_analyse_curve_never_raises_on_random_curves(values, gaps, model, with_panel):
    n = len(values)
    t = np.cumsum(gaps[:n])
    y = np.asarray(values, dtype=np.float64)
    r = analyse_curve(t, y, model=model, panel_means=y * 0.5 + 3 if with_panel else None)
    assert r.fitted.shape == (n,) and r.excluded.shape == (n,)
    if r.success:
        assert r.reason == "" and r.value("PE") > 0 and r.qof >= 30
        assert r.value("TI") <= r.value("TTP")
    else:
        assert r.reason
    json.dumps(r.to_json_dict(), allow_nan=False)


# --- reference region and relative parameters ------------------------------------------------


def test_reference_ring_and_imaged_area():
    """The ring lies between distance and distance+width of the mask, inside the imaged
    area (a sector with black corners and a dark vessel inside stays imaged)."""
    from ceuspipe.tic.reference import ImagedArea, reference_ring

    mask = np.zeros((80, 80), np.uint8)
    mask[30:50, 30:50] = 1
    ring = reference_ring(mask, 3, 6)
    assert not (ring & (mask > 0)).any()
    ys, xs = np.nonzero(ring)
    d = np.maximum(np.maximum(30 - xs, xs - 49), np.maximum(30 - ys, ys - 49))  # Chebyshev >= Euclid here
    assert d.min() >= 3 and ring[40, 30 - 4] and not ring[40, 30 - 3] and not ring[40, 30 - 10]
    assert not reference_ring(np.zeros_like(mask), 3, 6).any()
    yy, xx = np.mgrid[:80, :80]
    sector = (np.hypot(xx - 40, yy + 20) < 95) & (np.abs(xx - 40) < (yy + 20) * 0.8)
    us = np.where(sector, 60, 0).astype(np.uint8)
    us[60:64, 20:40] = 0  # anechoic vessel inside the sector
    area = ImagedArea(frames=2).update(np.zeros_like(us), us)
    assert area[62, 30] and not area[0, 0] and not area[79, 0]
    assert not (reference_ring(mask, 3, 60, area) & ~sector).any()


def test_reference_ring_on_the_lesion_box_equals_the_whole_panel_transform():
    """The ring computed on the lesion's grown bounding box is exactly the ring of a
    distance transform over the whole panel: lesions of many sizes and shapes, at the
    panel edge and in the middle, several distances and widths."""
    import cv2

    from ceuspipe.tic.reference import reference_ring

    def whole_panel(mask, dist, width):
        d = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
        return (d > dist) & (d <= dist + width)

    rng = np.random.default_rng(11)
    checked = 0
    for k in range(60):
        h, w = rng.integers(40, 200, 2)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 4)):  # one to three blobs, some cut by the edge
            cy, cx = rng.integers(-10, h + 10), rng.integers(-10, w + 10)
            ry, rx = rng.integers(1, max(2, h // 3)), rng.integers(1, max(2, w // 3))
            yy, xx = np.ogrid[:h, :w]
            mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
        if k % 7 == 0:
            mask[rng.integers(0, h), rng.integers(0, w)] = 1  # a single pixel
        dist, width = float(rng.choice([0, 2.5, 5, 11])), float(rng.choice([1, 6.3, 15, 40]))
        got = reference_ring(mask, dist, width)
        assert got.shape == mask.shape and got.dtype == bool
        np.testing.assert_array_equal(got, whole_panel(mask, dist, width))
        checked += bool(mask.any())
    assert checked > 50


def test_accumulator_reference_relative_parameters():
    """Lesion and reference regions of known curves in one speckle panel: the reference
    curve is fitted like the lesion's, rPE/rWiAUC/dTTP match the truth, and tic.csv,
    tic.json and tic.png carry the reference."""
    rng = np.random.default_rng(3)
    les = dict(LN)
    ref = dict(LN, A=0.05, t0=8.0)  # half the area, arrives 2 s later
    t = np.arange(0, 60, 0.5)
    acc = TicAccumulator(DR, reference=True)
    m = np.zeros((48, 96), np.uint8)
    m[:, :48] = 1
    for i, ti in enumerate(t):
        panel = np.concatenate([speckle(rng, lognormal(ti, **les)), speckle(rng, lognormal(ti, **ref))], axis=1)
        acc.add(i, float(ti), panel, m, reference_mask=1 - m)
    res = acc.result()
    assert res.success and res.reference is not None and res.reference.success
    tt = np.linspace(0, 60, 60001)
    fl, fr = lognormal(tt, **les), lognormal(tt, **ref)
    want_rpe = (fl.max() - LN["O"]) / (fr.max() - LN["O"])
    want_dttp = tt[fl.argmax()] - tt[fr.argmax()]
    rel = res.relative
    assert abs(rel["rPE"]["value"] / want_rpe - 1) < 0.1, rel["rPE"]
    assert abs(rel["dTTP"]["value"] - want_dttp) < 1.0, rel["dTTP"]
    assert abs(rel["rWiWoAUC"]["value"] / 2.0 - 1) < 0.15, rel["rWiWoAUC"]
    assert set(rel) == {"rPE", "rWiAUC", "rWoAUC", "rWiWoAUC", "rWiR", "rWiPI", "dTTP"}
    assert rel["rPE"]["unit"] == "1" and rel["dTTP"]["unit"] == "s"
    # a single curve still analyses alone
    assert analyse_curve(t, acc.arrays()["ref_mean_linear"]).success


def test_reference_in_output_files(tmp_path):
    rng = np.random.default_rng(4)
    t = np.arange(0, 50, 1.0)
    acc = TicAccumulator(DR, reference=True)
    m = np.zeros((32, 64), np.uint8)
    m[:, :32] = 1
    for i, ti in enumerate(t):
        panel = np.concatenate([speckle(rng, lognormal(ti, **LN), (32, 32)),
                                speckle(rng, lognormal(ti, **dict(LN, A=0.05)), (32, 32))], axis=1)
        acc.add(i, float(ti), panel, m, reference_mask=(1 - m) if i != 3 else None)
    res = acc.result()
    paths = write_tic_outputs(res, tmp_path)
    csv = read_tic_csv(paths["csv"])
    for k in ("ref_area_px", "ref_mean_gray", "ref_mean_linear", "ref_fitted", "ref_excluded"):
        assert k in csv, k
    assert csv["ref_area_px"][0] == 32 * 32 and csv["ref_area_px"][3] == 0
    assert csv["ref_excluded"][3] == 1 and csv["ref_excluded"].dtype == np.int64  # empty reference: flagged
    np.testing.assert_allclose(csv["ref_mean_linear"][~np.isnan(csv["ref_mean_linear"])],
                               acc.arrays()["ref_mean_linear"][~np.isnan(acc.arrays()["ref_mean_linear"])])
    doc = read_tic_json(paths["json"])
    assert doc["reference"]["success"] and "PE" in doc["reference"]["parameters"]
    assert 1.6 < doc["relative_parameters"]["rPE"]["value"] < 2.4
    assert paths["png"].stat().st_size > 1000
    plain = TicAccumulator(DR)
    plain.add(0, 0.0, np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8))
    assert "reference" not in plain.result().to_json_dict()
