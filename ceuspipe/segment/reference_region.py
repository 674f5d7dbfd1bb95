"""The reference region of parenchyma that segment-video measures beside the lesion.

Either a fixed mask the user gives (a PNG of the CEUS panel's size), or a ring around
each frame's lesion mask inside the imaged area (:mod:`ceuspipe.tic.reference`); frames
where the model finds no lesion keep the ring of the last mask it found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.masks import read_mask_png
from ceuspipe.motion import FrameMotion, from_reference
from ceuspipe.preprocess import to_gray
from ceuspipe.tic.reference import ImagedArea, reference_ring
from ceuspipe.video.layout import CONTENT_THRESHOLD
from ceuspipe.video.panels import PanelLayout, crop


class ReferenceRegion:
    """Per-frame reference masks of one clip under a ``SegmentConfig``.

    Built before streaming (reads and checks the user's mask, converts a ring given in mm);
    :meth:`mask_for` is then called once per acquired frame, in order."""

    def __init__(self, clip: Path, layout: PanelLayout, config):
        self.enabled = bool(config.reference)
        self.layout = layout
        self.user_mask, (self.distance_px, self.width_px) = _setup(clip, layout, config)
        self._imaged = ImagedArea(threshold=CONTENT_THRESHOLD)
        self._last_mask: np.ndarray | None = None  # the last non-empty lesion mask

    def mask_for(self, image: np.ndarray, ceus_gray: np.ndarray, lesion: np.ndarray,
                 motion: FrameMotion | None = None) -> np.ndarray | None:
        """The reference mask ``(h, w) bool`` of a frame (CEUS panel size), or None (off, or no
        lesion found yet). ``image``: the full ``(H, W, 3)`` frame; ``ceus_gray``: its CEUS
        panel grey ``(h, w) uint8``; ``lesion``: the frame's mask ``(h, w) uint8`` 0/1;
        ``motion``: its displacement from the clip's reference, which a user's fixed mask
        (drawn on the reference) follows. The ring follows the lesion mask already."""
        if not self.enabled:
            return None
        if self.user_mask is not None:
            if motion is None or (motion.dx_px == 0.0 and motion.dy_px == 0.0):
                return self.user_mask
            return from_reference(self.user_mask, motion)
        us_gray = to_gray(crop(image, self.layout.us)) if self._imaged.learning else None
        area = self._imaged.update(ceus_gray, us_gray)
        if lesion.any():
            self._last_mask = lesion
        if self._last_mask is None:
            return None
        return reference_ring(self._last_mask, self.distance_px, self.width_px, area)


def reference_record(config) -> dict:
    """How the reference region was made, for segment.json and tic.json."""
    if not config.reference:
        return {"mode": "off"}
    if config.reference_mask is not None:
        return {"mode": "mask", "mask": str(config.reference_mask)}
    return {"mode": "ring", "distance_px": config.reference_distance_px, "width_px": config.reference_width_px,
            "distance_mm": config.reference_distance_mm, "width_mm": config.reference_width_mm,
            "imaged_area": "running max of both panels over the first 8 frames > grey "
                           f"{CONTENT_THRESHOLD}, holes filled, eroded 2 px"}


def _setup(clip: Path, layout: PanelLayout, config) -> tuple[np.ndarray | None, tuple[float, float]]:
    """``(user reference mask (h, w) bool or None, (ring distance, ring width) in pixels)``.

    Raises :class:`InputError` for an unreadable or wrongly sized reference mask, or a
    ring given in mm when the layout has no pixel size."""
    dist, width = float(config.reference_distance_px), float(config.reference_width_px)
    if not config.reference:
        return None, (dist, width)
    if config.reference_distance_mm is not None or config.reference_width_mm is not None:
        if layout.pixel_size_mm is None:
            raise InputError(clip, "reference ring in mm needs the pixel size (DICOM ultrasound regions or "
                                   "pixel_size_mm in the layout); give it in pixels instead")
        mm_per_px = float(np.mean(layout.pixel_size_mm))
        if config.reference_distance_mm is not None:
            dist = config.reference_distance_mm / mm_per_px
        if config.reference_width_mm is not None:
            width = config.reference_width_mm / mm_per_px
    if config.reference_mask is None:
        return None, (dist, width)
    path = Path(config.reference_mask)
    ref = read_mask_png(path, "reference mask")
    if ref.shape != (layout.ceus.h, layout.ceus.w):
        raise InputError(path, f"reference mask is {ref.shape[1]}x{ref.shape[0]} px but the CEUS panel is "
                               f"{layout.ceus.w}x{layout.ceus.h} px")
    if not ref.any():
        raise InputError(path, "reference mask is empty (no non-zero pixel)")
    return ref, (dist, width)
