"""Faults in every streaming stage end the command within seconds, cleanly.

Each case: one ``ceuspipe: error:`` line (or the library's exception), a non-zero
exit, no temporary folder left, no worker thread left running. Real processes
are used where a hang would otherwise hang the test (subprocess with a timeout):
a full 3 MB filesystem, SIGTERM and SIGINT in the middle of a run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ceuspipe.errors import InputError
from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.video.panels import PanelLayout
from support.builders import phantom_clip, small_fs, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    clip, truth = phantom_clip(root / "clips", duration_s=8.0, fps=12.0)
    long_clip, _ = phantom_clip(root / "long", seed=2, duration_s=40.0, fps=12.0)
    return {"root": root, "clip": clip, "long": long_clip, "truth": truth,
            "ckpt": write_checkpoint(root / "tiny.pt"), "layout": PanelLayout.from_dict(truth["layout"])}


def _no_stage_threads() -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if t.name.startswith("segment-")]:
            return True
        time.sleep(0.05)
    return False


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name)


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CEUSPIPE_CACHE_DIR": "/nonexistent-cache-unused"}
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "ceuspipe", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


# --------------------------------------------------------------------------- segment-video, in process


def test_inference_error_mid_clip_stops_all_stages(env, tmp_path, monkeypatch):
    from ceuspipe.segment.engines.torch_engine import TorchPredictor

    real = TorchPredictor.__call__
    calls = {"n": 0}

    def failing(self, ceus, us):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated inference failure")
        return real(self, ceus, us)

    monkeypatch.setattr(TorchPredictor, "__call__", failing)
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="simulated inference failure"):
        segment_video(env["clip"], env["ckpt"], out, SegmentConfig(engine="torch", batch_size=4))
    assert time.monotonic() - t0 < 30
    assert not out.exists() and _leftovers(tmp_path) == []
    assert _no_stage_threads()


def test_decode_error_mid_clip_is_one_input_error(env, tmp_path, monkeypatch):
    from ceuspipe.video import clip_stream

    real = clip_stream.ClipStream.__iter__

    def breaking(self):
        for i, frame in enumerate(real(self)):
            if i == 20:
                raise InputError(self.path, "simulated damaged packet")
            yield frame

    monkeypatch.setattr(clip_stream.ClipStream, "__iter__", breaking)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="simulated damaged packet"):
        segment_video(env["clip"], env["ckpt"], out, SegmentConfig(engine="torch"))
    assert not out.exists() and _leftovers(tmp_path) == []
    assert _no_stage_threads()


def test_encoder_failing_after_some_bytes_ends_within_seconds(env, tmp_path, monkeypatch):
    """The reported hang: the encode thread fails while the main thread hands it frames."""
    import errno

    from ceuspipe.video import writer as writer_mod

    real_write = writer_mod.VideoWriter.write
    written = {"n": 0}

    def write(self, image, time_s):
        written["n"] += 1
        if written["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, image, time_s)

    monkeypatch.setattr(writer_mod.VideoWriter, "write", write)
    out = tmp_path / "out"
    t0 = time.monotonic()
    with pytest.raises(Exception, match="No space left on device"):
        segment_video(env["long"], env["ckpt"], out, SegmentConfig(engine="torch", queue_frames=2))
    assert time.monotonic() - t0 < 60
    assert not out.exists() and _leftovers(tmp_path) == []
    assert _no_stage_threads()


# --------------------------------------------------------------------------- a real small filesystem


def test_segment_video_on_a_full_3mb_filesystem_exits_with_one_line(env, tmp_path):
    with small_fs(tmp_path / "small") as small:
        proc = _cli("segment-video", str(env["long"]), "--model", str(env["ckpt"]), "-o", str(small / "out"),
                    "--engine", "torch")
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("segment-video hung on a full filesystem")
        lines = [ln for ln in err.splitlines() if ln.startswith("ceuspipe: error:")]
        assert proc.returncode == 1, err
        assert len(lines) == 1 and "No space left on device" in lines[0], err
        assert list(small.iterdir()) == [], "nothing half-written on the full disk"


def test_keyframes_on_a_full_filesystem_exits_with_one_line(env, tmp_path):
    with small_fs(tmp_path / "small", size="200k") as small:
        proc = _cli("keyframes", str(env["long"]), str(small / "kf"))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert "No space left on device" in err
        assert not (small / "kf" / "P002" / "exam1").exists()
        assert _leftovers(small) == []


# --------------------------------------------------------------------------- signals


def _wait_for_tmp(parent: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if parent.exists() and any(p.name.endswith(".tmp") for p in parent.iterdir()):
            return
        if proc.poll() is not None:
            pytest.fail(f"finished before the signal could be sent: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the temporary output folder never appeared")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_signal_during_segment_video_removes_temporary_output(env, tmp_path, sig, code, word):
    out = tmp_path / "res" / "out"
    proc = _cli("segment-video", str(env["long"]), "--model", str(env["ckpt"]), "-o", str(out),
                "--engine", "torch", "--batch-size", "1")
    _wait_for_tmp(out.parent, proc)
    time.sleep(0.5)  # into the streaming part
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert word in err and "Traceback" not in err
    assert not out.exists() and (not out.parent.exists() or _leftovers(out.parent) == [])


def test_sigterm_during_keyframes_removes_temporary_output(env, tmp_path):
    out = tmp_path / "kf"
    proc = _cli("keyframes", str(env["long"]), str(out))
    _wait_for_tmp(out / "P002", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not (out / "P002" / "exam1").exists() and _leftovers(out) == []


# --------------------------------------------------------------------------- export calibration


def test_int8_calibration_with_a_clip_failing_mid_stream_writes_nothing(env, tmp_path):
    from click.testing import CliRunner

    from ceuspipe.cli import main

    bad = tmp_path / "clips" / "P9" / "cut.mp4"
    bad.parent.mkdir(parents=True)
    data = env["long"].read_bytes()
    bad.write_bytes(data[:2000])  # the header survives, the frames do not
    out = tmp_path / "m.int8.onnx"
    res = CliRunner().invoke(main, ["export", str(env["ckpt"]), str(out), "--int8", "--calibration",
                                    str(bad.parent.parent)])
    assert res.exit_code == 1, res.output
    assert "cut.mp4" in res.stderr and len([ln for ln in res.stderr.splitlines()
                                            if ln.startswith("ceuspipe: error:")]) == 1
    assert not out.exists() and not list(tmp_path.glob("*.onnx*"))


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("kw, key", [({"device": "gpu"}, "device"), ({"device": "cuda:x"}, "device"),
                                     ({"engine": "tensorrt"}, "engine"), ({"tic_model": "gauss"}, "tic_model"),
                                     ({"batch_size": 0}, "batch_size"), ({"ceus_side": "middle"}, "ceus_side"),
                                     ({"layout_window_s": 0}, "layout_window_s"),
                                     ({"overlay_preset": "placebo"}, "overlay_preset")])
def test_segment_config_refuses_bad_values_naming_the_key(kw, key):
    from ceuspipe.configs import ConfigError

    with pytest.raises(ConfigError) as info:
        SegmentConfig(**kw)
    assert str(info.value).startswith(f"{key}: ") and info.value.key == key


def test_train_config_refuses_unknown_variant_with_the_choices():
    from ceuspipe.configs import ConfigError
    from ceuspipe.train.config import TrainConfig

    with pytest.raises(ConfigError, match="variant: must be one of unet, .*full, got 'fancy'"):
        TrainConfig(dataset="d", run_dir="r", variant="fancy")
    assert TrainConfig(dataset="d", run_dir="r", device="cuda:1").device == "cuda:1"


@pytest.mark.parametrize("line, message", [
    ('device = "gpu"', "stages.segment.device: must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ('engine = "fast"', "stages.segment.engine: unknown inference engine 'fast'; known: auto, onnx, torch"),
    ('tic_model = "gauss"', "stages.segment.tic_model: must be one of"),
])
def test_pipeline_with_bad_segment_option_refused_at_load(tmp_path, line, message):
    from ceuspipe.batch.pipeline_file import load_pipeline

    write_checkpoint(tmp_path / "m.pt")
    path = tmp_path / "p.toml"
    path.write_text(f'inbox = "i"\noutput = "o"\n[stages.segment]\nmodel = "m.pt"\n{line}\n')
    with pytest.raises(InputError) as info:
        load_pipeline(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_pipeline_accepts_cuda_n_and_refuses_a_file_that_is_no_model(tmp_path):
    from ceuspipe.batch.pipeline_file import load_pipeline

    write_checkpoint(tmp_path / "m.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    ok = tmp_path / "ok.toml"
    ok.write_text('inbox = "i"\noutput = "o"\n[stages.segment]\nmodel = "m.pt"\ndevice = "cuda:1"\n')
    assert load_pipeline(ok).stages[0].options["device"] == "cuda:1"
    bad = tmp_path / "bad.toml"
    bad.write_text('inbox = "i"\noutput = "o"\n[stages.segment]\nmodel = "junk.pt"\n')
    with pytest.raises(InputError, match=r"stages\.segment\.model: "):
        load_pipeline(bad)


def test_clip_length_message_agrees_with_itself():
    from ceuspipe.video.frames import check_clip_length

    assert check_clip_length("c.dcm", 30, 29 * 0.0333) == pytest.approx(0.999, abs=1e-3)
    with pytest.raises(InputError) as info:
        check_clip_length("c.dcm", 20, 19 * 0.0333)
    text = str(info.value)
    assert "frames span 0.632 s from first to last (20 frames, one every 33.3 ms: 0.666 s of video)" in text


def test_channel_ends_notice_each_other():
    from ceuspipe.streaming import Channel, ChannelClosed, EndOfStream, StageGroup

    ch = Channel(1, "test")
    ch.put(1)
    ch.finish()
    assert ch.get() == 1
    with pytest.raises(EndOfStream):
        ch.get()
    group = StageGroup("unit")
    a = group.channel(1, "a")

    def producer():
        for i in range(1000):
            a.put(i)

    def consumer():
        a.get()
        raise ValueError("consumer died")

    group.start(producer, "producer")
    t0 = time.monotonic()
    group.run(consumer, "consumer")
    with pytest.raises(ValueError, match="consumer died"):
        group.join()
    assert time.monotonic() - t0 < 2
    with pytest.raises(ChannelClosed):
        a.put(0)
