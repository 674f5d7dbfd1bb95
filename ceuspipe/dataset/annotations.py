"""Import clinicians' CEUS region-of-interest annotations for exported key frames.

Two forms are read from an annotation folder (searched recursively), matched to
key frames by file name (the name starts with the key-frame stem
``<patient_id>__<exam_id>__<sample_index:04d>`` followed by ``_``, ``.`` or ``-``):

* LabelMe JSON ``<stem>*.json`` with polygon shapes, drawn either on the full
  frame (``<stem>_full.png``) or on the CEUS crop (``<stem>_ceus.png``). The
  coordinate frame is decided by ``imageWidth`` x ``imageHeight`` (full-frame
  size or CEUS panel size); the name (``_full`` / ``_ceus``) breaks a tie or
  stands in when the size is missing. Full-frame points are moved into the CEUS
  crop by subtracting the CEUS box origin. Several polygons are united.
* Binary PNG masks ``<stem>_mask.png`` (CEUS crop size) or
  ``<stem>_full_mask.png`` (full-frame size, then cropped); any nonzero = lesion.

Every problem becomes an :class:`AnnotationProblem` naming the file, the frame
is left out, and the problem is logged: nothing is dropped silently. The result
masks are ``(h, w)`` uint8 0/1 arrays of the CEUS panel size.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.dataset.rasterize import (as_points, drop_repeated, fill_polygons, points_inside,
                                        self_intersection)
from ceuspipe.errors import InputError

log = logging.getLogger("ceuspipe")

#: Fraction of mask pixels allowed strictly between 0 and the maximum value
#: (anti-aliased edges); above it the PNG is "not a binary mask".
MAX_INTERMEDIATE_FRACTION = 0.01
#: Polygon points may lie up to this many pixels outside the image's pixel centres.
POINT_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class AnnotationProblem:
    """A rejected annotation file: ``stem`` is the key frame left out (``None``
    when the file itself could not be tied to one frame)."""

    file: str
    stem: str | None
    problem: str

    def __str__(self) -> str:
        where = f" (frame {self.stem} left out)" if self.stem else ""
        return f"{self.file}: {self.problem}{where}"


@dataclass
class AnnotationSet:
    """Result of :func:`import_annotations`.

    ``masks``: stem -> ``(h, w)`` uint8 0/1 mask on the CEUS crop;
    ``files``: stem -> annotation file used; ``problems``: rejected files;
    ``unannotated``: stems with no annotation file; ``unmatched``: annotation
    files whose name matches no key frame (ignored, but reported).
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[AnnotationProblem] = field(default_factory=list)
    unannotated: list[str] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)


def _is_annotation_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(".json") or lower.endswith("_mask.png")


def match_stem(name: str, stems: set[str]) -> str | None:
    """The longest stem that ``name`` starts with, followed by ``_``, ``.``, ``-`` or the end."""
    best = None
    for i in range(1, len(name) + 1):
        if i == len(name) or name[i] in "_.-":
            if name[:i] in stems:
                best = name[:i]
    return best


def find_annotation_files(ann_dir: str | os.PathLike, stems: Iterable[str]
                          ) -> tuple[dict[str, list[Path]], list[Path]]:
    """Map each stem to its annotation files under ``ann_dir`` (recursive).

    Only ``*.json`` and ``*_mask.png`` files are considered (other images, such
    as exported key frames kept beside the JSON, are ignored). Returns
    ``(stem -> sorted files, files matching no stem)``.
    """
    ann_dir = Path(ann_dir)
    if not ann_dir.is_dir():
        raise InputError(ann_dir, "annotation folder not found")
    stems = set(stems)
    found: dict[str, list[Path]] = {}
    unmatched: list[Path] = []
    for path in sorted(ann_dir.rglob("*")):
        if not path.is_file() or not _is_annotation_name(path.name) or path.name.startswith("."):
            continue
        stem = match_stem(path.name, stems)
        if stem is None:
            unmatched.append(path)
        else:
            found.setdefault(stem, []).append(path)
    return found, unmatched


def _frame_by_name(rest: str) -> str | None:
    rest = rest.lower()
    if "full" in rest:
        return "full"
    if "ceus" in rest or "mask" in rest:
        return "ceus"
    return None


def _decide_frame(path: Path, kf: KeyFrame, size: tuple[int, int] | None) -> str:
    """``"full"`` or ``"ceus"``: the image the annotation was drawn on (size is ``(w, h)``)."""
    lay = kf.layout
    full = (lay.frame_width, lay.frame_height)
    ceus = (lay.ceus.w, lay.ceus.h)
    by_name = _frame_by_name(path.name[len(kf.stem):].rsplit(".", 1)[0])
    if size is not None:
        matches = [name for name, s in (("full", full), ("ceus", ceus)) if s == size]
        if len(matches) == 1:
            return matches[0]
        if len(matches) == 2 and by_name:
            return by_name
        if not matches:
            raise InputError(path, f"image size {size[0]}x{size[1]} matches neither the full frame "
                                   f"({full[0]}x{full[1]}) nor the CEUS panel ({ceus[0]}x{ceus[1]})")
    if by_name:
        return by_name
    raise InputError(path, "cannot tell whether it was drawn on the full frame or the CEUS crop "
                           "(no imageWidth/imageHeight and no _full/_ceus in the name)")


def load_labelme(path: str | os.PathLike, kf: KeyFrame, label: str | None = None) -> np.ndarray:
    """Rasterise the polygons of LabelMe file ``path`` onto ``kf``'s CEUS crop.

    ``label``: only polygons with this label count (``None``: every polygon).
    Returns an ``(h, w)`` uint8 0/1 mask of the CEUS panel size. Raises
    :class:`InputError` for invalid JSON, no polygon, a polygon with fewer than
    3 points, points outside the image or the CEUS panel, a self-intersecting
    polygon, or an empty result.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise InputError(path, "not a LabelMe file (no 'shapes' list)")
    size = None
    w, h = data.get("imageWidth"), data.get("imageHeight")
    if w is not None or h is not None:
        try:
            size = (int(w), int(h))
        except (TypeError, ValueError):
            raise InputError(path, f"invalid imageWidth/imageHeight {w!r}/{h!r}") from None
    frame = _decide_frame(path, kf, size)
    lay = kf.layout
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
        if frame == "full":
            if not points_inside(pts, lay.frame_width, lay.frame_height, POINT_TOLERANCE_PX):
                raise InputError(path, f"{name} has points outside the {lay.frame_width}x"
                                       f"{lay.frame_height} frame")
            pts = pts - np.array([lay.ceus.x, lay.ceus.y], dtype=np.float64)
            if not points_inside(pts, lay.ceus.w, lay.ceus.h, POINT_TOLERANCE_PX):
                raise InputError(path, f"{name} has points outside the CEUS panel "
                                       f"(x {lay.ceus.x}-{lay.ceus.x + lay.ceus.w - 1}, "
                                       f"y {lay.ceus.y}-{lay.ceus.y + lay.ceus.h - 1})")
        elif not points_inside(pts, lay.ceus.w, lay.ceus.h, POINT_TOLERANCE_PX):
            raise InputError(path, f"{name} has points outside the {lay.ceus.w}x{lay.ceus.h} CEUS crop")
        crossing = self_intersection(pts)
        if crossing is not None:
            raise InputError(path, f"{name} intersects itself (edges {crossing[0]} and {crossing[1]})")
        polys.append(pts)
    if not polys:
        which = f"with label {label!r}" if label is not None else ""
        raise InputError(path, f"no polygon {which}".rstrip())
    mask = fill_polygons(polys, lay.ceus.h, lay.ceus.w)
    if not mask.any():
        raise InputError(path, "polygons cover no pixel (empty mask)")
    return mask


def load_mask_png(path: str | os.PathLike, kf: KeyFrame) -> np.ndarray:
    """Read binary mask PNG ``path`` (CEUS crop size or full-frame size) for ``kf``.

    Colour PNGs are reduced to the maximum over their colour channels (alpha is
    ignored). Returns an ``(h, w)`` uint8 0/1 CEUS-crop mask (nonzero = lesion).
    Raises :class:`InputError` for unreadable files, a size matching neither
    image, a non-binary image or an empty mask.
    """
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(path, "cannot read as an image")
    if img.ndim == 3:
        img = img[..., :3].max(axis=2) if img.shape[2] >= 3 else img[..., 0]
    h, w = img.shape[:2]
    frame = _decide_frame(path, kf, (w, h))
    top = int(img.max())
    if top > 0:
        intermediate = np.count_nonzero((img > 0) & (img < top)) / img.size
        if intermediate > MAX_INTERMEDIATE_FRACTION:
            raise InputError(path, f"not a binary mask ({100 * intermediate:.1f}% of pixels are "
                                   f"neither 0 nor {top})")
    mask = (img > 0).astype(np.uint8)
    if frame == "full":
        b = kf.layout.ceus
        mask = np.ascontiguousarray(mask[b.y : b.y + b.h, b.x : b.x + b.w])
    if not mask.any():
        raise InputError(path, "empty mask (no lesion pixel" + (" inside the CEUS panel)" if frame == "full" else ")"))
    return mask


def load_annotation(path: str | os.PathLike, kf: KeyFrame, label: str | None = None) -> np.ndarray:
    """Load one annotation file (LabelMe JSON or mask PNG) as a CEUS-crop 0/1 mask."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return load_labelme(path, kf, label)
    return load_mask_png(path, kf)


def import_annotations(ann_dir: str | os.PathLike, frames: Iterable[KeyFrame],
                       label: str | None = None) -> AnnotationSet:
    """Import the annotations under ``ann_dir`` for ``frames``.

    A frame with no annotation file is ``unannotated`` (counted, not an error);
    a frame with more than one file, or whose file is rejected, is left out with
    a problem naming the file. Each problem is logged as a warning.
    """
    frames = list(frames)
    by_stem = {f.stem: f for f in frames}
    found, unmatched = find_annotation_files(ann_dir, by_stem)
    result = AnnotationSet(unmatched=unmatched)
    for path in unmatched:
        log.warning("%s: annotation file matches no key frame (ignored)", path)
    for kf in frames:
        files = found.get(kf.stem, [])
        if not files:
            result.unannotated.append(kf.stem)
            continue
        if len(files) > 1:
            names = ", ".join(str(p) for p in files)
            result.problems.append(AnnotationProblem(str(files[0]), kf.stem,
                                                     f"several annotation files for one frame ({names})"))
            continue
        try:
            result.masks[kf.stem] = load_annotation(files[0], kf, label)
            result.files[kf.stem] = files[0]
        except InputError as exc:
            result.problems.append(AnnotationProblem(str(files[0]), kf.stem, exc.problem))
    for problem in result.problems:
        log.warning("%s", problem)
    if result.unannotated:
        log.info("%d of %d key frames have no annotation", len(result.unannotated), len(frames))
    return result
