"""The layout decision as the stages see it: key frames and segment-video on the hard
phantom screens, through the real stream helper (buffered 1 fps samples, or a separate
1 fps pass), with the decision, confidence and warnings recorded in the outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.synth import PhantomConfig, generate_exam
from ceuspipe.synth.truth import load_truth, truth_layout
from support.builders import write_checkpoint


def _exam(root: Path, name: str, **kw) -> tuple[Path, dict]:
    ext = ".dcm" if kw.get("container", "mp4") != "mp4" else ".mp4"
    clip = root / name / f"exam1{ext}"
    truth_dir = root / f"{name}.truth"
    config = PhantomConfig(**{"duration_s": 30.0, "fps": 6.0, "width": 320, "height": 180, **kw})
    generate_exam(clip, truth_dir, config, seed=3, patient=name)
    return clip, load_truth(truth_dir)


def _keyframes(clip: Path, out: Path, *extra: str) -> dict:
    res = CliRunner().invoke(main, ["keyframes", str(clip), str(out), "-k", "5", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(next(out.glob("*/*/keyframes.json")).read_text())


def _near(box: dict, truth_box, tol: int = 3) -> bool:
    return all(abs(box[k] - getattr(truth_box, k)) <= tol for k in "xywh")


def test_dark_start_is_decided_from_later_samples(tmp_path):
    clip, truth = _exam(tmp_path, "dark", skin="dark-start")
    meta = _keyframes(clip, tmp_path / "kf")
    expected = truth_layout(truth)
    assert _near(meta["layout"]["ceus"], expected.ceus) and _near(meta["layout"]["us"], expected.us)
    assert meta["layout_decision"]["frames_seen"] > 8, "the first 8 (dark) samples were not enough"
    assert meta["warnings"] == []


@pytest.mark.parametrize("container", ["dicom-rgb", "dicom-jpeg"])
def test_frozen_bmode_dicom_gives_real_scores(tmp_path, container):
    clip, truth = _exam(tmp_path, "frozen", skin="frozen-bmode", container=container, fps=4.0)
    meta = _keyframes(clip, tmp_path / "kf")
    assert _near(meta["layout"]["ceus"], truth_layout(truth).ceus)
    assert meta["layout"]["origin"] == "dicom-regions"
    assert meta["layout"]["pixel_size_mm"] is not None
    assert max(f["score"] for f in meta["frames"]) > 1.0, "key-frame scores must not all be 0"


def test_forced_wrong_side_warns_that_panels_look_swapped(tmp_path):
    clip, _ = _exam(tmp_path, "swap", skin="frozen-bmode")
    meta = _keyframes(clip, tmp_path / "kf", "--ceus-side", "right")
    assert any("look swapped" in w for w in meta["warnings"]), meta["warnings"]


def test_both_stages_measure_panel_change_the_same_way(tmp_path):
    """Key frames (1 fps full-resolution crops) and segment-video (every frame at model input
    size) feed the swapped-panel check the same measurement: on one clip their median
    changes agree, and both warn when the wrong side is forced."""
    import re

    clip, _ = _exam(tmp_path, "swap", skin="frozen-bmode")
    kf = _keyframes(clip, tmp_path / "kf", "--ceus-side", "right")
    ckpt = write_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "seg"
    res = CliRunner().invoke(main, ["segment-video", str(clip), "--model", str(ckpt), "--ceus-side", "right",
                                    "--engine", "torch", "--no-reference", "-o", str(out)])
    assert res.exit_code == 0, res.output
    seg = json.loads((out / "segment.json").read_text())
    medians = {}
    for name, warnings in (("keyframes", kf["warnings"]), ("segment", seg["warnings"])):
        line = next((w for w in warnings if "look swapped" in w), None)
        assert line is not None, (name, warnings)
        found = re.search(r"median change ([0-9.]+) grey levels\) while the B-mode panel does \(([0-9.]+)\)", line)
        medians[name] = (float(found[1]), float(found[2]))
    (kc, ku), (sc, su) = medians["keyframes"], medians["segment"]
    assert abs(ku - su) <= 0.25 * max(ku, su), medians  # the moving panel's change, measured twice
    assert abs(kc - sc) <= 0.25, medians                # the still panel's: both near zero


def test_layout_file_from_ceuspipe_layout_gives_the_same_key_frames(tmp_path):
    clip, _ = _exam(tmp_path, "sector", skin="sector+touching")
    layout_json = tmp_path / "scanner.json"
    res = CliRunner().invoke(main, ["layout", str(clip), "-o", str(layout_json), "--preview",
                                    str(tmp_path / "preview.png")])
    assert res.exit_code == 0, res.output
    detected = _keyframes(clip, tmp_path / "kf_detect")
    given = _keyframes(clip, tmp_path / "kf_given", "--layout", str(layout_json))
    assert given["layout"]["ceus"] == detected["layout"]["ceus"]
    assert [f["sample_index"] for f in given["frames"]] == [f["sample_index"] for f in detected["frames"]]
    assert [f["score"] for f in given["frames"]] == [f["score"] for f in detected["frames"]]


def test_segment_video_records_the_layout_decision_of_its_separate_pass(tmp_path):
    clip, truth = _exam(tmp_path, "seg", skin="dark-start", duration_s=24.0)
    ckpt = write_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "seg_out"
    res = CliRunner().invoke(main, ["segment-video", str(clip), "--model", str(ckpt), "-o", str(out),
                                    "--engine", "torch", "--sample-fps", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "segment.json").read_text())
    assert summary["layout_decision"]["prepass"] is True
    assert _near(summary["layout"]["ceus"], truth_layout(truth).ceus)
    assert summary["layout"]["confidence"] is not None and "warnings" in summary


def test_batch_run_keeps_layout_warnings_in_the_ledger_and_status(tmp_path):
    import os
    import time as _time

    from ceuspipe.batch.pipeline_file import load_pipeline
    from ceuspipe.batch.runner import run_pipeline
    from ceuspipe.batch.status import format_status, read_status
    from support.batch_stages import write_pipeline

    clip, _ = _exam(tmp_path / "inbox", "P001", skin="frozen-bmode")
    old = _time.time() - 3600
    os.utime(clip, (old, old))
    pipe = write_pipeline(tmp_path / "p.toml", tmp_path / "inbox", tmp_path / "out",
                          {"keyframes": {"k": 3, "ceus_side": "right"}}, settle_seconds=0, recheck_seconds=0)
    report = run_pipeline(load_pipeline(pipe))
    assert len(report.done) == 1, report.failed
    lines = format_status(read_status(tmp_path / "out"))
    assert any(line.startswith("WARNING") and "look swapped" in line and "exam1.mp4" in line for line in lines)


def _twin_panels_clip(root: Path, copy: str) -> tuple[Path, dict]:
    """A genuinely ambiguous screen: the phantom with one panel's pixels copied into the
    other every frame (``copy="us"``: two B-mode panels; ``"ceus"``: two CEUS panels),
    so no cue can tell them apart."""
    from ceuspipe.synth.generate import exam_truth, render_exam
    from ceuspipe.video.writer import VideoWriter

    truth = exam_truth(PhantomConfig(duration_s=30.0, fps=2.0, width=320, height=180), 3, patient="twin")
    lay = truth_layout(truth)
    src, dst = (lay.us, lay.ceus) if copy == "us" else (lay.ceus, lay.us)
    clip = root / f"twin_{copy}" / "exam1.mp4"
    clip.parent.mkdir(parents=True)
    with VideoWriter(clip, truth["frame_width"], truth["frame_height"], fps=2.0, codec="libx264",
                     pix_fmt="yuv420p") as w:
        for _, t, frame, _, _ in render_exam(truth):
            frame[dst.y: dst.y + dst.h, dst.x: dst.x + dst.w] = frame[src.y: src.y + src.h, src.x: src.x + src.w]
            w.write(frame, t)
    return clip, truth


@pytest.mark.parametrize("copy", ["us", "ceus"])
def test_ambiguous_twin_panels_are_reported_unsure_once(tmp_path, copy):
    """Two identical panels: the boxes are still found, but which one is CEUS cannot be
    known. Detection reads every sample of the window (never sure), the confidence is
    far below 0.5, keyframes.json carries the warning naming --ceus-side, and the log
    says it in one line (not once per attempt)."""
    clip, truth = _twin_panels_clip(tmp_path, copy)
    res = CliRunner().invoke(main, ["keyframes", str(clip), str(tmp_path / "kf"), "-k", "5"])
    assert res.exit_code == 0, res.output
    meta = json.loads(next((tmp_path / "kf").glob("*/*/keyframes.json")).read_text())
    lay = truth_layout(truth)
    boxes = sorted([(meta["layout"]["ceus"]["x"], meta["layout"]["ceus"]["w"]),
                    (meta["layout"]["us"]["x"], meta["layout"]["us"]["w"])])
    assert all(abs(a[0] - b[0]) <= 3 and abs(a[1] - b[1]) <= 3
               for a, b in zip(boxes, sorted([(lay.ceus.x, lay.ceus.w), (lay.us.x, lay.us.w)])))
    assert meta["layout"]["confidence"] < 0.2
    assert meta["layout_decision"]["frames_seen"] == 30 and meta["layout_decision"]["attempts"] >= 3
    unsure = [w for w in meta["warnings"] if "low confidence" in w]
    assert len(unsure) == 1 and "--ceus-side" in unsure[0]
    logged = [ln for ln in res.output.splitlines() if "low confidence" in ln]
    assert len(logged) == 1, res.output


def test_logiq_screen_through_key_frames_and_a_layout_file(tmp_path):
    """A GE-like dual display whose CEUS box rests on the panels touching: key frames
    record the warning (not silent), and a layout file checked once removes it."""
    clip, truth = _exam(tmp_path, "logiq", skin="logiq", width=448, height=250, duration_s=60.0, fps=2.0,
                        ceus_side="left")
    meta = _keyframes(clip, tmp_path / "kf")
    expected = truth_layout(truth)
    assert _near(meta["layout"]["ceus"], expected.ceus, 2) and _near(meta["layout"]["us"], expected.us, 2)
    assert meta["layout"]["geometry"]["placed_from_partner"] == "ceus"
    assert any("mostly dark" in w for w in meta["warnings"]), meta["warnings"]
    layout_json = tmp_path / "logiq.json"
    res = CliRunner().invoke(main, ["layout", str(clip), "-o", str(layout_json)])
    assert res.exit_code == 0 and "placed from its partner" in res.output, res.output
    given = _keyframes(clip, tmp_path / "kf_given", "--layout", str(layout_json))
    assert given["layout"]["ceus"] == meta["layout"]["ceus"] and given["warnings"] == []


@pytest.mark.parametrize("side", ["top", "bottom"])
def test_ceus_side_top_or_bottom_forces_stacked_panels_in_every_command(tmp_path, side):
    """--ceus-side top|bottom (accepted by the layout, refused by the shared CLI options
    before) reaches key frames and segment-video on the stacked phantom."""
    clip, truth = _exam(tmp_path, "stacked", skin="stacked", width=320, height=240, duration_s=12.0,
                        ceus_side="left")  # CEUS on top
    expected = truth_layout(truth)
    want = expected.ceus if side == "top" else expected.us
    meta = _keyframes(clip, tmp_path / "kf", "--ceus-side", side)
    assert _near(meta["layout"]["ceus"], want, 2)
    assert meta["layout"]["cues"]["ceus_side"] == f"given ({side})"
    ckpt = write_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "seg"
    res = CliRunner().invoke(main, ["segment-video", str(clip), "--model", str(ckpt), "-o", str(out),
                                    "--engine", "torch", "--ceus-side", side])
    assert res.exit_code == 0, res.output
    assert _near(json.loads((out / "segment.json").read_text())["layout"]["ceus"], want, 2)
