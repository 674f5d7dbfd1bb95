"""Annotation file formats: one plug-in per format, looked up by name.

A format is any object (a module, a class, an :class:`AnnotationFormat`) with

- ``claims(path) -> bool``: whether a file found under the annotation folder is one of
  this format's (by its name, or by peeking into it; it must not raise);
- ``read(path, kf, label) -> (h, w) uint8 0/1``: the file's lesion mask on key frame
  ``kf``'s CEUS crop (``h, w = kf.layout.ceus.h, .w``; ``kf.layout`` also gives the CEUS
  box in the frame and the frame size); ``label`` keeps only shapes with that label
  (``None``: every shape). An unusable file raises
  :class:`~ceuspipe.errors.InputError` naming ``path`` and the problem (one line);
- optionally ``stems(path, stems) -> list[str]``: the key frames (of the set ``stems``)
  that a file holding many images annotates (default: the stem its file name starts
  with, :func:`~ceuspipe.dataset.formats.placement.match_stem`);
- optionally ``priority`` (int, default 0): when several formats claim one file, the
  highest wins (a format that checks a file's content outranks one that checks its
  suffix); a tie is a problem;
- optionally ``DESCRIPTION`` (or ``description``): one line for messages.

Formats are registered:

- built in: ``labelme`` (:mod:`.labelme`), ``png-mask`` (:mod:`.png_mask`), ``coco``
  (:mod:`.coco`);
- in code: :func:`register_format` (``FORMATS.register``);
- by other packages: an entry point in the group ``ceuspipe.annotation_formats``
  (``name = "package.module"`` or ``"package.module:object"``), loaded on first lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.registry import Registry

#: the entry-point group other packages register annotation formats under
ENTRY_POINT_GROUP = "ceuspipe.annotation_formats"

ClaimsFn = Callable[[Path], bool]
ReadFn = Callable[[Path, KeyFrame, "str | None"], np.ndarray]
StemsFn = Callable[[Path, "set[str]"], "list[str]"]


@dataclass(frozen=True)
class AnnotationFormat:
    """A named annotation format: ``claims``, ``read``, ``stems`` (``None``: by file
    name) and ``priority`` as in the module docstring."""

    name: str
    claims: ClaimsFn
    read: ReadFn
    description: str = ""
    stems: StemsFn | None = None
    priority: int = 0


def _as_format(name: str, obj) -> AnnotationFormat:
    claims, read = getattr(obj, "claims", None), getattr(obj, "read", None)
    if not callable(claims) or not callable(read):
        raise ValueError(f"annotation format {name!r} needs claims(path) and read(path, kf, label)")
    description = getattr(obj, "description", None) or getattr(obj, "DESCRIPTION", None) or ""
    return AnnotationFormat(name, claims, read, str(description), getattr(obj, "stems", None),
                            int(getattr(obj, "priority", 0)))


#: every annotation format known, by name (:class:`ceuspipe.registry.Registry`)
FORMATS: Registry[AnnotationFormat] = Registry("annotation format", ENTRY_POINT_GROUP, wrap=_as_format)


def register_format(name: str, fmt=None, *, replace: bool = False):
    """Register ``fmt`` (an object with ``claims`` and ``read``) under ``name``; without
    ``fmt``, a class decorator. ``ValueError`` for a name already taken (unless ``replace``)."""
    return FORMATS.register(name, fmt, replace=replace)


def format_names() -> list[str]:
    """Names of every annotation format known (built in, registered, entry points), sorted."""
    return FORMATS.names()


def get_formats(names: list[str] | tuple[str, ...] | None = None) -> list[AnnotationFormat]:
    """The formats called ``names`` (``None``: every one known), in that order, once
    each; ``ValueError`` naming the known ones for an unknown name."""
    return list(FORMATS) if names is None else [FORMATS.get(n) for n in dict.fromkeys(names)]


def _register_builtins() -> None:
    from ceuspipe.dataset.formats import coco, labelme, png_mask

    register_format("coco", coco)
    register_format("labelme", labelme)
    register_format("png-mask", png_mask)


_register_builtins()
