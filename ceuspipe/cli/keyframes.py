"""``ceuspipe keyframes``: 1 fps sampling and top-k key frames for many exams."""

from __future__ import annotations

import click

from ceuspipe.cli.options import layout_options, layout_overrides


@click.command("keyframes")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option("--sample-fps", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Sampling rate in frames per second of presentation time.")
@click.option("-k", "--top-k", "k", default=40, show_default=True, type=click.IntRange(min=1),
              help="Key frames kept per exam (largest grey-level change).")
@click.option("--scorer", default=None, metavar="NAME",
              help="How a sample is scored [default: the paper's mean grey-level change of the CEUS panel, "
                   "grey-change]; or a "
                   "scorer registered in ceuspipe.keyframes.scorers or by an entry point "
                   "(group ceuspipe.keyframe_scorers).")
@layout_options
@click.option("-j", "--jobs", default=1, show_default=True, type=int,
              help="Exams processed in parallel (-1: one per core).")
@click.option("--overwrite", is_flag=True, help="Redo exams whose output folder exists.")
@click.option("--pseudonymize", "pseudonymize", type=click.Path(dir_okay=False, path_type=str), default=None,
              metavar="KEYFILE", help="Replace patient and exam ids by keyed-hash pseudonyms and write no "
                                      "source path; the secret and the mapping live only in KEYFILE "
                                      "(created on first use; must be outside OUT).")
def keyframes_cmd(inputs, out, sample_fps, k, scorer, jobs, overwrite, pseudonymize, **layout_kw):
    """Extract key frames from INPUTS (videos, DICOM files, folders) into OUT.

    Per exam: OUT/<patient>/<exam>/ with PNG frames and panel crops, keyframes.json
    and scores.csv; over all exams: OUT/manifest.csv. Exams whose folder exists are
    skipped unless --overwrite.
    """
    from ceuspipe.cli import show_progress
    from ceuspipe.inputs import find_inputs
    from ceuspipe.keyframes import KeyframeConfig, run_keyframes

    chosen = {} if scorer is None else {"scorer": scorer}  # the default lives in KeyframeConfig
    config = KeyframeConfig(sample_fps=sample_fps, k=k, overwrite=overwrite, pseudonymize=pseudonymize,
                            **chosen, **layout_overrides(layout_kw))
    exams = find_inputs(inputs)
    report = run_keyframes(exams, out, config, jobs=jobs, progress=show_progress())
    done, skipped, failed = (report.by_status(s) for s in ("done", "skipped", "failed"))
    if done or skipped:
        frames = sum(r.n_selected for r in done)
        click.echo(f"{len(exams)} exam(s): {len(done)} done ({frames} key frames), "
                   f"{len(skipped)} skipped (exist; --overwrite to redo), {len(failed)} failed")
        click.echo(f"manifest: {out}/manifest.csv")
    for r in failed:  # one line per failed exam, naming its file and the problem
        click.echo(f"ceuspipe: error: {r.error}", err=True)
    if failed:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(keyframes_cmd)
