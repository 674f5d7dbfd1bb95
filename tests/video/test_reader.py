"""Streaming video reader: true presentation times, selection, codecs, damage, rotation."""

from __future__ import annotations

import gc
import logging
import tracemalloc
import weakref
from fractions import Fraction

import av
import numpy as np
import pytest

from ceuspipe.errors import InputError
from ceuspipe.video.reader import (
    TIME_NUDGE_S,
    Frame,
    RelativeClock,
    apply_orientation,
    iter_frames,
    orientation_from_display_matrix,
    probe,
    rotation_matrix_ccw,
)
from ceuspipe.video.writer import VideoWriter

QUIET_X265 = {"x265-params": "log-level=error"}


def grey(level: int, w: int = 96, h: int = 64) -> np.ndarray:
    return np.full((h, w, 3), level, np.uint8)


def level_of(i: int) -> int:
    """Distinct, well separated grey level per frame index (survives lossy coding)."""
    return 16 + (i * 40) % 224


def make_clip(path, times, *, codec="libx264", w=96, h=64, fps=10.0, options=None, noise=False):
    rng = np.random.default_rng(0)
    with VideoWriter(path, w, h, fps=fps, codec=codec, options=options) as vw:
        for i, t in enumerate(times):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise else grey(level_of(i), w, h)
            vw.write(img, t)
    return path


def check_levels(frames):
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
        assert abs(float(f.image.mean()) - level_of(f.index)) < 6, f.index


def test_constant_10fps_times_order_and_shape(tmp_path):
    path = make_clip(tmp_path / "c.mp4", [i / 10 for i in range(25)])
    frames = list(iter_frames(path))
    assert [f.index for f in frames] == list(range(25))
    assert np.allclose([f.time_s for f in frames], [i / 10 for i in range(25)], atol=1e-6)
    assert frames[0].time_s == 0.0
    assert all(isinstance(f, Frame) and f.image.shape == (64, 96, 3) for f in frames)
    check_levels(frames)


def test_2997_fps_times_do_not_drift(tmp_path):
    times = [k * 1001 / 30000 for k in range(1001)]
    path = make_clip(tmp_path / "ntsc.mp4", times, w=32, h=32, fps=30000 / 1001)
    got = [(f.index, f.time_s) for f in iter_frames(path)]
    assert len(got) == 1001
    err = max(abs(t - k * 1001 / 30000) for k, t in got)
    assert err < 1e-3
    assert got[1000][1] == pytest.approx(1000 * 1001 / 30000, abs=1e-3)  # 33.367 s, not 33.333 s
    assert abs(got[1000][1] - 1000 / 30) > 0.03
    info = probe(path)
    assert info.nominal_fps == pytest.approx(30000 / 1001, rel=1e-4)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_times(tmp_path, suffix):
    times = [0.0, 0.05, 0.3, 0.31, 0.9, 1.5, 1.55, 2.0, 3.25]
    path = make_clip(tmp_path / f"vfr{suffix}", times)
    frames = list(iter_frames(path))
    assert np.allclose([f.time_s for f in frames], times, atol=1e-3)
    check_levels(frames)


def test_times_relative_to_first_frame(tmp_path):
    times = [5.0 + i * 0.2 for i in range(6)]
    frames = list(iter_frames(make_clip(tmp_path / "late.mkv", times)))
    assert np.allclose([f.time_s for f in frames], [i * 0.2 for i in range(6)], atol=1e-3)


def test_select_yields_only_chosen_frames_index_counts_all(tmp_path):
    path = make_clip(tmp_path / "s.mp4", [i / 10 for i in range(35)])
    calls = []

    def every_second(t: float) -> bool:
        calls.append(t)
        return abs(t - round(t)) < 1e-6

    frames = list(iter_frames(path, select=every_second))
    assert len(calls) == 35 and calls == sorted(calls)  # once per decoded frame, in order
    assert [f.index for f in frames] == [0, 10, 20, 30]
    assert np.allclose([f.time_s for f in frames], [0, 1, 2, 3], atol=1e-6)
    check_levels(frames)
    assert list(iter_frames(path, select=lambda t: False)) == []


def test_threads_off_gives_same_frames(tmp_path):
    path = make_clip(tmp_path / "t.mp4", [i / 10 for i in range(12)], noise=True)
    a = list(iter_frames(path, threads=True))
    b = list(iter_frames(path, threads=False))
    assert [f.time_s for f in a] == [f.time_s for f in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))


@pytest.mark.parametrize("suffix,codec,name,options", [
    (".avi", "mjpeg", "mjpeg", None),
    (".mkv", "libx265", "hevc", QUIET_X265),
    (".mov", "mpeg4", "mpeg4", None),
    (".mp4", "libx264", "h264", None),
])
def test_codecs_and_containers_decode(tmp_path, suffix, codec, name, options):
    times = [i / 10 for i in range(12)]
    path = make_clip(tmp_path / f"clip{suffix}", times, codec=codec, options=options)
    frames = list(iter_frames(path))
    assert len(frames) == 12
    assert np.allclose([f.time_s for f in frames], times, atol=1e-3)
    check_levels(frames)
    info = probe(path)
    assert (info.kind, info.codec, info.width, info.height, info.rotation) == ("video", name, 96, 64, 0)


def test_truncated_mkv_gives_frames_up_to_the_cut(tmp_path):
    path = make_clip(tmp_path / "full.mkv", [i / 10 for i in range(30)], noise=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    frames = list(iter_frames(cut))
    assert 5 <= len(frames) < 30
    assert np.allclose([f.time_s for f in frames], [i / 10 for i in range(len(frames))], atol=1e-3)


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".avi", "mjpeg"), (".mov", "mpeg4")])
def test_truncated_file_never_crashes(tmp_path, suffix, codec):
    path = make_clip(tmp_path / f"full{suffix}", [i / 10 for i in range(20)], codec=codec, noise=True)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    try:
        frames = list(iter_frames(cut))
    except InputError as err:
        assert str(err).startswith(str(cut)) and "\n" not in str(err)
    else:
        assert 1 <= len(frames) < 20
        times = [f.time_s for f in frames]
        assert all(b > a for a, b in zip(times, times[1:]))


def test_damaged_middle_is_skipped_with_warning(tmp_path, caplog):
    path = make_clip(tmp_path / "full.mp4", [i / 10 for i in range(30)], noise=True)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(3)
    start = len(data) // 3
    data[start:start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="ceuspipe"):
        frames = list(iter_frames(bad))
    times = [f.time_s for f in frames]
    assert 10 <= len(frames) <= 30
    assert all(b > a for a, b in zip(times, times[1:]))
    # every time that came out is one that went in
    assert all(min(abs(t - i / 10) for i in range(30)) < 1e-3 for t in times)
    if len(frames) < 30:
        assert any("could not be read or decoded" in r.message for r in caplog.records)


def test_non_video_empty_missing_and_folder(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match="not a video file"):
        list(iter_frames(text))
    with pytest.raises(InputError, match="not a video file"):
        probe(text)
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        list(iter_frames(empty))
    with pytest.raises(InputError, match="no such file"):
        list(iter_frames(tmp_path / "missing.mp4"))
    with pytest.raises(InputError, match="folder"):
        probe(tmp_path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(InputError, match="no video stream"):
        list(iter_frames(path))
    with pytest.raises(InputError, match="no video stream"):
        probe(path)


def test_frames_are_not_retained(tmp_path):
    """The reader keeps no reference to frames already yielded (memory does not grow).

    Images live in PyAV buffers that tracemalloc does not see, so this checks with
    weak references that every earlier frame and image is freed while the stream
    is still running, plus a tracemalloc bound on Python-side allocations.
    """
    n = 120
    path = make_clip(tmp_path / "long.mp4", [i / 25 for i in range(n)], w=64, h=48, fps=25)
    refs = []
    alive_behind = []
    tracemalloc.start()
    try:
        for frame in iter_frames(path):
            refs.append((weakref.ref(frame), weakref.ref(frame.image)))
            del frame
            gc.collect(0)
            alive_behind.append(sum(r() is not None or i() is not None for r, i in refs[:-1]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(refs) == n
    assert max(alive_behind) == 0
    assert peak < 2_000_000


def test_early_stop_closes_cleanly(tmp_path):
    path = make_clip(tmp_path / "c.mp4", [i / 10 for i in range(20)])
    gen = iter_frames(path)
    first = next(gen)
    gen.close()
    assert first.index == 0


# ----------------------------------------------------------------------------- rotation


def make_rotated(path, degrees, hflip=False, w=48, h=32):
    """Clip whose stored image has a bright block in its top-left corner."""
    img = np.full((h, w, 3), 20, np.uint8)
    img[: h // 2, : w // 3] = 235
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip)
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return img


def bright_corner(image) -> tuple[int, int]:
    g = image.mean(axis=2)
    h, w = g.shape
    corners = {(0, 0): g[: h // 4, : w // 4], (0, 1): g[: h // 4, -w // 4:],
               (1, 0): g[-h // 4:, : w // 4], (1, 1): g[-h // 4:, -w // 4:]}
    bright = [k for k, v in corners.items() if v.mean() > 128]
    assert len(bright) == 1, bright
    return bright[0]


@pytest.mark.parametrize("degrees,hflip,corner,reported", [
    (90, False, (1, 0), 90),     # counter-clockwise: top-left goes to bottom-left
    (-90, False, (0, 1), 270),   # clockwise (portrait phone clips): top-left goes to top-right
    (180, False, (1, 1), 180),
    (0, True, (0, 1), 0),        # mirror only
])
def test_rotation_metadata_is_applied(tmp_path, degrees, hflip, corner, reported):
    path = tmp_path / "rot.mp4"
    stored = make_rotated(path, degrees, hflip)
    info = probe(path)
    transposed = abs(degrees) == 90
    expect_hw = stored.shape[1::-1] if transposed else stored.shape[:2]
    assert (info.height, info.width) == tuple(expect_hw)
    assert info.rotation == reported
    frames = list(iter_frames(path))
    assert len(frames) == 3
    for f in frames:
        assert f.image.shape[:2] == tuple(expect_hw)
        assert bright_corner(f.image) == corner


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("hflip", [False, True])
def test_orientation_from_matrix_on_arrays(k, hflip):
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    orient = orientation_from_display_matrix(rotation_matrix_ccw(90 * k, hflip))
    expected = np.rot90(img, k)
    if hflip:
        expected = expected[:, ::-1]
    out = apply_orientation(img, orient)
    assert np.array_equal(out, expected) and out.flags.c_contiguous
    assert orient.rotation == 90 * k


def test_relative_clock_keeps_order_and_nudges_non_increasing(caplog):
    clock = RelativeClock()
    with caplog.at_level(logging.WARNING, logger="ceuspipe"):
        out = [clock(Fraction(t)) for t in (10, 11, 11, Fraction(21, 2), 12)]
        clock.report("x.mp4")
    assert out[:2] == [0.0, 1.0]
    assert out[2] == pytest.approx(1.0 + TIME_NUDGE_S)
    assert out[3] == pytest.approx(1.0 + 2 * TIME_NUDGE_S)
    assert out[4] == 2.0
    assert clock.nudged == 2
    assert any("non-increasing" in r.message for r in caplog.records)


def test_frame_time_fallbacks_without_pts():
    from types import SimpleNamespace

    from ceuspipe.video.pyav_decode import frame_time as _frame_time

    tb = Fraction(1, 1000)
    step = Fraction(1, 25)
    with_pts = SimpleNamespace(pts=1500, dts=None, duration=0, time_base=tb)
    assert _frame_time(with_pts, tb, None, step) == Fraction(3, 2)
    only_dts = SimpleNamespace(pts=None, dts=2000, duration=0, time_base=None)
    assert _frame_time(only_dts, tb, Fraction(1), step) == 2
    with_duration = SimpleNamespace(pts=None, dts=None, duration=40, time_base=tb)
    assert _frame_time(with_duration, tb, Fraction(2), step) == Fraction(2) + Fraction(40, 1000)
    bare = SimpleNamespace(pts=None, dts=None, duration=0, time_base=tb)
    assert _frame_time(bare, tb, Fraction(2), step) == Fraction(2) + step
    assert _frame_time(bare, tb, None, step) == 0


def test_side_data_read_once_per_clip(tmp_path, monkeypatch):
    """PyAV 18 leaks on every frame.side_data access; the reader must not touch it per frame."""
    from ceuspipe.video import pyav_source as reader

    path = tmp_path / "c.mp4"
    make_clip(path, [i / 10 for i in range(30)])
    calls = []
    real = reader.frame_orientation
    monkeypatch.setattr(reader, "frame_orientation", lambda f: calls.append(1) or real(f))
    frames = list(iter_frames(path))
    assert len(frames) == 30 and len(calls) == 1
