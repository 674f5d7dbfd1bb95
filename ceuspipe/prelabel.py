"""``ceuspipe prelabel``: the model's lesion contour on every key frame, as annotation files
to correct instead of drawing from nothing.

For each key frame of a ``ceuspipe keyframes`` folder the model segments the CEUS
panel (the same preparation, threshold and clean-up as ``segment-video``:
:mod:`ceuspipe.segment.predictor`, :mod:`ceuspipe.masks`), and the mask's outline
becomes editable polygons (:func:`ceuspipe.dataset.rasterize.mask_outline`, simplified to
``tolerance_px``, a few dozen points). Written through
:func:`ceuspipe.fsutil.atomic_dir` (complete or nothing)::

    OUT/labelme/<stem>_ceus.png    the CEUS crop (the image LabelMe, CVAT, Label Studio show)
    OUT/labelme/<stem>_ceus.json   LabelMe file on the CEUS crop: imagePath + imageData
    OUT/coco/proposals.json        one COCO file for CVAT / Label Studio (file_name <stem>_ceus.png)
    OUT/prelabel.json              the model's identity and what was proposed

Every file carries the proposal mark (:mod:`ceuspipe.dataset.proposals`): the model's
identity and the proposed polygons, so that build-dataset, reading the corrected files,
counts proposals accepted, edited or redrawn without the model. A frame where the model
finds no lesion gets a LabelMe file without shapes (the annotator draws it).
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ceuspipe import __version__
from ceuspipe.dataset.formats.coco import coco_document
from ceuspipe.dataset.formats.labelme import labelme_document
from ceuspipe.dataset.keyframe_index import KeyFrame, load_keyframe_index
from ceuspipe.dataset.proposals import proposal_mark, shape_mark
from ceuspipe.dataset.rasterize import mask_outline
from ceuspipe.errors import InputError, OutputError
from ceuspipe.fsutil import atomic_dir, safe_name

log = logging.getLogger("ceuspipe")

LABELME_DIR = "labelme"
COCO_FILE = "coco/proposals.json"
SUMMARY_FILE = "prelabel.json"


@dataclass(frozen=True)
class PrelabelConfig:
    """Options of ``ceuspipe prelabel``.

    ``threshold``: probability threshold (None: the model's, 0.5 in the paper);
    ``clean``: keep the largest connected component and fill its holes (one lesion
    outline per frame); ``tolerance_px``: how far (px) the simplified polygon may depart
    from the mask's outline (0: every corner); ``min_area_px``: smaller regions are not
    proposed; ``label``: the shapes' label / COCO category; ``batch_size`` frames per
    model call; ``engine``/``device``/``cache_dir`` as in ``segment-video``.
    """

    keyframes_dir: Path
    checkpoint: Path
    out_dir: Path
    threshold: float | None = None
    clean: bool = True
    tolerance_px: float = 0.75
    min_area_px: float = 4.0
    label: str = "lesion"
    batch_size: int = 8
    engine: str = "auto"
    device: str = "auto"
    cache_dir: str | None = None
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        from ceuspipe import configs
        from ceuspipe.segment.engines import EngineMismatch, check_request, model_file_kind

        configs.number("threshold", self.threshold, above=0, maximum=1, optional=True)
        configs.number("tolerance_px", self.tolerance_px, minimum=0, maximum=5, unit="pixels")
        configs.number("min_area_px", self.min_area_px, minimum=0, unit="pixels")
        configs.number("batch_size", self.batch_size, minimum=1, integer=True)
        configs.device("device", self.device)
        configs.path_or_none("cache_dir", self.cache_dir)
        if not isinstance(self.clean, bool):
            raise configs.ConfigError("clean", f"must be true or false, got {self.clean!r}")
        if not isinstance(self.label, str) or not self.label.strip() or self.label == "_background_":
            raise configs.ConfigError("label", f"must be a non-empty label other than _background_, got {self.label!r}")
        try:
            check_request(self.engine, self.device, model_file=model_file_kind(self.checkpoint))
        except EngineMismatch as exc:
            raise configs.ConfigError(exc.field, str(exc)) from None


@dataclass
class PrelabelReport:
    """What :func:`prelabel` wrote: ``proposed`` stems with a contour, ``empty`` stems where
    the model found no lesion, ``points`` the vertex count of each proposal (all polygons)."""

    out_dir: Path
    model: dict
    proposed: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    points: dict[str, int] = field(default_factory=dict)


def _read_rgb(path: Path, w: int, h: int, what: str) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB key-frame panel; :class:`InputError` naming it when unreadable or of another size."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, f"cannot read the {what} key-frame image")
    if img.shape[:2] != (h, w):
        raise InputError(path, f"{what} image is {img.shape[1]}x{img.shape[0]}, the recorded panel is {w}x{h}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _check_output(cfg: PrelabelConfig) -> None:
    out = Path(cfg.out_dir).resolve()
    src = Path(cfg.keyframes_dir).resolve()
    if out == src or out in src.parents or src in out.parents:
        raise OutputError(cfg.out_dir, f"output folder must not be inside or contain the key-frame folder {src}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise OutputError(cfg.out_dir, "exists and is not empty (use --overwrite to replace it)")


def _load_model(cfg: PrelabelConfig):
    """``(spec, predictor)`` of the checkpoint or ONNX file, on the engine and device asked for."""
    from ceuspipe.segment.engines import choose_engine, make_predictor, model_file_kind
    from ceuspipe.segment.engines.base import EngineMismatch
    from ceuspipe.segment.model_spec import load_spec

    if not Path(cfg.checkpoint).is_file():
        raise InputError(cfg.checkpoint, "model checkpoint not found")
    try:
        engine, device = choose_engine(cfg.engine, cfg.device, model_file_kind(cfg.checkpoint))
    except EngineMismatch as exc:
        raise InputError(cfg.checkpoint, str(exc)) from None
    spec = load_spec(cfg.checkpoint, device if engine.name == "torch" else "cpu")
    return spec, make_predictor(spec, engine=engine.name, device=device, cache_dir=cfg.cache_dir)


def model_identity(spec, threshold: float, cfg: PrelabelConfig) -> dict:
    """The model's identity recorded in every proposal file."""
    return {"name": Path(spec.path).name, "sha256": spec.sha256, "threshold": threshold, "size": spec.size,
            "variant": spec.config.get("variant"), "clean": cfg.clean, "tolerance_px": cfg.tolerance_px,
            "ceuspipe_version": __version__}


def predict_masks(frames: list[KeyFrame], predictor, threshold: float, clean: bool, batch_size: int = 8,
                  progress: bool = False):
    """Yield ``(key frame, (h, w) uint8 0/1 CEUS-crop lesion mask)`` for ``frames``, in order.

    The panels are prepared as for ``segment-video`` (:func:`prepare_panel` of the CEUS and
    B-mode crops), the probability map resized and thresholded by
    :func:`probability_to_mask`; ``clean``: largest component, holes filled."""
    from ceuspipe.masks import fill_holes, largest_component
    from ceuspipe.segment.predictor import prepare_panel, probability_to_mask

    size = int(predictor.size)
    with tqdm(total=len(frames), desc="prelabel", unit="frame", disable=not progress) as bar:
        for start in range(0, len(frames), batch_size):
            batch = frames[start:start + batch_size]
            ceus_in, us_in = [], []
            for kf in batch:
                c, u = kf.layout.ceus, kf.layout.us
                ceus_in.append(prepare_panel(_read_rgb(kf.ceus_path, c.w, c.h, "CEUS"), size))
                us_in.append(prepare_panel(_read_rgb(kf.us_path, u.w, u.h, "US"), size))
            probs = predictor(np.stack(ceus_in), np.stack(us_in))
            for kf, prob in zip(batch, probs):
                c = kf.layout.ceus
                mask = probability_to_mask(prob, c.h, c.w, threshold)
                if clean:
                    mask = fill_holes(largest_component(mask)).astype(np.uint8)
                yield kf, mask
                bar.update(1)


def _labelme_file(kf: KeyFrame, image_name: str, image_bytes: bytes, points: list[list[list[float]]],
                  label: str, model: dict) -> dict:
    """The LabelMe document of one frame: shapes in LabelMe's coordinates (pixel edges), the image embedded."""
    c = kf.layout.ceus
    doc = labelme_document(points, c.w, c.h, image_name, label)
    for shape in doc["shapes"]:
        shape["ceuspipe"] = shape_mark(kf.stem)
    doc["imageData"] = base64.b64encode(image_bytes).decode("ascii")
    doc["ceuspipe"] = proposal_mark("labelme", model, {kf.stem: {"polygons": points, "image_id": None}})
    return doc


def prelabel(config: PrelabelConfig, predictor=None) -> PrelabelReport:
    """Write the proposal files described in the module docstring into ``config.out_dir``.

    ``predictor``: run this :class:`~ceuspipe.segment.predictor.Predictor` instead of the
    checkpoint's (which is still read for its identity). Raises :class:`InputError`
    naming the file for a folder that is not a key-frame export, a missing or unusable
    model, or an unreadable key-frame image; :class:`OutputError` for a non-empty output
    folder without ``overwrite``. Nothing is left under the final name on failure.
    """
    cfg = config
    frames = load_keyframe_index(cfg.keyframes_dir)
    if not frames:
        raise InputError(Path(cfg.keyframes_dir) / "manifest.csv", "lists no key frame")
    _check_output(cfg)
    if predictor is None:
        spec, predictor = _load_model(cfg)
    else:
        from ceuspipe.segment.model_spec import load_spec

        spec = load_spec(cfg.checkpoint, "cpu")
    threshold = spec.threshold if cfg.threshold is None else float(cfg.threshold)
    model = model_identity(spec, threshold, cfg)
    report = PrelabelReport(out_dir=Path(cfg.out_dir), model=model)
    coco_images, coco_proposals = [], {}
    with atomic_dir(cfg.out_dir, overwrite=True) as tmp:
        (tmp / LABELME_DIR).mkdir()
        for kf, mask in predict_masks(frames, predictor, threshold, cfg.clean, cfg.batch_size, cfg.progress):
            polys = mask_outline(mask, cfg.tolerance_px, cfg.min_area_px)
            points = [np.round(p + 0.5, 3).tolist() for p in polys]  # pixel centres -> LabelMe's pixel edges
            name = safe_name(f"{kf.stem}_ceus")
            image_bytes = kf.ceus_path.read_bytes()
            (tmp / LABELME_DIR / f"{name}.png").write_bytes(image_bytes)
            doc = _labelme_file(kf, f"{name}.png", image_bytes, points, cfg.label, model)
            (tmp / LABELME_DIR / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            coco_images.append((f"{name}.png", kf.layout.ceus.w, kf.layout.ceus.h, polys))
            coco_proposals[kf.stem] = {"polygons": points, "image_id": len(coco_images)}
            (report.proposed if points else report.empty).append(kf.stem)
            report.points[kf.stem] = sum(len(p) for p in points)
            if not points:
                log.info("%s: the model finds no lesion; its LabelMe file has no shape", kf.stem)
        coco = coco_document(coco_images, cfg.label, {"description": "ceuspipe prelabel: model proposals",
                                                      "version": __version__})
        stem_of = {entry["image_id"]: stem for stem, entry in coco_proposals.items()}
        for ann in coco["annotations"]:
            ann["ceuspipe"] = shape_mark(stem_of[ann["image_id"]])
        coco["ceuspipe"] = proposal_mark("coco", model, coco_proposals)
        (tmp / COCO_FILE).parent.mkdir()
        (tmp / COCO_FILE).write_text(json.dumps(coco) + "\n", encoding="utf-8")
        counts = [report.points[s] for s in report.proposed]
        (tmp / SUMMARY_FILE).write_text(json.dumps({
            "keyframes_dir": str(Path(cfg.keyframes_dir).resolve()), "model": model,
            "keyframes": len(frames), "proposed": len(report.proposed), "empty": report.empty,
            "points": {"min": min(counts, default=0), "median": float(np.median(counts)) if counts else 0,
                       "max": max(counts, default=0)},
            "files": {"labelme": f"{LABELME_DIR}/", "coco": COCO_FILE}}, indent=2) + "\n", encoding="utf-8")
    log.info("proposals for %d key frames (%d without a lesion) in %s", len(frames), len(report.empty), cfg.out_dir)
    return report


