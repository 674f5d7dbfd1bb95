"""Annotation formats as plug-ins: a toy format registered from outside the package (in
code and through an entry point) used by `ceuspipe build-dataset`, --format chooses among
the registered ones, unknown names refused in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.dataset import formats as format_registry
from ceuspipe.dataset.annotations import import_annotations
from ceuspipe.dataset.formats import AnnotationFormat, format_names, register_format
from ceuspipe.dataset.keyframe_index import load_keyframe_index
from ceuspipe.errors import InputError
from support.annotations import CEUS_POLY, kf, labelme
from support.keyframe_folders import LAYOUT, annotate_all, make_keyframes

RECT = (5, 4, 12, 9)  # x, y, w, h in CEUS-crop pixels


class RectTxt:
    """A toy format: ``<stem>*.txt`` holding one rectangle ``x,y,w,h`` in CEUS-crop pixels."""

    DESCRIPTION = "toy rectangles x,y,w,h"

    @staticmethod
    def claims(path: Path) -> bool:
        return path.suffix == ".txt"

    @staticmethod
    def read(path: Path, kf, label=None) -> np.ndarray:
        try:
            x, y, w, h = (int(v) for v in path.read_text().split(","))
        except ValueError:
            raise InputError(path, "not x,y,w,h") from None
        mask = np.zeros((kf.layout.ceus.h, kf.layout.ceus.w), np.uint8)
        mask[y:y + h, x:x + w] = 1
        return mask


@pytest.fixture()
def rect_txt():
    register_format("rect-txt", RectTxt, replace=True)
    yield "rect-txt"
    format_registry.FORMATS.unregister("rect-txt")


def rect_annotations(kf_dir: Path, ann: Path) -> Path:
    ann.mkdir()
    with (kf_dir / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            (ann / f"{row['stem']}_rect.txt").write_text(",".join(map(str, RECT)))
    return ann


def labels(out: Path) -> list[np.ndarray]:
    found = sorted(out.glob("labels*/*.png"))
    assert found
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in found]


def expected_rect() -> np.ndarray:
    m = np.zeros((LAYOUT.ceus.h, LAYOUT.ceus.w), np.uint8)
    x, y, w, h = RECT
    m[y:y + h, x:x + w] = 1
    return m


def test_builtins_are_registered():
    assert {"coco", "labelme", "png-mask"} <= set(format_names())


def test_a_format_registered_outside_the_package_builds_a_dataset_from_the_cli(tmp_path, rect_txt):
    kf_dir = make_keyframes(tmp_path / "kf", n_patients=3, n_frames=2)
    ann = rect_annotations(kf_dir, tmp_path / "ann")
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, ["build-dataset", str(kf_dir), str(ann), str(out), "--format", rect_txt,
                                    "--max-tries", "5", "--test-fraction", "0.34"])
    assert res.exit_code == 0, res.output
    assert "annotation problems: 0" in res.output and "annotated: 6" in res.output
    for lab in labels(out):
        assert np.array_equal(lab, expected_rect())


def test_by_default_every_registered_format_is_read(tmp_path, rect_txt):
    kf_dir = make_keyframes(tmp_path / "kf", n_patients=3, n_frames=2)
    ann = annotate_all(kf_dir, tmp_path / "ann")  # LabelMe (both frames) and PNG masks
    stems = sorted(p.name.split("_ceus")[0] for p in ann.glob("*_ceus.json"))
    for stem in stems:  # those frames get a second file: several annotations for one frame
        (ann / f"{stem}_rect.txt").write_text("1,1,3,3")
    frames = load_keyframe_index(kf_dir)
    res = import_annotations(ann, frames)
    assert sorted(p.stem for p in res.problems) == stems
    assert all("several annotation files" in p.problem for p in res.problems)
    assert set(res.formats.values()) == {"labelme", "png-mask"}
    only = import_annotations(ann, frames, formats=["png-mask", "rect-txt"])  # the JSON files are not read
    assert only.problems == [] and set(only.formats[s] for s in stems) == {"rect-txt"}
    assert set(only.formats.values()) == {"png-mask", "rect-txt"}


def test_format_option_takes_repeats_and_comma_lists(tmp_path, rect_txt):
    kf_dir = make_keyframes(tmp_path / "kf", n_patients=3, n_frames=2)
    ann = annotate_all(kf_dir, tmp_path / "ann")
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, ["build-dataset", str(kf_dir), str(ann), str(out), "--format", "png-mask",
                                    "--max-tries", "5", "--test-fraction", "0.34", "--frames-per-patient", "1"])
    assert res.exit_code == 0, res.output
    assert "annotated: 2, unannotated: 4" in res.output  # only the masks: every third frame
    res = CliRunner().invoke(main, ["build-dataset", str(kf_dir), str(ann), str(out), "--overwrite",
                                    "--format", "png-mask,labelme", "--format", rect_txt, "--max-tries", "5",
                                    "--test-fraction", "0.34"])
    assert res.exit_code == 0, res.output
    assert "annotated: 6, unannotated: 0" in res.output


def test_unknown_format_is_one_line_naming_the_known_ones(tmp_path, rect_txt):
    res = CliRunner().invoke(main, ["build-dataset", str(tmp_path), str(tmp_path), str(tmp_path / "ds"),
                                    "--format", "labelme,nope"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert "'nope'" in lines[0] and "coco, labelme, png-mask, rect-txt" in lines[0] and "--format" in lines[0]
    with pytest.raises(ValueError, match="known: coco, labelme"):
        import_annotations(tmp_path, [kf()], formats=["nope"])


def test_formats_from_entry_points_reach_the_cli(tmp_path, monkeypatch):
    import importlib.metadata as md

    group = format_registry.ENTRY_POINT_GROUP
    ep = md.EntryPoint("ep-rect", f"{__name__}:RectTxt", group)  # what an installed package declares
    monkeypatch.setattr(md, "entry_points", lambda group: [ep] if group == ep.group else [])
    format_registry.FORMATS.reload_entry_points()
    try:
        kf_dir = make_keyframes(tmp_path / "kf", n_patients=3, n_frames=1)
        ann = rect_annotations(kf_dir, tmp_path / "ann")
        res = CliRunner().invoke(main, ["build-dataset", str(kf_dir), str(ann), str(tmp_path / "ds"),
                                        "--format", "ep-rect", "--max-tries", "5", "--test-fraction", "0.34"])
        assert res.exit_code == 0, res.output
        assert all(np.array_equal(lab, expected_rect()) for lab in labels(tmp_path / "ds"))
        assert format_registry.FORMATS.get("ep-rect").description == RectTxt.DESCRIPTION
    finally:
        format_registry.FORMATS.unregister("ep-rect")
        format_registry.FORMATS.reload_entry_points()


def test_a_file_claimed_by_two_formats_is_a_problem(tmp_path):
    register_format("json-too", AnnotationFormat("ignored", lambda p: p.suffix == ".json", RectTxt.read))
    try:
        labelme(tmp_path / "P1__E1__0003_ceus.json", [CEUS_POLY], (40, 30))
        res = import_annotations(tmp_path, [kf()])
        assert res.masks == {} and len(res.problems) == 1
        assert "claimed by several annotation formats (json-too, labelme)" in str(res.problems[0])
        assert set(import_annotations(tmp_path, [kf()], formats=["labelme"]).masks) == {"P1__E1__0003"}
    finally:
        format_registry.FORMATS.unregister("json-too")


def test_a_plug_in_mask_of_the_wrong_size_or_empty_is_a_problem(tmp_path):
    def wrong(path, kf, label):
        return np.ones((3, 3), np.uint8) if "0001" in path.name else np.zeros((30, 40), np.uint8)

    register_format("bad-txt", AnnotationFormat("bad-txt", lambda p: p.suffix == ".txt", wrong))
    try:
        for stem in ("P1__E1__0001", "P1__E1__0002"):
            (tmp_path / f"{stem}.txt").write_text("x")
        res = import_annotations(tmp_path, [kf("P1__E1__0001"), kf("P1__E1__0002")], formats=["bad-txt"])
        problems = {p.stem: p.problem for p in res.problems}
        assert "format bad-txt gave a mask of shape (3, 3)" in problems["P1__E1__0001"]
        assert "empty mask" in problems["P1__E1__0002"] and res.masks == {}
    finally:
        format_registry.FORMATS.unregister("bad-txt")


def test_a_registration_without_read_is_refused():
    with pytest.raises(ValueError, match="needs claims"):
        register_format("half", type("Half", (), {"claims": staticmethod(lambda p: True)}))
    assert "half" not in format_names()
