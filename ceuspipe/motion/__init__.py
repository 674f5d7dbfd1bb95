"""Motion compensation for CEUS clips (issue 26): per-frame in-plane displacement of
the panels from the B-mode panel, out-of-plane frames flagged, helpers that move
panel-sized arrays between a frame and the reference, and the per-frame table.

``MotionEstimator().add(index, time_s, us_gray) -> FrameMotion`` one frame at a time;
:func:`to_reference` / :func:`from_reference` / :func:`shift_image` to apply it;
:func:`write_motion_csv`, :func:`read_motion_csv`, :func:`motion_summary` for outputs.
"""

from ceuspipe.motion.estimator import SCORE_THRESHOLD, MotionEstimator
from ceuspipe.motion.frame import FrameMotion
from ceuspipe.motion.table import MOTION_CSV_COLUMNS, motion_summary, read_motion_csv, write_motion_csv
from ceuspipe.motion.warp import from_reference, shift_image, to_reference

__all__ = ["MOTION_CSV_COLUMNS", "SCORE_THRESHOLD", "FrameMotion", "MotionEstimator", "from_reference",
           "motion_summary", "read_motion_csv", "shift_image", "to_reference", "write_motion_csv"]
