"""``motion.png``: a clip's in-plane displacement and match score over time."""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from ceuspipe.fsutil import atomic_write_bytes
from ceuspipe.motion.frame import FrameMotion


def plot_motion(motions: Sequence[FrameMotion], path: str | os.PathLike, score_threshold: float,
                *, dpi: int = 100) -> None:
    """Save dx, dy (px) and the score against time (s), frames out of plane marked, to
    ``path`` (PNG, written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = np.array([m.time_s for m in motions], dtype=float)
    dx = np.array([m.dx_px for m in motions], dtype=float)
    dy = np.array([m.dy_px for m in motions], dtype=float)
    score = np.array([m.score for m in motions], dtype=float)
    out = ~np.array([m.used for m in motions], dtype=bool)
    fig = Figure(figsize=(8, 3.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax, ax_s = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax.plot(t, dx, "-", lw=1, color="tab:blue", label="dx (right)")
    ax.plot(t, dy, "-", lw=1, color="tab:orange", label="dy (down)")
    if out.any():
        ax.plot(t[out], dx[out], "x", ms=4, color="tab:red", label=f"out of plane ({int(out.sum())})")
    ax.set_ylabel("displacement (px)")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    ax_s.plot(t, score, "-", lw=1, color="0.3")
    ax_s.axhline(score_threshold, ls="--", lw=1, color="tab:red")
    ax_s.set_ylim(min(-0.05, float(np.nanmin(score)) - 0.05) if score.size else -0.05, 1.05)
    ax_s.set_ylabel("score")
    ax_s.set_xlabel("time (s)")
    ax_s.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
