"""The motion reference: temporal median of the first seconds' aligned frames.

Bounded: at most ``max_frames`` working images (256 px: 256 KiB each) are held, spread
evenly over ``window_s`` seconds whatever the frame rate, and released once the median
is taken; nothing is kept per frame after that.
"""

from __future__ import annotations

import numpy as np


class ReferenceBuilder:
    """Collects aligned working images ``(h, w)`` float32 from ``start_s`` for
    ``window_s`` seconds, one at most every ``window_s / max_frames`` s."""

    def __init__(self, start_s: float, window_s: float, max_frames: int):
        self._start = float(start_s)
        self._window = float(window_s)
        self._max = int(max_frames)
        self._spacing = self._window / self._max
        self._frames: list[np.ndarray] = []
        self._last = -np.inf

    def wants(self, time_s: float) -> bool:
        """Whether a frame at ``time_s`` would be kept (in the window, spaced out, room left)."""
        return (len(self._frames) < self._max and time_s < self._start + self._window
                and time_s >= self._last + self._spacing - 1e-9)

    def add(self, image: np.ndarray, time_s: float) -> None:
        """Keep ``image`` (aligned to the reference coordinates) seen at ``time_s``."""
        self._frames.append(image.astype(np.float32, copy=True))
        self._last = float(time_s)

    def complete(self, time_s: float) -> bool:
        """Whether the window has passed at ``time_s`` or no room is left."""
        return time_s >= self._start + self._window or len(self._frames) >= self._max

    def median(self) -> np.ndarray:
        """The pixelwise median ``(h, w)`` float32 of the kept images; releases them."""
        stack, self._frames = self._frames, []
        return np.median(np.stack(stack), axis=0).astype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept images."""
        return sum(f.nbytes for f in self._frames)
