"""``run_pipeline`` in this process: exactly once, new exams only, failures alone, deferral."""

from __future__ import annotations

import json
import logging
import os
import time

from ceuspipe.batch.ledger import Ledger
from ceuspipe.batch.pipeline_file import load_pipeline
from ceuspipe.batch.runner import run_pipeline
from support.builders import write_clip
from support.batch_stages import make_inbox, write_pipeline

DIGEST = "support.batch_stages:digest_stage"
DECODE = "support.batch_stages:decode_stage"


def _pipeline(tmp_path, stages=None, **top):
    top.setdefault("settle_seconds", 0)
    top.setdefault("recheck_seconds", 0)
    return load_pipeline(write_pipeline(tmp_path / "p.toml", tmp_path / "inbox", tmp_path / "out",
                                        stages or {"digest": {"function": DIGEST, "fail_prefix": "BAD"}},
                                        **top))


def _status(out):
    with Ledger(out) as ledger:
        return {os.path.relpath(r.path, out.parent / "inbox"): r.status for r in ledger.exams()}


def test_run_processes_each_exam_once_and_second_run_does_nothing(tmp_path, caplog):
    make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"one", "P001/E02.mp4": b"two", "P002/a/b.mp4": b"3"})
    pipe = _pipeline(tmp_path)
    caplog.set_level(logging.INFO, logger="ceuspipe")
    first = run_pipeline(pipe)
    out = tmp_path / "out"
    assert first.exit_code == 0 and len(first.done) == 3 and first.failed == []
    digest = (out / "P002" / "a_b" / "digest.txt").read_text().split()
    assert digest[1:] == ["P002", "a_b"]
    record = json.loads((out / "P001" / "E01" / "batch.json").read_text())
    assert record["outputs"]["digest"] == {"digest": "digest.txt", "bytes": 3}
    assert _status(out) == {"P001/E01.mp4": "done", "P001/E02.mp4": "done", "P002/a/b.mp4": "done"}
    assert "done P001/E01" in caplog.text and "3 done, 0 failed" in first.summary()
    assert not (out / ".ceuspipe" / "tmp").exists()

    stamp = (out / "P001" / "E01" / "digest.txt").stat().st_mtime_ns
    second = run_pipeline(pipe)
    assert second.done == [] and second.unchanged == 3 and second.exit_code == 0
    assert (out / "P001" / "E01" / "digest.txt").stat().st_mtime_ns == stamp
    with Ledger(out) as ledger:
        assert [r.n_done for r in ledger.runs()] == [0, 3]
        assert ledger.get(str(tmp_path / "inbox" / "P001" / "E01.mp4")).outputs["dir"] == "P001/E01"


def test_new_exam_between_runs_is_the_only_one_processed(tmp_path):
    make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"one"})
    pipe = _pipeline(tmp_path)
    assert len(run_pipeline(pipe).done) == 1
    make_inbox(tmp_path / "inbox", {"P002/E01.mp4": b"new"})
    report = run_pipeline(pipe)
    assert [os.path.basename(os.path.dirname(p)) for p, _ in report.done] == ["P002"]
    assert report.unchanged == 1


def test_changed_content_is_redone_and_replaces_outputs_but_touch_is_not(tmp_path):
    make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"v1"})
    pipe = _pipeline(tmp_path)
    run_pipeline(pipe)
    clip = tmp_path / "inbox" / "P001" / "E01.mp4"
    os.utime(clip, (time.time() - 100, time.time() - 100))  # same bytes, new mtime
    report = run_pipeline(pipe)
    assert report.done == [] and report.unchanged == 1
    make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"version two"})
    report = run_pipeline(pipe)
    assert len(report.done) == 1
    digest = (tmp_path / "out" / "P001" / "E01" / "digest.txt").read_text()
    assert digest.startswith(__import__("hashlib").sha256(b"version two").hexdigest())
    assert not (tmp_path / "out" / ".ceuspipe" / "trash").exists() or \
        not any((tmp_path / "out" / ".ceuspipe" / "trash").iterdir())


def test_bad_file_fails_alone_and_retry_failed(tmp_path):
    make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"good", "P001/E02.mp4": b"BAD!", "P002/E01.mp4": b"ok"})
    pipe = _pipeline(tmp_path)
    report = run_pipeline(pipe)
    bad = str(tmp_path / "inbox" / "P001" / "E02.mp4")
    assert report.exit_code == 1 and len(report.done) == 2
    assert report.failed == [(bad, f"{bad}: test stage: bad content")]
    assert "1 failed" in report.summary()
    assert not (tmp_path / "out" / "P001" / "E02").exists()

    again = run_pipeline(pipe)  # failed exams are not retried by default
    assert again.exit_code == 0 and again.done == [] and len(again.failed_not_retried) == 1
    assert "not retried" in again.summary()
    retry = run_pipeline(pipe, retry_failed=True)
    assert [p for p, _ in retry.failed] == [bad] and retry.done == []
    with Ledger(tmp_path / "out") as ledger:
        assert ledger.get(bad).attempts == 2

    make_inbox(tmp_path / "inbox", {"P001/E02.mp4": b"fixed"})  # a fixed file is retried by itself
    fixed = run_pipeline(pipe)
    assert [p for p, _ in fixed.done] == [bad] and fixed.exit_code == 0
    assert _status(tmp_path / "out")["P001/E02.mp4"] == "done"


def test_corrupt_and_truncated_videos_fail_alone(tmp_path):
    inbox = tmp_path / "inbox"
    write_clip(inbox / "P001" / "good.mp4", frames=6)
    full = write_clip(tmp_path / "whole.mp4", frames=6, seed=2).read_bytes()
    make_inbox(inbox, {"P002/truncated.mp4": full[: len(full) // 2],
                       "P003/corrupt.mp4": b"\x00\x00\x00\x18ftypisom" + os.urandom(3000)})
    old = time.time() - 3600
    os.utime(inbox / "P001" / "good.mp4", (old, old))
    report = run_pipeline(_pipeline(tmp_path, {"keyframes": {"sample_fps": 2.0, "k": 2},
                                               "decode": {"function": DECODE}}))
    assert report.exit_code == 1
    assert [os.path.basename(p) for p, _ in report.done] == ["good.mp4"]
    failed = dict(report.failed)
    assert sorted(os.path.basename(p) for p in failed) == ["corrupt.mp4", "truncated.mp4"]
    for path, line in failed.items():
        assert line.startswith(path + ": ") and "\n" not in line
    good = tmp_path / "out" / "P001" / "good"
    assert json.loads((good / "frames.json").read_text())["frames"] == 6
    assert json.loads((good / "keyframes.json").read_text())["k"] == 2
    manifest = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 3 and manifest[1].startswith("P001,good,")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".ceuspipe", "P001", "index.html",
                                                                    "manifest.csv"]
    index = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert index.count('data-status="failed"') == 2 and "Failures (2)" in index
    assert str(inbox) not in index and "P003/corrupt.mp4: " in index


def test_file_still_being_copied_is_deferred(tmp_path):
    inbox = make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"done copying"})
    fresh = inbox / "P002" / "E01.mp4"
    fresh.parent.mkdir()
    fresh.write_bytes(b"partial")  # mtime now: younger than the settle time
    pipe = _pipeline(tmp_path, settle_seconds=30)
    report = run_pipeline(pipe)
    assert [os.path.basename(os.path.dirname(p)) for p, _ in report.done] == ["P001"]
    assert [p for p, _ in report.deferred] == [str(fresh)] and "settle" in report.deferred[0][1]
    assert report.exit_code == 0
    with Ledger(tmp_path / "out") as ledger:
        assert ledger.get(str(fresh)) is None

    # Size changing between the two looks: deferred even with no settle time.
    import threading

    def grow():
        time.sleep(0.1)
        with open(fresh, "ab") as fh:
            fh.write(b" more bytes")

    t = threading.Thread(target=grow)
    t.start()
    report = run_pipeline(pipe, settle_s=0, recheck_s=0.4)
    t.join()
    assert [p for p, _ in report.deferred] == [str(fresh)] and "still being copied" in report.deferred[0][1]
    report = run_pipeline(pipe, settle_s=0, recheck_s=0)
    assert [p for p, _ in report.done] == [str(fresh)]


def test_parallel_jobs_and_crashing_worker_fails_alone(tmp_path):
    make_inbox(tmp_path / "inbox", {f"P00{i}/E01.mp4": b"fine %d" % i for i in range(4)})
    make_inbox(tmp_path / "inbox", {"P009/E01.mp4": b"CRASH"})
    stages = {"digest": {"function": DIGEST, "crash_prefix": "CRASH"}}
    report = run_pipeline(_pipeline(tmp_path, stages, jobs=2))
    assert len(report.done) == 4
    assert [os.path.basename(os.path.dirname(p)) for p, _ in report.failed] == ["P009"]
    assert "worker process died" in report.failed[0][1]


def test_empty_inbox_is_not_an_error(tmp_path):
    (tmp_path / "inbox").mkdir()
    report = run_pipeline(_pipeline(tmp_path))
    assert report.exit_code == 0 and report.done == [] and report.failed == []


def test_changed_options_redo_only_with_redo_outdated(tmp_path):
    make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"one"})
    run_pipeline(_pipeline(tmp_path))
    changed = _pipeline(tmp_path, {"digest": {"function": DIGEST, "fail_prefix": "XYZ"}})
    assert run_pipeline(changed).unchanged == 1
    report = run_pipeline(changed, redo_outdated=True)
    assert len(report.done) == 1
    assert run_pipeline(changed, redo_outdated=True).unchanged == 1


def test_exam_that_keeps_killing_its_run_is_failed_after_three_tries(tmp_path):
    make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"one", "P002/E01.mp4": b"two"})
    pipe = _pipeline(tmp_path)
    first = run_pipeline(pipe)
    path = str(tmp_path / "inbox" / "P001" / "E01.mp4")
    with Ledger(tmp_path / "out") as ledger:  # simulate three runs killed while on this exam
        ledger.db.execute("UPDATE exams SET status = 'running', interrupted = 2 WHERE path = ?", (path,))
    report = run_pipeline(pipe)
    assert report.failed and report.failed[0][0] == path and "interrupted 3 times" in report.failed[0][1]
    assert (tmp_path / "out" / "P001" / "E01" / "digest.txt").exists()  # earlier outputs kept
    assert len(first.done) == 2 and report.unchanged == 1
    assert [p for p, _ in run_pipeline(pipe, retry_failed=True).done] == [path]
