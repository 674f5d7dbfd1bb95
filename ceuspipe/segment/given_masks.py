"""Lesion masks drawn elsewhere, for ``segment-video --masks M``: the curve, parameters,
overlay and report of a clip from masks the user gives instead of the model's.

``M`` is one of:

* a mask video (ceuspipe's own ``mask.mkv`` or any lossless one), one frame per decoded
  frame of the clip at the clip's frame times (checked);
* a folder of per-frame PNGs, one per decoded frame, in name order (natural: ``f2`` before
  ``f10``);
* a NIfTI volume (``.nii``/``.nii.gz``, :func:`ceuspipe.mask_export.nifti.read_nifti_masks`),
  one mask per decoded frame, at the clip's frame times when the file states them;
* one PNG: a fixed region of interest drawn on the clip's first frame, which follows the
  in-plane motion when motion is measured.

Each mask is the CEUS panel's size or the full frame's (then cropped to the CEUS panel);
non-zero is lesion (videos: grey above 127). A mask too many or too few, a frame time that
disagrees, or a wrong size is an :class:`~ceuspipe.errors.InputError` naming the mask file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.masks import read_mask_png
from ceuspipe.motion import FrameMotion, from_reference
from ceuspipe.video.panels import PanelLayout, crop

#: Side (px) frames are prepared at for the repeat and swapped-panel checks when no model runs.
REPEAT_CHECK_SIZE = 128
#: A mask's time may differ from its frame's by this share of the clip's frame interval.
TIME_TOLERANCE = 0.4
VIDEO_SUFFIXES = (".mkv", ".mp4", ".avi", ".mov", ".webm", ".nut")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def mask_kind(path: Path) -> str:
    """``video``, ``png-folder``, ``nifti`` or ``fixed-png`` for ``path``; InputError otherwise."""
    name = path.name.lower()
    if path.is_dir():
        return "png-folder"
    if not path.is_file():
        raise InputError(path, "masks not found")
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(".png"):
        return "fixed-png"
    if name.endswith(VIDEO_SUFFIXES):
        return "video"
    raise InputError(path, "masks must be a mask video, a folder of PNGs, a NIfTI volume (.nii, .nii.gz) or one PNG")


def _natural_key(name: str) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def _video_mask(img: np.ndarray) -> np.ndarray:
    """``(h, w) uint8`` 0/1 of a mask video frame: grey above 127 in any colour channel."""
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., :3].max(axis=2)
    return (a > 127).astype(np.uint8)


class GivenMasks:
    """The masks of one clip from ``path``, one per decoded frame in order (or one fixed).

    :meth:`mask_for` is called for every decoded frame in order; :meth:`finish` checks that
    no mask is left over. ``layout``: the clip's panels (masks are cut to the CEUS panel)."""

    def __init__(self, path: str | Path, layout: PanelLayout):
        self.path = Path(path)
        self.layout = layout
        self.kind = mask_kind(self.path)
        self.used = 0
        self._fixed: np.ndarray | None = None
        self._last_fixed: np.ndarray | None = None
        self._times: Iterator[float | None] | None = None
        self._last_time: float | None = None
        self._last_index = -1
        self._read = 0  # masks read from the sequence
        self._masks: Iterator[tuple[float | None, np.ndarray]] | None = None
        if self.kind == "fixed-png":
            self._fixed = self._fit(read_mask_png(self.path).astype(np.uint8), self.path)
            if not self._fixed.any():
                raise InputError(self.path, "mask is empty (no non-zero pixel)")
        else:
            self._masks = self._sequence()

    def record(self) -> dict:
        """Where the masks came from, for segment.json and the report."""
        return {"kind": self.kind, "path": str(self.path), "frames": self.used,
                "follows_motion": self.kind == "fixed-png"}

    def mask_for(self, index: int, time_s: float, motion: FrameMotion | None) -> np.ndarray:
        """The ``(h, w) uint8`` 0/1 CEUS-panel mask of decoded frame ``index`` at ``time_s`` s;
        ``motion``: its displacement (a fixed region follows it; None keeps the last one)."""
        self.used += 1
        if self._fixed is not None:
            if motion is not None:
                moved = motion.dx_px != 0.0 or motion.dy_px != 0.0
                self._last_fixed = from_reference(self._fixed.astype(bool), motion).astype(np.uint8) if moved \
                    else self._fixed
            return self._last_fixed if self._last_fixed is not None else self._fixed
        while True:  # frames skipped by --sample-fps have masks too: pass over theirs
            try:
                t, mask = next(self._masks)
            except StopIteration:
                raise InputError(self.path, f"has {self._read} masks but the clip has more frames (frame {index} "
                                            f"at {time_s:.3f} s)") from None
            self._read += 1
            if self._read > index:
                break
        if t is not None:
            interval = time_s - self._last_time if self._last_time is not None else None
            tol = TIME_TOLERANCE * interval / max(1, index - self._last_index) if interval else 0.02
            if abs(t - time_s) > max(tol, 1e-3):
                raise InputError(self.path, f"mask {index + 1} is at {t:.3f} s but the clip's frame {index} is at "
                                            f"{time_s:.3f} s: masks must have the clip's frame times")
        self._last_index = index
        self._last_time = time_s
        return mask

    def finish(self, frames_decoded: int) -> None:
        """Raise :class:`InputError` when the sequence does not hold one mask per decoded frame
        (``frames_decoded``: the clip's, sampled or not)."""
        if self._masks is None:
            return
        total = self._read + sum(1 for _ in self._masks)
        if total != frames_decoded:
            raise InputError(self.path, f"has {total} masks but the clip has {frames_decoded} frames")

    # --- sources --------------------------------------------------------------------------

    def _sequence(self) -> Iterator[tuple[float | None, np.ndarray]]:
        if self.kind == "video":
            return self._video()
        if self.kind == "png-folder":
            return self._png_folder()
        return self._nifti()

    def _video(self):
        from ceuspipe.video.reader import iter_frames

        for f in iter_frames(self.path):
            yield f.time_s, self._fit(_video_mask(f.image), self.path)

    def _png_folder(self):
        files = sorted((p for p in self.path.iterdir() if p.suffix.lower() == ".png"), key=lambda p: _natural_key(p.name))
        if not files:
            raise InputError(self.path, "no PNG masks in this folder")
        for p in files:
            yield None, self._fit(read_mask_png(p).astype(np.uint8), p)

    def _nifti(self):
        from ceuspipe.mask_export.nifti import read_nifti_masks

        vol = read_nifti_masks(self.path)
        times = vol.times_s if vol.times_s is not None else [None] * len(vol)
        for t, m in zip(times, vol):
            yield (None if t is None else float(t)), self._fit(m.astype(np.uint8), self.path)

    def _fit(self, mask: np.ndarray, path: Path) -> np.ndarray:
        """``mask`` cut to the CEUS panel (or kept when it is the panel's size)."""
        lay, c = self.layout, self.layout.ceus
        if mask.shape == (c.h, c.w):
            return mask
        if mask.shape == (lay.frame_height, lay.frame_width):
            return np.ascontiguousarray(crop(mask, c))
        raise InputError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} px but the CEUS panel is {c.w}x{c.h} px "
                               f"and the frame {lay.frame_width}x{lay.frame_height} px")
