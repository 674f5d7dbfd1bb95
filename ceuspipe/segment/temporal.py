"""Optional temporal smoothing of lesion probabilities across neighbouring frames.

``window = 0`` (or 1) is off. ``window = N >= 2`` replaces each frame's
probability map (model resolution, ``(S, S) float32``) by the per-pixel
**median** over the N processed frames centred on it (frames ``i - N//2`` to
``i + N//2`` for odd N; for even N one more frame before than after), truncated
at the clip's ends. "Neighbouring" counts processed frames, so with
``--sample-fps`` the neighbours are the sampled frames. The median removes
single-frame flicker (a flash or a frame where the lesion briefly vanishes)
without blurring edges the way a mean would.

Streaming: a frame leaves the smoother ``N//2`` frames after it entered, so
memory holds at most N frames whatever the clip length.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import numpy as np


class TemporalMedian:
    """Centred running median of probability maps with a bounded delay.

    ``push(item, prob)`` yields ``(item, smoothed_prob)`` pairs that are ready;
    ``flush()`` yields the rest at the end of the clip. ``item`` is carried along
    unchanged (the frame the map belongs to).
    """

    def __init__(self, window: int):
        if window < 0:
            raise ValueError("temporal smoothing window must be >= 0")
        self.window = int(window)
        self.after = self.window // 2 if self.window >= 2 else 0
        self.before = self.window - 1 - self.after if self.window >= 2 else 0
        self._probs: deque[np.ndarray] = deque()
        self._items: deque[Any] = deque()
        self._next = 0      # position (in the deques) of the next frame to emit
        self._count = 0

    @property
    def enabled(self) -> bool:
        return self.window >= 2

    def _emit(self, final: bool) -> Iterator[tuple[Any, np.ndarray]]:
        while self._next < len(self._probs) - (0 if final else self.after):
            lo = max(0, self._next - self.before)
            hi = min(len(self._probs), self._next + self.after + 1)
            stack = np.stack(list(self._probs)[lo:hi])
            smoothed = np.median(stack, axis=0).astype(np.float32)
            yield self._items[self._next], smoothed
            self._next += 1
            # Drop what no future frame needs.
            while self._next - self.before > 0:
                self._probs.popleft()
                self._items.popleft()
                self._next -= 1

    def push(self, item: Any, prob: np.ndarray) -> Iterator[tuple[Any, np.ndarray]]:
        """Add a frame's ``(S, S)`` map; yield the frames whose window is complete."""
        if not self.enabled:
            yield item, prob
            return
        self._probs.append(np.asarray(prob, dtype=np.float32))
        self._items.append(item)
        yield from self._emit(final=False)

    def flush(self) -> Iterator[tuple[Any, np.ndarray]]:
        """Yield every frame still held (the last ``N//2``), with truncated windows."""
        if not self.enabled:
            return
        yield from self._emit(final=True)
        self._probs.clear()
        self._items.clear()
        self._next = 0
