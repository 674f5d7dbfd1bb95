"""Atomic output helpers and file-name sanitising.

Outputs are written to a temporary sibling and renamed into place, so a crash
never leaves a half-written file or folder that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: Longest name :func:`safe_name` returns, so that file names built from two ids
#: and a suffix stay well under the 255-byte limit of common file systems.
MAX_NAME = 80

#: ``errno`` values that mean "the disk cannot take this output" (full, quota,
#: read-only, file too large): reported as :class:`~ceuspipe.errors.OutputError`.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_default_mode(path: str | os.PathLike) -> None:
    """Give a ``mkstemp``/``mkdtemp`` result the mode a plain ``open``/``mkdir`` would have.

    Temporary files are created 0600 (folders 0700); outputs renamed from them
    should be readable by whoever shares the output folder, as the umask allows.
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_current_umask())


def safe_name(name: str, fallback: str = "unnamed", max_len: int = MAX_NAME) -> str:
    """Return ``name`` reduced to ``[A-Za-z0-9._-]``, never ``.``/``..``, empty, or
    starting with ``-`` or ``.``, at most ``max_len`` characters.

    Used for every path component derived from input (patient ids, file stems),
    so that nothing from an input can escape the output folder or be taken for
    an option. A longer name is cut and gets ``_`` plus 8 hex digits of the
    SHA-1 of the original, so distinct long names stay distinct.
    """
    cleaned = _UNSAFE.sub("_", name).strip("._-")
    if len(cleaned) > max_len:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = cleaned[:max(1, max_len - 9)].rstrip("._-") + "_" + digest
    return cleaned or fallback


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; return the folders it created, deepest first."""
    created: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders created by :func:`_make_parents` for an output that failed (if still empty)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def output_error(exc: BaseException, final: str | os.PathLike) -> BaseException:
    """The exception to raise when writing ``final`` failed with ``exc``.

    A full, read-only or over-quota disk becomes one :class:`OutputError` line
    naming ``final``; anything else is returned unchanged.
    """
    from ceuspipe.errors import OutputError

    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        reason = exc.strerror or os.strerror(exc.errno)
        err = OutputError(final, f"cannot be written ({reason}); nothing was left half-written")
        err.errno = exc.errno
        return err
    return exc


def is_storage_refusal(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says the disk cannot take
    writes at all: full, over quota, read-only (:data:`DISK_ERRNOS`), or SQLite's
    "database or disk is full". A fault of the place written to, not of the data."""
    import sqlite3

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) in DISK_ERRNOS:
            return True
        if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == 13:
            return True  # SQLITE_FULL
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, mode: int = 0o666) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created with ``mode`` less the umask,
    and its folder, when missing) for the block; other processes wait. The kernel drops
    the lock when the holder dies. A no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux/macOS
        yield
        return
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` on success.

    On an exception the temporary folder is removed and ``final`` is untouched.
    With ``overwrite`` an existing ``final`` is replaced only after the new one is
    complete.
    """
    final = Path(final)
    created = _make_parents(final.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except FileNotFoundError:  # a parallel failed output removed the empty parent just now
        created += _make_parents(final.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except BaseException as exc:
        _remove_empty(created)
        raise output_error(exc, final) from exc
    set_default_mode(tmp)
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final} exists")
            old = final.with_name(f".{final.name}.old.{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        err = output_error(exc, final)
        err = _outside_tmp(err, tmp, final)
        if err is exc:
            raise
        raise err from exc


def _outside_tmp(exc: BaseException, tmp: Path, final: Path) -> BaseException:
    """An :class:`OutputError` about a file inside the temporary folder, renamed to its final place."""
    from ceuspipe.errors import OutputError

    if isinstance(exc, OutputError):
        with contextlib.suppress(ValueError):
            rel = Path(exc.path).relative_to(tmp)
            return OutputError(final / rel, exc.problem)
    return exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    On failure nothing is left: no temporary file and no folder this call created;
    a full or read-only disk is raised as :class:`~ceuspipe.errors.OutputError`.
    ``private``: keep the temporary file's mode 0600 (secrets), never readable by others.
    """
    path = Path(path)
    created = _make_parents(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if not private:
            set_default_mode(tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _remove_empty(created)
        err = output_error(exc, path)
        if err is exc:
            raise
        raise err from exc


def atomic_write_text(path: str | os.PathLike, text: str, *, private: bool = False) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"), private=private)


class AtomicWriterContext:
    """The context-manager half of a streaming writer whose file appears only on ``close()``:
    ``close()`` when the block ends normally, ``abort()`` (drop the partial file) when it
    raises. The writer defines both methods."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@contextlib.contextmanager
def aborted_on_failure(abort: Callable[[], None], final: str | os.PathLike) -> Iterator[None]:
    """Run the block (a writer's finishing steps); when it raises, call ``abort()`` (drop the
    partial output) and raise again, a full or read-only disk as an :class:`OutputError`
    naming ``final``."""
    try:
        yield
    except BaseException as exc:
        abort()
        err = output_error(exc, final)
        if err is exc:
            raise
        raise err from exc
