"""Measure what the repeated-frame threshold of ``segment-video`` must separate.

For phantom exams acquired at 10 Hz (default, dark-start and frozen B-mode
screens) it reports, on the model inputs (BT.601 grey, area-resized to S x S,
the two panels separately; the change of a pair is the larger of the two
panels' mean absolute differences, in grey levels 0..255):

* the smallest real frame-to-frame change between consecutive acquired frames
  (whole clip, and its last quarter = late wash-out);
* the codec noise between repeats of one frame after a lossy 30 fps
  re-encode (each decoded frame written 3 times with libx264 at the given CRF).

Usage: ``python benchmarks/measure_repeats.py [--size 64] [--duration 20] [--crf 23 28 35]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def _inputs(path, layout, size):
    from ceuspipe.preprocess import panel_to_input
    from ceuspipe.video.panels import crop
    from ceuspipe.video.reader import iter_frames

    out = []
    for f in iter_frames(path):
        out.append((f.image, panel_to_input(crop(f.image, layout.ceus), size),
                    panel_to_input(crop(f.image, layout.us), size)))
    return out


def _change(a, b) -> float:
    return 255.0 * max(float(np.abs(a[1] - b[1]).mean()), float(np.abs(a[2] - b[2]).mean()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--crf", type=int, nargs="+", default=[23, 28, 35])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--resolution", default="320x180")
    args = ap.parse_args(argv)

    from ceuspipe.synth import PhantomConfig, generate_exam
    from ceuspipe.video.panels import PanelLayout
    from ceuspipe.video.writer import VideoWriter

    w, h = map(int, args.resolution.split("x"))
    work = Path(tempfile.mkdtemp(prefix="measure_repeats."))
    for skin in ("default", "dark-start", "frozen-bmode"):
        for seed in args.seeds:
            clip = work / f"{skin}_{seed}.mp4"
            truth = generate_exam(clip, None, PhantomConfig(duration_s=args.duration, fps=10.0, width=w,
                                                            height=h, skin=skin), seed=seed)
            lay = PanelLayout.from_dict(truth["layout"])
            for size in args.size:
                src = _inputs(clip, lay, size)
                real = [_change(a, b) for a, b in zip(src, src[1:])]
                late = real[3 * len(real) // 4:]
                line = (f"{skin:>13} seed {seed} S={size:<3} real change: min {min(real):6.2f} "
                        f"(late wash-out min {min(late):6.2f}, median {np.median(late):6.2f})")
                for crf in args.crf:
                    cap = work / f"{skin}_{seed}_crf{crf}.mp4"
                    if not cap.exists():
                        with VideoWriter(cap, w, h, fps=30.0, codec="libx264", options={"crf": str(crf)}) as vw:
                            k = 0
                            for img, _, _ in src:
                                for _ in range(3):
                                    vw.write(img, k / 30.0)
                                    k += 1
                    rec = _inputs(cap, lay, size)
                    noise = [_change(rec[i], rec[i + j]) for i in range(0, len(rec) - 2, 3) for j in (1, 2)]
                    real2 = [_change(rec[i], rec[i + 3]) for i in range(0, len(rec) - 3, 3)]
                    line += f" | crf {crf}: noise max {max(noise):5.2f}, real min {min(real2):6.2f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
