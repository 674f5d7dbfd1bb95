"""Read the output folder of ``ceuspipe keyframes`` (``KF_OUT``) as plain records.

``KF_OUT/manifest.csv`` lists one row per selected key frame (paths relative to
``KF_OUT``); each exam folder ``KF_OUT/<patient_id>/<exam_id>/keyframes.json``
records the panel layout and the source video. See data/README.md.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ceuspipe.errors import InputError
from ceuspipe.video.panels import PanelLayout

MANIFEST_COLUMNS = ("patient_id", "exam_id", "source", "sample_index", "time_s", "score",
                    "ceus_gray", "frame_path", "ceus_path", "us_path", "stem")


@dataclass(frozen=True)
class KeyFrame:
    """One exported key frame. Paths are absolute; ``time_s`` in seconds from the
    clip start; ``ceus_gray`` the mean grey level (0-255) of the CEUS crop."""

    patient_id: str
    exam_id: str
    stem: str
    sample_index: int
    time_s: float
    score: float
    ceus_gray: float
    frame_path: Path
    ceus_path: Path
    us_path: Path
    source: str
    layout: PanelLayout


def _exam_json(kf_out: Path, patient_id: str, exam_id: str, cache: dict) -> dict:
    key = (patient_id, exam_id)
    if key not in cache:
        path = kf_out / patient_id / exam_id / "keyframes.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["_layout"] = PanelLayout.from_dict(data["layout"])
        except FileNotFoundError:
            raise InputError(path, "keyframes.json not found for an exam listed in manifest.csv") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(path, f"not a valid keyframes.json ({exc.__class__.__name__}: {exc})") from None
        cache[key] = data
    return cache[key]


def load_keyframe_index(kf_out: str | os.PathLike) -> list[KeyFrame]:
    """Return every key frame listed in ``kf_out/manifest.csv``, sorted by
    ``(patient_id, exam_id, sample_index)``.

    Raises :class:`InputError` naming the file for a missing or malformed
    manifest, a missing ``keyframes.json`` or a duplicated stem. Image files are
    not opened here.
    """
    kf_out = Path(kf_out)
    manifest = kf_out / "manifest.csv"
    if not manifest.is_file():
        raise InputError(manifest, "key-frame manifest not found (is this the output folder of `ceuspipe keyframes`?)")
    cache: dict = {}
    frames: list[KeyFrame] = []
    seen: set[str] = set()
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(manifest, f"missing columns {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                try:
                    exam = _exam_json(kf_out, row["patient_id"], row["exam_id"], cache)
                    kf = KeyFrame(
                        patient_id=row["patient_id"], exam_id=row["exam_id"], stem=row["stem"],
                        sample_index=int(row["sample_index"]), time_s=float(row["time_s"]),
                        score=float(row["score"]), ceus_gray=float(row["ceus_gray"]),
                        frame_path=kf_out / row["frame_path"], ceus_path=kf_out / row["ceus_path"],
                        us_path=kf_out / row["us_path"], source=str(exam.get("source", row["source"])),
                        layout=exam["_layout"])
                except (ValueError, TypeError) as exc:
                    raise InputError(manifest, f"line {line}: {exc}") from None
                if not kf.stem:
                    raise InputError(manifest, f"line {line}: empty stem")
                if kf.stem in seen:
                    raise InputError(manifest, f"line {line}: stem {kf.stem!r} listed twice")
                seen.add(kf.stem)
                frames.append(kf)
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(manifest, f"cannot read manifest ({exc})") from None
    frames.sort(key=lambda f: (f.patient_id, f.exam_id, f.sample_index))
    return frames
