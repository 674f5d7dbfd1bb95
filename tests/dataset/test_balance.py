"""Grey-level balancing and the patient-level split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ceuspipe.dataset.balance import (Candidate, balance_selection, ks_uniform, ks_uniform_rows,
                                    ks_uniform_with_options)
from ceuspipe.dataset.split import split_patients


def bolus_patients(n_patients: int = 40, n_frames: int = 40, seed: int = 1) -> dict[str, list[Candidate]]:
    """Phantom-like candidates: per patient a gamma-variate bolus of mean CEUS grey
    level sampled at the key-frame times of a 2-minute clip (dark before arrival,
    a peak of patient-specific height, slow wash-out), so grey levels are skewed."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in range(n_patients):
        t = np.sort(rng.choice(np.arange(120), n_frames, replace=False)).astype(float)
        arrival, ttp, peak = rng.uniform(5, 20), rng.uniform(10, 30), rng.uniform(40, 200)
        tt = np.clip(t - arrival, 0, None) / ttp
        g = 4 + peak * tt ** 2 * np.exp(2 - 2 * tt) + rng.normal(0, 2, n_frames)
        out[f"P{p:03d}"] = [Candidate(f"P{p:03d}_{i:02d}", float(g[i]), float(t[i]), "E1")
                            for i in range(n_frames)]
    return out


def test_ks_uniform_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.uniform(10, 50, 37) ** 1.3
    lo, hi = 5.0, 200.0
    ref = stats.kstest(x, stats.uniform(loc=lo, scale=hi - lo).cdf).statistic
    assert ks_uniform(x, lo, hi) == pytest.approx(ref, abs=1e-12)
    assert ks_uniform([3, 3, 3], 3, 3) == 0.0


def test_balancing_lowers_ks_compared_with_a_single_draw():
    cands = bolus_patients()
    res = balance_selection(cands, 2, seed=0, max_tries=300)
    assert res.balanced < res.single_draw
    assert res.balanced < 0.6 * res.single_draw  # clearly better, not a tie
    assert res.balanced < res.all_candidates
    assert res.tries == 300 and res.seed == 0
    # The reported statistic is the statistic of the returned selection.
    gray = {c.key: c.gray for cs in cands.values() for c in cs}
    chosen = [gray[k] for ks in res.selection.values() for k in ks]
    assert res.balanced == pytest.approx(ks_uniform(chosen, res.lo, res.hi))
    single = [gray[k] for ks in res.single_draw_selection.values() for k in ks]
    assert res.single_draw == pytest.approx(ks_uniform(single, res.lo, res.hi))


def test_selection_is_distinct_separated_and_deterministic():
    cands = bolus_patients(12)
    a = balance_selection(cands, 2, seed=7, max_tries=100, min_separation_s=15)
    b = balance_selection(cands, 2, seed=7, max_tries=100, min_separation_s=15)
    assert a.selection == b.selection and a.balanced == b.balanced
    times = {c.key: c.time_s for cs in cands.values() for c in cs}
    for pid, keys in a.selection.items():
        assert len(keys) == 2 and len(set(keys)) == 2
        assert all(k.startswith(pid) for k in keys)
        assert abs(times[keys[0]] - times[keys[1]]) >= 15
    assert a.relaxed == []


def test_threshold_stops_early():
    res = balance_selection(bolus_patients(12), 2, seed=0, max_tries=2000, ks_threshold=0.9)
    assert res.tries == 1 and res.sweeps == 0 and res.balanced <= 0.9


def test_short_and_unseparable_patients_are_reported():
    cands = {
        "A": [Candidate("A1", 10.0, 1.0)],
        "B": [Candidate("B1", 20.0, 1.0), Candidate("B2", 30.0, 2.0), Candidate("B3", 40.0, 3.0)],
        "C": [Candidate(f"C{i}", float(10 * i), float(20 * i)) for i in range(5)],
        "D": [],
    }
    res = balance_selection(cands, 2, seed=0, max_tries=20, min_separation_s=10)
    assert res.selection["A"] == ["A1"]
    assert res.shortfall == {"A": (1, 2)}
    assert res.relaxed == ["B"] and len(set(res.selection["B"])) == 2
    assert "D" not in res.selection


def test_patient_split_integrity_ratio_and_folds():
    patients = [f"P{i:02d}" for i in range(30)]
    s = split_patients(patients, 1 / 3, folds=4, seed=3)
    assert set(s.train) | set(s.test) == set(patients)
    assert not set(s.train) & set(s.test)
    assert len(s.test) == 10 and len(s.train) == 20
    assert len(s.folds) == 4
    vals = [p for f in s.folds for p in f["val"]]
    assert sorted(vals) == sorted(s.train)  # each training patient validated exactly once
    for f in s.folds:
        assert not set(f["train"]) & set(f["val"]) and set(f["train"]) | set(f["val"]) == set(s.train)
    assert split_patients(patients, 1 / 3, 4, seed=3) == s
    assert split_patients(patients, 1 / 3, 4, seed=4).test != s.test
    two = split_patients(["a", "b"], 1 / 3, seed=0)
    assert len(two.train) == 1 and len(two.test) == 1
    with pytest.raises(ValueError):
        split_patients(patients, 1 / 3, folds=1)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=40), st.integers(1, 3), st.integers(1, 12), st.integers(0, 10**6))
def test_fast_option_ks_equals_sorting_every_row(others, n, k, seed):
    """The O(k n) evaluator used by the descent equals the plain definition, ties included."""
    opts = np.random.default_rng(seed).integers(0, 31, (k, n)).astype(float)
    o = np.asarray(others, dtype=float)
    rows = np.concatenate([np.broadcast_to(o, (k, len(o))), opts], axis=1)
    np.testing.assert_allclose(ks_uniform_with_options(o, opts, 0.0, 30.0), ks_uniform_rows(rows, 0.0, 30.0))
