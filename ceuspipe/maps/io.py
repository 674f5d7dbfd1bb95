"""``maps.npz``: perfusion maps as float32 arrays named by parameter, with the grid's place in
the CEUS panel.

Keys: one ``(ny, nx)`` float32 array per map (``PE``, ``TTP``, ..., ``MaxI``, NaN where the fit
failed or outside the imaged area); ``success``, ``imaged`` ``(ny, nx)`` uint8 and ``reason``
``(ny, nx)`` uint8 (index into :data:`ceuspipe.tic.batch_fit.REASONS`); ``origin_px`` int32
``[x0, y0]`` (the grid's top-left corner in the panel, px) and ``block_px`` int32 (block side,
px): block ``(i, j)`` covers panel columns ``x0 + j*block_px`` to ``x0 + (j+1)*block_px`` and
rows likewise from ``y0``; ``pixel_size_mm`` float32 (only when known); ``times_s``
float32 ``(T,)``: the curves' time axis; ``meta``: a JSON string with the model, the
units of every map, the failure reasons and the settings. No pickled objects: load with
``numpy.load(path)`` (``allow_pickle=False``).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from ceuspipe.fsutil import atomic_write_bytes
from ceuspipe.maps.compute import PerfusionMaps
from ceuspipe.tic.batch_fit import REASONS

__all__ = ["write_maps_npz", "read_maps_npz", "NPZ_FORMAT"]

NPZ_FORMAT = "ceuspipe.maps/1"
_GRID_KEYS = ("success", "imaged", "reason", "origin_px", "block_px", "pixel_size_mm", "times_s", "meta")


def write_maps_npz(path: str | os.PathLike, maps: PerfusionMaps) -> None:
    """Write ``maps`` to ``path`` (compressed ``.npz``, written atomically; keys above)."""
    arrays = {name: np.asarray(v, dtype=np.float32) for name, v in maps.maps.items()}
    clash = sorted(set(arrays) & set(_GRID_KEYS))
    if clash:
        raise ValueError(f"map names {clash} clash with maps.npz's own keys")
    arrays.update(success=maps.success.astype(np.uint8), imaged=maps.imaged.astype(np.uint8),
                  reason=maps.reason.astype(np.uint8), origin_px=np.asarray(maps.origin_px, dtype=np.int32),
                  block_px=np.int32(maps.block_px), times_s=np.asarray(maps.times_s, dtype=np.float32))
    if maps.pixel_size_mm is not None:
        arrays["pixel_size_mm"] = np.float32(maps.pixel_size_mm)
    meta = {"format": NPZ_FORMAT, "model": maps.model, "units": dict(maps.units), "reasons": list(REASONS),
            "settings": dict(maps.settings)}
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_maps_npz(path: str | os.PathLike) -> PerfusionMaps:
    """The :class:`~ceuspipe.maps.compute.PerfusionMaps` written by :func:`write_maps_npz`."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        maps = {k: z[k] for k in z.files if k not in _GRID_KEYS}
        px = float(z["pixel_size_mm"]) if "pixel_size_mm" in z.files else None
        return PerfusionMaps(maps=maps, units=meta["units"], success=z["success"].astype(bool),
                             imaged=z["imaged"].astype(bool), reason=z["reason"], block_px=int(z["block_px"]),
                             origin_px=tuple(int(v) for v in z["origin_px"]), model=meta["model"],
                             times_s=z["times_s"].astype(np.float64), pixel_size_mm=px, settings=meta["settings"])
