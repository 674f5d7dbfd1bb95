"""LabelMe JSON (``<stem>*.json``): polygon, rectangle, circle and mask shapes on the full
frame or the CEUS crop.

The coordinate frame is decided by ``imageWidth`` x ``imageHeight`` (full-frame or
CEUS panel size); the name (``_full`` / ``_ceus``) breaks a tie or stands in when the
size is missing. Full-frame shapes are moved into the CEUS crop.

Shapes are combined as LabelMe's own rasteriser (``labelme.utils.shapes_to_label``)
does: painted in file order, a later shape over an earlier one. The lesion is every
shape's area except ``_background_`` (LabelMe's label for holes), or with ``label``,
the pixels whose last shape has that label: a later ``_background_`` shape, or one of
another label, cuts a hole. A point ``(x, y)`` lies in pixel ``(floor(x), floor(y))``
(LabelMe's canvas puts pixel ``(i, j)`` over ``[i, i+1) x [j, j+1)``, and its rasteriser
truncates); a shape covers the pixels its outline passes through and those inside:

- ``polygon`` (or no ``shape_type``), ``oriented_rectangle``: at least 3 distinct
  points, not self-intersecting;
- ``rectangle``: 2 opposite corners;
- ``circle``: centre and a point on the rim, radius ``r``: the ellipse inscribed in the
  pixels from ``floor(centre - r)`` to ``floor(centre + r)``;
- ``mask`` (LabelMe >= 5): ``points`` the top-left and bottom-right pixel of a box,
  ``mask`` a base64 PNG of the box's size, nonzero = inside.

``line``, ``linestrip`` and ``point`` shapes have no area and, like unknown shape
types, make the file a problem: no shape is skipped silently.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import cv2
import numpy as np

from ceuspipe.dataset.formats.placement import decide_frame, parse_points, points_to_crop, polygon_on_crop
from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.dataset.rasterize import fill_ellipse, fill_polygons, paste
from ceuspipe.errors import InputError

DESCRIPTION = "LabelMe JSON <stem>*.json: polygon, rectangle, circle and mask shapes"

#: LabelMe's label for pixels that belong to no class (holes)
BACKGROUND = "_background_"
#: the LabelMe version written into documents ceuspipe makes
LABELME_VERSION = "5.4.1"
#: shapes with no area, refused
NO_AREA = ("line", "linestrip", "point", "points")


def claims(path: Path) -> bool:
    """Every ``*.json`` file (a COCO file is claimed by the ``coco`` format, which outranks this)."""
    return path.suffix.lower() == ".json"


def read_json(path: Path) -> object:
    """The parsed JSON of ``path``; :class:`InputError` naming it when unreadable or invalid."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc})") from None


def _mask_patch(path: Path, shape: dict, name: str) -> np.ndarray:
    """The ``(h, w)`` uint8 image of a mask shape's base64 PNG."""
    data = shape.get("mask")
    if not isinstance(data, str):
        raise InputError(path, f"{name} has no base64 PNG 'mask'")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(path, f"{name}: 'mask' is not base64") from None
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED) if raw else None
    if img is None:
        raise InputError(path, f"{name}: 'mask' is not an image")
    return img[..., :3].max(axis=2) if img.ndim == 3 else img


def shape_area(path: Path, kf: KeyFrame, frame: str, shape: dict, name: str) -> np.ndarray:
    """CEUS-crop ``(h, w)`` uint8 0/1 mask of one LabelMe ``shape`` drawn on ``frame`` (see
    the module docstring); :class:`InputError` naming ``path`` and ``name`` when unusable."""
    kind = shape.get("shape_type") or "polygon"
    c = kf.layout.ceus
    if kind in ("polygon", "oriented_rectangle"):
        pts = polygon_on_crop(path, kf, frame, shape.get("points", []), name)
        return fill_polygons([np.floor(pts)], c.h, c.w)
    if kind in NO_AREA:
        raise InputError(path, f"{name}: a {kind} has no area (polygon, rectangle, circle or mask shapes only)")
    if kind not in ("rectangle", "circle", "mask"):
        raise InputError(path, f"{name}: unknown shape_type {kind!r} (polygon, rectangle, circle or mask only)")
    raw = parse_points(path, shape.get("points", []), name, count=2)
    (x0, y0), (x1, y1) = points_to_crop(path, kf, frame, raw, name)
    if kind == "rectangle":
        if x0 == x1 or y0 == y1:
            raise InputError(path, f"{name} has no area (corners ({x0:g}, {y0:g}) and ({x1:g}, {y1:g}))")
        (x0, y0), (x1, y1) = np.floor([[x0, y0], [x1, y1]])
        return fill_polygons([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], c.h, c.w)
    if kind == "circle":
        r = float(np.hypot(x1 - x0, y1 - y0))
        if r == 0:
            raise InputError(path, f"{name} has radius 0")
        (bx0, by0), (bx1, by1) = np.floor([[x0 - r, y0 - r], [x0 + r, y0 + r]])  # its pixel box
        return fill_ellipse((bx0 + bx1) / 2, (by0 + by1) / 2, (bx1 - bx0 + 1) / 2, (by1 - by0 + 1) / 2, c.h, c.w)
    patch = _mask_patch(path, shape, name)
    (bx0, by0), (bx1, by1) = raw.astype(int)  # as LabelMe: truncated, in the drawn image
    if patch.shape != (by1 - by0 + 1, bx1 - bx0 + 1):
        raise InputError(path, f"{name}: 'mask' is {patch.shape[1]}x{patch.shape[0]}, its box "
                               f"({bx0}, {by0})-({bx1}, {by1}) is {bx1 - bx0 + 1}x{by1 - by0 + 1}")
    dx, dy = (c.x, c.y) if frame == "full" else (0, 0)
    return paste(patch, bx0 - dx, by0 - dy, c.h, c.w)


def read(path: Path, kf: KeyFrame, label: str | None = None) -> np.ndarray:
    """Rasterise the shapes of LabelMe file ``path`` onto ``kf``'s CEUS crop.

    ``label``: the lesion is the shapes with this label (``None``: every shape but
    ``_background_``); see the module docstring for the shapes and how they combine.
    Returns an ``(h, w)`` uint8 0/1 mask of the CEUS panel size. Raises
    :class:`InputError` for invalid JSON, an image size matching neither image, no
    lesion shape, an unusable shape (named, with the reason), or an empty result.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise InputError(path, "not a LabelMe file (no 'shapes' list)")
    size = None
    w, h = data.get("imageWidth"), data.get("imageHeight")
    if w is not None or h is not None:
        try:
            size = (int(w), int(h))
        except (TypeError, ValueError):
            raise InputError(path, f"invalid imageWidth/imageHeight {w!r}/{h!r}") from None
    frame = decide_frame(path, kf, size)
    c = kf.layout.ceus
    mask = np.zeros((c.h, c.w), dtype=np.uint8)
    lesion_shapes = 0
    for n, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            raise InputError(path, f"shape {n} is not an object")
        name = f"{shape.get('shape_type') or 'polygon'} {n} ({shape.get('label', '')!s})"
        area = shape_area(path, kf, frame, shape, name).astype(bool)
        lesion = shape.get("label") == label if label is not None else shape.get("label") != BACKGROUND
        lesion_shapes += lesion
        mask[area] = 1 if lesion else 0
    if not lesion_shapes:
        raise InputError(path, f"no shape with label {label!r}" if label is not None
                         else f"no shape (other than {BACKGROUND})")
    if not mask.any():
        raise InputError(path, "shapes cover no pixel (empty mask)")
    return mask


def labelme_document(polygons: list[list[list[float]]], width: int, height: int, image_path: str,
                     label: str = "lesion") -> dict:
    """A LabelMe JSON document with one polygon shape per polygon."""
    return {"version": LABELME_VERSION, "flags": {},
            "shapes": [{"label": label, "points": p, "group_id": None, "description": "",
                        "shape_type": "polygon", "flags": {}, "mask": None} for p in polygons],
            "imagePath": image_path, "imageData": None, "imageHeight": int(height), "imageWidth": int(width)}
