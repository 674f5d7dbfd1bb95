"""``ceuspipe status OUT``: what the ledger of an output root says (read only)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ceuspipe.batch.ledger import ExamRow, Ledger, RunRow, ledger_path
from ceuspipe.batch.lock import current_holder
from ceuspipe.errors import InputError


@dataclass
class BatchStatus:
    """Counts per status, the latest runs (newest first), failed and running exams."""

    out_root: Path
    counts: dict[str, int]
    runs: list[RunRow] = field(default_factory=list)
    failed: list[ExamRow] = field(default_factory=list)
    running: list[ExamRow] = field(default_factory=list)
    lock_holder: str = ""
    warned: list[ExamRow] = field(default_factory=list)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def read_status(out_root: str | os.PathLike, *, runs: int = 5) -> BatchStatus:
    """Read the ledger of ``out_root``; raises :class:`InputError` when there is none."""
    out_root = Path(out_root)
    if not ledger_path(out_root).exists():
        raise InputError(out_root, "no batch ledger here (.ceuspipe/ledger.sqlite); "
                                   "is this the output root of a `ceuspipe run`?")
    with Ledger(out_root, create=False) as ledger:
        status = BatchStatus(out_root, ledger.counts(), ledger.runs(runs),
                             list(ledger.exams("failed")), list(ledger.exams("running")))
        status.warned = [r for r in ledger.exams("done") if (r.outputs or {}).get("warnings")]
    status.lock_holder = current_holder(out_root)
    return status


def format_status(status: BatchStatus) -> list[str]:
    """Lines for the terminal: counts, last runs, failures with their errors, and the
    warnings of done exams (e.g. a panel layout detected with low confidence)."""
    c = status.counts
    lines = [f"{status.out_root}: {sum(c.values())} exam(s): " +
             ", ".join(f"{c[s]} {s}" for s in ("done", "failed", "running", "pending"))]
    if status.runs:
        last = status.runs[0]
        state = (f"finished {_when(last.finished)}: {last.n_done} done, {last.n_failed} failed, "
                 f"{last.n_deferred} deferred, {last.n_unchanged} unchanged"
                 if last.finished else "not finished (running now, or died)")
        lines.append(f"last run: #{last.id} started {_when(last.started)} on {last.host} "
                     f"(pid {last.pid}), {state}")
        for run in status.runs[1:]:
            lines.append(f"earlier run: #{run.id} started {_when(run.started)} on {run.host}: "
                         f"{run.n_done} done, {run.n_failed} failed, {run.n_deferred} deferred, "
                         f"{run.n_unchanged} unchanged" if run.finished else
                         f"earlier run: #{run.id} started {_when(run.started)} on {run.host}: did not finish")
    else:
        lines.append("last run: none")
    if status.lock_holder:
        lines.append(f"a run is in progress: {status.lock_holder}")
    for row in status.running:
        lines.append(f"running (run {row.run_id}, since {_when(row.started)}): {row.path}")
    for row in status.failed:
        lines.append(f"FAILED {_when(row.finished)} {row.error or row.path}")
    for row in status.warned:
        for warning in row.outputs["warnings"]:
            lines.append(f"WARNING (done {_when(row.finished)}) {warning}")
    return lines
