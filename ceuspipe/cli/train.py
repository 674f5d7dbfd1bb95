"""``ceuspipe train``, ``ceuspipe evaluate`` and ``ceuspipe model-info``."""

from __future__ import annotations

import json

import click

from ceuspipe.cli import show_progress
from ceuspipe.cli.options import default_of
from ceuspipe.model.variants import VARIANTS as VARIANT_CHOICES
from ceuspipe.train.config import TrainConfig


def _train(name: str):
    """The default of ``TrainConfig.name`` (the paper's settings)."""
    return default_of(TrainConfig, name)


@click.command("train")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--variant", type=click.Choice(VARIANT_CHOICES), default=_train("variant"), show_default=True,
              help="Model variant (full = CEUSegNet; others are the paper's ablations).")
@click.option("--width", type=float, default=_train("width"), show_default=True, help="Channel width multiplier.")
@click.option("--epochs", type=int, default=_train("epochs"), show_default=True)
@click.option("--batch-size", type=int, default=_train("batch_size"), show_default=True, help="Per process.")
@click.option("--lr", type=float, default=_train("lr"), show_default=True, help="Adam learning rate.")
@click.option("--size", type=int, default=_train("size"), show_default=True, help="Input side in pixels.")
@click.option("--threshold", type=float, default=_train("threshold"), show_default=True,
              help="Mask threshold on sigmoid scores.")
@click.option("--augment/--no-augment", default=_train("augment"), show_default=True,
              help="Flips, small affine and intensity jitter (off in the paper).")
@click.option("--device", default=_train("device"), show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=_train("seed"), show_default=True)
@click.option("--workers", type=int, default=_train("workers"), show_default=True,
              help="DataLoader worker processes.")
@click.option("--resume", is_flag=True, help="Continue RUN_DIR/last.pt.")
@click.option("--fold", type=int, default=None, help="Train/validate on this fold of splits.json.")
def train_cmd(dataset, run_dir, variant, width, epochs, batch_size, lr, size, threshold, augment,
              device, seed, workers, resume, fold):
    """Train a segmentation model on DATASET (from build-dataset), writing RUN_DIR.

    Several GPUs: torchrun --standalone --nproc_per_node N -m ceuspipe train ...;
    each process trains on its share of the data, rank 0 writes RUN_DIR.
    """
    from ceuspipe.train.config import TrainConfig
    from ceuspipe.train.loop import train

    config = TrainConfig(dataset=dataset, run_dir=run_dir, variant=variant, width=width, epochs=epochs,
                         batch_size=batch_size, lr=lr, size=size, threshold=threshold, augment=augment,
                         device=device, seed=seed, workers=workers, resume=resume, fold=fold)
    result = train(config, progress=show_progress())
    if result.history:
        click.echo(f"best val Dice {result.best_dice:.4f} at epoch {result.best_epoch}; "
                   f"checkpoints in {result.run_dir}")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True, help="train, test (or val with --fold).")
@click.option("--fold", type=int, default=None)
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Write metrics.json (and predictions) here.")
@click.option("--save-predictions", is_flag=True, help="Mask and contour-overlay PNGs (needs -o).")
@click.option("--device", default="cpu", show_default=True)
def evaluate_cmd(checkpoint, dataset, split, fold, out, save_predictions, device):
    """Dice and IoU of CHECKPOINT on a split of DATASET, per case and mean ± std."""
    from ceuspipe.train.evaluate import evaluate

    if save_predictions and not out:
        raise click.UsageError("--save-predictions needs -o/--out")
    res = evaluate(checkpoint, dataset, split, out, save_predictions, device=device, fold=fold)
    width = max([len("case")] + [len(r["case"]) for r in res["cases"]])
    click.echo(f"{'case':<{width}}  {'Dice':>7}  {'IoU':>7}")
    for r in res["cases"]:
        click.echo(f"{r['case']:<{width}}  {r['dice']:7.4f}  {r['iou']:7.4f}")
    click.echo(f"{'mean':<{width}}  {res['dice_mean']:7.4f}  {res['iou_mean']:7.4f}")
    click.echo(f"{'std':<{width}}  {res['dice_std']:7.4f}  {res['iou_std']:7.4f}")


@click.command("model-info")
@click.option("--variant", type=click.Choice(VARIANT_CHOICES), default="full", show_default=True)
@click.option("--width", type=float, default=1.0, show_default=True)
@click.option("--size", type=int, default=128, show_default=True, help="Input side in pixels for MACs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def model_info_cmd(variant, width, size, as_json):
    """Parameter count and MACs (FlopCounterMode FLOPs / 2) of a model variant."""
    from ceuspipe.model.info import model_info

    info = model_info(variant, width, size)
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"{variant} width {width:g}: {info['parameters'] / 1e6:.3f} M parameters, "
                   f"{info['macs'] / 1e9:.3f} G MACs at {size}x{size}")


def register(group: click.Group) -> None:
    group.add_command(train_cmd)
    group.add_command(evaluate_cmd)
    group.add_command(model_info_cmd)
