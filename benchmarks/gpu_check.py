"""One command for a GPU machine: training speed, the paper's experiment, segment-video speed.

Run once on a machine with a CUDA GPU (a session's device time is short, so it fits in
about 8 minutes, its phantom data generated on the machine's CPU cores meanwhile):

1. ``train_speed``: paper-size CEUSegNet (width 1, 128x128, batch 16, Adam, soft
   Dice + BCE, autocast fp16 with a gradient scaler as ``ceuspipe train`` does on CUDA):
   steady-state step time and images/s after warm-up, eager, ``channels_last`` and
   ``torch.compile``; the projected time of the paper's 150 epochs over 265 images.
2. ``paper``: the paper's experiment reduced to fit: as many phantom patients as about
   ``--data-s`` seconds of the CPU cores make (the paper had 199), then the U-Net
   baseline, CEUS + US and full CEUSegNet for ``--epochs`` (150, the paper's) at paper
   size, tested on the test patients (tables shaped like Table 1/2,
   ``pipelines/paper_experiment.py``).
3. ``segment``: a ``--clip-s`` (120 s) 800x450 phantom clip: inference-only frames/s at
   batch 1 and the best batch, decode-only and encode-only frames/s, segment-video end
   to end (``--device cuda``), which stage limits, peak GPU memory.

Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``, prints the table, and exits 1
when any section failed (a CUDA path that breaks is a finding, recorded with its error
line; the other sections still run). ``--tiny`` runs everything small on the CPU (tiny
widths, two epochs, a 3 s clip): the test suite runs it so the script cannot rot.

    python benchmarks/gpu_check.py --out gpu_results          # on the GPU machine
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_tiny # CPU smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER_IMAGES = 265  # training images of the paper's MCLN dataset (199 patients)
PAPER_EPOCHS = 150


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def env_info(device) -> dict:
    import numpy as np
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "device": str(device), "cpus": os.cpu_count()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda,
                    bf16=torch.cuda.is_bf16_supported())
    return info


# ---------------------------------------------------------------- 1. training speed


def _train_steps(model, device, *, batch: int, size: int, steps: int, warmup: int,
                 channels_last: bool) -> float:
    """Seconds per optimiser step (median of ``steps`` after ``warmup``), fp16 autocast and a
    gradient scaler on CUDA, fp32 on the CPU."""
    import torch

    from ceuspipe.train.losses import dice_bce_loss

    amp = device.type == "cuda"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    ceus = torch.rand(batch, 1, size, size, generator=gen).to(device, memory_format=fmt)
    us = torch.rand(batch, 1, size, size, generator=gen).to(device, memory_format=fmt)
    target = (torch.rand(batch, 1, size, size, generator=gen) > 0.7).float().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    times = []
    model.train()
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = dice_bce_loss(model(ceus, us), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def train_speed(device, args) -> dict:
    import torch

    from ceuspipe.model import build_model

    out = {"width": args.width, "size": args.size, "batch": args.batch_size, "variant": "full",
           "amp": "fp16 + GradScaler" if device.type == "cuda" else "off (CPU)", "modes": {}}
    modes = [("eager", False, False), ("channels_last", True, False)]
    if device.type == "cuda" or args.compile:
        modes.append(("torch.compile", False, True))
    for name, cl, compiled in modes:
        try:
            torch.manual_seed(0)
            model = build_model("full", args.width).to(device)
            if cl:
                model = model.to(memory_format=torch.channels_last)
            if compiled:
                model = torch.compile(model)
            step = _train_steps(model, device, batch=args.batch_size, size=args.size, steps=args.steps,
                                warmup=args.warmup + (10 if compiled and not args.tiny else 0), channels_last=cl)
            ips = args.batch_size / step
            out["modes"][name] = {"step_s": step, "images_per_s": ips,
                                  "paper_150_epochs_s": PAPER_EPOCHS * PAPER_IMAGES / ips}
        except Exception as exc:  # noqa: BLE001 - a failing mode is a finding, the others still run
            out["modes"][name] = {"error": _error_line(exc)}
    good = {k: v for k, v in out["modes"].items() if "error" not in v}
    if good:
        out["best"] = min(good, key=lambda k: good[k]["step_s"])
    if device.type == "cuda":
        out["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# ---------------------------------------------------------------- 2. the paper's experiment


def _paper_module():
    sys.path.insert(0, str(REPO / "pipelines"))
    try:
        import paper_experiment
    finally:
        sys.path.pop(0)
    return paper_experiment


def paper(device, args) -> dict:
    from ceuspipe.synth.config import PhantomConfig
    from ceuspipe.synth.generate import generate_exam

    pe = _paper_module()
    work = args.out / "paper"
    jobs = max(1, (os.cpu_count() or 2) - 1)
    patients = args.patients
    if patients is None:  # as many as --data-s seconds of the cores make
        t = time.perf_counter()
        generate_exam(work / "probe" / "exam1.mp4", None,
                      PhantomConfig(duration_s=args.duration_s, fps=args.fps), seed=99)
        one = time.perf_counter() - t
        patients = int(max(6, min(199, args.data_s * jobs / (one * 1.5))))  # 1.5: key frames etc.
    ns = argparse.Namespace(out=work, patients=patients, duration_s=args.duration_s, fps=args.fps,
                            width=args.width, epochs=args.epochs, batch_size=args.batch_size, lr=1e-3,
                            size=args.size, device=str(device), seed=0, seeds=[0], jobs=jobs,
                            variants=list(args.variants))
    t = time.perf_counter()
    dataset = pe.build_phantom_dataset(work, ns)
    out = {"patients": patients, "data_s": time.perf_counter() - t, "epochs": args.epochs,
           "width": args.width, "variants": {}}
    results = {}
    for variant in args.variants:
        try:
            r = pe.run_variant(variant, dataset, work, ns, 0)
            r["seed"] = 0
            results[variant] = pe.over_seeds([r])
            out["variants"][variant] = {"dice": r["dice_mean"], "iou": r["iou_mean"],
                                        "train_s": r["train_seconds"], "n_test": len(r["cases"])}
        except Exception as exc:  # noqa: BLE001
            out["variants"][variant] = {"error": _error_line(exc)}
    if results:
        pe.write_tables(work, results, ns, next(iter(results.values()))["n_test"])
        out["tables"] = [str(work / "table1.md"), str(work / "table2.md")]
    return out


# ---------------------------------------------------------------- 3. segment-video


def _start_clip(args) -> tuple[Path, subprocess.Popen | None]:
    """Begin synthesising the segment clip in a background process (the CPU is idle
    while the GPU trains); returns its path and the process (None when cached)."""
    clip = args.out / "segment" / f"clip_{args.clip_s:g}s_{args.clip_fps:g}fps.mp4"
    if clip.exists():
        return clip, None
    clip.parent.mkdir(parents=True, exist_ok=True)
    code = ("import sys; from ceuspipe.synth import PhantomConfig, generate_exam; "
            "generate_exam(sys.argv[1], None, PhantomConfig(duration_s=float(sys.argv[2]), "
            "fps=float(sys.argv[3]), width=int(sys.argv[4]), height=int(sys.argv[5])), seed=7)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(clip), str(args.clip_s), str(args.clip_fps),
                             str(args.clip_size[0]), str(args.clip_size[1])])
    return clip, proc


def segment(device, args, clip: Path) -> dict:
    import numpy as np
    import torch

    from ceuspipe.model import build_model
    from ceuspipe.segment import SegmentConfig, segment_video
    from ceuspipe.segment.model_spec import load_spec
    from ceuspipe.segment.engines.torch_engine import TorchPredictor
    from ceuspipe.train.checkpoint import save_checkpoint
    from ceuspipe.video.reader import iter_frames
    from ceuspipe.video.writer import VideoWriter

    work = clip.parent
    ckpt = work / f"model_w{args.width:g}.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, {"config": {"variant": "full", "width": args.width, "size": args.size,
                                      "threshold": 0.5}, "model": build_model("full", args.width).state_dict()})
    out: dict = {"clip": clip.name, "inference_only": {}}

    t = time.perf_counter()
    n_frames, first = 0, None
    for f in iter_frames(clip):
        n_frames += 1
        first = f.image if first is None else first
    decode_s = time.perf_counter() - t
    out["frames"] = n_frames
    out["decode_only_fps"] = n_frames / decode_s

    h, w = first.shape[:2]
    t = time.perf_counter()
    with VideoWriter(work / "encode_only.mp4", w + w % 2, h + h % 2, fps=args.clip_fps, codec="libx264",
                     pix_fmt="yuv420p", options={"crf": "20", "preset": "veryfast"}) as writer:
        frame = np.pad(first, ((0, h % 2), (0, w % 2), (0, 0)))
        for i in range(n_frames):
            writer.write(frame, i / args.clip_fps)
    out["encode_only_fps"] = n_frames / (time.perf_counter() - t)

    predictor = TorchPredictor(load_spec(ckpt), str(device), amp=True)
    rng = np.random.default_rng(0)
    for batch in args.infer_batches:
        try:
            x = rng.random((batch, args.size, args.size), dtype=np.float32)
            reps = max(3, int(args.infer_frames // batch))
            for _ in range(2):
                predictor(x, x)
            _sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                predictor(x, x)
            _sync(device)
            out["inference_only"][str(batch)] = reps * batch / (time.perf_counter() - t)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory at a large batch
            out["inference_only"][str(batch)] = {"error": _error_line(exc)}
            break
    fps = {int(k): v for k, v in out["inference_only"].items() if isinstance(v, float)}
    best = max(fps, key=fps.get)
    out["best_batch"] = best
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    report = segment_video(clip, ckpt, work / "out", SegmentConfig(device=str(device), engine="torch",
                                                                   batch_size=best, overwrite=True))
    out["end_to_end_fps"] = report.fps
    out["end_to_end_wall_s"] = report.wall_s
    out["engine"] = report.engine
    if device.type == "cuda":
        out["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    stages = {"decode": out["decode_only_fps"], "inference": fps[best], "encode": out["encode_only_fps"]}
    out["limiting_stage"] = min(stages, key=stages.get)
    out["end_to_end_over_limit"] = report.fps / stages[out["limiting_stage"]]
    return out


# ---------------------------------------------------------------- report


def _error_line(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}{where}"


def _fmt(v, digits: int = 1) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


def markdown(res: dict) -> str:
    env = res["sections"].get("env", {})
    lines = [f"# GPU check ({'tiny, CPU' if res['tiny'] else env.get('gpu', env.get('device'))})", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda', '-')}, Python {env.get('python')}, "
             f"{env.get('cpus')} CPUs; total {res['seconds']:.0f} s", ""]
    ts = res["sections"].get("train_speed", {})
    if "modes" in ts:
        lines += [f"## Training speed (width {ts['width']:g}, {ts['size']}x{ts['size']}, batch {ts['batch']}, "
                  f"AMP {ts['amp']})", "", "| mode | step ms | images/s | paper 150 epochs (s) |", "|---|---|---|---|"]
        for name, m in ts["modes"].items():
            if "error" in m:
                lines.append(f"| {name} | failed: {m['error']} | | |")
            else:
                lines.append(f"| {name} | {1000 * m['step_s']:.1f} | {m['images_per_s']:.0f} | "
                             f"{m['paper_150_epochs_s']:.0f} |")
        lines.append("")
    pp = res["sections"].get("paper", {})
    if "variants" in pp:
        lines += [f"## Paper experiment ({pp['patients']} phantom patients, width {pp['width']:g}, "
                  f"{pp['epochs']} epochs; data {pp['data_s']:.0f} s)", "",
                  "| variant | test Dice | test IoU | train s |", "|---|---|---|---|"]
        for v, r in pp["variants"].items():
            lines.append(f"| {v} | failed: {r['error']} | | |" if "error" in r else
                         f"| {v} | {100 * r['dice']:.2f} | {100 * r['iou']:.2f} | {r['train_s']:.0f} |")
        lines.append("")
    sg = res["sections"].get("segment", {})
    if "inference_only" in sg:
        inf = ", ".join(f"b{k}: {_fmt(v, 0)}" for k, v in sg["inference_only"].items())
        lines += [f"## segment-video ({sg['frames']} frames, {sg['clip']})", "", "| what | frames/s |", "|---|---|",
                  f"| inference only ({inf}) | best b{sg['best_batch']} |",
                  f"| decode only | {sg['decode_only_fps']:.0f} |", f"| encode only (H.264 overlay) | "
                  f"{sg['encode_only_fps']:.0f} |",
                  f"| end to end ({sg['engine']}) | {sg['end_to_end_fps']:.0f} "
                  f"({sg['end_to_end_over_limit']:.2f}x the {sg['limiting_stage']} stage alone) |"]
        if "peak_gpu_memory_mib" in sg:
            lines.append(f"| peak GPU memory | {sg['peak_gpu_memory_mib']:.0f} MiB |")
        lines.append("")
    for name, sec in res["sections"].items():
        if isinstance(sec, dict) and "error" in sec:
            lines.append(f"**{name} failed**: {sec['error']}")
    return "\n".join(lines) + "\n"


def _failed(sec: dict) -> bool:
    if "error" in sec:
        return True
    inner = [*sec.get("modes", {}).values(), *sec.get("variants", {}).values()]
    return any(isinstance(v, dict) and "error" in v for v in inner)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "gpu_results")
    ap.add_argument("--tiny", action="store_true", help="small everything, on the CPU (smoke test)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--sections", nargs="+", default=["train_speed", "paper", "segment"],
                    choices=["train_speed", "paper", "segment"])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on the CPU")
    ap.add_argument("--data-s", type=float, default=120.0, help="seconds of CPU cores for phantom data")
    ap.add_argument("--patients", type=int, default=None, help="phantom patients (default: from --data-s)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--clip-s", type=float, default=None)
    args = ap.parse_args(argv)

    import torch

    args.device = args.device or ("cpu" if args.tiny else "cuda")
    if args.tiny:
        args.width, args.size, args.batch_size, args.steps, args.warmup = 0.0625, 32, 4, 3, 1
        args.patients = args.patients or 3
        args.epochs = args.epochs or 2
        args.duration_s, args.fps = 12.0, 2.0
        args.variants = ("unet", "full")
        args.clip_s, args.clip_fps, args.clip_size = args.clip_s or 3.0, 6.0, (320, 180)
        args.infer_batches, args.infer_frames = (1, 4), 8
    else:
        args.width, args.size, args.batch_size, args.steps, args.warmup = 1.0, 128, 16, 50, 10
        args.epochs = args.epochs or PAPER_EPOCHS
        args.duration_s, args.fps = 50.0, 6.0
        args.variants = ("unet", "both", "full")
        args.clip_s, args.clip_fps, args.clip_size = args.clip_s or 120.0, 12.0, (800, 450)
        args.infer_batches, args.infer_frames = (1, 8, 32, 64, 128, 256), 2048
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here (use --tiny for the CPU smoke run)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = {"tiny": args.tiny, "sections": {"env": env_info(device)}}
    clip, synth = _start_clip(args) if "segment" in args.sections else (None, None)
    for name in args.sections:
        print(f"== {name}", flush=True)
        t = time.perf_counter()
        try:
            if name == "segment":
                if synth is not None and synth.wait() != 0:
                    raise RuntimeError(f"clip synthesis failed (exit {synth.returncode})")
                res["sections"][name] = segment(device, args, clip)
            else:
                res["sections"][name] = {"train_speed": train_speed, "paper": paper}[name](device, args)
        except Exception as exc:  # noqa: BLE001 - record and go on to the next section
            res["sections"][name] = {"error": _error_line(exc)}
        res["sections"][name]["seconds"] = time.perf_counter() - t
    res["seconds"] = time.perf_counter() - t0
    failed = [n for n, s in res["sections"].items() if n != "env" and _failed(s)]
    res["failed"] = failed
    (args.out / "gpu_check.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    text = markdown(res)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    if failed:
        print(f"gpu_check: failed: {', '.join(failed)} (errors in {args.out / 'gpu_check.json'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
