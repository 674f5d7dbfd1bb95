"""Video files through PyAV (FFmpeg): one decoder generator per clip, frames in
presentation order with their true presentation times.

Times are taken from each frame's ``pts * time_base`` (never from
``index / fps``) and made relative to the first decoded frame. Container
metadata (frame count, nominal rate, duration) is reported by :func:`probe_video`
as hints only.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.video.frames import MAX_CLIP_S, Frame, RelativeClock, VideoInfo, check_exists

log = logging.getLogger("ceuspipe")

# --------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class Orientation:
    """Axis-aligned display transform: transpose first, then mirror columns/rows."""

    transpose: bool = False
    flip_x: bool = False
    flip_y: bool = False
    rotation: int = 0  # counter-clockwise degrees of the rotation part, for reporting

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_x or self.flip_y)


IDENTITY = Orientation()


def orientation_from_display_matrix(matrix) -> Orientation:
    """Turn FFmpeg's 3x3 display matrix (9 int32, 16.16 fixed point) into an :class:`Orientation`.

    FFmpeg maps a source pixel ``(p, q)`` to ``(a*p + c*q, b*p + d*q)`` with
    ``a, b, c, d = m[0], m[1], m[3], m[4]`` (x right, y down). Only multiples of
    90 degrees (with optional mirroring) are supported; other angles are logged
    and ignored.
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(-1)
    if m.size != 9:
        raise ValueError("display matrix must have 9 elements")
    a, b, c, d = m[0] / 65536.0, m[1] / 65536.0, m[3] / 65536.0, m[4] / 65536.0
    # Rotation part for reporting: undo a column mirror first (negative determinant).
    ra, rb = (-a, b) if a * d - b * c < 0 else (a, b)
    ccw = int(round(-math.degrees(math.atan2(rb, ra)))) % 360 if (ra or rb) else 0
    eps = 1e-3
    if abs(b) < eps and abs(c) < eps and abs(a) > eps and abs(d) > eps:
        return Orientation(False, a < 0, d < 0, ccw)
    if abs(a) < eps and abs(d) < eps and abs(b) > eps and abs(c) > eps:
        return Orientation(True, c < 0, b < 0, ccw)
    log.warning("display matrix rotates by %s degrees (not a multiple of 90): ignored", ccw)
    return IDENTITY


def apply_orientation(image: np.ndarray, orient: Orientation) -> np.ndarray:
    """Return ``image`` (``(H, W, C)`` or ``(H, W)``) transformed by ``orient``, C-contiguous."""
    if orient.identity:
        return image
    if orient.transpose:
        image = image.swapaxes(0, 1)
    if orient.flip_x:
        image = image[:, ::-1]
    if orient.flip_y:
        image = image[::-1]
    return np.ascontiguousarray(image)


def rotation_matrix_ccw(degrees: int, hflip: bool = False) -> list[int]:
    """Display matrix (9 ints) rotating ``degrees`` counter-clockwise, then mirroring columns.

    Pure-Python equivalent of FFmpeg's ``av_display_rotation_set`` for multiples
    of 90 degrees; used by tests and by anyone writing oriented clips.
    """
    rad = math.radians(degrees)
    cs, sn = round(math.cos(rad)), round(math.sin(rad))
    m = [cs, -sn, 0, sn, cs, 0, 0, 0, 1]
    if hflip:
        m[0], m[3] = -m[0], -m[3]
    fixed = [int(v * 65536) for v in m[:8]] + [1 << 30]
    return fixed


def decoder_threads() -> int:
    """Decoder threads: the CPUs this process may use (at most 16).

    FFmpeg's own default is cores + 1; on the 2-core machines this project runs on,
    2 threads decoded an 800x450 H.264 clip 15-20 % faster than 3 (3.05 s against
    3.7 s for 1800 frames), and the surplus thread only competes for the cores.
    """
    from ceuspipe.cpus import usable_cpus

    return min(16, usable_cpus())


def _frame_orientation(frame: av.VideoFrame) -> Orientation:
    for sd in frame.side_data:
        if getattr(getattr(sd, "type", None), "name", "") == "DISPLAYMATRIX":
            raw = bytes(sd)
            if len(raw) >= 36:
                return orientation_from_display_matrix(np.frombuffer(raw[:36], dtype="=i4"))
    return IDENTITY


def _open(path: Path) -> "av.container.InputContainer":
    if path.stat().st_size == 0:
        raise InputError(path, "empty file, not a video")
    try:
        # Container tags are not ours to judge: undecodable ones must not stop the read.
        return av.open(str(path), "r", metadata_errors="replace")
    except av.InvalidDataError as err:
        raise InputError(path, "not a video file, or damaged or truncated "
                               f"({err.strerror or err})") from err
    except av.EOFError as err:
        raise InputError(path, "file ends before the first frame (zero-frame, truncated "
                               "or damaged video)") from err
    except av.FFmpegError as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise InputError(path, f"cannot be read as a video, damaged or truncated ({reason})") from err
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror or err})") from err


def _video_stream(container, path: Path):
    if not container.streams.video:
        container.close()
        raise InputError(path, "no video stream")
    return container.streams.video[0]


def _fraction(obj, attr: str) -> Fraction | None:
    """A positive rational attribute (``time_base``, ``average_rate``...) or None; a damaged
    header can hold a zero denominator, which PyAV reports by raising ZeroDivisionError."""
    try:
        value = getattr(obj, attr)
    except (ZeroDivisionError, ValueError, OverflowError):
        return None
    return value if value is not None and value > 0 else None


def _rate(stream) -> float | None:
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = _fraction(stream, name)
        if rate:
            try:
                value = float(rate)
            except (TypeError, ZeroDivisionError):
                continue
            if value > 0 and math.isfinite(value):
                return value
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read container metadata and the first frame's size and rotation.

    Decodes at most the first frame. Raises :class:`InputError` for a missing
    file, a non-video file, a file without a video stream, or one whose first
    frame cannot be decoded.
    """
    path = Path(path)
    check_exists(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        frames = _decode(container, stream, path)
        first = next(frames, None)
        frames.close()
        if first is None:
            raise InputError(path, "no frames could be decoded")
        frame, _ = first
        orient = _frame_orientation(frame)
        w, h = frame.width, frame.height
        if orient.transpose:
            w, h = h, w
        duration = None
        stream_tb = _fraction(stream, "time_base")
        if stream.duration and stream_tb:
            duration = float(stream.duration * stream_tb)
        elif container.duration:
            duration = container.duration / av.time_base
        return VideoInfo(path=path, kind="video", width=w, height=h,
                         codec=stream.codec_context.name, nominal_fps=_rate(stream),
                         duration_s=duration, frame_count_hint=stream.frames or None,
                         rotation=orient.rotation)
    finally:
        container.close()


def iter_video_frames(path: str | os.PathLike, *, select: Callable[[float], bool] | None = None,
                      threads: bool = True) -> Iterator[Frame]:
    """Yield the frames of a video file one at a time, in presentation order.

    ``select(time_s)`` is called once per decoded frame; only frames for which it
    returns True are converted to RGB arrays and yielded (``Frame.index`` still
    counts every decoded frame). ``select=None`` yields every frame.
    ``threads`` enables FFmpeg's threaded decoding.

    Times are ``pts * time_base`` relative to the first frame. A frame without
    pts uses its dts, else previous time + its duration, else previous time +
    1/nominal rate. A frame whose time does not increase is kept in decode order
    and given previous time + 1 microsecond (counted, one warning at the end).
    Decode errors mid-stream are counted, logged and skipped. Raises
    :class:`InputError` when the file cannot be opened, has no video stream or
    yields no frame. The input file is never modified.
    """
    path = Path(path)
    check_exists(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        if threads:
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = decoder_threads()
        count = 0
        orient = IDENTITY
        for frame, time_s in _decode(container, stream, path):
            if count == 0:
                # Read once per clip: the display matrix is a property of the stream,
                # and every frame.side_data access leaks memory in PyAV 18 (measured:
                # peak RSS grew ~0.5 MiB per access), which would make memory grow
                # with clip length.
                orient = _frame_orientation(frame)
            index = count
            count += 1
            if select is not None and not select(time_s):
                continue
            image = frame.to_ndarray(format="rgb24")
            image = apply_orientation(image, orient)
            yield Frame(index=index, time_s=time_s, image=image)
        if count == 0:
            raise InputError(path, "no frames could be decoded")
    finally:
        container.close()


def _raw_frames(container, stream, path: Path) -> Iterator[av.VideoFrame]:
    """Yield decoded frames; unreadable packets are counted, logged and skipped."""
    errors = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as err:
            # The demuxer cannot go on past this point: flush what the decoder holds.
            errors += 1
            log.warning("%s: stopped reading at a damaged part of the file (%s)", path, err)
            try:
                yield from stream.codec_context.decode(None)
            except av.FFmpegError:
                pass
            break
        try:
            frames = packet.decode()
        except av.FFmpegError as err:
            errors += 1
            log.debug("%s: decode error: %s", path, err)
            continue
        yield from frames
    if errors:
        log.warning("%s: %d packet(s) could not be read or decoded and were skipped", path, errors)


def _decode(container, stream, path: Path) -> Iterator[tuple[av.VideoFrame, float]]:
    """Yield ``(frame, time_s)`` for every decodable frame with strictly increasing times."""
    base = _fraction(stream, "time_base") or Fraction(1, 90000)
    rate = _rate(stream)
    rate_q = Fraction(rate).limit_denominator(100000) if rate else Fraction(0)
    step = 1 / rate_q if rate_q > 0 else Fraction(1, 30)  # a damaged header's rate can round to 0
    clock = RelativeClock()
    prev_abs: Fraction | None = None
    for frame in _raw_frames(container, stream, path):
        prev_abs = _frame_time(frame, base, prev_abs, step)
        time_s = clock(prev_abs)
        if not time_s <= MAX_CLIP_S:
            raise InputError(path, f"frame time {time_s:.3g} s is beyond {MAX_CLIP_S:g} s: "
                                   "damaged timestamps")
        yield frame, time_s
    clock.report(path)


def _frame_time(frame, base: Fraction, prev_abs: Fraction | None, step: Fraction) -> Fraction:
    """Absolute presentation time of ``frame`` in seconds (exact fraction)."""
    tb = _fraction(frame, "time_base") or base
    if frame.pts is not None:
        return frame.pts * Fraction(tb)
    if frame.dts is not None:
        return frame.dts * Fraction(tb)
    if prev_abs is None:
        return Fraction(0)
    if frame.duration:
        return prev_abs + frame.duration * Fraction(tb)
    return prev_abs + step
