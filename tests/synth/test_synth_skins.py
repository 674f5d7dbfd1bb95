"""Screen skins are plug-ins: a skin registered from outside the package (in code or by
an entry point) is usable from ``ceuspipe synth``, and unknown names are one-line errors."""

from __future__ import annotations

import importlib.metadata

import av
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import exam_truth
from ceuspipe.synth.skins import ENTRY_POINT_GROUP, SKINS, GenericScreen, ScreenGeometry, Skin
from ceuspipe.synth.truth import load_truth, truth_layout
from ceuspipe.video.panels import Box, PanelLayout

MAGENTA = (255, 0, 255)
LEFT, RIGHT = Box(40, 60, 64, 64), Box(200, 60, 64, 64)


class ToyScreen(GenericScreen):
    """Two 64 px panels at fixed places and a magenta square top left; the rest of the
    original screen (timer, lesion, no decorations) as it is."""

    def geometry(self, width, height, ceus_side, panel_size, depth_cm, skin):
        ceus, us = (LEFT, RIGHT) if ceus_side == "left" else (RIGHT, LEFT)
        return ScreenGeometry(PanelLayout(ceus, us, width, height), 64, 5, 3,
                              14.0 if depth_cm is None else depth_cm, skin)

    def render_static(self, geom, header_lines, footer, seed):
        img = np.zeros((geom.height, geom.width, 3), np.uint8)
        img[4:24, 4:24] = MAGENTA
        return img


@pytest.fixture
def toy():
    SKINS.register("toy", Skin(screen=ToyScreen()))
    yield "toy"
    SKINS.unregister("toy")


def synth(out, *args):
    return CliRunner().invoke(main, ["synth", str(out), "--patients", "1", "--width", "320", "--height", "180",
                                     "--duration-s", "1", "--fps", "2", *args])


def test_a_skin_registered_after_import_draws_the_clip(tmp_path, toy):
    assert toy in CliRunner().invoke(main, ["synth", "--help"]).output
    res = synth(tmp_path / "o", "--skin", "toy", "--ceus-side", "right")
    assert res.exit_code == 0, res.output
    truth = load_truth(tmp_path / "o" / "P001" / "exam1.truth")
    assert truth["skin"]["name"] == "toy" and truth["skin"]["scanner"] == "toy"
    assert truth_layout(truth) == PanelLayout(RIGHT, LEFT, 320, 180)
    with av.open(str(tmp_path / "o" / "P001" / "exam1.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 2
    for f in frames:
        square = f[8:20, 8:20].reshape(-1, 3).astype(int)
        assert (square[:, 0] > 200).all() and (square[:, 1] < 60).all() and (square[:, 2] > 200).all()
        assert f[LEFT.y: LEFT.y + LEFT.h, LEFT.x: LEFT.x + LEFT.w].mean() > 10  # the B-mode image
        assert f[LEFT.y + LEFT.h + 4:].max() < 30  # none of the original screen's grey bar and footer


def test_skins_from_entry_points_and_combined(monkeypatch, toy):
    class EntryPoint:
        name = "ep-toy"

        @staticmethod
        def load():
            return Skin({"marks": True}, ToyScreen())

    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [EntryPoint()] if group == ENTRY_POINT_GROUP else [])
    SKINS.reload_entry_points()
    try:
        truth = exam_truth(PhantomConfig(duration_s=1, fps=2, width=320, height=180, skin="ep-toy+frozen-bmode"), 3)
        assert truth["skin"]["scanner"] == "ep-toy" and truth["skin"]["marks"] and truth["skin"]["frozen_bmode"]
        assert truth_layout(truth).ceus == LEFT
    finally:
        SKINS.unregister("ep-toy")
        SKINS.reload_entry_points()
    with pytest.raises(ValueError, match="unknown features colour"):
        SKINS.register("bad", Skin({"colour": "red"}))
    with pytest.raises(TypeError, match="must be a Skin"):
        SKINS.register("bad", {"probe": "sector"})
    assert "bad" not in SKINS


def test_unknown_skin_is_a_one_line_error_naming_the_known_ones(tmp_path, toy):
    res = synth(tmp_path / "o", "--skin", "sector+nope")
    assert res.exit_code == 2
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: skin: unknown screen skin 'nope'")
    assert all(name in line for name in ("default", "logiq", "sector", "toy"))
    assert not (tmp_path / "o" / "P001").exists()
