"""Phantom motion options: large breathing, out-of-plane episodes, per-frame motion truth."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.configs import ConfigError
from ceuspipe.synth.anatomy import RespiratoryMotion
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import ceus_weight_maps, exam_truth, generate_exam, render_exam
from ceuspipe.synth.truth import (MOTION_CSV, load_truth, truth_dir_for, truth_frame_motion, truth_masks_at,
                                  truth_motion_csv)

SMALL = dict(duration_s=8, fps=6, width=320, height=180)
EPISODES = dict(out_of_plane_episodes=2, out_of_plane_s=0.6)


def test_defaults_leave_the_truth_as_it_was():
    truth = exam_truth(PhantomConfig(**SMALL), 5)
    assert "out_of_plane" not in truth
    assert not {"breathing", "out_of_plane_episodes", "out_of_plane_s"} & set(truth["config"])


def test_large_breathing_is_three_times_normal():
    normal = exam_truth(PhantomConfig(**SMALL), 5)["motion"]
    large = exam_truth(PhantomConfig(**SMALL, breathing="large"), 5)
    assert large["config"]["breathing"] == "large"
    m = large["motion"]
    assert m["amplitude_x_px"] == pytest.approx(3 * normal["amplitude_x_px"])
    assert m["amplitude_y_px"] == pytest.approx(3 * normal["amplitude_y_px"])
    assert (m["period_s"], m["phase"]) == (normal["period_s"], normal["phase"])


@pytest.mark.parametrize("bad,key", [(dict(breathing="huge"), "breathing"),
                                     (dict(out_of_plane_episodes=-1), "out_of_plane_episodes"),
                                     (dict(out_of_plane_episodes=1.5), "out_of_plane_episodes"),
                                     (dict(out_of_plane_s=0), "out_of_plane_s"),
                                     (dict(out_of_plane_episodes=5, out_of_plane_s=1.0), "out_of_plane_episodes"),
                                     (dict(out_of_plane_episodes=1, skin="frozen-bmode"), "out_of_plane_episodes")])
def test_bad_motion_options_name_their_key(bad, key):
    with pytest.raises(ConfigError) as err:
        PhantomConfig(**{**SMALL, **bad})
    assert err.value.key == key


def test_frame_motion_follows_the_breathing_and_the_episodes():
    truth = exam_truth(PhantomConfig(**SMALL, **EPISODES), 5)
    dx, dy, away = truth_frame_motion(truth)
    motion = RespiratoryMotion.from_dict(truth["motion"])
    assert dx.shape == dy.shape == away.shape == (truth["n_frames"],)
    for i in (0, 7, 30):
        assert (dx[i], dy[i]) == motion.offset(truth["frame_times_s"][i])
    assert away.nonzero()[0].tolist() == truth["out_of_plane"]["frame_indices"]
    episodes = truth["out_of_plane"]["episodes_s"]
    assert len(episodes) == 2 and all(b - a == pytest.approx(0.6) for a, b in episodes)
    assert episodes[0][0] >= 1.0 and episodes[1][0] >= episodes[0][1] + 1.0
    assert away.sum() == 6  # 0.6 s at 6 fps, twice


def test_out_of_plane_frames_show_other_tissue_and_no_lesion():
    plain = exam_truth(PhantomConfig(**SMALL), 5)
    truth = exam_truth(PhantomConfig(**SMALL, **EPISODES), 5)
    away = truth_frame_motion(truth)[2]
    us = truth["layout"]["us"]
    maps = list(ceus_weight_maps(truth))
    for (i, t, fa, _, _), (_, _, fb, roi, les) in zip(render_exam(plain), render_exam(truth)):
        if not away[i]:
            assert np.array_equal(fa, fb)  # an episode changes nothing outside it
            continue
        pa = fa[us["y"]: us["y"] + us["h"], us["x"]: us["x"] + us["w"], 0].astype(float)
        pb = fb[us["y"]: us["y"] + us["h"], us["x"]: us["x"] + us["w"], 0].astype(float)
        assert abs(np.corrcoef(pa.ravel(), pb.ravel())[0, 1]) < 0.3  # decorrelated
        assert abs(pa.mean() - pb.mean()) < 15  # the same kind of tissue
        assert roi.sum() == les.sum() == 0
        assert truth_masks_at(truth, t)[0].sum() == 0
        assert maps[i][1][..., 0].max() == 0.0


def test_motion_csv_is_written_beside_the_truth(tmp_path):
    clip = tmp_path / "P001" / "exam1.mp4"
    truth = generate_exam(clip, None, PhantomConfig(duration_s=2, fps=4, width=320, height=180), seed=2)
    path = truth_dir_for(clip) / MOTION_CSV
    assert path.read_text() == truth_motion_csv(load_truth(truth_dir_for(clip)))
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["frame_index", "time_s", "dx_px", "dy_px", "out_of_plane"]
    dx, dy, _ = truth_frame_motion(truth)
    assert [float(r["dy_px"]) for r in rows] == pytest.approx(dy.tolist(), abs=1e-6)
    assert {r["out_of_plane"] for r in rows} == {"0"}


def test_cli_motion_options(tmp_path):
    from ceuspipe.cli import main

    res = CliRunner().invoke(main, ["synth", str(tmp_path / "o"), "--patients", "1", "--width", "320", "--height",
                                    "180", "--duration-s", "4", "--fps", "4", "--breathing", "large",
                                    "--out-of-plane-episodes", "1", "--out-of-plane-s", "0.5"])
    assert res.exit_code == 0, res.output
    truth = load_truth(tmp_path / "o" / "P001" / "exam1.truth")
    assert truth["config"]["breathing"] == "large" and len(truth["out_of_plane"]["episodes_s"]) == 1
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "p"), "--patients", "1", "--duration-s", "2",
                                    "--out-of-plane-episodes", "3"])
    assert res.exit_code != 0 and "out_of_plane_episodes" in res.output
