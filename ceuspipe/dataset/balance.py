"""Grey-level balanced choice of a few annotated key frames per patient.

The paper draws two key frames per patient at random and redraws "until the
grey levels of the dataset are uniformly distributed". Here that is a seeded,
bounded search:

* Uniformity is the Kolmogorov-Smirnov distance :func:`ks_uniform` between the
  chosen frames' mean CEUS grey levels and the uniform distribution over
  ``[lo, hi]``, the range of the grey levels of *all* candidate frames (0 is
  perfectly uniform, 1 the worst).
* Each patient contributes ``frames_per_patient`` distinct frames. To cover
  different perfusion phases, frames of the same exam must be at least
  ``min_separation_s`` seconds apart; a patient for whom no such set exists is
  drawn without that constraint (and reported in ``relaxed``). A patient with
  fewer candidates than requested contributes all of them (``shortfall``).
* Search: ``max_tries`` independent random draws (the first one is the
  "single draw" baseline), keeping the best; then coordinate descent (patient by
  patient, in a seeded order, take the admissible frame set that lowers the KS
  distance most) for at most ``max_sweeps`` sweeps. It stops early once the
  distance is at or below ``ks_threshold``. Everything comes from one
  ``numpy.random.Generator`` seeded with ``seed``: same inputs, same result.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np

#: Above this many ``n``-subsets per patient, options are single-frame swaps.
MAX_ENUMERATED_SUBSETS = 20000


class Candidate(NamedTuple):
    """One annotated key frame: ``gray`` mean CEUS grey level (0-255), ``time_s``
    seconds from the clip start, ``group`` the exam (times compare within it)."""

    key: str
    gray: float
    time_s: float
    group: str = ""


@dataclass
class BalanceResult:
    """``selection``: patient -> chosen candidate keys (time order); statistics are
    KS distances to uniform over ``[lo, hi]``."""

    selection: dict[str, list[str]]
    all_candidates: float
    single_draw: float
    balanced: float
    tries: int
    sweeps: int
    seed: int
    lo: float
    hi: float
    single_draw_selection: dict[str, list[str]] = field(default_factory=dict)
    shortfall: dict[str, tuple[int, int]] = field(default_factory=dict)
    relaxed: list[str] = field(default_factory=list)


def ks_uniform(values: Sequence[float] | np.ndarray, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov distance between the sample ``values`` and U(lo, hi).

    ``D = sup |F_n(x) - (x - lo) / (hi - lo)|``, in ``[0, 1]``. With ``hi == lo``
    every value is the same and the distance is 0. An empty sample gives 1.
    """
    return float(ks_uniform_rows(np.asarray(values, dtype=np.float64)[None, :], lo, hi)[0])


def ks_uniform_rows(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Row-wise :func:`ks_uniform` of a ``(k, n)`` array -> ``(k,)`` distances."""
    values = np.asarray(values, dtype=np.float64)
    k, n = values.shape
    if n == 0:
        return np.ones(k)
    if hi <= lo:
        return np.zeros(k)
    u = np.clip((np.sort(values, axis=1) - lo) / (hi - lo), 0.0, 1.0)
    i = np.arange(1, n + 1, dtype=np.float64)
    return np.maximum((i / n - u).max(axis=1), (u - (i - 1) / n).max(axis=1))


class _Patient:
    """Candidates of one patient and the admissible frame sets among them."""

    def __init__(self, name: str, cands: Sequence[Candidate], n: int, min_sep: float):
        self.name = name
        order = sorted(range(len(cands)), key=lambda i: (cands[i].group, cands[i].time_s, cands[i].key))
        self.cands = [cands[i] for i in order]
        self.gray = np.array([c.gray for c in self.cands], dtype=np.float64)
        self.n = min(n, len(self.cands))
        self.min_sep = min_sep
        self.relaxed = False
        self.fixed = self.n == len(self.cands)
        if not self.fixed and self._max_separated() < self.n:
            self.relaxed = True
        m = len(self.cands)
        self.subsets: np.ndarray | None = None
        if not self.fixed and math.comb(m, self.n) <= MAX_ENUMERATED_SUBSETS:
            subs = [s for s in itertools.combinations(range(m), self.n) if self.admissible(s)]
            self.subsets = np.array(subs, dtype=np.int64).reshape(-1, self.n)

    def _separated(self, i: int, j: int) -> bool:
        a, b = self.cands[i], self.cands[j]
        return a.group != b.group or abs(a.time_s - b.time_s) >= self.min_sep

    def admissible(self, subset: Sequence[int]) -> bool:
        if len(set(subset)) != len(subset):
            return False
        if self.relaxed:
            return True
        return all(self._separated(i, j) for i, j in itertools.combinations(subset, 2))

    def _max_separated(self) -> int:
        """Largest separated set (greedy earliest-first per exam is optimal on a line)."""
        count = 0
        for _, group in itertools.groupby(range(len(self.cands)), key=lambda i: self.cands[i].group):
            last = None
            for i in group:
                if last is None or self.cands[i].time_s - self.cands[last].time_s >= self.min_sep:
                    count += 1
                    last = i
        return count

    def draw(self, rng: np.random.Generator) -> tuple[int, ...]:
        m = len(self.cands)
        if self.fixed:
            return tuple(range(m))
        if self.subsets is not None:
            return tuple(int(v) for v in self.subsets[rng.integers(len(self.subsets))])
        for _ in range(200):  # random greedy: admissible with high probability
            picked: list[int] = []
            for i in rng.permutation(m):
                if all(self.relaxed or self._separated(int(i), j) for j in picked):
                    picked.append(int(i))
                    if len(picked) == self.n:
                        return tuple(sorted(picked))
        raise RuntimeError(f"could not draw {self.n} separated frames for patient {self.name}")

    def options(self, current: tuple[int, ...]) -> np.ndarray:
        """``(k, n)`` admissible index sets to try in place of ``current``."""
        if self.fixed:
            return np.array([current], dtype=np.int64)
        if self.subsets is not None:
            return self.subsets
        opts = [current]
        for slot in range(self.n):
            for j in range(len(self.cands)):
                trial = list(current)
                trial[slot] = j
                if self.admissible(trial):
                    opts.append(tuple(sorted(trial)))
        return np.array(sorted(set(opts)), dtype=np.int64)


def balance_selection(candidates: Mapping[str, Sequence[Candidate]], frames_per_patient: int = 2,
                      seed: int = 0, max_tries: int = 2000, ks_threshold: float | None = None,
                      min_separation_s: float = 10.0, max_sweeps: int = 20) -> BalanceResult:
    """Choose ``frames_per_patient`` candidates per patient, grey-level balanced.

    ``candidates``: patient id -> its annotated key frames (patients with none
    are ignored). See the module docstring for the statistic and the search.
    Returns a :class:`BalanceResult` whose ``selection`` lists candidate keys.
    """
    if frames_per_patient < 1:
        raise ValueError("frames_per_patient must be at least 1")
    if max_tries < 1:
        raise ValueError("max_tries must be at least 1")
    patients = [_Patient(p, candidates[p], frames_per_patient, min_separation_s)
                for p in sorted(candidates) if len(candidates[p]) > 0]
    if not patients:
        raise ValueError("no patient has an annotated key frame")
    all_gray = np.concatenate([p.gray for p in patients])
    lo, hi = float(all_gray.min()), float(all_gray.max())
    rng = np.random.default_rng(seed)

    def values(sel: list[tuple[int, ...]]) -> np.ndarray:
        return np.concatenate([p.gray[list(s)] for p, s in zip(patients, sel)])

    def done(stat: float) -> bool:
        return ks_threshold is not None and stat <= ks_threshold

    best = [p.draw(rng) for p in patients]
    best_stat = single_stat = ks_uniform(values(best), lo, hi)
    single = list(best)
    tries = 1
    while tries < max_tries and not done(best_stat):
        trial = [p.draw(rng) for p in patients]
        tries += 1
        stat = ks_uniform(values(trial), lo, hi)
        if stat < best_stat:
            best, best_stat = trial, stat

    sweeps = 0
    while sweeps < max_sweeps and not done(best_stat):
        sweeps += 1
        improved = False
        for pi in rng.permutation(len(patients)):
            p = patients[pi]
            if p.fixed:
                continue
            others = np.concatenate([q.gray[list(s)] for qi, (q, s) in enumerate(zip(patients, best))
                                     if qi != pi])
            opts = p.options(best[pi])
            rows = np.concatenate([np.broadcast_to(others, (len(opts), len(others))), p.gray[opts]], axis=1)
            stats = ks_uniform_rows(rows, lo, hi)
            k = int(np.argmin(stats))
            if stats[k] < best_stat - 1e-12:
                best[pi] = tuple(int(v) for v in opts[k])
                best_stat = float(stats[k])
                improved = True
                if done(best_stat):
                    break
        if not improved:
            break

    def keys(sel: list[tuple[int, ...]]) -> dict[str, list[str]]:
        return {p.name: [p.cands[i].key for i in sorted(s)] for p, s in zip(patients, sel)}

    return BalanceResult(
        selection=keys(best), all_candidates=ks_uniform(all_gray, lo, hi), single_draw=single_stat,
        balanced=best_stat, tries=tries, sweeps=sweeps, seed=seed, lo=lo, hi=hi,
        single_draw_selection=keys(single),
        shortfall={p.name: (len(p.cands), frames_per_patient) for p in patients
                   if len(p.cands) < frames_per_patient},
        relaxed=[p.name for p in patients if p.relaxed])
