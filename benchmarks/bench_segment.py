"""Speed and memory of ``segment-video`` against eager PyTorch on the same model.

Generates phantom clips (800x450, 12 fps; 20 s and 80 s, or 4 s and 12 s with
``--quick``), a randomly initialised CEUSegNet checkpoint of the chosen width
(1 = paper size, 128x128 input), exports it to ONNX once (the cache that
``segment-video`` uses), then measures, each in a fresh subprocess:

* ``segment-video`` end to end (engine auto: ONNX Runtime on CPU) on each clip:
  frames/s over the streaming part and over the whole call, and peak RSS;
* eager PyTorch, batch 1, fp32, inference only (no decoding or writing) on
  real panels of the short clip: frames/s;
* ONNX Runtime alone, inference only, batch 1 (per-frame deployment, the issue's
  reference) and batch 8 (the inference ceiling): frames/s.

The checkpoint is randomly initialised (no trained paper-size model can be made on a
CPU here); its masks are all lesion, so drawing and encoding costs match a real run's
to within the overlay's contour drawing (about 0.3 ms/frame for a lesion-sized mask).

Prints one table and the ratios. Usage::

    python benchmarks/bench_segment.py [--quick] [--width 1] [--frames-eager 40] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SEGMENT = r"""
import json, resource, sys, time
from ceuspipe.segment import SegmentConfig, segment_video
clip, ckpt, out, cache = sys.argv[1:5]
t = time.perf_counter()
r = segment_video(clip, ckpt, out, SegmentConfig(cache_dir=cache, batch_size=8))
wall = time.perf_counter() - t
print(json.dumps({"frames": r.frames, "stream_fps": r.fps, "wall_fps": r.frames / wall, "wall_s": wall,
                  "engine": r.engine, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_INFER = r"""
import json, resource, sys, time
import numpy as np, torch
from ceuspipe.segment.predictor import load_spec, make_predictor, prepare_panel, TorchPredictor
from ceuspipe.video.layout import resolve_layout
from ceuspipe.video.panels import crop
from ceuspipe.video.reader import iter_frames
clip, ckpt, cache, n, mode = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
frames = []
for f in iter_frames(clip):
    frames.append(f.image)
    if len(frames) >= n:
        break
layout = resolve_layout(frames[:8], source=clip)
spec = load_spec(ckpt, "cpu")
S = spec.size
c = np.stack([prepare_panel(crop(im, layout.ceus), S) for im in frames])
u = np.stack([prepare_panel(crop(im, layout.us), S) for im in frames])
if mode == "torch":
    pred, bs = TorchPredictor(spec, "cpu"), 1
else:
    pred = make_predictor(spec, engine="onnx", device="cpu", cache_dir=cache)
    bs = 1 if mode == "onnx1" else 8
pred(c[:bs], u[:bs])  # warm-up
t = time.perf_counter()
for i in range(0, len(c), bs):
    pred(c[i:i + bs], u[i:i + bs])
dt = time.perf_counter() - t
print(json.dumps({"fps": len(c) / dt, "threads": torch.get_num_threads(),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"benchmark step failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 s and 12 s clips instead of 20 s and 80 s")
    ap.add_argument("--width", type=float, default=1.0, help="model width multiplier (1 = paper size)")
    ap.add_argument("--frames-eager", type=int, default=40, help="frames for the inference-only runs")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args(argv)

    import torch

    from ceuspipe.model import build_model
    from ceuspipe.segment.onnx_export import cached_onnx
    from ceuspipe.segment.predictor import load_spec
    from ceuspipe.synth import PhantomConfig, generate_exam
    from ceuspipe.train.checkpoint import save_checkpoint

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_segment."))
    work.mkdir(parents=True, exist_ok=True)
    durations = (4.0, 12.0) if args.quick else (20.0, 80.0)
    clips = []
    for i, d in enumerate(durations):
        clip = work / f"clip_{int(d)}s.mp4"
        if not clip.exists():
            generate_exam(clip, None, PhantomConfig(duration_s=d, fps=12.0, width=800, height=450), seed=i + 1)
        clips.append(clip)
    ckpt = work / f"model_w{args.width:g}.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        model = build_model("full", args.width)
        save_checkpoint(ckpt, {"config": {"variant": "full", "width": args.width, "size": 128,
                                          "threshold": 0.5}, "model": model.state_dict()})
    cache = work / "cache"
    t = time.perf_counter()
    cached_onnx(load_spec(ckpt), cache_dir=cache)
    export_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in build_model("full", args.width).parameters())

    eager = _run(_INFER, clips[0], ckpt, cache, args.frames_eager, "torch")
    ort_one = _run(_INFER, clips[0], ckpt, cache, args.frames_eager, "onnx1")
    ort_only = _run(_INFER, clips[0], ckpt, cache, args.frames_eager, "onnx")
    rows = []
    for clip, d in zip(clips, durations):
        out = work / f"out_{clip.stem}"
        if out.exists():
            import shutil
            shutil.rmtree(out)
        rows.append((d, _run(_SEGMENT, clip, ckpt, out, cache)))

    print(f"model: CEUSegNet full, width {args.width:g} ({n_params / 1e6:.2f} M params), 128x128; "
          f"CPU cores: {os.cpu_count()}; ONNX export (one-off, cached): {export_s:.1f} s")
    print(f"eager PyTorch batch 1, inference only: {eager['fps']:.2f} frames/s "
          f"({eager['threads']} threads)")
    print(f"ONNX Runtime batch 1, inference only:  {ort_one['fps']:.2f} frames/s")
    print(f"ONNX Runtime batch 8, inference only:  {ort_only['fps']:.2f} frames/s")
    print(f"{'clip':>10} {'frames':>7} {'stream fps':>11} {'call fps':>9} {'vs eager':>9} "
          f"{'vs ORT b1':>10} {'vs ORT b8':>10} {'peak RSS MB':>12}")
    for d, r in rows:
        print(f"{d:>8.0f} s {r['frames']:>7d} {r['stream_fps']:>11.2f} {r['wall_fps']:>9.2f} "
              f"{r['stream_fps'] / eager['fps']:>8.2f}x {r['stream_fps'] / ort_one['fps']:>9.2f}x "
              f"{r['stream_fps'] / ort_only['fps']:>9.2f}x {r['maxrss_mb']:>12.0f}")
    (short_d, short), (long_d, long_) = rows
    print(f"peak memory long/short ({long_d:.0f} s vs {short_d:.0f} s clip): "
          f"{long_['maxrss_mb'] / short['maxrss_mb']:.2f}x")
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
