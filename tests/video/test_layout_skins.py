"""Layout detection on every phantom screen skin, DICOM cines with and without
ultrasound regions, confidence and warnings, the preview and `ceuspipe layout`."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main as cli
from ceuspipe.errors import InputError
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import generate_exam
from ceuspipe.video.dicom import read_ultrasound_regions
from ceuspipe.video.layout import (LOW_CONFIDENCE, LayoutError, detect_layout, resolve_layout,
                                   swapped_panels_warning)
from ceuspipe.video.layout_preview import obscure_outside, render_preview
from ceuspipe.video.panels import Box, PanelLayout, load_layout, save_layout


def sample_clip(path, span_s=60.0):
    """The 1 fps samples (frames, times) of the first ``span_s`` seconds that detection sees."""
    from ceuspipe.video.clip_stream import read_layout_frames
    from ceuspipe.video.layout import LayoutOptions

    frames, times, _ = read_layout_frames(path, LayoutOptions(layout_window_s=span_s))
    return frames, times

SIZES = {"fullhd": (640, 360), "stacked": (320, 240), "logiq": (448, 250)}
TOL = 2  # px (issue 24: every skin within 2 px of the truth)


def make(tmp_path, skin="default", side="left", colormap="gray", container="mp4", regions=True,
         duration_s=30.0, fps=2.0, seed=3):
    width, height = SIZES.get(skin.split("+")[0], (320, 180))
    cfg = PhantomConfig(duration_s=duration_s, fps=fps, width=width, height=height, ceus_side=side,
                        colormap=colormap, skin=skin, container=container, dicom_regions=regions)
    clip = tmp_path / f"{skin}_{side}_{colormap}{cfg.clip_suffix}"
    truth = generate_exam(clip, None, cfg, seed=seed)
    return clip, truth


def assert_matches(found: PanelLayout, truth: dict, tol: int = TOL):
    want = PanelLayout.from_dict(truth["layout"])
    for name in ("ceus", "us"):
        got, exp = getattr(found, name), getattr(want, name)
        assert max(abs(getattr(got, k) - getattr(exp, k)) for k in "xywh") <= tol, (name, got, exp)
    assert found.ceus_side == want.ceus_side == truth["ceus_side"]
    # both panels of a dual display show one plane: one size wherever the truth has it
    if (want.ceus.w, want.ceus.h) == (want.us.w, want.us.h):
        assert (found.ceus.w, found.ceus.h) == (found.us.w, found.us.h), (found.ceus, found.us)


SKINS = [("default", "gray"), ("default", "gold"), ("sector", "gray"), ("touching", "gray"),
         ("separator", "gray"), ("dark-start", "gray"), ("fullhd", "gray"), ("marks", "gray"),
         ("frozen-bmode", "gray"), ("stacked", "gray"), ("sector+touching", "gray"),
         ("sector+touching", "gold"), ("separator+marks", "gold"), ("stacked+sector", "gray")]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("skin,colormap", SKINS)
def test_every_skin_on_both_sides(tmp_path, skin, colormap, side):
    clip, truth = make(tmp_path, skin, side, colormap)
    frames, times = sample_clip(clip)
    assert len(frames) == 30 and times[:3] == pytest.approx([0.0, 1.0, 2.0])
    layout = detect_layout(frames, times_s=times, source=clip)
    assert_matches(layout, truth)
    assert layout.origin == "detected"
    assert layout.confidence >= LOW_CONFIDENCE and layout.warning is None
    assert set(layout.cues) >= {"stability", "bolus", "darkness"}
    assert all(cue["vote"] > 0 for cue in layout.cues.values())


@pytest.mark.parametrize("skin,colormap,side,seed", [("logiq", "gray", "right", 0), ("logiq", "gray", "left", 1),
                                                     ("logiq+marks", "gold", "right", 1),
                                                     ("logiq+frozen-bmode", "gray", "left", 0)])
def test_logiq_dual_display(tmp_path, skin, colormap, side, seed):
    """The GE LOGIQ screen of issue 24: touching trapezoid panels, a CEUS panel dark but
    where contrast reaches, a grey bar, ticks, a label and a body mark on the panel edges.
    The CEUS box found from content alone is the enhanced territory; the pair gives it the
    B-mode panel's size and top, and says so when its position rests on the panels touching."""
    clip, truth = make(tmp_path, skin, side, colormap, duration_s=60, fps=2, seed=seed)
    frames, times = sample_clip(clip)
    layout = detect_layout(frames, times_s=times, source=clip)
    assert_matches(layout, truth)
    g = layout.geometry
    assert g["sizes_agree"] and g["size_difference_px"] == [0, 0] and g["placed_from_partner"] == "ceus"
    found = Box(*g["detected"]["ceus"])
    assert (found.w, found.h) != (layout.us.w, layout.us.h), "content alone gives the CEUS panel another size"
    if g["position_uncertainty_px"] > 4:
        assert layout.confidence < LOW_CONFIDENCE
        assert "mostly dark" in layout.warning and "flush against it" in layout.warning and "\n" not in layout.warning
    else:
        assert layout.confidence >= LOW_CONFIDENCE and layout.warning is None


@pytest.mark.parametrize("container", ["dicom-rgb", "dicom-jpeg"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_dicom_cines_with_and_without_regions(tmp_path, container, side):
    for regions in (True, False):
        clip, truth = make(tmp_path / str(regions), "frozen-bmode", side, container=container,
                           regions=regions, duration_s=20, fps=5)
        ds = pydicom.dcmread(clip, stop_before_pixels=True)
        assert ds.NumberOfFrames == 100 and ds.PhotometricInterpretation == \
            ("RGB" if container == "dicom-rgb" else "YBR_FULL_422")
        found = read_ultrasound_regions(clip)
        frames, times = sample_clip(clip)
        # the B-mode half repeats identically from frame to frame
        us = PanelLayout.from_dict(truth["layout"]).us
        assert np.array_equal(frames[3][us.y: us.y + us.h, us.x: us.x + us.w],
                              frames[9][us.y: us.y + us.h, us.x: us.x + us.w])
        layout = resolve_layout(frames, times_s=times, regions=found, source=clip)
        assert_matches(layout, truth, tol=0 if regions else TOL)
        if regions:
            assert len(found) == 2 and {r.box for r in found} == {layout.ceus, layout.us}
            assert layout.origin == "dicom-regions"
            assert layout.pixel_size_mm == pytest.approx(tuple(truth["container"]["pixel_size_mm"]))
        else:
            assert found == [] and layout.origin == "detected" and layout.pixel_size_mm is None
        # a few early frames are enough: the frozen panel is the most stable one
        early = resolve_layout(frames[:3], regions=found)
        assert early.ceus_side == truth["ceus_side"] and early.confidence >= LOW_CONFIDENCE


def test_regions_that_contradict_the_pixels_fall_back_to_detection(tmp_path, caplog):
    clip, truth = make(tmp_path, "default", "right", container="dicom-rgb", duration_s=10, fps=4)
    ds = pydicom.dcmread(clip)
    name = str(ds.PatientName)
    for item in ds.SequenceOfUltrasoundRegions:  # both regions moved into the black header band
        item.RegionLocationMinY0, item.RegionLocationMaxY1 = 0, 8
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    frames, times = sample_clip(bad)
    with caplog.at_level(logging.INFO, logger="ceuspipe"):
        layout = resolve_layout(frames, times_s=times, regions=read_ultrasound_regions(bad), source=bad)
    assert layout.origin == "detected"
    assert_matches(layout, truth)
    why = layout.cues["dicom_regions"]
    assert "region" in why and "mostly background" in why
    assert name.split("^")[0] not in why and name.split("^")[0] not in caplog.text
    assert str(ds.PatientID) not in caplog.text + why


def test_frozen_bmode_beats_darkness_at_peak(tmp_path):
    """The issue's silent failure: identical B-mode frames, CEUS brighter than B-mode."""
    clip, truth = make(tmp_path, "frozen-bmode", "right", container="dicom-rgb", duration_s=40, fps=2)
    frames, times = sample_clip(clip, span_s=40)
    ttp = int(truth["curves"]["lesion"]["ttp_s"])
    peak = frames[ttp - 2: ttp + 2]
    layout = detect_layout(peak)
    assert_matches(layout, truth)
    assert layout.cues["stability"]["us"] >= 0.99 and layout.confidence >= LOW_CONFIDENCE


def test_dark_start_needs_the_first_minute(tmp_path):
    clip, truth = make(tmp_path, "dark-start", "left", duration_s=40)
    frames, times = sample_clip(clip)
    assert truth["curves"]["lesion"]["t0"] > 4
    c = PanelLayout.from_dict(truth["layout"]).ceus
    first = frames[0][c.y: c.y + c.h, c.x: c.x + c.w]
    assert first.mean() < 2 and (first.max(axis=2) > 4).mean() < 0.05  # nearly black
    with pytest.raises(LayoutError, match="found 1 imaging panel"):
        detect_layout(frames[:3])
    assert_matches(detect_layout(frames, times_s=times), truth)


def test_low_confidence_warning_is_set_and_logged(tmp_path, caplog):
    clip, truth = make(tmp_path, "default", "left", duration_s=2, fps=2)
    frames, _ = sample_clip(clip)
    one = detect_layout(frames[:1])  # one grey frame before contrast: darkness alone
    assert_matches(one, truth, tol=2)
    assert one.confidence < LOW_CONFIDENCE and set(one.cues) == {"darkness"}
    assert "--ceus-side left|right" in one.warning and "--layout FILE" in one.warning
    assert "\n" not in one.warning
    with caplog.at_level(logging.WARNING, logger="ceuspipe"):
        resolve_layout(frames[:1], source="clip.mp4")
    assert any("low confidence" in r.getMessage() and "clip.mp4" in r.getMessage() for r in caplog.records)
    forced = resolve_layout(frames[:1], ceus_side="right")
    assert forced.ceus == one.us and forced.warning is None


def test_swapped_panels_warning():
    still = np.full(40, 0.05)
    moving = np.abs(np.random.default_rng(0).normal(4, 1, 40))
    msg = swapped_panels_warning(still, moving)
    assert msg is not None and "swapped" in msg and "--ceus-side" in msg and "\n" not in msg
    assert swapped_panels_warning(moving, still) is None
    assert swapped_panels_warning(moving, moving) is None
    assert swapped_panels_warning(still, still) is None
    assert swapped_panels_warning([], moving) is None
    assert swapped_panels_warning([0.0, np.nan, 0.1], [3.0, 3.0, np.nan]) is not None


def _high_freq(img: np.ndarray) -> float:
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 2.0)).mean())


def test_preview_hides_burned_in_text(tmp_path):
    clip, truth = make(tmp_path, "fullhd", "right", duration_s=8)
    frames, _ = sample_clip(clip)
    layout = PanelLayout.from_dict(truth["layout"])
    text_box = (slice(2, 40), slice(200, 600))  # header band, outside both panels
    for f in frames:
        f[text_box] = 0
        cv2.putText(f, "DOE^JANE 1234567", (210, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 1)
    before = _high_freq(frames[0][text_box])
    assert before > 5
    hidden = obscure_outside(frames[0], layout)
    assert _high_freq(hidden[text_box]) < 0.05 * before
    c = layout.ceus
    assert np.array_equal(hidden[c.y: c.y + c.h, c.x: c.x + c.w], frames[0][c.y: c.y + c.h, c.x: c.x + c.w])
    preview = render_preview(frames, detect_layout(frames))
    assert preview.shape[1] == 640 and preview.shape[0] > 360
    assert _high_freq(preview[:360][text_box]) < 0.05 * before


def test_layout_command_round_trip(tmp_path):
    clip, truth = make(tmp_path, "sector+touching", "right", duration_s=20)
    out, png = tmp_path / "scanner" / "layout.json", tmp_path / "preview.png"
    (tmp_path / "scanner").mkdir()
    res = CliRunner().invoke(cli, ["layout", str(clip), "-o", str(out), "--preview", str(png)])
    assert res.exit_code == 0, res.output
    assert "CEUS right" in res.output
    loaded = load_layout(out)
    assert_matches(loaded, truth)
    assert loaded.origin == "detected" and loaded.confidence >= LOW_CONFIDENCE and "stability" in loaded.cues
    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] == 320
    frames, times = sample_clip(clip, span_s=3)
    used = resolve_layout(frames, layout_file=out)
    assert used == loaded and used.origin == "layout-file"
    # a file without the optional fields (written before they existed) still loads
    data = json.loads(out.read_text())
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: data[k] for k in ("ceus", "us", "frame_width", "frame_height")}))
    assert load_layout(old) == loaded and load_layout(old).origin is None
    res = CliRunner().invoke(cli, ["layout", str(tmp_path / "missing.mp4"), "-o", str(out)])
    assert res.exit_code == 1 and "no such file" in res.output


def test_layout_json_fields_round_trip(tmp_path):
    lay = PanelLayout(Box(1, 2, 30, 40), Box(40, 2, 30, 40), 80, 50, origin="dicom-regions", confidence=0.42,
                      cues={"stability": {"ceus": 0.1, "us": 1.0, "vote": 1.0}}, warning="w",
                      pixel_size_mm=(0.2, 0.25))
    save_layout(lay, tmp_path / "l.json")
    back = load_layout(tmp_path / "l.json")
    assert back == lay and back.to_dict() == lay.to_dict()
    (tmp_path / "bad.json").write_text(json.dumps({**lay.to_dict(), "origin": "guess"}))
    with pytest.raises(InputError, match="not a valid layout file"):
        load_layout(tmp_path / "bad.json")
