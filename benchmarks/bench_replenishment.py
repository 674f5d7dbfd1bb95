"""Destruction-replenishment (issue 26, part 3): A, beta and A*beta recovered on the synthetic
protocol, and the batched refill fit against per-curve loops.

    python benchmarks/bench_replenishment.py [--seeds 200] [--curves 20000] [--subsample 300] [--quick]

Recovery: for each seed, a 60 s curve at 10 fps (:func:`ceuspipe.tic.simulate.simulate_replenishment`):
an infusion arriving at 3 s, two destructive flashes of 0.2 s at 20 s and 40 s (flash frames
bright), each refill ``A(1 - exp(-beta t))`` from the first frame after the flash over a floor
of 0.002, A drawn in 0.05-0.2 and beta in
0.15-1.0/s (the phantom's range), multiplicative speckle-like noise of CV 14 % and 30 % per
frame (:func:`ceuspipe.tic.simulate.gamma_noise`; the whole panel's mean grey with a tenth of
it, for the flash flags). Each curve goes through :func:`ceuspipe.tic.analyse.analyse_curve`
(flags, destruction per flash, refill fits) as segment-video's curves do; "missed" counts
flashes whose refill was not found. Reported per parameter: the median and 90th percentile of
``|fit / truth - 1|`` over every refill, the share of refills whose 90 % interval holds the
truth, and the share that failed.

Speed: ``--curves`` refills of one window (15 s at 10 fps, the same draw at 14 % noise) fitted
by :func:`ceuspipe.tic.replenishment.fit_refills` (float32, one thread), by a loop of the
per-curve :func:`~ceuspipe.tic.replenishment.fit_refill` and by a loop of
``scipy.optimize.curve_fit`` (unweighted, from the truth-free start ``(min, range, 1/span)``),
the loops on a random subsample extrapolated to all. Agreement: where both succeed, the share
of curves whose beta agrees with the batched fit within 5 % (``fit_refill`` is the same
estimator; ``curve_fit`` is unweighted least squares, so it agrees only within noise). Fixed
seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ceuspipe.tic.analyse import analyse_curve  # noqa: E402
from ceuspipe.tic.replenishment import fit_refill, fit_refills  # noqa: E402
from ceuspipe.tic.simulate import gamma_noise, simulate_replenishment  # noqa: E402

FPS = 10.0
FLASHES = (20.0, 40.0)
NAMES = ("A", "beta", "A_beta")
QUICK = {"seeds": 30, "curves": 2000, "subsample": 100}


def recovery(seeds: int, cv: float) -> dict:
    err = {k: [] for k in NAMES}
    cover = {k: [] for k in NAMES}
    failed = refills = missed = 0
    for seed in range(seeds):
        rng = np.random.default_rng([seed, int(cv * 100)])
        A, beta = float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.15, 1.0))
        t, y, panel, _ = simulate_replenishment(rng, A, beta, flashes_s=FLASHES, noise_cv=cv, fps=FPS)
        res = analyse_curve(t, y, panel_means=panel)
        missed += len(FLASHES) - len(res.replenishment)
        for r in res.replenishment:
            refills += 1
            if not r.success:
                failed += 1
                continue
            for k, true in (("A", A), ("beta", beta), ("A_beta", A * beta)):
                p = r.parameters[k]
                err[k].append(abs(p.value / true - 1))
                cover[k].append(p.ci_low <= true <= p.ci_high)
    return {"err": {k: np.array(v) for k, v in err.items()}, "cover": {k: float(np.mean(v)) for k, v in cover.items()},
            "failed": failed, "refills": refills, "missed": missed}


def curve_fit_loop(t, Y):
    from scipy.optimize import curve_fit

    def model(tt, y0, A, b):
        return y0 + A * (1 - np.exp(-b * tt))

    out = np.full(Y.shape[0], np.nan)
    for i, y in enumerate(Y):
        p0 = (float(y[:3].mean()), float(np.ptp(y)), 1.0 / float(t[-1]))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[i] = curve_fit(model, t, y, p0=p0, maxfev=2000)[0][2]
        except RuntimeError:
            pass
    return out


def speed(n: int, subsample: int) -> list[tuple]:
    rng = np.random.default_rng(1)
    t = np.arange(150) / FPS
    A = rng.uniform(0.05, 0.2, n)[:, None]
    beta = rng.uniform(0.15, 1.0, n)[:, None]
    Y = ((0.002 + A * (1 - np.exp(-beta * t))) * gamma_noise(rng, 0.14, (n, t.size))).astype(np.float32)
    t0 = time.perf_counter()
    batch = fit_refills(t, Y)
    wall = time.perf_counter() - t0
    sub = rng.choice(n, size=min(subsample, n), replace=False)
    t0 = time.perf_counter()
    loop = [fit_refill(t, Y[i]) for i in sub]
    wall_loop = (time.perf_counter() - t0) * n / sub.size
    t0 = time.perf_counter()
    cf = curve_fit_loop(t, Y[sub].astype(np.float64))
    wall_cf = (time.perf_counter() - t0) * n / sub.size
    b_sub = batch.params["beta"][sub]
    ok = batch.success[sub]
    agree_loop = np.mean([abs(r.value("beta") / b - 1) < 0.05 for r, b, s in zip(loop, b_sub, ok) if s and r.success])
    both = ok & np.isfinite(cf)
    agree_cf = float(np.mean(np.abs(cf[both] / b_sub[both] - 1) < 0.05))
    return [("batched (fit_refills, float32)", n / wall, wall, 1.0, "-", f"{batch.success.mean():.3f}"),
            ("loop of fit_refill", n / wall_loop, wall_loop, wall_loop / wall, f"{agree_loop:.3f}",
             f"{np.mean([r.success for r in loop]):.3f}"),
            ("loop of scipy curve_fit", n / wall_cf, wall_cf, wall_cf / wall, f"{agree_cf:.3f}",
             f"{np.mean(np.isfinite(cf)):.3f}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--curves", type=int, default=20000)
    ap.add_argument("--subsample", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="30 seeds, 2000 curves, 100 in the loops")
    args = ap.parse_args()
    vars(args).update(QUICK if args.quick else {})
    print(f"### Replenishment recovery: {args.seeds} seeds x {len(FLASHES)} refills, {FPS:g} fps, "
          "A 0.05-0.2, beta 0.15-1.0/s")
    print("\n| noise CV | parameter | median error | 90th pct error | 90 % interval coverage | failed | missed |")
    print("|---|---|---|---|---|---|---|")
    for cv in (0.14, 0.30):
        r = recovery(args.seeds, cv)
        for k in NAMES:
            e = r["err"][k]
            print(f"| {cv:.0%} | {k} | {np.median(e):.1%} | {np.percentile(e, 90):.1%} | {r['cover'][k]:.1%} "
                  f"| {r['failed']}/{r['refills']} | {r['missed']} |")
    print(f"\n### Speed: {args.curves} refills of 150 points (loops on {args.subsample}, extrapolated)")
    print("\n| fit | curves/s | time for all (s) | time / batched | beta within 5 % of batched | success |")
    print("|---|---|---|---|---|---|")
    for name, rate, wall, ratio, agree, succ in speed(args.curves, args.subsample):
        print(f"| {name} | {rate:.0f} | {wall:.2f} | {ratio:.1f} | {agree} | {succ} |")


if __name__ == "__main__":
    main()
