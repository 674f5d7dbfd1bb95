"""Annotation import: LabelMe polygons and PNG masks, in both coordinate frames,
every rejected case reported with its file, and rasterisation geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ceuspipe.dataset.annotations import import_annotations, match_stem
from ceuspipe.dataset.formats.labelme import read as load_labelme
from ceuspipe.dataset.rasterize import fill_polygons, segments_intersect, self_intersection
from support.annotations import CEUS_POLY, kf, labelme, to_full, write_png


def test_labelme_full_frame_and_crop_give_the_same_mask(tmp_path):
    crop = load_labelme(labelme(tmp_path / "P1__E1__0003_ceus.json", [CEUS_POLY], (40, 30)), kf())
    full = load_labelme(labelme(tmp_path / "P1__E1__0003_full.json", [to_full(CEUS_POLY)], (100, 44)), kf())
    assert crop.shape == (30, 40) and crop.dtype == np.uint8
    assert set(np.unique(crop)) == {0, 1}
    assert np.array_equal(crop, full)
    # Pixel-centre convention: vertex pixels are inside, the area is sensible.
    assert crop[4, 5] == 1 and crop[22, 28] == 1 and crop[0, 0] == 0
    assert 300 < crop.sum() < 500


def test_labelme_frame_decided_by_size_not_name(tmp_path):
    # Named like a CEUS annotation but sized like the full frame: the size wins.
    m = load_labelme(labelme(tmp_path / "P1__E1__0003.json", [to_full(CEUS_POLY)], (100, 44)), kf())
    ref = load_labelme(labelme(tmp_path / "P1__E1__0003_ceus.json", [CEUS_POLY], (40, 30)), kf())
    assert np.array_equal(m, ref)
    # No size at all: the name decides.
    m2 = load_labelme(labelme(tmp_path / "P1__E1__0003_full.json", [to_full(CEUS_POLY)], None), kf())
    assert np.array_equal(m2, ref)


def test_several_polygons_are_united_and_label_filter(tmp_path):
    a = [[1, 1], [10, 1], [10, 10], [1, 10]]
    b = [[6, 6], [20, 6], [20, 20], [6, 20]]  # overlaps a: the overlap must stay filled
    path = labelme(tmp_path / "P1__E1__0003_ceus.json", [a, b], (40, 30))
    m = load_labelme(path, kf())
    assert m[8, 8] == 1 and m[2, 2] == 1 and m[18, 18] == 1
    assert m.sum() == 100 + 225 - 25
    data = json.loads(path.read_text())
    data["shapes"][1]["label"] = "other"
    path.write_text(json.dumps(data))
    # As LabelMe's shapes_to_label: painted in order, the overlap belongs to the later "other".
    assert load_labelme(path, kf(), label="lesion").sum() == 100 - 25
    data["shapes"].reverse()
    path.write_text(json.dumps(data))
    assert load_labelme(path, kf(), label="lesion").sum() == 100


def test_png_masks_at_both_sizes(tmp_path):
    crop = np.zeros((30, 40), np.uint8)
    crop[5:15, 8:20] = 255
    full = np.zeros((44, 100), np.uint8)
    full[6:36, 10:50] = crop
    full[0:3, 0:3] = 255  # outside the CEUS panel: cropped away
    frames = [kf("P1__E1__0001"), kf("P1__E1__0002")]
    write_png(tmp_path / "P1__E1__0001_mask.png", crop)
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "P1__E1__0002_full_mask.png", full)  # found recursively
    res = import_annotations(tmp_path, frames)
    assert res.problems == [] and res.unannotated == []
    assert np.array_equal(res.masks["P1__E1__0001"], (crop > 0).astype(np.uint8))
    assert np.array_equal(res.masks["P1__E1__0002"], (crop > 0).astype(np.uint8))


def test_matching_by_stem_prefix():
    stems = {"P1__E1__0003", "P1__E1__00031"}
    assert match_stem("P1__E1__0003_ceus.json", stems) == "P1__E1__0003"
    assert match_stem("P1__E1__00031.json", stems) == "P1__E1__00031"
    assert match_stem("P1__E1__00032.json", stems) is None


def _bad_cases(d: Path) -> dict[str, str]:
    """Write one bad annotation per key frame; return stem -> expected problem words."""
    cases = {}
    (d / "P1__E1__0001_ceus.json").write_text("{not json")
    cases["P1__E1__0001"] = "invalid JSON"
    labelme(d / "P1__E1__0002_ceus.json", [[[1, 1], [5, 5]]], (40, 30), shape_type="line")
    cases["P1__E1__0002"] = "line 0 (lesion): a line has no area"
    labelme(d / "P1__E1__0003_ceus.json", [[[1, 1], [5, 5]]], (40, 30))
    cases["P1__E1__0003"] = "needs at least 3"
    labelme(d / "P1__E1__0004_ceus.json", [[[1, 1], [45, 1], [20, 20]]], (40, 30))
    cases["P1__E1__0004"] = "outside"
    labelme(d / "P1__E1__0005_full.json", [[[1, 1], [30, 8], [20, 20]]], (100, 44))  # in frame, not panel
    cases["P1__E1__0005"] = "outside the CEUS panel"
    labelme(d / "P1__E1__0006_ceus.json", [[[2, 2], [20, 2], [2, 20], [20, 20]]], (40, 30))
    cases["P1__E1__0006"] = "intersects itself"
    write_png(d / "P1__E1__0007_mask.png", np.zeros((30, 40), np.uint8))
    cases["P1__E1__0007"] = "empty mask"
    write_png(d / "P1__E1__0008_mask.png", np.full((31, 40), 255, np.uint8))
    cases["P1__E1__0008"] = "matches neither"
    write_png(d / "P1__E1__0009_mask.png", np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8))
    cases["P1__E1__0009"] = "not a binary mask"
    labelme(d / "P1__E1__0010_ceus.json", [CEUS_POLY], (55, 55))
    cases["P1__E1__0010"] = "matches neither"
    labelme(d / "P1__E1__0011_ceus.json", [[[3, 3], [3.4, 3], [3.2, 3]]], (40, 30))  # collinear sliver
    cases["P1__E1__0011"] = "intersects itself"
    labelme(d / "P1__E1__0012_ceus.json", [CEUS_POLY], (40, 30))
    write_png(d / "P1__E1__0012_mask.png", np.full((30, 40), 255, np.uint8))
    cases["P1__E1__0012"] = "several annotation files"
    labelme(d / "P1__E1__0013_ceus.json", [CEUS_POLY], (40, 30), shape_type="blob")
    cases["P1__E1__0013"] = "blob 0 (lesion): unknown shape_type 'blob'"
    labelme(d / "P1__E1__0014_ceus.json", [[[5, 5], [5, 5]]], (40, 30), shape_type="circle")
    cases["P1__E1__0014"] = "circle 0 (lesion) has radius 0"
    labelme(d / "P1__E1__0015_ceus.json", [[[5, 5], [9, 9]]], (40, 30), shape_type="mask")
    cases["P1__E1__0015"] = "mask 0 (lesion) has no base64 PNG 'mask'"
    labelme(d / "P1__E1__0016_ceus.json", [[[5, 5], [5, 9]]], (40, 30), shape_type="rectangle")
    cases["P1__E1__0016"] = "rectangle 0 (lesion) has no area"
    labelme(d / "P1__E1__0017_ceus.json", [[[5, 5], [9, 9], [12, 3]]], (40, 30), shape_type="circle")
    cases["P1__E1__0017"] = "circle 0 (lesion) has 3 points, needs 2"
    return cases


def test_every_bad_annotation_is_reported_and_left_out(tmp_path, caplog):
    cases = _bad_cases(tmp_path)
    good = "P1__E1__0020"
    labelme(tmp_path / f"{good}_ceus.json", [CEUS_POLY], (40, 30))
    (tmp_path / "someone_else__E9__0001_ceus.json").write_text("{}")
    frames = [kf(s) for s in cases] + [kf(good), kf("P1__E1__0030")]
    with caplog.at_level("WARNING", logger="ceuspipe"):
        res = import_annotations(tmp_path, frames)
    assert set(res.masks) == {good}
    assert res.unannotated == ["P1__E1__0030"]
    assert [p.name for p in res.unmatched] == ["someone_else__E9__0001_ceus.json"]
    by_stem = {p.stem: p for p in res.problems}
    assert set(by_stem) == set(cases)
    for stem, words in cases.items():
        problem = by_stem[stem]
        assert Path(problem.file).name.startswith(stem), problem
        assert words in problem.problem, (stem, problem.problem)
        assert stem in str(problem) and problem.file in str(problem)
        assert str(problem) in caplog.text


def test_label_filter_without_match_is_no_shape(tmp_path):
    labelme(tmp_path / "P1__E1__0003_ceus.json", [CEUS_POLY], (40, 30), label="vessel")
    res = import_annotations(tmp_path, [kf()], label="lesion")
    assert res.masks == {} and "no shape with label 'lesion'" in res.problems[0].problem


# ---- geometry -------------------------------------------------------------------------------

def test_rectangle_area_follows_pixel_centre_convention():
    m = fill_polygons([[[2, 3], [6, 3], [6, 8], [2, 8]]], 20, 20)
    assert m.sum() == 5 * 6
    assert m[3, 2] == 1 and m[8, 6] == 1 and m[2, 2] == 0 and m[9, 6] == 0


def test_segment_intersection_cases():
    assert segments_intersect((0, 0), (4, 4), (0, 4), (4, 0))  # proper crossing
    assert segments_intersect((0, 0), (4, 0), (2, 0), (2, 3))  # T touch
    assert segments_intersect((0, 0), (4, 0), (3, 0), (6, 0))  # collinear overlap
    assert not segments_intersect((0, 0), (4, 0), (5, 0), (6, 0))  # collinear apart
    assert not segments_intersect((0, 0), (4, 0), (0, 1), (4, 2))


def test_self_intersection_examples():
    assert self_intersection([[0, 0], [4, 0], [4, 4], [0, 4]]) is None
    assert self_intersection([[0, 0], [4, 0], [0, 4], [4, 4]]) is not None  # bow tie
    assert self_intersection([[0, 0], [4, 0], [4, 4], [0, 4], [0, 0]]) is None  # closed ring repeated
    assert self_intersection([[0, 0], [4, 0], [2, 0], [2, 3]]) is not None  # folds back
    assert self_intersection([[0, 0], [6, 0], [6, 6], [3, 0.0], [0, 6]]) is not None  # vertex on edge


@st.composite
def star_polygons(draw):
    """Simple polygons: vertices at increasing angles around a centre (star-shaped)."""
    n = draw(st.integers(3, 12))
    angles = sorted(draw(st.lists(st.floats(0, 2 * np.pi, exclude_max=True), min_size=n, max_size=n,
                                  unique=True)))
    if np.max(np.diff(angles + [angles[0] + 2 * np.pi])) >= np.pi - 1e-3 or np.min(np.diff(angles)) < 1e-3:
        angles = list(np.linspace(0, 2 * np.pi, n, endpoint=False))
    radii = draw(st.lists(st.floats(3, 12), min_size=n, max_size=n))
    return [[20 + r * np.cos(a), 20 + r * np.sin(a)] for r, a in zip(radii, angles)]


@settings(max_examples=60, deadline=None)
@given(star_polygons(), st.integers(0, 25), st.integers(0, 25))
def test_star_polygons_are_simple_and_translation_equivariant(poly, dx, dy):
    assert self_intersection(poly) is None
    m = fill_polygons([poly], 40, 40)
    shifted = fill_polygons([[[x + dx, y + dy] for x, y in poly]], 40 + dy, 40 + dx)
    assert np.array_equal(shifted[dy:, dx:], m)
    assert m[20, 20] == 1  # the centre of a star-shaped polygon is inside


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_swapping_two_far_vertices_of_a_convex_ring_makes_it_cross(data):
    n = 6
    ring = [[20 + 10 * np.cos(2 * np.pi * k / n), 20 + 10 * np.sin(2 * np.pi * k / n)] for k in range(n)]
    i = data.draw(st.integers(0, n - 1))
    j = (i + data.draw(st.integers(2, n - 2))) % n  # not neighbours
    ring[i], ring[j] = ring[j], ring[i]
    assert self_intersection(ring) is not None
