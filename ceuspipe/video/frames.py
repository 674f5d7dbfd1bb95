"""What every video source hands out: frames with true times, clip metadata, clip checks.

Shared by the PyAV reader (:mod:`ceuspipe.video.pyav_source`) and the DICOM
reader (:mod:`ceuspipe.video.dicom`); :mod:`ceuspipe.video.reader` picks one per file.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError

log = logging.getLogger("ceuspipe")

#: Shortest clip (seconds of presentation time) that key-frame extraction and
#: segmentation accept: a shorter clip cannot hold a perfusion sequence.
MIN_CLIP_S = 1.0

#: Relative shortfall of a clip's duration below the minimum that still passes
#: (timing attributes are rounded: 33.3 ms per frame for 30 fps).
CLIP_LENGTH_TOLERANCE = 0.005

#: Latest frame time (seconds) believed: beyond it the timestamps are damaged (a
#: corrupted time base can put frames millions of seconds apart, and sampling
#: every second of such a "clip" would never end).
MAX_CLIP_S = 6 * 3600.0

#: Smallest step (seconds) enforced between consecutive frame times; a frame whose
#: presentation time does not increase is kept in place and moved to previous + this.
TIME_NUDGE_S = 1e-6


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``index``: 0-based position in presentation order among *all* decoded frames
    (also those a ``select`` callback rejected). ``time_s``: presentation time in
    seconds relative to the first decoded frame (first frame = 0.0), strictly
    increasing. ``image``: ``(H, W, 3) uint8`` RGB, upright (rotation applied).
    """

    index: int
    time_s: float
    image: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a clip without decoding it all.

    ``width``/``height`` are in pixels after rotation. ``codec``,
    ``nominal_fps`` (frames/s), ``duration_s`` (seconds) and ``frame_count_hint``
    come from container/DICOM metadata and are hints only: count and time the
    frames that :func:`iter_frames` yields. ``rotation`` is the counter-clockwise
    rotation in degrees (0, 90, 180 or 270) applied to make frames upright
    (mirror flips in the display matrix are applied too but not shown here).
    """

    path: Path
    kind: str  # "video" or "dicom"
    width: int
    height: int
    codec: str
    nominal_fps: float | None
    duration_s: float | None
    frame_count_hint: int | None
    rotation: int


class RelativeClock:
    """Turn absolute presentation times into seconds since the first frame, strictly increasing.

    Call it once per frame in presentation order with the absolute time
    (``Fraction`` or ``float`` seconds). A time that does not increase is kept in
    place (frame order is never changed) and moved to previous + ``TIME_NUDGE_S``;
    ``nudged`` counts how often that happened.
    """

    def __init__(self) -> None:
        self.first: Fraction | float | None = None
        self.prev: float | None = None
        self.nudged = 0

    def __call__(self, abs_t: Fraction | float) -> float:
        if self.first is None:
            self.first = abs_t
        t = float(abs_t - self.first)
        if self.prev is not None and not t > self.prev:  # also catches NaN
            self.nudged += 1
            t = self.prev + TIME_NUDGE_S
        self.prev = t
        return t

    def report(self, path) -> None:
        """Log one warning if any time had to be moved."""
        if self.nudged:
            log.warning("%s: %d frame(s) had non-increasing timestamps; kept in order, "
                        "each moved %g s after the previous frame", path, self.nudged, TIME_NUDGE_S)


def clip_duration_s(n_frames: int, last_time_s: float) -> float:
    """Seconds covered by ``n_frames`` frames whose last one is shown at ``last_time_s``
    (first at 0): the last time plus one mean frame interval; 0.0 for a single frame."""
    if n_frames <= 1:
        return 0.0
    return float(last_time_s) * n_frames / (n_frames - 1)


def check_clip_length(path: str | os.PathLike, n_frames: int, last_time_s: float,
                      minimum_s: float = MIN_CLIP_S) -> float:
    """Return :func:`clip_duration_s`; raise :class:`InputError` when it is under ``minimum_s``.

    A clip whose duration falls short by less than :data:`CLIP_LENGTH_TOLERANCE`
    (relative) passes: a 30-frame cine stored with FrameTime 33.3 ms covers
    0.999 s, and is the 1 s clip it was recorded as. The message states what was
    measured: the time from the first to the last frame, and the frame interval.
    """
    duration = clip_duration_s(n_frames, last_time_s)
    if n_frames == 1:
        raise InputError(path, f"a single frame, not a clip (at least {minimum_s:g} s of video needed)")
    if duration < minimum_s * (1.0 - CLIP_LENGTH_TOLERANCE):
        step_ms = 1000.0 * last_time_s / (n_frames - 1)
        raise InputError(path, f"frames span {_floor3(last_time_s)} s from first to last ({n_frames} frames, "
                               f"one every {step_ms:.1f} ms: {_floor3(duration)} s of video), shorter "
                               f"than the {minimum_s:g} s needed")
    return duration


def _floor3(seconds: float) -> str:
    """``seconds`` with three decimals, rounded down (so a short clip never reads as long enough)."""
    return f"{math.floor(seconds * 1000.0) / 1000.0:.3f}"


def check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        raise InputError(path, "is a folder, not a video file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read (permission denied)")
