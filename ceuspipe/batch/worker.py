"""The worker side of ``ceuspipe run``: one exam's stages, run in a worker process.

:func:`process_exam` runs every stage of one exam into its private temporary
folders. :func:`iter_outcomes` runs exams in local worker processes (each exam
its own process, so one that crashes, hangs or leaks fails alone and a time
limit can stop it) or on a Dask cluster, and yields their outcomes as they end.
On Dask each task runs its exam in a fresh interpreter too (:func:`run_exam_isolated`;
Dask's worker processes are daemonic and may not start multiprocessing children),
with the same time limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ceuspipe.batch.pipeline_file import DEFAULT_EXAM_TIMEOUT_S, StageSpec
from ceuspipe.errors import CeuspipeError
from ceuspipe.fsutil import is_storage_refusal

log = logging.getLogger("ceuspipe")

#: Warning lines kept per exam (a damaged clip can log one per packet).
MAX_WARNINGS = 20


@dataclass(frozen=True)
class ExamTask:
    """What a worker needs: the exam, its private temporary folder, the stages."""

    exam: Any  # ceuspipe.inputs.ExamInput
    tmp_dir: str
    stages: tuple[StageSpec, ...]


@dataclass(frozen=True)
class ExamOutcome:
    """What a worker returns: ``outputs`` per stage name (paths relative to the exam
    folder), or ``error`` (one line naming the source file). ``seconds``: wall time;
    ``warnings``: the warning lines the stages logged (e.g. an unsure panel layout);
    ``storage``: it failed because the disk refused writes (full, quota, read-only), a
    fault of the machine rather than of the exam."""

    path: str
    ok: bool
    outputs: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    storage: bool = False


def error_line(path: str, exc: BaseException) -> str:
    """One line ``PATH: problem`` for a failed exam."""
    text = " ".join(str(exc).split())
    if isinstance(exc, CeuspipeError):
        return text if text.startswith(path) else f"{path}: {text}"
    return f"{path}: {exc.__class__.__name__}: {text}" if text else f"{path}: {exc.__class__.__name__}"


def _relativize(value: Any, base: Path) -> Any:
    """JSON-able copy of a stage result; paths under ``base`` become relative strings."""
    if isinstance(value, dict):
        return {str(k): _relativize(v, base) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relativize(v, base) for v in value]
    if isinstance(value, os.PathLike):
        p = Path(value)
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return str(p)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def process_exam(task: ExamTask) -> ExamOutcome:
    """Run every stage of one exam into ``task.tmp_dir``. Never raises (bar interrupts)."""
    from ceuspipe.batch.stages import resolve_stage

    t0 = time.monotonic()
    path = str(task.exam.path)
    tmp = Path(task.tmp_dir)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        outputs: dict[str, Any] = {}
        for stage in task.stages:
            fn = resolve_stage(stage.function)
            result = fn(task.exam, tmp, dict(stage.options))
            outputs[stage.name] = _relativize(result or {}, tmp)
        return ExamOutcome(path, True, outputs=outputs, seconds=time.monotonic() - t0)
    except Exception as exc:  # noqa: BLE001 - one bad exam fails alone
        log.debug("exam %s failed", path, exc_info=True)
        shutil.rmtree(tmp, ignore_errors=True)
        return ExamOutcome(path, False, error=error_line(path, exc), seconds=time.monotonic() - t0,
                           storage=is_storage_refusal(exc))


# ------------------------------------------------------------------ executors


def _crashed(task: ExamTask, why: str) -> ExamOutcome:
    return ExamOutcome(str(task.exam.path), False, error=f"{task.exam.path}: worker process died ({why})")


def connect_dask(address: str):
    """A ``distributed.Client`` for ``address``; :class:`CeuspipeError` when unreachable."""
    try:
        from distributed import Client
    except ImportError:
        raise CeuspipeError("--scheduler needs dask distributed: pip install 'ceuspipe[cluster]'") from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CeuspipeError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def _timed_out(task: ExamTask, timeout_s: float, started: float) -> ExamOutcome:
    log.warning("%s: still running after %g s: stopped", task.exam.path, timeout_s)
    return ExamOutcome(str(task.exam.path), False, seconds=time.monotonic() - started,
                       error=f"{task.exam.path}: timed out after {timeout_s:g} s "
                             "(exam_timeout_seconds in the pipeline file); stopped")


def run_exam_isolated(task: ExamTask, timeout_s: float = DEFAULT_EXAM_TIMEOUT_S) -> ExamOutcome:
    """Run one exam in a fresh Python interpreter (``subprocess``), killed after
    ``timeout_s`` seconds: what a Dask task runs. The child gets this process's
    ``sys.path`` and the task on stdin, and sends its :class:`ExamOutcome` back on a
    pipe (never stdout, where stages may print); it dies when this process dies."""
    import pickle
    import subprocess
    import sys
    from multiprocessing.connection import Connection

    started = time.monotonic()
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", "from ceuspipe.batch.worker import _isolated_main; "
                                 "_isolated_main()", str(write_fd)],
                                stdin=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True)
    finally:
        os.close(write_fd)
    conn = Connection(read_fd, writable=False)
    try:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(pickle.dumps((list(sys.path), task)))
            proc.stdin.close()
        if not conn.poll(timeout_s):
            return _timed_out(task, timeout_s, started)
        try:
            return conn.recv()
        except (EOFError, OSError):
            proc.wait(30)
            return _crashed(task, _exit_reason(proc.returncode))
    finally:
        conn.close()
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(30)


def _isolated_main() -> None:
    """Entry of :func:`run_exam_isolated`'s child: ``argv[1]`` is the pipe's write end."""
    import pickle
    import sys
    from multiprocessing.connection import Connection

    conn = Connection(int(sys.argv[1]), readable=False)
    path, task = pickle.load(sys.stdin.buffer)
    sys.path[:] = path
    _worker_main(conn, task, dict(os.environ), os.getcwd())


def _run_dask(tasks: list[ExamTask], client, timeout_s: float) -> Iterator[ExamOutcome]:
    """Dask distributed: ``client.map`` + ``as_completed``, each exam isolated and
    time-limited on its worker (:func:`run_exam_isolated`); the workers need ceuspipe
    installed and the inbox and output root at the same paths. Closes ``client``."""
    from distributed import as_completed as dask_completed

    try:
        futures = client.map(run_exam_isolated, tasks, timeout_s=timeout_s, pure=False)
        owner = {f.key: t for f, t in zip(futures, tasks)}
        for fut in dask_completed(futures):
            try:
                yield fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection...
                yield _crashed(owner[fut.key], f"{exc.__class__.__name__}: {exc}")
            fut.release()
    finally:
        client.close()


def iter_outcomes(tasks: list[ExamTask], *, jobs: int = 1, client=None,
                  timeout_s: float = DEFAULT_EXAM_TIMEOUT_S) -> Iterator[ExamOutcome]:
    """Outcomes in completion order: each exam in its own local worker process
    (``jobs`` at a time, each stopped after ``timeout_s`` seconds), or on the Dask
    cluster of ``client`` (a ``distributed.Client``, closed at the end; the same
    time limit, applied on the worker)."""
    if client is not None:
        return _run_dask(tasks, client, timeout_s)
    if not tasks:
        return iter(())
    if jobs == -1:
        jobs = os.cpu_count() or 1
    return _run_processes(tasks, max(1, min(jobs, len(tasks))), timeout_s)


# ------------------------------------------------------------------ local worker processes


@dataclass
class _Running:
    process: Any
    conn: Any
    task: ExamTask
    started: float
    deadline: float


class _WarningLines(logging.Handler):
    """Collects the one-line warnings a worker's stages log, for the ledger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(" ".join(record.getMessage().split()))


def _die_with_coordinator(conn) -> None:
    """Kill this worker as soon as its coordinator is gone (kill -9, OOM killer).

    The coordinator holds the only read end of ``conn``; when it dies, the write end
    polls as an error. Without this, a worker of a killed run (a hung one included)
    ran on with nobody left to time it out, keeping the forkserver alive with it."""
    import select
    import threading

    fd = os.dup(conn.fileno())  # still valid after conn.close()

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # only POLLERR / POLLHUP, which poll always reports
        while not poller.poll():
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ceuspipe-coordinator-watch", daemon=True).start()


def _worker_main(conn, task: ExamTask, environ: dict, cwd: str) -> None:
    """Entry of a worker process: run one exam, send its :class:`ExamOutcome` back.

    SIGINT is ignored (Ctrl-C reaches the whole process group; the coordinator
    stops its workers itself); the worker kills itself when the coordinator dies;
    the parent's environment and folder are restored (a forkserver child would
    otherwise carry the server's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_coordinator(conn)
    os.environ.clear()
    os.environ.update(environ)
    with contextlib.suppress(OSError):
        os.chdir(cwd)
    collector = _WarningLines()
    log.addHandler(collector)
    if log.level == logging.NOTSET or log.level > logging.WARNING:
        log.setLevel(logging.WARNING)
    outcome = process_exam(task)
    outcome = dataclasses.replace(outcome, warnings=tuple(collector.lines[:MAX_WARNINGS]))
    conn.send(outcome)
    conn.close()


def _context():
    """forkserver: workers are forked from a small clean server process, never from the
    coordinator (whose threads and libraries a plain fork would copy mid-state)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ceuspipe.batch.worker"])
    return ctx


def _run_processes(tasks: list[ExamTask], jobs: int, timeout_s: float) -> Iterator[ExamOutcome]:
    """Each exam in a fresh worker process, ``jobs`` at a time.

    An exam whose process dies (segfault in a decoder, OOM kill) fails alone as
    "worker process died"; one still running ``timeout_s`` seconds after it started
    is killed and fails as "timed out". Stopping the generator (an exception in
    the coordinator: Ctrl-C, SIGTERM) kills every worker still running.
    """
    from multiprocessing.connection import wait

    ctx = _context()
    pending = list(reversed(tasks))
    running: list[_Running] = []
    environ, cwd = dict(os.environ), os.getcwd()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop()
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker_main, args=(send, task, environ, cwd),
                                   name=f"ceuspipe-exam-{Path(task.tmp_dir).name}", daemon=True)
                proc.start()
                send.close()
                now = time.monotonic()
                running.append(_Running(proc, receive, task, now, now + timeout_s))
            soonest = min(r.deadline for r in running)
            wait([r.conn for r in running] + [r.process.sentinel for r in running],
                 timeout=max(0.0, min(1.0, soonest - time.monotonic())))
            for r in list(running):
                outcome = _finished(r, timeout_s)
                if outcome is not None:
                    running.remove(r)
                    r.conn.close()
                    yield outcome
    finally:
        for r in running:
            _kill(r.process)
            r.conn.close()


def _finished(r: _Running, timeout_s: float) -> ExamOutcome | None:
    """The outcome of a worker that is done, died or ran out of time; None while it runs."""
    if r.conn.poll():
        try:
            outcome = r.conn.recv()
        except (EOFError, OSError):
            outcome = None
        r.process.join(5)
        if r.process.is_alive():
            _kill(r.process)
        if outcome is not None:
            return outcome
        return _crashed(r.task, _exit_reason(r.process.exitcode))
    if not r.process.is_alive():
        return _crashed(r.task, _exit_reason(r.process.exitcode))
    if time.monotonic() >= r.deadline:
        _kill(r.process)
        return _timed_out(r.task, timeout_s, r.started)
    return None


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _kill(process) -> None:
    with contextlib.suppress(Exception):
        process.kill()
        process.join(5)
