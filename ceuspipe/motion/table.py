"""``motion.csv`` (one row per frame) and the motion summary for ``segment.json``.

Columns ``frame_index, time_s, dx_px, dy_px, score, used``: time in s, displacement
in panel px (the frame shows the reference moved by ``(dx, dy)``), score the
normalised cross-correlation in ``[-1, 1]``, ``used`` 0/1 (0: out of plane). Written
atomically; :func:`read_motion_csv` loads it back.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from ceuspipe.errors import InputError
from ceuspipe.fsutil import atomic_write_text
from ceuspipe.motion.estimator import SCORE_THRESHOLD
from ceuspipe.motion.frame import FrameMotion

MOTION_CSV_COLUMNS = ("frame_index", "time_s", "dx_px", "dy_px", "score", "used")


def write_motion_csv(path: str | os.PathLike, motions: Iterable[FrameMotion]) -> None:
    """Write one row per :class:`FrameMotion` to ``path`` (atomically)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MOTION_CSV_COLUMNS)
    for m in motions:
        w.writerow([int(m.index), f"{m.time_s:.6f}", f"{m.dx_px:.4f}", f"{m.dy_px:.4f}", f"{m.score:.4f}",
                    int(bool(m.used))])
    atomic_write_text(path, buf.getvalue())


def read_motion_csv(path: str | os.PathLike) -> list[FrameMotion]:
    """Load a ``motion.csv``; :class:`InputError` naming the file when it is unreadable
    or not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read motion table: {exc}") from None
    table = csv.DictReader(io.StringIO(text))
    if tuple(table.fieldnames or ()) != MOTION_CSV_COLUMNS:
        raise InputError(path, f"not a motion.csv (header must be {','.join(MOTION_CSV_COLUMNS)})")
    try:
        return [FrameMotion(int(r["frame_index"]), float(r["time_s"]), float(r["dx_px"]), float(r["dy_px"]),
                            float(r["score"]), r["used"] == "1") for r in table]
    except (TypeError, ValueError) as exc:  # a short row gives None
        raise InputError(path, f"malformed motion table: {exc}") from None


def motion_summary(motions: Sequence[FrameMotion], score_threshold: float = SCORE_THRESHOLD) -> dict:
    """Summary for ``segment.json``: frame counts, RMS and largest displacement (px,
    over the frames used; None without any) and the threshold that flagged the
    frames out of plane."""
    used = [m for m in motions if m.used]
    dist = [math.hypot(m.dx_px, m.dy_px) for m in used]
    return {
        "frames": len(motions),
        "frames_used": len(used),
        "frames_out_of_plane": len(motions) - len(used),
        "rms_displacement_px": round(math.sqrt(sum(d * d for d in dist) / len(dist)), 4) if dist else None,
        "max_displacement_px": round(max(dist), 4) if dist else None,
        "score_threshold": score_threshold,
        "model": "translation of the B-mode panel against the median of its first seconds",
    }
