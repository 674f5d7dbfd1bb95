"""Learning-curve plot of a training run (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from ceuspipe.fsutil import atomic_write_bytes


def plot_learning_curve(path: str | Path, rows: Sequence[dict]) -> None:
    """Write a PNG with training loss and validation Dice/IoU per epoch.

    ``rows`` are ``metrics.csv`` rows (keys epoch, loss, val_dice, val_iou).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    epochs = [int(r["epoch"]) for r in rows]
    ax1.plot(epochs, [float(r["loss"]) for r in rows], marker=".")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (Dice + BCE)")
    ax2.plot(epochs, [float(r["val_dice"]) for r in rows], marker=".", label="Dice")
    ax2.plot(epochs, [float(r["val_iou"]) for r in rows], marker=".", label="IoU")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
