"""A tiny synthetic CEUS/US dataset in the build-dataset layout, for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def make_toy_dataset(root: Path, n_train: int = 16, n_test: int = 8, seed: int = 0,
                     ceus_size=(72, 80), us_size=(66, 90), folds: bool = False) -> Path:
    """Discs of varying brightness and position in noise: bright in CEUS, dark in US."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    cases = {"train": [f"p{i:02d}_00" for i in range(n_train)],
             "test": [f"q{i:02d}_00" for i in range(n_test)]}
    for split, suffix in (("train", "Tr"), ("test", "Ts")):
        (root / f"images{suffix}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{suffix}").mkdir(parents=True, exist_ok=True)
        for case in cases[split]:
            h, w = ceus_size
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            r = rng.uniform(0.12, 0.25) * min(h, w)
            yy, xx = np.mgrid[:h, :w]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            ceus = rng.normal(40, 15, (h, w)) + mask * rng.uniform(90, 180)
            us_full = rng.normal(130, 20, (h, w)) - mask * rng.uniform(50, 90)
            us = cv2.resize(us_full.astype(np.float32), (us_size[1], us_size[0]))
            cv2.imwrite(str(root / f"images{suffix}" / f"{case}_0000.png"), np.clip(ceus, 0, 255).astype(np.uint8))
            cv2.imwrite(str(root / f"images{suffix}" / f"{case}_0001.png"), np.clip(us, 0, 255).astype(np.uint8))
            cv2.imwrite(str(root / f"labels{suffix}" / f"{case}.png"), mask)
    (root / "dataset.json").write_text(json.dumps({
        "name": "toy", "channel_names": {"0": "ceus", "1": "us"},
        "labels": {"background": 0, "lesion": 1}, "numTraining": n_train, "numTest": n_test,
        "file_ending": ".png"}))
    splits = dict(cases)
    if folds:
        half = n_train // 2
        splits["folds"] = [{"train": cases["train"][:half], "val": cases["train"][half:]},
                           {"train": cases["train"][half:], "val": cases["train"][:half]}]
    (root / "splits.json").write_text(json.dumps(splits))
    return root
