"""The B-mode panel as the estimator works on it: downsampled, float, weighted.

A panel of ``(h, w)`` px is area-averaged to at most ``work_px`` on its longer side
(about 1 ms a frame for the whole estimate at 256 px); displacements found there are
scaled back to panel px per axis.
"""

from __future__ import annotations

import cv2
import numpy as np

#: longer side (px) of the working image; 256 kept the phantom's error below 0.05 px
#: (360 px panels; 0.1-0.2 px at 120-180 px) at about 1 ms a frame
WORK_PX = 256
#: grey level (0-255, after a 1.5 px blur) at or below which a pixel counts as no
#: image: the black outside a sector's fan, beside a trapezoid, or a black border
DARK_GREY = 8.0
#: edge effects of the dark region and the panel border are tapered over this many
#: working px
TAPER_PX = 3.0
#: high-pass (working px) for the similarity score: content finer than this, the
#: speckle, is what decorrelates when the probe leaves the plane
SPECKLE_SIGMA_PX = 2.0


def work_shape(shape: tuple[int, int], work_px: int = WORK_PX) -> tuple[int, int]:
    """``(h, w)`` of the working image of a panel of ``shape = (h, w)`` px."""
    h, w = shape
    factor = max(1.0, max(h, w) / float(work_px))
    return max(8, round(h / factor)), max(8, round(w / factor))


def downsample(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``gray`` ``(H, W)`` area-averaged to ``shape = (h, w)``, float32 grey levels."""
    h, w = shape
    if gray.shape == (h, w):
        return gray.astype(np.float32)
    return cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)


def image_area(reference: np.ndarray) -> np.ndarray:
    """``(h, w)`` float32 in ``[0, 1]``: where the reference ``(h, w)`` shows an image
    (grey above :data:`DARK_GREY`), eroded and blurred by :data:`TAPER_PX`, so the
    fixed edge of a fan or black border weighs nothing; all ones where no pixel is
    bright enough. The area is fixed on the screen: it does not move with the tissue."""
    bright = cv2.GaussianBlur(reference, (0, 0), 1.5) > DARK_GREY
    if not bright.any():
        return np.ones(reference.shape, np.float32)
    k = 2 * int(round(TAPER_PX)) + 1
    area = cv2.erode(bright.astype(np.uint8), np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(area.astype(np.float32), (0, 0), TAPER_PX)


def hann(shape: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` float32 Hann window (tapers the panel's border)."""
    return cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_32F)


def speckle(image: np.ndarray) -> np.ndarray:
    """The fine texture of ``image`` ``(h, w)`` float32: minus its Gaussian blur of
    :data:`SPECKLE_SIGMA_PX`."""
    return image - cv2.GaussianBlur(image, (0, 0), SPECKLE_SIGMA_PX)
