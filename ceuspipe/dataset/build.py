"""``build_dataset``: key frames + annotations -> balanced, patient-split dataset folder.

Steps: read the key-frame index (:mod:`keyframe_index`), import annotations
(:mod:`annotations`), choose ``frames_per_patient`` annotated frames per patient
with grey-level balancing (:mod:`balance`), split patients train/test
(:mod:`split`), count what annotators did with machine proposals (:mod:`proposals`:
accepted, edited, redrawn) and write the nnU-Net-like folder (:mod:`layout_nnunet`) through
:func:`ceuspipe.fsutil.atomic_dir` (complete or nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ceuspipe import __version__
from ceuspipe.dataset.annotations import AnnotationProblem, import_annotations
from ceuspipe.dataset.balance import BalanceResult, Candidate, balance_selection
from ceuspipe.dataset.keyframe_index import KeyFrame, load_keyframe_index
from ceuspipe.dataset.proposals import PROPOSAL_COLUMNS, ProposalReview, review_proposals
from ceuspipe.dataset.layout_nnunet import (CHANNEL_NAMES, FILE_ENDING, LABELS, MANIFEST_COLUMNS,
                                            case_ids, plot_grey_levels, write_case, write_csv,
                                            write_json)
from ceuspipe.dataset.split import PatientSplit, split_patients
from ceuspipe.errors import InputError, OutputError
from ceuspipe.fsutil import atomic_dir

log = logging.getLogger("ceuspipe")


@dataclass(frozen=True)
class BuildConfig:
    """Options of ``ceuspipe build-dataset``.

    ``test_fraction`` of the patients go to test (1/3: the paper's 2:1 split);
    ``folds`` >= 2 adds cross-validation folds over training patients;
    ``max_tries`` random redraws, then coordinate descent, stopping early at
    ``ks_threshold`` (``None``: never early); frames of one exam are at least
    ``min_separation_s`` seconds apart when possible; ``label``: the lesion is
    the shapes with this LabelMe label / COCO category (``None``: every shape but
    LabelMe's ``_background_``); ``formats``: names of the
    annotation formats read (:mod:`ceuspipe.dataset.formats`; ``None``: every
    registered one). ``pseudonymize``: a key file
    (:mod:`ceuspipe.pseudonym`, outside ``out_dir``): patient ids, exam ids and stems
    in every output become pseudonyms (ids that already are pseudonyms of this key
    stay), ``sources`` is left empty and annotation problems do not name their files.
    """

    keyframes_dir: Path
    annotations_dir: Path
    out_dir: Path
    frames_per_patient: int = 2
    test_fraction: float = 1 / 3
    folds: int = 0
    seed: int = 0
    max_tries: int = 2000
    ks_threshold: float | None = None
    min_separation_s: float = 10.0
    label: str | None = None
    formats: tuple[str, ...] | None = None
    name: str = "CEUS"
    overwrite: bool = False
    progress: bool = False
    pseudonymize: Path | str | None = None

    def __post_init__(self) -> None:
        from ceuspipe import configs

        configs.number("frames_per_patient", self.frames_per_patient, minimum=1, integer=True)
        configs.number("test_fraction", self.test_fraction, minimum=0, maximum=0.99)
        configs.number("folds", self.folds, minimum=0, integer=True)
        if self.folds == 1:
            raise configs.ConfigError("folds", "use 0 (no folds) or at least 2")
        configs.number("seed", self.seed, integer=True)
        configs.number("max_tries", self.max_tries, minimum=1, integer=True)
        configs.number("ks_threshold", self.ks_threshold, minimum=0, maximum=1, optional=True)
        configs.number("min_separation_s", self.min_separation_s, minimum=0, unit="s")
        if not isinstance(self.name, str) or not self.name.strip():
            raise configs.ConfigError("name", f"must be a non-empty string, got {self.name!r}")
        configs.path_or_none("pseudonymize", self.pseudonymize)


@dataclass
class BuildReport:
    """What :func:`build_dataset` did. ``cases``: case id -> (patient, split); ``proposals``:
    what the annotators did with ``ceuspipe prelabel``'s proposals (every annotated frame
    whose file carries one, also those not drawn into the dataset)."""

    out_dir: Path
    cases: dict[str, tuple[str, str]]
    n_keyframes: int
    n_annotated: int
    unannotated: list[str]
    problems: list[AnnotationProblem]
    unmatched: list[Path]
    balance: BalanceResult
    split: PatientSplit
    patients_without_annotation: list[str] = field(default_factory=list)
    proposals: ProposalReview = field(default_factory=ProposalReview)

    @property
    def n_train(self) -> int:
        return sum(1 for _, s in self.cases.values() if s == "train")

    @property
    def n_test(self) -> int:
        return sum(1 for _, s in self.cases.values() if s == "test")

    @property
    def patients(self) -> list[str]:
        return sorted({p for p, _ in self.cases.values()})


def _check_output(cfg: BuildConfig) -> None:
    out = Path(cfg.out_dir).resolve()
    for name, src in (("key-frame folder", cfg.keyframes_dir), ("annotation folder", cfg.annotations_dir)):
        src = Path(src).resolve()
        if out == src or out in src.parents or src in out.parents:
            raise OutputError(cfg.out_dir, f"output folder must not be inside or contain the {name} {src}")
    if out.exists():
        if not out.is_dir():
            raise OutputError(cfg.out_dir, "exists and is not a folder")
        if any(out.iterdir()) and not cfg.overwrite:
            raise OutputError(cfg.out_dir, "folder exists and is not empty (use --overwrite to replace it)")


def _read_grey(path: Path, box_w: int, box_h: int, what: str) -> np.ndarray:
    """Read an RGB panel crop PNG and return it as ``(h, w)`` uint8 grey (BT.601)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, f"cannot read the {what} key-frame image")
    if img.shape[:2] != (box_h, box_w):
        raise InputError(path, f"{what} image is {img.shape[1]}x{img.shape[0]}, the recorded panel "
                               f"is {box_w}x{box_h}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)  # same weights as RGB2GRAY on the RGB crop


def _pseudonymize(frames: list[KeyFrame], ann, cfg: BuildConfig):
    """Frames and annotations with pseudonymous ids and stems; the mapping goes to the key file."""
    from dataclasses import replace

    from ceuspipe.pseudonym import Pseudonymizer, check_keyfile_outside

    check_keyfile_outside(cfg.pseudonymize, cfg.out_dir)
    ps = Pseudonymizer(cfg.pseudonymize)
    new: dict[str, str] = {}
    out = []
    for f in frames:
        p, e = ps.patient(f.patient_id), ps.exam(f.patient_id, f.exam_id)
        stem = f.stem if (p, e) == (f.patient_id, f.exam_id) else f"{p}__{e}__{f.sample_index:04d}"
        new[f.stem] = stem
        out.append(replace(f, patient_id=p, exam_id=e, stem=stem, source=""))
    ps.save()
    ann.masks = {new.get(k, k): v for k, v in ann.masks.items()}
    ann.unannotated = [new.get(k, k) for k in ann.unannotated]
    ann.problems = [AnnotationProblem("<annotation file>", new.get(p.stem) if p.stem else None,
                                      _hide(p.problem, frames)) for p in ann.problems]
    return out, ann


def _hide(text: str, frames: list[KeyFrame]) -> str:
    """``text`` with the original stems and ids replaced."""
    for word in sorted({w for f in frames for w in (f.stem, f.patient_id, f.exam_id)}, key=len, reverse=True):
        if len(word) >= 3:
            text = text.replace(word, "<id>")
    return text


def build_dataset(config: BuildConfig) -> BuildReport:
    """Build the dataset folder described in :mod:`ceuspipe.dataset.layout_nnunet`.

    Raises :class:`OutputError` for a non-empty output folder without
    ``overwrite``, :class:`InputError` for a broken key-frame folder or when no
    key frame is annotated. Annotation problems do not raise: they are reported
    (``BuildReport.problems``, ``problems.csv``) and their frames left out.
    """
    cfg = config
    if cfg.frames_per_patient < 1:
        raise ValueError("frames per patient must be at least 1")
    _check_output(cfg)
    frames = load_keyframe_index(cfg.keyframes_dir)
    if not frames:
        raise InputError(Path(cfg.keyframes_dir) / "manifest.csv", "lists no key frame")
    ann = import_annotations(cfg.annotations_dir, frames, cfg.label, cfg.formats)
    review = review_proposals(ann.files, ann.masks, frames)
    if cfg.pseudonymize is not None:
        original = [f.stem for f in frames]
        frames, ann = _pseudonymize(frames, ann, cfg)
        renamed = dict(zip(original, (f.stem for f in frames)))
        review.outcomes = [replace(o, stem=renamed[o.stem]) for o in review.outcomes]
    by_stem: dict[str, KeyFrame] = {f.stem: f for f in frames}
    if not ann.masks:
        raise InputError(cfg.annotations_dir, f"no usable annotation for any of the {len(frames)} key frames "
                                              f"({len(ann.problems)} rejected, {len(ann.unannotated)} unannotated)")

    candidates, without, bal = _balanced_selection(cfg, frames, ann.masks)

    try:
        split = split_patients(sorted(bal.selection), cfg.test_fraction, cfg.folds, seed=cfg.seed)
    except ValueError as exc:
        raise InputError(cfg.annotations_dir, f"cannot split the {len(bal.selection)} annotated "
                                              f"patients: {exc}") from None
    patient_split = {p: "train" for p in split.train} | {p: "test" for p in split.test}
    ordered = {pid: sorted(stems, key=lambda s: (by_stem[s].exam_id, by_stem[s].time_s, s))
               for pid, stems in bal.selection.items()}
    cases = case_ids(ordered)
    stem_of = {c: s for s, c in cases.items()}
    case_split = {c: patient_split[by_stem[s].patient_id] for s, c in cases.items()}

    def cases_of(patients: list[str]) -> list[str]:
        return [cases[s] for p in patients for s in ordered[p]]

    rows = []
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        for case in tqdm(sorted(stem_of), desc="dataset", unit="case", disable=not cfg.progress):
            f = by_stem[stem_of[case]]
            ceus = _read_grey(f.ceus_path, f.layout.ceus.w, f.layout.ceus.h, "CEUS")
            us = _read_grey(f.us_path, f.layout.us.w, f.layout.us.h, "US")
            write_case(tmp, case_split[case], case, ceus, us, ann.masks[f.stem])
            rows.append({"case": case, "patient_id": f.patient_id, "exam_id": f.exam_id, "stem": f.stem,
                         "time_s": f"{f.time_s:.3f}", "ceus_gray": f"{f.ceus_gray:.3f}",
                         "split": case_split[case]})
        train_cases = cases_of(split.train)
        test_cases = cases_of(split.test)
        write_json(tmp / "splits.json", {
            "train": train_cases, "test": test_cases,
            "folds": [{"train": cases_of(fold["train"]), "val": cases_of(fold["val"])} for fold in split.folds],
            "train_patients": split.train, "test_patients": split.test})
        selected_stems = [stem_of[c] for c in sorted(stem_of)]
        sources = [] if cfg.pseudonymize is not None else sorted({by_stem[s].source for s in selected_stems})
        write_json(tmp / "dataset.json", _dataset_record(cfg, frames, ann, bal, review, without, train_cases,
                                                         test_cases, sources))
        write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, rows)
        write_csv(tmp / "problems.csv", ("file", "stem", "problem"),
                  [{"file": p.file, "stem": p.stem or "", "problem": p.problem} for p in ann.problems])
        write_csv(tmp / "proposals.csv", PROPOSAL_COLUMNS, review.rows())
        gray = {f.stem: f.ceus_gray for f in frames}
        plot_grey_levels(tmp / "grey_levels.png",
                         [gray[s] for p in sorted(candidates) for s in (c.key for c in candidates[p])],
                         [gray[s] for p in sorted(bal.single_draw_selection) for s in bal.single_draw_selection[p]],
                         [gray[s] for s in selected_stems],
                         {"all_candidates": bal.all_candidates, "single_draw": bal.single_draw,
                          "balanced": bal.balanced})
    log.info("dataset written to %s: %d cases (%d train, %d test) from %d patients",
             cfg.out_dir, len(cases), len(train_cases), len(test_cases), len(bal.selection))
    return BuildReport(out_dir=Path(cfg.out_dir), cases={c: (by_stem[s].patient_id, case_split[c])
                                                         for c, s in stem_of.items()},
                       n_keyframes=len(frames), n_annotated=len(ann.masks), unannotated=ann.unannotated,
                       problems=ann.problems, unmatched=ann.unmatched, balance=bal, split=split,
                       patients_without_annotation=without, proposals=review)


def _dataset_record(cfg: BuildConfig, frames, ann, bal, review, without: list[str], train_cases: list[str],
                    test_cases: list[str], sources: list[str]) -> dict:
    """The contents of ``dataset.json``: the nnU-Net keys, how the frames were balanced, what
    the annotations gave (with the proposals' review), and the patients left out."""
    return {
        "name": cfg.name,
        "description": "CEUS lesion segmentation: CEUS and B-mode panels of dual-amplitude key frames, "
                       f"{cfg.frames_per_patient} grey-level balanced frames per patient, patient-level split",
        "channel_names": CHANNEL_NAMES,
        "labels": LABELS,
        "numTraining": len(train_cases),
        "numTest": len(test_cases),
        "file_ending": FILE_ENDING,
        "seed": cfg.seed,
        "frames_per_patient": cfg.frames_per_patient,
        "test_fraction": cfg.test_fraction,
        "min_separation_s": cfg.min_separation_s,
        "uniformity": {"statistic": "ks_uniform", "range": [bal.lo, bal.hi],
                       "all_candidates": bal.all_candidates, "single_draw": bal.single_draw,
                       "balanced": bal.balanced, "tries": bal.tries, "sweeps": bal.sweeps,
                       "max_tries": cfg.max_tries, "ks_threshold": cfg.ks_threshold},
        "annotations": {"keyframes": len(frames), "annotated": len(ann.masks),
                        "unannotated": len(ann.unannotated), "problems": len(ann.problems),
                        "unmatched_files": len(ann.unmatched), "label": cfg.label,
                        "proposals": review.summary()},
        "patients": {"included": len(bal.selection), "without_annotation": without,
                     "shortfall": {p: list(v) for p, v in sorted(bal.shortfall.items())}},
        "sources": sources,
        "ceuspipe_version": __version__,
    }


def _balanced_selection(cfg: BuildConfig, frames, masks: dict):
    """``(candidates per patient, patients without an annotated frame, BalanceResult)``: the
    annotated key frames of each patient and the grey-balanced draw among them (logged)."""
    candidates: dict[str, list[Candidate]] = {}
    for f in frames:
        if f.stem in masks:
            candidates.setdefault(f.patient_id, []).append(Candidate(f.stem, f.ceus_gray, f.time_s, f.exam_id))
    without = sorted({f.patient_id for f in frames} - set(candidates))
    for pid in without:
        log.warning("patient %s: no annotated key frame, left out of the dataset", pid)
    bal = balance_selection(candidates, cfg.frames_per_patient, seed=cfg.seed, max_tries=cfg.max_tries,
                            ks_threshold=cfg.ks_threshold, min_separation_s=cfg.min_separation_s)
    for pid, (have, want) in sorted(bal.shortfall.items()):
        log.warning("patient %s: only %d annotated key frame(s), %d requested; taking all", pid, have, want)
    for pid in bal.relaxed:
        log.info("patient %s: no %d frames %.0f s apart; drawn without the separation rule",
                 pid, cfg.frames_per_patient, cfg.min_separation_s)
    return candidates, without, bal
