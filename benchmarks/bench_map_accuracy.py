"""Perfusion map accuracy (issue 26): per truth region, the error of PE, TTP and mTT maps
against the region's true curve, with motion compensation on and off, at 14 % and 30 % noise.

    python benchmarks/bench_map_accuracy.py [--side 240] [--fps 10] [--duration-s 90] [--block-px 4]
                                            [--margin-px 4] [--noise 0.14 0.30] [--breathing 4 8 12 24] [--quick]

The clip: :func:`ceuspipe.maps.simulate.two_region_phantom`, a ``side`` x ``side`` CEUS panel
(uint8 grey, 60 dB) with a lesion disc (radius ``side / 4``) in parenchyma, each region of a
known lognormal bolus, and breathing: the tissue moves by ``A sin(2 pi t / 4.5 s)`` px in x and
half that in y. ``--breathing`` lists the amplitudes ``A``: 4 px is the rendered phantom's
``normal`` breathing (2-6 px), 12 px its ``large`` preset (3x), 24 px twice that (free breathing
moves the liver by 1-2 cm, tens of px, on real clips). The B-mode panel that the motion
is estimated from is a fixed speckle texture (Rayleigh amplitude, 1.2 px correlation, the lesion
30 % darker) moved by the same shifts, with new grey noise (SD 4) in every frame.

Noise, as in ``bench_tic_noise.py`` (each frame's ROI value is the true curve times a
multiplicative noise factor of mean 1 and coefficient of variation CV): here the curve is one
map block's mean and **CV is the per-frame noise of a block's mean curve**. Every panel pixel
gets independent gamma speckle of CV ``noise * block_px`` (drawn after the breathing shift, new
in every frame: contrast speckle decorrelates), so the mean of a block's ``block_px**2`` pixels
has CV ``noise`` (14 % or 30 %). ``CV meas.`` gives what the accumulator saw in the run (block
means divided by the true level, every 10th frame): ``off``, frames as they are, over the blocks
that never see the other region; ``moved back``, frames moved back by the true shifts, over all
of a region's blocks (the bilinear move back smooths the speckle a little: compensation lowers
the noise). Grey quantisation (0.24 dB steps) adds a little. The accumulator then averages each
0.5 s bin's frames (5 at 10 fps) before the fit, so the fitted points have about CV / sqrt(5).

Motion compensation, three ways on the same frames:

* ``off``        every frame added where it is (``dx = dy = 0``)
* ``estimated``  :class:`ceuspipe.motion.MotionEstimator` on the B-mode panel (its ``dx_px``,
                 ``dy_px`` and ``used``), what segment-video does
* ``true``       the phantom's own shifts (relative to the first frame): the floor

Truth regions, in the first frame's coordinates (the estimator's reference, and where a user
would draw): ``lesion interior`` = blocks whose whole footprint lies at least ``margin_px``
inside the lesion, ``parenchyma`` = blocks at least ``margin_px`` outside it. Each block is
compared with its region's true curve (PE, TTP, mTT of :attr:`RegionPhantom.truth`, the noise-free
bolus). Per region: ``fitted`` = share of the region's blocks whose fit succeeded; then the
median (and 90th percentile) over fitted blocks of ``|PE / PE_true - 1|``, ``|TTP - TTP_true|``
in s and ``|mTT / mTT_true - 1|``. The motion table gives, per breathing amplitude, the share of
each region's blocks that the uncompensated breathing carries (at some phase) over the other
region, which is what compensation can fix, and the RMS error of the estimated shifts.
Fixed seeds: reruns print the same numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ceuspipe.maps import BlockAccumulator, compute_maps  # noqa: E402
from ceuspipe.maps.simulate import two_region_phantom  # noqa: E402
from ceuspipe.motion import MotionEstimator  # noqa: E402
from ceuspipe.motion.warp import shift_image  # noqa: E402
from ceuspipe.tic.models import get_model  # noqa: E402
from ceuspipe.tic.simulate import gamma_noise  # noqa: E402

VARIANTS = ("off", "estimated", "true")
REGIONS = ((1, "lesion interior"), (0, "parenchyma"))
BIN_S = 0.5


def ceus_frame(ph, levels: np.ndarray, i: int, noise_px: float, rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` uint8 CEUS panel of frame ``i``: the regions' true power moved by the frame's
    shift, then independent gamma speckle of CV ``noise_px`` per pixel, log-compressed over the
    phantom's dynamic range. (``RegionPhantom.frame`` draws the speckle before the shift, and its
    bilinear shift then smooths the speckle by a varying amount; drawn after, a block's mean has
    the stated noise in every frame, as for tissue that carries its speckle with it.)"""
    clean = levels[i].astype(np.float32)[ph.labels]
    power = shift_image(clean, *ph.shifts[i], border="replicate") * gamma_noise(rng, noise_px, clean.shape)
    with np.errstate(divide="ignore"):
        g = 255.0 * (1.0 + 10.0 * np.log10(np.maximum(power, 1e-30)) / ph.dynamic_range_db)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def bmode_texture(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 B-mode amplitude: smoothed complex Gaussian speckle, lesion 30 % darker."""
    re = cv2.GaussianBlur(rng.standard_normal(labels.shape).astype(np.float32), (0, 0), 1.2)
    im = cv2.GaussianBlur(rng.standard_normal(labels.shape).astype(np.float32), (0, 0), 1.2)
    amp = np.hypot(re, im)
    amp /= float(np.mean(amp))
    return np.where(labels == 1, 0.7, 1.0).astype(np.float32) * amp


def bmode_frame(texture: np.ndarray, dx: float, dy: float, rng: np.random.Generator) -> np.ndarray:
    """``(H, W)`` uint8 B-mode panel: the texture moved by ``(dx, dy)`` px, log-compressed over
    50 dB, plus grey noise of SD 4."""
    amp = shift_image(texture, dx, dy, border="replicate")
    g = 255.0 * (1.0 + 20.0 * np.log10(np.maximum(amp, 1e-6) / 4.0) / 50.0)
    g += rng.normal(0.0, 4.0, g.shape)
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def block_fraction(a: np.ndarray, b: int, grid: tuple[int, int]) -> np.ndarray:
    """``(ny, nx)`` mean of ``a`` ``(H, W)`` over each ``b`` x ``b`` block of the grid at the origin."""
    ny, nx = grid
    return a[:ny * b, :nx * b].reshape(ny, b, nx, b).mean(axis=(1, 3))


def regions(labels: np.ndarray, shift0: np.ndarray, b: int, grid, margin: int) -> dict[int, np.ndarray]:
    """Region -> ``(ny, nx)`` bool, blocks at least ``margin`` px inside it in frame 0's coordinates."""
    lesion0 = shift_image(labels.astype(np.float32), *shift0, border="replicate") > 0.5
    k = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    out = {}
    for region in (1, 0):
        inside = (lesion0 if region == 1 else ~lesion0).astype(np.uint8)
        inner = cv2.erode(inside, k, borderType=cv2.BORDER_REPLICATE) if margin else inside
        out[region] = block_fraction(inner.astype(np.float32), b, grid) == 1.0
    return out


def carried_over(labels, shifts, b, grid, fps: float) -> np.ndarray:
    """``(ny, nx)``: the largest change, over one breathing period (4.5 s, every frame), of the
    lesion's share of each block that the breathing makes without compensation."""
    lab = labels.astype(np.float32)
    f0 = block_fraction(shift_image(lab, *shifts[0], border="replicate"), b, grid)
    worst = np.zeros_like(f0)
    for i in range(min(len(shifts), int(math.ceil(4.5 * fps)) + 1)):
        fi = block_fraction(shift_image(lab, *shifts[i], border="replicate"), b, grid)
        worst = np.maximum(worst, np.abs(fi - f0))
    return worst


def run_scenario(args, noise: float, amp: float, seed: int) -> dict:
    """Accumulate one clip three ways (``VARIANTS``), fit the maps, compare with the truth."""
    b = args.block_px
    side = args.side
    ph = two_region_phantom((side, side), fps=args.fps, duration_s=args.duration_s, shift_px=amp)
    rng = np.random.default_rng(seed)
    texture = bmode_texture(rng, ph.labels)
    rel = ph.shifts - ph.shifts[0]  # frame 0 is the estimator's reference
    accs = {v: BlockAccumulator((side, side), block_px=b, bin_s=BIN_S) for v in VARIANTS}
    grid = accs["off"].grid_shape
    blocks = regions(ph.labels, ph.shifts[0], b, grid, args.margin_px)
    bm = get_model(ph.model)
    levels = np.stack([bm(ph.times_s, p) for p in ph.params], axis=1)  # (F, 2) true power per region
    worst = carried_over(ph.labels, ph.shifts, b, grid, args.fps)
    still = {r_: m_ & (worst == 0) for r_, m_ in blocks.items()}  # never see the other region
    est = MotionEstimator()
    est_shift = np.zeros_like(rel)
    n_unused = 0
    ratios = {"off": [], "true": []}
    timing = {"phantom": 0.0, "motion": 0.0, "accumulate": 0.0}
    for i in range(len(ph)):
        t0 = time.perf_counter()
        frame = ceus_frame(ph, levels, i, noise * b, rng)
        us = bmode_frame(texture, *ph.shifts[i], rng)
        t1 = time.perf_counter()
        m = est.add(i, float(ph.times_s[i]), us)
        est_shift[i] = (m.dx_px, m.dy_px)
        n_unused += not m.used
        t2 = time.perf_counter()
        accs["off"].add(ph.times_s[i], frame)
        accs["estimated"].add(ph.times_s[i], frame, dx=m.dx_px, dy=m.dy_px, used=m.used)
        accs["true"].add(ph.times_s[i], frame, dx=rel[i, 0], dy=rel[i, 1])
        t3 = time.perf_counter()
        if i % args.noise_every == 0:  # measured per-frame noise of the block means
            for v, means, sel in (("off", accs["off"].block_means(frame), still),
                                  ("true", accs["true"].block_means(frame, *rel[i]), blocks)):
                for region, mask in sel.items():
                    ratios[v].append(means[mask] / levels[i, region])
        timing["phantom"] += t1 - t0
        timing["motion"] += t2 - t1
        timing["accumulate"] += t3 - t2
    t4 = time.perf_counter()
    maps = {v: compute_maps(acc, model=ph.model) for v, acc in accs.items()}
    timing["fit"] = time.perf_counter() - t4
    cv = {}
    for v, parts in ratios.items():
        r = np.concatenate(parts)
        r = r[np.isfinite(r)]
        cv[v] = float(np.std(r) / np.mean(r))
    err = est_shift - rel
    out = {"noise": noise, "amp": amp, "cv": cv, "timing": timing,
           "frames": len(ph), "unused": n_unused, "rms_est": float(np.sqrt(np.mean((err ** 2).sum(axis=1)))),
           "rms_uncomp": float(np.sqrt(np.mean((rel ** 2).sum(axis=1)))),
           "carried": {r_: float(np.mean(worst[m_] > 0.02)) for r_, m_ in blocks.items()}, "carried_pe": {},
           "blocks": {r_: int(m_.sum()) for r_, m_ in blocks.items()}, "rows": {}}
    for v, mp in maps.items():
        for region, name in REGIONS:
            mask = blocks[region]
            truth = ph.truth[region]
            ok = mask & mp.success & np.isfinite(mp.maps["PE"])
            pe = np.abs(mp.maps["PE"][ok] / truth["PE"].value - 1) * 100
            ttp = np.abs(mp.maps["TTP"][ok] - truth["TTP"].value)
            mtt = np.abs(mp.maps["mTT"][ok] / truth["mTT"].value - 1) * 100
            moved = (worst > 0.02)[ok]  # among the fitted blocks (ok lies within mask)
            out["carried_pe"][(v, region)] = pe[moved]
            out["rows"][(v, region)] = {"fitted": float(ok.sum() / max(mask.sum(), 1)), "pe": pe, "ttp": ttp,
                                        "mtt": mtt}
    return out


def q(a: np.ndarray, p: float) -> float:
    a = a[np.isfinite(a)]
    return float(np.percentile(a, p)) if a.size else float("nan")


def cell(a: np.ndarray, unit: str, digits: int = 1) -> str:
    """``median (90th percentile)``; ``-`` for no values."""
    if not np.isfinite(a).any():
        return "-"
    return f"{q(a, 50):.{digits}f}{unit} ({q(a, 90):.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=240, help="CEUS panel side (px)")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--duration-s", type=float, default=90.0)
    ap.add_argument("--block-px", type=int, default=4, help="map block side (px; segment-video's default)")
    ap.add_argument("--margin-px", type=int, default=4, help="how far inside its region a block must lie (px)")
    ap.add_argument("--noise", type=float, nargs="+", default=[0.14, 0.30],
                    help="per-frame noise CV of a block's mean curve")
    ap.add_argument("--breathing", type=float, nargs="+", default=[4.0, 8.0, 12.0, 24.0],
                    help="breathing amplitudes in x (px; y is half): 4 the phantom's normal, 12 its large preset")
    ap.add_argument("--noise-every", type=int, default=10, help="measure the noise CV on every n-th frame")
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--quick", action="store_true", help="120 px panel, 60 s at 5 fps (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.side, args.fps, args.duration_s = 120, 5.0, 60.0
    start = time.perf_counter()
    print(f"### Perfusion map accuracy: {args.side}x{args.side} panel, lesion radius {args.side // 4} px, "
          f"{args.duration_s:g} s at {args.fps:g} fps, {args.block_px}x{args.block_px} px blocks, 0.5 s bins, "
          f"regions {args.margin_px} px inside; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    results = []
    for noise in args.noise:
        for amp in args.breathing:
            seed = args.seed * 1000 + int(round(noise * 100)) * 10 + int(round(amp))
            results.append(run_scenario(args, noise, amp, seed))
            tm = results[-1]["timing"]
            print(f"  (noise {noise:.0%}, breathing {amp:g} px: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in tm.items()) + ")", file=sys.stderr, flush=True)

    print("\nMedian absolute error over a region's fitted blocks (90th percentile in brackets); "
          "PE and mTT in % of the truth, TTP in s.\n")
    print("| noise CV | CV meas. (off / moved back) | breathing | compensation | region | blocks | fitted "
          "| PE % | TTP s | mTT % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for v in VARIANTS:
            for region, name in REGIONS:
                row = res["rows"][(v, region)]
                cv = f"{res['cv']['off']:.1%} / {res['cv']['true']:.1%}"
                print(f"| {res['noise']:.0%} | {cv} | {res['amp']:g} px | {v} | {name} | {res['blocks'][region]} | "
                      f"{row['fitted']:.0%} | {cell(row['pe'], '')} | {cell(row['ttp'], '', 2)} | "
                      f"{cell(row['mtt'], '')} |")

    print("\n| noise CV | breathing (x, y amplitude) | RMS shift, uncompensated (px) | RMS error, estimated (px) "
          "| frames not used | lesion blocks carried over | parenchyma blocks carried over "
          "| their PE %, lesion (off / estimated) | their PE %, parenchyma (off / estimated) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        c = res["carried"]
        print(f"| {res['noise']:.0%} | {res['amp']:g}, {res['amp'] / 2:g} px | {res['rms_uncomp']:.2f} | "
              f"{res['rms_est']:.3f} | {res['unused']}/{res['frames']} | {c[1]:.0%} | {c[0]:.0%} | "
              + " | ".join(f"{cell(res['carried_pe'][('off', r)], '')} / "
                           f"{cell(res['carried_pe'][('estimated', r)], '')}" for r in (1, 0)) + " |")
    print(f"\n'carried over': share of the region's blocks that, uncompensated, hold more than 2 % of the other "
          f"region at some breathing phase; 'their PE %': median (90th percentile) PE error of those blocks "
          f"alone. Total {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
