"""Per-clip check of an int8 model against its fp32 model, on a handful of frames spread over the clip.

While a clip streams through the int8 model, :data:`CHECK_FRAMES` acquired frames
spread evenly over its probed duration (``k * D / K`` s after the first frame, so
the first frame is always one; every 2**k s when the duration is unknown) also go
through the fp32 model. On each such frame both probability maps become masks at
the CEUS panel's size, and two things are compared:

* mask Dice (1 when both are empty): the mean must reach ``min_dice``
  (:data:`MIN_DICE`, as ``ceuspipe export --min-agreement``);
* the curve: the mean linear power inside each mask (the quantity the TIC fits,
  :func:`ceuspipe.tic.linearize.mean_linear_power`; an empty mask counts 0) must
  stay within :data:`MAX_CURVE_DIFFERENCE` of the fp32 checked curve's peak on
  every check frame.

When the mean Dice can no longer reach the bound (the planned frames left could
not lift it), :attr:`ClipCheck.failed_early` turns True so the caller can stop
early and redo the clip with fp32.
"""

from __future__ import annotations

import math

import numpy as np

from ceuspipe.segment.predictor import probability_to_mask
from ceuspipe.tic.linearize import mean_linear_power

CHECK_FRAMES = 8
MIN_DICE = 0.95
MAX_CURVE_DIFFERENCE = 0.05


class ClipCheck:
    """Collects int8-vs-fp32 agreement on check frames of one clip.

    ``duration_hint_s``: the clip's probed duration (s, None when unknown);
    ``threshold``: probability threshold; ``dynamic_range_db``: for linear power;
    ``max_curve_difference``: None = :data:`MAX_CURVE_DIFFERENCE`.
    :meth:`wants` is called from the decode stage for acquired frames in order;
    :meth:`add` from the inference stage for the frames it accepted.
    """

    def __init__(self, duration_hint_s: float | None, threshold: float, dynamic_range_db: float = 60.0, *,
                 min_dice: float = MIN_DICE, max_curve_difference: float | None = None,
                 frames: int = CHECK_FRAMES):
        self.threshold = float(threshold)
        self.dynamic_range_db = float(dynamic_range_db)
        self.min_dice = float(min_dice)
        self.max_curve_difference = float(MAX_CURVE_DIFFERENCE if max_curve_difference is None
                                          else max_curve_difference)
        known = duration_hint_s is not None and math.isfinite(duration_hint_s) and duration_hint_s > 0
        self.planned = frames if known else None
        self._step = duration_hint_s / frames if known else None
        self._next = 0.0
        self._t0: float | None = None
        self._chosen = 0
        self.times: list[float] = []
        self.dice: list[float] = []
        self.power_fp32: list[float] = []
        self.power_int8: list[float] = []

    def wants(self, time_s: float) -> bool:
        """Whether the acquired frame at ``time_s`` (s, increasing) is a check frame."""
        if self._t0 is None:
            self._t0 = time_s
        rel = time_s - self._t0
        if rel < self._next or (self.planned is not None and self._chosen >= self.planned):
            return False
        self._chosen += 1
        if self._step is not None:
            self._next = (math.floor(rel / self._step + 1e-9) + 1) * self._step
        else:
            self._next = max(1.0, 2.0 * rel)
        return True

    def add(self, time_s: float, grey_panel: np.ndarray, prob_fp32: np.ndarray, prob_int8: np.ndarray) -> None:
        """One check frame: ``grey_panel`` ``(h, w) uint8`` CEUS panel; probabilities ``(S, S) float32``."""
        from ceuspipe.train.metrics import dice_iou  # the training metric (1 when both are empty)

        h, w = grey_panel.shape[:2]
        m32 = probability_to_mask(prob_fp32, h, w, self.threshold).astype(bool)
        m8 = probability_to_mask(prob_int8, h, w, self.threshold).astype(bool)
        self.times.append(float(time_s))
        self.dice.append(dice_iou(m32, m8)[0])
        self.power_fp32.append(mean_linear_power(grey_panel, m32, self.dynamic_range_db) if m32.any() else 0.0)
        self.power_int8.append(mean_linear_power(grey_panel, m8, self.dynamic_range_db) if m8.any() else 0.0)

    @property
    def failed_early(self) -> bool:
        """True when the mean Dice cannot reach ``min_dice`` whatever the planned frames left give."""
        if self.planned is None or not self.dice:
            return False
        best = (sum(self.dice) + max(0, self.planned - len(self.dice))) / max(self.planned, len(self.dice))
        return best < self.min_dice

    def curve_difference(self) -> float:
        """Largest ``|P_int8 - P_fp32|`` over check frames, relative to the fp32 checked peak (0 when flat zero)."""
        if not self.dice:
            return 0.0
        a, b = np.asarray(self.power_fp32), np.asarray(self.power_int8)
        diff = float(np.max(np.abs(a - b)))
        peak = float(np.max(a))
        return diff / peak if peak > 0 else (0.0 if diff == 0 else math.inf)

    def passed(self) -> bool:
        """Both bounds met on at least one check frame."""
        return bool(self.dice) and float(np.mean(self.dice)) >= self.min_dice and \
            self.curve_difference() <= self.max_curve_difference

    def result(self) -> dict:
        """JSON-able summary: frames, their times (s), Dice mean/min, curve difference, bounds, verdict."""
        d = np.asarray(self.dice, dtype=float)
        curve = self.curve_difference()
        return {"frames": len(d), "times_s": [round(t, 4) for t in self.times],
                "dice_mean": float(d.mean()) if len(d) else None,
                "dice_min": float(d.min()) if len(d) else None,
                "curve_max_difference": curve if math.isfinite(curve) else None,
                "bounds": {"dice_mean_min": self.min_dice, "curve_max_difference": self.max_curve_difference,
                           "curve": "max |mean linear power in int8 mask - in fp32 mask| / fp32 checked peak"},
                "passed": self.passed()}
