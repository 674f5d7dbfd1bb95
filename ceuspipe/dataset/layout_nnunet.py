"""The on-disk dataset layout (nnU-Net-like) and its writers.

::

    OUT/dataset.json                 name, channels, labels, counts, seed, uniformity, ...
    OUT/imagesTr/<case>_0000.png     CEUS panel, grey uint8, native panel size
    OUT/imagesTr/<case>_0001.png     US panel, grey uint8, native panel size
    OUT/labelsTr/<case>.png          lesion mask, uint8 0/1, CEUS panel size
    OUT/imagesTs/, OUT/labelsTs/     the same for test cases
    OUT/splits.json                  {"train": [cases], "test": [cases], "folds": [...]}
    OUT/manifest.csv                 case, patient_id, exam_id, stem, time_s, ceus_gray, split
    OUT/problems.csv                 file, stem, problem (annotation files left out)
    OUT/grey_levels.png              histogram of CEUS grey levels before/after balancing

Every writer here is deterministic (same input, same bytes).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

from ceuspipe.fsutil import safe_name

CHANNEL_NAMES = {"0": "ceus", "1": "us"}
LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".png"
MANIFEST_COLUMNS = ("case", "patient_id", "exam_id", "stem", "time_s", "ceus_gray", "split")


def case_ids(patient_frames: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Case id per stem: ``<safe patient id>_<nn>`` (``nn`` from 00 in the given order).

    Patient ids that sanitise to the same name get a ``-<k>`` suffix in sorted id
    order, so case ids stay distinct. Returns stem -> case id.
    """
    used: set[str] = set()
    out: dict[str, str] = {}
    for pid in sorted(patient_frames):
        root = base = safe_name(pid, "patient")
        k = 0
        while base in used:
            k += 1
            base = f"{root}-{k}"
        used.add(base)
        for n, stem in enumerate(patient_frames[pid]):
            out[stem] = f"{base}_{n:02d}"
    return out


def split_dirs(split: str) -> tuple[str, str]:
    """``("imagesTr", "labelsTr")`` for ``train``, ``("imagesTs", "labelsTs")`` for ``test``."""
    suffix = {"train": "Tr", "test": "Ts"}[split]
    return f"images{suffix}", f"labels{suffix}"


def _imwrite(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(FILE_ENDING, image)
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def write_case(out: Path, split: str, case: str, ceus: np.ndarray, us: np.ndarray, mask: np.ndarray) -> None:
    """Write one case: ``ceus`` and ``us`` ``(h, w)`` uint8 grey panels, ``mask``
    ``(h, w)`` uint8 0/1 of the CEUS panel size."""
    if mask.shape != ceus.shape:
        raise ValueError(f"mask shape {mask.shape} != CEUS panel shape {ceus.shape}")
    images, labels = split_dirs(split)
    (out / images).mkdir(parents=True, exist_ok=True)
    (out / labels).mkdir(parents=True, exist_ok=True)
    _imwrite(out / images / f"{case}_0000{FILE_ENDING}", ceus)
    _imwrite(out / images / f"{case}_0001{FILE_ENDING}", us)
    _imwrite(out / labels / f"{case}{FILE_ENDING}", mask.astype(np.uint8))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row[c] for c in columns})
    path.write_text(buf.getvalue(), encoding="utf-8")


def plot_grey_levels(path: Path, all_candidates: Sequence[float], single_draw: Sequence[float],
                     balanced: Sequence[float], stats: Mapping[str, float]) -> None:
    """Histogram of mean CEUS grey levels (0-255) of all candidates, one random
    draw and the balanced choice; PNG without a timestamp (byte-reproducible)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    allv = np.asarray(all_candidates, dtype=np.float64)
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 255.0)
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 21)
    for values, name, key in ((allv, "all annotated frames", "all_candidates"),
                              (single_draw, "single random draw", "single_draw"),
                              (balanced, "balanced", "balanced")):
        values = np.asarray(values, dtype=np.float64)
        ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5,
                label=f"{name} (n={values.size}, KS={stats[key]:.3f})")
    ax.axhline(1.0 / (hi - lo), color="grey", linestyle=":", label="uniform")
    ax.set_xlabel("mean CEUS grey level (0-255)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
