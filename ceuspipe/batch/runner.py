"""``ceuspipe run``: process every new exam of an inbox exactly once.

One coordinating process holds the output-root lock, reads and writes the
ledger, and hands exams to workers (:mod:`ceuspipe.batch.worker`: a fresh local
process per exam, ``jobs`` at a time, each stopped after the pipeline's
``exam_timeout_seconds``; or a Dask cluster for ``scheduler``). A worker runs
the stages of one exam into ``OUT/.ceuspipe/tmp/<run>/<n>/`` and returns what it
did; it never touches the ledger or the final folders. The coordinator then

1. renames the finished temporary folder to ``OUT/<patient_id>/<exam_id>/``
   (an older version of that folder is replaced only once the new one is complete),
2. marks the exam ``done`` in the ledger.

A crash at any point leaves the exam ``running`` (or its old folder intact), and
the next run redoes it; temporary folders of dead runs are removed at start.
An exam that kills its run :data:`MAX_INTERRUPTED` times is marked failed instead
of being retried forever. A stopped run (Ctrl-C, SIGTERM) kills its workers,
puts its unfinished exams back to pending and releases the lock. So does a disk
that refuses writes (full, quota, read-only: :class:`StorageRefused`): the exam that
met it is not failed, every unfinished exam is left pending, and the next run
(after space is freed) does them without ``--retry-failed``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ceuspipe.batch.discover import discover
from ceuspipe.batch.ledger import ExamRow, Ledger
from ceuspipe.batch.lock import OutputLock
from ceuspipe.batch.pipeline_file import Pipeline
from ceuspipe.batch.stages import finish_batch
from ceuspipe.batch.worker import ExamOutcome, ExamTask, connect_dask, error_line, iter_outcomes
from ceuspipe.errors import OutputError
from ceuspipe.fsutil import is_storage_refusal

log = logging.getLogger("ceuspipe")

MAX_INTERRUPTED = 3
EXAM_RECORD = "batch.json"


class StorageRefused(OutputError):
    """The output disk refused writes during a run; the run stopped with its unfinished
    exams pending (CLI exit 1, one line)."""

    def __init__(self, out_root: Path, first_error: str, done: int, total: int):
        super().__init__(out_root, f"the disk refused writes ({first_error}); run stopped after "
                                   f"{done} of {total} exam(s), the rest left pending for the next run")


# ------------------------------------------------------------------ coordinator


@dataclass
class RunReport:
    """What one run did. ``failed``: ``(path, error line)``; ``deferred``: ``(path, why)``."""

    run_id: int
    out_root: Path
    done: list[tuple[str, Path]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    deferred: list[tuple[str, str]] = field(default_factory=list)
    unchanged: int = 0
    failed_not_retried: list[ExamRow] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    seconds: float = 0.0
    started: float = 0.0  # seconds since the epoch

    @property
    def exit_code(self) -> int:
        """0 when nothing failed in this run, 1 otherwise."""
        return 1 if self.failed else 0

    def summary(self) -> str:
        parts = [f"{len(self.done)} done", f"{len(self.failed)} failed",
                 f"{len(self.deferred)} deferred (still being copied)", f"{self.unchanged} unchanged"]
        if self.failed_not_retried:
            parts.append(f"{len(self.failed_not_retried)} failed earlier (not retried; --retry-failed)")
        if self.recovered:
            parts.append(f"{len(self.recovered)} recovered from a dead run")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else "-"
        return (f"run {self.run_id} ({when}) on {self.out_root}: " + ", ".join(parts)
                + f" in {self.seconds:.1f} s")


def _install(tmp: Path, final: Path, trash: Path) -> None:
    """Move the finished ``tmp`` to ``final``; an existing ``final`` is replaced only
    after ``tmp`` is complete (rename away, rename in, delete the old one)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        trash.mkdir(parents=True, exist_ok=True)
        old = trash / f"{final.parent.name}__{final.name}.{os.getpid()}.{time.time_ns()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean_stale(state_dir: Path) -> None:
    for name in ("tmp", "trash"):
        d = state_dir / name
        if d.exists():
            log.info("removing leftovers of an earlier run: %s", d)
            shutil.rmtree(d, ignore_errors=True)


def _collect(outcomes: Iterable[ExamOutcome], report: RunReport, ledger: Ledger, pipeline: Pipeline,
             by_path: dict, task_of: dict, run_id: int, bar) -> None:
    """Install each finished exam folder and record its outcome, as results arrive."""
    out, state, shash = pipeline.output, pipeline.output / ".ceuspipe", pipeline.stages_hash
    total = len(by_path)
    for n, outcome in enumerate(outcomes, 1):
        bar.update(1)
        cand = by_path[outcome.path]
        exam = cand.exam
        final = out / exam.patient_id / exam.exam_id
        if outcome.ok:
            try:
                tmp = Path(task_of[outcome.path].tmp_dir)
                record = {"source": outcome.path, "sha256": cand.sha256, "size": cand.size,
                          "patient_id": exam.patient_id, "exam_id": exam.exam_id, "run_id": run_id,
                          "pipeline": str(pipeline.path), "stages_hash": shash,
                          "stages": [s.name for s in pipeline.stages], "outputs": outcome.outputs}
                if outcome.warnings:
                    record["warnings"] = list(outcome.warnings)
                (tmp / EXAM_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
                _install(tmp, final, state / "trash")
            except OSError as exc:
                outcome = ExamOutcome(outcome.path, False, error=error_line(outcome.path, exc),
                                      storage=is_storage_refusal(exc))
        for line in outcome.warnings:
            log.warning("%s", line)
        if outcome.ok:
            record = {"dir": f"{exam.patient_id}/{exam.exam_id}", "stages": outcome.outputs}
            if outcome.warnings:
                record["warnings"] = list(outcome.warnings)
            ledger.mark_done(outcome.path, record)
            report.done.append((outcome.path, final))
            log.info("[%d/%d] done %s/%s in %.1f s (%s)", n, total, exam.patient_id,
                     exam.exam_id, outcome.seconds, outcome.path)
        elif outcome.storage:
            # Not the exam's fault: it stays pending, and so does everything still queued.
            ledger.release(outcome.path, f"not done: {outcome.error}")
            log.error("[%d/%d] disk refused writes: %s", n, total, outcome.error)
            raise StorageRefused(out, outcome.error, len(report.done), total)
        else:
            ledger.mark_failed(outcome.path, outcome.error)
            report.failed.append((outcome.path, outcome.error))
            log.error("[%d/%d] FAILED %s", n, total, outcome.error)


def run_pipeline(pipeline: Pipeline, *, jobs: int | None = None, scheduler: str | None = None,
                 retry_failed: bool = False, settle_s: float | None = None,
                 recheck_s: float | None = None, redo_outdated: bool = False,
                 exam_timeout_s: float | None = None, progress: bool = False) -> RunReport:
    """Process the new and changed exams of ``pipeline.inbox`` into ``pipeline.output``.

    ``jobs``/``scheduler``/``settle_s``/``recheck_s``/``exam_timeout_s`` (seconds)
    override the pipeline file. ``redo_outdated``: also redo done exams made with other stages or options.
    Raises :class:`~ceuspipe.batch.lock.LockHeld` at once when another run
    holds the output root; per-exam failures are in the report, not raised.
    """
    from tqdm import tqdm

    t0 = time.monotonic()
    out = pipeline.output
    jobs = pipeline.jobs if jobs is None else jobs
    scheduler = pipeline.scheduler if scheduler is None else (scheduler or None)
    settle_s = pipeline.settle_s if settle_s is None else settle_s
    recheck_s = pipeline.recheck_s if recheck_s is None else recheck_s
    exam_timeout_s = pipeline.exam_timeout_s if exam_timeout_s is None else exam_timeout_s
    state = out / ".ceuspipe"
    shash = pipeline.stages_hash

    with OutputLock(out), Ledger(out) as ledger:
        # We hold the lock, so anything still "running" belongs to a dead run.
        recovered = ledger.recover_interrupted()
        for row in recovered:
            log.warning("%s: interrupted in run %s (died); will redo", row.path, row.run_id)
        _clean_stale(state)
        run_id = ledger.start_run(str(pipeline.path), shash)
        report = RunReport(run_id, out, recovered=[r.path for r in recovered], started=time.time())
        rows = ledger.all()
        found = discover(pipeline.inbox, rows, settle_s=settle_s, recheck_s=recheck_s,
                         retry_failed=retry_failed, redo_outdated_hash=shash if redo_outdated else None)
        for path, size, mtime in found.restamped:
            ledger.touch(path, size, mtime)
        for path, why in found.deferred:
            log.info("deferred %s: %s", path, why)
        report.deferred = found.deferred
        report.unchanged = found.unchanged
        report.failed_not_retried = found.failed_not_retried

        todo = _claim(found.todo, rows, ledger, report, run_id, shash)

        if todo and ledger.used_reserve:  # the disk is full already: every exam would fail
            raise StorageRefused(out, "no space left on device when the run started", 0, len(todo))

        tmp_root = state / "tmp" / f"run{run_id}"
        tasks = [ExamTask(c.exam, str(tmp_root / f"{i:06d}"), pipeline.stages) for i, c in enumerate(todo)]
        by_path = {str(c.exam.path): c for c in todo}
        task_of = {str(t.exam.path): t for t in tasks}
        client = connect_dask(scheduler) if scheduler and todo else None  # before anything is "running"
        ledger.mark_running([(c.exam, c.size, c.mtime, c.sha256) for c in todo], run_id, shash)
        if todo:
            log.info("run %d: %d exam(s) to process (%s)", run_id, len(todo),
                     f"Dask at {scheduler}" if scheduler else f"{jobs} job(s)")

        bar = tqdm(total=len(tasks), unit="exam", desc="exams", disable=not progress)
        try:
            _collect(iter_outcomes(tasks, jobs=jobs, client=client, timeout_s=exam_timeout_s), report,
                     ledger, pipeline, by_path, task_of, run_id, bar)
        except BaseException as exc:
            # Stopped (Ctrl-C, SIGTERM, lost scheduler): unfinished exams go back to pending
            # without counting as a crash; a kill -9 is handled by the next run instead.
            n = ledger.release_running(run_id, f"run {run_id} stopped: {exc.__class__.__name__}")
            log.warning("run %d stopped; %d unfinished exam(s) left for the next run", run_id, n)
            if isinstance(exc, StorageRefused):  # give the space of half-made folders back now
                shutil.rmtree(tmp_root, ignore_errors=True)
                with contextlib.suppress(OSError):
                    tmp_root.parent.rmdir()  # only when empty
            raise
        finally:
            bar.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
        for leftover in (tmp_root.parent, state / "trash"):
            with contextlib.suppress(OSError):
                leftover.rmdir()  # only when empty

        if report.done:
            finish_batch(pipeline.stages, out)
        report.failed.sort()
        report.seconds = time.monotonic() - t0
        ledger.finish_run(run_id, done=len(report.done), failed=len(report.failed),
                          deferred=len(report.deferred), unchanged=report.unchanged)
        _write_index(out, ledger, pipeline.inbox)
        log.debug("%s", report.summary())  # the CLI prints it on stdout
        return report



def _claim(candidates, rows: dict, ledger: Ledger, report: RunReport, run_id: int, shash: str) -> list:
    """The candidates to process: an exam that repeatedly killed its run, or whose output
    folder another source already holds, fails here (recorded in ``ledger`` and ``report``)."""
    todo, claimed = [], {}
    for cand in candidates:
        exam, path = cand.exam, str(cand.exam.path)
        row = rows.get(path)
        key = (exam.patient_id, exam.exam_id)
        owner = claimed.get(key) or ledger.owner_of(*key)
        problem = None
        if row is not None and row.interrupted >= MAX_INTERRUPTED and cand.reason == "interrupted":
            problem = f"{path}: interrupted {row.interrupted} times (does it crash the run?); " \
                      "use --retry-failed to try again"
        elif owner is not None and owner != path:
            problem = f"{path}: output folder {exam.patient_id}/{exam.exam_id} already holds {owner}"
        if problem:
            ledger.mark_running([(exam, cand.size, cand.mtime, cand.sha256)], run_id, shash)
            ledger.mark_failed(path, problem)
            report.failed.append((path, problem))
            log.error("FAILED %s", problem)
            continue
        claimed[key] = path
        todo.append(cand)
    return todo


def _write_index(out: Path, ledger: Ledger, inbox: Path) -> None:
    """Rewrite ``OUT/index.html`` from the ledger; a failure is logged, not raised
    (the exams themselves are done and recorded)."""
    from ceuspipe.errors import CeuspipeError
    from ceuspipe.report.index import write_index

    try:
        write_index(out, list(ledger.exams()), inbox=inbox)
    except (OSError, CeuspipeError) as exc:
        log.error("%s: batch index not written: %s", out / "index.html", exc)


def format_failures(failures: Iterable[tuple[str, str]]) -> list[str]:
    """``FAILED PATH: problem`` lines for a summary."""
    return [f"FAILED {error}" for _, error in failures]
