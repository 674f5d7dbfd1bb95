"""`ceuspipe keyframes` end to end on phantom clips and DICOM, checked independently."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main as cli
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import generate_exam

from support.bad_inputs import write_dicom

SMALL = dict(width=320, height=180, fps=6.0)


def make_clip(folder: Path, patient: str, seconds: float, side: str = "left", seed: int = 1,
              preset: str = "veryfast") -> Path:
    clip = folder / patient / "exam1.mp4"
    config = PhantomConfig(duration_s=seconds, ceus_side=side, preset=preset, **SMALL)
    generate_exam(clip, folder.parent / f"{folder.name}_truth" / patient, config, seed, patient=patient)
    return clip


def exact_rgb(frame) -> np.ndarray:
    """RGB of a decoded frame with swscale's accurate rounding and full chroma interpolation
    (spelled with PyAV's own flag names), the conversion ceuspipe asks for: FFmpeg's fast
    default path reads grey levels 0.49 low on average."""
    from av.video.reformatter import Interpolation as I

    return frame.reformat(format="rgb24", interpolation=I.BICUBIC | I.ACCURATE_RND | I.FULL_CHR_H_INT).to_ndarray()


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def independent_selection(clip: Path, ceus_box: dict, k: int) -> tuple[list[int], list[float]]:
    """Decode with bare PyAV, apply the definitions literally, return (sample numbers, scores)."""
    container = av.open(str(clip))
    frames = [(float(f.pts * f.time_base), exact_rgb(f)) for f in container.decode(video=0)]
    container.close()
    t0 = frames[0][0]
    x, y, w, h = (ceus_box[c] for c in "xywh")
    grays, n = [], 0
    while True:
        hits = [img for t, img in frames if t - t0 >= n - 1e-6]
        if not hits:
            break
        grays.append(cv2.cvtColor(np.ascontiguousarray(hits[0][y:y + h, x:x + w]), cv2.COLOR_RGB2GRAY))
        n += 1
    scores = [0.0] + [float(np.mean(np.abs(grays[i].astype(int) - grays[i - 1].astype(int))))
                      for i in range(1, len(grays))]
    best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return sorted(best), scores


@pytest.mark.parametrize("side", ["left", "right"])
def test_keyframes_match_independent_computation(tmp_path, side):
    clip = make_clip(tmp_path / "videos", "P007", 14.0, side=side)
    truth = json.loads((tmp_path / "videos_truth/P007/truth.json").read_text())
    out = tmp_path / "out"
    res = run_cli("keyframes", str(tmp_path / "videos"), str(out), "-k", "5")
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "P007/exam1/keyframes.json").read_text())
    # layout found automatically, CEUS on the right side, boxes as drawn
    assert meta["layout"]["ceus"] == truth["layout"]["ceus"]
    assert meta["layout"]["us"] == truth["layout"]["us"]
    expected_n, scores = independent_selection(clip, truth["layout"]["ceus"], k=5)
    assert [f["sample_index"] for f in meta["frames"]] == expected_n
    for f in meta["frames"]:
        assert f["score"] == pytest.approx(scores[f["sample_index"]], abs=1e-5)
        assert f["time_s"] == pytest.approx(f["sample_index"], abs=1 / SMALL["fps"])
    assert meta["n_samples"] == len(scores) == 14
    assert meta["n_frames_decoded"] == 14 * 6
    # every sample's score is in scores.csv and loads back
    rows = list(csv.DictReader((out / "P007/exam1/scores.csv").open()))
    assert [float(r["score"]) for r in rows] == pytest.approx(scores, abs=1e-5)
    assert sum(int(r["selected"]) for r in rows) == 5


@pytest.mark.parametrize("preset,b_frames,path", [("veryfast", True, "skip-nonref"), ("ultrafast", False, "skip-tails")])
def test_exported_key_frames_equal_a_bare_decode(tmp_path, preset, b_frames, path):
    """Pixel for pixel, the exported frames are the bare PyAV decode's samples (panels kept,
    the rest black), on a B-frame clip (non-reference frames skipped) and one without
    (the tail after the last sample left out)."""
    clip = make_clip(tmp_path / "v", "P008", 12.0, preset=preset)
    with av.open(str(clip)) as c:
        assert (c.streams.video[0].codec_context.reorder_depth > 0) == b_frames
        frames = [(float(f.pts * f.time_base), exact_rgb(f)) for f in c.decode(video=0)]
    truth = json.loads((tmp_path / "v_truth/P008/truth.json").read_text())
    out = tmp_path / "out"
    assert run_cli("keyframes", str(tmp_path / "v"), str(out), "-k", "6").exit_code == 0
    meta = json.loads((out / "P008/exam1/keyframes.json").read_text())
    assert meta["decode_path"] == path, meta["decode_note"]
    expected_n, _ = independent_selection(clip, truth["layout"]["ceus"], k=6)
    assert [f["sample_index"] for f in meta["frames"]] == expected_n
    t0 = frames[0][0]
    for f in meta["frames"]:
        image = next(img for t, img in frames if t - t0 >= f["sample_index"] - 1e-6)
        expected = np.zeros_like(image)
        for box in (truth["layout"]["ceus"], truth["layout"]["us"]):
            sl = np.s_[box["y"]:box["y"] + box["h"], box["x"]:box["x"] + box["w"]]
            expected[sl] = image[sl]
        full = cv2.imread(str(out / "P008/exam1" / f["frame_path"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(full[..., ::-1], expected), f["sample_index"]


def test_exports_hold_only_the_panels(tmp_path):
    make_clip(tmp_path / "v", "P001", 6.0)
    truth = json.loads((tmp_path / "v_truth/P001/truth.json").read_text())
    out = tmp_path / "out"
    assert run_cli("keyframes", str(tmp_path / "v"), str(out), "-k", "3").exit_code == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 3
    assert set(rows[0]) >= {"patient_id", "exam_id", "source", "time_s", "score", "ceus_gray",
                            "frame_path", "ceus_path", "us_path"}
    inside = np.zeros((180, 320), bool)
    for box in (truth["layout"]["ceus"], truth["layout"]["us"]):
        inside[box["y"]:box["y"] + box["h"], box["x"]:box["x"] + box["w"]] = True
    for row in rows:
        full = cv2.imread(str(out / row["frame_path"]), cv2.IMREAD_UNCHANGED)
        assert full.shape == (180, 320, 3)
        assert full[~inside].max() == 0, "burned-in text must not reach exported frames"
        ceus = cv2.imread(str(out / row["ceus_path"]), cv2.IMREAD_UNCHANGED)
        b = truth["layout"]["ceus"]
        assert np.array_equal(ceus, full[b["y"]:b["y"] + b["h"], b["x"]:b["x"] + b["w"]])
        gray = cv2.cvtColor(ceus, cv2.COLOR_BGR2GRAY)
        assert float(row["ceus_gray"]) == pytest.approx(gray.mean(), abs=1e-4)


def test_clip_shorter_than_k_keeps_all_and_says_so(tmp_path, caplog):
    make_clip(tmp_path / "v", "P002", 5.0)
    out = tmp_path / "out"
    res = run_cli("keyframes", str(tmp_path / "v"), str(out))
    assert res.exit_code == 0
    meta = json.loads((out / "P002/exam1/keyframes.json").read_text())
    assert [f["sample_index"] for f in meta["frames"]] == [0, 1, 2, 3, 4]
    assert meta["fewer_samples_than_k"] is True


def test_existing_exam_is_skipped_unless_overwrite(tmp_path):
    make_clip(tmp_path / "v", "P003", 4.0)
    out = tmp_path / "out"
    assert run_cli("keyframes", str(tmp_path / "v"), str(out)).exit_code == 0
    marker = out / "P003/exam1/keyframes.json"
    before = marker.stat().st_mtime_ns
    res = run_cli("keyframes", str(tmp_path / "v"), str(out))
    assert "1 skipped" in res.output and marker.stat().st_mtime_ns == before
    res = run_cli("keyframes", str(tmp_path / "v"), str(out), "--overwrite")
    assert "1 done" in res.output


def test_failed_video_is_reported_and_others_finish(tmp_path):
    make_clip(tmp_path / "v", "P004", 4.0)
    bad = tmp_path / "v" / "P005" / "broken.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["keyframes", str(tmp_path / "v"), str(out), "--jobs", "2"])
    assert res.exit_code == 1
    assert "broken.mp4" in res.output
    assert (out / "P004/exam1/keyframes.json").is_file()
    assert not (out / "P005").exists(), "a failed exam leaves no folder"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_dicom_cine_input(tmp_path):
    clip = make_clip(tmp_path / "v", "P006", 6.0)
    container = av.open(str(clip))
    frames = np.stack([exact_rgb(f) for f in container.decode(video=0)])
    container.close()
    dcm = tmp_path / "dicom" / "P006" / "IM0001"  # no suffix: found by content
    dcm.parent.mkdir(parents=True)
    write_dicom(dcm, frames, frame_time_ms=1000 / SMALL["fps"])
    out = tmp_path / "out"
    res = run_cli("keyframes", str(tmp_path / "dicom"), str(out), "-k", "3")
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "P006/IM0001/keyframes.json").read_text())
    truth = json.loads((tmp_path / "v_truth/P006/truth.json").read_text())
    assert meta["layout"]["ceus"] == truth["layout"]["ceus"]
    expected_n, _ = independent_selection(clip, truth["layout"]["ceus"], k=3)
    assert [f["sample_index"] for f in meta["frames"]] == expected_n
