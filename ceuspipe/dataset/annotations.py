"""Import clinicians' CEUS region-of-interest annotations for exported key frames.

Files under an annotation folder (searched recursively) are read by the annotation
formats of :mod:`ceuspipe.dataset.formats` (built in: LabelMe JSON shapes and COCO
JSON, on the full frame or the CEUS crop, and binary PNG masks; others are plug-ins).
A file belongs to the format that claims it and to the key frame whose stem
``<patient_id>__<exam_id>__<sample_index:04d>`` its name starts with, followed by
``_``, ``.`` or ``-`` (a COCO file: to the key frames its images are named after).

Every problem becomes an :class:`AnnotationProblem` naming the file, the frame
is left out, and the problem is logged: nothing is dropped silently. The result
masks are ``(h, w)`` uint8 0/1 arrays of the CEUS panel size.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ceuspipe.dataset.formats import AnnotationFormat, get_formats
from ceuspipe.dataset.formats.placement import match_stem
from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.errors import InputError

log = logging.getLogger("ceuspipe")


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
    ``files``: stem -> annotation file used; ``formats``: stem -> name of the
    format that read it; ``problems``: rejected files;
    ``unannotated``: stems with no annotation file; ``unmatched``: annotation
    files whose name matches no key frame (ignored, but reported).
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    problems: list[AnnotationProblem] = field(default_factory=list)
    unannotated: list[str] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)


def _files_stems(path: Path, fmt: AnnotationFormat, stems: set[str]) -> list[str]:
    """The key frames file ``path`` annotates (by its name unless ``fmt`` says otherwise)."""
    if fmt.stems is None:
        stem = match_stem(path.name, stems)
        return [] if stem is None else [stem]
    return sorted(set(fmt.stems(path, stems)) & stems)


def find_annotation_files(ann_dir: str | os.PathLike, stems: Iterable[str],
                          formats: list[AnnotationFormat] | None = None):
    """Map each stem to its annotation files under ``ann_dir`` (recursive).

    Only files claimed by one of ``formats`` (``None``: every registered format) are
    considered, so other files (such as exported key frames kept beside the
    annotations) are ignored; hidden files are skipped. Of several formats claiming a
    file the one of highest priority reads it. Returns ``(stem -> sorted [(file,
    format)], files matching no stem, problems)``: a file claimed by several formats of
    the same priority, or whose list of frames cannot be read, is a problem.
    """
    ann_dir = Path(ann_dir)
    if not ann_dir.is_dir():
        raise InputError(ann_dir, "annotation folder not found")
    formats = get_formats() if formats is None else formats
    stems = set(stems)
    found: dict[str, list[tuple[Path, AnnotationFormat]]] = {}
    unmatched: list[Path] = []
    problems: list[AnnotationProblem] = []
    for path in sorted(ann_dir.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        claiming = [f for f in formats if f.claims(path)]
        if not claiming:
            continue
        top = max(f.priority for f in claiming)
        claiming = [f for f in claiming if f.priority == top]
        if len(claiming) > 1:
            names = ", ".join(f.name for f in claiming)
            problems.append(AnnotationProblem(str(path), match_stem(path.name, stems),
                                              f"claimed by several annotation formats ({names}); "
                                              "choose with --format"))
            continue
        try:
            covered = _files_stems(path, claiming[0], stems)
        except InputError as exc:
            problems.append(AnnotationProblem(str(path), None, exc.problem))
            continue
        if not covered:
            unmatched.append(path)
        for stem in covered:
            found.setdefault(stem, []).append((path, claiming[0]))
    return found, unmatched, problems


def _read(path: Path, fmt: AnnotationFormat, kf: KeyFrame, label: str | None) -> np.ndarray:
    """``fmt.read`` with its contract checked: an ``(h, w)`` CEUS-crop mask, not empty."""
    mask = np.asarray(fmt.read(path, kf, label))
    c = kf.layout.ceus
    if mask.shape != (c.h, c.w):
        raise InputError(path, f"format {fmt.name} gave a mask of shape {mask.shape}, the CEUS panel "
                               f"is {c.w}x{c.h}")
    if not mask.any():
        raise InputError(path, "empty mask (no lesion pixel)")
    return (mask != 0).astype(np.uint8)


def import_annotations(ann_dir: str | os.PathLike, frames: Iterable[KeyFrame],
                       label: str | None = None, formats: list[str] | tuple[str, ...] | None = None
                       ) -> AnnotationSet:
    """Import the annotations under ``ann_dir`` for ``frames``.

    ``formats``: names of the annotation formats read (``None``: every registered
    one; ``ValueError`` naming the known ones for an unknown name). A frame with no
    annotation file is ``unannotated`` (counted, not an error); a frame with more
    than one file, or whose file is rejected, is left out with a problem naming
    the file. Each problem is logged as a warning.
    """
    frames = list(frames)
    by_stem = {f.stem: f for f in frames}
    found, unmatched, problems = find_annotation_files(ann_dir, by_stem, get_formats(formats))
    result = AnnotationSet(unmatched=unmatched, problems=problems)
    left_out = {p.stem for p in problems}
    for path in unmatched:
        log.warning("%s: annotation file matches no key frame (ignored)", path)
    for kf in frames:
        files = found.get(kf.stem, [])
        if kf.stem in left_out:
            continue
        if not files:
            result.unannotated.append(kf.stem)
            continue
        path, fmt = files[0]
        if len(files) > 1:
            names = ", ".join(str(p) for p, _ in files)
            result.problems.append(AnnotationProblem(str(path), kf.stem,
                                                     f"several annotation files for one frame ({names})"))
            continue
        try:
            result.masks[kf.stem] = _read(path, fmt, kf, label)
        except InputError as exc:
            result.problems.append(AnnotationProblem(str(path), kf.stem, exc.problem))
            continue
        result.files[kf.stem] = path
        result.formats[kf.stem] = fmt.name
    for problem in result.problems:
        log.warning("%s", problem)
    if result.unannotated:
        log.info("%d of %d key frames have no annotation", len(result.unannotated), len(frames))
    return result
