"""Time `ceuspipe keyframes` against `ffmpeg -i clip -vf fps=1 -f null -` in the same run.

Target (issue 2): at most 1.1x ffmpeg's wall time on a 2-minute 800x450 clip, and peak
memory that does not grow with clip length (1-minute vs 4-minute clip).

    python benchmarks/bench_keyframes.py [--repeats 5] [--fps 15] [--quick]

Both sides are measured as whole processes (start-up included), alternating, and the
median of the repeats is reported; this machine is shared and noisy. The issue's
reference is ffmpeg with its default threads (cores + 1); ffmpeg with one thread per
core, as ceuspipe decodes, is printed too (ratio2), so the gain from the thread count
is not mistaken for anything else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import ceuspipe_cmd, make_phantom_clip, require_ffmpeg, run_measured  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fps", type=float, default=15.0, help="frame rate of the phantom clips")
    ap.add_argument("--work", type=Path, default=Path("bench_out"))
    ap.add_argument("--quick", action="store_true", help="shorter clips, 3 repeats (smoke run)")
    args = ap.parse_args()
    ffmpeg = require_ffmpeg()
    lengths = (20, 40, 80) if args.quick else (60, 120, 240)
    repeats = 3 if args.quick else args.repeats
    args.work.mkdir(parents=True, exist_ok=True)
    clips = {s: make_phantom_clip(args.work, s, args.fps) for s in lengths}

    print(f"clips: 800x450 H.264 phantom at {args.fps:g} fps; medians of {repeats} runs")
    threads = str(len(os.sched_getaffinity(0)))
    print(f"{'clip':>6} {'ffmpeg s':>9} {'ffmpeg -threads ' + threads + ' s':>19} {'ceuspipe s':>11} "
          f"{'ratio':>6} {'ratio2':>7} {'ffmpeg MiB':>11} {'ceuspipe MiB':>13}")
    peaks = {}
    for seconds, clip in clips.items():
        ff_t, ft_t, cp_t, ff_m, cp_m = [], [], [], [], []
        for _ in range(repeats):
            out = Path(tempfile.mkdtemp(dir=args.work))
            w, m = run_measured([ffmpeg, "-nostdin", "-v", "error", "-i", str(clip),
                                 "-vf", "fps=1", "-f", "null", "-"])
            ff_t.append(w)
            ff_m.append(m)
            w, _ = run_measured([ffmpeg, "-nostdin", "-v", "error", "-threads", threads, "-i", str(clip),
                                 "-vf", "fps=1", "-f", "null", "-"])
            ft_t.append(w)
            w, m = run_measured(ceuspipe_cmd() + ["-q", "keyframes", str(clip), str(out)])
            cp_t.append(w)
            cp_m.append(m)
            shutil.rmtree(out, ignore_errors=True)
        ff, ft, cp = statistics.median(ff_t), statistics.median(ft_t), statistics.median(cp_t)
        peaks[seconds] = max(cp_m)
        print(f"{seconds:>5}s {ff:>9.2f} {ft:>19.2f} {cp:>11.2f} {cp / ff:>6.2f} {cp / ft:>7.2f} "
              f"{max(ff_m):>11.0f} {max(cp_m):>13.0f}")
    short, long_ = lengths[0], lengths[-1]
    print(f"peak memory {long_}s / {short}s clip: {peaks[long_] / peaks[short]:.2f}x "
          f"(clip is {long_ / short:.0f}x longer)")


if __name__ == "__main__":
    main()
