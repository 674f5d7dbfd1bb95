"""Repeated frames: a screen capture (25-30 fps) of a slower acquisition (8-15 Hz), or a
DICOM export that repeats frames, shows each acquired frame several times, equal up
to codec noise.

:class:`RepeatDetector` compares each frame with the first appearance (the
*anchor*) of the current run, on both panels: the model inputs (``(S, S)`` grey in
``[0, 1]``) are area-averaged to ``SIZE x SIZE`` and the frame is a repeat when the
larger of the two panels' mean absolute differences, in grey levels 0..255, is below
:data:`THRESHOLD`. Comparing with the anchor rather than the previous frame keeps a
slow drift from being chained into one run.

Why 32 x 32 and 1.6 grey levels (``benchmarks/measure_repeats.py --size 32
--duration 12 --seeds 1 2 --crf 18 23 28``: phantom exams 320x180 acquired at 10 Hz,
screens default / dark-start / frozen-bmode; each decoded frame re-encoded 3 times
at 30 fps with libx264; all figures at 32 x 32, grey levels):

* codec noise between repeats of one frame (vs. the anchor), maximum over all
  repeats: 0.64 at CRF 18, 1.24 at CRF 23 (the libx264 default), 2.04 at CRF 28;
* the smallest real change between consecutive acquired frames: 2.33 in the 10 Hz
  source clips (default and frozen-bmode screens; it is set by the CEUS speckle,
  redrawn every acquired frame, and is smallest before contrast arrives, where
  the echo is weakest), 2.14 after the CRF 23 re-encode;
* so 1.6 leaves a margin of about 0.4 above CRF 23 noise and 0.5 below the
  smallest real change. At CRF 28 the encoder smears new frames (smallest real
  change 1.38, below that noise of 2.04): captures that lossy are not separable
  by this rule, and the threshold is set for CRF <= 23.
* Known limit: on a screen whose CEUS panel is black before contrast arrives
  (dark-start) and with the B-mode near a breathing standstill, consecutive
  acquired frames differ by only 0.11-0.12 already in the source clip, far below
  any codec noise; they are merged. Their mask is the same either way; the curve
  loses baseline samples that carried the same value.

The numbers above are in the docstring so that a change of threshold is argued
against them; rerun the script to re-measure.
"""

from __future__ import annotations

import cv2
import numpy as np

#: side of the downscaled panels compared (pixels)
SIZE = 32
#: repeat when the larger panel mean absolute difference is below this (grey levels 0..255)
THRESHOLD = 1.6


def _small(panel: np.ndarray) -> np.ndarray:
    p = np.ascontiguousarray(panel, dtype=np.float32)
    if p.shape != (SIZE, SIZE):
        interp = cv2.INTER_AREA if min(p.shape) >= SIZE else cv2.INTER_LINEAR
        p = cv2.resize(p, (SIZE, SIZE), interpolation=interp)
    return p * np.float32(255.0)


class RepeatDetector:
    """``detector(index, ceus_in, us_in) -> anchor index or None``.

    Inputs: one frame's model inputs, ``(S, S) float32`` in ``[0, 1]``. Returns the
    index of the frame this one repeats (the run's first appearance), or None for a
    new acquired frame (which becomes the anchor). ``enabled=False``: never a repeat.
    """

    def __init__(self, enabled: bool = True, threshold: float = THRESHOLD):
        self.enabled = bool(enabled)
        self.threshold = float(threshold)
        self._anchor: tuple[int, np.ndarray, np.ndarray] | None = None

    def difference(self, ceus_in: np.ndarray, us_in: np.ndarray) -> float:
        """Larger panel mean absolute difference to the anchor (grey levels); inf without one."""
        if self._anchor is None:
            return float("inf")
        _, c, u = self._anchor
        return max(float(np.abs(_small(ceus_in) - c).mean()), float(np.abs(_small(us_in) - u).mean()))

    def __call__(self, index: int, ceus_in: np.ndarray, us_in: np.ndarray) -> int | None:
        if not self.enabled:
            return None
        if self.difference(ceus_in, us_in) < self.threshold:
            return self._anchor[0]
        self._anchor = (int(index), _small(ceus_in), _small(us_in))
        return None
