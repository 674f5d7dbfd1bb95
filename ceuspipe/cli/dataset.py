"""``ceuspipe build-dataset`` and ``ceuspipe annotate-phantom``."""

from __future__ import annotations

from pathlib import Path

import click

from ceuspipe.cli.options import default_of
from ceuspipe.dataset.build import BuildConfig


def _build(name: str):
    """The default of ``BuildConfig.name``."""
    return default_of(BuildConfig, name)


def _formats(ctx, param, values: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--format`` values (repeated and/or comma lists) checked against the registry now,
    so formats registered after import (in code or by an entry point) are accepted."""
    from ceuspipe.configs import ConfigError
    from ceuspipe.dataset.formats import FORMATS

    names = tuple(dict.fromkeys(n.strip() for v in values for n in v.split(",") if n.strip()))
    for n in names:
        if n not in FORMATS:
            raise ConfigError("--format", f"unknown annotation format {n!r}; known: {', '.join(FORMATS.names())}")
    return names or None


@click.command("build-dataset")
@click.argument("keyframes_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("annotations_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--frames-per-patient", default=_build("frames_per_patient"), show_default=True, type=click.IntRange(min=1),
              help="Annotated key frames drawn per patient.")
@click.option("--test-fraction", default=_build("test_fraction"), show_default="0.3333 (2:1)",
              type=click.FloatRange(0, 1, max_open=True), help="Fraction of patients in the test split.")
@click.option("--folds", default=_build("folds"), show_default=True, type=click.IntRange(min=0),
              help="Cross-validation folds over the training patients (0: none, else >= 2).")
@click.option("--seed", default=_build("seed"), show_default=True, type=int, help="Seed of the draw and the split.")
@click.option("--max-tries", default=_build("max_tries"), show_default=True, type=click.IntRange(min=1),
              help="Random redraws before the coordinate-descent refinement.")
@click.option("--ks-threshold", default=None, type=click.FloatRange(0, 1),
              help="Stop as soon as the KS distance to uniform is at or below this (default: search fully).")
@click.option("--min-separation-s", default=_build("min_separation_s"), show_default=True, type=click.FloatRange(min=0),
              help="Frames of one exam at least this many seconds apart (when the patient allows).")
@click.option("--label", default=None, help="Lesion = shapes with this LabelMe label / COCO category "
                                           "(default: every shape but LabelMe's _background_).")
@click.option("--format", "formats", multiple=True, callback=_formats, metavar="NAME[,NAME...]",
              help="Annotation formats read (repeatable) [default: every registered one: built in coco, labelme, "
                   "png-mask; plug-ins of the entry-point group ceuspipe.annotation_formats].")
@click.option("--name", default=_build("name"), show_default=True, help="Dataset name in dataset.json.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUT folder.")
@click.option("--pseudonymize", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="KEYFILE",
              help="Patient/exam ids and stems become keyed-hash pseudonyms, no source path is written; "
                   "the secret and mapping live only in KEYFILE (created on first use; outside OUT).")
def build_dataset_cmd(keyframes_dir, annotations_dir, out, frames_per_patient, test_fraction, folds, seed,
                      max_tries, ks_threshold, min_separation_s, label, formats, name, overwrite, pseudonymize):
    """Build a grey-level balanced, patient-split dataset in OUT from the key frames in
    KEYFRAMES_DIR (output of `ceuspipe keyframes`) and the annotations in ANNOTATIONS_DIR
    (LabelMe JSON, COCO JSON, mask PNGs or a plug-in format; see data/README.md)."""
    from ceuspipe.cli import show_progress
    from ceuspipe.dataset.build import build_dataset

    cfg = BuildConfig(keyframes_dir=keyframes_dir, annotations_dir=annotations_dir, out_dir=out,
                      frames_per_patient=frames_per_patient, test_fraction=test_fraction, folds=folds,
                      seed=seed, max_tries=max_tries, ks_threshold=ks_threshold,
                      min_separation_s=min_separation_s, label=label, formats=formats, name=name,
                      overwrite=overwrite, progress=show_progress(), pseudonymize=pseudonymize)
    r = build_dataset(cfg)
    b = r.balance
    click.echo(f"{len(r.cases)} cases ({r.n_train} train, {r.n_test} test) from {len(r.patients)} patients"
               f"{f', {len(r.split.folds)} folds' if r.split.folds else ''}")
    click.echo(f"key frames: {r.n_keyframes}, annotated: {r.n_annotated}, unannotated: {len(r.unannotated)}, "
               f"annotation problems: {len(r.problems)}, unmatched annotation files: {len(r.unmatched)}")
    click.echo(f"grey-level uniformity (KS distance, lower is better): all annotated {b.all_candidates:.3f}, "
               f"single random draw {b.single_draw:.3f}, balanced {b.balanced:.3f} "
               f"({b.tries} draws, {b.sweeps} refinement sweeps, seed {b.seed})")
    if b.shortfall:
        click.echo(f"patients with fewer annotated frames than requested: {len(b.shortfall)}")
    if r.patients_without_annotation:
        click.echo(f"patients left out (no annotated frame): {len(r.patients_without_annotation)}")
    if r.proposals.outcomes:
        pr = r.proposals.summary()
        change = pr["mean_boundary_change_px"]
        click.echo(f"machine proposals: {pr['proposals']}: {pr['accepted']} accepted unchanged, {pr['edited']} edited, "
                   f"{pr['redrawn']} redrawn; mean boundary change "
                   f"{'n/a' if change is None else f'{change:.2f} px'} (proposals.csv)")
    for p in r.problems:
        click.echo(f"  problem: {p}", err=True)
    click.echo(f"dataset: {out}/dataset.json")


def _frames_per_exam(ctx, param, value: str) -> int | None:
    if value is None or value.lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a positive integer nor 'all'") from None
    if n < 1:
        raise click.BadParameter("must be at least 1 (or 'all')")
    return n


@click.command("annotate-phantom")
@click.argument("keyframes_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("phantom_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("ann_out", type=click.Path(path_type=Path))
@click.option("--frames-per-exam", default="all", show_default=True, callback=_frames_per_exam,
              help="Key frames annotated per exam, spread in time: a number or 'all'.")
@click.option("--label", default="lesion", show_default=True, help="Label of the written polygons.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty ANN_OUT folder.")
def annotate_phantom_cmd(keyframes_dir, phantom_dir, ann_out, frames_per_exam, label, overwrite):
    """Write LabelMe annotations (<stem>_ceus.json) into ANN_OUT for the key frames in
    KEYFRAMES_DIR of phantom clips under PHANTOM_DIR, from the phantom's ground truth."""
    from ceuspipe.synth.annotate import annotate_phantom

    r = annotate_phantom(keyframes_dir, phantom_dir, ann_out, frames_per_exam, label, overwrite)
    click.echo(f"{len(r.written)} key frames annotated, {len(r.skipped)} skipped (no ROI in the crop): "
               f"{ann_out}")


def register(group: click.Group) -> None:
    group.add_command(build_dataset_cmd)
    group.add_command(annotate_phantom_cmd)
