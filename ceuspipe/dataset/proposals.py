"""Machine proposals in annotation files: the mark ``ceuspipe prelabel`` writes, and how
build-dataset measures what the annotator did with each proposal.

The mark is a top-level ``"ceuspipe"`` object of the JSON file (LabelMe or COCO)::

    {"ceuspipe": {"kind": "proposal", "format": "labelme" | "coco",
                  "model": {"name": ..., "sha256": ..., "threshold": ..., ...},
                  "proposals": {STEM: {"polygons": [[[x, y], ...], ...], "image_id": ID}}}}

``polygons`` are the proposal's polygons exactly as written in the file's shapes (the
file's own coordinates: LabelMe's or COCO's, on the CEUS crop), so the proposal's mask
is rasterised by the same rule as the annotator's and no model is needed to compare.
Each proposal shape (a LabelMe shape, a COCO annotation) also carries
``"ceuspipe": {"proposal": STEM}``. LabelMe (checked on 6.3's ``LabelFile`` and its
app's save) keeps unknown top-level keys and unknown shape keys when it rewrites a file,
so both survive a correction; a shape the annotator deleted and drew anew has none.
CVAT and Label Studio exports drop them: their files are read as plain annotations.

Verdicts (:func:`verdict`, thresholds here and nowhere else):

- ``redrawn``: no proposal shape left in the file (deleted and drawn anew, however
  close to the proposal), no proposal (the model found nothing and the annotator drew
  the lesion), or mask IoU with the proposal below :data:`EDITED_MIN_IOU`;
- ``accepted``: otherwise, IoU >= :data:`ACCEPTED_MIN_IOU` (saved as proposed; the
  margin absorbs coordinate rounding by tools);
- ``edited``: otherwise (a proposal shape kept and its vertices moved, or shapes added).

The boundary change is the mean symmetric contour distance (px) between the proposal's
and the final mask (:func:`mean_contour_distance`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ceuspipe.dataset.formats.labelme import read_json
from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.errors import InputError

log = logging.getLogger("ceuspipe")

#: the top-level key (and shape key) of the mark
KEY = "ceuspipe"
#: the mark's ``kind``
KIND = "proposal"
#: IoU at or above which the final mask is the proposal accepted unchanged
ACCEPTED_MIN_IOU = 0.98
#: IoU at or above which (with a proposal shape kept) the proposal was edited, else redrawn
EDITED_MIN_IOU = 0.5
VERDICTS = ("accepted", "edited", "redrawn")
#: columns of build-dataset's proposals.csv (one row per proposal, :meth:`ProposalReview.rows`)
PROPOSAL_COLUMNS = ("stem", "verdict", "iou", "dice", "boundary_px", "model_sha256")


def proposal_mark(fmt: str, model: dict, proposals: dict[str, dict]) -> dict:
    """The ``"ceuspipe"`` object of a proposal file of format ``fmt`` (``labelme``/``coco``):
    ``model`` its identity, ``proposals`` stem -> ``{"polygons": [...], "image_id": ...}``."""
    return {"kind": KIND, "format": fmt, "model": dict(model), "proposals": proposals,
            "verdicts": {"accepted_min_iou": ACCEPTED_MIN_IOU, "edited_min_iou": EDITED_MIN_IOU}}


def shape_mark(stem: str) -> dict:
    """The ``"ceuspipe"`` key of one proposal shape of key frame ``stem``."""
    return {"proposal": stem}


def read_mark(path: Path) -> tuple[dict, dict] | None:
    """``(mark, document)`` of a JSON annotation file carrying a proposal mark, else None."""
    if Path(path).suffix.lower() != ".json":
        return None
    data = read_json(Path(path))
    mark = data.get(KEY) if isinstance(data, dict) else None
    if not isinstance(mark, dict) or mark.get("kind") != KIND or not isinstance(mark.get("proposals"), dict):
        return None
    return mark, data


def proposal_mask(path: Path, mark: dict, kf: KeyFrame) -> np.ndarray | None:
    """``(h, w)`` uint8 0/1 CEUS-crop mask of the proposal for ``kf`` stored in ``mark``,
    rasterised as the file's format rasterises the annotator's shapes (None: the file
    holds no proposal for this frame; all zero: the model proposed nothing)."""
    from ceuspipe.dataset.formats import coco, labelme

    entry = mark["proposals"].get(kf.stem)
    if not isinstance(entry, dict):
        return None
    c = kf.layout.ceus
    mask = np.zeros((c.h, c.w), np.uint8)
    for i, poly in enumerate(entry.get("polygons") or []):
        name = f"stored proposal polygon {i}"
        if mark.get("format") == "coco":
            flat = [float(v) for pt in poly for v in pt]
            mask |= coco.polygons_area(path, kf, "ceus", [flat], name)
        else:
            mask |= labelme.shape_area(path, kf, "ceus", {"shape_type": "polygon", "points": poly}, name)
    return mask


def proposal_shapes_kept(document: dict, mark: dict, stem: str) -> bool:
    """Whether a shape (LabelMe) or annotation (COCO) of ``stem``'s proposal is still in the file."""
    def marked(item) -> bool:
        return isinstance(item, dict) and isinstance(item.get(KEY), dict) and item[KEY].get("proposal") == stem

    if mark.get("format") == "coco":
        image_id = (mark["proposals"].get(stem) or {}).get("image_id")
        return any(marked(a) and a.get("image_id") == image_id for a in document.get("annotations") or [])
    return any(marked(s) for s in document.get("shapes") or [])


def mean_contour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean symmetric contour distance (px) of two ``(h, w)`` 0/1 masks: the mean, over the
    boundary pixels of both, of the distance to the other mask's boundary (0 when equal;
    ``inf`` when exactly one is empty)."""
    edges = []
    for m in (a, b):
        m = (np.asarray(m) != 0).astype(np.uint8)
        edges.append(m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0))
    if not edges[0].any() and not edges[1].any():
        return 0.0
    if not edges[0].any() or not edges[1].any():
        return float("inf")
    dist = [cv2.distanceTransform((1 - e).astype(np.uint8), cv2.DIST_L2, 5) for e in edges]
    d = np.concatenate([dist[1][edges[0] > 0], dist[0][edges[1] > 0]])
    return float(d.mean())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two 0/1 masks (1 when both are empty)."""
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def verdict(iou_value: float, shapes_kept: bool) -> str:
    """``accepted``, ``edited`` or ``redrawn`` (module docstring)."""
    if not shapes_kept or iou_value < EDITED_MIN_IOU:
        return "redrawn"
    return "accepted" if iou_value >= ACCEPTED_MIN_IOU else "edited"


@dataclass(frozen=True)
class ProposalOutcome:
    """What became of one key frame's proposal. ``boundary_px``: mean symmetric contour
    distance proposal -> final (None when the model proposed nothing)."""

    stem: str
    verdict: str
    iou: float
    dice: float
    boundary_px: float | None
    model_sha256: str


@dataclass
class ProposalReview:
    """Outcomes of every annotated frame whose file holds a proposal for it."""

    outcomes: list[ProposalOutcome] = field(default_factory=list)

    def count(self, which: str) -> int:
        return sum(1 for o in self.outcomes if o.verdict == which)

    def summary(self) -> dict:
        """Counts, mean boundary change (px) over all proposals and over edited ones, and the thresholds."""
        def mean(values):
            values = [v for v in values if v is not None]
            return None if not values else round(float(np.mean(values)), 3)

        return {"proposals": len(self.outcomes), **{v: self.count(v) for v in VERDICTS},
                "mean_boundary_change_px": mean(o.boundary_px for o in self.outcomes),
                "mean_boundary_change_edited_px": mean(o.boundary_px for o in self.outcomes if o.verdict == "edited"),
                "mean_iou": mean(o.iou for o in self.outcomes),
                "thresholds": {"accepted_min_iou": ACCEPTED_MIN_IOU, "edited_min_iou": EDITED_MIN_IOU},
                "models": sorted({o.model_sha256 for o in self.outcomes})}

    def rows(self) -> list[dict]:
        """One CSV row per outcome."""
        return [{k: ("" if v is None else f"{v:.4f}" if isinstance(v, float) else v) for k, v in asdict(o).items()}
                for o in self.outcomes]


def review_proposals(files: dict[str, Path], masks: dict[str, np.ndarray], frames: list[KeyFrame]
                     ) -> ProposalReview:
    """Compare each final mask (``masks``: stem -> CEUS-crop 0/1, read from ``files``: stem ->
    annotation file) with the proposal its file carries; frames of unmarked files are
    not counted. A stored proposal that cannot be read is logged (naming the file) and not counted."""
    review = ProposalReview()
    marks: dict[Path, tuple[dict, dict] | None] = {}  # a COCO file is read once for its frames
    for kf in frames:
        path = files.get(kf.stem)
        if path is None or kf.stem not in masks:
            continue
        try:
            if path not in marks:
                marks[path] = read_mark(path)
            found = marks[path]
            if found is None:
                continue
            mark, document = found
            proposed = proposal_mask(path, mark, kf)
        except InputError as exc:
            log.warning("%s (its proposal is not counted)", exc)
            continue
        if proposed is None:
            continue
        final = masks[kf.stem]
        overlap = iou(final, proposed)
        dice = 2 * overlap / (1 + overlap)
        kept = proposal_shapes_kept(document, mark, kf.stem)
        boundary = mean_contour_distance(proposed, final) if proposed.any() else None
        model = mark.get("model") if isinstance(mark.get("model"), dict) else {}
        review.outcomes.append(ProposalOutcome(kf.stem, verdict(overlap, kept and proposed.any()), overlap, dice,
                                               boundary, str(model.get("sha256", ""))))
    return review


