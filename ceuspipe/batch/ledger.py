"""The run ledger: one SQLite file per output root recording what happened to every exam.

``OUT/.ceuspipe/ledger.sqlite`` (WAL mode) holds

* ``exams``: per source file (absolute path, the key) its patient/exam ids,
  size (bytes), mtime (s since the epoch), sha256 of the content, status
  (``pending``/``running``/``done``/``failed``), attempts, the run that last
  touched it, started/finished times (s since the epoch), the error line, the
  outputs (JSON, paths relative to ``OUT/<patient_id>/<exam_id>/``) and the
  hash of the stages that produced them;
* ``runs``: per ``ceuspipe run`` its pid, host, pipeline file, start/finish
  times and counts.

Only the coordinating process writes (workers return results to it), always
inside a transaction, and only while it holds :mod:`ceuspipe.batch.lock`; so an
exam found ``running`` at the start of a run belongs to a run that died.

A full disk must not stop the ledger from recording how a run ended: the ledger
keeps ``OUT/.ceuspipe/ledger.reserve`` (:data:`RESERVE_BYTES` of allocated space)
and, when SQLite reports the disk full, deletes it and retries the write once. The
next run that finds space makes it again.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

log = logging.getLogger("ceuspipe")

STATUSES = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exams (
    path TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    exam_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER,
    started REAL,
    finished REAL,
    error TEXT,
    outputs TEXT,
    stages_hash TEXT,
    first_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS exams_status ON exams (status);
CREATE INDEX IF NOT EXISTS exams_ids ON exams (patient_id, exam_id);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    pipeline TEXT,
    stages_hash TEXT,
    started REAL NOT NULL,
    finished REAL,
    n_done INTEGER,
    n_failed INTEGER,
    n_deferred INTEGER,
    n_unchanged INTEGER
);
"""


#: space kept free for the ledger's own writes (a run's bookkeeping is a few kB)
RESERVE_BYTES = 1 << 20
_SQLITE_FULL, _SQLITE_IOERR = 13, 10


def _disk_refusal(exc: sqlite3.OperationalError) -> bool:
    """SQLite's "database or disk is full", or an I/O error (what a full disk gives while
    it makes the ``-shm`` file)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_FULL, _SQLITE_IOERR)

_W = TypeVar("_W", bound=Callable[..., Any])


def _survives_full_disk(write: _W) -> _W:
    """Run a ledger write; when SQLite finds the disk full, free the reserve and retry once."""

    @functools.wraps(write)
    def wrapper(self: "Ledger", *args, **kwargs):
        try:
            return write(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _disk_refusal(exc) or not self.free_reserve():
                raise
            log.warning("%s: disk full; used the ledger's reserved space to record this", self.path)
            return write(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def ledger_path(out_root: str | os.PathLike) -> Path:
    """``OUT/.ceuspipe/ledger.sqlite``."""
    return Path(out_root) / ".ceuspipe" / "ledger.sqlite"


@dataclass(frozen=True)
class ExamRow:
    """One row of ``exams`` (times in seconds since the epoch, size in bytes)."""

    path: str
    patient_id: str
    exam_id: str
    size: int
    mtime: float
    sha256: str
    status: str
    attempts: int
    interrupted: int
    run_id: int | None
    started: float | None
    finished: float | None
    error: str | None
    outputs: dict[str, Any] | None
    stages_hash: str | None
    first_seen: float


@dataclass(frozen=True)
class RunRow:
    id: int
    pid: int
    host: str
    pipeline: str | None
    stages_hash: str | None
    started: float
    finished: float | None
    n_done: int | None
    n_failed: int | None
    n_deferred: int | None
    n_unchanged: int | None


def _exam(row: sqlite3.Row) -> ExamRow:
    d = dict(row)
    d["outputs"] = json.loads(d["outputs"]) if d["outputs"] else None
    return ExamRow(**d)


class Ledger:
    """Open (creating if asked) the ledger of an output root. Use as a context manager."""

    def __init__(self, out_root: str | os.PathLike, *, create: bool = True):
        self.path = ledger_path(out_root)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise FileNotFoundError(self.path)
        self.reserve = self.path.with_name("ledger.reserve")
        self.used_reserve = False  # the disk was full: a run should start no exam
        if create:
            self._make_reserve()
        self._open(create)

    def _open(self, create: bool) -> None:
        """Connect (and, with ``create``, set WAL mode and the schema). On a full disk
        SQLite cannot even make its ``-wal``/``-shm`` files: free the reserve, try again."""
        for attempt in (1, 2):
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                self.db.row_factory = sqlite3.Row
                self.db.execute("PRAGMA busy_timeout = 30000")
                if create:
                    self.db.execute("PRAGMA journal_mode = WAL")
                    self.db.execute("PRAGMA synchronous = FULL")
                    with self.transaction():
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                self.db.execute(statement)
                        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                        (str(SCHEMA_VERSION),))
                return
            except sqlite3.OperationalError as exc:
                self.db.close()
                if attempt == 2 or not _disk_refusal(exc) or not self.free_reserve():
                    raise
                log.warning("%s: disk full; opening the ledger with its reserved space", self.path)

    # -- plumbing
    def _make_reserve(self) -> None:
        """Allocate :data:`RESERVE_BYTES` in ``ledger.reserve`` unless it is there (no
        space for it: go on without, the write that needs it will say so)."""
        try:
            if self.reserve.exists() and self.reserve.stat().st_size >= RESERVE_BYTES:
                return
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                try:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
                except OSError:  # file systems without fallocate: real zeros
                    os.pwrite(fd, bytes(RESERVE_BYTES), 0)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("no ledger reserve: %s", exc)
            try:
                self.reserve.unlink(missing_ok=True)
            except OSError:
                pass

    def free_reserve(self) -> bool:
        """Delete the reserve file (:attr:`used_reserve` becomes True); False when there
        was none to free."""
        try:
            self.reserve.unlink()
            self.used_reserve = True
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            return False

    def transaction(self) -> "_Tx":
        """``with ledger.transaction():`` - everything inside commits together or not at all."""
        return Ledger._Tx(self.db)

    # -- runs
    @_survives_full_disk
    def start_run(self, pipeline: str, stages_hash: str) -> int:
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs (pid, host, pipeline, stages_hash, started) VALUES (?, ?, ?, ?, ?)",
                (os.getpid(), socket.gethostname(), pipeline, stages_hash, time.time()))
            return int(cur.lastrowid)

    @_survives_full_disk
    def finish_run(self, run_id: int, *, done: int, failed: int, deferred: int, unchanged: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE runs SET finished = ?, n_done = ?, n_failed = ?, n_deferred = ?, "
                            "n_unchanged = ? WHERE id = ?",
                            (time.time(), done, failed, deferred, unchanged, run_id))

    def runs(self, limit: int = 10) -> list[RunRow]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [RunRow(**dict(r)) for r in rows]

    # -- exams
    def get(self, path: str) -> ExamRow | None:
        row = self.db.execute("SELECT * FROM exams WHERE path = ?", (path,)).fetchone()
        return _exam(row) if row else None

    def all(self) -> dict[str, ExamRow]:
        return {r["path"]: _exam(r) for r in self.db.execute("SELECT * FROM exams")}

    def exams(self, status: str | None = None) -> Iterator[ExamRow]:
        sql, args = "SELECT * FROM exams", ()
        if status:
            sql, args = sql + " WHERE status = ?", (status,)
        for row in self.db.execute(sql + " ORDER BY patient_id, exam_id, path", args):
            yield _exam(row)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self.db.execute("SELECT status, COUNT(*) FROM exams GROUP BY status"):
            counts[status] = n
        return counts

    def owner_of(self, patient_id: str, exam_id: str) -> str | None:
        """Source path whose outputs occupy ``OUT/<patient_id>/<exam_id>`` (a done exam), if any."""
        row = self.db.execute("SELECT path FROM exams WHERE patient_id = ? AND exam_id = ? "
                              "AND status = 'done'", (patient_id, exam_id)).fetchone()
        return row["path"] if row else None

    @_survives_full_disk
    def recover_interrupted(self) -> list[ExamRow]:
        """Turn exams left ``running`` by a dead run back into ``pending`` (counted in
        ``interrupted``); returns them as they were. Call only while holding the lock."""
        rows = list(self.exams("running"))
        with self.transaction():
            self.db.execute("UPDATE exams SET status = 'pending', interrupted = interrupted + 1, "
                            "error = 'interrupted: the run processing it died' WHERE status = 'running'")
        return rows

    @_survives_full_disk
    def release_running(self, run_id: int, note: str) -> int:
        """Put the exams still ``running`` in ``run_id`` back to ``pending`` (a run that
        stopped cleanly, not a crash); returns how many."""
        with self.transaction():
            cur = self.db.execute("UPDATE exams SET status = 'pending', error = ? "
                                  "WHERE status = 'running' AND run_id = ?", (note, run_id))
            return cur.rowcount

    @_survives_full_disk
    def release(self, path: str, note: str) -> None:
        """Put one ``running`` exam back to ``pending`` with ``note`` as its error, not
        counted as an interruption (it failed for a reason outside the exam)."""
        with self.transaction():
            self.db.execute("UPDATE exams SET status = 'pending', error = ? WHERE path = ?", (note, path))

    @_survives_full_disk
    def mark_running(self, items: list[tuple[Any, int, float, str]], run_id: int, stages_hash: str) -> None:
        """Record ``(exam, size, mtime, sha256)`` items as ``running`` in ``run_id``, in one
        transaction (new rows are inserted; known rows keep first_seen and counters)."""
        now = time.time()
        with self.transaction():
            for exam, size, mtime, sha in items:
                self.db.execute(
                    "INSERT INTO exams (path, patient_id, exam_id, size, mtime, sha256, status, attempts,"
                    " run_id, started, stages_hash, first_seen) VALUES (?, ?, ?, ?, ?, ?, 'running', 1,"
                    " ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET patient_id = excluded.patient_id,"
                    " exam_id = excluded.exam_id, size = excluded.size, mtime = excluded.mtime,"
                    " sha256 = excluded.sha256, status = 'running', attempts = attempts + 1,"
                    " run_id = excluded.run_id, started = excluded.started, finished = NULL,"
                    " error = NULL, stages_hash = excluded.stages_hash",
                    (str(exam.path), exam.patient_id, exam.exam_id, size, mtime, sha, run_id, now,
                     stages_hash, now))

    @_survives_full_disk
    def mark_done(self, path: str, outputs: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute("UPDATE exams SET status = 'done', finished = ?, error = NULL, outputs = ?, "
                            "interrupted = 0 WHERE path = ?",
                            (time.time(), json.dumps(outputs, sort_keys=True), path))

    @_survives_full_disk
    def mark_failed(self, path: str, error: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE exams SET status = 'failed', finished = ?, error = ? WHERE path = ?",
                            (time.time(), error, path))

    @_survives_full_disk
    def touch(self, path: str, size: int, mtime: float) -> None:
        """Same content, new size/mtime stamp (e.g. the file was copied again)."""
        with self.transaction():
            self.db.execute("UPDATE exams SET size = ?, mtime = ? WHERE path = ?", (size, mtime, path))
