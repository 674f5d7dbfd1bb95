"""`build_dataset` / `ceuspipe build-dataset` on a key-frame folder written by the test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.dataset.build import BuildConfig, build_dataset
from ceuspipe.errors import OutputError
from ceuspipe.video.panels import Box, PanelLayout, black_outside_panels, crop

from support.keyframe_folders import COLUMNS, annotate_all, make_keyframes


@pytest.fixture()
def inputs(tmp_path):
    kf = make_keyframes(tmp_path / "kf")
    ann = annotate_all(kf, tmp_path / "ann", skip={"pat03__exam1__0002"})
    for old in ann.glob("pat04__exam1__0001*"):
        old.unlink()
    (ann / "pat04__exam1__0001_ceus.json").write_text("{broken")
    return kf, ann


def cfg(kf, ann, out, **kw):
    return BuildConfig(keyframes_dir=kf, annotations_dir=ann, out_dir=out, max_tries=200, **kw)


def read_tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_layout_split_and_determinism(inputs, tmp_path):
    kf, ann = inputs
    out = tmp_path / "ds"
    rep = build_dataset(cfg(kf, ann, out, folds=2))
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "ceus", "1": "us"} and ds["labels"] == {"background": 0, "lesion": 1}
    assert ds["numTraining"] + ds["numTest"] == 18 == len(rep.cases)
    assert ds["numTest"] == 6  # 9 patients, 2:1 -> 3 test patients x 2 frames
    u = ds["uniformity"]
    assert u["statistic"] == "ks_uniform" and u["tries"] == 200 and u["balanced"] <= u["single_draw"]
    assert ds["annotations"]["problems"] == 1 and ds["annotations"]["unannotated"] == 1

    splits = json.loads((out / "splits.json").read_text())
    with (out / "manifest.csv").open() as fh:
        man = list(csv.DictReader(fh))
    patient_of = {r["case"]: r["patient_id"] for r in man}
    train_p = {patient_of[c] for c in splits["train"]}
    test_p = {patient_of[c] for c in splits["test"]}
    assert not train_p & test_p and len(train_p) == 6 and len(test_p) == 3
    assert len(splits["folds"]) == 2
    for fold in splits["folds"]:
        assert not {patient_of[c] for c in fold["train"]} & {patient_of[c] for c in fold["val"]}
        assert sorted(fold["train"] + fold["val"]) == sorted(splits["train"])

    # Images: grey, native size; labels 0/1 of the CEUS size; the rejected and the
    # unannotated frames are not in the dataset.
    stems = {r["stem"] for r in man}
    assert "pat04__exam1__0001" not in stems and "pat03__exam1__0002" not in stems
    for r in man:
        d = "Tr" if r["split"] == "train" else "Ts"
        ceus = cv2.imread(str(out / f"images{d}" / f"{r['case']}_0000.png"), cv2.IMREAD_UNCHANGED)
        us = cv2.imread(str(out / f"images{d}" / f"{r['case']}_0001.png"), cv2.IMREAD_UNCHANGED)
        lab = cv2.imread(str(out / f"labels{d}" / f"{r['case']}.png"), cv2.IMREAD_UNCHANGED)
        assert ceus.shape == (28, 32) and us.shape == (28, 32) and lab.shape == (28, 32)
        assert set(np.unique(lab)) == {0, 1}
        assert abs(float(ceus.mean()) - float(r["ceus_gray"])) < 0.6
        src = cv2.imread(str(kf / r["patient_id"] / r["exam_id"] / f"{r['stem']}_us.png"))
        assert np.array_equal(us, cv2.cvtColor(src, cv2.COLOR_BGR2GRAY))
    assert (out / "grey_levels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    problems = (out / "problems.csv").read_text()
    assert "pat04__exam1__0001_ceus.json" in problems and "invalid JSON" in problems

    # Same inputs and seed: byte-identical folder.
    out2 = tmp_path / "ds2"
    build_dataset(cfg(kf, ann, out2, folds=2))
    assert read_tree(out) == read_tree(out2)


def test_non_empty_output_needs_overwrite(inputs, tmp_path):
    kf, ann = inputs
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        build_dataset(cfg(kf, ann, out))
    assert (out / "keep.txt").exists()
    build_dataset(cfg(kf, ann, out, overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "dataset.json").exists()
    with pytest.raises(OutputError, match="key-frame folder"):
        build_dataset(cfg(kf, ann, kf / "ds", overwrite=True))


def test_cli_summary_and_overwrite(inputs, tmp_path):
    kf, ann = inputs
    out = tmp_path / "ds"
    args = ["build-dataset", str(kf), str(ann), str(out), "--max-tries", "50", "--seed", "3"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "18 cases" in res.output and "9 patients" in res.output and "annotation problems: 1" in res.output
    assert "single random draw" in res.output
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = CliRunner().invoke(main, args + ["--overwrite", "--frames-per-patient", "3"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "dataset.json").read_text())["frames_per_patient"] == 3


# ---- phantom annotations: the chain with no hand step --------------------------------------

def test_mask_to_polygons_round_trip_and_thin_necks():
    from ceuspipe.dataset.rasterize import mask_to_polygons
    from ceuspipe.dataset.rasterize import fill_polygons, self_intersection

    m = np.zeros((40, 60), np.uint8)
    cv2.circle(m, (15, 20), 9, 1, -1)
    cv2.rectangle(m, (35, 10), (50, 30), 1, -1)
    m[20, 24:36] = 1  # one-pixel bridge between the blobs: removed, no touching contour
    polys = mask_to_polygons(m)
    assert len(polys) == 2 and all(self_intersection(p) is None for p in polys)
    back = fill_polygons(polys, 40, 60)
    ref = m.copy()
    ref[20, 25:35] = 0
    inter, union = np.logical_and(back, ref).sum(), np.logical_or(back, ref).sum()
    assert inter / union > 0.97


def _phantom_keyframes(ph: Path, kf: Path, n_patients: int, shift: tuple[int, int]) -> dict:
    """Tiny phantom clips -> a KF_OUT folder written like `ceuspipe keyframes` (one key
    frame per whole second). Patient 0's recorded CEUS box is shifted by ``shift``, as
    a detected layout may be; patient 1 records its source relative to the phantom."""
    import av

    from ceuspipe.synth.config import PhantomConfig
    from ceuspipe.synth.generate import generate_exam

    cfg = PhantomConfig(duration_s=8, fps=2, width=320, height=180)
    rows, truths = [], {}
    for p in range(n_patients):
        pid = f"P{p + 1:03d}"
        clip = ph / pid / "exam1.mp4"
        truths[pid] = generate_exam(clip, None, cfg, seed=10 + p, patient=pid)
        lay = PanelLayout.from_dict(truths[pid]["layout"])
        if p == 0:
            c = lay.ceus
            lay = PanelLayout(Box(c.x + shift[0], c.y + shift[1], c.w, c.h), lay.us,
                              lay.frame_width, lay.frame_height)
        exam = kf / pid / "exam1"
        exam.mkdir(parents=True)
        source = f"{pid}/exam1.mp4" if p == 1 else str(clip)
        frames = []
        with av.open(str(clip)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % 2:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                stem = f"{pid}__exam1__{i:04d}"
                ceus = np.ascontiguousarray(crop(rgb, lay.ceus))
                for suffix, img in (("full", black_outside_panels(rgb, lay)), ("ceus", ceus),
                                    ("us", crop(rgb, lay.us))):
                    cv2.imwrite(str(exam / f"{stem}_{suffix}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                rec = {"stem": stem, "sample_index": i, "time_s": float(frame.time), "score": 1.0,
                       "ceus_gray": float(cv2.cvtColor(ceus, cv2.COLOR_RGB2GRAY).mean()),
                       "frame_path": f"{stem}_full.png", "ceus_path": f"{stem}_ceus.png",
                       "us_path": f"{stem}_us.png"}
                frames.append(rec)
                rows.append({**rec, "patient_id": pid, "exam_id": "exam1", "source": source,
                             **{k: f"{pid}/exam1/{rec[k]}" for k in ("frame_path", "ceus_path", "us_path")}})
        (exam / "keyframes.json").write_text(json.dumps({
            "source": source, "patient_id": pid, "exam_id": "exam1", "sample_fps": 1.0, "k": len(frames),
            "layout": lay.to_dict(), "n_frames_decoded": 16, "n_samples": 8, "duration_s": 8.0,
            "ceuspipe_version": "0.1.0", "frames": frames}))
    with (kf / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in COLUMNS})
    return truths


def test_annotate_phantom_then_build_dataset(tmp_path):
    from ceuspipe.synth.truth import truth_masks_at

    ph, kf, ann, out = (tmp_path / n for n in ("ph", "kf", "ann", "ds"))
    shift = (3, 2)
    truths = _phantom_keyframes(ph, kf, 3, shift)
    runner = CliRunner()
    res = runner.invoke(main, ["annotate-phantom", str(kf), str(ph), str(ann), "--frames-per-exam", "2"])
    assert res.exit_code == 0, res.output
    assert len(list(ann.glob("*_ceus.json"))) == 6
    res = runner.invoke(main, ["annotate-phantom", str(kf), str(ph), str(ann)])
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = runner.invoke(main, ["annotate-phantom", str(kf), str(ph), str(ann), "--overwrite"])
    assert res.exit_code == 0, res.output
    docs = sorted(ann.glob("*_ceus.json"))
    assert len(docs) == 24  # 3 exams x 8 key frames (one per second), all annotated
    doc = json.loads(docs[0].read_text())
    assert doc["imageWidth"] == 144 and doc["shapes"][0]["shape_type"] == "polygon"
    assert (ann / doc["imagePath"]).resolve() == (kf / "P001" / "exam1" / docs[0].name.replace(".json", ".png"))

    res = runner.invoke(main, ["build-dataset", str(kf), str(ann), str(out), "--max-tries", "20",
                               "--min-separation-s", "2"])
    assert res.exit_code == 0, res.output
    assert "6 cases" in res.output and "annotation problems: 0" in res.output
    with (out / "manifest.csv").open() as fh:
        man = list(csv.DictReader(fh))
    for r in man:
        d = "Tr" if r["split"] == "train" else "Ts"
        label = cv2.imread(str(out / f"labels{d}" / f"{r['case']}.png"), cv2.IMREAD_UNCHANGED)
        truth = truth_masks_at(truths[r["patient_id"]], float(r["time_s"]))[0]
        if r["patient_id"] == "P001":  # recorded box shifted: the label follows the recorded crop
            moved = np.zeros_like(truth)
            moved[: truth.shape[0] - shift[1], : truth.shape[1] - shift[0]] = truth[shift[1]:, shift[0]:]
            truth = moved
        iou = np.logical_and(label, truth).sum() / np.logical_or(label, truth).sum()
        assert iou > 0.95, (r["case"], iou)


def test_impossible_folds_is_one_clear_error(inputs, tmp_path):
    kf, ann = inputs
    res = CliRunner().invoke(main, ["build-dataset", str(kf), str(ann), str(tmp_path / "ds"), "--folds", "9",
                                    "--max-tries", "5"])
    assert res.exit_code == 1
    assert "ceuspipe: error:" in res.output and "9 folds need at least 9 training patients" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "ds").exists()
