"""ONNX export: numerics against PyTorch, dynamic/fixed batch, metadata, cache, CLI, auto engine."""

from __future__ import annotations

import json
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from ceuspipe.segment.export import export_checkpoint
from ceuspipe.segment.onnx_export import cached_onnx, feed_for
from ceuspipe.segment.model_spec import load_spec
from ceuspipe.segment.engines import make_predictor
from ceuspipe.segment.engines.onnx_engine import OnnxPredictor
from ceuspipe.segment.engines.torch_engine import TorchPredictor
from ceuspipe.segment.predictor import prepare_panel, probability_to_mask, submit
from support.builders import write_checkpoint


def _checkpoint(path, *, seed=0, size=64, variant="full"):
    return write_checkpoint(path, seed=seed, size=size, variant=variant)


def _inputs(n, size, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 1, size, size), dtype=np.float32), rng.random((n, 1, size, size), dtype=np.float32))


@pytest.mark.parametrize("variant", ["full", "us_only"])
def test_export_dynamic_batch_matches_torch(tmp_path, variant):
    ckpt = _checkpoint(tmp_path / "m.pt", variant=variant)
    rep = export_checkpoint(ckpt, tmp_path / "m.onnx")
    assert rep.max_abs_diff <= 1e-4 and rep.batch is None
    sess = ort.InferenceSession(str(rep.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == (["us"] if variant == "us_only" else ["ceus", "us"])
    model = load_spec(ckpt).model
    for n in (1, 3):
        c, u = _inputs(n, 64, seed=n)
        (got,) = sess.run(["logits"], feed_for(sess, c, u))
        with torch.no_grad():
            want = model(torch.from_numpy(c), torch.from_numpy(u)).numpy()
        assert got.shape == (n, 1, 64, 64)
        assert np.abs(got - want).max() <= 1e-4
        assert want.std() > 1e-3  # the comparison is not between two constants
    meta = {p.key: p.value for p in onnx.load(str(rep.path)).metadata_props}
    assert json.loads(meta["ceuspipe_config"])["variant"] == variant


def test_export_fixed_batch_and_cli(tmp_path):
    from ceuspipe.cli import main

    ckpt = _checkpoint(tmp_path / "m.pt")
    res = CliRunner().invoke(main, ["export", str(ckpt), str(tmp_path / "f.onnx"), "--batch", "4"])
    assert res.exit_code == 0, res.output
    assert "max |ONNX - PyTorch|" in res.output
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [4, 1, 64, 64]
    res = CliRunner().invoke(main, ["export", str(ckpt), str(tmp_path / "g.onnx"), "--batch", "x"])
    assert res.exit_code == 2 and not (tmp_path / "g.onnx").exists()
    res = CliRunner().invoke(main, ["export", str(tmp_path / "missing.pt"), str(tmp_path / "h.onnx")])
    assert res.exit_code == 1 and "missing.pt" in res.output and not (tmp_path / "h.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx", "m.pt"]  # no temp files


def test_cache_keyed_by_checkpoint_and_reused(tmp_path):
    a = load_spec(_checkpoint(tmp_path / "a.pt", seed=0))
    b = load_spec(_checkpoint(tmp_path / "b.pt", seed=1))
    pa = cached_onnx(a, cache_dir=tmp_path / "cache")
    mtime = pa.stat().st_mtime_ns
    assert cached_onnx(a, cache_dir=tmp_path / "cache") == pa and pa.stat().st_mtime_ns == mtime
    pb = cached_onnx(b, cache_dir=tmp_path / "cache")
    assert pb != pa and pb.is_file()
    assert not [p for p in (tmp_path / "cache" / "onnx").iterdir() if p.name.startswith(".")]


def test_auto_engine_on_cpu_is_onnx_and_agrees_with_torch(tmp_path):
    spec = load_spec(_checkpoint(tmp_path / "m.pt"))
    auto = make_predictor(spec, engine="auto", device="cpu", cache_dir=tmp_path / "cache")
    assert isinstance(auto, OnnxPredictor)
    torch_pred = make_predictor(spec, engine="torch", device="cpu")
    assert isinstance(torch_pred, TorchPredictor)
    rng = np.random.default_rng(0)
    panels = rng.integers(0, 256, (5, 90, 120, 3), dtype=np.uint8)
    c = np.stack([prepare_panel(p, 64) for p in panels])
    u = np.stack([prepare_panel(p[::-1], 64) for p in panels])
    assert c.shape == (5, 64, 64) and c.dtype == np.float32 and 0 <= c.min() and c.max() <= 1
    pa, pt = auto(c, u), torch_pred(c, u)
    assert pa.shape == (5, 64, 64) and np.abs(pa - pt).max() <= 1e-5
    mask = probability_to_mask(pa[0], 90, 120, 0.5)
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 1}


def test_cuda_request_without_gpu_is_a_clear_error(tmp_path):
    from ceuspipe.errors import InputError

    spec = load_spec(_checkpoint(tmp_path / "m.pt"))
    if torch.cuda.is_available():
        assert make_predictor(spec, engine="auto", device="cuda").engine == "torch"
    else:
        with pytest.raises(InputError, match="no CUDA GPU"):
            make_predictor(spec, engine="auto", device="cuda")


def test_fixed_batch_model_runs_any_number_of_frames(tmp_path):
    """A model exported with --batch 4 segments 1, 4 and 5 frames (chunks, the last padded)
    exactly like the dynamic-batch export of the same checkpoint."""
    ckpt = _checkpoint(tmp_path / "m.pt")
    fixed = OnnxPredictor(export_checkpoint(ckpt, tmp_path / "b4.onnx", batch=4).path, 64)
    dynamic = OnnxPredictor(export_checkpoint(ckpt, tmp_path / "dyn.onnx").path, 64)
    assert fixed.fixed_batch == 4 and dynamic.fixed_batch is None
    for n in (1, 4, 5):
        c, u = (a[:, 0] for a in _inputs(n, 64, seed=n))
        got, want = fixed(c, u), dynamic(c, u)
        assert got.shape == (n, 64, 64)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_parallel_frames_slices_the_batch_over_one_thread_runs(tmp_path, monkeypatch):
    """parallel_frames: 7 frames on 3 CPUs run as 3 concurrent one-thread runs over slices of
    2, 3 and 2 frames, with the outputs of one multi-threaded run; one frame takes the
    multi-threaded session; a fixed-batch model is never sliced."""
    from ceuspipe.segment.engines import onnx_engine as P

    monkeypatch.setattr(P, "usable_cpus", lambda: 3)
    ckpt = _checkpoint(tmp_path / "m.pt")
    path = export_checkpoint(ckpt, tmp_path / "dyn.onnx").path
    whole, sliced = OnnxPredictor(path, 64), OnnxPredictor(path, 64, parallel_frames=True)
    assert whole.parallel == 1 and sliced.parallel == 3
    runs = []
    run = OnnxPredictor._run

    def spy(self, session, c, u):
        runs.append((len(c), session.get_session_options().intra_op_num_threads,
                     threading.current_thread().name))
        return run(self, session, c, u)

    monkeypatch.setattr(OnnxPredictor, "_run", spy)
    c, u = (a[:, 0] for a in _inputs(7, 64, seed=3))
    want = whole(c, u)
    assert runs == [(7, 3, threading.current_thread().name)]
    runs.clear()
    got = sliced(c, u)
    assert sorted(n for n, _, _ in runs) == [2, 2, 3] and {t for _, t, _ in runs} == {1}
    assert all(name.startswith("ceuspipe-infer") for _, _, name in runs)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.array_equal(got >= 0.5, want >= 0.5)
    runs.clear()
    np.testing.assert_allclose(sliced(c[:1], u[:1]), want[:1], atol=1e-5)
    assert runs == [(1, 3, threading.current_thread().name)]
    fixed = OnnxPredictor(export_checkpoint(ckpt, tmp_path / "b4.onnx", batch=4).path, 64, parallel_frames=True)
    assert fixed.parallel == 1
    runs.clear()
    np.testing.assert_allclose(fixed(c, u), want, atol=1e-5)
    assert [n for n, _, _ in runs] == [4, 4]


def test_parallel_frames_after_a_fork(tmp_path):
    """A child forked after the parent sliced a batch makes its own pool (a copied one has no
    threads and would hang): the child's outputs equal the parent's."""
    import multiprocessing

    ckpt = _checkpoint(tmp_path / "m.pt")
    path = export_checkpoint(ckpt, tmp_path / "dyn.onnx").path
    pred = OnnxPredictor(path, 64, parallel_frames=True)
    c, u = (a[:, 0] for a in _inputs(4, 64, seed=5))
    want = pred(c, u)

    def child(q):
        q.put(OnnxPredictor(path, 64, parallel_frames=True)(c, u))

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=child, args=(q,))
    proc.start()
    try:
        got = q.get(timeout=30)  # without the fork hook: nothing comes (measured: hangs)
        proc.join(timeout=10)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_submit_returns_before_the_slices_run_and_keeps_their_order(tmp_path, monkeypatch):
    """OnnxPredictor.submit with parallel_frames hands the slices to the frame threads and
    returns at once; result() waits for them, in batch order, and re-raises a slice's error;
    cancel() drops the slices that have not started. A predictor without submit runs at
    once (predictor.submit)."""
    from ceuspipe.segment.engines import onnx_engine as P

    monkeypatch.setattr(P, "usable_cpus", lambda: 2)
    P._frame_pool.cache_clear()  # a pool of the patched size
    ckpt = _checkpoint(tmp_path / "m.pt")
    path = export_checkpoint(ckpt, tmp_path / "dyn.onnx").path
    pred = OnnxPredictor(path, 64, parallel_frames=True)
    c, u = (a[:, 0] for a in _inputs(6, 64, seed=7))
    want = OnnxPredictor(path, 64)(c, u)
    gate, started = threading.Event(), []
    run = OnnxPredictor._run

    def held(self, session, cc, uu):
        started.append(len(cc))
        assert gate.wait(30)
        if len(cc) == 1:
            raise RuntimeError("slice failed")
        return run(self, session, cc, uu)

    monkeypatch.setattr(OnnxPredictor, "_run", held)
    first = pred.submit(c, u)        # two slices of 3: both threads busy until the gate opens
    second = pred.submit(c[:2], u[:2])  # slices of 1 frame each (they fail): queued behind
    third = pred.submit(c[:4], u[:4])
    third.cancel()                   # not started: dropped
    gate.set()
    np.testing.assert_allclose(first.result(), want, atol=1e-5)
    with pytest.raises(RuntimeError, match="slice failed"):
        second.result()
    assert sorted(started) == [1, 1, 3, 3]  # the cancelled batch's slices never ran
    monkeypatch.setattr(OnnxPredictor, "_run", run)

    class Plain:  # a predictor without submit (tests' wrappers, third-party ones)
        def __call__(self, cc, uu):
            return cc * 0.5

    np.testing.assert_array_equal(submit(Plain(), c, u).result(), c * 0.5)
    P._frame_pool.cache_clear()
