"""The checked int8 default of segment-video: precision choice, calibration cache, per-clip check, fallback.

Models here are untrained (their probabilities sit near 0.5, so int8 flips many mask
pixels: calibration measures held-out Dice below 0.1), which makes them good at
exercising refusals and fallbacks. That int8 masks and curve match fp32 for a
trained model is tested in test_segment_phantom.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.configs import ConfigError
from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.segment import int8_cache, int8_check
from ceuspipe.segment.int8_check import ClipCheck
from ceuspipe.video.panels import PanelLayout
from ceuspipe.video.reader import iter_frames
from support.builders import phantom_clip, write_checkpoint


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8default")
    a, truth = phantom_clip(root / "a", seed=1, duration_s=4.0, fps=8.0)
    b, _ = phantom_clip(root / "b", seed=2, duration_s=3.0, fps=8.0)
    lay = PanelLayout.from_dict(truth["layout"])
    return {"root": root, "a": a, "b": b, "truth": truth, "ckpt": write_checkpoint(root / "tiny.pt"),
            "boxes": {"ceus_box": lay.ceus, "us_box": lay.us}}


def _config(env, cache: Path, **kw) -> SegmentConfig:
    return SegmentConfig(cache_dir=str(cache), **env["boxes"], **kw)


def _doc(out: Path) -> dict:
    return json.loads((out / "segment.json").read_text())


def _masks(out: Path) -> list[np.ndarray]:
    return [f.image[..., 0].copy() for f in iter_frames(out / "mask.mkv")]


def _count_calibrations(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = int8_cache._calibrate

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(int8_cache, "_calibrate", counting)
    return calls


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw, key", [({"precision": "half"}, "precision"), ({"int8_min_dice": 1.5}, "int8_min_dice"),
                                     ({"precision": "int8", "engine": "torch"}, "precision"),
                                     ({"precision": "int8", "device": "cuda"}, "precision")])
def test_precision_options_checked(kw, key):
    with pytest.raises(ConfigError) as err:
        SegmentConfig(**kw)
    assert err.value.key == key


def test_batch_segment_stage_checks_precision(env):
    from ceuspipe.batch.stages import prepare_options

    opts = prepare_options("segment", {"model": str(env["ckpt"]), "precision": "fp32"}, env["root"])
    assert opts["precision"] == "fp32"
    with pytest.raises(ValueError, match="precision"):
        prepare_options("segment", {"model": str(env["ckpt"]), "precision": "half"}, env["root"])


# --------------------------------------------------------------------------- calibration cache


def test_calibrated_once_then_reused_and_refusal_recorded(env, tmp_path, monkeypatch):
    calls = _count_calibrations(monkeypatch)
    cache = tmp_path / "cache"
    first = segment_video(env["a"], env["ckpt"], tmp_path / "a", _config(env, cache))
    second = segment_video(env["b"], env["ckpt"], tmp_path / "b", _config(env, cache))
    assert calls == [1]  # the second clip reused the cached model
    p1, p2 = _doc(tmp_path / "a")["precision"], _doc(tmp_path / "b")["precision"]
    assert p1["int8_model"]["calibrated_on_this_clip"] and not p2["int8_model"]["calibrated_on_this_clip"]
    assert p1["int8_model"]["file"] == p2["int8_model"]["file"]
    # an untrained model: int8 is refused on the calibration's held-out frames, fp32 runs, no warning
    held = p1["int8_model"]["held_out_dice_mean"]
    assert held < 0.95 and p1["used"] == "fp32" and "held-out" in p1["reason"]
    assert first.engine == second.engine == "onnx" and _doc(tmp_path / "a")["warnings"] == []
    assert first.model_quantization == {} and "check" not in p1
    files = sorted(p.name for p in (cache / "onnx").iterdir())
    assert len([f for f in files if "-int8-" in f and f.endswith(".onnx")]) == 1
    assert not [f for f in files if f.startswith(".")]  # no temporary files left
    from ceuspipe.segment.onnx_export import read_metadata

    q = read_metadata(next((cache / "onnx").glob("*-int8-*.onnx")))["quantization"]
    # the model file keeps counts and agreement only: no clip name, no images
    assert q["calibration"]["frames"] >= 8 and "exam1" not in json.dumps(q)
    assert q["agreement_vs_fp32"]["dice_mean"] == held


def test_precision_fp32_never_calibrates(env, tmp_path, monkeypatch):
    calls = _count_calibrations(monkeypatch)
    rep = segment_video(env["b"], env["ckpt"], tmp_path / "o", _config(env, tmp_path / "cache", precision="fp32"))
    assert calls == [] and rep.engine == "onnx" and rep.precision == {"requested": "fp32", "used": "fp32",
                                                                       "reason": "asked"}
    assert not list((tmp_path / "cache" / "onnx").glob("*int8*"))


def test_two_workers_racing_calibrate_once(env, tmp_path, monkeypatch):
    from ceuspipe.segment.model_spec import load_spec
    from ceuspipe.segment.onnx_export import cached_onnx

    calls = _count_calibrations(monkeypatch)
    spec = load_spec(env["ckpt"])
    fp32 = cached_onnx(spec, cache_dir=tmp_path / "cache")
    results, errors = [], []

    def worker():
        try:
            results.append(int8_cache.cached_int8(spec, fp32, env["b"], SegmentConfig(**env["boxes"]), 3.0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and calls == [1]
    assert results[0].path == results[1].path and sorted(r.calibrated_now for r in results) == [False, True]


# --------------------------------------------------------------------------- the per-clip check


def test_check_frames_spread_over_the_clip():
    c = ClipCheck(10.0, 0.5, frames=8)
    times = np.arange(300) / 30.0  # 10 s at 30 fps
    chosen = [t for t in times if c.wants(float(t))]
    np.testing.assert_allclose(chosen, np.arange(8) * 1.25, atol=1 / 30)
    c = ClipCheck(None, 0.5)  # unknown duration: 0, 1, 2, 4, 8, 16 s ...
    chosen = [t for t in np.arange(0, 20, 0.5) if c.wants(float(t))]
    assert chosen == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_check_measures_dice_and_curve():
    grey = np.full((20, 20), 200, np.uint8)
    grey[:, 10:] = 100
    left = np.zeros((8, 8), np.float32)
    left[:, :4] = 1.0
    c = ClipCheck(4.0, 0.5, frames=4)
    c.add(0.0, grey, left, left)
    assert c.dice == [1.0] and c.passed() and not c.failed_early
    c.add(1.0, grey, left, 1.0 - left)  # int8 picks the other half: Dice 0, darker pixels
    assert c.dice[-1] == 0.0 and not c.passed()
    assert c.failed_early  # (1 + 0 + 2 more at best) / 4 = 0.75 < 0.95
    r = c.result()
    assert r["frames"] == 2 and r["dice_min"] == 0.0 and r["curve_max_difference"] > 0.5 and not r["passed"]
    same = ClipCheck(4.0, 0.5, max_curve_difference=0.0)
    same.add(0.0, grey, left, left)
    assert same.curve_difference() == 0.0 and same.passed()


def test_auto_falls_back_to_fp32_when_check_fails(env, tmp_path, monkeypatch):
    # int8_min_dice 0 accepts the untrained model's int8 at calibration; a negative curve bound
    # then fails every clip's check, so the clip is redone with fp32
    monkeypatch.setattr(int8_check, "MAX_CURVE_DIFFERENCE", -1.0)
    cache = tmp_path / "cache"
    rep = segment_video(env["a"], env["ckpt"], tmp_path / "auto", _config(env, cache, int8_min_dice=0.0))
    segment_video(env["a"], env["ckpt"], tmp_path / "fp32", _config(env, cache, precision="fp32"))
    doc = _doc(tmp_path / "auto")
    p = doc["precision"]
    assert rep.engine == "onnx" and doc["engine"] == "onnx" and p["used"] == "fp32" and p["fell_back"]
    assert p["check"]["passed"] is False and p["check"]["frames"] == 8 and doc["model_quantization"] == {}
    assert len(doc["warnings"]) == 1 and "segmented with fp32 instead" in doc["warnings"][0]
    assert rep.frames == env["truth"]["n_frames"]
    a, b = _masks(tmp_path / "auto"), _masks(tmp_path / "fp32")
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    html = (tmp_path / "auto" / "report.html").read_text()
    assert "int8 check on this clip" in html and "failed" in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto", "cache", "fp32"]


def test_auto_uses_int8_when_the_check_passes(env, tmp_path, monkeypatch):
    # bounds opened fully: the untrained model's int8 passes and is used
    monkeypatch.setattr(int8_check, "MAX_CURVE_DIFFERENCE", 1e9)
    rep = segment_video(env["a"], env["ckpt"], tmp_path / "o", _config(env, tmp_path / "cache", int8_min_dice=0.0))
    doc = _doc(tmp_path / "o")
    assert rep.engine == doc["engine"] == "onnx-int8" and doc["precision"]["used"] == "int8"
    assert doc["precision"]["check"]["passed"] and doc["model_quantization"]["precision"] == "int8"
    assert doc["warnings"] == []


def test_precision_int8_keeps_int8_and_warns(env, tmp_path):
    from ceuspipe.cli import main

    out = tmp_path / "o"
    box = {k: ",".join(map(str, v.as_list())) for k, v in env["boxes"].items()}
    res = CliRunner().invoke(main, ["segment-video", str(env["b"]), "--model", str(env["ckpt"]), "-o", str(out),
                                    "--precision", "int8", "--ceus-box", box["ceus_box"], "--us-box", box["us_box"]],
                             env={"CEUSPIPE_CACHE_DIR": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    assert "onnx-int8 on cpu" in res.output
    doc = _doc(out)
    assert doc["precision"]["used"] == "int8" and doc["precision"]["check"]["passed"] is False
    assert len(doc["warnings"]) == 1 and "int8 kept" in doc["warnings"][0]
