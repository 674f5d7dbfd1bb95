"""Every shape in: LabelMe polygon/rectangle/circle/mask shapes with holes, checked against
LabelMe's own rasteriser (``labelme.utils.shapes_to_label`` on files read by
``labelme.LabelFile``), and COCO polygons and RLE (CVAT, Label Studio) checked against
pycocotools' decoding; both within 1 px at the boundary."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.dataset.annotations import import_annotations
from ceuspipe.dataset.formats import coco, labelme
from ceuspipe.errors import InputError
from ceuspipe.video.panels import Box, PanelLayout
from support.annotations import boundary_gap, kf

# pycocotools 2.0.x calls np.array(copy=False) under numpy 2: its warning, not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

# A CEUS panel big enough for shapes of some size, inside a larger frame.
BIG = PanelLayout(ceus=Box(24, 10, 120, 90), us=Box(150, 10, 120, 90), frame_width=280, frame_height=110)
STEM = "P1__E1__0003"


def png_b64(mask: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


# ---- LabelMe ------------------------------------------------------------------------------

def star(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[list[float]]:
    """A simple polygon: 4-11 vertices at jittered, increasing angles around ``(cx, cy)``."""
    n = int(rng.integers(4, 12))
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 0.3, n)
    radii = rng.uniform(0.4 * r, r, n)
    return [[cx + rr * np.cos(a), cy + rr * np.sin(a)] for a, rr in zip(angles, radii)]


def random_shapes(rng: np.random.Generator) -> list[dict]:
    """A few lesion shapes of each kind on the 120x90 crop, some overlapping, and a hole."""
    c = BIG.ceus
    cx, cy = rng.uniform(35, c.w - 35), rng.uniform(30, c.h - 30)
    x0, y0 = rng.uniform(2, c.w - 30), rng.uniform(2, c.h - 25)
    bx, by = int(rng.integers(0, c.w - 40)), int(rng.integers(0, c.h - 30))
    bw, bh = int(rng.integers(8, 40)), int(rng.integers(8, 30))
    blob = np.zeros((bh, bw), np.uint8)
    cv2.ellipse(blob, (bw // 2, bh // 2), (bw // 2, bh // 3), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    r = rng.uniform(4, 18)
    a = rng.uniform(0, 2 * np.pi)
    circle = [[cx, cy], [cx + r * np.cos(a), cy + r * np.sin(a)]]
    return [
        {"label": "lesion", "shape_type": "polygon", "points": star(rng, cx, cy, 30)},
        {"label": "lesion", "shape_type": "rectangle",
         "points": [[x0, y0], [x0 + rng.uniform(3, 28), y0 + rng.uniform(3, 22)]]},
        {"label": "lesion", "shape_type": "mask", "points": [[bx, by], [bx + bw - 1, by + bh - 1]],
         "mask": png_b64(blob)},
        {"label": "_background_", "shape_type": "circle", "points": [[cx, cy], [cx + 6, cy]]},  # a hole
        {"label": "vessel", "shape_type": "circle", "points": circle},
    ]


def write_labelme(path: Path, shapes: list[dict], full: bool) -> Path:
    """A LabelMe file (and its blank image, which LabelMe's reader opens) on the crop or frame."""
    if full:
        shapes = [{**s, "points": [[x + BIG.ceus.x, y + BIG.ceus.y] for x, y in s["points"]]} for s in shapes]
    w, h = (BIG.frame_width, BIG.frame_height) if full else (BIG.ceus.w, BIG.ceus.h)
    cv2.imwrite(str(path.with_suffix(".png")), np.zeros((h, w), np.uint8))
    path.write_text(json.dumps({
        "version": "5.4.1", "flags": {}, "imagePath": path.with_suffix(".png").name, "imageData": None,
        "imageWidth": w, "imageHeight": h,
        "shapes": [{"group_id": None, "flags": {}, **s} for s in shapes]}))
    return path


def labelme_reference(path: Path, label: str | None, full: bool) -> np.ndarray:
    """LabelMe's own reading (``LabelFile``) and rasterising (``shapes_to_label``, which
    draws each shape with ``shape_to_mask``) of ``path``, as a CEUS-crop 0/1 mask."""
    from labelme import LabelFile
    from labelme.utils import shapes_to_label

    shapes = LabelFile(str(path)).shapes
    values = {"_background_": 0}
    for s in shapes:
        values.setdefault(s["label"], len(values))
    h, w = (BIG.frame_height, BIG.frame_width) if full else (BIG.ceus.h, BIG.ceus.w)
    cls, _ = shapes_to_label((h, w), shapes, values)
    mask = (cls == values[label]) if label is not None else cls > 0
    if full:
        c = BIG.ceus
        mask = mask[c.y:c.y + c.h, c.x:c.x + c.w]
    return mask.astype(np.uint8)


@pytest.mark.parametrize("full", [False, True], ids=["crop", "full-frame"])
def test_each_labelme_shape_matches_labelmes_shape_to_mask_within_1px(tmp_path, full):
    pytest.importorskip("labelme.utils", reason="LabelMe (test extra) is the reference")
    rng = np.random.default_rng(7 + full)
    gaps: dict[str, list[int]] = {"polygon": [], "rectangle": [], "circle": [], "mask": []}
    for i in range(60):
        for j, shape in enumerate(random_shapes(rng)):
            path = write_labelme(tmp_path / f"{STEM}_{i}_{j}.json", [{**shape, "label": "lesion"}], full)
            gaps[shape["shape_type"]].append(boundary_gap(labelme.read(path, kf(STEM, BIG)),
                                                          labelme_reference(path, None, full)))
    assert max(gaps["mask"]) == 0, gaps
    assert all(max(g) <= 1 for g in gaps.values()), {k: max(g) for k, g in gaps.items()}


def test_shapes_combine_exactly_as_labelmes_shapes_to_label(tmp_path, monkeypatch):
    """Holes, overlaps, order and labels: LabelMe's shapes_to_label, given this module's
    drawing of each shape, gives exactly what labelme.read gives."""
    pytest.importorskip("labelme.utils", reason="LabelMe (test extra) is the reference")
    import labelme.utils.shape as labelme_shape

    def ours(img_shape, points, shape_type=None, **_):
        area = labelme.shape_area(Path("x.json"), kf(STEM, BIG), "ceus", {"shape_type": shape_type,
                                                                         "points": points}, "shape")
        return area.astype(bool)

    monkeypatch.setattr(labelme_shape, "shape_to_mask", ours)
    rng = np.random.default_rng(5)
    for i in range(30):
        shapes = random_shapes(rng)
        order = rng.permutation(len(shapes))  # any order: later shapes paint over earlier ones
        path = write_labelme(tmp_path / f"{STEM}_{i}.json", [shapes[k] for k in order], full=False)
        for label in (None, "lesion", "vessel"):
            try:
                mine = labelme.read(path, kf(STEM, BIG), label)
            except InputError:  # nothing left of that label: LabelMe's map has none either
                assert not labelme_reference(path, label, False).any()
                continue
            assert np.array_equal(mine, labelme_reference(path, label, False)), (i, label)


def test_a_circle_only_annotation_is_imported(tmp_path):
    write_labelme(tmp_path / f"{STEM}_ceus.json",
                  [{"label": "lesion", "shape_type": "circle", "points": [[60, 45], [60, 57]]}], full=False)
    res = import_annotations(tmp_path, [kf(STEM, BIG)])
    assert res.problems == [] and res.formats == {STEM: "labelme"}
    m = res.masks[STEM]
    assert abs(int(m.sum()) - np.pi * 12 ** 2) < 2 * np.pi * 12  # the disc's area, within its rim
    assert m[45, 60] == 1 and m[45, 72] == 1 and m[45, 73] == 0 and m[33, 60] == 1


def test_holes_and_label_order_follow_labelme(tmp_path):
    square = [[10, 10], [50, 10], [50, 50], [10, 50]]
    hole = [[20, 20], [30, 20], [30, 30], [20, 30]]
    path = write_labelme(tmp_path / f"{STEM}.json", [
        {"label": "lesion", "shape_type": "polygon", "points": square},
        {"label": "_background_", "shape_type": "polygon", "points": hole},
        {"label": "lesion", "shape_type": "rectangle", "points": [[24, 24], [26, 26]]},  # an island in it
    ], full=False)
    m = labelme.read(path, kf(STEM, BIG))
    assert m.sum() == 41 * 41 - 11 * 11 + 3 * 3
    assert m[15, 15] == 1 and m[22, 22] == 0 and m[25, 25] == 1


def test_unusable_shapes_name_the_file_and_the_shape(tmp_path):
    bad = {
        "point": {"shape_type": "point", "points": [[5, 5]]},
        "linestrip": {"shape_type": "linestrip", "points": [[5, 5], [9, 9], [12, 3]]},
        "mask-size": {"shape_type": "mask", "points": [[5, 5], [9, 9]], "mask": png_b64(np.ones((3, 3)))},
        "mask-b64": {"shape_type": "mask", "points": [[5, 5], [9, 9]], "mask": "not base64!"},
        "mask-png": {"shape_type": "mask", "points": [[5, 5], [9, 9]], "mask": base64.b64encode(b"xx").decode()},
        "outside": {"shape_type": "circle", "points": [[5, 5], [130, 5]]},
    }
    for name, shape in bad.items():
        path = write_labelme(tmp_path / f"{STEM}_{name}.json",
                             [{"label": "lesion", "shape_type": "polygon", "points": [[1, 1], [9, 1], [5, 8]]},
                              {"label": "lesion", **shape}], full=False)
        with pytest.raises(InputError) as err:
            labelme.read(path, kf(STEM, BIG))
        line = str(err.value)
        assert "\n" not in line and str(path) in line and f"{shape['shape_type']} 1 (lesion)" in line, line


# ---- COCO ---------------------------------------------------------------------------------

def coco_reference(seg, h: int, w: int) -> np.ndarray:
    """pycocotools' decoding of one segmentation (polygons, uncompressed or compressed RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    return mask_utils.decode(rle)


def compressed(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def uncompressed(mask: np.ndarray) -> dict:
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])) != 0)
    runs = np.diff(np.concatenate([[0], edges]))
    return {"size": list(mask.shape), "counts": [int(r) for r in runs]}


def random_blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cv2.ellipse(m, (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10))),
                    (int(rng.integers(2, 20)), int(rng.integers(2, 15))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    m[int(rng.integers(0, h)), :: int(rng.integers(2, 9))] = 1  # ragged runs
    return m


def test_rle_strings_decode_as_pycocotools(tmp_path):
    pytest.importorskip("pycocotools", reason="pycocotools (test extra) is the reference")
    rng = np.random.default_rng(1)
    for _ in range(50):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        m = (rng.uniform(size=(h, w)) < rng.uniform(0, 1)).astype(np.uint8)
        for seg in (compressed(m), uncompressed(m)):
            counts = coco.rle_counts(seg["counts"]) if isinstance(seg["counts"], str) else seg["counts"]
            assert np.array_equal(coco.rle_decode(counts, h, w), coco_reference(seg, h, w))
            assert np.array_equal(coco_reference(seg, h, w), m)


def coco_file(path: Path, images: list[tuple[str, int, int, list]], categories=("lesion", "vessel")) -> Path:
    """A COCO file: ``images`` = [(file_name, width, height, [(category, segmentation)])]."""
    cats = {name: i + 1 for i, name in enumerate(categories)}
    data = {"info": {}, "licenses": [], "categories": [{"id": i, "name": n} for n, i in cats.items()],
            "images": [], "annotations": []}
    for image_id, (name, w, h, anns) in enumerate(images, start=1):
        data["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
        for cat, seg in anns:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": image_id,
                                        "category_id": cats[cat], "segmentation": seg, "iscrowd": int(
                                            isinstance(seg, dict)), "bbox": [0, 0, 1, 1], "area": 1})
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("full", [False, True], ids=["crop", "full-frame"])
def test_coco_segmentations_match_pycocotools_within_1px(tmp_path, full):
    pytest.importorskip("pycocotools", reason="pycocotools (test extra) is the reference")
    rng = np.random.default_rng(11 + full)
    c = BIG.ceus
    w, h = (BIG.frame_width, BIG.frame_height) if full else (c.w, c.h)
    dx, dy = (c.x, c.y) if full else (0, 0)
    frames, images, refs = [], [], {}
    for i in range(30):
        stem = f"P1__E1__{i:04d}"
        frames.append(kf(stem, BIG))
        polys = [np.ravel(star(rng, dx + rng.uniform(30, c.w - 30), dy + rng.uniform(28, c.h - 28), 25)).tolist()
                 for _ in range(int(rng.integers(1, 3)))]
        blob = np.zeros((h, w), np.uint8)
        blob[dy:dy + c.h, dx:dx + c.w] = random_blob(rng, c.h, c.w)
        kind = ("polygons", "rle", "compressed")[i % 3]
        seg = polys if kind == "polygons" else uncompressed(blob) if kind == "rle" else compressed(blob)
        other = [[dx + 2, dy + 2, dx + 40, dy + 2, dx + 40, dy + 30]]  # category "vessel": left out by --label
        images.append((f"images/{stem}_{'full' if full else 'ceus'}.png", w, h, [("lesion", seg), ("vessel", other)]))
        refs[stem] = (kind, coco_reference(seg, h, w)[dy:dy + c.h, dx:dx + c.w])
    coco_file(tmp_path / "instances_default.json", images)
    res = import_annotations(tmp_path, frames, label="lesion")
    assert res.problems == [] and set(res.formats.values()) == {"coco"} and len(res.masks) == 30
    gaps = {"polygons": [], "rle": [], "compressed": []}
    for stem, (kind, ref) in refs.items():
        gaps[kind].append(boundary_gap(res.masks[stem], ref))
    assert max(gaps["polygons"]) <= 1 and max(gaps["rle"]) == 0 and max(gaps["compressed"]) == 0, gaps
    everything = import_annotations(tmp_path, frames)  # no --label: the vessel triangle joins
    assert all(everything.masks[s].sum() > res.masks[s].sum() for s in refs)


def test_coco_from_the_cli_with_label_studio_names_and_problems(tmp_path):
    from support.keyframe_folders import LAYOUT, make_keyframes

    kf_dir = make_keyframes(tmp_path / "kf", n_patients=3, n_frames=2)
    ann = tmp_path / "ann"
    ann.mkdir()
    c = LAYOUT.ceus
    lesion = np.zeros((c.h, c.w), np.uint8)
    lesion[5:15, 8:20] = 1
    images = []
    for p in range(3):
        for i in range(2):
            stem = f"pat{p:02d}__exam1__{i:04d}"
            name = f"images/1a2b3c4d-{stem}_ceus.png" if p == 0 else f"{stem}_ceus.png"  # Label Studio upload
            seg = compressed(lesion) if i else [[8.0, 5.0, 20.0, 5.0, 20.0, 15.0, 8.0, 15.0]]
            images.append((name, c.w, c.h, [("lesion", seg)]))
    images.append(("pat02__exam1__0001_ceus.png", c.w, c.h, [("lesion", {"size": [c.h, c.w], "counts": "!!"})]))
    images.append(("unannotated.png", c.w, c.h, []))
    coco_file(ann / "result.json", images)
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, ["build-dataset", str(kf_dir), str(ann), str(out), "--max-tries", "5",
                                    "--test-fraction", "0.34", "--label", "lesion"])
    assert res.exit_code == 0, res.output
    assert "annotated: 5" in res.output and "annotation problems: 1" in res.output
    assert "2 annotated images belong to this key frame" in res.output
    for lab in out.glob("labels*/*.png"):
        assert np.array_equal(cv2.imread(str(lab), cv2.IMREAD_UNCHANGED), lesion)


def test_coco_problems_name_the_file_and_the_annotation(tmp_path):
    c = BIG.ceus
    frames = [kf(f"P1__E1__{i:04d}", BIG) for i in range(5)]
    coco_file(tmp_path / "export.json", [
        ("P1__E1__0000_ceus.png", c.w, c.h, [("lesion", {"size": [c.h, c.w], "counts": [5, 5]})]),
        ("P1__E1__0001_ceus.png", c.w, c.h, [("lesion", {"size": [3, 3], "counts": [9]})]),
        ("P1__E1__0002_ceus.png", c.w, c.h, [("vessel", [[1, 1, 9, 1, 5, 8]])]),
        ("P1__E1__0003_ceus.png", c.w, c.h, [("lesion", [[1, 1, 300, 1, 5, 8]])]),
        ("P1__E1__0004_ceus.png", 7, 7, [("lesion", [[1, 1, 5, 1, 5, 5]])]),
    ])
    res = import_annotations(tmp_path, frames, label="lesion")
    problems = {p.stem: str(p) for p in res.problems}
    assert res.masks == {} and set(problems) == {f.stem for f in frames}
    assert "annotation 1 (image 'P1__E1__0000_ceus.png'): invalid RLE" in problems["P1__E1__0000"]
    assert "RLE size [3, 3] is not the image's" in problems["P1__E1__0001"]
    assert "no annotation of category 'lesion'" in problems["P1__E1__0002"]
    assert "annotation 4 (image 'P1__E1__0003_ceus.png') polygon 0 has points outside" in problems["P1__E1__0003"]
    assert "image size 7x7 matches neither" in problems["P1__E1__0004"]
    assert all("export.json" in p and "\n" not in p for p in problems.values())
    (tmp_path / "export.json").write_text(json.dumps({"images": [], "annotations": []}))
    res = import_annotations(tmp_path, frames)
    assert [p.name for p in res.unmatched] == ["export.json"] and res.problems == []
    (tmp_path / "export.json").write_text(json.dumps({"images": [3], "annotations": [{"image_id": 7}]}))
    res = import_annotations(tmp_path, frames)
    assert [p.stem for p in res.problems] == [None] and res.unmatched == []
    assert ("malformed COCO file: 1 images that are not objects, 1 annotations of no listed image"
            in res.problems[0].problem)
