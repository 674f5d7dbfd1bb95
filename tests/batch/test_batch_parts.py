"""Pipeline-file checks, the lock, the ledger and discovery on their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ceuspipe.batch.discover import discover, sha256_file
from ceuspipe.batch.ledger import Ledger
from ceuspipe.batch.lock import EX_TEMPFAIL, LockHeld, OutputLock, current_holder
from ceuspipe.batch.pipeline_file import load_pipeline
from ceuspipe.errors import InputError
from ceuspipe.inputs import ExamInput
from support.builders import write_checkpoint
from support.batch_stages import make_inbox


def _load(tmp_path, text):
    path = tmp_path / "conf" / "p.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path, load_pipeline(path)


def test_pipeline_file_paths_order_and_defaults(tmp_path):
    path, pipe = _load(tmp_path, 'inbox = "../in"\noutput = "/abs/out"\n'
                                 '[stages.keyframes]\nk = 5\nlayout_file = "lay.json"\n'
                                 '[stages.mine]\nfunction = "support.batch_stages:digest_stage"\nx = 1\n')
    assert pipe.inbox == tmp_path / "in" and pipe.output == Path("/abs/out")
    assert [s.name for s in pipe.stages] == ["keyframes", "mine"]
    assert pipe.stages[0].options == {"k": 5, "layout_file": str(tmp_path / "conf" / "lay.json")}
    assert pipe.stages[1].function == "support.batch_stages:digest_stage" and pipe.stages[1].options == {"x": 1}
    assert (pipe.jobs, pipe.scheduler, pipe.settle_s, pipe.recheck_s) == (1, None, 10.0, 2.0)
    _, other = _load(tmp_path, path.read_text().replace("k = 5", "k = 6"))
    assert other.stages_hash != pipe.stages_hash and len(pipe.stages_hash) == 16


@pytest.mark.parametrize("text, message", [
    ('output = "o"\n[stages.keyframes]\n', "inbox: missing"),
    ('inbox = "i"\noutput = "o"\n', "stages: missing"),
    ('inbox = "i"\noutput = "o"\njobs = "2"\n[stages.keyframes]\n', "jobs: must be an integer"),
    ('inbox = "i"\noutput = "o"\nsettle_seconds = -1\n[stages.keyframes]\n', "settle_seconds: must be a number"),
    ('inbox = "i"\noutput = "o"\nnoise = 1\n[stages.keyframes]\n', "noise: unknown key"),
    ('inbox = "i"\noutput = "i/o"\n[stages.keyframes]\n', "output: must not be inside the inbox"),
    ('inbox = "i"\noutput = "o"\n[stages.keyframes]\nk = 0\n', "stages.keyframes.k: must be an integer >= 1"),
    ('inbox = "i"\noutput = "o"\n[stages.keyframes]\nkk = 3\n', "stages.keyframes.kk: unknown option"),
    ('inbox = "i"\noutput = "o"\n[stages.keyframes]\nceus_box = [1, 2, 3, 4]\n',
     "stages.keyframes.ceus_box: ceus_box and us_box go together"),
    ('inbox = "i"\noutput = "o"\n[stages.nope]\n', "stages.nope: unknown stage 'nope'"),
    ('inbox = "i"\noutput = "o"\n[stages.x]\nfunction = "no_such_mod_xyz:f"\n',
     "stages.x: cannot import stage module 'no_such_mod_xyz'"),
    ('inbox = "i"\noutput = "o"\n[stages.segment]\nmodel = "missing.pt"\n',
     "stages.segment.model: file not found"),
    ('inbox = "i"\noutput = "o"\n[stages.segment]\n', "stages.segment.model: missing"),
    ('inbox = "i"\noutput = "o"\n[stages\n', "not valid TOML"),
])
def test_pipeline_file_errors_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_pipeline(path)
    line = str(info.value)
    assert line.startswith(f"{path}: ") and message in line and "\n" not in line


def test_segment_stage_options_resolve_model_path(tmp_path):
    (tmp_path / "conf").mkdir()
    write_checkpoint(tmp_path / "conf" / "best.pt")
    _, pipe = _load(tmp_path, 'inbox = "i"\noutput = "o"\n[stages.segment]\nmodel = "best.pt"\n'
                              'dynamic_range_db = 50\ntic_model = "gamma"\n')
    assert pipe.stages[0].options == {"model": str(tmp_path / "conf" / "best.pt"),
                                      "dynamic_range_db": 50, "tic_model": "gamma"}


def test_lock_refuses_second_holder_and_frees_on_death(tmp_path):
    with OutputLock(tmp_path):
        assert f"pid {os.getpid()}" in current_holder(tmp_path)
        with pytest.raises(LockHeld) as info:
            OutputLock(tmp_path).acquire()
        assert info.value.exit_code == EX_TEMPFAIL == 75 and f"pid {os.getpid()}" in str(info.value)
    assert current_holder(tmp_path) == ""
    # A holder killed with SIGKILL leaves its pid in the file but does not block.
    code = ("import os, sys; sys.path[:0] = sys.argv[1:2]; from ceuspipe.batch.lock import OutputLock; "
            "OutputLock(sys.argv[2]).acquire(); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code, str(Path.cwd()), str(tmp_path)])
    assert proc.returncode == -9
    assert "pid" in (tmp_path / ".ceuspipe" / "lock").read_text()
    with OutputLock(tmp_path):
        pass


def test_ledger_transactions_and_recovery(tmp_path):
    exam = ExamInput(tmp_path / "a.mp4", "P1", "E1")
    with Ledger(tmp_path) as ledger:
        assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ledger.mark_running([(exam, 3, 1.5, "abc")], run_id=1, stages_hash="h")
        with pytest.raises(RuntimeError):
            with ledger.transaction():
                ledger.db.execute("UPDATE exams SET status = 'done'")
                raise RuntimeError("crash inside a transaction")
        assert ledger.get(str(exam.path)).status == "running"  # rolled back
    with Ledger(tmp_path) as ledger:
        [row] = ledger.recover_interrupted()
        assert row.status == "running"
        again = ledger.get(str(exam.path))
        assert (again.status, again.interrupted, again.attempts) == ("pending", 1, 1)
        ledger.mark_running([(exam, 3, 1.5, "abc")], run_id=2, stages_hash="h")
        ledger.mark_done(str(exam.path), {"dir": "P1/E1"})
        row = ledger.get(str(exam.path))
        assert (row.status, row.attempts, row.interrupted, row.outputs) == ("done", 2, 0, {"dir": "P1/E1"})
        assert row.finished >= row.started
        assert ledger.owner_of("P1", "E1") == str(exam.path)


def test_discover_skips_unchanged_without_hashing(tmp_path, monkeypatch):
    inbox = make_inbox(tmp_path / "inbox", {"P1/E1.mp4": b"abc", "P1/E2.mp4": b"xyz"})
    found = discover(inbox, {}, settle_s=0, recheck_s=0)
    assert [c.reason for c in found.todo] == ["new", "new"]
    assert found.todo[0].sha256 == sha256_file(inbox / "P1" / "E1.mp4")
    with Ledger(tmp_path / "out") as ledger:
        ledger.mark_running([(c.exam, c.size, c.mtime, c.sha256) for c in found.todo], 1, "h")
        for c in found.todo:
            ledger.mark_done(str(c.exam.path), {})
        rows = ledger.all()
    import ceuspipe.batch.discover as disc

    monkeypatch.setattr(disc, "sha256_file", lambda p: pytest.fail(f"hashed {p}"))
    again = discover(inbox, rows, settle_s=0, recheck_s=0)
    assert again.todo == [] and again.unchanged == 2
    monkeypatch.undo()
    new_time = time.time() - 50
    os.utime(inbox / "P1" / "E1.mp4", (new_time, new_time))
    touched = discover(inbox, rows, settle_s=0, recheck_s=0)
    assert touched.todo == [] and touched.unchanged == 2
    assert [p for p, _, _ in touched.restamped] == [str(inbox / "P1" / "E1.mp4")]


def test_shipped_example_pipelines_load(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    export = load_pipeline(repo / "pipelines" / "keyframe_export.toml")
    assert export.inbox == repo / "data" / "inbox" and export.output == repo / "exports" / "keyframes"
    assert [s.name for s in export.stages] == ["keyframes"] and export.jobs == 2
    # The nightly file is complete; only its model path is site-specific.
    with pytest.raises(InputError) as info:
        load_pipeline(repo / "pipelines" / "nightly_segmentation.toml")
    assert "stages.segment.model: file not found: /models/ceusegnet/best.pt" in str(info.value)
    text = (repo / "pipelines" / "nightly_segmentation.toml").read_text()
    write_checkpoint(tmp_path / "best.pt")
    (tmp_path / "n.toml").write_text(text.replace("/models/ceusegnet/best.pt", str(tmp_path / "best.pt")))
    nightly = load_pipeline(tmp_path / "n.toml")
    assert [s.name for s in nightly.stages] == ["keyframes", "segment"] and nightly.settle_s == 60


def test_a_status_probe_at_the_moment_a_run_starts_does_not_turn_the_run_away(tmp_path):
    import fcntl
    import threading

    OutputLock(tmp_path).acquire().release()  # create the lock file
    fd = os.open(tmp_path / ".ceuspipe" / "lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what current_holder does, held a little longer
    threading.Timer(0.05, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd))).start()
    with OutputLock(tmp_path):
        assert f"pid {os.getpid()}" in current_holder(tmp_path)
