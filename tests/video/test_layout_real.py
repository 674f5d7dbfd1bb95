"""Panel layouts of real scanner files (pydicom-data): the ALOKA dual display with its
Sequence of Ultrasound Regions and by detection alone, and single-panel screens, which
get the one-line error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from support.real_dicom import real_dicom, us_copy
from ceuspipe.cli import main as cli
from ceuspipe.video.clip_stream import read_layout_frames
from ceuspipe.video.dicom import read_ultrasound_regions
from ceuspipe.video.layout import LayoutError, LayoutOptions, resolve_layout


def _aloka_regions():
    regions = read_ultrasound_regions(real_dicom("gdcm-US-ALOKA-16"))
    return [r.box for r in regions if r.spatial_format == 1]


@pytest.mark.parametrize("name", ["gdcm-US-ALOKA-16", "gdcm-US-ALOKA-16_big"])
def test_aloka_dual_display_from_its_regions(name):
    path = real_dicom(name)
    frames, times, regions = read_layout_frames(path, LayoutOptions())
    layout = resolve_layout(frames, times_s=times, regions=regions, source=path)
    assert layout.origin == "dicom-regions"
    assert {layout.ceus, layout.us} == set(_aloka_regions())
    assert layout.geometry["sizes_agree"] and layout.pixel_size_mm == pytest.approx((0.38265, 0.38265), rel=1e-3)


def test_aloka_dual_display_by_detection_alone(tmp_path):
    """The same screen with its regions taken out of the header: two touching B-mode
    panels (no dark column between them) in one frame, found within 2 px of the regions."""
    path = us_copy(real_dicom("gdcm-US-ALOKA-16"), tmp_path / "aloka.dcm", SequenceOfUltrasoundRegions=None)
    frames, times, regions = read_layout_frames(path, LayoutOptions())
    assert regions == []
    layout = resolve_layout(frames, times_s=times, regions=regions, source=path)
    assert layout.origin == "detected"
    want = sorted(_aloka_regions(), key=lambda b: b.x)
    got = sorted([layout.ceus, layout.us], key=lambda b: b.x)
    for g, w in zip(got, want):
        assert max(abs(getattr(g, k) - getattr(w, k)) for k in "xywh") <= 2, (got, want)
    assert layout.geometry["sizes_agree"] and layout.geometry["size_difference_px"] == [0, 0]
    assert layout.geometry["split"] == "seam"
    # two B-mode panels and one frame: which one is CEUS cannot be told, and it says so
    assert layout.confidence < 0.5 and "low confidence" in layout.warning


@pytest.mark.parametrize("name", ["OBXXXX1A", "JPGLosslessP14SV1_1s_1f_8b", "color3d_jpeg_baseline"])
def test_single_panel_screens_are_one_line_errors(name):
    path = real_dicom(name)
    frames, times, regions = read_layout_frames(path, LayoutOptions())
    with pytest.raises(LayoutError, match="found 1 imaging panel"):
        resolve_layout(frames, times_s=times, regions=regions, source=path)
    res = CliRunner().invoke(cli, ["layout", str(path)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("ceuspipe: error:")]
    assert len(lines) == 1 and str(path) in lines[0] and "found 1 imaging panel" in lines[0]
    assert "expected 2 (CEUS and B-mode)" in lines[0] and "--layout FILE" in lines[0]


def test_layout_command_without_output_prints_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["layout", str(real_dicom("gdcm-US-ALOKA-16"))])
    assert res.exit_code == 0, res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("CEUS ")][0]
    assert "[336, 24, 304, 392]" in line and "[32, 24, 304, 392]" in line
    assert "confidence" in line and "sizes CEUS 304x392, US 304x392: agree" in line and "wrote" not in line
    assert list(tmp_path.iterdir()) == []
