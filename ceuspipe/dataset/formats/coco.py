"""COCO JSON (the export of CVAT and Label Studio): one file for many images.

A ``*.json`` holding ``images`` and ``annotations`` lists. Each image with at least one
annotation belongs to the key frame whose stem its ``file_name`` (folders dropped; a
Label Studio upload prefix ``<8 hex digits>-`` is dropped when the name matches no
stem otherwise) starts with; its ``width`` x ``height`` (or ``_full`` / ``_ceus`` in the
name) tells whether it is the full frame or the CEUS crop. The lesion is the union of
the image's annotations (with ``label``: of category ``label`` only). Segmentations:

- polygons ``[[x0, y0, x1, y1, ...], ...]`` in COCO's pixel-edge coordinates (pixel
  ``(0, 0)`` spans ``[0, 1) x [0, 1)``), moved to pixel centres (minus 0.5 px) and
  checked like LabelMe polygons; a pixel is inside when its centre is (COCO's rule);
- RLE ``{"size": [h, w], "counts": [...]}`` (uncompressed) or ``"counts": "..."``
  (COCO's compressed string), column-major runs starting with background.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from ceuspipe.dataset.formats.labelme import read_json
from ceuspipe.dataset.formats.placement import decide_frame, mask_to_crop, match_stem, polygon_on_crop
from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.dataset.rasterize import fill_polygons
from ceuspipe.errors import InputError

DESCRIPTION = "COCO JSON (CVAT, Label Studio): many images per file; polygons, RLE"
#: checks the content, so it outranks ``labelme``'s claim on every ``*.json``
priority = 1

_LABEL_STUDIO_PREFIX = re.compile(r"^[0-9a-f]{8}-")


@dataclass(frozen=True)
class _Coco:
    images: list[dict]
    annotations: dict[object, list[dict]]  # image id -> its annotations
    categories: dict[object, str]  # category id -> name
    malformed: str  # what is wrong with the lists ("" when nothing)


@lru_cache(maxsize=4)
def _parse(path: str, mtime_ns: int, size: int) -> _Coco | None:
    data = read_json(Path(path))
    if not (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list)):
        return None
    images = [im for im in data["images"] if isinstance(im, dict)]
    ids = {im.get("id") for im in images}
    by_image: dict[object, list[dict]] = {}
    for ann in data["annotations"]:
        if isinstance(ann, dict) and ann.get("image_id") in ids:
            by_image.setdefault(ann.get("image_id"), []).append(ann)
    bad_images = len(data["images"]) - len(images)
    bad_anns = len(data["annotations"]) - sum(map(len, by_image.values()))
    malformed = ", ".join(f"{n} {what}" for n, what in ((bad_images, "images that are not objects"),
                                                         (bad_anns, "annotations of no listed image")) if n)
    categories = {c.get("id"): str(c.get("name")) for c in data.get("categories") or [] if isinstance(c, dict)}
    return _Coco(images, by_image, categories, malformed)


def _load(path: Path) -> _Coco | None:
    """The COCO content of ``path`` (parsed once while the file is unchanged), ``None``
    for another JSON; :class:`InputError` when unreadable."""
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    return _parse(str(path), st.st_mtime_ns, st.st_size)


def claims(path: Path) -> bool:
    """``*.json`` files holding ``images`` and ``annotations`` lists."""
    if path.suffix.lower() != ".json":
        return False
    try:
        return _load(path) is not None
    except InputError:
        return False


def _image_stem(image: dict, stems: set[str]) -> tuple[str | None, str]:
    """``(stem or None, file name)`` of a COCO image entry."""
    name = PurePosixPath(str(image.get("file_name", "")).replace("\\", "/")).name
    stem = match_stem(name, stems)
    if stem is None and _LABEL_STUDIO_PREFIX.match(name):
        name = name[9:]
        stem = match_stem(name, stems)
    return stem, name


def stems(path: Path, known: set[str]) -> list[str]:
    """The key frames among the stems ``known`` that file ``path`` has an annotated image of."""
    coco = _load(path)
    if coco is None:
        raise InputError(path, "not a COCO file (no 'images' and 'annotations' lists)")
    if coco.malformed:
        raise InputError(path, f"malformed COCO file: {coco.malformed}")
    return sorted({s for im in coco.images if coco.annotations.get(im.get("id"))
                   for s in [_image_stem(im, known)[0]] if s is not None})


def rle_counts(text: str) -> list[int]:
    """Run lengths of COCO's compressed RLE string: per count 5-bit groups (+48, least
    significant first, 0x20 = more follow, 0x10 in the last = negative), counts from
    the fourth on stored as the difference to the count two before."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        while True:
            if p >= len(text):
                raise ValueError("truncated")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {text[p]!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            p += 1
            k += 1
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << (5 * k)
                break
        counts.append(x + counts[-2] if len(counts) > 2 else x)
    return counts


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """``(height, width)`` uint8 0/1 mask of column-major runs ``counts`` (0s first);
    ``ValueError`` unless they are non-negative and add up to ``height * width``."""
    runs = np.asarray(counts, dtype=np.int64)
    if runs.ndim != 1 or (runs < 0).any() or int(runs.sum()) != height * width:
        raise ValueError(f"runs must be non-negative and add up to {height}x{width} = {height * width} pixels")
    flat = np.repeat(np.arange(len(runs), dtype=np.uint8) % 2, runs)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def polygons_area(path: Path, kf: KeyFrame, frame: str, seg: list, what: str) -> np.ndarray:
    """CEUS-crop ``(h, w)`` uint8 0/1 mask of COCO polygons ``seg`` (``[[x0, y0, x1, y1, ...],
    ...]``, pixel edges) drawn on image ``frame``: the pixels whose centre is inside one."""
    c = kf.layout.ceus
    mask = np.zeros((c.h, c.w), dtype=np.uint8)
    for i, flat in enumerate(seg):
        name = f"{what} polygon {i}"
        try:
            if not isinstance(flat, list) or len(flat) % 2:
                raise ValueError("not a flat [x0, y0, x1, y1, ...] list")
            pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2) - 0.5  # pixel edges -> centres
        except (TypeError, ValueError) as exc:
            raise InputError(path, f"{name}: invalid points ({exc})") from None
        mask |= fill_polygons([polygon_on_crop(path, kf, frame, pts, name)], c.h, c.w, outline=False)
    return mask


def _annotation_area(path: Path, kf: KeyFrame, frame: str, ann: dict, what: str) -> np.ndarray:
    """CEUS-crop uint8 0/1 mask of one COCO annotation on image ``frame``."""
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        return polygons_area(path, kf, frame, seg, what)
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        lay = kf.layout
        want = [lay.frame_height, lay.frame_width] if frame == "full" else [lay.ceus.h, lay.ceus.w]
        if list(seg["size"]) != want:
            raise InputError(path, f"{what}: RLE size {seg['size']} is not the image's [h, w] {want}")
        try:
            counts = rle_counts(seg["counts"]) if isinstance(seg["counts"], str) else list(seg["counts"])
            full = rle_decode(counts, *want)
        except (ValueError, TypeError) as exc:
            raise InputError(path, f"{what}: invalid RLE ({exc})") from None
        return mask_to_crop(full, kf, frame)
    raise InputError(path, f"{what}: segmentation is neither polygons nor RLE")


def read(path: Path, kf: KeyFrame, label: str | None = None) -> np.ndarray:
    """The lesion of key frame ``kf`` in COCO file ``path`` as an ``(h, w)`` uint8 0/1
    CEUS-crop mask (``label``: only annotations of that category name). Raises
    :class:`InputError` naming ``path`` and the image or annotation for several images
    of the frame, no annotation (of the category), an unusable segmentation or an
    empty result."""
    path = Path(path)
    coco = _load(path)
    if coco is None:
        raise InputError(path, "not a COCO file (no 'images' and 'annotations' lists)")
    hits = [(im, name) for im in coco.images if coco.annotations.get(im.get("id"))
            for stem, name in [_image_stem(im, {kf.stem})] if stem == kf.stem]
    if len(hits) != 1:
        names = ", ".join(repr(name) for _, name in hits) or "none"
        raise InputError(path, f"{len(hits)} annotated images belong to this key frame ({names}), needs 1")
    image, name = hits[0]
    w, h = image.get("width"), image.get("height")
    try:
        size = None if w is None and h is None else (int(w), int(h))
    except (TypeError, ValueError):
        raise InputError(path, f"image {name!r}: invalid width/height {w!r}/{h!r}") from None
    frame = decide_frame(path, kf, size, name)
    anns = coco.annotations[image["id"]]
    if label is not None:
        anns = [a for a in anns if coco.categories.get(a.get("category_id")) == label]
        if not anns:
            raise InputError(path, f"image {name!r}: no annotation of category {label!r}")
    c = kf.layout.ceus
    mask = np.zeros((c.h, c.w), dtype=np.uint8)
    for ann in anns:
        mask |= _annotation_area(path, kf, frame, ann, f"annotation {ann.get('id')} (image {name!r})")
    if not mask.any():
        raise InputError(path, f"image {name!r}: annotations cover no pixel (empty mask)")
    return mask


def coco_document(images: list[tuple[str, int, int, list[np.ndarray]]], category: str = "lesion",
                  info: dict | None = None) -> dict:
    """A COCO JSON document (for CVAT and Label Studio) with one image per ``(file_name,
    width, height, polygons)`` entry and one annotation of category ``category`` per
    polygon; ``polygons`` are ``(n, 2)`` pixel-centre points (written in COCO's pixel-edge
    coordinates, plus 0.5 px). ``info``: COCO's ``info`` object. Annotation ``area`` is
    the polygon's area, ``bbox`` its ``[x, y, w, h]`` in pixel edges."""
    out_images, annotations = [], []
    for image_id, (file_name, width, height, polygons) in enumerate(images, start=1):
        out_images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        for poly in polygons:
            pts = np.asarray(poly, dtype=np.float64) + 0.5  # pixel centres -> pixel edges
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": [[round(float(v), 3) for v in pts.reshape(-1)]],
                                "area": round(float(cv2.contourArea(pts.astype(np.float32))), 3),
                                "bbox": [round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0)],
                                "iscrowd": 0})
    return {"info": dict(info or {}), "licenses": [], "images": out_images, "annotations": annotations,
            "categories": [{"id": 1, "name": category, "supercategory": ""}]}
