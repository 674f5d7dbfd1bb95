"""``ceuspipe run PIPELINE.toml`` (cron batch over an inbox) and ``ceuspipe status OUT``."""

from __future__ import annotations

import click


@click.command("run")
@click.argument("pipeline_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("-j", "--jobs", type=int, default=None,
              help="Exams in parallel on this machine (-1: one per core). Default: the pipeline file's.")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Dask scheduler (e.g. tcp://head:8786) that runs the exams on its workers.")
@click.option("--retry-failed", is_flag=True, help="Also redo exams that failed in earlier runs.")
@click.option("--redo-outdated", is_flag=True,
              help="Also redo done exams whose outputs came from other stages or options.")
@click.option("--settle", "settle_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Leave files modified less than this long ago for the next run (default 10).")
@click.option("--recheck", "recheck_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Second look at size/mtime of new files after this long (default 2).")
def run_cmd(pipeline_file, jobs, scheduler, retry_failed, redo_outdated, settle_s, recheck_s):
    """Process the new and changed exams of the pipeline's inbox, each exactly once.

    Exit status: 0 all processed (files still being copied are left for the next
    run), 1 some exam failed (one line each below the summary), 75 another run
    holds the output root (nothing done; harmless under cron), 130/143 stopped by
    Ctrl-C/SIGTERM (unfinished exams are redone by the next run).
    """
    from ceuspipe.batch.lock import LockHeld
    from ceuspipe.batch.pipeline_file import load_pipeline
    from ceuspipe.batch.runner import format_failures, run_pipeline
    from ceuspipe.cli import show_progress

    if jobs is not None and jobs < 1 and jobs != -1:
        raise click.BadParameter("must be >= 1 or -1", param_hint="--jobs")
    pipeline = load_pipeline(pipeline_file)
    # SIGTERM (a cron/systemd timeout) stops cleanly: workers killed, unfinished exams back
    # to pending, the lock released, exit 143 (see ceuspipe.cli).
    try:
        report = run_pipeline(pipeline, jobs=jobs, scheduler=scheduler, retry_failed=retry_failed,
                              settle_s=settle_s, recheck_s=recheck_s, redo_outdated=redo_outdated,
                              progress=show_progress())
    except LockHeld as exc:
        click.echo(f"ceuspipe: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    click.echo(report.summary())
    for line in format_failures(report.failed):
        click.echo(line)
    raise SystemExit(report.exit_code)


@click.command("status")
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.option("--runs", default=1, show_default=True, type=click.IntRange(min=1),
              help="How many recent runs to list.")
def status_cmd(out, runs):
    """Summarise the batch ledger of output root OUT: exams per status, last run, failures."""
    from ceuspipe.batch.status import format_status, read_status

    status = read_status(out, runs=runs)
    for line in format_status(status):
        click.echo(line)


def register(group: click.Group) -> None:
    group.add_command(run_cmd)
    group.add_command(status_cmd)
