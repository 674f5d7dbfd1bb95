"""Move panel-sized arrays between a frame and the motion reference.

A :class:`~ceuspipe.motion.frame.FrameMotion` ``(dx, dy)`` says the frame shows the
reference's content moved by ``(dx, dy)`` px. :func:`to_reference` undoes that (a CEUS
panel into reference coordinates, for per-pixel maps); :func:`from_reference` applies
it (a region fixed in reference coordinates onto the frame). The CEUS and B-mode
panels move together (one probe), so the B-mode estimate serves both.

Border: pixels moved in from outside the array are 0 (``border="constant"``: no data,
outside any mask) or copies of the edge (``"replicate"``). Boolean masks are shifted
bilinearly and thresholded at one half, so they move by sub-pixel amounts and stay
boolean; other arrays keep their dtype (integers rounded).
"""

from __future__ import annotations

import cv2
import numpy as np

from ceuspipe.motion.frame import FrameMotion

_BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}
_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
#: dtypes cv2.warpAffine takes as they are (others go through float)
_CV_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.float32),
              np.dtype(np.float64))


def shift_image(image: np.ndarray, dx: float, dy: float, *, border: str = "constant",
                interpolation: str = "linear") -> np.ndarray:
    """``image`` ``(h, w)`` or ``(h, w, c)`` (c <= 4) with its content moved by
    ``(dx, dy)`` px (``+x`` right, ``+y`` down): ``out[y + dy, x + dx] = image[y, x]``.

    ``border``: ``"constant"`` (0) or ``"replicate"``; ``interpolation``: ``"linear"``
    or ``"nearest"``. Raises ``ValueError`` for an empty or not 2-D/3-D array.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0 or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        raise ValueError(f"shift_image needs a non-empty (h, w) or (h, w, c<=4) array, got shape {image.shape}")
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {', '.join(_BORDERS)}, got {border!r}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(_INTERPOLATIONS)}, got {interpolation!r}")
    if not (np.isfinite(dx) and np.isfinite(dy)):
        raise ValueError(f"shift must be finite, got ({dx}, {dy})")
    is_bool = image.dtype == bool
    src = image if image.dtype in _CV_DTYPES else image.astype(np.float32 if is_bool else np.float64)
    h, w = image.shape[:2]
    m = np.array([[1.0, 0.0, float(dx)], [0.0, 1.0, float(dy)]])
    out = cv2.warpAffine(src, m, (w, h), flags=_INTERPOLATIONS[interpolation], borderMode=_BORDERS[border],
                         borderValue=0)
    if out.ndim < image.ndim:  # cv2 drops a single channel
        out = out[..., None]
    if is_bool:
        return out >= 0.5
    if out.dtype != image.dtype and np.issubdtype(image.dtype, np.integer):
        out = np.rint(out)
    return out.astype(image.dtype, copy=False)


def to_reference(image: np.ndarray, motion: FrameMotion, **options) -> np.ndarray:
    """A frame's panel-sized ``image`` in reference coordinates (the frame's shift
    undone); ``options`` as :func:`shift_image`."""
    return shift_image(image, -motion.dx_px, -motion.dy_px, **options)


def from_reference(image: np.ndarray, motion: FrameMotion, **options) -> np.ndarray:
    """A panel-sized ``image`` in reference coordinates (e.g. a fixed region's mask)
    placed on the frame; ``options`` as :func:`shift_image`."""
    return shift_image(image, motion.dx_px, motion.dy_px, **options)
