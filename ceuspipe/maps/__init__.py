"""Parametric perfusion maps (VueBox/QuantUS style): per-block PE, TTP, RT, mTT, WiR, WiAUC,
WoAUC, WiWoAUC, QOF and model-free maps, as images over the CEUS panel.

Pure library, fed frame by frame like :class:`ceuspipe.tic.TicAccumulator`::

    from ceuspipe.maps import BlockAccumulator, compute_maps, write_maps_npz, render_maps

    acc = BlockAccumulator(ceus_gray.shape, block_px=2, dynamic_range_db=60, imaged_mask=sector)
    for index, time_s, ceus_gray, (dx, dy), used in frames:   # (H, W) uint8, displacement px
        acc.add(time_s, ceus_gray, dx=dx, dy=dy, used=used)
    maps = compute_maps(acc, model="lognormal", pixel_size_mm=0.1)
    write_maps_npz(out_dir / "maps.npz", maps)
    render_maps(out_dir, maps, ceus_gray, lesion_mask)       # map_PE.png, map_TTP.png, ...

Modules: :mod:`.accumulate` (:class:`BlockAccumulator`: linearise, move back, block means,
time bins), :mod:`.compute` (:func:`compute_maps`, :class:`PerfusionMaps`, the batched fit of
:mod:`ceuspipe.tic.batch_fit` and model-free maps), :mod:`.io` (``maps.npz``), :mod:`.render`
(PNG per map).
"""

from ceuspipe.maps.accumulate import BlockAccumulator
from ceuspipe.maps.compute import FIT_MAPS, PerfusionMaps, compute_maps, maps_from_curves
from ceuspipe.maps.io import read_maps_npz, write_maps_npz
from ceuspipe.maps.render import render_map_png, render_maps

__all__ = ["BlockAccumulator", "FIT_MAPS", "PerfusionMaps", "compute_maps", "maps_from_curves", "read_maps_npz",
           "render_map_png", "render_maps", "write_maps_npz"]
