"""Input discovery: which files count, patient/exam id rules, order, duplicates, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ceuspipe.errors import InputError
from ceuspipe.inputs import ExamInput, find_inputs

DICOM_HEAD = b"\x00" * 128 + b"DICM" + b"\x02\x00"


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ids(items):
    return [(e.patient_id, e.exam_id) for e in items]


def test_folder_rule_patient_is_first_folder_exam_is_rest(tmp_path):
    root = tmp_path / "inbox"
    touch(root / "P001" / "visit2" / "clip.mp4")
    touch(root / "P001" / "liver.MOV")
    touch(root / "P002" / "a" / "b" / "cine.avi")
    touch(root / "loose.mkv")
    found = find_inputs([root])
    assert ids(found) == [("P001", "liver"), ("P001", "visit2_clip"), ("P002", "a_b_cine"),
                          ("loose", "loose")]
    assert found[1] == ExamInput(root / "P001" / "visit2" / "clip.mp4", "P001", "visit2_clip")


def test_all_suffixes_any_case_and_dicom_without_suffix(tmp_path):
    root = tmp_path / "r"
    names = ["a.mp4", "b.MOV", "c.avi", "d.mkv", "e.m4v", "f.webm", "g.mpg", "h.MPEG", "i.wmv",
             "j.DCM"]
    for name in names:
        touch(root / "P" / name)
    touch(root / "P" / "IM000001", DICOM_HEAD)
    touch(root / "P" / "1.2.840.113619.5", DICOM_HEAD)
    touch(root / "P" / "README", b"not dicom, no suffix" * 10)
    touch(root / "P" / "notes.txt", DICOM_HEAD)  # a known non-video suffix is not sniffed
    touch(root / "P" / "report.pdf")
    found = find_inputs([root])
    assert sorted(e.path.name for e in found) == sorted(names + ["IM000001", "1.2.840.113619.5"])
    exam_ids = {e.path.name: e.exam_id for e in found}
    assert exam_ids["1.2.840.113619.5"] == "1.2.840.113619.5"
    assert exam_ids["IM000001"] == "IM000001"
    assert exam_ids["h.MPEG"] == "h"


def test_hidden_files_and_folders_skipped(tmp_path):
    root = tmp_path / "r"
    touch(root / "P1" / "clip.mp4")
    touch(root / "P1" / ".clip.mp4")
    touch(root / "P1" / "._clip.mp4")
    touch(root / ".trash" / "old.mp4")
    touch(root / "P1" / ".cache" / "x.mp4")
    found = find_inputs([root])
    assert [e.path for e in found] == [root / "P1" / "clip.mp4"]


def test_file_given_directly(tmp_path):
    clip = touch(tmp_path / "Patient 7" / "exam (1).mp4")
    (found,) = find_inputs([clip])
    assert (found.patient_id, found.exam_id, found.path) == ("Patient_7", "exam_1", clip)


def test_relative_file_uses_current_folder_name(tmp_path, monkeypatch):
    touch(tmp_path / "P9" / "c.mp4")
    monkeypatch.chdir(tmp_path / "P9")
    (found,) = find_inputs(["c.mp4"])
    assert ids([found]) == [("P9", "c")]


def test_ids_are_sanitised(tmp_path):
    root = tmp_path / "r"
    touch(root / "P 1;rm -rf ~" / "v 2" / "clip#1.mp4")
    (found,) = find_inputs([root])
    assert found.patient_id == "P_1_rm_-rf"
    assert found.exam_id == "v_2_clip_1"
    assert all(c.isalnum() or c in "._-" for c in found.patient_id + found.exam_id)


def test_duplicates_removed_and_collisions_suffixed(tmp_path):
    root = tmp_path / "r"
    a = touch(root / "P1" / "x" / "clip.mp4")
    touch(root / "P1" / "x_clip.mov")
    touch(root / "P1" / "x_clip.avi")
    found = find_inputs([root, a, root / "P1"])
    # each file once; the folder argument came first, so its ids win for files reached again
    assert len(found) == 3
    assert len({os.path.realpath(e.path) for e in found}) == 3
    assert ids(found) == [("P1", "x_clip"), ("P1", "x_clip_2"), ("P1", "x_clip_3")]
    # deterministic: path order ("x/clip.mp4" < "x_clip.avi" < "x_clip.mov") gives the suffixes
    assert [e.path for e in found] == [a, root / "P1" / "x_clip.avi", root / "P1" / "x_clip.mov"]
    assert find_inputs([root, a, root / "P1"]) == found


def test_suffix_skips_an_id_already_taken(tmp_path):
    root = tmp_path / "r"
    touch(root / "P1" / "clip.mp4")
    touch(root / "P1" / "clip.mov")
    touch(root / "P1" / "clip_2.avi")
    assert sorted(ids(find_inputs([root]))) == [("P1", "clip"), ("P1", "clip_2"), ("P1", "clip_3")]


def test_same_ids_from_two_roots_are_suffixed(tmp_path):
    touch(tmp_path / "site_a" / "P1" / "clip.mp4")
    touch(tmp_path / "site_b" / "P1" / "clip.mp4")
    found = find_inputs([tmp_path / "site_b", tmp_path / "site_a"])
    assert ids(found) == [("P1", "clip"), ("P1", "clip_2")]
    assert found[0].path.parts[-3] == "site_a"  # path order, not argument order


def test_sorted_order_is_deterministic(tmp_path):
    root = tmp_path / "r"
    for p in ["P2/b.mp4", "P10/a.mp4", "P1/z.mp4", "P1/a.mp4"]:
        touch(root / p)
    found = find_inputs([root])
    assert ids(found) == [("P1", "a"), ("P1", "z"), ("P10", "a"), ("P2", "b")]


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(InputError) as err:
        find_inputs([tmp_path / "nope"])
    assert str(err.value) == f"{tmp_path / 'nope'}: no such file or folder"
    empty = tmp_path / "empty"
    touch(empty / "notes.txt")
    touch(empty / ".hidden.mp4")
    with pytest.raises(InputError, match="no video or DICOM files found"):
        find_inputs([empty])


def test_own_output_folders_beside_clips_are_not_exams(tmp_path):
    from ceuspipe.inputs import find_inputs
    from ceuspipe.video.writer import VideoWriter

    for rel in ("P001/exam1.mp4", "P001/exam1.truth/ceus_mask.mkv", "P001/exam1.ceuspipe/mask.mkv"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with VideoWriter(path, 32, 32, fps=5) as w:
            w.write(np.zeros((32, 32, 3), np.uint8), 0.0)
    found = find_inputs([tmp_path])
    assert [(e.patient_id, e.exam_id) for e in found] == [("P001", "exam1")]
