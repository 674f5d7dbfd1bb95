"""benchmarks/bench_tic_agreement.py's statistics against hand-worked examples: ICC(2,1) on
Shrout & Fleiss (1979)'s 6 targets x 4 judges (their worked example: ICC(2,1) = 0.29), and the
mean absolute % difference and Bland-Altman limits on pairs worked out by hand."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_tic_agreement.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tic_agreement", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Shrout & Fleiss 1979, the worked example: rows are targets, columns judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8],
                          [6, 1, 3, 2],
                          [8, 4, 6, 8],
                          [7, 1, 2, 6],
                          [10, 5, 6, 9],
                          [6, 2, 4, 7]], dtype=float)


def test_icc_2_1_matches_shrout_and_fleiss(bench):
    # By hand from their ANOVA: BMS 11.24, JMS 32.49, EMS 1.02, n 6, k 4:
    # (11.24 - 1.02) / (11.24 + 3 * 1.02 + 4 * (32.49 - 1.02) / 6) = 10.22 / 35.28 = 0.29
    assert bench.icc_2_1(SHROUT_FLEISS) == pytest.approx(0.2898, abs=5e-4)


def test_icc_is_one_for_identical_raters_and_lower_for_a_constant_offset(bench):
    x = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    assert bench.icc_2_1(np.stack([x, x], axis=1)) == pytest.approx(1.0)
    # absolute agreement: a constant offset between raters lowers it (consistency would not)
    shifted = bench.icc_2_1(np.stack([x, x + 1.0], axis=1))
    assert 0.5 < shifted < 0.9
    assert math.isnan(bench.icc_2_1(np.ones((1, 2))))


def test_agreement_by_hand(bench):
    a = np.array([11.0, 18.0, 30.0, np.nan])
    b = np.array([10.0, 20.0, 30.0, 5.0])
    s = bench.agreement(a, b)
    assert s["n"] == 3  # the pair with NaN is left out
    assert s["mapd_pct"] == pytest.approx((10 + 10 + 0) / 3)
    rel = np.array([100 * 1 / 10.5, 100 * -2 / 19, 0.0])
    assert s["ba_bias_pct"] == pytest.approx(rel.mean())
    sd = math.sqrt(((rel - rel.mean()) ** 2).sum() / 2)
    assert s["ba_low_pct"] == pytest.approx(rel.mean() - 1.96 * sd)
    assert s["ba_high_pct"] == pytest.approx(rel.mean() + 1.96 * sd)
    assert s["icc"] == pytest.approx(bench.icc_2_1(np.stack([a[:3], b[:3]], axis=1)))
