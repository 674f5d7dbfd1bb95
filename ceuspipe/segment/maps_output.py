"""segment-video's perfusion maps: block curves collected while the clip streams, fitted
and written after it (``maps.npz``, one ``map_<NAME>.png`` per map).

The CEUS panel of every acquired frame goes into a :class:`~ceuspipe.maps.BlockAccumulator`
(linearised, moved back by the frame's B-mode motion, frames out of plane left out). The
accumulator needs the imaged area (the sector) from the start, so the first
:attr:`ImagedArea.frames <ceuspipe.tic.reference.ImagedArea>` acquired frames are held
until it is learnt, then replayed: a handful of panels, whatever the clip's length.
The PNGs are drawn over the frame where the lesion was brightest, with that frame's
lesion contour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ceuspipe.motion import FrameMotion
from ceuspipe.tic.reference import ImagedArea
from ceuspipe.video.layout import CONTENT_THRESHOLD

MAPS_NAME = "maps.npz"
#: The maps drawn as ``map_<NAME>.png`` (VueBox's set and the model-free ones; maps.npz has
#: every map of :data:`ceuspipe.maps.FIT_MAPS` too). 0.13 s each on this 2-core machine.
PNG_MAPS = ("PE", "TTP", "RT", "mTT", "WiR", "WiAUC", "WoAUC", "WiWoAUC", "QOF", "MaxI", "TMaxI", "AT")
#: The maps shown in report.html (every PNG stays in the folder).
REPORT_MAPS = ("PE", "TTP", "mTT", "WiR")


@dataclass
class _Held:
    time_s: float
    ceus_gray: np.ndarray
    motion: FrameMotion | None


class MapCollector:
    """Block curves of one clip for its perfusion maps.

    ``panel_shape``: ``(H, W)`` of the CEUS panel (px); ``block_px``: block side (px);
    ``dynamic_range_db``: for linearising grey levels (dB). Call :meth:`add` once per
    acquired frame, in order, then :meth:`write`."""

    def __init__(self, panel_shape: tuple[int, int], *, block_px: int, dynamic_range_db: float):
        self.panel_shape = (int(panel_shape[0]), int(panel_shape[1]))
        self.block_px = int(block_px)
        self.dynamic_range_db = float(dynamic_range_db)
        self._imaged = ImagedArea(threshold=CONTENT_THRESHOLD)
        self._held: list[_Held] = []
        self.acc = None  # the BlockAccumulator, once the imaged area is known
        self._best = -np.inf
        self.background: np.ndarray | None = None  # (H, W) uint8: CEUS panel where the lesion was brightest
        self.lesion: np.ndarray | None = None      # (H, W) uint8 0/1: that frame's mask

    @property
    def learning(self) -> bool:
        """Whether :meth:`add` still wants the B-mode panel (for the imaged area)."""
        return self.acc is None

    def add(self, time_s: float, ceus_gray: np.ndarray, us_gray: np.ndarray | None, lesion: np.ndarray,
            motion: FrameMotion | None) -> None:
        """One acquired frame: ``ceus_gray`` ``(H, W) uint8``, ``us_gray`` the B-mode panel grey
        (any size; only its first frames are used, for the imaged area), ``lesion`` ``(H, W)``
        0/1 mask, ``motion`` its displacement (None: motion off)."""
        if lesion.any():
            mean = float(ceus_gray[lesion > 0].mean())
            if mean > self._best:
                self._best, self.background, self.lesion = mean, ceus_gray.copy(), lesion.copy()
        if self.acc is None:
            self._imaged.update(ceus_gray, us_gray)
            self._held.append(_Held(float(time_s), ceus_gray.copy(), motion))
            if not self._imaged.learning:
                self._start()
            return
        self._add(float(time_s), ceus_gray, motion)

    def _start(self) -> None:
        from ceuspipe.maps import BlockAccumulator

        area = self._imaged.update(np.zeros(self.panel_shape, np.uint8))  # frozen: returns the learnt mask
        self.acc = BlockAccumulator(self.panel_shape, block_px=self.block_px, imaged_mask=area,
                                    dynamic_range_db=self.dynamic_range_db)
        for h in self._held:
            self._add(h.time_s, h.ceus_gray, h.motion)
        self._held.clear()

    def _add(self, time_s: float, ceus_gray: np.ndarray, motion: FrameMotion | None) -> None:
        if motion is None:
            self.acc.add(time_s, ceus_gray)
        else:
            self.acc.add(time_s, ceus_gray, dx=motion.dx_px, dy=motion.dy_px, used=motion.used)

    def write(self, out_dir: Path, *, model: str, pixel_size_mm: float | None, refills=()) -> dict:
        """Fit every block, write ``maps.npz`` and the PNGs into ``out_dir``; the summary for
        segment.json (block size, grid, blocks fitted, failure reasons, files). ``refills``:
        the curve's refills after destructive flashes (tic.json's ``replenishment`` entries):
        each adds ``A_refill<k>``, ``beta_refill<k>`` and ``A_beta_refill<k>`` maps, the last
        two drawn."""
        from ceuspipe.maps import compute_maps, render_maps, write_maps_npz

        if self.acc is None:  # fewer acquired frames than the imaged area learns from
            self._start()
        maps = compute_maps(self.acc, model=model, pixel_size_mm=pixel_size_mm)
        drawn = [n for n in PNG_MAPS if n in maps.maps] + _add_refill_maps(maps, self.acc, refills)
        write_maps_npz(out_dir / MAPS_NAME, maps)
        pngs = render_maps(out_dir, maps, self.background, self.lesion, names=drawn)
        imaged = int(maps.imaged.sum())
        fitted = int((maps.success & maps.imaged).sum())
        return {"file": MAPS_NAME, "pngs": [p.name for p in pngs], "block_px": self.block_px,
                "block_mm": None if pixel_size_mm is None else self.block_px * pixel_size_mm,
                "grid": list(maps.grid_shape), "blocks_imaged": imaged, "blocks_fitted": fitted,
                "bins": int(maps.times_s.size), "bin_s": self.acc.bin_width_s, "model": model,
                "reasons": maps.reasons(),
                "report_maps": [n for n in REPORT_MAPS if n in maps.maps] + [n for n in drawn if n.startswith("beta_")]}


def _add_refill_maps(maps, acc, refills) -> list[str]:
    """Add each refill's A, beta and A*beta maps to ``maps`` (in place); the names to draw."""
    if not refills:
        return []
    from ceuspipe.maps.replenishment import REFILL_MAPS, replenishment_maps

    fitted = replenishment_maps(acc, refills)
    drawn = []
    for k in range(len(fitted["start_s"])):
        for name, unit in REFILL_MAPS.items():
            key = f"{name}_refill{k + 1}"
            maps.maps[key], maps.units[key] = fitted[name][k], unit
            if name != "A":
                drawn.append(key)
    return drawn
