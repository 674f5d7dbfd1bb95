"""The phantom as annotator: LabelMe annotations of phantom key frames from the phantom's truth.

For each exam of a key-frame folder whose source is a phantom clip
``PHANTOM_DIR/<patient>/<exam>.mp4``, the truth ``<exam>.truth/`` gives the CEUS
region of interest at any time (:func:`ceuspipe.synth.truth.truth_masks_at`).
Its outer contours become LabelMe polygons ``ANN_OUT/<stem>_ceus.json`` drawn on the
CEUS crop (:func:`ceuspipe.dataset.formats.labelme.labelme_document`), exactly what a
clinician would export, so the whole chain runs without a hand step. It reads the
key-frame folder and writes the annotation format through their public modules, as
any annotation tool would; the dataset stage never imports the phantom.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ceuspipe.dataset.formats.labelme import labelme_document
from ceuspipe.dataset.keyframe_index import KeyFrame, load_keyframe_index
from ceuspipe.dataset.rasterize import mask_to_polygons
from ceuspipe.errors import InputError, OutputError
from ceuspipe.fsutil import atomic_dir
from ceuspipe.synth.truth import load_truth, truth_dir_for, truth_layout, truth_masks_at
from ceuspipe.video.sampling import evenly_spaced

log = logging.getLogger("ceuspipe")


@dataclass
class PhantomAnnotationReport:
    """``written``: stems annotated; ``skipped``: ``(stem, reason)`` for frames
    whose ROI gave no usable polygon (e.g. the lesion is out of the crop)."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _truth_dir(kf: KeyFrame, phantom_dir: Path) -> Path:
    src = Path(kf.source)
    candidates = [truth_dir_for(src)]
    if not src.is_absolute():
        candidates.append(truth_dir_for(phantom_dir / src))
    candidates.append(phantom_dir / src.parent.name / f"{src.stem}.truth")
    candidates.append(phantom_dir / kf.patient_id / f"{kf.exam_id}.truth")
    for c in candidates:
        if c.is_dir():
            return c
    raise InputError(phantom_dir, f"no phantom truth for exam {kf.patient_id}/{kf.exam_id} "
                                  f"(source {kf.source}; looked for {', '.join(str(c) for c in candidates)})")


def _ceus_roi_on_crop(truth: dict, kf: KeyFrame, time_s: float) -> np.ndarray:
    """Truth CEUS ROI at ``time_s`` moved from the phantom's panel to the key
    frame's recorded CEUS box (they differ when the layout was detected)."""
    roi = truth_masks_at(truth, time_s)[0]
    t = truth_layout(truth).ceus
    k = kf.layout.ceus
    if (t.x, t.y, t.w, t.h) == (k.x, k.y, k.w, k.h):
        return roi
    full = np.zeros((max(kf.layout.frame_height, t.y + t.h, k.y + k.h),
                     max(kf.layout.frame_width, t.x + t.w, k.x + k.w)), np.uint8)
    full[t.y:t.y + t.h, t.x:t.x + t.w] = roi
    return full[k.y:k.y + k.h, k.x:k.x + k.w].copy()


def choose_frames(frames: list[KeyFrame], per_exam: int | None) -> list[KeyFrame]:
    """``per_exam`` key frames of each exam, evenly spread in time (``None``: all)."""
    by_exam: dict[tuple[str, str], list[KeyFrame]] = {}
    for f in frames:
        by_exam.setdefault((f.patient_id, f.exam_id), []).append(f)
    chosen = []
    for key in sorted(by_exam):
        fs = sorted(by_exam[key], key=lambda f: f.time_s)
        chosen.extend(fs if per_exam is None else [fs[i] for i in evenly_spaced(len(fs), per_exam)])
    return chosen


def annotate_phantom(kf_out: str | os.PathLike, phantom_dir: str | os.PathLike, ann_out: str | os.PathLike,
                     frames_per_exam: int | None = None, label: str = "lesion",
                     overwrite: bool = False) -> PhantomAnnotationReport:
    """Write ``ann_out/<stem>_ceus.json`` for the chosen key frames of ``kf_out``.

    ``frames_per_exam``: key frames annotated per exam, spread in time (``None``:
    all). ``imagePath`` points at the key frame's CEUS crop relative to
    ``ann_out``. Raises :class:`InputError` when an exam has no phantom truth,
    :class:`OutputError` for a non-empty ``ann_out`` without ``overwrite``.
    """
    phantom_dir, ann_out = Path(phantom_dir), Path(ann_out)
    if frames_per_exam is not None and frames_per_exam < 1:
        raise ValueError("frames per exam must be at least 1 (or None for all)")
    if ann_out.exists() and (not ann_out.is_dir() or any(ann_out.iterdir())) and not overwrite:
        raise OutputError(ann_out, "exists and is not empty (use --overwrite to replace it)")
    frames = choose_frames(load_keyframe_index(kf_out), frames_per_exam)
    report = PhantomAnnotationReport(out_dir=ann_out)
    truths: dict[tuple[str, str], dict] = {}
    with atomic_dir(ann_out, overwrite=True) as tmp:
        for f in frames:
            key = (f.patient_id, f.exam_id)
            if key not in truths:
                truths[key] = load_truth(_truth_dir(f, phantom_dir))
            roi = _ceus_roi_on_crop(truths[key], f, f.time_s)
            polys = mask_to_polygons(roi)
            if not polys:
                reason = "no region of interest inside the CEUS crop at this time"
                log.warning("%s: %s; not annotated", f.stem, reason)
                report.skipped.append((f.stem, reason))
                continue
            image_path = Path(os.path.relpath(f.ceus_path.resolve(), ann_out.resolve())).as_posix()
            doc = labelme_document(polys, f.layout.ceus.w, f.layout.ceus.h, image_path, label)
            (tmp / f"{f.stem}_ceus.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            report.written.append(f.stem)
    log.info("phantom annotations: %d written, %d skipped, in %s", len(report.written),
             len(report.skipped), ann_out)
    return report
