"""A nightly run on a disk that fills up: nothing failed for the disk's sake, nothing lost.

The output root sits on a real small tmpfs (the test is skipped where mounting is not
allowed). A filler file takes every free byte; the run must stop at the first exam that
cannot be written, with one line, every exam left pending (not failed, not counted as
interrupted), no half-made folder left; once the filler is gone the next run does them
all without ``--retry-failed``. The ledger's reserve lets it record this on a disk
with no free byte.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from ceuspipe.batch.ledger import RESERVE_BYTES, Ledger
from support.builders import small_fs
from support.batch_stages import make_inbox, run_cli, write_pipeline

DIGEST = "support.batch_stages:digest_stage"


def _fill(folder: Path, name: str = "filler") -> Path:
    """Write ``folder/<name>`` until the file system refuses; returns its path."""
    filler = folder / name
    chunk = bytes(64 * 1024)
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    for size in (4096, 512, 1):  # the last partial blocks too
        try:
            with open(filler, "ab", buffering=0) as fh:
                while True:
                    fh.write(bytes(size))
        except OSError:
            pass
    return filler


def _rows(n: int) -> list:
    from ceuspipe.inputs import ExamInput

    return [(ExamInput(Path(f"/inbox/{'x' * 120}/{i:05d}.mp4"), f"P{i:05d}", "E01"), 1, 0.0, "0" * 64)
            for i in range(n)]


def test_ledger_records_on_a_disk_with_no_free_byte_thanks_to_its_reserve(tmp_path):
    with small_fs(tmp_path / "small", size="4m") as small:
        with Ledger(small / "out") as ledger:
            reserve = ledger.reserve
            assert reserve.stat().st_size >= RESERVE_BYTES
            run = ledger.start_run("pipe.toml", "hash")
            _fill(small)
            ledger.mark_running(_rows(800), run, "hash")  # ~300 kB of new pages
            assert ledger.counts()["running"] == 800
            assert not reserve.exists()
            # Full again, now without a reserve: the same write is refused.
            _fill(small, "filler2")
            with pytest.raises(sqlite3.OperationalError, match="full"):
                ledger.mark_running(_rows(1600)[800:], run, "hash")
        (small / "filler").unlink()
        (small / "filler2").unlink()
        with Ledger(small / "out") as ledger:  # space again: the next run makes a new reserve
            assert ledger.reserve.stat().st_size >= RESERVE_BYTES
            assert ledger.counts()["running"] == 800


def _exams_later(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """An empty inbox now and a function-free way to fill it: ``(inbox, later)``, where
    moving ``later``'s files into ``inbox`` adds ``n`` exams (mtimes an hour back)."""
    later = make_inbox(tmp_path / "later", {f"P00{i}/E01.mp4": f"exam {i}".encode() * 100
                                            for i in range(1, n + 1)})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return inbox, later


def _status(out: Path) -> list[tuple[str, str, int]]:
    with Ledger(out) as ledger:
        return [(Path(r.path).parent.name, r.status, r.interrupted) for r in ledger.exams()]


def test_run_on_a_full_disk_starts_nothing_and_the_next_run_does_everything(tmp_path):
    inbox, later = _exams_later(tmp_path, 3)
    with small_fs(tmp_path / "small", size="4m") as small:
        out = small / "out"
        pipe = write_pipeline(tmp_path / "pipe.toml", inbox, out, {"digest": {"function": DIGEST}},
                              settle_seconds=0, recheck_seconds=0, jobs=1)
        assert run_cli("run", str(pipe)).returncode == 0  # makes the ledger and its reserve
        os.rmdir(inbox)
        os.replace(later, inbox)
        filler = _fill(small)

        full = run_cli("run", str(pipe))
        assert full.returncode == 1, (full.stdout, full.stderr)
        errors = [ln for ln in full.stderr.splitlines() if ln.startswith("ceuspipe: error:")]
        assert len(errors) == 1, full.stderr
        assert "the disk refused writes (no space left" in errors[0] and "after 0 of 3" in errors[0]
        assert [s for s in _status(out) if s[1] != "pending"] == []  # nothing running or failed
        assert not list(out.glob("P00*"))

        filler.unlink()
        again = run_cli("run", str(pipe))  # no --retry-failed
        assert again.returncode == 0, (again.stdout, again.stderr)
        assert "3 done, 0 failed" in again.stdout
        assert _status(out) == [("P001", "done", 0), ("P002", "done", 0), ("P003", "done", 0)]
        assert (out / ".ceuspipe" / "ledger.reserve").stat().st_size >= RESERVE_BYTES


def test_disk_filling_during_a_run_stops_it_with_the_rest_pending(tmp_path):
    """Room for one exam's 400 kB: the first is done, the second cannot be written; the
    run stops with one line, the second and third stay pending (not failed, not counted
    as interrupted), no half-made folder is left, and after space is freed the next
    run does them without --retry-failed."""
    inbox, later = _exams_later(tmp_path, 3)
    with small_fs(tmp_path / "small", size="4m") as small:
        out = small / "out"
        pipe = write_pipeline(tmp_path / "pipe.toml", inbox, out,
                              {"digest": {"function": DIGEST, "pad_bytes": 400_000}},
                              settle_seconds=0, recheck_seconds=0, jobs=1)
        assert run_cli("run", str(pipe)).returncode == 0
        os.rmdir(inbox)
        os.replace(later, inbox)
        filler = _fill(small)
        os.truncate(filler, filler.stat().st_size - 600_000)

        full = run_cli("run", str(pipe))
        assert full.returncode == 1, (full.stdout, full.stderr)
        errors = [ln for ln in full.stderr.splitlines() if ln.startswith("ceuspipe: error:")]
        assert len(errors) == 1, full.stderr
        assert "the disk refused writes" in errors[0] and "No space left on device" in errors[0]
        assert "after 1 of 3 exam(s), the rest left pending for the next run" in errors[0]
        assert _status(out) == [("P001", "done", 0), ("P002", "pending", 0), ("P003", "pending", 0)]
        assert not (out / ".ceuspipe" / "tmp").exists()
        assert sorted(p.name for p in (out / "P001" / "E01").iterdir()) == ["batch.json", "digest.txt", "pad.bin"]

        filler.unlink()
        again = run_cli("run", str(pipe))
        assert again.returncode == 0, (again.stdout, again.stderr)
        assert "2 done, 0 failed" in again.stdout
        assert [s[1] for s in _status(out)] == ["done"] * 3
