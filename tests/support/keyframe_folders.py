"""A key-frame export folder (as ``ceuspipe keyframes`` writes it) and its annotations,
for the dataset tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from ceuspipe.video.panels import Box, PanelLayout, black_outside_panels, crop

LAYOUT = PanelLayout(ceus=Box(4, 6, 32, 28), us=Box(40, 6, 32, 28), frame_width=76, frame_height=40)
COLUMNS = ("patient_id,exam_id,source,sample_index,time_s,score,ceus_gray,frame_path,ceus_path,"
           "us_path,stem").split(",")
LESION = [[8, 6], [22, 7], [24, 20], [10, 21]]  # CEUS-crop coordinates


def make_keyframes(root: Path, n_patients: int = 9, n_frames: int = 6, seed: int = 0,
                   layout: PanelLayout | None = None) -> Path:
    """Write a KF_OUT folder in the format of `ceuspipe keyframes`: one exam per
    patient, ``n_frames`` key frames 10 s apart whose CEUS grey level follows a bolus
    (panels of ``layout``, default :data:`LAYOUT`)."""
    LAYOUT = layout or globals()["LAYOUT"]  # noqa: N806 (the module's layout unless given)
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        pid, eid = f"pat{p:02d}", "exam1"
        exam = root / pid / eid
        exam.mkdir(parents=True)
        peak = rng.uniform(60, 200)
        frames = []
        for i in range(n_frames):
            t = 10.0 * i + 3
            level = 5 + peak * (t / 25) ** 2 * np.exp(2 - 2 * t / 25)
            full = rng.integers(0, 30, (LAYOUT.frame_height, LAYOUT.frame_width, 3), dtype=np.uint8)
            c = LAYOUT.ceus
            full[c.y:c.y + c.h, c.x:c.x + c.w] = np.clip(level + rng.normal(0, 3, (c.h, c.w, 1)), 0, 255)
            full = black_outside_panels(full, LAYOUT)
            stem = f"{pid}__{eid}__{i:04d}"
            ceus, us = crop(full, LAYOUT.ceus), crop(full, LAYOUT.us)
            for suffix, img in (("full", full), ("ceus", ceus), ("us", us)):
                cv2.imwrite(str(exam / f"{stem}_{suffix}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            gray = float(cv2.cvtColor(np.ascontiguousarray(ceus), cv2.COLOR_RGB2GRAY).mean())
            rec = {"stem": stem, "sample_index": i, "time_s": t, "score": float(rng.uniform()),
                   "ceus_gray": gray, "frame_path": f"{stem}_full.png", "ceus_path": f"{stem}_ceus.png",
                   "us_path": f"{stem}_us.png"}
            frames.append(rec)
            rows.append({**rec, "patient_id": pid, "exam_id": eid, "source": f"/videos/{pid}/{eid}.mp4",
                         **{k: f"{pid}/{eid}/{rec[k]}" for k in ("frame_path", "ceus_path", "us_path")}})
        (exam / "keyframes.json").write_text(json.dumps({
            "source": f"/videos/{pid}/{eid}.mp4", "patient_id": pid, "exam_id": eid, "sample_fps": 1.0,
            "k": n_frames, "layout": LAYOUT.to_dict(), "n_frames_decoded": 100, "n_samples": 60,
            "duration_s": 60.0, "ceuspipe_version": "0.1.0", "frames": frames}))
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in COLUMNS})
    return root


def annotate_all(kf: Path, ann: Path, skip: set[str] = frozenset()) -> Path:
    """LabelMe CEUS-crop polygons for every key frame (alternating with full-frame
    ones and PNG masks, to mix the forms)."""
    ann.mkdir(parents=True, exist_ok=True)
    with (kf / "manifest.csv").open() as fh:
        stems = [r["stem"] for r in csv.DictReader(fh)]
    for n, stem in enumerate(stems):
        if stem in skip:
            continue
        if n % 3 == 0:
            data = {"shapes": [{"label": "lesion", "points": LESION, "shape_type": "polygon"}],
                    "imageWidth": LAYOUT.ceus.w, "imageHeight": LAYOUT.ceus.h}
            (ann / f"{stem}_ceus.json").write_text(json.dumps(data))
        elif n % 3 == 1:
            pts = [[x + LAYOUT.ceus.x, y + LAYOUT.ceus.y] for x, y in LESION]
            data = {"shapes": [{"label": "lesion", "points": pts, "shape_type": "polygon"}],
                    "imageWidth": LAYOUT.frame_width, "imageHeight": LAYOUT.frame_height}
            (ann / f"{stem}_full.json").write_text(json.dumps(data))
        else:
            mask = np.zeros((LAYOUT.ceus.h, LAYOUT.ceus.w), np.uint8)
            cv2.fillPoly(mask, [np.array(LESION, np.int32)], 255)
            cv2.imwrite(str(ann / f"{stem}_mask.png"), mask)
    return ann
