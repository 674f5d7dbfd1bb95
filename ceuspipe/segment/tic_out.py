"""Time-intensity curve outputs of a segmentation run: ``tic.csv``, ``tic.json``, ``tic.png``.

Per-frame scalars come from :mod:`ceuspipe.segment.run` as rows
``(frame_index, time_s, area_px, mean_gray, mean_linear, panel_mean)``:
``area_px`` the mask area in CEUS-panel pixels, ``mean_gray`` the mean grey
level (0-255) inside the mask, ``mean_linear`` the mean linearised power inside
the mask (:mod:`ceuspipe.tic.linearize`, relative to full scale; NaN for an
empty mask), ``panel_mean`` the whole CEUS panel's mean grey (flash detection).
The curve that is fitted is ``mean_linear`` (:func:`ceuspipe.tic.analyse.analyse_curve`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ceuspipe.fsutil import atomic_write_bytes, atomic_write_text

COLUMNS = ("frame_index", "time_s", "area_px", "mean_gray", "mean_linear", "panel_mean")


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    return "" if not math.isfinite(v) else f"{v:.9g}"


def analyse_rows(rows: list[tuple], model: str = "lognormal"):
    """Run :func:`~ceuspipe.tic.analyse.analyse_curve` on per-frame rows; returns a TicResult."""
    from ceuspipe.tic.analyse import analyse_curve

    arr = np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS))
    cols = {name: arr[:, i] for i, name in enumerate(COLUMNS)}
    return analyse_curve(cols["time_s"], cols["mean_linear"], model=model,
                         panel_means=cols["panel_mean"], frame_index=cols["frame_index"].astype(np.int64),
                         columns={k: cols[k] for k in ("area_px", "mean_gray", "mean_linear", "panel_mean")},
                         quantity="mean_linear")


def tic_csv_text(result) -> str:
    """CSV text: one row per frame with the scalars, the fitted curve, ``excluded`` and each flag."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    flag_names = list(result.flags)
    w.writerow([*COLUMNS, "fitted", "excluded", *flag_names])
    excluded = result.excluded
    for i in range(result.times_s.size):
        w.writerow([_fmt(int(result.frame_index[i])), _fmt(result.times_s[i]),
                    _fmt(int(result.columns["area_px"][i])), _fmt(result.columns["mean_gray"][i]),
                    _fmt(result.columns["mean_linear"][i]), _fmt(result.columns["panel_mean"][i]),
                    _fmt(result.fitted[i]), _fmt(bool(excluded[i])),
                    *(_fmt(bool(result.flags[f][i])) for f in flag_names)])
    return buf.getvalue()


def plot_png(result, title: str = "") -> bytes:
    """PNG bytes of the curve (points, excluded frames, fit) and the mask area."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100)
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    t, y, ex = result.times_s, result.values, result.excluded
    ax.plot(t[~ex], y[~ex], ".", ms=3, color="tab:blue", label="mean linear power in mask")
    if ex.any():
        ax.plot(t[ex], y[ex], "x", ms=4, color="tab:red", label="excluded frames")
    if np.isfinite(result.fitted).any():
        ax.plot(t, result.fitted, "-", color="tab:orange", label=f"{result.model} fit")
    ttp = result.parameters.get("TTP")
    if ttp is not None and math.isfinite(ttp.value):
        ax.axvline(ttp.value, color="grey", ls="--", lw=0.8, label=f"TTP {ttp.value:.1f} s")
    ax.set_ylabel("linear power (a.u.)")
    status = "" if result.success else f" (no fit: {result.reason})"
    ax.set_title((title + status)[:110], fontsize=9)
    ax.legend(fontsize=8)
    ax2.plot(t, result.columns["area_px"], "-", color="tab:green")
    ax2.set_ylabel("mask area (px)")
    ax2.set_xlabel("time (s)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_tic_outputs(folder: Path, rows: list[tuple], meta: dict, *, model: str = "lognormal") -> dict:
    """Analyse the curve and write ``tic.csv``, ``tic.json`` (meta + result) and ``tic.png``.

    Returns the JSON summary of the result (``TicResult.to_json_dict()``).
    """
    folder = Path(folder)
    result = analyse_rows(rows, model)
    summary = result.to_json_dict()
    atomic_write_text(folder / "tic.csv", tic_csv_text(result))
    doc = {**meta, "columns": {"area_px": "px", "mean_gray": "grey level 0-255",
                               "mean_linear": "linear power relative to full scale",
                               "panel_mean": "grey level 0-255 (whole CEUS panel)"},
           "tic": summary}
    atomic_write_text(folder / "tic.json", json.dumps(doc, indent=2, default=str) + "\n")
    atomic_write_bytes(folder / "tic.png", plot_png(result, Path(str(meta.get("source", ""))).name))
    return summary
