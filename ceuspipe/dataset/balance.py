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


def _range_max_table(a: np.ndarray) -> list[np.ndarray]:
    """Sparse table for O(1) range maxima of ``a`` (level k holds maxima of length 2**k)."""
    table = [a]
    k = 1
    while (1 << k) <= len(a):
        prev = table[-1]
        half = 1 << (k - 1)
        table.append(np.maximum(prev[:-half], prev[half:]))
        k += 1
    return table


def _range_max(table: list[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Maxima of ``a[lo:hi]`` for arrays of bounds; ``-inf`` where ``lo >= hi``."""
    length = hi - lo
    out = np.full(lo.shape, -np.inf)
    ok = length > 0
    if np.any(ok):
        k = np.floor(np.log2(np.where(ok, length, 1))).astype(np.int64)
        for level in np.unique(k[ok]):
            sel = ok & (k == level)
            t = table[level]
            out[sel] = np.maximum(t[lo[sel]], t[hi[sel] - (1 << level)])
    return out


def ks_uniform_with_options(others: np.ndarray, options: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """KS distance to U(lo, hi) of ``others`` united with each row of ``options``.

    ``others``: ``(m,)`` fixed grey levels; ``options``: ``(k, n)`` alternatives.
    Returns ``(k,)``, equal to ``ks_uniform_rows`` of the concatenations, in
    O(m log m + k n) instead of sorting ``k`` rows of ``m + n`` values.
    """
    options = np.asarray(options, dtype=np.float64)
    k, n = options.shape
    m = len(others)
    if hi <= lo:
        return np.zeros(k)
    total = m + n
    u = np.clip((np.sort(np.asarray(others, dtype=np.float64)) - lo) / (hi - lo), 0.0, 1.0)
    v = np.clip((np.sort(options, axis=1) - lo) / (hi - lo), 0.0, 1.0)
    pos = np.searchsorted(u, v, side="left")  # (k, n): others before each option value
    j = np.arange(1, n + 1)[None, :] + pos  # 1-based rank of option values in the union
    best = np.maximum((j / total - v).max(axis=1), (v - (j - 1) / total).max(axis=1))
    if m:
        i = np.arange(m, dtype=np.float64)
        above = _range_max_table((i + 1) / total - u)  # + c/total for c option values before
        below = _range_max_table(u - i / total)  # - c/total
        bounds = np.concatenate([np.zeros((k, 1), np.int64), pos, np.full((k, 1), m, np.int64)], axis=1)
        for c in range(n + 1):
            seg_lo, seg_hi = bounds[:, c], bounds[:, c + 1]
            best = np.maximum(best, _range_max(above, seg_lo, seg_hi) + c / total)
            best = np.maximum(best, _range_max(below, seg_lo, seg_hi) - c / total)
    return best


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

    def done(stat: float) -> bool:
        return ks_threshold is not None and stat <= ks_threshold

    # Random redraws. Patients with enumerated admissible sets draw one index each
    # in a single vectorised call; the others (huge candidate lists) draw in Python.
    enum = [i for i, p in enumerate(patients) if not p.fixed and p.subsets is not None]
    other = [i for i, p in enumerate(patients) if not p.fixed and p.subsets is None]
    fixed_vals = np.concatenate([p.gray for p in patients if p.fixed] or [np.zeros(0)])
    sizes = np.array([len(patients[i].subsets) for i in enum], dtype=np.int64)
    enum_gray = [patients[i].gray[patients[i].subsets] for i in enum]  # (S_i, n) each
    if enum:
        width = max(len(g) for g in enum_gray)
        padded = np.zeros((len(enum), width, frames_per_patient))
        for r, g in enumerate(enum_gray):
            padded[r, : len(g)] = g
        rows = np.arange(len(enum))

    def draw() -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray]:
        picks = rng.integers(0, sizes) if enum else np.zeros(0, np.int64)
        rest = [patients[i].draw(rng) for i in other]
        vals = [fixed_vals]
        if enum:
            vals.append(padded[rows, picks].ravel())
        vals.extend(patients[i].gray[list(t)] for i, t in zip(other, rest))
        return picks, rest, np.concatenate(vals)

    def as_selection(picks: np.ndarray, rest: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        sel: list[tuple[int, ...]] = [tuple(range(len(p.cands))) for p in patients]
        for r, i in enumerate(enum):
            sel[i] = tuple(int(v) for v in patients[i].subsets[picks[r]])
        for i, t in zip(other, rest):
            sel[i] = t
        return sel

    picks, rest, vals = draw()
    best = single = as_selection(picks, rest)
    best_stat = single_stat = ks_uniform(vals, lo, hi)
    tries = 1
    while tries < max_tries and not done(best_stat):
        picks, rest, vals = draw()
        tries += 1
        stat = ks_uniform(vals, lo, hi)
        if stat < best_stat:
            best, best_stat = as_selection(picks, rest), stat
    best = list(best)

    # Coordinate descent: one patient at a time, the best admissible set given the rest.
    current = [p.gray[list(t)] for p, t in zip(patients, best)]
    sweeps = 0
    while sweeps < max_sweeps and not done(best_stat):
        sweeps += 1
        improved = False
        for pi in rng.permutation(len(patients)):
            p = patients[pi]
            if p.fixed:
                continue
            others = np.concatenate(current[:pi] + current[pi + 1:])
            opts = p.options(best[pi])
            stats = ks_uniform_with_options(others, p.gray[opts], lo, hi)
            k = int(np.argmin(stats))
            if stats[k] < best_stat - 1e-12:
                best[pi] = tuple(int(v) for v in opts[k])
                current[pi] = p.gray[list(best[pi])]
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
