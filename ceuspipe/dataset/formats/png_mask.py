"""Binary PNG masks: ``<stem>_mask.png`` (CEUS crop size) or ``<stem>_full_mask.png``
(full-frame size, cropped to the CEUS box); any nonzero pixel is lesion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ceuspipe.dataset.formats.placement import decide_frame, mask_to_crop
from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.errors import InputError

DESCRIPTION = "binary PNG <stem>_mask.png (CEUS crop) or <stem>_full_mask.png (full frame)"

#: Fraction of mask pixels allowed strictly between 0 and the maximum value
#: (anti-aliased edges); above it the PNG is "not a binary mask".
MAX_INTERMEDIATE_FRACTION = 0.01


def claims(path: Path) -> bool:
    """Files named ``*_mask.png``."""
    return path.name.lower().endswith("_mask.png")


def binary(img: np.ndarray, path: Path) -> np.ndarray:
    """A grey or colour image ``(h, w[, c])`` as an ``(h, w)`` uint8 0/1 mask (nonzero = 1).

    Colour is reduced to the maximum over its colour channels (alpha ignored).
    :class:`InputError` naming ``path`` when more than :data:`MAX_INTERMEDIATE_FRACTION`
    of the pixels lie strictly between 0 and the maximum (not a binary mask).
    """
    if img.ndim == 3:
        img = img[..., :3].max(axis=2) if img.shape[2] >= 3 else img[..., 0]
    top = int(img.max()) if img.size else 0
    if top > 0:
        intermediate = np.count_nonzero((img > 0) & (img < top)) / img.size
        if intermediate > MAX_INTERMEDIATE_FRACTION:
            raise InputError(path, f"not a binary mask ({100 * intermediate:.1f}% of pixels are "
                                   f"neither 0 nor {top})")
    return (img > 0).astype(np.uint8)


def read(path: Path, kf: KeyFrame, label: str | None = None) -> np.ndarray:
    """Read binary mask PNG ``path`` (CEUS crop size or full-frame size) for ``kf``.

    Returns an ``(h, w)`` uint8 0/1 CEUS-crop mask; ``label`` is not used. Raises
    :class:`InputError` for unreadable files, a size matching neither image, a
    non-binary image or an empty mask.
    """
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(path, "cannot read as an image")
    h, w = img.shape[:2]
    frame = decide_frame(path, kf, (w, h))
    mask = mask_to_crop(binary(img, path), kf, frame)
    if not mask.any():
        raise InputError(path, "empty mask (no lesion pixel" + (" inside the CEUS panel)" if frame == "full" else ")"))
    return mask
