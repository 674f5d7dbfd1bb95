"""Perfusion curves under realistic noise (issue 17): recovery, flags, interval coverage.

    python benchmarks/bench_tic_noise.py [--curves 20] [--coverage-curves 100] [--quick]

Curves of known parameters from :mod:`ceuspipe.tic.simulate` (8 fps, 150 s, lognormal
and gamma-variate boluses, multiplicative gamma-distributed noise of the given CV).
A curve is *recovered* when the fit succeeds and TTP and PE are within 5 % of the
truth and mTT within 10 %. Columns:

* ``default``        ``analyse_curve(t, y)`` (ROI values only, as the issue's user called it)
* ``no detectors``   ``detect_flash=False, detect_jumps=False``
* ``plain LS``       no detectors, ``noise="additive", robust=False``: unweighted multi-start
                     least squares (the fit before issue 17)
* ``weighted``       no detectors, the default noise-aware fit (``noise="auto"``, Huber)
* ``with panel``     ``analyse_curve(t, y, panel_means=...)`` as TicAccumulator calls it

Then: the share of flash-free curves with any flagged frame; flash and destruction
detection on curves that have them; and the coverage of the 90 % intervals of TTP, PE,
mTT (and the other parameters) over many curves. Fixed seeds: reruns print the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ceuspipe.tic import analyse_curve  # noqa: E402
from ceuspipe.tic.simulate import simulate_curve  # noqa: E402

MODELS = ("lognormal", "gamma")
COLUMNS = {
    "default": dict(),
    "no detectors": dict(detect_flash=False, detect_jumps=False),
    "plain LS": dict(detect_flash=False, detect_jumps=False, noise="additive", robust=False),
    "weighted": dict(detect_flash=False, detect_jumps=False),
    "with panel": dict(panel=True),
}
COVERED = ("TTP", "PE", "mTT", "TI", "RT", "WiAUC", "WoAUC", "WiR", "WoR", "FT")


def recovered(r, c) -> bool:
    if not r.success:
        return False
    T = c.truth
    return (abs(r.value("TTP") / T["TTP"].value - 1) <= 0.05 and abs(r.value("PE") / T["PE"].value - 1) <= 0.05
            and abs(r.value("mTT") / T["mTT"].value - 1) <= 0.10)


def run(c, **kw):
    panel = kw.pop("panel", False)
    return analyse_curve(c.times_s, c.values, model=c.model, panel_means=c.panel_means if panel else None, **kw)


def recovery_table(n: int, cvs) -> None:
    print(f"\n### Recovery (TTP, PE within 5 %, mTT within 10 %): {n} curves per row, 8 fps, 150 s")
    print("| model | noise CV | " + " | ".join(COLUMNS) + " | flagged curves (ROI / panel) | s/curve |")
    print("|---|---|" + "---|" * len(COLUMNS) + "---|---|")
    for model in MODELS:
        for cv in cvs:
            rng = np.random.default_rng(17_000 + int(round(cv * 100)) + (500 if model == "gamma" else 0))
            curves = [simulate_curve(rng, model, noise_cv=cv) for _ in range(n)]
            counts = dict.fromkeys(COLUMNS, 0)
            flagged = {"default": 0, "with panel": 0}
            start = time.perf_counter()
            for c in curves:
                for name, kw in COLUMNS.items():
                    if name == "weighted":  # same call as "no detectors"
                        continue
                    r = run(c, **kw)
                    counts[name] += recovered(r, c)
                    if name == "no detectors":
                        counts["weighted"] += recovered(r, c)
                    if name in flagged:
                        flagged[name] += bool(r.excluded.any())
            per = (time.perf_counter() - start) / n
            print(f"| {model} | {cv:.0%} | " + " | ".join(f"{counts[k]}/{n}" for k in COLUMNS)
                  + f" | {flagged['default']}/{n} / {flagged['with panel']}/{n} | {per:.2f} |", flush=True)


def false_positives(n: int, cvs) -> None:
    print(f"\n### Flags on flash-free curves ({n} bolus curves and {n} noise-only curves per row)")
    print("| noise CV | bolus: curves with a flag, ROI only | with panel | flagged frames (max) "
          "| noise-only: curves with a flag, ROI only | with panel |")
    print("|---|---|---|---|---|---|")
    for cv in cvs:
        rng = np.random.default_rng(27_000 + int(round(cv * 100)))
        res = {"roi": 0, "panel": 0, "nroi": 0, "npanel": 0}
        worst = 0
        for i in range(n):
            c = simulate_curve(rng, MODELS[i % 2], noise_cv=cv)
            for key, panel in (("roi", False), ("panel", True)):
                r = run(c, panel=panel)
                res[key] += bool(r.excluded.any())
                worst = max(worst, int(r.excluded.sum()))
            # noise only: a flat level with the same noise (no bolus)
            level = c.params["O"] * 5
            y = level * (c.values / c.clean)
            for key, pm in (("nroi", None), ("npanel", np.full(y.size, 60.0) + rng.normal(0, 0.5, y.size))):
                r = analyse_curve(c.times_s, y, panel_means=pm)
                res[key] += bool(r.excluded.any())
        print(f"| {cv:.0%} | {res['roi']}/{n} | {res['panel']}/{n} | {worst} | {res['nroi']}/{n} | {res['npanel']}/{n} |",
              flush=True)


def detection(n: int, cvs) -> None:
    print(f"\n### Real flashes (2 per curve) and destruction-refill: {n} curves per row, both models")
    print("| noise CV | source | flashes found | flash frames found | false flash frames | destructions found "
          "| destruction start exact (+-2 frames) | false destruction | recovered (flash / destr.) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cv in cvs:
        for panel in (True, False):
            rng = np.random.default_rng(37_000 + int(round(cv * 100)))
            found = events = ff = ftot = fp = 0
            dfound = dexact = dfalse = 0
            rec_f = rec_d = 0
            for i in range(n):
                model = MODELS[i % 2]
                c = simulate_curve(rng, model, noise_cv=cv, n_flashes=2)
                r = run(c, panel=panel)
                flags = r.flags["flash"]
                idx = np.flatnonzero(np.diff(np.r_[0, c.flash.astype(int), 0]))
                for a, b in zip(idx[::2], idx[1::2]):
                    events += 1
                    found += bool(flags[a:b].any())
                ff += int((flags & c.flash).sum())
                ftot += int(c.flash.sum())
                fp += int((flags & ~c.flash).sum())
                dfalse += bool(r.flags["destruction"].any())
                rec_f += recovered(r, c)
                d = simulate_curve(rng, model, noise_cv=cv, destruction=True)
                rd = run(d, panel=panel)
                start = int(np.argmax(d.destruction))
                if rd.flags["destruction"].any():
                    dfound += 1
                    dexact += abs(int(np.argmax(rd.flags["destruction"])) - start) <= 2
                rec_d += recovered(rd, d)
            src = "panel mean" if panel else "ROI only"
            print(f"| {cv:.0%} | {src} | {found}/{events} | {ff}/{ftot} | {fp} | {dfound}/{n} | {dexact}/{n} | "
                  f"{dfalse}/{n} | {rec_f}/{n} / {rec_d}/{n} |", flush=True)


def coverage(n: int, cvs) -> None:
    print(f"\n### 90 % interval coverage: {n} curves per row (successful fits), share of intervals "
          "containing the truth")
    print("| model | noise CV | fits | " + " | ".join(COVERED) + " | uncertain flags (TTP/PE/mTT) |")
    print("|---|---|---|" + "---|" * len(COVERED) + "---|")
    for model in MODELS:
        for cv in cvs:
            rng = np.random.default_rng(47_000 + int(round(cv * 100)) + (500 if model == "gamma" else 0))
            hits = dict.fromkeys(COVERED, 0)
            tot = dict.fromkeys(COVERED, 0)
            fits = unc = 0
            for _ in range(n):
                c = simulate_curve(rng, model, noise_cv=cv)
                r = run(c, panel=True)
                if not r.success:
                    continue
                fits += 1
                unc += any(r.parameters[k].uncertain for k in ("TTP", "PE", "mTT"))
                for k in COVERED:
                    p, truth = r.parameters[k], c.truth[k].value
                    if np.isfinite(p.ci_low) and np.isfinite(truth):
                        tot[k] += 1
                        hits[k] += p.ci_low <= truth <= p.ci_high
            print(f"| {model} | {cv:.0%} | {fits}/{n} | "
                  + " | ".join(f"{hits[k] / max(tot[k], 1):.0%}" for k in COVERED) + f" | {unc} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=20, help="curves per row of the recovery and flag tables")
    ap.add_argument("--coverage-curves", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="5 curves per row, 20 for coverage (smoke run)")
    args = ap.parse_args()
    n, nc = (5, 20) if args.quick else (args.curves, args.coverage_curves)
    start = time.perf_counter()
    recovery_table(n, (0.10, 0.14, 0.30, 0.50))
    false_positives(n, (0.10, 0.30, 0.50))
    detection(n, (0.10, 0.30, 0.50))
    coverage(nc, (0.10, 0.30, 0.50))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
