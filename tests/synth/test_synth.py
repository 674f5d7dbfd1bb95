"""Synthetic CEUS phantom: determinism, truth masks, physics, screen, CLI."""

from __future__ import annotations

import json
import math

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.errors import InputError
from ceuspipe.synth.bolus import LognormalBolus
from ceuspipe.synth.config import PhantomConfig, patient_seed
from ceuspipe.synth.generate import (ceus_weight_maps, exam_truth, generate_exam, generate_phantom,
                                     render_exam)
from ceuspipe.synth.screen import (ScreenSkin, TimerOverlay, gold_lut, gold_to_grey, make_geometry,
                                   panel_footprint, render_static, trapezoid_mask)
from ceuspipe.synth.skins import SKINS
from ceuspipe.synth.skins.logiq import logiq_decorations
from ceuspipe.synth.speckle import SpeckleGenerator, log_compress
from ceuspipe.synth.tissue import territory_weight
from ceuspipe.tic.linearize import linearize as linearise  # the project's inverse of log_compress
from ceuspipe.synth.truth import (load_truth, truth_curves, truth_dir_for, truth_layout,
                                  truth_masks_at, truth_skin)
from ceuspipe.video.panels import PanelLayout

SMALL = dict(width=320, height=180)
LOGIQ_SMALL = dict(width=448, height=250)


def maps_offset(truth, t):
    """Breathing shift ``(dx, dy)`` px of the panel content at ``t`` s."""
    from ceuspipe.synth.anatomy import RespiratoryMotion

    return RespiratoryMotion.from_dict(truth["motion"]).offset(t)


def decode(path, gray=False):
    """List of (time_s, frame) of a video file."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append((float(f.pts * f.time_base), f.to_ndarray(format="gray" if gray else "rgb24")))
    return out


@pytest.fixture(scope="module")
def long_exam(tmp_path_factory):
    """A 40 s clip at 2 fps (contrast arrives within it), with a flash at 30 s."""
    d = tmp_path_factory.mktemp("long")
    cfg = PhantomConfig(duration_s=40, fps=2, flash_times_s=(30.0,), flash_duration_s=0.5, **SMALL)
    clip = d / "P001" / "exam1.mp4"
    truth = generate_exam(clip, None, cfg, seed=11)
    return clip, truth


@pytest.fixture(scope="module")
def logiq_exam(tmp_path_factory):
    """The GE LOGIQ screen: 48 s at 2 fps (contrast arrives and peaks), CEUS on the
    right, with a flash at 40 s."""
    d = tmp_path_factory.mktemp("logiq")
    cfg = PhantomConfig(duration_s=48, fps=2, flash_times_s=(40.0,), flash_duration_s=0.5, skin="logiq",
                        ceus_side="right", **LOGIQ_SMALL)
    clip = d / "P001" / "exam1.mp4"
    truth = generate_exam(clip, None, cfg, seed=11)
    return clip, truth


def test_files_and_truth_fields(long_exam):
    clip, truth = long_exam
    tdir = truth_dir_for(clip)
    assert clip.is_file() and (tdir / "truth.json").is_file()
    assert (tdir / "ceus_mask.mkv").is_file() and (tdir / "us_mask.mkv").is_file()
    loaded = load_truth(tdir)
    assert loaded == truth
    assert loaded["n_frames"] == 80 and len(loaded["frame_times_s"]) == 80
    assert loaded["frame_times_s"][3] == pytest.approx(1.5)
    lay = truth_layout(loaded)
    assert isinstance(lay, PanelLayout) and (lay.frame_width, lay.frame_height) == (320, 180)
    assert lay.ceus_side == loaded["ceus_side"] == "left"
    les, par = truth_curves(loaded)
    assert 15 <= les.ttp <= 40 and 5 <= les.t0 <= 15
    assert 0.05 <= les.pe - les.offset <= 0.2 + 1e-9
    assert loaded["curves"]["lesion"]["ttp_s"] == pytest.approx(les.ttp)
    assert loaded["flash"]["frame_indices"] == [60]
    frames = decode(clip)
    assert len(frames) == 80
    assert [round(t, 3) for t, _ in frames] == [round(t, 3) for t in loaded["frame_times_s"]]


@pytest.mark.parametrize("exam", ["long_exam", "logiq_exam"])
def test_mask_videos_equal_truth_masks_at(exam, request):
    clip, truth = request.getfixturevalue(exam)
    tdir = truth_dir_for(clip)
    ceus = decode(tdir / "ceus_mask.mkv", gray=True)
    us = decode(tdir / "us_mask.mkv", gray=True)
    assert len(ceus) == len(us) == truth["n_frames"]
    for (t, cm), (t2, um) in zip(ceus, us):
        assert t == pytest.approx(t2, abs=1e-4)
        roi, lesion = truth_masks_at(truth, t)
        assert set(np.unique(cm)) <= {0, 255}
        np.testing.assert_array_equal(cm // 255, roi)
        np.testing.assert_array_equal(um // 255, lesion)


def test_roi_contains_bmode_lesion_and_is_larger(long_exam):
    _, truth = long_exam
    for t in (0.0, 1.3, 2.7, 17.0):
        roi, lesion = truth_masks_at(truth, t)
        assert roi.dtype == np.uint8 and roi.shape == (truth["layout"]["ceus"]["h"], truth["layout"]["ceus"]["w"])
        assert lesion.sum() > 100
        assert not np.any(lesion.astype(bool) & ~roi.astype(bool))
        ratio = roi.sum() / lesion.sum()
        assert 1.15 < ratio < 1.7  # 7-26 % in radius


def test_masks_move_with_breathing(long_exam):
    _, truth = long_exam
    period = truth["motion"]["period_s"]
    centroids = []
    for k in range(8):
        _, lesion = truth_masks_at(truth, k * period / 8)
        ys, xs = np.nonzero(lesion)
        centroids.append((xs.mean(), ys.mean()))
    span_y = np.ptp([c[1] for c in centroids])
    assert span_y > 1.2 * truth["motion"]["amplitude_y_px"]


@pytest.mark.parametrize("exam", ["long_exam", "logiq_exam"])
def test_roi_linear_power_follows_curve(exam, request):
    clip, truth = request.getfixturevalue(exam)
    les, par = truth_curves(truth)
    box = truth["layout"]["ceus"]
    dr = truth["dynamic_range_db"]
    flash = set(truth["flash"]["frame_indices"])
    checked = 0
    for i, (t, frame) in enumerate(decode(clip)):
        if i in flash:
            continue
        roi, _ = truth_masks_at(truth, t)
        panel = frame[box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"], 0]
        mean = linearise(panel, dr)[roi.astype(bool)].mean()
        expected = les(t)
        if expected > 0.02:
            assert 0.75 * expected < mean < 1.25 * expected, (t, mean, expected)
            checked += 1
        elif t < min(les.t0, par.t0):  # no contrast yet (the parenchyma's may come first and
            # reach the ROI's soft edge): the floor, the noise's or grey 0's where the noise is below it (logiq)
            assert mean < 10 * max(truth["noise_floor_power"], 10.0 ** (-dr / 10.0))
    assert checked >= 10


@pytest.mark.parametrize("exam", ["long_exam", "logiq_exam"])
def test_weight_maps_predict_every_region_linear_power(exam, request):
    """ceus_weight_maps is the truth of any region's curve: mean linear power of 6x6-pixel
    blocks of the decoded CEUS panel against the maps' prediction (weights times the two
    curves plus the noise floor), over every frame after arrival; speckle averages out
    over the blocks. The maps move with breathing (the ROI weight sits on the truth ROI
    of the same frame) and hold no parenchyma inside the ROI. Compared: the blocks
    inside the image footprint whose predicted power is above about twice the display's
    floor (every block of the original screen; on the logiq screen, whose CEUS panel is
    black but for the perfused territory, the territory)."""
    clip, truth = request.getfixturevalue(exam)
    les, par = truth_curves(truth)
    box = truth["layout"]["ceus"]
    dr, floor = truth["dynamic_range_db"], truth["noise_floor_power"]
    flash = set(truth["flash"]["frame_indices"])
    fp = panel_footprint(truth_skin(truth), (box["h"], box["w"]))
    fp = np.ones((box["h"], box["w"]), bool) if fp is None else fp
    shown = 1.9 * 10.0 ** (-dr / 10.0)  # twice the power of grey level 0 (the original floor is 2.0x)
    ratios, n = [], 0
    for i, ((t, frame), (tm, maps)) in enumerate(zip(decode(clip), ceus_weight_maps(truth))):
        assert abs(t - tm) < 1e-3 and maps.shape == (box["h"], box["w"], 2)
        roi, _ = truth_masks_at(truth, t)
        inside = roi.astype(bool)
        assert maps[..., 0][inside].mean() > 10 * maps[..., 0][~inside].mean()
        perfused = ~inside
        if "ceus_territory" in truth:  # logiq: where contrast reaches, fully (ROI and the ring around it)
            terr = truth["ceus_territory"]
            dx, dy = maps_offset(truth, t)
            ys, xs = np.mgrid[0: box["h"], 0: box["w"]]
            moved = {**terr, "center_x": terr["center_x"] + dx, "center_y": terr["center_y"] + dy}
            perfused &= territory_weight(xs, ys, moved) == 1
        assert maps[..., 1][inside].mean() < 0.1 * maps[..., 1][perfused].mean()
        if i in flash or t < les.t0 + 2:
            continue
        want = maps[..., 0] * (les(t) - les.offset) + maps[..., 1] * (par(t) - par.offset) + floor
        got = linearise(frame[box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"], 0], dr)
        assert not maps[~fp].any()
        k = 6
        h, w = (box["h"] // k) * k, (box["w"] // k) * k
        blocks = lambda a: a[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))  # noqa: E731
        sel = (blocks(fp.astype(np.float64)) == 1) & (blocks(want) > shown)
        assert sel.sum() >= 30
        ratios.append(np.median(blocks(got)[sel] / blocks(want)[sel]))
        n += 1
        assert np.corrcoef(blocks(got)[sel], blocks(want)[sel])[0, 1] > 0.85
    assert n >= 20
    assert 0.8 < np.median(ratios) < 1.25 and np.ptp(ratios) < 0.3


def test_precontrast_ceus_faint_but_not_black_and_flash_bright(long_exam):
    clip, truth = long_exam
    box = truth["layout"]["ceus"]
    frames = decode(clip)
    first = frames[0][1][box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"]]
    assert 2 < first.mean() < 25 and np.percentile(first, 90) <= 40
    i = truth["flash"]["frame_indices"][0]
    before = frames[i - 1][1][box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"]]
    flash = frames[i][1][box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"]]
    assert flash.mean() > before.mean() + 15


def test_bmode_shows_lesion(long_exam):
    clip, truth = long_exam
    box = truth["layout"]["us"]
    t, frame = decode(clip)[0]
    panel = frame[box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"], 0].astype(float)
    _, lesion = truth_masks_at(truth, t)
    diff = panel[lesion.astype(bool)].mean() - panel[~lesion.astype(bool)].mean()
    if truth["bmode"]["echogenicity"] == "hypo":
        assert diff < -8
    else:
        assert diff > 8


def test_burned_in_text_outside_panels(long_exam):
    clip, truth = long_exam
    lay = truth_layout(truth)
    geom = make_geometry(320, 180, "left")
    assert geom.layout == lay
    static = render_static(geom, ("NAME^TEST  ID 1234567  2024-01-01", "CEUS MI 0.08  12 Hz"), "C5-1 DR 60")
    timer = TimerOverlay(geom)
    a, b = static.copy(), static.copy()
    timer.apply(a, 0.4)
    timer.apply(b, 61.2)
    assert timer.text(61.2) == "01:01"
    inside = np.zeros(static.shape[:2], bool)
    for box in (lay.ceus, lay.us):
        inside[box.y: box.y + box.h, box.x: box.x + box.w] = True
    assert static[~inside].any()  # there is text/graphics...
    assert not a[inside].any() and not b[inside].any()  # ...but none on the panels
    assert (a != b).any(axis=2).sum() > 5
    # In the clip, the pixels outside the panels change when the timer ticks.
    frames = decode(clip)
    f0, f2 = frames[0][1].astype(int), frames[2][1].astype(int)  # 0.0 s and 1.0 s
    changed = np.abs(f0 - f2).max(axis=2) > 60
    assert changed[~inside].sum() > 5


def test_determinism_and_seed_dependence(tmp_path):
    cfg = PhantomConfig(duration_s=1, fps=4, **SMALL)
    t1 = generate_exam(tmp_path / "a" / "x.mp4", None, cfg, seed=5)
    t2 = generate_exam(tmp_path / "b" / "x.mp4", None, cfg, seed=5)
    t3 = generate_exam(tmp_path / "c" / "x.mp4", None, cfg, seed=6)
    ja = (tmp_path / "a" / "x.truth" / "truth.json").read_bytes()
    assert ja == (tmp_path / "b" / "x.truth" / "truth.json").read_bytes()
    assert t1 == t2 and t1["curves"] != t3["curves"]
    # The rendered frames and masks are bit-identical for a seed...
    r1 = list(render_exam(exam_truth(cfg, 5, clip_name="x.mp4")))
    r2 = list(render_exam(t1))
    assert len(r1) == len(r2) == 4
    for a, b in zip(r1, r2):
        for x, y in zip(a[2:], b[2:]):
            np.testing.assert_array_equal(x, y)
    # ...and so are the decoded clips up to libx264's run-to-run jitter (see data/README.md).
    fa, fb, fc = (decode(tmp_path / k / "x.mp4")[0][1].astype(int) for k in "abc")
    assert np.abs(fa - r1[0][2]).mean() < 3
    assert np.abs(fa - fb).mean() < 0.5
    assert np.abs(fa - fc).mean() > 5


def test_random_side_gold_and_random_dynamic_range(tmp_path):
    cfg = PhantomConfig(duration_s=0.5, fps=4, ceus_side="random", colormap="gold", dynamic_range_db=None,
                        **SMALL)
    sides, drs = set(), set()
    for seed in range(8):
        truth = generate_exam(tmp_path / f"s{seed}.mp4", None, cfg, seed=seed)
        sides.add(truth["ceus_side"])
        drs.add(truth["dynamic_range_db"])
        assert truth["colormap"] == "gold"
        assert truth_layout(truth).ceus_side == truth["ceus_side"]
    assert sides == {"left", "right"}
    assert len(drs) > 1 and all(50 <= d <= 70 for d in drs)
    frame = decode(tmp_path / "s0.mp4")[0][1].astype(int)
    box = truth_layout(load_truth(tmp_path / "s0.truth")).ceus
    panel = frame[box.y: box.y + box.h, box.x: box.x + box.w]
    assert (panel[..., 0] - panel[..., 2]).mean() > 3  # red over blue: gold
    lut = gold_lut()
    np.testing.assert_array_equal(gold_to_grey(lut), np.arange(256))


def test_phantom_patients_independent_of_count_and_jobs(tmp_path):
    cfg = PhantomConfig(duration_s=0.5, fps=4, **SMALL)
    one = generate_phantom(tmp_path / "one", 1, cfg, seed=3)
    runner = CliRunner()
    res = runner.invoke(__import__("ceuspipe.cli", fromlist=["main"]).main,
                        ["synth", str(tmp_path / "two"), "--patients", "2", "--seed", "3", "--duration-s", "0.5",
                         "--fps", "4", "--width", "320", "--height", "180", "-j", "2"])
    assert res.exit_code == 0, res.output
    assert one == [tmp_path / "one" / "P001" / "exam1.mp4"]
    a = (tmp_path / "one" / "P001" / "exam1.truth" / "truth.json").read_text()
    b = (tmp_path / "two" / "P001" / "exam1.truth" / "truth.json").read_text()
    assert a == b
    manifest = json.loads((tmp_path / "two" / "phantom.json").read_text())
    assert [e["patient_id"] for e in manifest["exams"]] == ["P001", "P002"]
    assert manifest["exams"][1]["seed"] == patient_seed(3, 1) != patient_seed(3, 0)
    # existing exams are kept, not regenerated
    mtime = (tmp_path / "one" / "P001" / "exam1.mp4").stat().st_mtime_ns
    generate_phantom(tmp_path / "one", 1, cfg, seed=3)
    assert (tmp_path / "one" / "P001" / "exam1.mp4").stat().st_mtime_ns == mtime


def test_cli_rejects_bad_options(tmp_path):
    from ceuspipe.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["synth", str(tmp_path / "o"), "--patients", "1", "--width", "100", "--height", "60"])
    assert res.exit_code != 0 and "too small" in res.output
    res = runner.invoke(main, ["synth", str(tmp_path / "o"), "--patients", "1", "--dynamic-range-db", "abc"])
    assert res.exit_code != 0 and "dynamic-range-db" in res.output
    assert not (tmp_path / "o" / "P001").exists()


def test_log_compression_round_trip():
    dr = 55.0
    p = 10.0 ** np.random.default_rng(0).uniform(-dr / 10, 0, size=10000)
    g = log_compress(p, dr, rounded=False)
    np.testing.assert_allclose(linearise(g, dr), p, rtol=1e-4)
    g8 = log_compress(p, dr)
    assert g8.dtype == np.uint8
    half_step = 10 ** (0.5 / 255 * dr / 10) - 1
    assert np.max(np.abs(linearise(g8, dr) / p - 1)) <= half_step * 1.01 + 1e-6
    assert log_compress(np.array([[1.0, 2.0, 1e-9]]), dr).tolist() == [[255, 255, 0]]


def test_speckle_is_rayleigh_and_correlated():
    sp = SpeckleGenerator(1.2, 0.8).draw(np.random.default_rng(1), (400, 400))
    assert sp.dtype == np.float32 and sp.min() >= 0
    assert sp.mean() == pytest.approx(1.0, abs=0.05)
    assert sp.std() == pytest.approx(1.0, abs=0.08)  # exponential power: std = mean
    assert np.mean(sp > 3) == pytest.approx(math.exp(-3), abs=0.01)
    z = sp - sp.mean()
    c1 = (z[:, 1:] * z[:, :-1]).mean() / z.var()
    c12 = (z[:, 12:] * z[:, :-12]).mean() / z.var()
    assert c1 > 0.4 and abs(c12) < 0.05


def test_bolus_peak_is_analytic():
    b = LognormalBolus.from_peak(t0=8.0, rise_s=14.0, sigma=0.6, peak=0.1, offset=1e-6)
    t = np.linspace(0, 90, 90001)
    f = b(t)
    assert t[np.argmax(f)] == pytest.approx(b.ttp, abs=2e-3) and b.ttp == pytest.approx(22.0)
    assert f.max() == pytest.approx(b.pe, rel=1e-6) and b.pe == pytest.approx(0.1 + 1e-6)
    assert b(5.0) == 1e-6 and b(8.0) == 1e-6
    assert LognormalBolus.from_dict(b.to_dict()) == b


def test_config_validation_and_load_truth_errors(tmp_path):
    with pytest.raises(ValueError):
        PhantomConfig(ceus_side="top")
    with pytest.raises(ValueError):
        PhantomConfig(colormap="jet")
    with pytest.raises(InputError, match="not found"):
        load_truth(tmp_path / "nope.truth")
    (tmp_path / "bad.truth").mkdir()
    (tmp_path / "bad.truth" / "truth.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="bad.truth"):
        load_truth(tmp_path / "bad.truth")


# --- the GE LOGIQ screen (skin "logiq") ------------------------------------------------

LOGIQ = ScreenSkin.parse("logiq")


@pytest.mark.parametrize("size", [(448, 250), (480, 270), (1346, 748)])
@pytest.mark.parametrize("side", ["left", "right"])
def test_logiq_geometry(size, side):
    """Two equal panels (w/h ~ 720/520) touching (1 px apart), same top at ~14 % of the
    height, centred, room for the ticks beside the CEUS panel and for the timer below."""
    w, h = size
    geom = make_geometry(w, h, side, skin=LOGIQ)
    c, u = geom.layout.ceus, geom.layout.us
    assert geom.layout.ceus_side == side
    assert (c.w, c.h, c.y) == (u.w, u.h, u.y) and c.w == geom.panel_size
    left, right = (c, u) if side == "left" else (u, c)
    assert 0 <= right.x - (left.x + left.w) <= 2
    assert c.w / c.h == pytest.approx(720 / 520, abs=0.02)
    assert c.y == pytest.approx(0.14 * h, abs=1)
    assert abs(left.x - (w - right.x - right.w)) <= 1
    assert min(left.x, w - right.x - right.w) > geom.tick_len and h - c.y - c.h >= 0.12 * h


def test_logiq_skin_names_and_clashes():
    for ok in ("logiq", "logiq+frozen-bmode", "logiq+marks", "logiq+dark-start", "logiq+touching",
               "logiq+marks+frozen-bmode"):
        skin = ScreenSkin.parse(ok)
        assert skin.scanner == "logiq" and skin.probe == "trapezoid"
    for bad in ("logiq+stacked", "logiq+sector", "logiq+fullhd", "logiq+separator", "sector+logiq"):
        with pytest.raises(ValueError, match="clash"):
            ScreenSkin.parse(bad)
    # the other skins' truth entries are as they were before the logiq skin existed
    for name in SKINS.names():
        if name != "logiq":
            assert "scanner" not in ScreenSkin.parse(name).to_dict()
    cfg = PhantomConfig(duration_s=1, fps=1, skin="logiq+marks", colormap="gold", **LOGIQ_SMALL)
    truth = exam_truth(cfg, 1)
    assert truth["skin"]["name"] == "logiq+marks" and truth["skin"]["scanner"] == "logiq"
    assert truth_skin(truth) == ScreenSkin.parse("logiq+marks")
    with pytest.raises(ValueError, match="too small"):
        PhantomConfig(skin="logiq", width=200, height=112)


def test_trapezoid_mask():
    m = trapezoid_mask(155, 215)
    assert m.shape == (155, 215) and m[-1].all()
    assert m[0].sum() == pytest.approx(0.62 * 215, abs=2) and m[0, 107] and not m[0, :35].any()
    assert not m[:10, :10].any() and not m[:10, -10:].any()
    widths = m.sum(axis=1)
    assert np.all(np.diff(widths) >= 0)
    np.testing.assert_array_equal(m, m[:, ::-1])


@pytest.mark.parametrize("side", ["left", "right"])
def test_logiq_decorations_where_the_real_screen_has_them(side):
    """Grey bar inside the B-mode panel's left edge (in its black triangle), "LOGIQ" inside
    the CEUS panel's top left, depth ticks touching the CEUS panel's outer edge (not on
    the other panel), a body mark half inside, half below the B-mode panel's bottom."""
    geom = make_geometry(448, 250, side, skin=LOGIQ)
    c, u = geom.layout.ceus, geom.layout.us
    deco = logiq_decorations(geom)
    fp = trapezoid_mask(c.h, c.w)

    def where(name):
        ys, xs = np.nonzero(deco.parts[name])
        assert len(xs) > 5, name
        return xs, ys

    def in_box(xs, ys, b):
        return (xs >= b.x) & (xs < b.x + b.w) & (ys >= b.y) & (ys < b.y + b.h)

    xs, ys = where("grey_bar")
    assert in_box(xs, ys, u).all() and not fp[ys - u.y, xs - u.x].any()
    assert xs.max() - u.x < 0.05 * u.w and 0.05 * u.h < ys.min() - u.y and ys.max() - u.y < 0.5 * u.h
    xs, ys = where("label")
    assert in_box(xs, ys, c).all() and not fp[ys - c.y, xs - c.x].any()
    assert xs.max() - c.x < 0.2 * c.w and ys.max() - c.y < 0.15 * c.h
    xs, ys = where("ticks")
    assert not in_box(xs, ys, c).any() and not in_box(xs, ys, u).any()
    assert ys.min() >= c.y and ys.max() < c.y + c.h
    if side == "right":
        assert xs.min() == c.x + c.w  # the first column right of the panel
    else:
        assert xs.max() == c.x - 1
    rows = sorted(set(ys))
    assert len(rows) == int(geom.depth_cm) + 1
    lengths = [int((ys == r).sum()) for r in rows]
    assert lengths[0] == lengths[5] == geom.tick_len and max(lengths[1:5]) < geom.tick_len
    xs, ys = where("body_mark")
    inside = in_box(xs, ys, u)
    assert inside.any() and (~inside).any()
    assert ys[inside].min() > u.y + 0.8 * u.h and ys[~inside].min() >= u.y + u.h
    assert ((xs >= u.x) & (xs < u.x + u.w)).all()
    # the static screen shows them all, with header text above the panels
    static = render_static(geom, ("HOSPITAL  NAME^TEST  ID 1234567", "ML6-15  CEUS MI 0.08"), "G 50  DR 60")
    for name in ("ticks", "body_mark"):
        assert static[deco.parts[name]].any(axis=1).all()
    assert static[: c.y - 2].any()


def test_logiq_timer():
    geom = make_geometry(448, 250, "right", skin=LOGIQ)
    timer = TimerOverlay(geom)
    assert timer.text(18.4) == "T1: 0:18" and timer.text(61.0) == "T1: 1:01"
    c = geom.layout.ceus
    assert timer.y0 >= c.y + c.h and c.x <= timer.x0 < timer.x1 <= c.x + c.w
    a = np.zeros((250, 448, 3), np.uint8)
    b = a.copy()
    timer.apply(a, 18.4)
    timer.apply(b, 19.0)
    assert a.any() and (a != b).any()


def _panel(frame, box):
    return frame[box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"]]


def _grow(mask, r):
    """``mask`` dilated by ``r`` px (square)."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


def test_logiq_clip_panels_footprint_and_dark_ceus(logiq_exam):
    """Both panels show the same trapezoid (black triangles at the top corners but for
    the decorations, full width at the bottom); the B-mode image fills it, while the
    CEUS panel stays dark outside the perfused territory: its max projection over the
    clip covers well under half of the footprint. Nothing is drawn on the lesion."""
    clip, truth = logiq_exam
    geom = make_geometry(448, 250, "right", skin=LOGIQ)
    assert truth_layout(truth) == geom.layout
    lay = truth["layout"]
    cb, ub = lay["ceus"], lay["us"]
    assert (cb["w"], cb["h"], cb["y"]) == (ub["w"], ub["h"], ub["y"]) and cb["x"] - (ub["x"] + ub["w"]) == 1
    fp = trapezoid_mask(cb["h"], cb["w"])
    deco = logiq_decorations(geom)
    frames = decode(clip)
    flash = set(truth["flash"]["frame_indices"])
    cmax = np.zeros(fp.shape, np.uint8)
    umax = np.zeros(fp.shape, np.uint8)
    for i, (t, frame) in enumerate(frames):
        if i not in flash:
            np.maximum(cmax, _panel(frame, cb).max(axis=2), out=cmax)
        np.maximum(umax, _panel(frame, ub).max(axis=2), out=umax)
    ceus_cover = (cmax[fp] > 4).mean()
    assert 0.1 < ceus_cover < 0.45, ceus_cover
    assert (umax[fp] > 4).mean() > 0.98
    # black outside the trapezoid (codec noise aside) but where decorations are drawn
    for box, grey in ((cb, cmax), (ub, umax)):
        deco_here = _panel(deco.parts["grey_bar"] | deco.parts["label"] | deco.parts["body_mark"], box)
        assert np.percentile(grey[~_grow(fp, 3) & ~_grow(deco_here, 3)], 99) <= 4
    # the flash lights the whole footprint: the CEUS panel is the same trapezoid
    f = _panel(frames[min(flash)][1], cb).max(axis=2)
    assert (f[fp] > 4).mean() > 0.95 and (f[-1] > 4).mean() > 0.95 and f[:8, -8:].max() <= 4
    assert (umax[-1] > 4).all()  # full width at the bottom, black top corners
    assert umax[:8, :8].max() <= 4 and umax[:8, -8:].max() <= 4 and cmax[:8, -8:].max() <= 4
    # before contrast the CEUS panel is black but for rare peaks of a few grey levels
    first = _panel(frames[0][1], cb)
    assert first.mean() < 1 and (first.max(axis=2) > 4).mean() < 0.01
    # truth masks inside the footprint, never under a decoration
    inside_deco = deco.inside_panels(geom.layout)
    on_panel = _panel(inside_deco, cb) | _panel(inside_deco, ub)
    for t in truth["frame_times_s"]:
        roi, lesion = truth_masks_at(truth, t)
        assert roi.sum() > 200
        both = (roi | lesion).astype(bool)
        assert not (both & ~fp).any() and not (both & on_panel).any()


@pytest.mark.parametrize("side", ["left", "right"])
def test_logiq_combined_skins_render(side):
    """logiq+frozen-bmode+marks in gold, on both sides: the B-mode panel repeats, marks and
    decorations stay off the lesion, the masks equal the truth's, the timer ticks."""
    cfg = PhantomConfig(duration_s=2, fps=2, skin="logiq+frozen-bmode+marks", colormap="gold", ceus_side=side,
                        **LOGIQ_SMALL)
    truth = exam_truth(cfg, 4)
    lay = truth["layout"]
    assert truth["ceus_side"] == side and truth["skin"]["frozen_bmode"] and truth["skin"]["marks"]
    out = list(render_exam(truth))
    assert len(out) == 4
    b0 = _panel(out[0][2], lay["us"])
    for i, t, frame, roi, les in out:
        assert frame.shape == (250, 448, 3)
        np.testing.assert_array_equal(_panel(frame, lay["us"]), b0)
        r, l_ = truth_masks_at(truth, t)
        np.testing.assert_array_equal(roi, r)
        np.testing.assert_array_equal(les, l_)
    assert (out[0][2] != out[2][2]).any(axis=2)[lay["us"]["y"] + lay["us"]["h"]:].sum() > 5  # 0 s vs 1 s


def test_logiq_cli(tmp_path):
    from ceuspipe.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["synth", "--help"])
    assert res.exit_code == 0 and "logiq" in res.output
    res = runner.invoke(main, ["synth", str(tmp_path / "o"), "--patients", "1", "--skin", "logiq", "--duration-s",
                               "1", "--fps", "2", "--width", "448", "--height", "250", "--ceus-side", "right"])
    assert res.exit_code == 0, res.output
    truth = load_truth(tmp_path / "o" / "P001" / "exam1.truth")
    assert truth["skin"]["name"] == "logiq" and "ceus_territory" in truth
    frames = decode(tmp_path / "o" / "P001" / "exam1.mp4")
    assert len(frames) == 2 and frames[0][1].shape == (250, 448, 3)
    res = runner.invoke(main, ["synth", str(tmp_path / "p"), "--patients", "1", "--skin", "logiq+stacked"])
    assert res.exit_code != 0 and "clash" in res.output
