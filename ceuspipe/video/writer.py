"""Streaming video writer over PyAV with explicit presentation times.

Frames go in one at a time with their time in seconds, so variable frame rate
and 29.97 fps timing survive a round trip. The file appears under its final
name only when :meth:`VideoWriter.close` succeeds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ceuspipe.fsutil import AtomicWriterContext, output_error, set_default_mode

# Codecs whose encoders reject a 1/90000 time base (MPEG-4 part 2: denominator <= 65535).
_SMALL_TIMEBASE = {"mpeg4", "msmpeg4", "msmpeg4v2", "h263"}
_DEFAULT_PIX_FMT = {"libx264": "yuv420p", "libx265": "yuv420p", "h264": "yuv420p",
                    "ffv1": "gray", "mjpeg": "yuvj420p", "mpeg4": "yuv420p"}


class VideoWriter(AtomicWriterContext):
    """Encode ``(H, W, 3)`` RGB or ``(H, W)`` grey ``uint8`` frames to ``path``.

    ``codec`` is an FFmpeg encoder name (``libx264`` for overlays, ``ffv1`` with
    ``pix_fmt="gray"`` for lossless masks). ``fps`` is the nominal rate written
    to the header; each frame's real time comes from :meth:`write`.
    ``options`` are encoder options (e.g. ``{"crf": "18", "preset": "veryfast"}``).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, *, fps: float = 30.0,
                 codec: str = "libx264", pix_fmt: str | None = None,
                 options: dict[str, str] | None = None, threads: int = 0):
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix,
                                   dir=self.path.parent)
        os.close(fd)
        set_default_mode(tmp)
        self._tmp = Path(tmp)
        self._container = av.open(str(self._tmp), "w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate, options=options or {})
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = pix_fmt or _DEFAULT_PIX_FMT.get(codec, "yuv420p")
        if codec in _SMALL_TIMEBASE:
            self._time_base = Fraction(1, min(65535, max(1, round(float(rate) * 1000))))
        else:
            self._time_base = Fraction(1, 90000)
        self._stream.codec_context.time_base = self._time_base
        self._stream.time_base = self._time_base
        if threads:
            self._stream.codec_context.thread_count = threads
        self._last_pts: int | None = None
        self.frames_written = 0
        self._closed = False

    def write(self, image: np.ndarray, time_s: float) -> None:
        """Encode one frame shown at ``time_s`` seconds (must increase).

        A disk error (full, read-only) drops the partial file and raises
        :class:`~ceuspipe.errors.OutputError` naming :attr:`path`.
        """
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {image.shape[:2]} does not match writer {(self.height, self.width)}")
        image = np.ascontiguousarray(image)
        fmt = "gray" if image.ndim == 2 else "rgb24"
        frame = av.VideoFrame.from_ndarray(image, format=fmt)
        pts = round(time_s / self._time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = self._time_base
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except OSError as exc:
            self.abort()
            raise output_error(exc, self.path) from exc
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file to its final name."""
        if self._closed:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException as exc:
            self.abort()
            raise output_error(exc, self.path) from exc
        self._closed = True

    def abort(self) -> None:
        """Drop the partial output (nothing appears under the final name)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._container.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)
