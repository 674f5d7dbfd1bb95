"""PNG plot of a time-intensity curve and its fit (matplotlib Agg, no pyplot state)."""

from __future__ import annotations

import io
import math
import os

import numpy as np

from ceuspipe.fsutil import atomic_write_bytes
from ceuspipe.tic.analyse import TicResult
from ceuspipe.tic.models import get_model

__all__ = ["plot_tic"]


def plot_tic(result: TicResult, path: str | os.PathLike, *, title: str | None = None, dpi: int = 100) -> None:
    """Save a plot of ``result`` to ``path`` (PNG, written atomically).

    Shows the frames used (dots), excluded frames (crosses, by flag), the fitted
    curve (dashed beyond the last used frame) with its 90 % confidence band, TI,
    TTP and TO with their 90 % intervals (error bars), and PE above the offset
    with its interval; parameters flagged extrapolated are marked with ``*``,
    uncertain ones (interval wider than the value) with ``?``. With a reference
    region: its frames and fit, and rPE and dTTP in the corner.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    t, y = result.times_s, result.values
    ex = result.excluded
    ax.plot(t[~ex], y[~ex], ".", ms=3, color="0.35", label="frames used")
    markers = {"flash": ("x", "tab:red"), "destruction": ("v", "tab:purple"), "jump": ("x", "tab:orange"),
               "user": ("s", "tab:gray")}
    for name, (mk, col) in markers.items():
        sel = result.flags[name] & np.isfinite(y)
        if sel.any():
            ax.plot(t[sel], y[sel], mk, ms=5, color=col, label=f"{name} ({int(sel.sum())})")
    used_t = t[~ex & np.isfinite(t)]
    if result.params and used_t.size:
        p = result.parameters
        t_end = float(np.nanmax(t))
        to = p["TO"].value
        t_hi = max(t_end, to if math.isfinite(to) and to < t_end + 2 * (t_end - float(np.nanmin(t))) else t_end)
        tt = np.linspace(float(np.nanmin(t)), t_hi, 1000)
        fc = get_model(result.model)(tt, result.params)
        last = float(used_t.max())
        ax.plot(tt[tt <= last], fc[tt <= last], "-", color="tab:blue", lw=1.5, label=f"{result.model} fit")
        if np.any(tt > last):
            ax.plot(tt[tt >= last], fc[tt >= last], "--", color="tab:blue", lw=1.2, label="extrapolated")
        if result.fitted_low is not None and np.any(np.isfinite(result.fitted_low)):
            order = np.argsort(t)
            ax.fill_between(t[order], result.fitted_low[order], result.fitted_high[order], color="tab:blue",
                            alpha=0.2, lw=0, label="90 % band")
        if result.success:
            O = result.params["O"]
            for name, col in (("TI", "tab:green"), ("TTP", "tab:red"), ("TO", "tab:brown")):
                v = p[name].value
                if math.isfinite(v):
                    mark = ("*" if p[name].extrapolated else "") + ("?" if p[name].uncertain else "")
                    half = 0.5 * (p[name].ci_high - p[name].ci_low)
                    pm = f" ± {half:.1f}" if math.isfinite(half) else ""
                    ax.axvline(v, color=col, lw=0.8, ls=":", label=f"{name}{mark} {v:.1f}{pm} s")
            pe, ttp = p["PE"], p["TTP"]
            ax.axhline(O + pe.value, color="tab:red", lw=0.6, ls=":")
            ax.axhline(O, color="0.6", lw=0.6, ls=":")
            if math.isfinite(pe.ci_low) and math.isfinite(ttp.ci_low):
                ax.errorbar([ttp.value], [O + pe.value], xerr=[[ttp.value - ttp.ci_low], [ttp.ci_high - ttp.value]],
                            yerr=[[pe.value - pe.ci_low], [pe.ci_high - pe.value]], fmt="o", ms=3,
                            color="tab:red", capsize=3, lw=1)
            half = 0.5 * (pe.ci_high - pe.ci_low)
            pm = f" ± {half:.2g}" if math.isfinite(half) else ""
            ax.annotate(f"PE{'?' if pe.uncertain else ''} {pe.value:.3g}{pm} a.u. (90 %)", (ttp.value, O + pe.value),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
    ref = result.reference
    if ref is not None:
        rex = ref.excluded
        ax.plot(ref.times_s[~rex], ref.values[~rex], ".", ms=3, color="tab:olive", label="reference region")
        if ref.params:
            order = np.argsort(ref.times_s)
            ax.plot(ref.times_s[order], ref.fitted[order], "-", color="tab:green", lw=1.2,
                    label=f"reference fit (QOF {ref.qof:.0f}%)" if ref.success else "reference fit (failed)")
        rel = result.relative or {}
        rpe, dttp = (rel.get(k, {}).get("value", math.nan) for k in ("rPE", "dTTP"))
        if math.isfinite(rpe):
            ax.text(0.01, 0.98, f"rPE {rpe:.2f}   dTTP {dttp:+.1f} s", transform=ax.transAxes, fontsize=8,
                    va="top")
    status = f"QOF {result.qof:.1f}%" if result.success else f"fit failed: {result.reason}"
    ax.set_title(title or f"Time-intensity curve ({result.quantity}) - {status}", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mean linear power (a.u.)" if result.quantity == "mean_linear" else result.quantity)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
