"""Perfusion maps (issue 26): the block accumulator per frame, and the batched fit against
per-curve loops, on one synthetic clip.

    python benchmarks/bench_maps.py [--side 360] [--fps 10] [--duration-s 90] [--block-px 2]
                                    [--subsample 300] [--quick]

The clip: a ``side`` x ``side`` CEUS panel (uint8 grey, 60 dB) of two regions of known
lognormal boluses (:func:`ceuspipe.maps.simulate.two_region_phantom`: a lesion disc in
parenchyma), independent speckle of CV 1 per pixel, a 4 px breathing shift per frame that the
accumulator moves back. Frames are made one at a time; only ``BlockAccumulator.add`` is timed.
The accumulator bins to 0.5 s, so the fit sees ``2 * duration`` points per block.

Fits of the same block curves, in one run:

* ``batched``       :func:`ceuspipe.tic.batch_fit.fit_curves`, the default noise-weighted Huber fit
                    (one thread; then on every usable CPU, ``workers``)
* ``batched LS``    the same with ``noise="additive", robust=False`` (plain least squares)
* ``curve_fit``     a per-curve ``scipy.optimize.curve_fit`` loop of the lognormal, start from the
                    curve's smoothed maximum, unbounded (Levenberg-Marquardt, MINPACK)
* ``curve_fit box`` the same with bounds (trust region reflective), as per-window CEUS tools do
* ``fit_curve``     a per-curve loop of ceuspipe's own :func:`ceuspipe.tic.fit.fit_curve` (the fit
                    the batched one reproduces)

The loops run on a random subsample and are extrapolated to every curve. Agreement: the share
of subsampled curves where both fits converge and PE, TTP and mTT agree within 2 %. Fixed seeds.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ceuspipe.cpus import usable_cpus  # noqa: E402
from ceuspipe.maps import BlockAccumulator, compute_maps  # noqa: E402
from ceuspipe.maps.simulate import two_region_phantom  # noqa: E402
from ceuspipe.tic.batch_fit import fit_curves  # noqa: E402
from ceuspipe.tic.fit import fit_curve  # noqa: E402
from ceuspipe.tic.models import get_model, lognormal  # noqa: E402
from ceuspipe.tic.parameters import perfusion_parameters  # noqa: E402

KEY = ("PE", "TTP", "mTT")


def accumulate(args):
    ph = two_region_phantom((args.side, args.side), fps=args.fps, duration_s=args.duration_s, shift_px=4.0)
    rng = np.random.default_rng(0)
    acc = BlockAccumulator((args.side, args.side), block_px=args.block_px, bin_s=0.5)
    spent = 0.0
    tracemalloc.start()
    for i in range(len(ph)):
        frame = ph.frame(i, rng)
        dx, dy = ph.shifts[i]
        start = time.perf_counter()
        acc.add(ph.times_s[i], frame, dx=dx, dy=dy)
        spent += time.perf_counter() - start
        del frame
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # one static frame set, for the cost without motion
    static = BlockAccumulator((args.side, args.side), block_px=args.block_px, bin_s=0.5)
    frame = ph.frame(0, rng)
    start = time.perf_counter()
    for i in range(100):
        static.add(i / args.fps, frame)
    per_static = (time.perf_counter() - start) / 100
    return ph, acc, spent / len(ph), per_static, peak


def p0_of(t, y):
    """Lognormal start values from the curve: smoothed maximum, its time and the arrival."""
    k = np.convolve(y, np.ones(5) / 5, mode="same")
    i = int(np.argmax(k))
    O = float(np.min(k[: i + 1]))
    P = max(float(k[i] - O), 1e-6)
    below = np.nonzero(k[: i + 1] <= O + 0.1 * P)[0]
    ta = float(t[below[-1]]) if below.size else float(t[0])
    return get_model("lognormal").from_peak(ta, O, P, max(float(t[i]) - ta, 1.0), 0.5)


def curve_fit_loop(t, Y, bounded: bool):
    from scipy.optimize import curve_fit

    out = {k: np.full(len(Y), np.nan) for k in KEY}
    span = float(t[-1] - t[0])
    lo = [t[0] - span, -np.inf, 0.0, -10.0, 0.05]
    hi = [t[-1], np.inf, np.inf, 10.0, 2.5]
    start = time.perf_counter()
    for i, y in enumerate(Y):
        y = y.astype(np.float64)
        p0 = np.clip(p0_of(t, y), np.array(lo) + 1e-9, np.array(hi) - 1e-9) if bounded else p0_of(t, y)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if bounded:
                    p, _ = curve_fit(lognormal, t, y, p0=p0, bounds=(lo, hi), max_nfev=2000)
                else:
                    p, _ = curve_fit(lognormal, t, y, p0=p0, maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        params = dict(zip(get_model("lognormal").param_names, p))
        par = perfusion_parameters("lognormal", params, t_first=float(t[0]), t_last=float(t[-1]))
        for k in KEY:
            out[k][i] = par[k].value
    return out, time.perf_counter() - start


def fit_curve_loop(t, Y):
    out = {k: np.full(len(Y), np.nan) for k in KEY}
    start = time.perf_counter()
    for i, y in enumerate(Y):
        r = fit_curve(t, y.astype(np.float64))
        if r.success:
            par = perfusion_parameters("lognormal", r.params, t_first=float(t[0]), t_last=float(t[-1]))
            for k in KEY:
                out[k][i] = par[k].value
    return out, time.perf_counter() - start


def agreement(a: dict, b: dict) -> tuple[float, int]:
    both = np.isfinite(a["PE"]) & np.isfinite(b["PE"])
    ok = both.copy()
    for k in KEY:
        with np.errstate(invalid="ignore", divide="ignore"):
            ok &= np.abs(a[k] / b[k] - 1) <= 0.02
    return float(ok.sum() / max(both.sum(), 1)), int(both.sum())


def timed_fit(t, Y, **kw):
    tracemalloc.start()
    start = time.perf_counter()
    fit = fit_curves(t, Y, **kw)
    wall = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return fit, wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=360)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--duration-s", type=float, default=90.0)
    ap.add_argument("--block-px", type=int, default=2)
    ap.add_argument("--subsample", type=int, default=300)
    ap.add_argument("--fit-curve-subsample", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="120x120 panel, 100 curves in the loops")
    args = ap.parse_args()
    if args.quick:
        args.side, args.subsample, args.fit_curve_subsample = 120, 100, 30
    MiB = 2 ** 20

    ph, acc, per_frame, per_static, acc_peak = accumulate(args)
    t, Y = acc.curves()
    n = Y.shape[0]
    print(f"### Perfusion maps: {args.side}x{args.side} panel, {len(ph)} frames ({args.fps:g} fps, "
          f"{args.duration_s:g} s), {args.block_px}x{args.block_px} px blocks: {n} curves of {t.size} bins (0.5 s)")
    print("\n| accumulator | value |\n|---|---|")
    print(f"| ms/frame, moved back (4 px breathing) | {per_frame * 1e3:.2f} |")
    print(f"| ms/frame, no motion | {per_static * 1e3:.2f} |")
    print(f"| curves held (MiB) | {acc.nbytes / MiB:.1f} |")
    print(f"| peak traced memory while accumulating (MiB) | {acc_peak / MiB:.1f} |")
    print(f"| one frame at full resolution, float32 (MiB) | {args.side ** 2 * 4 / MiB:.2f} |")

    fit_curves(t, Y[:200])  # warm-up: imports and first-call costs out of the timings
    fit, wall, fit_peak = timed_fit(t, Y)
    ls, wall_ls, _ = timed_fit(t, Y, noise="additive", robust=False)
    cpus = usable_cpus()
    _, wall_threads, _ = timed_fit(t, Y, workers=cpus)
    start = time.perf_counter()
    maps = compute_maps(acc)
    wall_maps = time.perf_counter() - start

    rng = np.random.default_rng(1)
    sub = np.sort(rng.choice(n, size=min(args.subsample, n), replace=False))
    sub_fc = sub[: args.fit_curve_subsample]
    cf, wall_cf = curve_fit_loop(t, Y[sub], bounded=False)
    cfb, wall_cfb = curve_fit_loop(t, Y[sub], bounded=True)
    fc, wall_fc = fit_curve_loop(t, Y[sub_fc])
    sel = lambda f, idx: {k: f.parameters[k][idx] for k in KEY}  # noqa: E731

    rate = n / wall
    print(f"\n| fit of {n} curves | curves/s | time for all (s) | ratio batched / this | agree with batched "
          f"(2 %, both converged) | agree with batched LS |")
    print("|---|---|---|---|---|---|")
    print(f"| batched (weighted, Huber) | {rate:.0f} | {wall:.1f} | 1 | - | - |")
    print(f"| batched, {cpus} threads | {n / wall_threads:.0f} | {wall_threads:.1f} | {wall_threads / wall:.2f} | - | - |")
    print(f"| batched LS | {n / wall_ls:.0f} | {wall_ls:.1f} | {wall_ls / wall:.2f} | - | - |")
    for name, res, w, idx in (("curve_fit", cf, wall_cf, sub), ("curve_fit box", cfb, wall_cfb, sub),
                              ("fit_curve", fc, wall_fc, sub_fc)):
        per = w / len(idx)
        a_w, n_w = agreement(sel(fit, idx), res)
        a_l, n_l = agreement(sel(ls, idx), res)
        print(f"| {name} ({len(idx)} curves, extrapolated) | {1 / per:.0f} | {per * n:.0f} | {per * n / wall:.0f}x | "
              f"{a_w:.0%} of {n_w} | {a_l:.0%} of {n_l} |")
    print(f"\nbatched fit: peak traced memory {fit_peak / MiB:.0f} MiB for input {Y.nbytes / MiB:.0f} MiB; "
          f"converged {fit.converged.mean():.1%}, succeeded {fit.success.mean():.1%}; compute_maps (fit + model-free "
          f"maps) {wall_maps:.1f} s; peak RSS of the run {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

    b = args.block_px
    ny, nx = maps.grid_shape
    lab = ph.labels[b // 2::b, b // 2::b][:ny, :nx]
    from scipy import ndimage

    print("\n| region | parameter | truth | map median | median error | blocks within 10 % |")
    print("|---|---|---|---|---|---|")
    for region, label in ((1, "lesion"), (0, "parenchyma")):
        core = ndimage.binary_erosion(lab == region, iterations=4) & maps.imaged
        for k in KEY:
            v, truth = maps.maps[k][core], ph.truth[region][k].value
            print(f"| {label} | {k} | {truth:.4g} | {np.nanmedian(v):.4g} | {np.nanmedian(np.abs(v / truth - 1)):.1%} | "
                  f"{np.mean(np.abs(v / truth - 1) <= 0.1):.1%} |")
    if not math.isfinite(rate):
        sys.exit(1)


if __name__ == "__main__":
    main()
