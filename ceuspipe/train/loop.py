"""The training loop: Adam, Dice + BCE loss, per-epoch validation, checkpoints, resume, DDP.

Outputs in ``RUN_DIR`` (only rank 0 writes): ``config.json``, ``metrics.csv``
(epoch, loss, val_dice, val_iou, lr, seconds), ``learning_curve.png``, ``last.pt``
(after every epoch) and ``best.pt`` (highest validation Dice).

Reproducibility: the model is initialised from ``seed``; batches are shuffled by a
``DistributedSampler`` seeded with ``seed`` and the epoch, and augmentation is drawn
from ``(seed, epoch, index)``; so ``--resume`` from ``last.pt`` gives the same
weights as an uninterrupted run (on the same device type and process count).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ceuspipe import __version__
from ceuspipe.errors import InputError, OutputError
from ceuspipe.fsutil import atomic_write_text
from ceuspipe.train import distributed as ddp
from ceuspipe.train.checkpoint import (check_matches, read_checkpoint, rng_state, save_checkpoint,
                                       set_rng_state)
from ceuspipe.train.config import TrainConfig
from ceuspipe.train.losses import dice_bce_loss
from ceuspipe.train.metrics import batch_dice_iou
from ceuspipe.train.plots import plot_learning_curve

log = logging.getLogger("ceuspipe")

METRIC_COLUMNS = ("epoch", "loss", "val_dice", "val_iou", "lr", "seconds")


@dataclass
class TrainResult:
    """Summary of a finished run; ``history`` holds the metrics.csv rows."""

    run_dir: Path
    epochs: int
    best_epoch: int
    best_dice: float
    final_dice: float
    final_iou: float
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``name`` (see :func:`ceuspipe.devices.resolve_device`)."""
    from ceuspipe.devices import resolve_device as resolve_name

    return torch.device(resolve_name(name, local_rank))


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device, threshold: float,
             amp: bool) -> tuple[float, float]:
    """Mean per-case ``(dice, iou)`` at ``threshold`` on the loader's cases (model input size)."""
    model.eval()
    dices, ious = [], []
    for ceus, us, label in loader:
        ceus, us, label = ceus.to(device), us.to(device), label.to(device)
        with torch.autocast(device.type, enabled=amp):
            logits = model(ceus, us)
        d, i = batch_dice_iou(torch.sigmoid(logits.float()) >= threshold, label > 0.5)
        dices.append(d.cpu())
        ious.append(i.cpu())
    return float(torch.cat(dices).mean()), float(torch.cat(ious).mean())


def _write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _run_config(config: TrainConfig, device: torch.device, info: ddp.DistInfo) -> dict:
    data = config.to_dict()
    data["dataset"] = str(Path(config.dataset).resolve())
    data["in_channels"] = 1
    data["resolved_device"] = str(device)
    data["world_size"] = info.world_size
    data["loss"] = "soft Dice + BCE"
    data["optimizer"] = "Adam"
    data["versions"] = {"ceuspipe": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
                        "python": platform.python_version()}
    return data


def train(config: TrainConfig, progress: bool = False) -> TrainResult:
    """Train ``config.variant`` on ``config.dataset``, writing ``config.run_dir``; see module doc."""
    from ceuspipe.dataset.torch_dataset import CeusSegDataset
    from ceuspipe.model import build_model

    info = ddp.dist_from_env()
    device = resolve_device(config.device, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run_dir = Path(config.run_dir)
    last_path = run_dir / "last.pt"
    if info.is_main and not config.resume and run_dir.exists() and any(run_dir.iterdir()):
        raise OutputError(run_dir, "run folder exists and is not empty (use --resume to continue it)")
    if config.resume and not last_path.is_file():
        raise InputError(last_path, "nothing to resume (no last.pt in the run folder)")
    if config.epochs < 1 or config.batch_size < 1 or config.size < 16:
        raise InputError(None, "epochs and batch size must be >= 1 and size >= 16")

    ddp.init(info, device)
    try:
        return _train(config, info, device, run_dir, progress, CeusSegDataset, build_model)
    finally:
        ddp.shutdown()


def _train(config, info, device, run_dir, progress, dataset_cls, build_model) -> TrainResult:
    torch.manual_seed(config.seed)
    train_set = dataset_cls(config.dataset, "train", config.size, config.augment, config.fold, config.seed)
    val_set = dataset_cls(config.dataset, "test" if config.fold is None else "val", config.size,
                          False, config.fold, config.seed)
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler,
                        num_workers=config.workers, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, batch_size=config.batch_size, shuffle=False,
                            num_workers=config.workers)

    model = build_model(config.variant, config.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict] = []
    best_dice, best_epoch, start = -1.0, 0, 0
    if config.resume:
        last = run_dir / "last.pt"
        ckpt = read_checkpoint(last, map_location="cpu")
        if not isinstance(ckpt["config"], dict):
            raise InputError(last, "not a ceuspipe checkpoint (config is not a mapping)")
        check_matches(last, ckpt["config"], config.variant, config.width)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            set_rng_state(ckpt["rng"])
            start = int(ckpt["epoch"])
            best_dice, best_epoch = float(ckpt["best_dice"]), int(ckpt["best_epoch"])
            history = [dict(r) for r in ckpt["history"]]
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
            raise InputError(last, f"cannot resume from this checkpoint ({exc.__class__.__name__}: "
                                   f"{reason})") from None
        log.info("resuming %s after epoch %d", run_dir, start)
    run_config = _run_config(config, device, info)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if info.enabled else model
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(run_config, indent=2) + "\n")
        log.info("training %s (width %g) on %s: %d train / %d val cases, %s, %d process(es)",
                 config.variant, config.width, config.dataset, len(train_set), len(val_set),
                 device, info.world_size)

    for epoch in range(start + 1, config.epochs + 1):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        net.train()
        total, count = 0.0, 0
        for ceus, us, label in tqdm(loader, desc=f"epoch {epoch}", leave=False,
                                    disable=not (progress and info.is_main)):
            ceus, us, label = (t.to(device, non_blocking=True) for t in (ceus, us, label))
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                logits = net(ceus, us)
            loss = dice_bce_loss(logits, label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(ceus)
            count += len(ceus)
        mean_loss = ddp.mean_across(total / max(count, 1), info, device if device.type == "cuda" else None)
        val_dice, val_iou = validate(model, val_loader, device, config.threshold, amp)
        row = {"epoch": epoch, "loss": round(mean_loss, 6), "val_dice": round(val_dice, 6),
               "val_iou": round(val_iou, 6), "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        improved = val_dice > best_dice
        if improved:
            best_dice, best_epoch = val_dice, epoch
        log.info("epoch %d/%d  loss %.4f  val Dice %.4f  IoU %.4f  (%.1f s)%s", epoch, config.epochs,
                 mean_loss, val_dice, val_iou, row["seconds"], "  best" if improved else "")
        if info.is_main:
            state = {"config": run_config, "epoch": epoch, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if amp else {},
                     "rng": rng_state(), "best_dice": best_dice, "best_epoch": best_epoch,
                     "history": history}
            save_checkpoint(run_dir / "last.pt", state)
            if improved:
                save_checkpoint(run_dir / "best.pt", state)
            _write_metrics(run_dir / "metrics.csv", history)
            plot_learning_curve(run_dir / "learning_curve.png", history)
        ddp.barrier(info)

    last = history[-1] if history else {"val_dice": float("nan"), "val_iou": float("nan")}
    return TrainResult(run_dir, len(history), best_epoch, best_dice, float(last["val_dice"]),
                       float(last["val_iou"]), history)
