"""Speed and memory of ``segment-video`` against eager PyTorch and ONNX Runtime on the same model.

Generates phantom clips (800x450, 12 fps; 20 s and 80 s, or 4 s and 12 s with
``--quick``) and a CEUSegNet checkpoint of the chosen width (1 = paper size,
128x128 input; randomly initialised unless ``--checkpoint`` gives a trained
one), exports it to ONNX once (the cache that ``segment-video`` uses) and to an
int8 ONNX model (``ceuspipe export --int8``, calibrated on ``--calibration`` or
on the short clip), then measures, each in a fresh subprocess:

* inference only (no decoding or writing) on real panels of the short clip:
  eager PyTorch batch 1 fp32; ONNX Runtime fp32 batch 1 (per-frame deployment,
  the issue's reference) and batch 8; ONNX Runtime int8 batch 1 and 8; and batch 8
  "sliced" (concurrent one-thread runs over slices of the batch, the next batch
  submitted before the last is collected, as segment-video runs it:
  ``OnnxPredictor(parallel_frames=True)``);
* ``segment-video`` end to end on each clip at **default settings** with the
  checkpoint (precision auto: on the CPU the int8 model calibrated once on the
  first clip, cached, and checked against fp32 on 8 frames of every clip), at
  ``precision fp32``, and with the exported int8 file: frames/s over the
  streaming part and over the whole call, the precision used, and peak RSS. The
  first default run (short clip, empty cache) calibrates; its wall time is shown
  on its own and the measured runs find the cache warm;
* ``segment-video`` at default settings on 30 fps screen captures of a 10 Hz
  acquisition (each acquired frame written 3 times with libx264, same durations):
  repeated frames skip inference; and on the short clip without repeats with
  ``dedupe=False`` (the detector's cost).

Targets (issue 13), stream frames/s against ONNX Runtime alone at batch 1 in the
same run: captures with repeats >= 2.5x ORT fp32; clips without repeats >= 1.0x ORT
fp32 (both at default settings); the int8 file >= 0.9x ORT int8. Peak memory flat
from the short to the long clip.

A randomly initialised model's masks are all or mostly lesion, so drawing and
encoding costs match a real run's to within the overlay's contour drawing (about
0.3 ms/frame); its int8-vs-fp32 agreement means nothing (use ``--checkpoint``).

``--repeats N`` runs every case once per round, N rounds, and prints medians; each
target ratio is the median over rounds of that round's ratio (runs minutes apart on
a shared machine differ by 10 % and more).

Prints one table and the ratios. Usage::

    python benchmarks/bench_segment.py [--quick] [--repeats 3] [--width 1] [--frames-eager 40] [--keep DIR]
                                       [--checkpoint RUN/last.pt --calibration DATASET]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from statistics import median
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Peak memory of the child process itself: VmHWM belongs to the current process image
# only, whereas ru_maxrss also counts the pages of the (large) benchmark process it was
# forked from.
_PEAK_RSS = r"""
import json, sys, time


def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_SEGMENT = _PEAK_RSS + r"""
from ceuspipe.segment import SegmentConfig, segment_video
clip, ckpt, out, cache, dedupe, precision = sys.argv[1:7]
t = time.perf_counter()
r = segment_video(clip, ckpt, out, SegmentConfig(cache_dir=cache, dedupe=dedupe == "1", precision=precision))
wall = time.perf_counter() - t
check = r.precision.get("check") or {}
print(json.dumps({"frames": r.frames, "repeated": r.frames_repeated, "stream_fps": r.fps, "wall_fps": r.frames / wall,
                  "wall_s": wall, "engine": r.engine, "used": r.precision.get("used"),
                  "check_dice": check.get("dice_mean"), "maxrss_mb": peak_rss_mb()}))
"""

_INFER = _PEAK_RSS + r"""
import numpy as np, torch
from ceuspipe.segment.model_spec import load_spec
from ceuspipe.segment.engines import make_predictor
from ceuspipe.segment.engines.torch_engine import TorchPredictor
from ceuspipe.segment.predictor import prepare_panel
from ceuspipe.video.layout import resolve_layout
from ceuspipe.video.panels import crop
from ceuspipe.video.reader import iter_frames
clip, model, cache, n, engine, bs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
parallel = sys.argv[7] == "1"
frames = []
for f in iter_frames(clip):
    frames.append(f.image)
    if len(frames) >= n:
        break
layout = resolve_layout(frames[:8], source=clip)
spec = load_spec(model, "cpu")
S = spec.size
c = np.stack([prepare_panel(crop(im, layout.ceus), S) for im in frames])
u = np.stack([prepare_panel(crop(im, layout.us), S) for im in frames])
pred = TorchPredictor(spec, "cpu") if engine == "torch" else make_predictor(spec, engine="onnx", device="cpu",
                                                                            cache_dir=cache, parallel_frames=parallel)
pred(c[:bs], u[:bs])  # warm-up
t = time.perf_counter()
if parallel:  # as segment-video runs it: the next batch submitted before the last is collected
    from ceuspipe.segment.predictor import submit
    last = None
    for i in range(0, len(c), bs):
        nxt = submit(pred, c[i:i + bs], u[i:i + bs])
        if last is not None:
            last.result()
        last = nxt
    last.result()
else:
    for i in range(0, len(c), bs):
        pred(c[i:i + bs], u[i:i + bs])
dt = time.perf_counter() - t
print(json.dumps({"fps": len(c) / dt, "threads": torch.get_num_threads(), "engine": pred.engine,
                  "maxrss_mb": peak_rss_mb()}))
"""


def _run(code: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"benchmark step failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _capture(acq: Path, out: Path, repeat: int = 3, fps: float = 30.0) -> None:
    """A screen capture of ``acq``: each decoded frame written ``repeat`` times at ``fps`` (libx264)."""
    from ceuspipe.video.reader import iter_frames
    from ceuspipe.video.writer import VideoWriter

    vw, k = None, 0
    for f in iter_frames(acq):
        if vw is None:
            vw = VideoWriter(out, f.image.shape[1], f.image.shape[0], fps=fps, codec="libx264")
        for _ in range(repeat):
            vw.write(f.image, k / fps)
            k += 1
    vw.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 s and 12 s clips instead of 20 s and 80 s")
    ap.add_argument("--width", type=float, default=1.0, help="model width multiplier (1 = paper size)")
    ap.add_argument("--checkpoint", type=Path, help="a trained checkpoint instead of a random one")
    ap.add_argument("--calibration", type=Path, help="int8 calibration data (dataset folder or clips) "
                                                     "[default: the short clip]")
    ap.add_argument("--frames-eager", type=int, default=40, help="frames for the inference-only runs")
    ap.add_argument("--repeats", type=int, default=1, help="rounds of every measurement (medians reported)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args(argv)

    import torch

    from ceuspipe.model import build_model
    from ceuspipe.segment.onnx_export import cached_onnx
    from ceuspipe.segment.model_spec import load_spec
    from ceuspipe.segment.quantize import export_int8
    from ceuspipe.synth import PhantomConfig, generate_exam
    from ceuspipe.train.checkpoint import save_checkpoint

    load_start = os.getloadavg()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_segment."))
    work.mkdir(parents=True, exist_ok=True)
    durations = (4.0, 12.0) if args.quick else (20.0, 80.0)
    clips = []
    for i, d in enumerate(durations):
        clip = work / f"clip_{int(d)}s.mp4"
        if not clip.exists():
            generate_exam(clip, None, PhantomConfig(duration_s=d, fps=12.0, width=800, height=450), seed=i + 1)
        clips.append(clip)
    captures = []
    for i, d in enumerate(durations):
        cap = work / f"capture30_of_10hz_{int(d)}s.mp4"
        if not cap.exists():
            acq = work / f"acq10_{int(d)}s.mp4"
            generate_exam(acq, None, PhantomConfig(duration_s=d, fps=10.0, width=800, height=450), seed=i + 1)
            _capture(acq, cap)
        captures.append(cap)
    ckpt = args.checkpoint or work / f"model_w{args.width:g}.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        model = build_model("full", args.width)
        save_checkpoint(ckpt, {"config": {"variant": "full", "width": args.width, "size": 128,
                                          "threshold": 0.5}, "model": model.state_dict()})
    spec = load_spec(ckpt)
    cache = work / "cache"
    t = time.perf_counter()
    cached_onnx(spec, cache_dir=cache)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    int8 = export_int8(ckpt, work / f"{ckpt.stem}.int8.onnx", [args.calibration or clips[0]], min_dice=0.0)
    int8_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in spec.model.parameters())

    n = args.frames_eager
    infer_cases = {
        "eager PyTorch fp32, batch 1": (ckpt, "torch", 1, 0),
        "ONNX Runtime fp32, batch 1": (ckpt, "onnx", 1, 0),
        "ONNX Runtime fp32, batch 8": (ckpt, "onnx", 8, 0),
        "ONNX Runtime fp32, batch 8 sliced": (ckpt, "onnx", 8, 1),
        "ONNX Runtime int8, batch 1": (int8.path, "onnx", 1, 0),
        "ONNX Runtime int8, batch 8": (int8.path, "onnx", 8, 0),
        "ONNX Runtime int8, batch 8 sliced": (int8.path, "onnx", 8, 1),
    }
    segment_cases = [("default", clip, d, ckpt, 1, "auto") for clip, d in zip(clips, durations)]
    segment_cases += [("default capture", cap, d, ckpt, 1, "auto") for cap, d in zip(captures, durations)]
    segment_cases += [("default no-dedupe", clips[0], durations[0], ckpt, 0, "auto")]
    segment_cases += [("fp32", clip, d, ckpt, 1, "fp32") for clip, d in zip(clips, durations)]
    segment_cases += [("int8 file", clip, d, int8.path, 1, "auto") for clip, d in zip(clips, durations)]

    def segment(label, clip, model_path, dedupe, precision):
        out = work / f"out_{clip.stem}_{label.replace(' ', '_')}"
        if out.exists():
            import shutil
            shutil.rmtree(out)
        return _run(_SEGMENT, clip, model_path, out, cache, dedupe, precision)

    first = segment("first (calibrates)", clips[0], ckpt, 1, "auto")
    # Rounds: every case once per round, so that each round's ratios compare runs made minutes apart.
    infer_runs: dict[str, list[dict]] = {name: [] for name in infer_cases}
    segment_runs: list[list[dict]] = [[] for _ in segment_cases]
    for _ in range(args.repeats):
        for name, (model_path, engine, bs, par) in infer_cases.items():
            infer_runs[name].append(_run(_INFER, clips[0], model_path, cache, n, engine, bs, par))
        for runs, (label, clip, _, model_path, dedupe, precision) in zip(segment_runs, segment_cases):
            runs.append(segment(label, clip, model_path, dedupe, precision))

    infer = {name: {"fps": median([r["fps"] for r in runs]), "runs": [r["fps"] for r in runs]}
             for name, runs in infer_runs.items()}
    rows = []
    for (label, _, d, *_), runs in zip(segment_cases, segment_runs):
        r = dict(runs[-1])
        for k in ("stream_fps", "wall_fps", "maxrss_mb"):
            r[k] = median([x[k] for x in runs])
        r["runs"] = runs
        rows.append((label, d, r))
    eager = infer["eager PyTorch fp32, batch 1"]["fps"]
    ort32 = infer["ONNX Runtime fp32, batch 1"]["fps"]
    ort8 = infer["ONNX Runtime int8, batch 1"]["fps"]

    a = int8.agreement
    print(f"model: CEUSegNet {spec.config.get('variant', 'full')}, width {spec.config.get('width', args.width):g} "
          f"({n_params / 1e6:.2f} M params), {spec.size}x{spec.size}, "
          f"{'trained: ' + str(ckpt) if args.checkpoint else 'random weights'}; CPU cores: {os.cpu_count()}; "
          "load average (1, 5, 15 min) at start %.2f %.2f %.2f, at end %.2f %.2f %.2f" % (*load_start, *os.getloadavg()))
    print(f"one-off exports: ONNX fp32 {export_s:.1f} s; int8 {int8_s:.1f} s ({int8.calibration_frames} "
          f"calibration frames; masks vs fp32 on {a.frames} held-out frames: Dice {a.dice_mean:.4f})")
    print(f"medians of {args.repeats} round(s); in a round every case runs once, in the order shown")
    print("inference only (frames/s):")
    for name, r in infer.items():
        each = f"   runs: {', '.join(f'{x:.2f}' for x in r['runs'])}" if args.repeats > 1 else ""
        print(f"  {name:<34} {r['fps']:7.2f}   ({r['fps'] / eager:.2f}x eager, {r['fps'] / ort32:.2f}x ORT fp32 b1)"
              f"{each}")
    print(f"first default run (short clip, empty cache): {first['wall_s']:.1f} s wall including the int8 "
          f"calibration, then {first['used']} ({first['engine']})")
    print(f"{'segment-video':>18} {'clip':>6} {'frames':>7} {'repeats':>8} {'used':>5} {'check':>6} {'stream fps':>11} "
          f"{'call fps':>9} {'vs ORT32 b1':>12} {'vs ORT8 b1':>11} {'peak RSS MB':>12}")
    for label, d, r in rows:
        dice = "-" if r.get("check_dice") is None else f"{r['check_dice']:.3f}"
        print(f"{label:>18} {d:>4.0f} s {r['frames']:>7d} {r.get('repeated', 0):>8d} {r['used'] or '-':>5} {dice:>6} "
              f"{r['stream_fps']:>11.2f} {r['wall_fps']:>9.2f} {r['stream_fps'] / ort32:>11.2f}x "
              f"{r['stream_fps'] / ort8:>10.2f}x {r['maxrss_mb']:>12.0f}")
    for label in ("default", "default capture", "fp32", "int8 file"):
        (sd, short), (ld, long_) = [(d, r) for lab, d, r in rows if lab == label]
        print(f"{label}: peak memory long/short ({ld:.0f} s vs {sd:.0f} s clip): "
              f"{long_['maxrss_mb'] / short['maxrss_mb']:.2f}x")

    def ratios(label, ref_name):
        """Per clip: the median over rounds of (stream fps / the reference's fps in that round),
        and each round's ratio when there are several."""
        out = []
        for lab, _, r in rows:
            if lab != label:
                continue
            each = [x["stream_fps"] / ref["fps"] for x, ref in zip(r["runs"], infer_runs[ref_name])]
            out.append(f"{median(each):.2f}x" + (f" ({', '.join(f'{e:.2f}' for e in each)})" if len(each) > 1 else ""))
        return ", ".join(out)

    b32, b8 = "ONNX Runtime fp32, batch 1", "ONNX Runtime int8, batch 1"
    nod = [r for lab, _, r in rows if lab == "default no-dedupe"][0]
    print(f"targets, stream fps against ORT alone at batch 1 (fp32 {ort32:.2f} fps, int8 {ort8:.2f} fps):")
    print(f"  30 fps captures of 10 Hz, default settings: {ratios('default capture', b32)} of ORT fp32 (target >= 2.5x)")
    print(f"  clips without repeats, default settings: {ratios('default', b32)} of ORT fp32 (target >= 1.0x); "
          f"dedupe off {nod['stream_fps'] / ort32:.2f}x")
    print(f"  int8 file end to end: {ratios('int8 file', b8)} of ORT int8 (target >= 0.9x)")
    best8 = max((name for name in infer if "int8" in name), key=lambda name: infer[name]["fps"])
    print(f"  (int8 file end to end: {ratios('int8 file', best8)} of ORT int8's fastest way alone, {best8}: "
          f"{infer[best8]['fps']:.2f} fps)")
    print(f"  (fp32 end to end: {ratios('fp32', b32)} of ORT fp32)")
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
