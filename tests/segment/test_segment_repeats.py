"""segment-video on screen captures that repeat acquired frames (issue 13): repeats found,
never a differing frame merged, the curve the same as on the acquisition itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.configs import ConfigError
from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.segment.repeats import RepeatDetector
from ceuspipe.tic.io import read_tic_csv
from ceuspipe.video.panels import PanelLayout
from ceuspipe.video.reader import iter_frames
from support.builders import phantom_clip, write_checkpoint

ACQ_HZ, DURATION_S = 10.0, 4.0


def _capture(src, path, rate_hz: float, fps: float = 30.0) -> list[int]:
    """Re-encode ``src`` (acquired at ``rate_hz``) as a ``fps`` screen capture with libx264
    (default CRF 23): capture frame j shows acquired frame floor(j * rate / fps). Returns
    that acquired-frame number for every capture frame."""
    from ceuspipe.video.writer import VideoWriter

    frames = [f.image for f in iter_frames(src)]
    h, w = frames[0].shape[:2]
    n = int(math.floor(len(frames) * fps / rate_hz - 1e-9)) + 1
    shown = [min(len(frames) - 1, int(math.floor(j * rate_hz / fps + 1e-9))) for j in range(n)]
    with VideoWriter(path, w, h, fps=fps, codec="libx264") as vw:
        for j, k in enumerate(shown):
            vw.write(frames[k], j / fps)
    return shown


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    src, truth = phantom_clip(root, seed=2, duration_s=DURATION_S, fps=ACQ_HZ)
    cap10 = root / "capture_10hz.mp4"
    shown10 = _capture(src, cap10, ACQ_HZ)
    cap125 = root / "capture_12_5hz.mp4"
    src125, _ = phantom_clip(root / "s125", seed=2, duration_s=3.2, fps=12.5)
    shown125 = _capture(src125, cap125, 12.5)
    lay = PanelLayout.from_dict(truth["layout"])
    return {"root": root, "src": src, "truth": truth, "ckpt": write_checkpoint(root / "tiny.pt"),
            "layout": lay, "cap10": cap10, "shown10": shown10, "cap125": cap125, "shown125": shown125,
            "src125": src125}


def _config(env, **kw) -> SegmentConfig:
    lay = env["layout"]
    return SegmentConfig(ceus_box=lay.ceus, us_box=lay.us, cache_dir=str(env["root"] / "cache"), **kw)


def _run(env, clip, name, **kw):
    out = env["root"] / name
    rep = segment_video(clip, env["ckpt"], out, _config(env, **kw))
    return rep, out, read_tic_csv(out / "tic.csv"), json.loads((out / "segment.json").read_text())


def _first_appearances(shown):
    return [j for j, k in enumerate(shown) if j == 0 or k != shown[j - 1]]


@pytest.fixture(scope="module")
def capture_run(env):
    return _run(env, env["cap10"], "out_cap", batch_size=4)


def test_capture_of_10hz_scan_repeats_found_and_curve_uses_first_appearances(env, capture_run):
    rep, out, tic, seg = capture_run
    shown = env["shown10"]
    first = _first_appearances(shown)
    assert rep.frames == len(shown) == rep.frames_decoded
    assert rep.frames_repeated == len(shown) - len(first)  # every repeat found, no real frame merged
    np.testing.assert_array_equal(tic["frame_index"], first)
    np.testing.assert_allclose(tic["time_s"], np.asarray(first) / 30.0, atol=1e-3)
    np.testing.assert_array_equal(tic["repeats"], np.diff([*first, len(shown)]) - 1)
    assert rep.acquisition_fps == pytest.approx(ACQ_HZ, rel=1e-3)
    assert seg["frames_repeated"] == rep.frames_repeated and seg["dedupe"] is True
    assert seg["acquisition_fps"] == pytest.approx(ACQ_HZ, rel=1e-3)
    # the mask video keeps every frame at its own time; a repeat carries its anchor's mask
    masks = [(f.time_s, f.image) for f in iter_frames(out / "mask.mkv")]
    assert len(masks) == len(shown)
    np.testing.assert_allclose([t for t, _ in masks], np.arange(len(shown)) / 30.0, atol=6e-4)  # mkv: ms
    for j in range(1, len(shown)):
        if shown[j] == shown[j - 1]:
            assert np.array_equal(masks[j][1], masks[j - 1][1])
    assert len([f for f in iter_frames(out / "overlay.mp4")]) == len(shown)


@pytest.fixture(scope="module")
def tic_runs(env):
    """A 40 s exam with the bolus (seed 5: arrival 12.7 s, TTP 28.8 s) acquired at 4 Hz and its
    12 fps capture (each frame 3 times, as 10 Hz in 30 fps, but fewer frames to segment)."""
    root = env["root"] / "tic"
    src, _ = phantom_clip(root, seed=5, duration_s=40.0, fps=4.0)
    cap = root / "capture.mp4"
    shown = _capture(src, cap, 4.0, fps=12.0)
    return {"shown": shown, "src": _run(env, src, "tic_src", batch_size=8),
            "dedupe": _run(env, cap, "tic_cap", batch_size=8),
            "all": _run(env, cap, "tic_cap_all", batch_size=8, dedupe=False)}


def test_tic_same_with_and_without_repeats(tic_runs):
    shown = tic_runs["shown"]
    first = _first_appearances(shown)
    _, _, src_tic, src_seg = tic_runs["src"]
    rep, _, tic, seg = tic_runs["dedupe"]
    rep_all, _, all_tic, all_seg = tic_runs["all"]
    assert src_seg["frames_repeated"] == 0
    assert rep.frames_repeated == len(shown) - len(first) and rep.acquisition_fps == pytest.approx(4.0, rel=1e-3)
    assert rep_all.frames_repeated == 0 and len(all_tic["time_s"]) == len(shown) and not np.any(all_tic["repeats"])
    assert all_seg["dedupe"] is False and rep_all.acquisition_fps == pytest.approx(12.0, rel=1e-3)
    # dedupe: one sample per acquired frame, at the time of its first appearance, the same
    # value as that frame has in the run without dedupe
    np.testing.assert_allclose(tic["time_s"], src_tic["time_s"], atol=2e-3)
    np.testing.assert_array_equal(tic["frame_index"], first)
    np.testing.assert_allclose(tic["mean_linear"], all_tic["mean_linear"][first], rtol=1e-3)
    a, b, c = src_seg["tic"], seg["tic"], all_seg["tic"]
    assert a["success"] and b["success"] and c["success"], (a["reason"], b["reason"], c["reason"])
    for k in ("TTP", "PE", "AUC", "mTT", "RT", "FT", "TI"):
        if a["parameters"].get(k) is None:
            continue
        # the fit on every frame (each value 3 times) and on acquired frames only agree ...
        assert b["parameters"][k] == pytest.approx(c["parameters"][k], rel=0.05, abs=0.25), k
        # ... and with the acquisition itself (one lossy generation less: linear power a few % higher)
        assert b["parameters"][k] == pytest.approx(a["parameters"][k], rel=0.15, abs=0.5), k


def test_capture_of_12_5hz_scan_2_3_pattern_and_temporal_smoothing(env):
    rep, out, tic, _ = _run(env, env["cap125"], "out_cap125", batch_size=3, temporal_smoothing=3)
    shown = env["shown125"]
    first = _first_appearances(shown)
    assert sorted(set(np.diff(first).tolist())) == [2, 3]
    np.testing.assert_array_equal(tic["frame_index"], first)
    assert rep.frames == len(shown) and rep.frames_repeated == len(shown) - len(first)
    assert rep.acquisition_fps == pytest.approx(12.5, rel=0.02)
    masks = [f.time_s for f in iter_frames(out / "mask.mkv")]
    np.testing.assert_allclose(masks, np.arange(len(shown)) / 30.0, atol=6e-4)


def _detector_repeats(clip, layout, size=64, start_s=0.0):
    from ceuspipe.preprocess import panel_to_input
    from ceuspipe.video.panels import crop

    det = RepeatDetector()
    hits = []
    for f in iter_frames(clip):
        if f.time_s < start_s:
            continue
        if det(f.index, panel_to_input(crop(f.image, layout.ceus), size),
               panel_to_input(crop(f.image, layout.us), size)) is not None:
            hits.append(f.index)
    return hits


def test_low_motion_clips_without_repeats_are_never_merged(tmp_path):
    """Late wash-out (the last 10 s of a 60 s exam, 10 Hz: little change from frame to
    frame) and the start of a clip before contrast arrives (only noise-floor speckle and
    breathing move, the smallest changes measured): no frame is taken for a repeat."""
    clip, truth = phantom_clip(tmp_path, seed=4, duration_s=60.0, fps=ACQ_HZ)
    lay = PanelLayout.from_dict(truth["layout"])
    assert truth["curves"]["lesion"]["ttp_s"] < 45.0  # the last 10 s are wash-out
    assert _detector_repeats(clip, lay, start_s=50.0) == []
    assert _detector_repeats(clip, lay, size=128, start_s=50.0) == []
    assert truth["curves"]["lesion"]["t0"] > 1.0
    early = [i for i in _detector_repeats(clip, lay) if i < 10 * truth["curves"]["lesion"]["t0"]]
    assert early == []


def test_detector_compares_with_the_anchor_not_the_previous_frame():
    rng = np.random.default_rng(0)
    base = rng.random((64, 64), dtype=np.float32) * 0.5
    us = rng.random((64, 64), dtype=np.float32)
    det = RepeatDetector()
    assert det(0, base, us) is None
    assert det(1, base + 0.002, us) == 0          # 0.5 grey levels: codec noise
    # a slow drift of 0.5 grey levels a frame: chained frame to frame it would all be one
    # run; against the anchor a new frame starts once it has moved 1.6 grey levels
    got = [det(i, base + 0.5 / 255 * (i - 1), us) for i in range(2, 7)]
    assert got == [0, 0, 0, None, 5]
    off = RepeatDetector(enabled=False)
    assert off(0, base, us) is None and off(1, base, us) is None


def test_dedupe_config_and_cli_flag():
    with pytest.raises(ConfigError, match="dedupe"):
        SegmentConfig(dedupe="no")
    assert SegmentConfig().dedupe is True
    from ceuspipe.cli import main

    res = CliRunner().invoke(main, ["segment-video", "--help"])
    assert res.exit_code == 0 and "--no-dedupe" in res.output


def test_long_run_of_repeats_streams_with_bounded_hold(env, tmp_path):
    """A frozen screen (one frame 40 times, longer than the inference stage holds frames
    back): one inference of one frame, every frame written, a one-row curve."""
    from ceuspipe.segment.engines import make_predictor
    from ceuspipe.segment.model_spec import load_spec
    from ceuspipe.video.writer import VideoWriter

    img = next(iter(iter_frames(env["src"]))).image
    clip = tmp_path / "frozen.mp4"
    with VideoWriter(clip, img.shape[1], img.shape[0], fps=30.0, codec="libx264") as vw:
        for j in range(40):
            vw.write(img, j / 30.0)
    pred = make_predictor(load_spec(env["ckpt"]), cache_dir=env["root"] / "cache")
    calls = []

    class Count:
        engine, device, size = pred.engine, pred.device, pred.size
        inference_record = pred.inference_record

        def __call__(self, c, u):
            calls.append(len(c))
            return pred(c, u)

    rep = segment_video(clip, env["ckpt"], tmp_path / "out", _config(env, batch_size=4, queue_frames=2),
                        predictor=Count())
    assert calls == [1] and rep.frames == 40 and rep.frames_repeated == 39 and rep.acquisition_fps is None
    assert len(list(iter_frames(tmp_path / "out" / "mask.mkv"))) == 40
    assert len(read_tic_csv(tmp_path / "out" / "tic.csv")["time_s"]) == 1
