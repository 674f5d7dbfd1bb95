"""Find the exams of an inbox that a run must process, and the ones to leave alone.

An exam is *to do* when it is new, when its content changed since it was done
(sha256 differs), when an earlier run died while processing it, or when it
failed and ``retry_failed`` is set (or its content changed since). A file that
is still being copied is *deferred* to the next run: its mtime is younger than
``settle_s`` seconds, or its size/mtime changed between two looks ``recheck_s``
seconds apart or while it was being hashed.

Known files whose size and mtime are unchanged are not re-hashed (a nightly run
over a large archive reads only new files); a file whose stamp changed but whose
content did not is reported in ``restamped`` and stays done.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ceuspipe.batch.ledger import ExamRow
from ceuspipe.errors import InputError

log = logging.getLogger("ceuspipe")

HASH_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike, chunk: int = HASH_CHUNK) -> str:
    """Hex sha256 of a file read in ``chunk``-byte pieces (memory stays flat)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Candidate:
    """An exam to process: ``size`` in bytes, ``mtime`` in s since the epoch,
    ``reason`` one of ``new``, ``changed``, ``interrupted``, ``retry``, ``pending``,
    ``outdated``."""

    exam: object  # ceuspipe.inputs.ExamInput
    size: int
    mtime: float
    sha256: str
    reason: str


@dataclass
class Discovery:
    todo: list[Candidate] = field(default_factory=list)
    deferred: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    unchanged: int = 0
    failed_not_retried: list[ExamRow] = field(default_factory=list)
    restamped: list[tuple[str, int, float]] = field(default_factory=list)  # (path, size, mtime)


def _stamp(path: Path) -> tuple[int, float] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime


def _classify(row: ExamRow, cand: Candidate, retry_failed: bool, out: Discovery,
              outdated_hash: str | None) -> None:
    """Decide for a file whose content equals the ledger's."""
    if row.status == "done":
        if outdated_hash is not None and row.stages_hash != outdated_hash:
            out.todo.append(Candidate(cand.exam, cand.size, cand.mtime, cand.sha256, "outdated"))
        else:
            out.unchanged += 1
    elif row.status == "failed":
        if retry_failed:
            out.todo.append(Candidate(cand.exam, cand.size, cand.mtime, cand.sha256, "retry"))
        else:
            out.failed_not_retried.append(row)
    else:  # pending (left by a dead run) or running
        reason = "interrupted" if row.interrupted else "pending"
        out.todo.append(Candidate(cand.exam, cand.size, cand.mtime, cand.sha256, reason))


def discover(inbox: str | os.PathLike, rows: dict[str, ExamRow], *, settle_s: float, recheck_s: float,
             retry_failed: bool = False, redo_outdated_hash: str | None = None,
             now: float | None = None) -> Discovery:
    """Compare the inbox with the ledger ``rows`` (by absolute source path).

    With ``redo_outdated_hash``, done exams whose outputs were made by other stages or
    options (another stages hash) are redone too (reason ``outdated``).

    Reads no ledger and writes none: the caller records the outcome.
    Raises :class:`InputError` when the inbox is not a readable folder.
    """
    from ceuspipe.inputs import find_inputs

    inbox = Path(inbox)
    if not inbox.is_dir():
        raise InputError(inbox, "inbox folder not found")
    out = Discovery()
    now = time.time() if now is None else now
    to_check: list[tuple[object, int, float]] = []
    try:
        exams = find_inputs([inbox])
    except InputError:
        if not inbox.is_dir():
            raise
        exams = []  # an empty inbox is the normal state between deliveries
    for exam in exams:
        key = str(exam.path)
        stamp = _stamp(Path(exam.path))
        if stamp is None:
            continue  # vanished since listing
        size, mtime = stamp
        row = rows.get(key)
        if row is not None and row.size == size and row.mtime == mtime:
            _classify(row, Candidate(exam, size, mtime, row.sha256, ""), retry_failed, out,
                      redo_outdated_hash)
        elif now - mtime < settle_s:
            out.deferred.append((key, f"modified {now - mtime:.1f} s ago (settle time {settle_s:g} s)"))
        else:
            to_check.append((exam, size, mtime))

    if to_check and recheck_s > 0:
        time.sleep(recheck_s)
    for exam, size, mtime in to_check:
        key = str(exam.path)
        if recheck_s > 0 and _stamp(Path(exam.path)) != (size, mtime):
            out.deferred.append((key, f"size or mtime changed within {recheck_s:g} s (still being copied)"))
            continue
        try:
            sha = sha256_file(exam.path)
        except OSError as exc:
            out.deferred.append((key, f"cannot read yet: {exc.strerror or exc}"))
            continue
        if _stamp(Path(exam.path)) != (size, mtime):
            out.deferred.append((key, "changed while being hashed (still being copied)"))
            continue
        row = rows.get(key)
        cand = Candidate(exam, size, mtime, sha, "new" if row is None else "changed")
        if row is not None and row.sha256 == sha:
            out.restamped.append((key, size, mtime))
            _classify(row, cand, retry_failed, out, redo_outdated_hash)
        else:
            out.todo.append(cand)
    out.todo.sort(key=lambda c: str(c.exam.path))
    return out
