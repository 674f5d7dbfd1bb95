"""Inference engines by name with their capabilities: a toy engine registered from outside
the package runs segment-video from the CLI, one from an entry point is found, requests no
engine can serve are one line naming the option, auto skips an engine that is missing."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.configs import ConfigError
from ceuspipe.preprocess import to_gray
from ceuspipe.segment import SegmentConfig
from ceuspipe.segment.engines import (ENGINES, Engine, EngineMismatch, check_request, choose_engine,
                                      engine_names, register_engine)
from ceuspipe.segment.predictor import prepare_panel, probability_to_mask
from ceuspipe.video.reader import iter_frames
from ceuspipe.video.panels import PanelLayout, crop
from support.builders import installed_entry_point, phantom_clip, write_checkpoint


BRIGHT = 24 / 255


class BrightPixels:
    """A toy predictor: lesion probability 1 where the CEUS input is brighter than grey 24
    (speckle peaks before the bolus arrives)."""

    engine, device = "toy-bright", "cpu"

    def __init__(self, size: int):
        self.size = size

    def __call__(self, ceus: np.ndarray, us: np.ndarray) -> np.ndarray:
        return (ceus > BRIGHT).astype(np.float32)

    def inference_record(self) -> dict:
        return {"runs_per_batch": 1}


TOY = Engine("toy-bright", lambda spec, device, options: BrightPixels(spec.size), devices=("cpu",),
             precisions=("fp32",), model_files=("checkpoint",))


@pytest.fixture()
def toy_engine():
    register_engine(TOY, replace=True)
    yield TOY.name
    ENGINES.unregister(TOY.name)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    clip, truth = phantom_clip(root, duration_s=2.0, fps=6.0)
    return {"root": root, "clip": clip, "truth": truth, "ckpt": write_checkpoint(root / "tiny.pt"),
            "layout": PanelLayout.from_dict(truth["layout"])}


def _box(b) -> str:
    return ",".join(str(v) for v in b.as_list())


def test_a_toy_engine_registered_outside_the_package_runs_segment_video_from_the_cli(env, tmp_path, toy_engine):
    lay, out = env["layout"], tmp_path / "out"
    res = CliRunner().invoke(main, ["segment-video", str(env["clip"]), "--model", str(env["ckpt"]),
                                    "--engine", toy_engine, "--ceus-box", _box(lay.ceus), "--us-box", _box(lay.us),
                                    "--no-reference", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "segment.json").read_text())
    assert doc["engine"] == toy_engine and doc["precision"]["used"] == "fp32"
    assert toy_engine in doc["precision"]["reason"]
    masks = [f.image for f in iter_frames(out / "mask.mkv")]
    frames = [f.image for f in iter_frames(env["clip"])]
    assert len(masks) == len(frames) == env["truth"]["n_frames"]
    size = doc["model_config"]["size"]
    lit = 0
    for frame, mask in zip(frames, masks):
        ceus = prepare_panel(to_gray(crop(frame, lay.ceus)), size)
        want = probability_to_mask((ceus > BRIGHT).astype(np.float32), lay.ceus.h, lay.ceus.w, 0.5)
        got = (mask[..., 0] if mask.ndim == 3 else mask) > 127
        assert np.array_equal(got, want.astype(bool))
        lit += int(want.sum())
    assert lit > 0  # the toy found bright pixels: the comparison was not between two empty masks


def test_what_an_engine_cannot_do_is_one_line_naming_the_option(env, tmp_path, toy_engine):
    cases = [(("onnx", "cuda"), "engine", "onnx runs on cpu only"),
             (("torch", "cpu", "int8"), "precision", "int8 runs with engine onnx on cpu only"),
             ((toy_engine, "cpu", "int8"), "precision", f"not engine {toy_engine}"),
             (("auto", "cuda", "int8"), "precision", "int8 runs with engine onnx"),
             (("torch", "auto", "auto", "onnx"), "engine", "cannot run an ONNX model file"),
             (("auto", "cuda", "auto", "onnx"), "device", "runs on cpu only"),
             (("nope",), "engine", "known: auto")]
    for args, field, text in cases:
        with pytest.raises(EngineMismatch) as err:
            check_request(*args)
        assert err.value.field == field and text in str(err.value), (args, str(err.value))
    for ok in (("auto", "cuda"), ("torch", "cuda"), ("onnx", "cpu", "int8"), ("auto", "auto", "int8"),
               (toy_engine, "auto", "fp32")):
        check_request(*ok)
    with pytest.raises(ConfigError, match="precision"):
        SegmentConfig(engine=toy_engine, precision="int8")
    res = CliRunner().invoke(main, ["segment-video", str(env["clip"]), "--model", str(env["ckpt"]),
                                    "--engine", "nope", "-o", str(tmp_path / "o")])
    assert res.exit_code != 0 and not (tmp_path / "o").exists()
    line = res.output.strip().splitlines()[-1]
    assert "nope" in line and "torch" in line and toy_engine in line


def test_engines_from_entry_points_are_found(monkeypatch):
    with installed_entry_point(monkeypatch, ENGINES, "ep-bright", TOY):
        assert "ep-bright" in engine_names()
        assert ENGINES.get("ep-bright").name == "ep-bright" and ENGINES.get("ep-bright").devices == ("cpu",)
    assert "ep-bright" not in engine_names()


def test_auto_skips_a_missing_engine_with_a_warning_and_named_missing_is_an_error(caplog):
    missing = Engine("needs-nothing-here", TOY.build, devices=("cpu",), auto_for=("cpu",), auto_rank=-5,
                     requires=("ceuspipe_no_such_module",))
    register_engine(missing, replace=True)
    try:
        with caplog.at_level(logging.WARNING, logger="ceuspipe"):
            engine, device = choose_engine("auto", "cpu")
        assert engine.name == "onnx" and device == "cpu"
        assert any("needs-nothing-here" in r.getMessage() for r in caplog.records)
        from ceuspipe.errors import InputError

        with pytest.raises(InputError, match="ceuspipe_no_such_module"):
            choose_engine("needs-nothing-here", "cpu")
    finally:
        ENGINES.unregister(missing.name)


def test_segment_video_takes_a_predictor_without_a_checkpoint(env, tmp_path):
    from ceuspipe.segment import segment_video

    lay, out = env["layout"], tmp_path / "given"
    rep = segment_video(env["clip"], None, out, SegmentConfig(ceus_box=lay.ceus, us_box=lay.us, reference=False),
                        predictor=BrightPixels(48))
    doc = json.loads((out / "segment.json").read_text())
    assert rep.engine == "toy-bright" and rep.frames == env["truth"]["n_frames"]
    assert doc["model_checkpoint"] is None and doc["model_sha256"] is None and doc["checkpoint"] is None
    assert doc["precision"]["used"] == "as given" and doc["threshold"] == 0.5
    first = next(iter(iter_frames(out / "mask.mkv"))).image
    frame = next(iter(iter_frames(env["clip"]))).image
    want = probability_to_mask(BrightPixels(48)(prepare_panel(to_gray(crop(frame, lay.ceus)), 48)[None], None)[0],
                               lay.ceus.h, lay.ceus.w, 0.5)
    assert np.array_equal((first[..., 0] if first.ndim == 3 else first) > 127, want.astype(bool))
