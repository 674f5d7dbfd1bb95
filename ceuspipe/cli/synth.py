"""``ceuspipe synth OUT``: synthetic dual-panel CEUS exams with ground truth."""

from __future__ import annotations

import click

from ceuspipe.cli.options import default_of
from ceuspipe.synth.config import BREATHING, CEUS_SIDES, COLORMAPS, CONTAINERS, PRESETS, PhantomConfig
from ceuspipe.synth.replenishment import PROTOCOLS


def _phantom(name: str):
    """The default of ``PhantomConfig.name``."""
    return default_of(PhantomConfig, name)


class _SkinOption(click.Option):
    """``--skin``: its help lists the skins registered when it is shown (built in, in code
    or by entry points); names are checked by :class:`~ceuspipe.synth.config.PhantomConfig`."""

    def get_help_record(self, ctx: click.Context):
        from ceuspipe.synth.skins import ENTRY_POINT_GROUP, SKINS

        self.help = (f"Screen skin: {', '.join(SKINS.names())} (built in, or registered in "
                     f"ceuspipe.synth.skins.SKINS or by an entry point in {ENTRY_POINT_GROUP}); combine "
                     "with '+' (e.g. sector+touching, logiq+frozen-bmode).")
        return super().get_help_record(ctx)


class _DynamicRange(click.ParamType):
    """A number of dB, or ``random`` (None: drawn per patient)."""

    name = "DB|random"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).strip().lower() == "random":
            return None
        try:
            return float(value)
        except ValueError:
            self.fail("a number of dB or 'random'", param, ctx)


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option("-n", "--patients", type=click.IntRange(min=1), required=True, help="Number of patients (one exam each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Global seed; patient i's seed derives from it.")
@click.option("--duration-s", type=click.FloatRange(min=0, min_open=True), default=_phantom("duration_s"),
              show_default=True, help="Clip length in seconds.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=_phantom("fps"),
              show_default=True, help="Frames per second.")
@click.option("--width", type=click.IntRange(min=64), default=_phantom("width"), show_default=True, help="Frame width (px).")
@click.option("--height", type=click.IntRange(min=36), default=_phantom("height"), show_default=True, help="Frame height (px).")
@click.option("--panel-size", type=click.IntRange(min=32), default=None,
              help="Square panel side in px (default min(0.8 H, 0.45 W)); a skin with its own screen "
                   "may read it otherwise (logiq: the panel width, default min(0.48 W, H); height width/1.385).")
@click.option("--ceus-side", type=click.Choice(CEUS_SIDES), default=_phantom("ceus_side"), show_default=True,
              help="Side of the CEUS panel ('random': drawn per patient).")
@click.option("--colormap", type=click.Choice(COLORMAPS), default=_phantom("colormap"), show_default=True,
              help="CEUS panel colour map.")
@click.option("--dynamic-range-db", type=_DynamicRange(), default=_phantom("dynamic_range_db"), show_default=True,
              metavar="DB|random",
              help="Display dynamic range in dB, or 'random' (drawn per patient in 50-70 dB).")
@click.option("--flash-at-s", "flash_at_s", type=click.FloatRange(min=0), multiple=True, metavar="SECONDS",
              help="Add a high-MI flash (bright CEUS frames) at this time; repeatable.")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=_phantom("protocol"), show_default=True,
              help="Contrast protocol: one bolus, or replenishment (an infusion; every --flash-at-s flash "
                   "destroys the bubbles and each region refills with a known A and beta, in the truth).")
@click.option("--breathing", type=click.Choice(tuple(BREATHING)), default=_phantom("breathing"),
              show_default=True, help="Breathing motion: normal (2-6 px vertical at a 360 px panel) "
                                      "or large (3x that).")
@click.option("--out-of-plane-episodes", type=click.IntRange(min=0), default=_phantom("out_of_plane_episodes"),
              show_default=True, help="Times the probe leaves the lesion's plane (B-mode shows other "
                                      "tissue, the lesion vanishes); frames flagged in the truth.")
@click.option("--out-of-plane-s", type=click.FloatRange(min=0, min_open=True), default=_phantom("out_of_plane_s"),
              show_default=True, metavar="SECONDS", help="Length of each out-of-plane episode.")
@click.option("--exam-id", default=_phantom("exam_id"), show_default=True, help="Exam file stem.")
@click.option("--crf", type=click.IntRange(0, 51), default=_phantom("crf"), show_default=True, help="libx264 quality.")
@click.option("--preset", default=_phantom("preset"), show_default=True, type=click.Choice(PRESETS),
              help="libx264 speed preset (encoding is most of the generation time).")
@click.option("--skin", cls=_SkinOption, default=_phantom("skin"), show_default=True, metavar="NAME[+NAME...]")
@click.option("--format", "container", type=click.Choice(CONTAINERS), default=_phantom("container"),
              show_default=True, help="Clip container: H.264 MP4 or a multi-frame US DICOM cine "
                                      "(uncompressed RGB or JPEG baseline YBR_FULL_422).")
@click.option("--no-dicom-regions", is_flag=True,
              help="DICOM cines without the Sequence of Ultrasound Regions.")
@click.option("-j", "--jobs", type=int, default=1, show_default=True, help="Patients in parallel (-1: all cores).")
@click.option("--overwrite", is_flag=True, help="Regenerate exams that already exist.")
def synth_cmd(out, patients, seed, duration_s, fps, width, height, panel_size, ceus_side, colormap,
              dynamic_range_db, flash_at_s, protocol, breathing, out_of_plane_episodes, out_of_plane_s, exam_id, crf,
              preset, skin, container, no_dicom_regions, jobs, overwrite):
    """Write OUT/P001/exam1.mp4 ... with ground truth in OUT/P001/exam1.truth/.

    Each exam is a dual-amplitude screen capture (CEUS and B-mode panels side by
    side, burned-in text outside them) with known lesion masks and bolus curves.
    The same --seed gives the same exams whatever --jobs is.
    """
    from ceuspipe.cli import show_progress
    from ceuspipe.fsutil import safe_name
    from ceuspipe.synth.generate import generate_phantom

    if jobs < 1 and jobs != -1:
        raise click.BadParameter("must be >= 1 or -1", param_hint="--jobs")
    try:
        config = PhantomConfig(duration_s=duration_s, fps=fps, width=width, height=height,
                               panel_size=panel_size, ceus_side=ceus_side, colormap=colormap,
                               dynamic_range_db=dynamic_range_db, flash_times_s=tuple(flash_at_s),
                               exam_id=safe_name(exam_id, "exam1"), crf=crf,
                               preset=preset, skin=skin, container=container,
                               dicom_regions=not no_dicom_regions, breathing=breathing,
                               out_of_plane_episodes=out_of_plane_episodes, out_of_plane_s=out_of_plane_s,
                               protocol=protocol)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    clips = generate_phantom(out, patients, config, seed=seed, jobs=jobs, overwrite=overwrite,
                             progress=show_progress())
    click.echo(f"wrote {len(clips)} exam(s) of {config.n_frames} frames under {out}")


def register(group: click.Group) -> None:
    group.add_command(synth_cmd)
