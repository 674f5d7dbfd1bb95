"""Atomic output helpers and file-name sanitising.

Outputs are written to a temporary sibling and renamed into place, so a crash
never leaves a half-written file or folder that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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


def safe_name(name: str, fallback: str = "unnamed") -> str:
    """Return ``name`` reduced to ``[A-Za-z0-9._-]``, never ``.``/``..`` or empty.

    Used for every path component derived from input (patient ids, file stems),
    so that nothing from an input can escape the output folder.
    """
    cleaned = _UNSAFE.sub("_", name).strip("._-")
    return cleaned or fallback


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` on success.

    On an exception the temporary folder is removed and ``final`` is untouched.
    With ``overwrite`` an existing ``final`` is replaced only after the new one is
    complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    set_default_mode(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))
