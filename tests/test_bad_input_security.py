"""Inputs are never modified, nothing is written outside the output folder, names from
inputs cannot escape it, and no patient metadata from the source reaches the outputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from support.bad_inputs import SAFE_COMPONENT, tree_hashes, two_panel_frames, write_dicom, write_video

from ceuspipe.cli import main
from ceuspipe.fsutil import MAX_NAME, safe_name

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-SECRET-4711"

HOSTILE_FOLDERS = [
    "...",                       # dots only
    "-rf",                       # looks like an option
    "--help",
    "a\u2215b",                  # DIVISION SLASH, looks like '/'
    "a\uff0fb",                  # FULLWIDTH SOLIDUS
    "..\u2024",                  # ONE DOT LEADER
    "M\u00fcller^Hans 1970",
    "x" * 240,                   # long
    "tab\tand\nnewline",
    " spaces ",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from ceuspipe.model import build_model
    from ceuspipe.train.checkpoint import save_checkpoint
    from ceuspipe.video.layout import detect_layout

    root = tmp_path_factory.mktemp("sec")
    inputs = root / "inputs"
    frames = two_panel_frames(12)
    clip = write_video(inputs / "P001" / "exam1.mp4", frames)
    for i, name in enumerate(HOSTILE_FOLDERS):
        write_video(inputs / "hostile" / name / f"-{i}..mp4", frames)
    write_dicom(inputs / "dicom" / "P9" / "cine.dcm", np.stack(frames),
                patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    ckpt = inputs / "tiny.pt"
    save_checkpoint(ckpt, {"config": {"variant": "full", "width": 0.125, "size": 64, "threshold": 0.5},
                           "model": build_model("full", 0.125).state_dict(), "epoch": 0})
    lay = detect_layout(frames)
    boxes = ["--ceus-box", ",".join(map(str, lay.ceus.as_list())), "--us-box", ",".join(map(str, lay.us.as_list()))]
    return {"root": root, "inputs": inputs, "clip": clip, "ckpt": ckpt, "boxes": boxes}


def _invoke(env, *args):
    res = CliRunner().invoke(main, list(args), env={"CEUSPIPE_CACHE_DIR": str(env["root"] / "cache")})
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def runs(env):
    """Run keyframes over all inputs and segment-video on a clip and the DICOM cine, once."""
    inputs, root = env["inputs"], env["root"]
    before = tree_hashes(inputs)
    outside_before = sorted(p.name for p in root.iterdir())
    out = root / "out"
    _invoke(env, "keyframes", str(inputs), str(out / "kf"), "-k", "2")
    _invoke(env, "segment-video", str(env["clip"]), "--model", str(env["ckpt"]),
            "-o", str(out / "seg"), *env["boxes"], "--engine", "torch")
    _invoke(env, "segment-video", str(inputs / "dicom" / "P9" / "cine.dcm"), "--model",
            str(env["ckpt"]), "-o", str(out / "seg_dcm"), *env["boxes"], "--engine", "torch")
    return {"before": before, "outside_before": outside_before, "out": out}


def test_inputs_unchanged_and_nothing_written_outside_the_output(env, runs):
    inputs, root, kf = env["inputs"], env["root"], runs["out"] / "kf"
    assert tree_hashes(inputs) == runs["before"], "an input file changed"
    assert sorted(p.name for p in root.iterdir()) == sorted(set(runs["outside_before"]) | {"out"})
    # every output path component is a sanitised name inside OUT
    for p in kf.rglob("*"):
        rel = p.relative_to(kf)
        assert p.resolve().is_relative_to(kf.resolve())
        for part in rel.parts:
            assert SAFE_COMPONENT.match(part), part
            assert len(part) <= 255
    hostile = sorted(d.name for d in (kf / "hostile").iterdir())
    # folders whose names start with "." are hidden and skipped by design; every other one
    # got its own exam folder (no two collapsed into one)
    assert len(hostile) == len([n for n in HOSTILE_FOLDERS if not n.startswith(".")])
    assert all(len(n) <= 2 * 80 for n in hostile)


def test_no_patient_metadata_in_any_output(env, runs):
    out = runs["out"]
    files = [p for p in [*(out / "kf" / "dicom").rglob("*"), *(out / "seg_dcm").rglob("*")] if p.is_file()]
    names = {p.name for p in files}
    assert {"keyframes.json", "scores.csv", "tic.json", "tic.csv", "segment.json", "mask.mkv",
            "overlay.mp4", "report.html"} <= names
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".html":  # base64 images may hold any short string ("Doe") by chance
            data = re.sub(rb"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", b"", data)
        for secret in (PATIENT_NAME, "Doe", PATIENT_ID, "SECRET"):
            assert secret.encode() not in data, (p, secret)


def test_safe_name_never_escapes_and_keeps_long_names_distinct():
    for raw in ["..", ".", "/", "../../etc/passwd", "a/../../b", "-rf", "--", "\u2215\u2215", "", " ",
                "..\u2024", "x" * 1000, "\x00", "COM1:", "a\\..\\b"]:
        name = safe_name(raw)
        assert SAFE_COMPONENT.match(name), (raw, name)
        assert name not in (".", "..") and "/" not in name and len(name) <= MAX_NAME
    a, b = safe_name("p" * 200 + "A"), safe_name("p" * 200 + "B")
    assert a != b and len(a) == len(b) == MAX_NAME
    assert safe_name("P001") == "P001" and safe_name("visit 2") == "visit_2"
