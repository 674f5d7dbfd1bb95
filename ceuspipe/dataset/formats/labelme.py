"""LabelMe JSON (``<stem>*.json``): polygon shapes on the full frame or the CEUS crop.

The coordinate frame is decided by ``imageWidth`` x ``imageHeight`` (full-frame or
CEUS panel size); the name (``_full`` / ``_ceus``) breaks a tie or stands in when the
size is missing. Full-frame points are moved into the CEUS crop. Several polygons
are united.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ceuspipe.dataset.formats.coords import decide_frame, points_to_crop
from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.dataset.rasterize import as_points, drop_repeated, fill_polygons, self_intersection
from ceuspipe.errors import InputError

DESCRIPTION = "LabelMe JSON <stem>*.json: polygons on the full frame or the CEUS crop"


def claims(path: Path) -> bool:
    """Every ``*.json`` file."""
    return path.suffix.lower() == ".json"


def read_json(path: Path) -> object:
    """The parsed JSON of ``path``; :class:`InputError` naming it when unreadable or invalid."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc})") from None


def read(path: Path, kf: KeyFrame, label: str | None = None) -> np.ndarray:
    """Rasterise the polygons of LabelMe file ``path`` onto ``kf``'s CEUS crop.

    ``label``: only polygons with this label count (``None``: every polygon).
    Returns an ``(h, w)`` uint8 0/1 mask of the CEUS panel size. Raises
    :class:`InputError` for invalid JSON, no polygon, a polygon with fewer than
    3 points, points outside the image or the CEUS panel, a self-intersecting
    polygon, or an empty result.
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
    polys = []
    for n, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            raise InputError(path, f"shape {n} is not an object")
        if shape.get("shape_type", "polygon") not in (None, "polygon"):
            continue
        if label is not None and shape.get("label") != label:
            continue
        name = f"polygon {n} ({shape.get('label', '')!s})"
        try:
            pts = drop_repeated(as_points(shape.get("points", [])))
        except (ValueError, TypeError) as exc:
            raise InputError(path, f"{name}: invalid points ({exc})") from None
        if len(pts) < 3:
            raise InputError(path, f"{name} has {len(pts)} distinct points, needs at least 3")
        pts = points_to_crop(path, kf, frame, pts, name)
        crossing = self_intersection(pts)
        if crossing is not None:
            raise InputError(path, f"{name} intersects itself (edges {crossing[0]} and {crossing[1]})")
        polys.append(pts)
    if not polys:
        which = f"with label {label!r}" if label is not None else ""
        raise InputError(path, f"no polygon {which}".rstrip())
    c = kf.layout.ceus
    mask = fill_polygons(polys, c.h, c.w)
    if not mask.any():
        raise InputError(path, "polygons cover no pixel (empty mask)")
    return mask
