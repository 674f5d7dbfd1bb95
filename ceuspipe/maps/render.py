"""PNG of one perfusion map over the CEUS panel, with a colour bar and the lesion contour
(matplotlib Agg, no pyplot state)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ceuspipe.fsutil import atomic_write_bytes, safe_name

__all__ = ["render_map_png", "render_maps"]


def render_map_png(
    path: str | os.PathLike,
    values: np.ndarray,
    name: str,
    unit: str,
    ceus_panel_gray: np.ndarray | None = None,
    lesion_contour_mask: np.ndarray | None = None,
    *,
    block_px: int = 1,
    origin_px: tuple[int, int] = (0, 0),
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "turbo",
    alpha: float = 0.75,
    dpi: int = 100,
) -> None:
    """Save map ``values`` ``(ny, nx)`` (NaN transparent) as a PNG at ``path`` (atomically).

    The map is drawn over ``ceus_panel_gray`` ``(H, W)`` (grey, any numeric type) with its
    blocks placed as the grid says (``block_px`` px each, top-left at ``origin_px = (x, y)``
    in the panel), the outline of ``lesion_contour_mask`` ``(H, W)`` (non-zero inside) in
    white, and a colour bar labelled ``name (unit)``. Colour limits default to the 2nd and
    98th percentiles of the finite values.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    v = np.asarray(values, dtype=np.float64)
    ny, nx = v.shape
    b = int(block_px)
    x0, y0 = (int(c) for c in origin_px)
    if ceus_panel_gray is not None:
        H, W = np.asarray(ceus_panel_gray).shape[:2]
    else:
        H, W = y0 + ny * b, x0 + nx * b
    finite = v[np.isfinite(v)]
    lo = vmin if vmin is not None else (float(np.percentile(finite, 2)) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(np.percentile(finite, 98)) if finite.size else 1.0)
    if not hi > lo:
        hi = lo + (abs(lo) * 1e-3 or 1.0)
    height_in = 5.0
    fig = Figure(figsize=(height_in * W / H + 1.5, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if ceus_panel_gray is not None:
        ax.imshow(np.asarray(ceus_panel_gray), cmap="gray", interpolation="nearest", extent=(0, W, H, 0))
    else:
        ax.add_patch(_background(W, H))
    im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, vmin=lo, vmax=hi, alpha=alpha, interpolation="nearest",
                   extent=(x0, x0 + nx * b, y0 + ny * b, y0))
    if lesion_contour_mask is not None and np.any(lesion_contour_mask):
        m = (np.asarray(lesion_contour_mask) != 0).astype(np.float32)
        yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]]
        ax.contour(xx + 0.5, yy + 0.5, m, levels=[0.5], colors="white", linewidths=1.2)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_axis_off()
    ax.set_title(f"{name} ({unit})", fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.solids.set_alpha(1.0)
    cb.set_label(f"{name} ({unit})")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _background(W: int, H: int):
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), W, H, color="black")


def render_maps(out_dir: str | os.PathLike, maps, ceus_panel_gray: np.ndarray | None = None,
                lesion_contour_mask: np.ndarray | None = None, *, names=None, prefix: str = "map_",
                **options) -> list[Path]:
    """One PNG per map of ``maps`` (:class:`~ceuspipe.maps.compute.PerfusionMaps`; ``names``:
    which, default all) as ``out_dir/{prefix}{name}.png``; ``options``: as
    :func:`render_map_png`. Returns the paths written."""
    out = []
    for name in names or list(maps.maps):
        path = Path(out_dir) / f"{prefix}{safe_name(name)}.png"
        render_map_png(path, maps.maps[name], name, maps.units.get(name, ""), ceus_panel_gray, lesion_contour_mask,
                       block_px=maps.block_px, origin_px=maps.origin_px, **options)
        out.append(path)
    return out
