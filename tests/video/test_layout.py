"""Panel layout detection and explicit layout overrides."""

from __future__ import annotations

import av
import numpy as np
import pytest

from ceuspipe.errors import InputError
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import generate_exam
from ceuspipe.video.layout import LayoutError, detect_layout, resolve_layout
from ceuspipe.video.panels import Box, PanelLayout, save_layout


def decoded_frames(path, n=8, step=1):
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


def assert_close(found: PanelLayout, truth: dict, tol: int = 2):
    for name in ("ceus", "us"):
        got = getattr(found, name)
        want = truth["layout"][name]
        for k in "xywh":
            assert abs(getattr(got, k) - want[k]) <= tol, (name, got, want)
    assert (found.frame_width, found.frame_height) == (truth["frame_width"], truth["frame_height"])


@pytest.mark.parametrize("side,colormap,size", [
    ("left", "gray", (320, 180)),
    ("right", "gray", (320, 180)),
    ("right", "gold", (320, 180)),
    ("left", "gray", (400, 300)),
])
def test_detects_phantom_layout_before_contrast(tmp_path, side, colormap, size):
    cfg = PhantomConfig(duration_s=2, fps=4, width=size[0], height=size[1], ceus_side=side, colormap=colormap)
    truth = generate_exam(tmp_path / "x.mp4", None, cfg, seed=21)
    assert truth["curves"]["lesion"]["t0"] > 2  # all frames are before contrast arrives
    frames = decoded_frames(tmp_path / "x.mp4")
    layout = detect_layout(frames, source="x.mp4")
    assert_close(layout, truth)
    assert layout.ceus_side == side
    # one frame is enough too (CEUS told by darkness or colour)
    assert_close(detect_layout(frames[:1]), truth)
    assert detect_layout(frames[:1]).ceus_side == side


def test_detects_during_peak_contrast_by_temporal_behaviour(tmp_path):
    cfg = PhantomConfig(duration_s=40, fps=1, ceus_side="right", width=320, height=180)
    truth = generate_exam(tmp_path / "x.mp4", None, cfg, seed=4)
    ttp = truth["curves"]["lesion"]["ttp_s"]
    frames = decoded_frames(tmp_path / "x.mp4", n=40)
    around_peak = frames[int(ttp) - 2: int(ttp) + 2]
    layout = detect_layout(around_peak)
    assert_close(layout, truth)
    assert layout.ceus_side == "right"


def _texture(rng, h, w, level):
    return np.clip(rng.normal(level, 25, (h, w)), 0, 255).astype(np.uint8)


def test_detects_arbitrary_positions_and_sizes():
    rng = np.random.default_rng(0)
    frame = np.zeros((600, 1000, 3), np.uint8)
    frame[5:25, 10:300] = 200  # header text band (thin)
    frame[90:510, 40:470] = _texture(rng, 420, 430, 12)[..., None]  # dark CEUS-like
    frame[100:500, 540:940] = _texture(rng, 400, 400, 120)[..., None]  # bright B-mode-like
    frame[90:510, 480] = 180  # ruler line 10 px right of the first panel
    layout = detect_layout([frame])
    assert layout.ceus == Box(40, 90, 430, 420)
    assert layout.us == Box(540, 100, 400, 400)


def test_single_panel_and_blank_frames_are_errors():
    rng = np.random.default_rng(1)
    frame = np.zeros((180, 320, 3), np.uint8)
    frame[20:160, 90:230] = _texture(rng, 140, 140, 100)[..., None]
    with pytest.raises(InputError, match=r"clip\.mp4: found 1 imaging panel, expected 2 .*--layout"):
        detect_layout([frame], source="clip.mp4")
    with pytest.raises(LayoutError, match="found 0 imaging panels"):
        detect_layout([np.zeros((180, 320, 3), np.uint8)])
    with pytest.raises(LayoutError, match="no frames"):
        detect_layout([])
    with pytest.raises(LayoutError, match="uint8"):
        detect_layout([np.zeros((180, 320, 3), np.float32)])


def test_resolve_overrides(tmp_path):
    cfg = PhantomConfig(duration_s=1, fps=4, width=320, height=180, ceus_side="left")
    truth = generate_exam(tmp_path / "x.mp4", None, cfg, seed=2)
    frames = decoded_frames(tmp_path / "x.mp4", n=4)
    want = PanelLayout.from_dict(truth["layout"])
    assert resolve_layout(frames) == want
    # forcing the side swaps the detected boxes
    forced = resolve_layout(frames, ceus_side="right")
    assert forced.ceus == want.us and forced.us == want.ceus
    # explicit boxes (tuples) win over detection
    boxes = resolve_layout(frames, ceus_box=(0, 0, 50, 50), us_box=(100, 0, 50, 50))
    assert boxes.ceus == Box(0, 0, 50, 50) and boxes.us == Box(100, 0, 50, 50)
    # a layout file
    path = tmp_path / "layout.json"
    save_layout(want, path)
    assert resolve_layout(frames, layout_file=path) == want
    with pytest.raises(InputError, match="does not fit"):
        resolve_layout(frames, ceus_box=(0, 0, 50, 50), us_box=(300, 0, 50, 50))
    with pytest.raises(InputError, match="overlap"):
        resolve_layout(frames, ceus_box=(0, 0, 50, 50), us_box=(20, 20, 50, 50))
    with pytest.raises(InputError, match="both"):
        resolve_layout(frames, ceus_box=(0, 0, 50, 50))
    with pytest.raises(InputError, match="x,y,w,h"):
        resolve_layout(frames, ceus_box=(0, 0, 50), us_box=(100, 0, 50, 50))
    other = PanelLayout(want.ceus, want.us, 640, 360)
    save_layout(other, tmp_path / "other.json")
    with pytest.raises(InputError, match=r"other\.json: layout is for 640x360"):
        resolve_layout(frames, layout_file=tmp_path / "other.json")
    with pytest.raises(InputError, match="not found"):
        resolve_layout(frames, layout_file=tmp_path / "missing.json")
