"""How much each panel changes over a clip, measured one way wherever it is measured.

Feeds the swapped-panel warning (:func:`ceuspipe.video.layout.swapped_panels_warning`):
contrast speckle changes from one second to the next, a frozen or slowly moving B-mode
image much less. Key frames (1 fps samples of full-resolution crops) and segment-video
(every acquired frame at model input size) both measure it here, so the same thresholds
mean the same thing: the mean absolute grey change (grey levels, 0-255) between samples
at least :data:`MIN_INTERVAL_S` apart, of each panel area-averaged to
:data:`CHANGE_SIDE` x :data:`CHANGE_SIDE` px first.
"""

from __future__ import annotations

from array import array

import cv2
import numpy as np

#: side of the square each panel is area-averaged to before its change is measured (px)
CHANGE_SIDE = 64
#: samples closer in time than this are not compared (s): about one change a second, as key frames sample
MIN_INTERVAL_S = 0.75


def _thumbnail(panel: np.ndarray, scale: float) -> np.ndarray:
    small = cv2.resize(np.asarray(panel, dtype=np.float32), (CHANGE_SIDE, CHANGE_SIDE),
                       interpolation=cv2.INTER_AREA)
    return small * np.float32(scale) if scale != 1.0 else small


class PanelChangeMeter:
    """Per-sample changes of the CEUS and the B-mode panel; 8 bytes a second of clip each.

    ``ceus_changes``, ``us_changes``: grey levels, one per compared pair of samples."""

    def __init__(self) -> None:
        self.ceus_changes, self.us_changes = array("d"), array("d")
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None

    def add(self, time_s: float, ceus: np.ndarray, us: np.ndarray, scale: float = 1.0) -> None:
        """One sample at ``time_s`` (s): ``ceus``, ``us`` are ``(h, w)`` grey panels of any size,
        in grey levels times ``1 / scale`` (``scale=255`` for model inputs in ``[0, 1]``).
        Ignored when less than :data:`MIN_INTERVAL_S` after the last sample taken."""
        if self._last is not None and time_s - self._last[0] < MIN_INTERVAL_S:
            return
        c, u = _thumbnail(ceus, scale), _thumbnail(us, scale)
        if self._last is not None:
            _, pc, pu = self._last
            self.ceus_changes.append(float(np.abs(c - pc).mean(dtype=np.float64)))
            self.us_changes.append(float(np.abs(u - pu).mean(dtype=np.float64)))
        self._last = (time_s, c, u)
