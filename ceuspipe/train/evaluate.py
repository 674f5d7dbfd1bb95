"""Evaluate a checkpoint on a dataset split: per-case Dice/IoU at native label size.

Each case's CEUS and US panels are resized to the model's input size, the logits
are resized back (bilinear) to the CEUS panel size, thresholded at the trained
threshold and compared with the full-resolution label.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from ceuspipe.fsutil import atomic_write_bytes, atomic_write_text, safe_name
from ceuspipe.train.metrics import dice_iou

log = logging.getLogger("ceuspipe")


def overlay(ceus: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 3) uint8`` BGR CEUS image with the predicted contour (yellow) and label (green)."""
    img = cv2.cvtColor(ceus, cv2.COLOR_GRAY2BGR)
    if label is not None:
        cs, _ = cv2.findContours(label.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, cs, -1, (0, 200, 0), 1)
    cs, _ = cv2.findContours(pred.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, cs, -1, (0, 255, 255), 1)
    return img


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


@torch.no_grad()
def evaluate(checkpoint: str | Path, dataset: str | Path, split: str = "test", out_dir: str | Path | None = None,
             save_predictions: bool = False, device: str = "cpu", fold: int | None = None) -> dict:
    """Dice and IoU per case plus mean and standard deviation.

    Returns ``{"checkpoint", "dataset", "split", "variant", "width", "threshold",
    "cases": [{"case", "dice", "iou"}], "dice_mean", "dice_std", "iou_mean",
    "iou_std"}``. With ``out_dir`` writes ``metrics.json`` there and, with
    ``save_predictions``, ``predictions/<case>_mask.png`` (0/255) and
    ``predictions/<case>_overlay.png`` (contours on the CEUS panel).
    """
    from ceuspipe.dataset.torch_dataset import case_files, read_case, read_dataset_info, split_cases, to_input
    from ceuspipe.train.checkpoint import load_model
    from ceuspipe.train.loop import resolve_device

    dev = resolve_device(device)
    model, config = load_model(checkpoint, dev)
    size, threshold = int(config["size"]), float(config["threshold"])
    read_dataset_info(dataset)
    cases = split_cases(dataset, split, fold)
    pred_dir = Path(out_dir) / "predictions" if (out_dir is not None and save_predictions) else None
    rows = []
    for case in cases:
        ceus, us, label = read_case(case_files(dataset, case))
        x_c = torch.from_numpy(to_input(ceus, size))[None, None].to(dev)
        x_u = torch.from_numpy(to_input(us, size))[None, None].to(dev)
        logits = model(x_c, x_u).float()
        logits = torch.nn.functional.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
        pred = (torch.sigmoid(logits)[0, 0] >= threshold).cpu().numpy()
        dice, iou = dice_iou(pred, label)
        rows.append({"case": case, "dice": dice, "iou": iou})
        log.debug("%s: Dice %.4f IoU %.4f", case, dice, iou)
        if pred_dir is not None:
            name = safe_name(case)
            atomic_write_bytes(pred_dir / f"{name}_mask.png", _png(pred.astype(np.uint8) * 255))
            atomic_write_bytes(pred_dir / f"{name}_overlay.png", _png(overlay(ceus, pred, label)))
    dices = np.array([r["dice"] for r in rows])
    ious = np.array([r["iou"] for r in rows])
    result = {"checkpoint": str(checkpoint), "dataset": str(dataset), "split": split,
              "variant": config["variant"], "width": config["width"], "threshold": threshold,
              "cases": rows, "dice_mean": float(dices.mean()), "dice_std": float(dices.std()),
              "iou_mean": float(ious.mean()), "iou_std": float(ious.std())}
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(result, indent=2) + "\n")
    log.info("%s on %d %s cases: Dice %.4f ± %.4f, IoU %.4f ± %.4f", config["variant"], len(rows), split,
             result["dice_mean"], result["dice_std"], result["iou_mean"], result["iou_std"])
    return result
