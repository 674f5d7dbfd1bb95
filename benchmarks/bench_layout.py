"""Time ``detect_layout`` on 60 one-per-second samples of an 800x600 phantom screen.

The key-frame stage calls it once per clip on up to ~64 samples, so it must stay
small next to decoding (target: about 0.2 s or less on a 2-core CPU).
Run: ``python benchmarks/bench_layout.py [--skin NAME] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ceuspipe.synth.config import PhantomConfig
from ceuspipe.synth.generate import generate_exam
from ceuspipe.video.layout import detect_layout


def sample_clip(path, span_s=60.0):
    """The 1 fps samples (frames, times) of the first ``span_s`` seconds that detection sees."""
    from ceuspipe.video.clip_stream import read_layout_frames
    from ceuspipe.video.layout import LayoutOptions

    frames, times, _ = read_layout_frames(path, LayoutOptions(layout_window_s=span_s))
    return frames, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skin", default="default")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PhantomConfig(duration_s=60, fps=2, width=800, height=600, skin=args.skin, ceus_side="right")
        clip = Path(tmp) / "x.mp4"
        generate_exam(clip, None, cfg, seed=1)
        frames, times = sample_clip(clip)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            layout = detect_layout(frames, times_s=times)
            best = min(best, time.perf_counter() - t0)
        print(f"detect_layout: {len(frames)} frames of 800x600 ({args.skin}): best of {args.repeat} "
              f"{best:.3f} s; CEUS {layout.ceus_side}, confidence {layout.confidence}")


if __name__ == "__main__":
    main()
