"""Top-k key-frame selection, on arrays and streaming.

The paper (Meng et al., ISBI 2022) down-samples each exam to 1 fps and keeps
the k = 40 samples with the largest grey-level change from the previous
sample. Definitions used here:

* Sample ``n`` (``n = 0, 1, 2, ...``) is the first frame whose time is
  ``>= n / sample_fps`` seconds after the first frame. A gap in the video can
  make one frame the sample of several ``n``; each keeps its own ``n``.
* Score of sample ``n``: given by the run's scorer (:mod:`ceuspipe.keyframes.scorers`;
  the paper's, the default, is the mean absolute grey-level change of the CEUS
  panel from sample ``n - 1``; sample 0 scores 0).
* The k highest scores are kept, ties going to the earlier sample, and
  reported in time order.

The pure functions (:func:`ceuspipe.video.sampling.sample_indices`,
:func:`select_top_k`) work on arrays; :class:`ceuspipe.video.sampling.TimeSampler`
and :class:`TopK` are their streaming forms used by the exam driver in
:mod:`ceuspipe.keyframes.run`, whose memory is bounded by k frames whatever the
clip length.
"""

from __future__ import annotations

import heapq
from typing import Any, Sequence

import numpy as np


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
