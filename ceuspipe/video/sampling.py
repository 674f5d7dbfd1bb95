"""Sampling frames by presentation time (never by frame index).

Sample ``n`` (``n = 0, 1, 2, ...``) is the first frame whose time is
``>= n / sample_fps`` seconds after the first frame; a gap in the video can make
one frame the sample of several ``n``. :func:`sample_indices` is the definition
over an array of times; :class:`TimeSampler` is the streaming form that every
stage (key frames, segment-video, calibration, layout detection) uses.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def sample_indices(times_s: Sequence[float], sample_fps: float = 1.0) -> np.ndarray:
    """Frame index chosen for each sample ``n``.

    ``times_s`` are presentation times in seconds, non-decreasing, relative or
    absolute (the first frame's time is the origin). Returns an int array of
    length ``floor((t_last - t_first) * sample_fps) + 1`` whose entry ``n`` is
    the index of the first frame with ``time - t_first >= n / sample_fps``.
    """
    times = np.asarray(times_s, dtype=np.float64)
    if times.size == 0:
        return np.zeros(0, dtype=np.int64)
    if sample_fps <= 0:
        raise ValueError("sample_fps must be positive")
    rel = times - times[0]
    n_samples = int(math.floor(rel[-1] * sample_fps + 1e-9)) + 1
    targets = np.arange(n_samples) / sample_fps
    # searchsorted 'left' gives the first index whose time >= target; a small
    # tolerance keeps frames at exactly n/fps (up to timestamp rounding) on time.
    return np.searchsorted(rel + 1e-9, targets, side="left").astype(np.int64)


def evenly_spaced(n_items: int, n_wanted: int) -> np.ndarray:
    """Indices of ``min(n_items, n_wanted)`` items spread evenly over ``range(n_items)``
    (first and last included; all of them when ``n_wanted >= n_items``)."""
    if n_items <= n_wanted:
        return np.arange(n_items)
    return np.unique(np.round(np.linspace(0, n_items - 1, n_wanted)).astype(int))


class TimeSampler:
    """Streaming form of :func:`sample_indices`, the one sampler of every stage.

    Call :meth:`samples_for` with each frame's time (seconds from the first
    frame, in presentation order); it returns the sample numbers ``n`` this
    frame stands for (usually zero or one of them, several after a gap).
    ``sample_fps=None`` makes every frame one sample (``n`` = 0, 1, 2, ...).
    Used as a reader's ``select`` callback (:meth:`__call__`), it also counts
    every decoded frame (``decoded``) and remembers the latest time
    (``last_time_s``), so a stage knows the clip's length without a second pass.
    """

    def __init__(self, sample_fps: float | None = 1.0):
        if sample_fps is not None and not sample_fps > 0:
            raise ValueError("sample_fps must be positive")
        self.sample_fps = None if sample_fps is None else float(sample_fps)
        self.next_n = 0
        self.decoded = 0
        self.last_time_s = 0.0
        #: How the source decoded the clip ("skip-nonref", "skip-tails", "full" or "dicom"; None before
        #: reading) and why it did not skip (None when it did), set via :meth:`record_path`.
        self.decode_path: str | None = None
        self.decode_note: str | None = None

    def _reached(self, time_s: float) -> int:
        if self.sample_fps is None:
            return self.next_n
        return int(math.floor(time_s * self.sample_fps + 1e-9))

    def samples_for(self, time_s: float) -> list[int]:
        """Sample numbers whose target time has been reached by ``time_s`` (marks them taken)."""
        reached = self._reached(time_s)
        if reached < self.next_n:
            return []
        ns = list(range(self.next_n, reached + 1))
        self.next_n = reached + 1
        return ns

    def plan(self, times_s: Sequence[float]) -> set[int]:
        """Positions (in ``times_s``, every frame's time in presentation order) of the frames
        this sampler will accept, given that each accepted frame is then passed to
        :meth:`samples_for` (as :mod:`ceuspipe.video.clip_stream` does). A source that
        knows all times before decoding (packet timestamps) uses it to decode only what the
        samples need; it simulates the sampler from its current state and changes nothing.
        """
        return self.shadow().plan_ahead(times_s)

    def shadow(self) -> "TimeSampler":
        """A copy of this sampler's state, for planning ahead with :meth:`plan_ahead`."""
        shadow = TimeSampler(self.sample_fps)
        shadow.next_n = self.next_n
        return shadow

    def plan_ahead(self, times_s: Sequence[float]) -> set[int]:
        """:meth:`plan` that also advances this sampler past ``times_s``, so that a
        :meth:`shadow` can plan a stream piece by piece (the next call continues where
        this one stopped)."""
        if self.sample_fps is None:
            return set(range(len(times_s)))
        keep: set[int] = set()
        for i, t in enumerate(times_s):
            if self._reached(t) >= self.next_n:
                keep.add(i)
                self.samples_for(t)
        return keep

    def record_path(self, path: str, note: str | None = None) -> None:
        """Called by the source: which decode path ran, and why it fell back (if it did)."""
        self.decode_path = path
        self.decode_note = note

    def __call__(self, time_s: float) -> bool:
        """True when the frame at ``time_s`` is a sample; counts the frame as decoded."""
        self.decoded += 1
        self.last_time_s = time_s
        return self._reached(time_s) >= self.next_n
