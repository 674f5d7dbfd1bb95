"""The paper's experiment on the phantom: every variant trained and tested under the same conditions.

Builds (or reuses) a phantom dataset through the real chain — synth -> keyframes ->
annotate-phantom -> build-dataset — then trains and evaluates the U-Net baseline and
the six ablation variants of CEUSegNet with one seed, one split and one schedule, and
writes tables shaped like Table 1 (comparison) and Table 2 (ablation) of Meng et al.,
ISBI 2022, next to the paper's own numbers.

    python pipelines/paper_experiment.py OUT                       # CPU: width 1/8, 60 epochs
    python pipelines/paper_experiment.py OUT --width 1 --epochs 150 --batch-size 16  # GPU, paper size

Outputs in OUT/: phantom/, keyframes/, annotations/, dataset/, runs/<variant>/seed<k>/
(each a `ceuspipe train` run folder with eval/metrics.json), results.json, results.csv,
table1.md, table2.md. Test metrics use each run's LAST checkpoint: the runs validate on
the test split each epoch, so picking the best epoch would select on the test set.

Runtime with the defaults (24 patients, width 0.125, 60 epochs) on the project's 2-core
CPU machine: phantom 56 s and key frames 24 s, then 35-65 s per variant and seed on quiet
cores (about 6 minutes per seed for all seven variants; 34 minutes for one seed when other
jobs shared the cores). Results of a 5-seed run: README, "The paper's experiment". On a
GPU use --width 1 --epochs 150 --batch-size 16 (the paper's settings).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

PAPER_TABLE1 = {  # Dice / IoU %, MCLN and BL datasets
    "unet": {"MCLN": (74.85, 58.42), "BL": (69.27, 53.16)},
    "full": {"MCLN": (91.05, 80.06), "BL": (89.97, 75.62)},
}
PAPER_TABLE2 = {  # Dice % on MCLN
    "ceus_only": 78.04, "us_only": 86.20, "both": 87.32, "both_csa": 86.64, "both_cff": 89.76, "full": 91.05,
}
LABELS = {"unet": "U-Net baseline", "ceus_only": "CEUS only", "us_only": "US only", "both": "CEUS + US",
          "both_csa": "CEUS + US + CSA", "both_cff": "CEUS + US + CFF", "full": "CEUSegNet (CSA + CFF)"}


def build_phantom_dataset(out: Path, args) -> Path:
    """synth -> keyframes -> annotate-phantom -> build-dataset, each skipped if already there."""
    from ceuspipe.dataset.build import BuildConfig, build_dataset
    from ceuspipe.synth.annotate import annotate_phantom
    from ceuspipe.inputs import find_inputs
    from ceuspipe.keyframes import KeyframeConfig, run_keyframes
    from ceuspipe.synth.config import PhantomConfig
    from ceuspipe.synth.generate import generate_phantom

    dataset = out / "dataset"
    if (dataset / "dataset.json").is_file():
        print(f"reusing {dataset}")
        return dataset
    config = PhantomConfig(duration_s=args.duration_s, fps=args.fps, ceus_side="random",
                           dynamic_range_db=None)
    t = time.perf_counter()
    generate_phantom(out / "phantom", args.patients, config, seed=args.seed, jobs=args.jobs)
    print(f"phantom: {args.patients} patients in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    report = run_keyframes(find_inputs([out / "phantom"]), out / "keyframes", KeyframeConfig(), jobs=args.jobs)
    failed = report.by_status("failed")
    if failed:
        sys.exit(f"key frames failed: {[r.error for r in failed]}")
    print(f"key frames: {time.perf_counter() - t:.0f} s")
    annotate_phantom(out / "keyframes", out / "phantom", out / "annotations", overwrite=True)
    build_dataset(BuildConfig(keyframes_dir=out / "keyframes", annotations_dir=out / "annotations",
                              out_dir=dataset, seed=args.seed, overwrite=True))
    return dataset


def run_variant(variant: str, dataset: Path, out: Path, args, seed: int) -> dict:
    """Train one variant with one training seed (or reuse a finished run) and test it."""
    from ceuspipe.train.config import TrainConfig
    from ceuspipe.train.evaluate import evaluate
    from ceuspipe.train.loop import train

    run_dir = out / "runs" / variant / f"seed{seed}"
    metrics_file = run_dir / "eval" / "metrics.json"
    if metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    t = time.perf_counter()
    cfg = TrainConfig(dataset=str(dataset), run_dir=str(run_dir), variant=variant, width=args.width,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, size=args.size,
                      device=args.device, seed=seed, resume=(run_dir / "last.pt").is_file())
    result = train(cfg)
    seconds = time.perf_counter() - t
    metrics = evaluate(run_dir / "last.pt", dataset, split="test", out_dir=run_dir / "eval", device=args.device)
    metrics["train_seconds"] = seconds
    metrics["best_val_dice_epoch"] = result.best_epoch
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def over_seeds(per_seed: list[dict]) -> dict:
    """Mean over training seeds of each run's mean test Dice/IoU, and their spread.

    ``*_std`` here is the standard deviation between seeds (0 for one seed); the
    per-case spread of each run stays in its eval/metrics.json.
    """
    import numpy as np

    out = {"seeds": [r["seed"] for r in per_seed], "runs": per_seed,
           "train_seconds": float(np.mean([r["train_seconds"] for r in per_seed])),
           "n_test": len(per_seed[0]["cases"])}
    for key in ("dice", "iou"):
        values = np.array([r[f"{key}_mean"] for r in per_seed])
        out[f"{key}_mean"], out[f"{key}_std"] = float(values.mean()), float(values.std())
    return out


def write_tables(out: Path, results: dict, args, n_test: int) -> None:
    setting = (f"phantom, {args.patients} patients, {n_test} test cases; width {args.width:g}, "
               f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, {args.size}x{args.size}, "
               f"data seed {args.seed}, training seeds {' '.join(map(str, args.seeds))}; last checkpoint; "
               f"mean ± std over training seeds of each run's mean test score")
    lines = ["# Table 1: comparison (Dice / IoU %)", "", f"Setting: {setting}.", "",
             "| method | phantom Dice | phantom IoU | paper MCLN Dice / IoU | paper BL Dice / IoU |",
             "|---|---|---|---|---|"]
    for v in ("unet", "full"):
        if v in results:
            r = results[v]
            p = PAPER_TABLE1[v]
            lines.append(f"| {LABELS[v]} | {pct(r['dice_mean'], r['dice_std'])} | "
                         f"{pct(r['iou_mean'], r['iou_std'])} | {p['MCLN'][0]} / {p['MCLN'][1]} | "
                         f"{p['BL'][0]} / {p['BL'][1]} |")
    (out / "table1.md").write_text("\n".join(lines) + "\n")
    lines = ["# Table 2: ablation (Dice %)", "", f"Setting: {setting}.", "",
             "| variant | phantom Dice | phantom IoU | paper MCLN Dice | train s |", "|---|---|---|---|---|"]
    for v in ("ceus_only", "us_only", "both", "both_csa", "both_cff", "full"):
        if v in results:
            r = results[v]
            lines.append(f"| {LABELS[v]} | {pct(r['dice_mean'], r['dice_std'])} | "
                         f"{pct(r['iou_mean'], r['iou_std'])} | {PAPER_TABLE2[v]} | {r['train_seconds']:.0f} |")
    (out / "table2.md").write_text("\n".join(lines) + "\n")
    with (out / "results.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "seed", "dice_mean", "dice_std", "iou_mean", "iou_std", "n_test",
                    "train_seconds"])
        for v, agg in results.items():
            for r in agg["runs"]:
                w.writerow([v, r["seed"], r["dice_mean"], r["dice_std"], r["iou_mean"], r["iou_std"],
                            len(r["cases"]), round(r["train_seconds"], 1)])
    (out / "results.json").write_text(json.dumps({"setting": vars(args) | {"out": str(args.out)},
                                                  "results": results}, indent=2, default=str) + "\n")


def main() -> None:
    from ceuspipe.model import VARIANTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--duration-s", type=float, default=50.0)
    ap.add_argument("--fps", type=float, default=6.0)
    ap.add_argument("--width", type=float, default=0.125, help="model width multiplier (1 = paper)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0, help="phantom and dataset seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (one run each)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    dataset = build_phantom_dataset(args.out, args)
    results = {}
    for variant in args.variants:
        per_seed = []
        for seed in args.seeds:
            r = run_variant(variant, dataset, args.out, args, seed)
            r["seed"] = seed
            per_seed.append(r)
            print(f"{variant:10s} seed {seed}: Dice {pct(r['dice_mean'], r['dice_std'])}  "
                  f"IoU {pct(r['iou_mean'], r['iou_std'])}  ({r['train_seconds']:.0f} s)", flush=True)
        results[variant] = over_seeds(per_seed)
    n_test = next(iter(results.values()))["n_test"]
    write_tables(args.out, results, args, n_test)
    print((args.out / "table1.md").read_text())
    print((args.out / "table2.md").read_text())
    print(f"total {time.perf_counter() - start:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
