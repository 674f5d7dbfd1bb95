"""Motion inside segment-video: on a phantom with large breathing and out-of-plane episodes,
motion.csv matches the phantom's true displacements and flags its out-of-plane frames,
those frames stay out of the curve with one warning, the report shows it, and a fixed
reference mask follows the motion."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ceuspipe.motion import FrameMotion
from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.segment.reference_region import ReferenceRegion
from ceuspipe.synth.truth import load_truth, truth_frame_motion
from ceuspipe.tic import read_tic_csv
from ceuspipe.video.panels import PanelLayout
from support.builders import phantom_clip, write_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    clip, _ = phantom_clip(root, duration_s=8.0, fps=8.0, breathing="large", out_of_plane_episodes=1,
                           out_of_plane_s=0.5)
    truth = load_truth(clip.parent / f"{clip.stem}.truth")
    lay = PanelLayout.from_dict(truth["layout"])
    out = root / "out"
    segment_video(clip, write_checkpoint(root / "tiny.pt"), out,
                  SegmentConfig(ceus_box=lay.ceus, us_box=lay.us, engine="torch", batch_size=4))
    return {"clip": clip, "truth": truth, "out": out}


def test_motion_csv_follows_the_phantom_and_finds_its_out_of_plane_frames(run):
    dx, dy, away = truth_frame_motion(run["truth"])
    rows = list(csv.DictReader((run["out"] / "motion.csv").read_text().splitlines()))
    assert len(rows) == len(dx) == run["truth"]["n_frames"]
    idx = np.array([int(r["frame_index"]) for r in rows])
    used = np.array([r["used"] == "1" for r in rows])
    assert np.array_equal(~used, away[idx]) and away.sum() >= 3
    est = np.array([[float(r["dx_px"]), float(r["dy_px"])] for r in rows])
    true = np.stack([dx[idx] - dx[0], dy[idx] - dy[0]], axis=1)  # displacements from the first frame
    err = np.sqrt(np.mean(np.sum((est[used] - true[used]) ** 2, axis=1)))
    moved = np.sqrt(np.mean(np.sum(true[used] ** 2, axis=1)))
    assert moved > 2.0 and err < 0.3, (err, moved)


def test_out_of_plane_frames_stay_out_of_the_curve_with_one_warning(run):
    seg = json.loads((run["out"] / "segment.json").read_text())
    away = truth_frame_motion(run["truth"])[2]
    assert seg["motion"]["frames_out_of_plane"] == int(away.sum())
    assert "motion.csv" in seg["outputs"] and (run["out"] / "motion.png").is_file()
    lines = [w for w in seg["warnings"] if "out of plane" in w]
    assert len(lines) == 1 and str(run["clip"]) in lines[0]
    tic = read_tic_csv(run["out"] / "tic.csv")
    rows = tic["frame_index"].astype(int)
    assert np.all(tic["excluded"][away[rows]] == 1)
    html = (run["out"] / "report.html").read_text()
    assert 'id="motion"' in html and "out of plane" in html


def test_a_fixed_reference_mask_follows_the_motion(tmp_path):
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 20:30] = 255
    path = tmp_path / "ref.png"
    import cv2

    cv2.imwrite(str(path), mask)
    lay = PanelLayout.from_dict({"ceus": {"x": 0, "y": 0, "w": 60, "h": 40},
                                 "us": {"x": 70, "y": 0, "w": 60, "h": 40},
                                 "frame_width": 130, "frame_height": 40})
    region = ReferenceRegion(tmp_path / "c.mp4", lay, SegmentConfig(reference_mask=str(path)))
    frame, grey, lesion = np.zeros((40, 130, 3), np.uint8), np.zeros((40, 60), np.uint8), np.zeros((40, 60), np.uint8)
    still = region.mask_for(frame, grey, lesion, FrameMotion(0, 0.0, 0.0, 0.0, 1.0, True))
    moved = region.mask_for(frame, grey, lesion, FrameMotion(1, 0.1, 3.0, -2.0, 0.9, True))
    assert np.array_equal(still, mask > 0)
    assert np.array_equal(moved, np.roll(np.roll(mask > 0, 3, axis=1), -2, axis=0))
