"""Motion compensation (ceuspipe.motion) on phantom clips against their true offsets.

For 800x450 H.264 phantom clips (360 px panels on the default screen) with normal and large (3x)
breathing, with and without out-of-plane episodes, prints: the RMS displacement
(px) left uncompensated and the RMS error of the estimate (both over in-plane
frames, in the first frame's coordinates); the same error for OpenCV's
``cv2.phaseCorrelate`` (Hann window, the first frame as reference, the same
downsampled images), the reference measured in the same run; out-of-plane frames
flagged against the truth (precision, recall); and ms per frame, the median of the
repeats over frames already decoded and cropped (decoding is not counted).

    python benchmarks/bench_motion.py [--seconds 60] [--fps 12] [--repeats 3] [--skin NAME] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))  # this checkout's ceuspipe

from ceuspipe.motion import MotionEstimator  # noqa: E402
from ceuspipe.motion.prepare import downsample, work_shape  # noqa: E402
from ceuspipe.synth.config import PhantomConfig  # noqa: E402
from ceuspipe.synth.generate import generate_exam  # noqa: E402
from ceuspipe.synth.truth import truth_frame_motion  # noqa: E402
from ceuspipe.video.reader import iter_frames  # noqa: E402


def load() -> str:
    """The machine's 1, 5 and 15 minute load averages (this machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bmode_panels(clip: Path, truth: dict) -> list[tuple[int, float, np.ndarray]]:
    """Decoded ``(index, time_s, us_gray)`` of every frame (held for repeated timing)."""
    ub = truth["layout"]["us"]
    box = (slice(ub["y"], ub["y"] + ub["h"]), slice(ub["x"], ub["x"] + ub["w"]), 0)
    return [(f.index, f.time_s, np.ascontiguousarray(f.image[box])) for f in iter_frames(clip)]


def run_ceuspipe(frames) -> tuple[np.ndarray, np.ndarray, float]:
    """``(displacements (n, 2) px, used (n,) bool, seconds)`` of one pass."""
    est = MotionEstimator()
    t0 = time.perf_counter()
    motions = [est.add(i, t, g) for i, t, g in frames]
    wall = time.perf_counter() - t0
    return (np.array([(m.dx_px, m.dy_px) for m in motions]), np.array([m.used for m in motions]), wall)


def run_opencv(frames) -> tuple[np.ndarray, float]:
    """``cv2.phaseCorrelate`` against the first frame on the same working images."""
    shape = work_shape(frames[0][2].shape)
    sx, sy = frames[0][2].shape[1] / shape[1], frames[0][2].shape[0] / shape[0]
    window = cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_32F)
    t0 = time.perf_counter()
    ref = downsample(frames[0][2], shape)
    out = []
    for _, _, g in frames:
        (dx, dy), _ = cv2.phaseCorrelate(ref, downsample(g, shape), window)
        out.append((dx * sx, dy * sy))
    return np.array(out), time.perf_counter() - t0


def fmt(x: float, width: int) -> str:
    """``x`` to 2 decimals right-aligned in ``width``, ``-`` for NaN."""
    return f"{'-' if math.isnan(x) else f'{x:.2f}':>{width}}"


def rms(v: np.ndarray) -> float:
    return math.sqrt(float(np.mean((v ** 2).sum(axis=1)))) if len(v) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=12.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skin", default="default", help="phantom screen skin (e.g. sector, logiq)")
    ap.add_argument("--quick", action="store_true", help="15 s clips, 1 repeat (smoke run)")
    args = ap.parse_args()
    seconds = 15.0 if args.quick else args.seconds
    repeats = 1 if args.quick else args.repeats
    episodes = max(1, int(seconds // 20))
    print(f"clips: 800x450 H.264 phantom ({args.skin}), {seconds:g} s at {args.fps:g} fps, seed {args.seed}; "
          f"out-of-plane: {episodes} episode(s) of 0.5 s; ms/frame: median of {repeats} run(s), one core; "
          f"load average {load()}")
    print(f"{'clip':<18} {'frames':>6} {'uncomp':>7} {'ceuspipe':>9} {'cv2.pc':>7} {'/cv2':>6} "
          f"{'oop':>4} {'found':>5} {'prec':>5} {'recall':>6} {'ms':>6} {'cv2 ms':>7} {'/cv2':>6}")
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for breathing in ("normal", "large"):
            for n_oop in (0, episodes):
                cfg = PhantomConfig(duration_s=seconds, fps=args.fps, breathing=breathing, skin=args.skin,
                                    out_of_plane_episodes=n_oop, out_of_plane_s=0.5)
                clip = Path(tmp) / f"{breathing}{n_oop}" / "exam1.mp4"
                truth = generate_exam(clip, None, cfg, seed=args.seed)
                frames = bmode_panels(clip, truth)
                dx, dy, away = truth_frame_motion(truth)
                true = np.stack([dx - dx[0], dy - dy[0]], axis=1)
                walls, cv_walls = [], []
                for _ in range(repeats):
                    est, used, wall = run_ceuspipe(frames)
                    cv_est, cv_wall = run_opencv(frames)
                    walls.append(wall)
                    cv_walls.append(cv_wall)
                n = len(frames)
                ok = ~away
                err, cv_err = rms((est - true)[ok]), rms((cv_est - true)[ok])
                flagged = ~used
                found = int((flagged & away).sum())
                prec = found / flagged.sum() if flagged.sum() else float("nan")
                recall = found / away.sum() if away.sum() else float("nan")
                ms, cv_ms = 1e3 * statistics.median(walls) / n, 1e3 * statistics.median(cv_walls) / n
                label = f"{breathing}{' +oop' if n_oop else ''}"
                print(f"{label:<18} {n:>6} {rms(true[ok]):>7.2f} {err:>9.3f} {cv_err:>7.3f} {err / cv_err:>6.2f} "
                      f"{int(away.sum()):>4} {int(flagged.sum()):>5} {fmt(prec, 5)} {fmt(recall, 6)} {ms:>6.2f} "
                      f"{cv_ms:>7.2f} {ms / cv_ms:>6.2f}", flush=True)
    print(f"RMS in px over in-plane frames; 'found': frames flagged out of plane (precision, recall: '-' "
          f"where there is nothing to divide by); ceuspipe's ms include its score; load average {load()}")


if __name__ == "__main__":
    main()
