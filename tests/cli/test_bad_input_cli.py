"""Every command, every kind of bad input: one ``ceuspipe: error: PATH: problem`` line,
a non-zero exit, no traceback, and nothing left in the output location.

Cases already covered elsewhere (not repeated here): a layout that does not fit
(test_layout), a broken exam among good ones (test_keyframes_e2e), mid-stream
inference failure (test_segment), pipeline-file key errors (test_batch_*),
dataset.json/splits problems (test_train, test_evaluate, test_build_dataset).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from support.bad_inputs import (PWNED_NAME, assert_one_line_error, error_lines, two_panel_frames,
                                write_audio_only, write_dicom, write_evil_pickles, write_video,
                                write_zero_frame_video)
from support.toy_dataset import make_toy_dataset

from ceuspipe.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Good inputs (clip, checkpoints, dataset) and bad ones, in ``inputs/``."""
    import torch

    from ceuspipe.model import build_model
    from ceuspipe.train.checkpoint import save_checkpoint
    from ceuspipe.video.layout import detect_layout

    root = tmp_path_factory.mktemp("bad")
    d = root / "inputs"
    d.mkdir()
    frames = two_panel_frames(12)
    good = write_video(d / "P001" / "good.mp4", frames)
    data = good.read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "truncated_head.mp4").write_bytes(data[:200])
    (d / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (d / "text.mp4").write_text("not a video\n")
    write_audio_only(d / "audio_only.mkv")
    write_zero_frame_video(d / "zero_frames.mkv")
    write_video(d / "short.mp4", frames[:4])                     # 0.5 s at 8 fps
    write_video(d / "one_frame.mp4", frames[:1])
    rng = np.random.default_rng(1)
    write_video(d / "tiny_2x2.mkv", [rng.integers(0, 255, (2, 2, 3), dtype=np.uint8) for _ in range(12)],
                codec="ffv1", pix_fmt="bgr0")
    write_video(d / "odd_7x5.mkv", [rng.integers(0, 255, (5, 7, 3), dtype=np.uint8) for _ in range(12)],
                codec="ffv1", pix_fmt="bgr0")
    write_video(d / "wide_4000x16.mkv", [rng.integers(0, 255, (16, 4000, 3), dtype=np.uint8) for _ in range(10)],
                codec="ffv1", pix_fmt="bgr0")
    single = [f.copy() for f in frames]
    for f in single:
        f[:, 56:] = 0  # B-mode panel gone
    write_video(d / "single_panel.mkv", single, codec="ffv1", pix_fmt="bgr0")
    stack = np.stack(frames)
    write_dicom(d / "ct.dcm", stack, modality="CT")
    dcm = write_dicom(d / "whole.dcm", stack)
    (d / "truncated.dcm").write_bytes(dcm.read_bytes()[: len(dcm.read_bytes()) // 2])
    dcm.unlink()
    write_dicom(d / "colour.dcm", stack)
    write_dicom(d / "grey16.dcm", stack[..., 0].astype(np.uint16) * 257, bits=16, photometric="MONOCHROME2")
    # checkpoints
    tiny = build_model("full", 0.125)
    cfg = {"variant": "full", "width": 0.125, "size": 64, "threshold": 0.5}
    save_checkpoint(d / "tiny.pt", {"config": cfg, "model": tiny.state_dict(), "epoch": 0})
    save_checkpoint(d / "unet_as_full.pt", {"config": cfg, "model": build_model("unet", 0.125).state_dict(),
                                            "epoch": 0})
    (d / "empty.pt").write_bytes(b"")
    (d / "junk.pt").write_bytes(np.random.default_rng(2).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (d / "text.pt").write_text("not a checkpoint\n")
    torch.save({"weights": torch.zeros(3)}, d / "plain_dict.pt")
    write_evil_pickles(d)
    ds = make_toy_dataset(d / "dataset", n_train=4, n_test=2)
    (d / "bad.toml").write_text("[inbox\npath=")
    (d / "binary.toml").write_bytes(bytes(range(256)) * 4)
    (d / "empty_folder").mkdir()
    (d / "a_file.txt").write_text("x")
    (d / "layout_bad.json").write_text("{not json")
    lay = detect_layout(frames)
    boxes = ["--ceus-box", ",".join(map(str, lay.ceus.as_list())), "--us-box", ",".join(map(str, lay.us.as_list()))]
    return {"root": root, "d": d, "good": good, "ds": ds, "boxes": boxes, "cache": root / "cache"}


def invoke(env, monkeypatch, *args: str):
    monkeypatch.setenv("CEUSPIPE_CACHE_DIR", str(env["cache"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env["root"] / "noconfig"))
    monkeypatch.delenv("CEUSPIPE_MODEL", raising=False)
    return CliRunner().invoke(main, list(args))


def assert_nothing_at(out: Path) -> None:
    """Neither the output nor any temporary or hidden leftover beside it."""
    assert not out.exists(), sorted(out.rglob("*")) if out.is_dir() else out
    if out.parent.exists():
        left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
        assert left == []


# --------------------------------------------------------------------------- videos and DICOM

VIDEO_CASES = [
    ("missing.mp4", "no such file or folder"),
    ("empty.mp4", "empty file"),
    ("truncated.mp4", "damaged or truncated"),
    ("truncated_head.mp4", "damaged or truncated"),
    ("junk.mp4", "not a video file"),
    ("text.mp4", "not a video file"),
    ("audio_only.mkv", "no video stream"),
    ("zero_frames.mkv", "zero-frame"),
    ("short.mp4", "shorter than the 1 s needed"),
    ("one_frame.mp4", "single frame"),
    ("tiny_2x2.mkv", "found 0 imaging panels"),
    ("odd_7x5.mkv", "found 0 imaging panels"),
    ("wide_4000x16.mkv", "found 0 imaging panels"),
    ("single_panel.mkv", "found 1 imaging panel"),
    ("ct.dcm", "not an ultrasound DICOM (Modality=CT)"),
    ("truncated.dcm", "DICOM"),
    ("empty_folder", "no video or DICOM files found"),
]


@pytest.mark.parametrize("name,problem", VIDEO_CASES, ids=[c[0] for c in VIDEO_CASES])
def test_keyframes_bad_video(env, monkeypatch, name, problem):
    out = env["root"] / f"kf_{name}"
    res = invoke(env, monkeypatch, "keyframes", str(env["d"] / name), str(out))
    assert_one_line_error(res, str(env["d"] / name), problem)
    assert res.exit_code == 1
    assert_nothing_at(out)


SEGMENT_CASES = [c for c in VIDEO_CASES if c[0] != "empty_folder"]


@pytest.mark.parametrize("name,problem", SEGMENT_CASES, ids=[c[0] for c in SEGMENT_CASES])
def test_segment_video_bad_video(env, monkeypatch, name, problem):
    out = env["root"] / f"seg_{name}"
    res = invoke(env, monkeypatch, "segment-video", str(env["d"] / name), "--model", str(env["d"] / "tiny.pt"),
                 "-o", str(out))
    assert_one_line_error(res, str(env["d"] / name), problem)
    assert_nothing_at(out)


@pytest.mark.parametrize("name,problem", [("tiny_2x2.mkv", "does not fit the 2x2 frame"),
                                          ("odd_7x5.mkv", "does not fit the 7x5 frame"),
                                          ("wide_4000x16.mkv", "does not fit the 4000x16 frame"),
                                          ("short.mp4", "0.500 s of video")])
def test_segment_video_given_boxes_on_bad_sizes_and_short_clip(env, monkeypatch, name, problem):
    out = env["root"] / f"segbox_{name}"
    res = invoke(env, monkeypatch, "segment-video", str(env["d"] / name), "--model", str(env["d"] / "tiny.pt"),
                 "-o", str(out), *env["boxes"])
    assert_one_line_error(res, name, problem)
    assert_nothing_at(out)


def test_16bit_and_colour_dicom_are_read_with_one_warning(env, monkeypatch):
    out = env["root"] / "kf_dicom_ok"
    res = invoke(env, monkeypatch, "keyframes", str(env["d"] / "grey16.dcm"), str(env["d"] / "colour.dcm"),
                 str(out), "-k", "2")
    assert res.exit_code == 0, res.output
    assert error_lines(res.stderr) == []
    assert res.stderr.count("16-bit DICOM samples scaled linearly to 8 bits") == 1
    metas = sorted(out.glob("*/*/keyframes.json"))
    assert [m.parent.name for m in metas] == ["colour", "grey16"]
    for m in metas:
        meta = json.loads(m.read_text())
        assert meta["layout"]["ceus"]["x"] == 4 and meta["n_frames_decoded"] == 12


def test_bad_layout_file_is_one_error_before_any_exam(env, monkeypatch):
    out = env["root"] / "kf_layout"
    res = invoke(env, monkeypatch, "keyframes", str(env["good"]), str(env["good"]), str(out),
                 "--layout", str(env["d"] / "layout_bad.json"))
    assert_one_line_error(res, "layout_bad.json", "not a valid layout file")
    assert_nothing_at(out)


def test_debug_shows_the_traceback(env, monkeypatch):
    res = invoke(env, monkeypatch, "--debug", "segment-video", str(env["d"] / "junk.mp4"),
                 "--model", str(env["d"] / "tiny.pt"), "-o", str(env["root"] / "dbg"))
    assert res.exit_code != 0
    from ceuspipe.errors import InputError

    assert isinstance(res.exception, InputError)  # re-raised for click's traceback
    proc = subprocess.run([sys.executable, "-m", "ceuspipe", "--debug", "keyframes", str(env["d"] / "nope.mp4"),
                           str(env["root"] / "dbg2")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    assert "nope.mp4: no such file or folder" in proc.stderr


# --------------------------------------------------------------------------- checkpoints

CKPT_CASES = [
    ("missing.pt", "missing.pt: "),
    ("empty.pt", "not a ceuspipe checkpoint"),
    ("junk.pt", "not a ceuspipe checkpoint"),
    ("text.pt", "not a ceuspipe checkpoint"),
    ("plain_dict.pt", "not a ceuspipe checkpoint"),
    ("evil_raw.pt", "not a ceuspipe checkpoint"),
    ("evil_zip.pt", "posix.system"),
    ("unet_as_full.pt", "weights do not fit a 'full' model"),
]


@pytest.mark.parametrize("name,problem", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_bad_checkpoint_every_command(env, monkeypatch, name, problem):
    ckpt = str(env["d"] / name)
    runs = {
        "export": ["export", ckpt, str(env["root"] / f"x_{name}.onnx")],
        "evaluate": ["evaluate", ckpt, str(env["ds"]), "-o", str(env["root"] / f"ev_{name}")],
        "segment-video": ["segment-video", str(env["good"]), "--model", ckpt, "-o",
                          str(env["root"] / f"sv_{name}"), *env["boxes"]],
    }
    for command, args in runs.items():
        res = invoke(env, monkeypatch, *args)
        line = assert_one_line_error(res, name, problem)
        assert len(line) < 400, line
        target = Path(args[2] if command == "export" else args[args.index("-o") + 1])
        assert_nothing_at(target)
    assert not (env["d"] / PWNED_NAME).exists(), "a checkpoint's pickle ran code"


def test_resume_from_checkpoint_of_another_variant(env, monkeypatch):
    run_dir = env["root"] / "run_resume"
    run_dir.mkdir()
    shutil.copy(env["d"] / "tiny.pt", run_dir / "last.pt")
    before = sorted(p.name for p in run_dir.iterdir())
    res = invoke(env, monkeypatch, "train", str(env["ds"]), str(run_dir), "--resume", "--variant", "unet",
                 "--width", "0.125", "--epochs", "1", "--size", "32", "--device", "cpu")
    assert_one_line_error(res, "last.pt", "trained as variant 'full'", "asked for 'unet'")
    assert sorted(p.name for p in run_dir.iterdir()) == before
    # a last.pt of the right variant but without the optimizer state cannot be resumed either
    from ceuspipe.model import build_model
    from ceuspipe.train.checkpoint import save_checkpoint

    save_checkpoint(run_dir / "last.pt", {"config": {"variant": "unet", "width": 0.125}, "epoch": 1,
                                          "model": build_model("unet", 0.125).state_dict()})
    res = invoke(env, monkeypatch, "train", str(env["ds"]), str(run_dir), "--resume", "--variant", "unet",
                 "--width", "0.125", "--epochs", "2", "--size", "32", "--device", "cpu")
    assert_one_line_error(res, "last.pt", "cannot resume")


# --------------------------------------------------------------------------- folders, pipeline, status

def test_missing_and_wrong_kind_paths_every_command(env, monkeypatch):
    d, root = env["d"], env["root"]
    missing, afile, empty = str(d / "nope"), str(d / "a_file.txt"), str(d / "empty_folder")
    cases = [
        (["build-dataset", missing, empty, str(root / "bd1")], "nope: no such file or folder", root / "bd1"),
        (["build-dataset", afile, empty, str(root / "bd2")], "a_file.txt: is a file, not a folder", root / "bd2"),
        (["build-dataset", empty, empty, str(root / "bd3")], "manifest.csv: key-frame manifest not found", root / "bd3"),
        (["annotate-phantom", missing, empty, str(root / "ap1")], "nope: no such file or folder", root / "ap1"),
        (["annotate-phantom", empty, empty, str(root / "ap2")], "manifest.csv", root / "ap2"),
        (["train", missing, str(root / "tr1"), "--epochs", "1"], "nope: no such file or folder", root / "tr1"),
        (["train", empty, str(root / "tr2"), "--epochs", "1"], "dataset.json: missing", root / "tr2"),
        (["evaluate", str(d / "tiny.pt"), missing], "nope: no such file or folder", root / "nowhere"),
        (["evaluate", str(d / "tiny.pt"), empty, "-o", str(root / "ev1")], "dataset.json: missing", root / "ev1"),
        (["export", str(d / "tiny.pt"), empty], "empty_folder: is a folder, not a file", root / "nowhere"),
        (["segment-video", empty, "--model", str(d / "tiny.pt"), "-o", str(root / "sv1")],
         "empty_folder: is a folder, not a file", root / "sv1"),
        (["synth", "-n", "1", afile], "a_file.txt: is a file, not a folder", root / "nowhere"),
        (["run", str(d / "nope.toml")], "nope.toml: pipeline file not found", root / "nowhere"),
        (["run", str(d / "bad.toml")], "bad.toml: not valid TOML", root / "nowhere"),
        (["run", str(d / "binary.toml")], "binary.toml: not valid TOML", root / "nowhere"),
        (["run", empty], "empty_folder: is a folder, not a file", root / "nowhere"),
        (["status", missing], "nope: no batch ledger here", root / "nowhere"),
        (["status", afile], "a_file.txt: is a file, not a folder", root / "nowhere"),
    ]
    for args, needle, out in cases:
        res = invoke(env, monkeypatch, *args)
        assert_one_line_error(res, needle)
        assert res.exit_code == 1, (args, res.output)
        assert_nothing_at(out)
    assert not (root / "nowhere").exists()
    assert sorted(p.name for p in Path(empty).iterdir()) == []


# --------------------------------------------------------------------------- permissions

def _run_as_nobody(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ceuspipe as uid 65534 (root ignores file modes); as ourselves when not root."""
    exe = [str(Path(sys.executable).parent / "ceuspipe")]
    if os.geteuid() == 0:
        exe = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *exe]
    return subprocess.run([*exe, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HOME": str(cwd), "CEUSPIPE_CACHE_DIR": str(cwd / "cache")})


def test_unreadable_inputs_as_an_ordinary_user(env, tmp_path):
    """Real file modes (mode 000) checked by a non-root process (setpriv to nobody when root)."""
    import tempfile

    box = Path(tempfile.mkdtemp(prefix="ceuspipe-perm-"))
    try:
        box.chmod(0o777)
        clip = box / "P1" / "locked.mp4"
        clip.parent.mkdir()
        clip.parent.chmod(0o777)
        shutil.copy(env["good"], clip)
        ckpt = box / "locked.pt"
        shutil.copy(env["d"] / "tiny.pt", ckpt)
        for p in (clip, ckpt):
            p.chmod(0o000)
        res = _run_as_nobody(["keyframes", str(clip.parent), str(box / "out")], box)
        assert res.returncode == 1, res.stderr
        assert error_lines(res.stderr) == [f"ceuspipe: error: {clip}: cannot be read (permission denied)"]
        res = _run_as_nobody(["keyframes", str(clip), str(box / "out")], box)
        assert error_lines(res.stderr) == [f"ceuspipe: error: {clip}: cannot be read (permission denied)"]
        res = _run_as_nobody(["export", str(ckpt), str(box / "m.onnx")], box)
        assert res.returncode == 1
        assert error_lines(res.stderr) == [f"ceuspipe: error: {ckpt}: cannot be read (permission denied)"]
        assert sorted(p.name for p in box.iterdir()) == ["P1", "locked.pt"]
    finally:
        shutil.rmtree(box, ignore_errors=True)


def test_unreadable_inputs_in_process(env, monkeypatch):
    """Same messages when ``os.access`` says no (as root, modes alone would not stop a read)."""
    real = os.access
    locked = {str(env["good"]), str(env["d"] / "tiny.pt")}
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.fspath(p) in locked else real(p, mode, *a, **k))
    out = env["root"] / "perm_kf"
    res = invoke(env, monkeypatch, "keyframes", str(env["good"].parent), str(out))
    assert_one_line_error(res, str(env["good"]), "cannot be read (permission denied)")
    assert_nothing_at(out)
    res = invoke(env, monkeypatch, "evaluate", str(env["d"] / "tiny.pt"), str(env["ds"]))
    assert_one_line_error(res, "tiny.pt", "cannot be read (permission denied)")


# --------------------------------------------------------------------------- full disk

def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_keyframes_leaves_nothing(env, monkeypatch):
    import pathlib

    real = pathlib.Path.write_bytes
    calls = {"n": 0}
    import threading

    lock = threading.Lock()

    def write_bytes(self, data):
        with lock:
            calls["n"] += 1
            full = calls["n"] >= 3  # a few PNGs in: the disk fills up
        if full:
            _enospc()
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    out = env["root"] / "enospc_kf"
    res = invoke(env, monkeypatch, "keyframes", str(env["good"]), str(out))
    line = assert_one_line_error(res, str(out / "P001" / "good"), "No space left on device")
    assert "nothing was left half-written" in line
    assert calls["n"] >= 3  # PNGs are written by a thread pool: a few more may have been in flight
    assert_nothing_at(out)


def test_full_disk_while_encoding_segment_video_leaves_nothing(env, monkeypatch):
    import ceuspipe.video.writer as writer_mod

    real_open = writer_mod.av.open
    muxed = {"n": 0}

    class FullDisk:
        def __init__(self, container):
            self._c = container

        def mux(self, packet):
            muxed["n"] += 1
            if muxed["n"] > 4:
                _enospc()
            return self._c.mux(packet)

        def __getattr__(self, name):
            return getattr(self._c, name)

    monkeypatch.setattr(writer_mod.av, "open", lambda *a, **k: FullDisk(real_open(*a, **k)))
    out = env["root"] / "enospc_seg" / "result"
    res = invoke(env, monkeypatch, "segment-video", str(env["good"]), "--model", str(env["d"] / "tiny.pt"),
                 "-o", str(out), *env["boxes"], "--engine", "torch")
    line = assert_one_line_error(res, "enospc_seg/result", "No space left on device")
    assert ".tmp" not in line
    assert muxed["n"] > 4
    assert not out.parent.exists(), "the folder created for the output is removed too"


def test_full_disk_on_small_files_evaluate_and_atomic_write(env, monkeypatch, tmp_path):
    import ceuspipe.fsutil as fsutil
    from ceuspipe.errors import OutputError

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            _enospc()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(fsutil.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    target = tmp_path / "new" / "deeper" / "x.json"
    with pytest.raises(OutputError) as err:
        fsutil.atomic_write_text(target, "{}")
    assert str(err.value) == f"{target}: cannot be written (No space left on device); nothing was left half-written"
    assert list(tmp_path.iterdir()) == []
    out = env["root"] / "enospc_eval"
    res = invoke(env, monkeypatch, "evaluate", str(env["d"] / "tiny.pt"), str(env["ds"]), "-o", str(out))
    assert_one_line_error(res, "metrics.json", "No space left on device")
    assert_nothing_at(out / "metrics.json")
