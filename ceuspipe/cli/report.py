"""``ceuspipe report``: rebuild report.html of an output folder (or index.html of a batch root)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=str))
def report_cmd(out_dir):
    """Rebuild OUT_DIR/report.html from a segment-video output folder's files.

    Given a batch output root (one with .ceuspipe/ledger.sqlite), rebuild its
    index.html from the ledger instead. Both are written atomically.
    """
    from ceuspipe.batch.ledger import Ledger, ledger_path
    from ceuspipe.errors import InputError
    from ceuspipe.report import write_exam_report, write_index

    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(out, "not a folder")
    if ledger_path(out).is_file() and not (out / "segment.json").is_file():
        with Ledger(out, create=False) as ledger:
            path = write_index(out, list(ledger.exams()))
    else:
        path = write_exam_report(out)
    click.echo(f"wrote {path}")


def register(group: click.Group) -> None:
    group.add_command(report_cmd)
