"""Write and read ``tic.csv`` (one row per frame) and ``tic.json`` (the summary).

Both are written atomically (temporary file, then rename). ``tic.csv`` columns:

``frame_index, time_s, area_px, mean_gray, mean_linear, panel_mean, excluded,
empty_mask, user, flash, destruction, jump, fitted, fitted_ci90_low,
fitted_ci90_high`` then any other per-frame columns of the result (from
``segment-video``: ``repeats``, how many later frames of the clip repeated this
acquired frame and were left out of the curve). Times in s,
grey levels 0..255, linear power, ``fitted`` (the model at the frame's time) and
its 90 % confidence band in a.u., flags 0/1. A missing value (NaN) is an empty
field. With a reference region (parenchyma) the extra columns ``ref_area_px,
ref_mean_gray, ref_mean_linear, ref_fitted`` (its curve and fit) and ``ref_excluded``
(0/1) follow. :func:`read_tic_csv` loads the file back. The table has one row per frame;
the parameters with their standard errors and intervals are in ``tic.json``.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.fsutil import atomic_write_text
from ceuspipe.tic.analyse import TicResult
from ceuspipe.tic.flags import FLAG_NAMES

__all__ = ["CSV_COLUMNS", "write_tic_csv", "read_tic_csv", "write_tic_json", "read_tic_json", "write_tic_outputs"]

_STAT_COLUMNS = ("area_px", "mean_gray", "mean_linear", "panel_mean")
CSV_COLUMNS = ("frame_index", "time_s", *_STAT_COLUMNS, "excluded", *FLAG_NAMES, "fitted", "fitted_ci90_low",
               "fitted_ci90_high")
_INT_COLUMNS = {"frame_index", "excluded", *FLAG_NAMES, "ref_excluded"}


def _fmt(v: float) -> str:
    v = float(v)
    return "" if not math.isfinite(v) else format(v, ".10g")


def write_tic_csv(result: TicResult, path: str | os.PathLike) -> None:
    """Write the per-frame table of ``result`` to ``path`` (atomically)."""
    cols = dict(result.columns)
    cols.setdefault(result.quantity, result.values)
    extra = [k for k in cols if k not in CSV_COLUMNS]
    n = result.times_s.size
    nan = np.full(n, np.nan)
    excluded = result.excluded
    lo = result.fitted_low if result.fitted_low is not None else nan
    hi = result.fitted_high if result.fitted_high is not None else nan
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_COLUMNS, *extra])
    for i in range(n):
        row = [str(int(result.frame_index[i])), _fmt(result.times_s[i])]
        row += [_fmt(cols.get(k, nan)[i]) for k in _STAT_COLUMNS]
        row.append(str(int(excluded[i])))
        row += [str(int(result.flags[k][i])) for k in FLAG_NAMES]
        row.append(_fmt(result.fitted[i]))
        row += [_fmt(lo[i]), _fmt(hi[i])]
        row += [(str(int(cols[k][i])) if k in _INT_COLUMNS else _fmt(cols[k][i])) for k in extra]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def read_tic_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a ``tic.csv``: column name -> ``(N,)`` array (int64 for index and flags,
    float64 with NaN for empty fields otherwise)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise InputError(path, f"cannot read TIC table: {exc.strerror or exc}") from None
    if not rows or rows[0][:2] != ["frame_index", "time_s"]:
        raise InputError(path, "not a tic.csv (header must start with frame_index,time_s)")
    header, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    try:
        for j, name in enumerate(header):
            vals = [r[j] for r in body]
            if name in _INT_COLUMNS:
                out[name] = np.array([int(v) for v in vals], dtype=np.int64)
            else:
                out[name] = np.array([float(v) if v != "" else np.nan for v in vals], dtype=np.float64)
    except (ValueError, IndexError) as exc:
        raise InputError(path, f"malformed TIC table: {exc}") from None
    return out


def write_tic_json(result: TicResult, path: str | os.PathLike, *, source: str | os.PathLike | dict | None = None,
                   extra: dict | None = None) -> dict:
    """Write ``result.to_json_dict()`` plus ``source`` (the clip it came from) and
    ``extra`` (e.g. mask model, dynamic range) to ``path`` atomically; returns the dict."""
    d = result.to_json_dict()
    d["source"] = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source
    if extra:
        d["extra"] = extra
    atomic_write_text(path, json.dumps(d, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return d


def read_tic_json(path: str | os.PathLike) -> dict:
    """Load a ``tic.json`` written by :func:`write_tic_json`."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot read TIC summary: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(path, f"not valid JSON: {exc}") from None
    if not isinstance(d, dict) or not str(d.get("format", "")).startswith("ceuspipe.tic/"):
        raise InputError(path, "not a ceuspipe tic.json (missing format ceuspipe.tic/N)")
    return d


def write_tic_outputs(result: TicResult, out_dir: str | os.PathLike, *, source=None, extra: dict | None = None,
                      plot: bool = True) -> dict[str, Path]:
    """Write ``tic.csv``, ``tic.json`` and (with ``plot``) ``tic.png`` into ``out_dir``.

    Returns ``{"csv": path, "json": path[, "png": path]}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "tic.csv", "json": out / "tic.json"}
    write_tic_csv(result, paths["csv"])
    if plot:
        from ceuspipe.tic.plot import plot_tic

        paths["png"] = out / "tic.png"
        plot_tic(result, paths["png"])
    write_tic_json(result, paths["json"], source=source, extra=extra)
    return paths
