"""Does --clean-masks (largest component + hole filling) help? Mask Dice and TIC error.

Trains the tiny phantom model of tests/segment/test_segment_phantom.py (width 0.125, 64x64,
16 epochs), segments held-out phantom clips with and without ``clean_masks`` and
prints, per setting, the mean Dice against the truth ROI (frames after contrast
arrival) and the TTP (s) and PE (relative) errors of the fitted lesion curve.

    PYTHONPATH=. python benchmarks/bench_clean_masks.py [--seeds 203 204 205]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_segment_phantom import HEIGHT, WIDTH, _dice, _truth_parameters, _write_training_set  # noqa: E402

from ceuspipe.segment import SegmentConfig, segment_video  # noqa: E402
from ceuspipe.synth import PhantomConfig, generate_exam, truth_masks_at  # noqa: E402
from ceuspipe.video.panels import PanelLayout  # noqa: E402
from ceuspipe.video.reader import iter_frames  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[203, 204, 205])
    ap.add_argument("--epochs", type=int, default=16)
    args = ap.parse_args()
    from ceuspipe.train.config import TrainConfig
    from ceuspipe.train.loop import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        ds = _write_training_set(root / "dataset")
        train(TrainConfig(dataset=str(ds), run_dir=str(root / "run"), width=0.125, size=64,
                          epochs=args.epochs, batch_size=8, lr=3e-3, device="cpu", seed=0))
        ckpt = root / "run" / "best.pt"
        rows = {False: [], True: []}
        for seed in args.seeds:
            clip = root / f"s{seed}" / "exam1.mp4"
            truth = generate_exam(clip, None, PhantomConfig(duration_s=80.0, fps=1.0, width=WIDTH, height=HEIGHT),
                                  seed=seed)
            lay = PanelLayout.from_dict(truth["layout"])
            for clean in (False, True):
                out = root / f"s{seed}_{int(clean)}"
                rep = segment_video(clip, ckpt, out, SegmentConfig(ceus_box=lay.ceus, us_box=lay.us,
                                                                   clean_masks=clean, cache_dir=str(root / "c")))
                dice = [_dice(f.image[..., 0] > 127, truth_masks_at(truth, f.time_s)[0])
                        for f in iter_frames(out / "mask.mkv")
                        if f.time_s > truth["curves"]["lesion"]["t0"]]
                tic = json.loads((out / "tic.json").read_text())
                want = _truth_parameters(truth, rep.duration_s)
                P = tic["parameters"]
                ttp = P["TTP"]["value"] - want["TTP"].value if tic["success"] else float("nan")
                pe = P["PE"]["value"] / want["PE"].value - 1 if tic["success"] else float("nan")
                rows[clean].append((float(np.mean(dice)), ttp, pe))
                print(f"seed {seed} clean_masks={clean}: Dice {np.mean(dice):.4f}  TTP err {ttp:+.3f} s  "
                      f"PE err {100 * pe:+.2f} %", flush=True)
        for clean in (False, True):
            a = np.array(rows[clean])
            print(f"clean_masks={clean}: mean Dice {a[:, 0].mean():.4f}, mean |TTP err| "
                  f"{np.nanmean(np.abs(a[:, 1])):.3f} s, mean |PE err| {100 * np.nanmean(np.abs(a[:, 2])):.2f} %")


if __name__ == "__main__":
    main()
