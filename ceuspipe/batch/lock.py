"""One run at a time per output root: ``fcntl.flock`` on ``OUT/.ceuspipe/lock``.

The kernel drops the lock when its holder exits or is killed (``kill -9``
included), so a stale lock file never blocks a later run. The holder writes
``pid host start-time`` into the file so that a refused run can say who holds it.
On NFS, Linux maps ``flock`` onto NFS byte-range locks (NFSv4, or v3 with lockd),
which are also released when the holder dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from ceuspipe.errors import CeuspipeError

EX_TEMPFAIL = 75


class LockHeld(CeuspipeError):
    """Another run holds the output root; the CLI exits with :data:`EX_TEMPFAIL` (75)."""

    exit_code = EX_TEMPFAIL

    def __init__(self, lock_path: Path, holder: str):
        self.lock_path = lock_path
        self.holder = holder
        super().__init__(f"{lock_path}: another run holds this output root ({holder or 'holder unknown'}); "
                         "nothing done, try again later")


def lock_path(out_root: str | os.PathLike) -> Path:
    return Path(out_root) / ".ceuspipe" / "lock"


def current_holder(out_root: str | os.PathLike) -> str:
    """``"pid N on HOST since T"`` when a live run holds the lock of ``out_root``, else ``""``."""
    path = lock_path(out_root)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return ""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "a live process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return ""
    finally:
        os.close(fd)


#: Seconds a starting run retries a lock that is held (a status probe lets go at once).
PROBE_GRACE_S = 0.25


class OutputLock:
    """Exclusive, non-blocking lock on an output root; ``with OutputLock(out):``.

    Raises :class:`LockHeld` when another process holds it: after at most
    :data:`PROBE_GRACE_S` seconds, so that ``ceuspipe status`` probing the lock
    (a shared lock held for microseconds, see :func:`current_holder`) at the
    moment a run starts does not turn that run away.
    """

    def __init__(self, out_root: str | os.PathLike):
        self.path = lock_path(out_root)
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + PROBE_GRACE_S
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.02)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(self.path, holder) from None
            raise
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:  # who holds it: a courtesy for refused runs, not worth failing over on a full disk
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
            os.fsync(fd)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
