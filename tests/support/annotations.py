"""Annotation files for the dataset tests: a tiny key frame, LabelMe JSON and PNG masks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ceuspipe.dataset.keyframe_index import KeyFrame
from ceuspipe.video.panels import Box, PanelLayout

LAYOUT = PanelLayout(ceus=Box(10, 6, 40, 30), us=Box(54, 6, 40, 30), frame_width=100, frame_height=44)
CEUS_POLY = [[5, 4], [30, 6], [28, 22], [8, 20]]  # inside the 40x30 CEUS crop


def kf(stem: str = "P1__E1__0003", layout: PanelLayout = LAYOUT) -> KeyFrame:
    p = Path("/nonexistent")
    return KeyFrame(patient_id="P1", exam_id="E1", stem=stem, sample_index=3, time_s=3.0, score=1.0,
                    ceus_gray=10.0, frame_path=p, ceus_path=p, us_path=p, source="x.mp4", layout=layout)


def labelme(path: Path, polys, size, label="lesion", shape_type="polygon") -> Path:
    data = {"version": "5.4.1", "flags": {}, "imagePath": "x.png", "imageData": None,
            "shapes": [{"label": label, "points": p, "group_id": None, "shape_type": shape_type, "flags": {}}
                       for p in polys]}
    if size is not None:
        data["imageWidth"], data["imageHeight"] = size
    path.write_text(json.dumps(data))
    return path


def to_full(poly):
    return [[x + LAYOUT.ceus.x, y + LAYOUT.ceus.y] for x, y in poly]


def write_png(path: Path, mask: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), mask)
    return path


def boundary_gap(mine: np.ndarray, ref: np.ndarray) -> int:
    """Largest chessboard distance (px) from a pixel where ``mine`` and ``ref`` differ to the
    nearest pixel that has ``mine``'s value in ``ref``: 0 when equal, 1 when the outlines are
    at most one pixel apart."""
    ref = (ref != 0).astype(np.uint8)
    extra = (mine != 0) & (ref == 0)
    missing = (mine == 0) & (ref != 0)
    gap = 0.0
    if extra.any():
        gap = max(gap, cv2.distanceTransform(1 - ref, cv2.DIST_C, 3)[extra].max())
    if missing.any():
        gap = max(gap, cv2.distanceTransform(ref, cv2.DIST_C, 3)[missing].max())
    return int(round(gap))
