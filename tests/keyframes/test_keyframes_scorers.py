"""Key-frame scorers by name: the paper's default, one registered from outside the package
and used from the CLI and a pipeline file, one from an entry point, unknown names refused."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from ceuspipe.cli import main
from ceuspipe.configs import ConfigError
from ceuspipe.keyframes import DEFAULT_SCORER, KeyframeConfig, get_scorer, register_scorer, scorer_names
from ceuspipe.keyframes import scorers as scorer_registry
from ceuspipe.synth import PhantomConfig, generate_exam
from support.builders import installed_entry_point


def brightness(gray: np.ndarray, previous: np.ndarray | None) -> float:
    """Mean grey level of the sample itself (a toy: the brightest samples win)."""
    return float(gray.mean(dtype=np.float64))


@pytest.fixture()
def toy_scorer():
    register_scorer("toy-brightness", brightness, replace=True)
    yield "toy-brightness"
    scorer_registry.SCORERS.unregister("toy-brightness")


def test_default_is_the_papers_grey_change():
    assert DEFAULT_SCORER == "grey-change" == KeyframeConfig().scorer
    a = np.zeros((4, 4), np.uint8)
    b = np.full((4, 4), 6, np.uint8)
    assert get_scorer("grey-change")(b, a) == 6.0 and get_scorer("grey-change")(b, None) == 0.0


def test_a_scorer_registered_outside_the_package_runs_from_the_cli(tmp_path, toy_scorer):
    clip = tmp_path / "P001" / "exam1.mp4"
    generate_exam(clip, None, PhantomConfig(duration_s=30, fps=4, width=320, height=180), seed=5)
    out = tmp_path / "kf"
    res = CliRunner().invoke(main, ["keyframes", str(clip.parent), str(out), "-k", "6", "--scorer", toy_scorer])
    assert res.exit_code == 0, res.output
    meta = json.loads(next(out.glob("*/*/keyframes.json")).read_text())
    assert meta["scorer"] == toy_scorer
    rows = list(csv.DictReader(next(out.glob("*/*/scores.csv")).read_text().splitlines()))
    # the toy's score is the sample's own mean grey level, which scores.csv also records
    assert all(abs(float(r["score"]) - float(r["ceus_gray"])) < 1e-4 for r in rows)
    brightest = sorted(rows, key=lambda r: (-float(r["ceus_gray"]), int(r["sample_index"])))[:6]
    assert sorted(int(r["sample_index"]) for r in brightest) == [f["sample_index"] for f in meta["frames"]]


def test_unknown_scorer_is_one_line_and_a_pipeline_key(tmp_path):
    res = CliRunner().invoke(main, ["keyframes", str(tmp_path), str(tmp_path / "out"), "--scorer", "nope"])
    assert res.exit_code != 0
    line = res.output.strip().splitlines()[-1]
    assert "nope" in line and "grey-change" in line
    with pytest.raises(ConfigError, match="scorer"):
        KeyframeConfig(scorer="nope")


def test_scorers_from_entry_points(monkeypatch):
    with installed_entry_point(monkeypatch, scorer_registry.SCORERS, "ep-brightness", brightness):
        assert "ep-brightness" in scorer_names()
        assert get_scorer("ep-brightness")(np.full((2, 2), 9, np.uint8), None) == 9.0
    assert "ep-brightness" not in scorer_names()
