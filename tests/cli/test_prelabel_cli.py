"""`ceuspipe prelabel` with a real (tiny, untrained) checkpoint, then `ceuspipe build-dataset`
on the proposals; bad input is one error line naming the file, and nothing is written."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.video.panels import Box, PanelLayout
from support.bad_inputs import assert_one_line_error
from support.builders import write_checkpoint
from support.keyframe_folders import make_keyframes

LAYOUT = PanelLayout(ceus=Box(6, 8, 72, 60), us=Box(84, 8, 72, 60), frame_width=162, frame_height=76)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("prelabel_cli")
    return {"root": root, "kf": make_keyframes(root / "kf", n_patients=3, n_frames=2, layout=LAYOUT),
            "ckpt": write_checkpoint(root / "tiny.pt", size=64)}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_prelabel_then_build_dataset_counts_the_proposals(env, tmp_path):
    ann = tmp_path / "ann"
    r = run("prelabel", env["kf"], "--model", env["ckpt"], ann, "--engine", "torch", "--device", "cpu",
            "--threshold", "0.5")
    assert r.exit_code == 0, r.output
    assert "6 key frames" in r.output and "tiny.pt" in r.output
    summary = json.loads((ann / "prelabel.json").read_text())
    assert summary["model"]["sha256"] == hashlib.sha256(env["ckpt"].read_bytes()).hexdigest()
    assert summary["keyframes"] == 6 and len(list((ann / "labelme").glob("*_ceus.json"))) == 6
    coco = json.loads((ann / "coco" / "proposals.json").read_text())
    assert len(coco["images"]) == 6 and coco["ceuspipe"]["model"]["name"] == "tiny.pt"
    proposed = summary["proposed"]
    if proposed == 0:
        pytest.skip("the untrained model proposed nothing on these frames")
    out = tmp_path / "ds"
    r = run("build-dataset", env["kf"], ann / "labelme", out, "--frames-per-patient", "2", "--max-tries", "10")
    assert r.exit_code == 0, r.output
    assert f"machine proposals: {proposed}: {proposed} accepted unchanged, 0 edited, 0 redrawn" in r.output
    assert json.loads((out / "dataset.json").read_text())["annotations"]["proposals"]["accepted"] == proposed


def test_not_a_keyframe_folder_is_one_line_naming_the_manifest(env, tmp_path):
    (tmp_path / "notkf").mkdir()
    r = run("prelabel", tmp_path / "notkf", "--model", env["ckpt"], tmp_path / "ann")
    assert_one_line_error(r, str(tmp_path / "notkf" / "manifest.csv"), "key-frame manifest not found")
    assert not (tmp_path / "ann").exists()


def test_missing_checkpoint_is_one_line_naming_it(env, tmp_path):
    r = run("prelabel", env["kf"], "--model", tmp_path / "nope.pt", tmp_path / "ann")
    assert_one_line_error(r, str(tmp_path / "nope.pt"), "no such file")
    assert not (tmp_path / "ann").exists()


def test_a_checkpoint_that_is_not_a_model_is_one_line_naming_it(env, tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run("prelabel", env["kf"], "--model", bad, tmp_path / "ann", "--engine", "torch", "--device", "cpu")
    assert_one_line_error(r, str(bad))
    assert not (tmp_path / "ann").exists()


def test_non_empty_output_needs_overwrite(env, tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "keep.txt").write_text("x")
    r = run("prelabel", env["kf"], "--model", env["ckpt"], ann, "--engine", "torch", "--device", "cpu")
    assert_one_line_error(r, str(ann), "--overwrite")
    assert (ann / "keep.txt").read_text() == "x"
