"""1 fps sampling by presentation time and top-k key-frame selection.

The paper (Meng et al., ISBI 2022) down-samples each exam to 1 fps and keeps
the k = 40 samples with the largest grey-level change from the previous
sample. Definitions used here:

* Sample ``n`` (``n = 0, 1, 2, ...``) is the first frame whose time is
  ``>= n / sample_fps`` seconds after the first frame. A gap in the video can
  make one frame the sample of several ``n``; each keeps its own ``n``.
* Score of sample ``n >= 1``: mean absolute difference of the 0-255 grey
  levels (BT.601 luma of the RGB frame) of the CEUS panel between samples
  ``n`` and ``n - 1``; sample 0 scores 0.
* The k highest scores are kept, ties going to the earlier sample, and
  reported in time order.

The pure functions (:func:`sample_indices`, :func:`change_scores`,
:func:`select_top_k`) work on arrays; :class:`TimeSampler` and
:class:`TopK` are their streaming forms used by the exam driver in
:mod:`ceuspipe.keyframes_run`, whose memory is bounded by k frames whatever
the clip length.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Sequence

import cv2
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
    """Streaming form of :func:`sample_indices`.

    Call with each decoded frame's time (seconds from the first frame, in
    presentation order); it returns the sample numbers ``n`` this frame
    stands for (usually zero or one of them, several after a gap).
    """

    def __init__(self, sample_fps: float = 1.0):
        if sample_fps <= 0:
            raise ValueError("sample_fps must be positive")
        self.sample_fps = float(sample_fps)
        self.next_n = 0

    def samples_for(self, time_s: float) -> list[int]:
        """Sample numbers whose target time has been reached by ``time_s``."""
        reached = int(math.floor(time_s * self.sample_fps + 1e-9))
        if reached < self.next_n:
            return []
        ns = list(range(self.next_n, reached + 1))
        self.next_n = reached + 1
        return ns

    def __call__(self, time_s: float) -> bool:
        """True when the frame at ``time_s`` is a sample (a ``select`` callback)."""
        return int(math.floor(time_s * self.sample_fps + 1e-9)) >= self.next_n


def change_score(gray: np.ndarray, previous_gray: np.ndarray | None) -> float:
    """Mean absolute grey-level difference between two ``(H, W)`` uint8 panels (0 without a previous one)."""
    if previous_gray is None:
        return 0.0
    return float(cv2.absdiff(gray, previous_gray).mean(dtype=np.float64))


def change_scores(grays: Sequence[np.ndarray]) -> np.ndarray:
    """Scores of a sequence of ``(H, W)`` uint8 CEUS panels (first is 0)."""
    out = np.zeros(len(grays), dtype=np.float64)
    for n in range(1, len(grays)):
        out[n] = change_score(grays[n], grays[n - 1])
    return out


def select_top_k(scores: Sequence[float], k: int = 40) -> np.ndarray:
    """Indices of the ``k`` highest scores, ties to the earlier index, sorted by time."""
    scores = np.asarray(scores, dtype=np.float64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(scores.size), -scores))  # by score desc, then index asc
    return np.sort(order[:k]).astype(np.int64)


class TopK:
    """Keeps the ``k`` best ``(score, n, payload)`` seen so far, with the tie rule of :func:`select_top_k`.

    Memory is bounded by ``k`` payloads (e.g. the k key-frame images).
    """

    def __init__(self, k: int):
        self.k = int(k)
        # Min-heap on (score, -n): the root is the worst kept item; among
        # equal scores the later sample is worse, so earlier samples win ties.
        self._heap: list[tuple[float, int, Any]] = []

    def would_keep(self, score: float, n: int) -> bool:
        """True when pushing ``(score, n)`` now would keep it (lets callers skip building payloads)."""
        if len(self._heap) < self.k:
            return self.k > 0
        return (float(score), -int(n)) > self._heap[0][:2]

    def push(self, score: float, n: int, payload: Any) -> None:
        if not self.would_keep(score, n):
            return
        item = (float(score), -int(n), payload)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)

    def items(self) -> list[tuple[float, int, Any]]:
        """Kept items as ``(score, n, payload)`` in time order."""
        return sorted(((s, -m, p) for s, m, p in self._heap), key=lambda it: it[1])

    def __len__(self) -> int:
        return len(self._heap)
