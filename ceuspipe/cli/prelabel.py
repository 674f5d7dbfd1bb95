"""``ceuspipe prelabel``: model proposals to correct in LabelMe, CVAT or Label Studio."""

from __future__ import annotations

from pathlib import Path

import click

from ceuspipe.cli.options import default_of
from ceuspipe.prelabel import PrelabelConfig


def _default(name: str):
    return default_of(PrelabelConfig, name)


@click.command("prelabel")
@click.argument("keyframes_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("ann_out", type=click.Path(path_type=Path))
@click.option("--model", "checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Checkpoint (.pt) or exported ONNX model that proposes the lesion.")
@click.option("--threshold", default=_default("threshold"), type=click.FloatRange(0, 1, min_open=True),
              help="Probability threshold [default: the model's].")
@click.option("--clean/--no-clean", default=_default("clean"), show_default=True,
              help="Keep the largest lesion region and fill its holes (one outline per frame).")
@click.option("--tolerance-px", default=_default("tolerance_px"), show_default=True, type=click.FloatRange(0, 5),
              help="How far the simplified polygon may depart from the mask's outline (0: every corner).")
@click.option("--label", default=_default("label"), show_default=True, help="Label / COCO category of the shapes.")
@click.option("--batch-size", default=_default("batch_size"), show_default=True, type=click.IntRange(min=1),
              help="Key frames per model call.")
@click.option("--engine", default=_default("engine"), show_default=True, help="Inference engine (as segment-video).")
@click.option("--device", default=_default("device"), show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", default=_default("cache_dir"), help="Where exported ONNX models are cached.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty ANN_OUT folder.")
def prelabel_cmd(keyframes_dir, ann_out, checkpoint, threshold, clean, tolerance_px, label, batch_size, engine,
                 device, cache_dir, overwrite):
    """Write the model's lesion contour on every key frame in KEYFRAMES_DIR (output of
    `ceuspipe keyframes`) as annotations to correct, into ANN_OUT: LabelMe files with their
    images (ANN_OUT/labelme: `labelme ANN_OUT/labelme`) and one COCO file for CVAT and
    Label Studio (ANN_OUT/coco/proposals.json). build-dataset reads the corrected files
    and counts proposals accepted, edited and redrawn."""
    from ceuspipe.cli import show_progress
    from ceuspipe.prelabel import COCO_FILE, LABELME_DIR, prelabel

    cfg = PrelabelConfig(keyframes_dir=keyframes_dir, checkpoint=checkpoint, out_dir=ann_out, threshold=threshold,
                         clean=clean, tolerance_px=tolerance_px, label=label, batch_size=batch_size, engine=engine,
                         device=device, cache_dir=cache_dir, overwrite=overwrite, progress=show_progress())
    r = prelabel(cfg)
    n = len(r.proposed) + len(r.empty)
    counts = sorted(r.points[s] for s in r.proposed)
    points = f", {counts[0]}-{counts[-1]} points each" if counts else ""
    click.echo(f"{n} key frames: {len(r.proposed)} proposals{points}, {len(r.empty)} without a lesion "
               f"(model {r.model['name']}, sha256 {r.model['sha256'][:12]}, threshold {r.model['threshold']:g})")
    click.echo(f"LabelMe: {ann_out / LABELME_DIR}  COCO: {ann_out / COCO_FILE}")


def register(group: click.Group) -> None:
    group.add_command(prelabel_cmd)
