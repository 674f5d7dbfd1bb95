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
REFERENCE_COLUMNS = ("ref_area_px", "ref_mean_gray", "ref_mean_linear")


class TicAccumulator:
    """Collect ``(index, time_s)`` and ROI statistics frame by frame, then analyse.

    ``dynamic_range_db``: the display dynamic range used to linearise grey levels.
    ``reference``: also collect a reference (parenchyma) region per frame
    (``reference_mask`` of :meth:`add`): columns ``ref_area_px``, ``ref_mean_gray``,
    ``ref_mean_linear``; :meth:`result` then fits it too and reports relative parameters.
    """

    def __init__(self, dynamic_range_db: float = 60.0, *, reference: bool = False):
        self.dynamic_range_db = _check_dr(dynamic_range_db)
        self.reference = bool(reference)
        self._index = array("q")
        names = ["time_s", "area_px", "mean_gray", "mean_linear", "panel_mean", "repeats"]
        if self.reference:
            names += list(REFERENCE_COLUMNS)
        self._cols = {k: array("d") for k in names}

    def __len__(self) -> int:
        return len(self._index)

    def add(self, index: int, time_s: float, ceus_gray_panel: np.ndarray, mask: np.ndarray,
            panel_mean: float | None = None, reference_mask: np.ndarray | None = None) -> None:
        """Add one frame.

        ``ceus_gray_panel``: ``(H, W)`` uint8 grey CEUS panel (``(H, W, 3)`` RGB is
        converted to luma); ``mask``: ``(H, W)``, non-zero inside the ROI;
        ``time_s``: the frame's presentation time (s); ``panel_mean``: the whole
        panel's mean grey for flash detection, computed from the panel when None.
        An empty mask gives NaN means (the frame is flagged ``empty_mask``).
        ``reference_mask``: ``(H, W)`` reference region (with ``reference=True``; None
        or empty gives NaN reference values for the frame).
        """
        g = to_gray(ceus_gray_panel)
        m = np.asarray(mask)
        area = int(np.count_nonzero(m)) if m.shape == g.shape else 0
        lin = mean_linear_power(g, m, self.dynamic_range_db)
        gm = mean_gray(g, m)
        pm = float(np.mean(g, dtype=np.float64)) if panel_mean is None else float(panel_mean)
        ref = {}
        if self.reference:
            r = np.zeros(g.shape, bool) if reference_mask is None else np.asarray(reference_mask)
            ok = r.shape == g.shape
            ref = {"ref_area_px": int(np.count_nonzero(r)) if ok else 0,
                   "ref_mean_gray": mean_gray(g, r) if ok else math.nan,
                   "ref_mean_linear": mean_linear_power(g, r, self.dynamic_range_db) if ok else math.nan}
        self.add_values(index, time_s, area_px=area, mean_gray=gm, mean_linear=lin, panel_mean=pm, **ref)

    def add_values(self, index: int, time_s: float, *, area_px: float, mean_gray: float,
                   mean_linear: float, panel_mean: float = math.nan, ref_area_px: float = 0.0,
                   ref_mean_gray: float = math.nan, ref_mean_linear: float = math.nan) -> None:
        """Add one frame's precomputed statistics (grey 0..255, linear power a.u.); the
        ``ref_*`` values are kept only with ``reference=True``."""
        self._index.append(int(index))
        vals = [("time_s", time_s), ("area_px", area_px), ("mean_gray", mean_gray),
                ("mean_linear", mean_linear), ("panel_mean", panel_mean), ("repeats", 0.0)]
        if self.reference:
            vals += [("ref_area_px", ref_area_px), ("ref_mean_gray", ref_mean_gray),
                     ("ref_mean_linear", ref_mean_linear)]
        for k, v in vals:
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
        With ``reference=True`` the reference curve (``ref_`` + quantity) is analysed
        with the same settings and attached as ``result.reference``, with
        ``result.relative`` (:func:`~ceuspipe.tic.reference.relative_parameters`) and
        the per-frame columns ``ref_*``, ``ref_fitted`` and ``ref_excluded``.
        """
        if quantity not in QUANTITIES:
            from ceuspipe.errors import InputError

            raise InputError(None, f"unknown TIC quantity {quantity!r}; choose one of {', '.join(QUANTITIES)}")
        a = self.arrays()
        pm = a["panel_mean"]
        pms = pm if np.any(np.isfinite(pm)) else None
        res = analyse_curve(
            a["time_s"], a[quantity], model=model, exclude=exclude, panel_means=pms,
            frame_index=a["frame_index"],
            columns={k: a[k] for k in ("area_px", "mean_gray", "mean_linear", "panel_mean", "repeats")},
            quantity=quantity, **kwargs,
        )
        res.settings["dynamic_range_db"] = self.dynamic_range_db
        if self.reference:
            from ceuspipe.tic.reference import relative_parameters

            ref = analyse_curve(a["time_s"], a["ref_" + quantity], model=model, exclude=exclude, panel_means=pms,
                                frame_index=a["frame_index"], quantity=quantity, **kwargs)
            ref.settings["dynamic_range_db"] = self.dynamic_range_db
            res.reference = ref
            res.relative = relative_parameters(res, ref)
            for k in REFERENCE_COLUMNS:
                res.columns[k] = a[k]
            res.columns["ref_fitted"] = ref.fitted
            res.columns["ref_excluded"] = ref.excluded.astype(np.float64)
        return res
