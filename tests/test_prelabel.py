"""Proposals to correct (issue 27): model -> LabelMe/COCO proposal files -> LabelMe's own
reader and save -> build-dataset, which gives the model's masks back (within 1 px at the
boundary) and counts each proposal accepted, edited or redrawn."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ceuspipe.dataset.build import BuildConfig, build_dataset
from ceuspipe.dataset.keyframe_index import load_keyframe_index
from ceuspipe.dataset.layout_nnunet import split_dirs
from ceuspipe.prelabel import COCO_FILE, LABELME_DIR, PrelabelConfig, prelabel
from ceuspipe.dataset.proposals import ACCEPTED_MIN_IOU, EDITED_MIN_IOU, mean_contour_distance
from ceuspipe.errors import InputError
from ceuspipe.masks import fill_holes, largest_component
from ceuspipe.segment.predictor import prepare_panel, probability_to_mask
from ceuspipe.video.panels import Box, PanelLayout
from support.annotations import boundary_gap
from support.builders import write_checkpoint
from support.keyframe_folders import make_keyframes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

LAYOUT = PanelLayout(ceus=Box(8, 10, 120, 96), us=Box(136, 10, 120, 96), frame_width=264, frame_height=116)
SIZE = 64
EMPTY = "pat02__exam1__0001"  # the frame where the model finds nothing


class BrightBlobs:
    """A toy model: lesion probability = the CEUS input's brightness (the blobs drawn below)."""

    engine, device, size = "toy", "cpu", SIZE

    def __call__(self, ceus: np.ndarray, us: np.ndarray) -> np.ndarray:
        return np.clip((ceus - 0.3) / 0.4, 0, 1).astype(np.float32)

    def inference_record(self) -> dict:
        return {"runs_per_batch": 1}


def draw_lesions(kf_dir: Path, seed: int = 3) -> None:
    """Dark speckle CEUS crops, each with a bright two-lobed lesion (none on frame ``EMPTY``)."""
    rng = np.random.default_rng(seed)
    for kf in load_keyframe_index(kf_dir):
        c = kf.layout.ceus
        img = rng.integers(10, 50, (c.h, c.w), dtype=np.uint8)
        if kf.stem != EMPTY:
            cx, cy = int(rng.integers(35, c.w - 35)), int(rng.integers(30, c.h - 30))
            cv2.ellipse(img, (cx, cy), (int(rng.integers(12, 28)), int(rng.integers(10, 22))),
                        float(rng.uniform(0, 180)), 0, 360, 230, -1)
            cv2.circle(img, (cx + int(rng.integers(-15, 15)), cy + int(rng.integers(-12, 12))),
                       int(rng.integers(6, 12)), 230, -1)
        cv2.imwrite(str(kf.ceus_path), cv2.merge([img, img, img]))


def model_masks(kf_dir: Path) -> dict[str, np.ndarray]:
    """The toy model's clean masks, made here with segment's own pre- and post-processing."""
    out = {}
    for kf in load_keyframe_index(kf_dir):
        c, u = kf.layout.ceus, kf.layout.us
        ceus = prepare_panel(cv2.imread(str(kf.ceus_path))[..., ::-1], SIZE)
        us = prepare_panel(cv2.imread(str(kf.us_path))[..., ::-1], SIZE)
        prob = BrightBlobs()(ceus[None], us[None])[0]
        out[kf.stem] = fill_holes(largest_component(probability_to_mask(prob, c.h, c.w, 0.5))).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("prelabel")
    kf = make_keyframes(root / "kf", n_patients=3, n_frames=3, layout=LAYOUT)
    draw_lesions(kf)
    ckpt = write_checkpoint(root / "tiny.pt", size=SIZE)
    ann = root / "ann"
    report = prelabel(PrelabelConfig(kf, ckpt, ann), predictor=BrightBlobs())
    return {"root": root, "kf": kf, "ckpt": ckpt, "ann": ann, "report": report, "masks": model_masks(kf)}


def labelme_save(path: Path, edit=None) -> None:
    """Load ``path`` with LabelMe's LabelFile and save it as LabelMe's app does (shape dicts
    from each shape's other_data plus its fields, the file's other_data and flags);
    ``edit(shapes) -> shapes`` changes the shapes in between."""
    from labelme import LabelFile

    lf = LabelFile(str(path))
    shapes = [{**s["other_data"], "label": s["label"], "points": [list(p) for p in s["points"]],
               "group_id": s["group_id"], "description": s["description"], "shape_type": s["shape_type"],
               "flags": s["flags"], "mask": None} for s in lf.shapes]
    if edit is not None:
        shapes = edit(shapes)
    h, w = cv2.imdecode(np.frombuffer(lf.image_data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
    lf.save(str(path), shapes, lf.image_path, h, w, image_data=lf.image_data, other_data=lf.other_data,
            flags=lf.flags)


def built_masks(out: Path) -> dict[str, np.ndarray]:
    """stem -> label mask of a built dataset."""
    with (out / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return {r["stem"]: cv2.imread(str(out / split_dirs(r["split"])[1] / f"{r['case']}.png"), cv2.IMREAD_UNCHANGED)
            for r in rows}


def build(kf: Path, ann: Path, out: Path):
    rep = build_dataset(BuildConfig(keyframes_dir=kf, annotations_dir=ann, out_dir=out, frames_per_patient=3,
                                    max_tries=20))
    return rep, json.loads((out / "dataset.json").read_text())["annotations"]["proposals"]


def test_labelme_files_open_in_labelme_and_hold_the_models_masks(env):
    from labelme import LabelFile
    from labelme.utils import shape_to_mask

    sha = hashlib.sha256(env["ckpt"].read_bytes()).hexdigest()
    assert env["report"].empty == [EMPTY] and len(env["report"].proposed) == 8
    for kf in load_keyframe_index(env["kf"]):
        path = env["ann"] / LABELME_DIR / f"{kf.stem}_ceus.json"
        lf = LabelFile(str(path))
        assert lf.image_data == kf.ceus_path.read_bytes()  # the image is in the file
        assert (path.parent / lf.image_path).read_bytes() == lf.image_data  # and beside it
        mark = lf.other_data["ceuspipe"]
        assert mark["kind"] == "proposal" and mark["model"]["sha256"] == sha
        assert mark["model"]["name"] == "tiny.pt" and mark["model"]["threshold"] == 0.5
        c = kf.layout.ceus
        drawn = np.zeros((c.h, c.w), bool)
        for s in lf.shapes:
            assert s["shape_type"] == "polygon" and s["other_data"]["ceuspipe"]["proposal"] == kf.stem
            assert 6 <= len(s["points"]) <= 48  # editable: a few dozen points, not every pixel corner
            drawn |= shape_to_mask((c.h, c.w), s["points"], "polygon")
        want = env["masks"][kf.stem]
        assert want.any() == (kf.stem != EMPTY)
        assert boundary_gap(drawn, want) <= 1, kf.stem


def test_round_trip_through_labelme_save_and_build_dataset_gives_the_models_masks(env, tmp_path):
    ann = tmp_path / "ann"
    shutil.copytree(env["ann"] / LABELME_DIR, ann)
    for path in sorted(ann.glob("*.json")):
        labelme_save(path)
    saved = json.loads(next(ann.glob("*.json")).read_text())
    assert saved["version"] != "5.4.1" and "ceuspipe" in saved  # LabelMe rewrote it; the mark survived
    rep, summary = build(env["kf"], ann, tmp_path / "ds")
    got = built_masks(tmp_path / "ds")
    assert set(got) == set(env["masks"]) - {EMPTY}
    assert [p.stem for p in rep.problems] == [EMPTY]  # no shape: the annotator has to draw it
    for stem, mask in got.items():
        assert boundary_gap(mask, env["masks"][stem]) <= 1, stem
    assert summary["proposals"] == 8 and summary["accepted"] == 8 and summary["edited"] == summary["redrawn"] == 0
    assert summary["mean_boundary_change_px"] == 0 and summary["thresholds"]["accepted_min_iou"] == ACCEPTED_MIN_IOU


def _scaled(points, factor: float):
    pts = np.asarray(points, float)
    centre = pts.mean(axis=0)
    return ((pts - centre) * factor + centre).tolist()


def test_corrections_are_counted_accepted_edited_redrawn(env, tmp_path):
    ann = tmp_path / "ann"
    shutil.copytree(env["ann"] / LABELME_DIR, ann)
    stems = sorted(env["report"].proposed)
    edited, replaced, redrawn_same = stems[0], stems[1], stems[2]
    labelme_save(ann / f"{edited}_ceus.json",
                 lambda shapes: [{**s, "points": _scaled(s["points"], 0.8)} for s in shapes])  # vertices moved in
    labelme_save(ann / f"{replaced}_ceus.json",
                 lambda shapes: [{"label": "lesion", "points": [[5, 5], [30, 5], [30, 25], [5, 25]], "group_id": None,
                                  "description": "", "shape_type": "polygon", "flags": {}, "mask": None}])
    # deleted and drawn again along the same outline: a new shape without the proposal's key
    labelme_save(ann / f"{redrawn_same}_ceus.json",
                 lambda shapes: [{k: v for k, v in s.items() if k != "ceuspipe"} for s in shapes])
    labelme_save(ann / f"{EMPTY}_ceus.json",  # nothing proposed: the annotator draws the lesion
                 lambda shapes: [{"label": "lesion", "points": [[40, 30], [70, 30], [60, 60]], "group_id": None,
                                  "description": "", "shape_type": "polygon", "flags": {}, "mask": None}])
    rep, summary = build(env["kf"], ann, tmp_path / "ds")
    verdicts = {o.stem: o.verdict for o in rep.proposals.outcomes}
    assert verdicts == {**{s: "accepted" for s in stems}, edited: "edited", replaced: "redrawn",
                        redrawn_same: "redrawn", EMPTY: "redrawn"}
    assert (summary["proposals"], summary["accepted"], summary["edited"], summary["redrawn"]) == (9, 5, 1, 3)
    by_stem = {o.stem: o for o in rep.proposals.outcomes}
    assert EDITED_MIN_IOU <= by_stem[edited].iou < ACCEPTED_MIN_IOU
    assert by_stem[replaced].iou < EDITED_MIN_IOU and by_stem[redrawn_same].iou == 1.0
    assert by_stem[EMPTY].boundary_px is None
    # shrinking a 25-50 px lesion by 20 %: its outline moves in by a few pixels
    assert 1.5 < by_stem[edited].boundary_px < 8
    assert summary["mean_boundary_change_edited_px"] == pytest.approx(by_stem[edited].boundary_px, abs=1e-3)
    with (tmp_path / "ds" / "proposals.csv").open() as fh:
        rows = {r["stem"]: r for r in csv.DictReader(fh)}
    assert rows[edited]["verdict"] == "edited"
    assert float(rows[edited]["iou"]) == pytest.approx(by_stem[edited].iou, abs=1e-3)


def test_coco_file_read_by_pycocotools_matches_the_model_and_reads_back_as_accepted(env, tmp_path):
    from pycocotools.coco import COCO

    path = env["ann"] / COCO_FILE
    coco = COCO(str(path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["lesion"]
    by_name = {im["file_name"]: im for im in coco.dataset["images"]}
    for kf in load_keyframe_index(env["kf"]):
        image = by_name[f"{kf.stem}_ceus.png"]
        assert (image["width"], image["height"]) == (kf.layout.ceus.w, kf.layout.ceus.h)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert len(anns) == (0 if kf.stem == EMPTY else 1)
        mask = np.zeros((image["height"], image["width"]), np.uint8)
        for a in anns:
            mask |= coco.annToMask(a)
        assert boundary_gap(mask, env["masks"][kf.stem]) <= 1, kf.stem
    ann = tmp_path / "ann"
    ann.mkdir()
    shutil.copy(path, ann / "corrected.json")
    rep, summary = build(env["kf"], ann, tmp_path / "ds")
    for stem, mask in built_masks(tmp_path / "ds").items():
        assert boundary_gap(mask, env["masks"][stem]) <= 1, stem
    assert (summary["proposals"], summary["accepted"]) == (8, 8)


def test_mean_contour_distance():
    a = np.zeros((40, 40), np.uint8)
    a[10:30, 10:30] = 1
    b = np.zeros_like(a)
    b[12:28, 12:28] = 1  # every side 2 px in
    assert mean_contour_distance(a, a) == 0
    assert mean_contour_distance(a, b) == pytest.approx(2, abs=0.3)
    assert mean_contour_distance(a, np.zeros_like(a)) == float("inf")


def test_bad_input_is_one_error_naming_the_file_and_writes_nothing(env, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        prelabel(PrelabelConfig(env["ann"], env["ckpt"], out), predictor=BrightBlobs())
    assert str(err.value).startswith(str(env["ann"] / "manifest.csv")) and "\n" not in str(err.value)
    with pytest.raises(InputError) as err:
        prelabel(PrelabelConfig(env["kf"], tmp_path / "missing.pt", out))
    assert str(err.value) == f"{tmp_path / 'missing.pt'}: model checkpoint not found"
    kf = tmp_path / "kf"
    shutil.copytree(env["kf"], kf)
    broken = load_keyframe_index(kf)[4].ceus_path
    broken.write_bytes(b"not a png")
    with pytest.raises(InputError) as err:
        prelabel(PrelabelConfig(kf, env["ckpt"], out), predictor=BrightBlobs())
    assert str(err.value).startswith(str(broken))
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written
