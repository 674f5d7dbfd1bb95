"""Key-frame extraction over exams: one streaming pass per video, many videos in parallel.

Each 1 fps sample of the CEUS panel is scored by the configured scorer
(:mod:`ceuspipe.keyframes.scorers`) and the k best are kept (:class:`TopK`).

Per exam ``OUT/<patient_id>/<exam_id>/`` receives (written atomically):

* ``<stem>_full.png``: the full frame with everything outside the two panels
  blacked out; ``<stem>_ceus.png`` and ``<stem>_us.png``: the panel crops
  (RGB, lossless), ``stem = <patient_id>__<exam_id>__<n:04d>``;
* ``keyframes.json``: source, ids, sampling rate, layout, and per selected
  frame its time, score and mean CEUS grey level;
* ``scores.csv``: every 1 fps sample with its time, score and grey level.

With ``KeyframeConfig.pseudonymize`` (a key file) the ids are pseudonyms
(:mod:`ceuspipe.pseudonym`), ``source`` is null in keyframes.json and empty in
manifest.csv, and warnings name the pseudonymous exam instead of its path.

``OUT/manifest.csv`` lists the key frames of every exam under ``OUT``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ceuspipe import __version__
from ceuspipe.cpus import usable_cpus
from ceuspipe.errors import CeuspipeError
from ceuspipe.fsutil import atomic_dir, atomic_write_text
from ceuspipe.inputs import ExamInput
from ceuspipe.keyframes.config import KeyframeConfig
from ceuspipe.keyframes.scorers import get_scorer
from ceuspipe.keyframes.select import TopK
from ceuspipe.png import write_png
from ceuspipe.preprocess import to_gray
from ceuspipe.video.layout import layout_warnings
from ceuspipe.video.panel_change import PanelChangeMeter
from ceuspipe.video.panels import black_outside_panels, crop

log = logging.getLogger("ceuspipe")

MANIFEST_COLUMNS = ("patient_id", "exam_id", "source", "sample_index", "time_s", "score",
                    "ceus_gray", "frame_path", "ceus_path", "us_path", "stem")


@dataclass
class ExamResult:
    """Outcome of one exam: ``status`` is ``done``, ``skipped`` or ``failed``."""

    exam: ExamInput
    status: str
    # (the exam's ids are pseudonyms when the run pseudonymised; ``exam.path`` is the source)
    out_dir: Path | None = None
    n_samples: int = 0
    n_selected: int = 0
    error: str | None = None


@dataclass
class KeyframesReport:
    results: list[ExamResult] = field(default_factory=list)

    def by_status(self, status: str) -> list[ExamResult]:
        return [r for r in self.results if r.status == status]


def exam_dir(out_root: Path, exam: ExamInput) -> Path:
    """``OUT/<patient_id>/<exam_id>`` (ids are already sanitised by :mod:`ceuspipe.inputs`)."""
    return Path(out_root) / exam.patient_id / exam.exam_id


def _write_pngs(items: list[tuple[Path, np.ndarray]]) -> None:
    """Write many lossless PNGs (:mod:`ceuspipe.png`) on all cores (the deflate and the
    filter release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
        for _ in pool.map(lambda item: write_png(*item), items):
            pass


def extract_exam(exam: ExamInput, out_root: str | os.PathLike, config: KeyframeConfig) -> ExamResult:
    """Sample one exam at ``config.sample_fps``, score, keep the top k, write its folder.

    Streams the video once; memory holds at most ``config.k`` key frames plus
    the samples buffered while the layout is decided (see
    :mod:`ceuspipe.video.clip_stream`). Raises :class:`InputError` for
    unreadable input or an undetectable layout.
    """
    from ceuspipe.video.clip_stream import open_clip

    final = exam_dir(Path(out_root), exam)
    if final.exists() and not config.overwrite:
        return ExamResult(exam, "skipped", final)

    score_fn = get_scorer(config.scorer)
    clip = open_clip(exam.path, config, sample_fps=config.sample_fps)
    layout = clip.layout
    top = TopK(config.k)
    rows: list[tuple[int, float, int, float, float]] = []  # n, time, frame index, score, gray
    changes = PanelChangeMeter()  # for the swapped-panel check (whatever the scorer)
    previous_gray: np.ndarray | None = None
    try:
        for frame in clip:
            ceus_gray = to_gray(crop(frame.image, layout.ceus))
            changes.add(frame.time_s, ceus_gray, to_gray(crop(frame.image, layout.us)))
            mean_gray = float(ceus_gray.mean(dtype=np.float64))
            masked = None
            for n in frame.samples:
                score = score_fn(ceus_gray, previous_gray)
                previous_gray = ceus_gray
                rows.append((n, frame.time_s, frame.index, score, mean_gray))
                if top.would_keep(score, n):
                    if masked is None:
                        masked = black_outside_panels(frame.image, layout)
                    top.push(score, n, (frame.time_s, mean_gray, masked))
    finally:
        clip.close()
    clip.check_length()
    hide = config.pseudonymize is not None
    shown = f"{exam.patient_id}/{exam.exam_id}" if hide else exam.path
    warnings = layout_warnings(shown, layout, changes.ceus_changes, changes.us_changes)

    if len(rows) < config.k:
        log.warning("%s: only %d samples at %g fps (fewer than k=%d): keeping all",
                    exam.path, len(rows), config.sample_fps, config.k)
    kept = top.items()
    with atomic_dir(final, overwrite=config.overwrite) as tmp:
        frames_meta = []
        pngs: list[tuple[Path, np.ndarray]] = []
        for score, n, (time_s, mean_gray, masked) in kept:
            stem = f"{exam.patient_id}__{exam.exam_id}__{n:04d}"
            names = {"frame_path": f"{stem}_full.png", "ceus_path": f"{stem}_ceus.png",
                     "us_path": f"{stem}_us.png"}
            images = {"frame_path": masked, "ceus_path": crop(masked, layout.ceus),
                      "us_path": crop(masked, layout.us)}
            pngs += [(tmp / name, images[key]) for key, name in names.items()]
            frames_meta.append({"stem": stem, "sample_index": n, "time_s": round(time_s, 6),
                                "score": round(score, 6), "ceus_gray": round(mean_gray, 6), **names})
        _write_pngs(pngs)
        meta = {
            "source": None if hide else str(exam.path),
            "pseudonymized": hide,
            "patient_id": exam.patient_id,
            "exam_id": exam.exam_id,
            "sample_fps": config.sample_fps,
            "k": config.k,
            "scorer": config.scorer,
            "layout": layout.to_dict(),
            "layout_decision": clip.decision.to_dict(),
            "warnings": warnings,
            "n_frames_decoded": clip.frames_decoded,
            "decode_path": clip.decode_path,
            "decode_note": clip.decode_note,
            "n_samples": len(rows),
            "duration_s": round(clip.last_time_s, 6),
            "fewer_samples_than_k": len(rows) < config.k,
            "ceuspipe_version": __version__,
            "frames": frames_meta,
        }
        if hide:
            meta = _scrub(meta, _identifying_strings(exam))
        (tmp / "keyframes.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        selected = {n for _, n, _ in kept}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["sample_index", "time_s", "frame_index", "score", "ceus_gray", "selected"])
        for n, t, idx, score, gray in rows:
            writer.writerow([n, f"{t:.6f}", idx, f"{score:.6f}", f"{gray:.6f}", int(n in selected)])
        (tmp / "scores.csv").write_text(buf.getvalue(), encoding="utf-8")
    return ExamResult(exam, "done", final, n_samples=len(rows), n_selected=len(kept))


def _identifying_strings(exam: ExamInput) -> list[str]:
    """Source path, its name and stem, and the folder names above it (longest first)."""
    p = Path(exam.path)
    out = {str(p), str(p.absolute()), p.name, p.stem, *p.absolute().parent.parts[-3:]}
    return sorted((s for s in out if len(s) >= 3 and s != "/"), key=len, reverse=True)


def _scrub(obj, words: list[str]):
    """``obj`` (JSON data) with every occurrence of ``words`` in its string values replaced."""
    if isinstance(obj, str):
        for w in words:
            obj = obj.replace(w, "<source>")
        return obj
    if isinstance(obj, list):
        return [_scrub(v, words) for v in obj]
    if isinstance(obj, dict):
        return {k: _scrub(v, words) for k, v in obj.items()}
    return obj


def pseudonymize_exams(exams: Sequence[ExamInput], keyfile: str | os.PathLike,
                       out_root: str | os.PathLike) -> list[ExamInput]:
    """Exams with pseudonymous ids (:class:`ceuspipe.pseudonym.Pseudonymizer`); the mapping
    is saved to ``keyfile``, which must lie outside ``out_root`` (else :class:`OutputError`)."""
    from ceuspipe.pseudonym import Pseudonymizer, check_keyfile_outside

    check_keyfile_outside(keyfile, out_root)
    ps = Pseudonymizer(keyfile)
    out = [ExamInput(e.path, ps.patient(e.patient_id), ps.exam(e.patient_id, e.exam_id)) for e in exams]
    ps.save()
    return out


def _safe_extract(exam: ExamInput, out_root: str, config: KeyframeConfig) -> ExamResult:
    """Worker entry: never raises, so one bad video cannot stop the others."""
    try:
        return extract_exam(exam, out_root, config)
    except CeuspipeError as exc:
        return ExamResult(exam, "failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported per exam, the run goes on
        log.debug("exam %s failed", exam.path, exc_info=True)
        return ExamResult(exam, "failed", error=f"{exam.path}: {exc.__class__.__name__}: {exc}")


def run_keyframes(exams: Sequence[ExamInput], out_root: str | os.PathLike, config: KeyframeConfig,
                  *, jobs: int = 1, progress: bool = False) -> KeyframesReport:
    """Extract key frames of every exam (``jobs`` processes) and rewrite ``OUT/manifest.csv``."""
    from tqdm import tqdm

    out_root = Path(out_root)
    if config.pseudonymize is not None:
        exams = pseudonymize_exams(exams, config.pseudonymize, out_root)
    report = KeyframesReport()
    bar = tqdm(total=len(exams), unit="video", desc="key frames", disable=not progress)
    if jobs == 1 or len(exams) <= 1:
        results = (_safe_extract(e, str(out_root), config) for e in exams)
    else:
        from joblib import Parallel, delayed  # ~0.1 s to import: only when it runs in parallel

        results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(_safe_extract)(e, str(out_root), config) for e in exams)
    for result in results:
        report.results.append(result)
        if result.status == "failed":  # the caller reports result.error (one line)
            log.debug("failed: %s", result.error)
        bar.update(1)
    bar.close()
    order = {id(e): i for i, e in enumerate(exams)}
    report.results.sort(key=lambda r: (r.exam.patient_id, r.exam.exam_id, order.get(id(r.exam), 0)))
    if out_root.is_dir():  # created by an exam written now or in an earlier run; else leave no trace
        write_manifest(out_root)
    return report


def write_manifest(out_root: str | os.PathLike) -> Path:
    """Rebuild ``OUT/manifest.csv`` from every ``OUT/*/*/keyframes.json`` (paths relative to OUT)."""
    out_root = Path(out_root)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for meta_path in sorted(out_root.glob("*/*/keyframes.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("source") is None:
            meta["source"] = ""  # pseudonymised: no source path
        rel = meta_path.parent.relative_to(out_root)
        for fr in meta["frames"]:
            writer.writerow([meta["patient_id"], meta["exam_id"], meta["source"], fr["sample_index"],
                             fr["time_s"], fr["score"], fr["ceus_gray"],
                             (rel / fr["frame_path"]).as_posix(), (rel / fr["ceus_path"]).as_posix(),
                             (rel / fr["us_path"]).as_posix(), fr["stem"]])
    path = out_root / "manifest.csv"
    atomic_write_text(path, buf.getvalue())
    return path
