"""Per-frame accumulation of ROI statistics while a clip streams by.

:class:`TicAccumulator` keeps only a few scalars per frame (area, mean grey,
mean linear power, whole-panel mean grey), so its memory does not grow with
the panel size and never holds on to frames or masks.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

from ceuspipe.tic.analyse import TicResult, analyse_curve
from ceuspipe.tic.linearize import _check_dr, mean_gray, mean_linear_power, to_gray

__all__ = ["TicAccumulator", "QUANTITIES"]

QUANTITIES = ("mean_linear", "mean_gray")


class TicAccumulator:
    """Collect ``(index, time_s)`` and ROI statistics frame by frame, then analyse.

    ``dynamic_range_db``: the display dynamic range used to linearise grey levels.
    """

    def __init__(self, dynamic_range_db: float = 60.0):
        self.dynamic_range_db = _check_dr(dynamic_range_db)
        self._index = array("q")
        self._cols = {k: array("d") for k in ("time_s", "area_px", "mean_gray", "mean_linear", "panel_mean",
                                               "repeats")}

    def __len__(self) -> int:
        return len(self._index)

    def add(self, index: int, time_s: float, ceus_gray_panel: np.ndarray, mask: np.ndarray,
            panel_mean: float | None = None) -> None:
        """Add one frame.

        ``ceus_gray_panel``: ``(H, W)`` uint8 grey CEUS panel (``(H, W, 3)`` RGB is
        converted to luma); ``mask``: ``(H, W)``, non-zero inside the ROI;
        ``time_s``: the frame's presentation time (s); ``panel_mean``: the whole
        panel's mean grey for flash detection, computed from the panel when None.
        An empty mask gives NaN means (the frame is flagged ``empty_mask``).
        """
        g = to_gray(ceus_gray_panel)
        m = np.asarray(mask)
        area = int(np.count_nonzero(m)) if m.shape == g.shape else 0
        lin = mean_linear_power(g, m, self.dynamic_range_db)
        gm = mean_gray(g, m)
        pm = float(np.mean(g, dtype=np.float64)) if panel_mean is None else float(panel_mean)
        self.add_values(index, time_s, area_px=area, mean_gray=gm, mean_linear=lin, panel_mean=pm)

    def add_values(self, index: int, time_s: float, *, area_px: float, mean_gray: float,
                   mean_linear: float, panel_mean: float = math.nan) -> None:
        """Add one frame's precomputed statistics (grey 0..255, linear power a.u.)."""
        self._index.append(int(index))
        for k, v in (("time_s", time_s), ("area_px", area_px), ("mean_gray", mean_gray),
                     ("mean_linear", mean_linear), ("panel_mean", panel_mean), ("repeats", 0.0)):
            self._cols[k].append(float(v))

    def add_repeat(self) -> None:
        """Count one more repeat of the last added frame (a screen capture showing the same
        acquired frame again): it is not a new sample; ``repeats`` in the table counts them."""
        if len(self._index):
            self._cols["repeats"][-1] += 1.0

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of the per-frame columns: ``frame_index`` (int64) and float64 ``(N,)``."""
        out = {"frame_index": np.asarray(self._index, dtype=np.int64)}
        out.update({k: np.asarray(v, dtype=np.float64) for k, v in self._cols.items()})
        return out

    def result(self, model: str = "lognormal", *, quantity: str = "mean_linear", exclude=None,
               **kwargs) -> TicResult:
        """Analyse the collected curve (see :func:`~ceuspipe.tic.analyse.analyse_curve`).

        ``quantity``: ``"mean_linear"`` (default, the correct one) or ``"mean_gray"``
        (for comparison only). Frames are analysed in the order they were added.
        """
        if quantity not in QUANTITIES:
            from ceuspipe.errors import InputError

            raise InputError(None, f"unknown TIC quantity {quantity!r}; choose one of {', '.join(QUANTITIES)}")
        a = self.arrays()
        pm = a["panel_mean"]
        res = analyse_curve(
            a["time_s"], a[quantity], model=model, exclude=exclude,
            panel_means=pm if np.any(np.isfinite(pm)) else None,
            frame_index=a["frame_index"],
            columns={k: a[k] for k in ("area_px", "mean_gray", "mean_linear", "panel_mean", "repeats")},
            quantity=quantity, **kwargs,
        )
        res.settings["dynamic_range_db"] = self.dynamic_range_db
        return res
