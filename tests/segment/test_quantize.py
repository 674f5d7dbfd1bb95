"""Int8 export: calibration sources, the quantised graph, the agreement gate, ONNX files as models.

Mask agreement of a *trained* model is checked in test_segment_phantom.py; the
models here are randomly initialised, so only mechanics are tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from ceuspipe.errors import InputError
from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.segment.calibration import calibration_set, from_clips, from_dataset
from ceuspipe.segment.model_spec import load_spec
from ceuspipe.segment.engines import make_predictor
from ceuspipe.segment.engines.onnx_engine import OnnxPredictor
from ceuspipe.segment.quantize import agreement, export_int8, mask_dice
from ceuspipe.video.panels import PanelLayout
from support.toy_dataset import make_toy_dataset
from support.builders import phantom_clip, write_checkpoint


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    dataset = make_toy_dataset(root / "dataset", n_train=12, n_test=5)
    clip, truth = phantom_clip(root / "clips", duration_s=6.0, fps=5.0)
    ckpt = write_checkpoint(root / "tiny.pt")
    int8 = export_int8(ckpt, root / "tiny.int8.onnx", [dataset], frames=8, min_dice=0.0)
    return {"root": root, "dataset": dataset, "clip": clip, "truth": truth, "ckpt": ckpt, "int8": int8}


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


# --------------------------------------------------------------------------- calibration sources


def test_dataset_calibration_uses_train_split_and_holds_out_test(env):
    cal = from_dataset(env["dataset"], 64, frames=5)
    assert len(cal.calibrate) == 5 and len(cal.held_out) == 5
    assert all(c.startswith("p") for c in cal.calibrate.labels)  # toy train cases are p.., test q..
    assert all(c.startswith("q") for c in cal.held_out.labels)
    assert cal.calibrate.labels == sorted(set(cal.calibrate.labels))  # evenly spread, no repeats
    assert cal.calibrate.ceus.shape == (5, 64, 64) and cal.calibrate.us.dtype == np.float32
    assert 0.0 <= cal.calibrate.ceus.min() and cal.calibrate.ceus.max() <= 1.0
    assert calibration_set([env["dataset"]], 64, 5).calibrate.labels == cal.calibrate.labels


def test_clip_calibration_evenly_spread_and_alternating(env):
    lay = PanelLayout.from_dict(env["truth"]["layout"])
    from ceuspipe.video.layout import LayoutOptions

    cal = from_clips([env["clip"]], 32, frames=2, layout=LayoutOptions(ceus_box=lay.ceus, us_box=lay.us))
    # 6 s at 1 fps = 6 samples; 2 * 2 = 4 kept evenly (0, 2, 3, 5 s), alternately calibrating / held out
    times = [float(s.split("@")[1].rstrip("s")) for s in cal.calibrate.labels + cal.held_out.labels]
    assert len(cal.calibrate) == 2 and len(cal.held_out) == 2
    assert sorted(times) == [0.0, 2.0, 3.0, 5.0]
    assert cal.calibrate.ceus.shape == (2, 32, 32)
    # the CEUS crop is the CEUS panel: it differs from the US crop
    assert np.abs(cal.calibrate.ceus - cal.calibrate.us).mean() > 0.01


def test_calibration_needs_a_source():
    with pytest.raises(InputError, match="calibration"):
        calibration_set([], 64)


# --------------------------------------------------------------------------- the int8 model


def test_int8_graph_is_quantised_with_metadata(env, tmp_path):
    from ceuspipe.segment.export import export_checkpoint

    rep = env["int8"]
    ops = _ops(rep.path)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    fp32 = export_checkpoint(env["ckpt"], tmp_path / "fp32.onnx").path
    # int8 weights; at width 1/8 graph structure is a large part of the file (0.60x measured)
    assert rep.path.stat().st_size < 0.75 * fp32.stat().st_size
    meta = {p.key: p.value for p in onnx.load(str(rep.path)).metadata_props}
    q = json.loads(meta["ceuspipe_quantization"])
    assert q["precision"] == "int8" and q["method"] == "minmax" and q["calibration"]["frames"] == 8
    assert q["agreement_vs_fp32"]["frames"] == 5  # the toy test split
    assert json.loads(meta["ceuspipe_config"])["size"] == 64
    assert not [p for p in env["root"].iterdir() if p.name.startswith(".")]  # no temp files left


def test_int8_weights_fit_the_non_vnni_dot_product(env):
    """Every int8 weight lies in [-64, 64]: a pair of uint8 x int8 products then fits the
    saturating int16 of VPMADDUBSW (x86 without VNNI), so the file is exact on any x86 CPU."""
    from onnx import numpy_helper

    from ceuspipe.segment.quantize import WEIGHT_LIMIT

    weights = [numpy_helper.to_array(t) for t in onnx.load(str(env["int8"].path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims and np.prod(t.dims) > 1]
    assert len(weights) >= 10  # the convolutions' weights
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert WEIGHT_LIMIT == 64 and 32 < peak <= WEIGHT_LIMIT  # 7 bits used, not fewer
    assert 2 * 255 * WEIGHT_LIMIT <= np.iinfo(np.int16).max


def test_int8_predictions_close_to_fp32(env, tmp_path):
    from ceuspipe.segment.export import export_checkpoint

    fp32 = export_checkpoint(env["ckpt"], tmp_path / "fp32.onnx").path
    rng = np.random.default_rng(0)
    c = rng.random((6, 64, 64), dtype=np.float32) * 0.6
    u = rng.random((6, 64, 64), dtype=np.float32) * 0.6
    p32, p8 = OnnxPredictor(fp32, 64)(c, u), OnnxPredictor(env["int8"].path, 64, int8=True)(c, u)
    assert p8.shape == p32.shape == (6, 64, 64)
    assert not np.array_equal(p8, p32)  # it is a different, quantised graph ...
    assert np.corrcoef(p8.ravel(), p32.ravel())[0, 1] > 0.9  # ... computing nearly the same thing


def test_agreement_gate_refuses_and_writes_nothing(env, tmp_path):
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(InputError, match="mean Dice .* held-out frames"):
        export_int8(env["ckpt"], out, [env["dataset"]], frames=4, min_dice=1.01)
    assert list(tmp_path.iterdir()) == []


def test_mask_dice_and_agreement():
    a = np.zeros((3, 4, 4), np.float32)
    b = a.copy()
    a[0, :2], b[0, :1] = 1, 1        # 8 vs 4 pixels, 4 shared: Dice 2*4/12
    a[1, :], b[1, :] = 0.9, 0.2      # all vs nothing: Dice 0
    np.testing.assert_allclose(mask_dice(a, b, 0.5), [8 / 12, 0.0, 1.0])  # both empty -> 1
    ag = agreement(a, b, 0.5)
    assert ag.frames == 3 and ag.dice_min == 0.0 and abs(ag.dice_mean - (8 / 12 + 1) / 3) < 1e-9
    assert abs(ag.pixel_agreement - (1 - 20 / 48)) < 1e-9 and abs(ag.max_probability_difference - 1) < 1e-6


# --------------------------------------------------------------------------- ONNX files as models


def test_onnx_file_as_model(env, tmp_path):
    spec = load_spec(env["int8"].path)
    assert spec.model is None and spec.size == 64 and spec.threshold == 0.5
    assert spec.quantization["precision"] == "int8"
    pred = make_predictor(spec)
    assert pred.engine == "onnx-int8" and pred.device == "cpu"
    with pytest.raises(InputError, match="cannot run an ONNX model file"):
        make_predictor(spec, engine="torch")
    lay = PanelLayout.from_dict(env["truth"]["layout"])
    out = tmp_path / "out"
    rep = segment_video(env["clip"], env["int8"].path, out, SegmentConfig(ceus_box=lay.ceus, us_box=lay.us))
    assert rep.engine == "onnx-int8" and rep.frames == env["truth"]["n_frames"]
    doc = json.loads((out / "segment.json").read_text())
    assert doc["engine"] == "onnx-int8" and doc["model_quantization"]["method"] == "minmax"
    assert doc["model_config"]["size"] == 64


def test_bad_onnx_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="junk.onnx: not a loadable ONNX model"):
        load_spec(junk)
    # a valid ONNX model that is not a segmentation model
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(other))
    with pytest.raises(InputError, match="not a ceuspipe segmentation model"):
        load_spec(other)


def test_export_cli_int8(env, tmp_path):
    from ceuspipe.cli import main

    runner = CliRunner()
    out = tmp_path / "m.int8.onnx"
    res = runner.invoke(main, ["export", str(env["ckpt"]), str(out), "--int8",
                               "--calibration", str(env["dataset"]), "--calibration-frames", "6",
                               "--min-agreement", "0"])
    assert res.exit_code == 0, res.output
    assert "int8 (minmax, 6 calibration frames)" in res.output and "held-out frames: mask Dice mean" in res.output
    assert "QuantizeLinear" in _ops(out)
    fixed = tmp_path / "b3.int8.onnx"
    res = runner.invoke(main, ["export", str(env["ckpt"]), str(fixed), "--int8", "--batch", "3",
                               "--calibration", str(env["dataset"]), "--min-agreement", "0"])
    assert res.exit_code == 0, res.output
    pred = make_predictor(load_spec(fixed))
    assert pred.fixed_batch == 3 and pred(np.zeros((4, 64, 64), np.float32),
                                          np.zeros((4, 64, 64), np.float32)).shape == (4, 64, 64)
    res = runner.invoke(main, ["export", str(env["ckpt"]), str(tmp_path / "a.onnx"), "--int8"])
    assert res.exit_code == 2 and "--calibration" in res.output
    res = runner.invoke(main, ["export", str(env["ckpt"]), str(tmp_path / "b.onnx"),
                               "--calibration", str(env["dataset"])])
    assert res.exit_code == 2 and "--int8" in res.output
    res = runner.invoke(main, ["export", str(env["ckpt"]), str(tmp_path / "c.onnx"), "--int8",
                               "--calibration", str(env["dataset"]), "--min-agreement", "1"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "nothing written" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b3.int8.onnx", "m.int8.onnx"]
