"""Synthetic CEUS phantom: determinism, truth masks, physics, screen, CLI."""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.errors import InputError
from ceuspipe.synth.bolus import LognormalBolus
from ceuspipe.synth.config import PhantomConfig, patient_seed
from ceuspipe.synth.generate import (ceus_weight_maps, exam_truth, generate_exam, generate_phantom,
                                     render_exam)
from ceuspipe.synth.screen import (TimerOverlay, gold_lut, gold_to_grey, make_geometry,
                                   render_static)
from ceuspipe.synth.speckle import SpeckleGenerator, log_compress
from ceuspipe.tic.linearize import linearize as linearise  # the project's inverse of log_compress
from ceuspipe.synth.truth import (load_truth, truth_curves, truth_dir_for, truth_layout,
                                  truth_masks_at)
from ceuspipe.video.panels import PanelLayout

SMALL = dict(width=320, height=180)


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


def test_mask_videos_equal_truth_masks_at(long_exam):
    clip, truth = long_exam
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


def test_roi_linear_power_follows_curve(long_exam):
    clip, truth = long_exam
    les, _ = truth_curves(truth)
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
        elif t < les.t0:
            assert mean < 10 * truth["noise_floor_power"]
    assert checked >= 10


def test_weight_maps_predict_every_region_linear_power(long_exam):
    """ceus_weight_maps is the truth of any region's curve: mean linear power of 6x6-pixel
    blocks of the decoded CEUS panel against the maps' prediction (weights times the two
    curves plus the noise floor), over every frame after arrival; speckle averages out
    over the blocks. The maps move with breathing (the ROI weight sits on the truth ROI
    of the same frame) and hold no parenchyma inside the ROI."""
    clip, truth = long_exam
    les, par = truth_curves(truth)
    box = truth["layout"]["ceus"]
    dr, floor = truth["dynamic_range_db"], truth["noise_floor_power"]
    flash = set(truth["flash"]["frame_indices"])
    ratios, n = [], 0
    for i, ((t, frame), (tm, maps)) in enumerate(zip(decode(clip), ceus_weight_maps(truth))):
        assert abs(t - tm) < 1e-3 and maps.shape == (box["h"], box["w"], 2)
        roi, _ = truth_masks_at(truth, t)
        inside = roi.astype(bool)
        assert maps[..., 0][inside].mean() > 10 * maps[..., 0][~inside].mean()
        assert maps[..., 1][inside].mean() < 0.1 * maps[..., 1][~inside].mean()
        if i in flash or t < les.t0 + 2:
            continue
        want = maps[..., 0] * (les(t) - les.offset) + maps[..., 1] * (par(t) - par.offset) + floor
        got = linearise(frame[box["y"]: box["y"] + box["h"], box["x"]: box["x"] + box["w"], 0], dr)
        k = 6
        h, w = (box["h"] // k) * k, (box["w"] // k) * k
        blocks = lambda a: a[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))  # noqa: E731
        ratios.append(np.median(blocks(got) / blocks(want)))
        n += 1
        assert np.corrcoef(blocks(got).ravel(), blocks(want).ravel())[0, 1] > 0.85
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
