"""``ceuspipe segment-video`` (masks, overlay, TIC for a clip) and ``ceuspipe export`` (ONNX)."""

from __future__ import annotations

import click

from ceuspipe.cli.options import default_of, layout_options, layout_overrides
from ceuspipe.segment.config import SegmentConfig
from ceuspipe.segment.precision import PRECISIONS
from ceuspipe.tic.models import MODELS as TIC_MODELS


def _seg(name: str):
    """The default of ``SegmentConfig.name``."""
    return default_of(SegmentConfig, name)


@click.command("segment-video")
@click.argument("clip", type=click.Path(dir_okay=False, path_type=str))
@click.option("--model", "checkpoint", type=click.Path(dir_okay=False, path_type=str),
              help="Checkpoint (.pt). Default: $CEUSPIPE_MODEL, else [segment] model in "
                   "~/.config/ceuspipe/config.toml.")
@click.option("--masks", type=click.Path(path_type=str), default=None,
              help="Use these lesion masks instead of a model: a mask video (mask.mkv, or any lossless one with "
                   "the clip's frame times), a folder of per-frame PNGs, a NIfTI volume, or one PNG (a fixed "
                   "region that follows the motion). Masks the CEUS panel's or the frame's size.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=str),
              help="Output folder. Default: <clip folder>/<clip stem>.ceuspipe/")
@click.option("--sample-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Segment this many frames per second of presentation time [default: every frame].")
@click.option("--batch-size", default=_seg("batch_size"), show_default=True, type=click.IntRange(min=1),
              help="Frames per inference call.")
@click.option("--device", default=_seg("device"), show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--engine", default=_seg("engine"), show_default=True, metavar="NAME",
              help="auto: ONNX Runtime on CPU (exported once, cached), PyTorch fp16 on CUDA; or a registered "
                   "engine: onnx, torch, or one added in ceuspipe.segment.engines or by an entry point "
                   "(group ceuspipe.inference_engines).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=_seg("precision"), show_default=True,
              help="auto: a checkpoint on the CPU runs int8 (calibrated once on the first clip, cached), "
                   "checked against fp32 on frames spread over every clip and redone with fp32 when they "
                   "disagree; fp32 on CUDA. fp32: never int8. int8: keep int8 even when the check fails.")
@click.option("--int8-min-dice", default=_seg("int8_min_dice"), show_default=True, type=click.FloatRange(0, 1),
              help="Int8 must agree with fp32 at this mean mask Dice (calibration and per-clip check).")
@click.option("--dynamic-range-db", default=_seg("dynamic_range_db"), show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Display dynamic range used to linearise grey levels (dB).")
@click.option("--tic-model", type=click.Choice(sorted(TIC_MODELS)), default=_seg("tic_model"),
              show_default=True, help="Bolus model fitted to the time-intensity curve.")
@click.option("--temporal-smoothing", default=_seg("temporal_smoothing"), show_default=True,
              type=click.IntRange(min=0),
              help="Median of lesion probabilities over N neighbouring frames (0: off).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Probability threshold [default: the checkpoint's, 0.5].")
@click.option("--reference/--no-reference", default=_seg("reference"), show_default=True,
              help="Also measure a reference region of parenchyma and report lesion/reference "
                   "parameters (rPE, rWiAUC, ..., dTTP).")
@click.option("--reference-mask", type=click.Path(dir_okay=False, path_type=str), default=None,
              metavar="PNG", help="Reference region for every frame: a PNG of the CEUS panel's size "
                                  "(non-zero = reference) [default: a ring around each frame's mask].")
@click.option("--reference-distance-px", type=click.FloatRange(min=0), default=_seg("reference_distance_px"),
              show_default=True,
              help="Gap between the lesion mask and the reference ring (pixels).")
@click.option("--reference-width-px", type=click.FloatRange(min=0, min_open=True),
              default=_seg("reference_width_px"), show_default=True, help="Width of the reference ring (pixels).")
@click.option("--reference-distance-mm", type=click.FloatRange(min=0), default=None,
              help="Gap in mm instead (needs the pixel size from DICOM ultrasound regions or the layout).")
@click.option("--reference-width-mm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Ring width in mm instead (needs the pixel size).")
@click.option("--no-dedupe", "no_dedupe", is_flag=True,
              help="Treat every frame as acquired (default: frames that repeat the previous one, "
                   "as in a 30 fps screen capture of a 10 Hz scan, reuse its mask and stay out of the curve).")
@click.option("--motion/--no-motion", default=_seg("motion"), show_default=True,
              help="Measure each frame's in-plane motion from the B-mode panel (motion.csv, motion.png): a "
                   "--reference-mask follows it, frames out of plane stay out of the curve.")
@click.option("--maps/--no-maps", default=_seg("maps"), show_default=True,
              help="Perfusion maps: the bolus model fitted per block of the CEUS panel (maps.npz, map_*.png).")
@click.option("--map-block-px", type=click.IntRange(min=1), default=_seg("map_block_px"), show_default=True,
              help="Side of a map block (pixels of the CEUS panel).")
@click.option("--map-block-mm", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Side of a map block in mm instead (needs the pixel size).")
@click.option("--nifti/--no-nifti", default=_seg("nifti"), show_default=True,
              help="Also write the masks as masks.nii.gz (NIfTI-1 with the pixel size and frame times).")
@click.option("--dicom-seg/--no-dicom-seg", default=_seg("dicom_seg"), show_default=True,
              help="DICOM inputs: also write mask_seg.dcm, a DICOM Segmentation referencing the source frames "
                   "(it carries the source's patient attributes, as the standard requires).")
@click.option("--clean-masks/--no-clean-masks", default=_seg("clean_masks"), show_default=True,
              help="Keep each frame's largest connected component and fill its holes.")
@layout_options
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def segment_video_cmd(clip, checkpoint, masks, out_dir, sample_fps, batch_size, device, engine, precision,
                      int8_min_dice, dynamic_range_db, tic_model, temporal_smoothing, threshold, reference, reference_mask,
                      reference_distance_px, reference_width_px, reference_distance_mm, reference_width_mm,
                      nifti, dicom_seg, clean_masks, motion, maps, map_block_px, map_block_mm, no_dedupe, overwrite,
                      **layout_kw):
    """Segment every frame of CLIP: mask.mkv, overlay.mp4, tic.csv/json/png, segment.json, report.html."""
    import sys

    from ceuspipe.cli import show_progress
    from ceuspipe.segment.defaults import default_model
    from ceuspipe.segment.run import SegmentConfig, default_out_dir, segment_video

    if masks is not None and checkpoint is not None:
        raise click.UsageError("give --model or --masks, not both")
    model = None if masks is not None else (checkpoint or str(default_model()))
    config = SegmentConfig(sample_fps=sample_fps, batch_size=batch_size, device=device, engine=engine,
                           precision=precision, int8_min_dice=int8_min_dice,
                           dynamic_range_db=dynamic_range_db, tic_model=tic_model,
                           temporal_smoothing=temporal_smoothing, threshold=threshold,
                           reference=reference, reference_mask=reference_mask,
                           reference_distance_px=reference_distance_px, reference_width_px=reference_width_px,
                           reference_distance_mm=reference_distance_mm, reference_width_mm=reference_width_mm,
                           masks=masks, nifti=nifti, dicom_seg=dicom_seg, clean_masks=clean_masks, motion=motion,
                           maps=maps,
                           map_block_px=map_block_px, map_block_mm=map_block_mm, dedupe=not no_dedupe,
                           overwrite=overwrite,
                           **layout_overrides(layout_kw))
    report = segment_video(clip, model, out_dir or default_out_dir(clip), config, progress=show_progress(),
                           command_line=["ceuspipe", *sys.argv[1:]])
    tic = report.tic or {}
    ttp = ((tic.get("parameters") or {}).get("TTP") or {}).get("value")
    fit = f"TTP {ttp:.1f} s" if tic.get("success") and ttp is not None else \
        f"no TIC fit ({tic.get('reason') or 'unknown'})"
    rpe = ((tic.get("relative_parameters") or {}).get("rPE") or {}).get("value")
    if rpe is not None:
        fit += f", rPE {rpe:.2f}"
    rep = (f"; {report.frames_repeated} repeats (acquired at about {report.acquisition_fps:.3g} frames/s)"
           if report.frames_repeated and report.acquisition_fps else "")
    click.echo(f"{report.frames} frames in {report.wall_s:.1f} s ({report.fps:.1f} frames/s, "
               f"{'given masks' if masks else f'{report.engine} on {report.device}'}); {fit}{rep}")
    if (report.precision or {}).get("fell_back"):
        click.echo(f"warning: {report.precision['reason']}", err=True)
    click.echo(f"outputs: {report.out_dir}")
    click.echo(f"report: {report.out_dir / 'report.html'}")


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--batch", default="dynamic", show_default=True, metavar="dynamic|N",
              help="Batch axis of the exported model: dynamic, or a fixed size N.")
@click.option("--int8", "int8", is_flag=True,
              help="Quantise to int8 (about 3x faster on CPUs with VNNI); needs --calibration.")
@click.option("--calibration", "calibration", multiple=True,
              type=click.Path(exists=True, path_type=str), metavar="DATASET|CLIP...",
              help="With --int8: a build-dataset folder (train cases calibrate, test cases check), "
                   "or clips/folders (alternate evenly spaced frames calibrate / check). Repeatable.")
@click.option("--calibration-frames", default=64, show_default=True, type=click.IntRange(min=1),
              help="Frames used to set the int8 ranges.")
@click.option("--calibration-method", type=click.Choice(["minmax", "percentile", "entropy"]),
              default="minmax", show_default=True)
@click.option("--min-agreement", default=0.95, show_default=True, type=click.FloatRange(0, 1),
              help="Refuse the int8 model when its masks agree with fp32 below this mean Dice "
                   "on the held-out frames.")
@layout_options
def export_cmd(checkpoint, out, batch, int8, calibration, calibration_frames, calibration_method,
               min_agreement, **layout_kw):
    """Export CHECKPOINT to ONNX file OUT for CPU deployment (checked against PyTorch).

    segment-video and batch pipelines take OUT as --model. With --int8 the model
    is quantised and written only when its masks agree with the fp32 model's.
    """
    if batch == "dynamic":
        fixed = None
    else:
        try:
            fixed = int(batch)
        except ValueError:
            raise click.BadParameter(f"expected 'dynamic' or a positive integer, got {batch!r}",
                                     param_hint="--batch") from None
        if fixed < 1:
            raise click.BadParameter("batch must be at least 1", param_hint="--batch")
    if calibration and not int8:
        raise click.UsageError("--calibration is only used with --int8")
    shape = f"{'B' if fixed is None else fixed}x1xSxS float32 in [0,1]"
    if not int8:
        from ceuspipe.segment.export import export_checkpoint

        report = export_checkpoint(checkpoint, out, batch=fixed)
        click.echo(f"wrote {report.path}: inputs ceus, us ({shape.replace('S', str(report.size))}), "
                   f"output logits; max |ONNX - PyTorch| = {report.max_abs_diff:.2e}")
        return
    if not calibration:
        raise click.UsageError("--int8 needs --calibration DATASET or clips")
    from ceuspipe.segment.quantize import export_int8
    from ceuspipe.video.layout import LayoutOptions

    q = export_int8(checkpoint, out, calibration, frames=calibration_frames, batch=fixed,
                    method=calibration_method, min_dice=min_agreement,
                    layout=LayoutOptions(**layout_overrides(layout_kw)))
    a = q.agreement
    click.echo(f"wrote {q.path}: int8 ({q.method}, {q.calibration_frames} calibration frames), inputs ceus, us "
               f"({shape.replace('S', str(q.size))}), output logits")
    click.echo(f"agreement with fp32 on {a.frames} held-out frames: mask Dice mean {a.dice_mean:.4f}, "
               f"min {a.dice_min:.4f}; pixels {100 * a.pixel_agreement:.2f}% equal")


def register(group: click.Group) -> None:
    group.add_command(segment_video_cmd)
    group.add_command(export_cmd)
