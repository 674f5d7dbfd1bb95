"""Find exam videos and DICOM cines in files and folders, with patient and exam ids.

Id rule (also in data/README.md, "Input videos and patient ids"):

* a file found under a folder ``ROOT`` given on the command line:
  ``patient_id`` is the first folder below ``ROOT``
  (``ROOT/P001/visit2/clip.mp4`` -> ``P001``) and ``exam_id`` the rest of the
  path below that folder without the suffix, joined with ``_``
  (-> ``visit2_clip``); a file lying directly in ``ROOT`` uses its stem for both;
* a file given directly: ``patient_id`` is its parent folder's name,
  ``exam_id`` its stem.

Every id goes through :func:`ceuspipe.fsutil.safe_name`. Inputs that end up
with the same ``(patient_id, exam_id)`` get ``_2``, ``_3``... in path order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ceuspipe.errors import InputError
from ceuspipe.fsutil import safe_name
from ceuspipe.video.dicom import has_dicom_magic

#: File suffixes taken as exam videos (compared lower-case).
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg",
                            ".wmv", ".dcm"})


@dataclass(frozen=True)
class ExamInput:
    """One input clip: ``path`` as found, sanitised ``patient_id`` and ``exam_id``."""

    path: Path
    patient_id: str
    exam_id: str


def exam_stem(path: Path) -> str:
    """File name without a known video suffix (DICOM names like ``1.2.840.5`` stay whole)."""
    return path.stem if path.suffix.lower() in VIDEO_SUFFIXES else path.name


def is_exam_file(path: Path) -> bool:
    """True for a known video suffix, or a DICOM file (``DICM`` at byte 128) whose name
    has no suffix or a numeric one (UID-style names such as ``1.2.840.113619.2.5``)."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix == "" or suffix[1:].isdigit():
        return has_dicom_magic(path)
    return False


#: Folder suffixes of ceuspipe's own outputs beside a clip (phantom truth,
#: segment-video results): never searched for exams.
OUTPUT_FOLDER_SUFFIXES = (".truth", ".ceuspipe")


def _walk(root: Path) -> Iterator[Path]:
    """Exam files under ``root``, recursively, sorted; hidden entries and the
    :data:`OUTPUT_FOLDER_SUFFIXES` folders are skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and not d.endswith(OUTPUT_FOLDER_SUFFIXES))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_file() and is_exam_file(path):
                yield path


def ids_under_root(path: Path, root: Path) -> tuple[str, str]:
    """``(patient_id, exam_id)`` for ``path`` found under folder ``root`` (sanitised)."""
    parts = path.relative_to(root).parts
    stem = exam_stem(path)
    if len(parts) == 1:
        return safe_name(stem), safe_name(stem)
    return safe_name(parts[0]), safe_name("_".join([*parts[1:-1], stem]))


def ids_for_file(path: Path) -> tuple[str, str]:
    """``(patient_id, exam_id)`` for a file named directly (sanitised)."""
    return safe_name(path.absolute().parent.name), safe_name(exam_stem(path))


def find_inputs(paths: Sequence[str | os.PathLike]) -> list[ExamInput]:
    """Expand files and folders into exam inputs, sorted by ``(patient_id, exam_id)``.

    Folders are searched recursively (hidden entries and ``*.truth`` /
    ``*.ceuspipe`` output folders skipped) for files with a
    suffix in :data:`VIDEO_SUFFIXES` (any case) and for DICOM files without a
    suffix. A file reached twice (same real path) is kept once, with the ids from
    the first argument that reached it. Raises :class:`InputError` for a path
    that does not exist or a folder holding no video or DICOM file.
    """
    seen: set[str] = set()
    found: list[ExamInput] = []
    for raw in paths:
        arg = Path(raw)
        if not arg.exists():
            raise InputError(arg, "no such file or folder")
        if arg.is_dir():
            files = [(p, ids_under_root(p, arg)) for p in _walk(arg)]
            if not files:
                raise InputError(arg, "no video or DICOM files found")
        else:
            files = [(arg, ids_for_file(arg))]
        for path, (patient_id, exam_id) in files:
            key = os.path.realpath(path)
            if key in seen:
                continue
            seen.add(key)
            found.append(ExamInput(path, patient_id, exam_id))
    return _unique_ids(found)


def _unique_ids(items: list[ExamInput]) -> list[ExamInput]:
    """Give repeated ``(patient_id, exam_id)`` pairs ``_2``, ``_3``... in path order."""
    items = sorted(items, key=lambda e: (e.patient_id, e.exam_id, str(e.path)))
    taken = {(e.patient_id, e.exam_id) for e in items}
    used: set[tuple[str, str]] = set()
    out: list[ExamInput] = []
    for item in items:
        key = (item.patient_id, item.exam_id)
        if key in used:
            n = 2
            while (item.patient_id, f"{item.exam_id}_{n}") in taken | used:
                n += 1
            item = ExamInput(item.path, item.patient_id, f"{item.exam_id}_{n}")
            key = (item.patient_id, item.exam_id)
        used.add(key)
        out.append(item)
    return sorted(out, key=lambda e: (e.patient_id, e.exam_id, str(e.path)))
