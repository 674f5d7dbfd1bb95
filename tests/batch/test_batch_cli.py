"""``ceuspipe run`` / ``ceuspipe status`` as cron runs them: subprocesses, kill -9, the lock."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from click.testing import CliRunner

from ceuspipe.batch.ledger import Ledger
from ceuspipe.cli import main
from support.batch_stages import cli_cmd, cli_env, make_inbox, run_cli, write_pipeline

DIGEST = "support.batch_stages:digest_stage"


def _setup(tmp_path: Path, slow: bool = True) -> tuple[Path, Path, Path]:
    inbox = make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"first", "P002/E01.mp4": b"BAD second"})
    flag = tmp_path / "slow.flag"
    if slow:
        flag.write_text("sleep")
    pipe = write_pipeline(tmp_path / "pipe.toml", Path("inbox"), Path("out"),
                          {"digest": {"function": DIGEST, "fail_prefix": "BAD", "slow_flag": str(flag)}},
                          settle_seconds=0, recheck_seconds=0)
    return pipe, tmp_path / "out", flag


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def _reap_killed(proc: subprocess.Popen) -> None:
    """Wait for a SIGKILLed run and close its pipes (communicate() could wait on a worker
    that still holds them)."""
    proc.wait(timeout=30)
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()


def test_killed_run_leaves_nothing_done_and_next_run_completes(tmp_path):
    pipe, out, flag = _setup(tmp_path)
    proc = subprocess.Popen(cli_cmd("run", str(pipe)), env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(Path(str(flag) + ".started"), proc)
    proc.send_signal(signal.SIGKILL)
    _reap_killed(proc)

    first = str(tmp_path / "inbox" / "P001" / "E01.mp4")
    with Ledger(out) as ledger:
        assert ledger.get(first).status == "running"  # not done: its folder was never installed
        assert ledger.counts()["done"] == 0
    assert not (out / "P001").exists()
    assert list((out / ".ceuspipe" / "tmp").rglob("partial.txt"))  # the half output, hidden

    flag.unlink()
    result = run_cli("run", str(pipe))
    assert result.returncode == 1, result.stderr  # the BAD exam fails; the killed one completes
    assert "interrupted in run 1" in result.stderr
    assert "1 done, 1 failed" in result.stdout and "recovered from a dead run" in result.stdout
    failed = str(tmp_path / "inbox" / "P002" / "E01.mp4")
    assert f"FAILED {failed}: test stage: bad content" in result.stdout.splitlines()
    assert sorted(p.name for p in (out / "P001" / "E01").iterdir()) == ["batch.json", "digest.txt"]
    assert not (out / ".ceuspipe" / "tmp").exists()
    with Ledger(out) as ledger:
        assert ledger.get(first).status == "done" and ledger.get(first).interrupted == 0

    status = run_cli("status", str(out))
    assert status.returncode == 0, status.stderr
    assert "2 exam(s): 1 done, 1 failed, 0 running, 0 pending" in status.stdout
    assert f"{failed}: test stage: bad content" in status.stdout
    assert "last run: #2" in status.stdout


def test_second_concurrent_run_exits_75_at_once(tmp_path):
    pipe, out, flag = _setup(tmp_path)
    holder = subprocess.Popen(cli_cmd("run", str(pipe)), env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(Path(str(flag) + ".started"), holder)
        t0 = time.monotonic()
        second = run_cli("run", str(pipe))
        assert second.returncode == 75, second.stderr
        assert time.monotonic() - t0 < 20
        assert "another run holds this output root" in second.stderr
        assert f"pid {holder.pid}" in second.stderr
        status = run_cli("status", str(out))
        assert f"a run is in progress: pid {holder.pid}" in status.stdout
        assert "running (run 1" in status.stdout
    finally:
        flag.unlink()
        stdout, stderr = holder.communicate(timeout=60)
    assert holder.returncode == 1, stderr
    assert "1 done, 1 failed" in stdout


def test_cli_in_process_errors_and_exit_codes(tmp_path):
    pipe, out, _ = _setup(tmp_path, slow=False)
    runner = CliRunner()
    res = runner.invoke(main, ["status", str(out)])
    assert res.exit_code == 1 and "no batch ledger here" in res.output
    res = runner.invoke(main, ["run", str(pipe), "--jobs", "1"])
    assert res.exit_code == 1 and "1 done, 1 failed" in res.output
    res = runner.invoke(main, ["run", str(pipe)])
    assert res.exit_code == 0 and "0 done, 0 failed" in res.output and "1 unchanged" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('inbox = "inbox"\noutput = "out"\njobs = 0\n[stages.keyframes]\n')
    res = runner.invoke(main, ["run", str(bad)])
    assert res.exit_code == 1
    assert res.output.strip() == f"ceuspipe: error: {bad}: jobs: must be an integer >= 1 or -1 (one per core), got 0"


def test_sigterm_stops_cleanly_and_leaves_exams_pending(tmp_path):
    pipe, out, flag = _setup(tmp_path)
    proc = subprocess.Popen(cli_cmd("run", str(pipe)), env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(Path(str(flag) + ".started"), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "2 unfinished exam(s) left for the next run" in stderr
    with Ledger(out) as ledger:
        rows = list(ledger.exams())
    assert [(r.status, r.interrupted) for r in rows] == [("pending", 0), ("pending", 0)]
    flag.unlink()
    result = run_cli("run", str(pipe))
    assert "1 done, 1 failed" in result.stdout and "recovered" not in result.stdout


def test_sigterm_stops_the_run_releases_the_lock_and_next_run_redoes_the_exam(tmp_path):
    pipe, out, flag = _setup(tmp_path)
    proc = subprocess.Popen(cli_cmd("run", str(pipe)), env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(Path(str(flag) + ".started"), proc)
    worker_pid = int(Path(str(flag) + ".started").read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    time.sleep(0.2)
    assert not Path(f"/proc/{worker_pid}").exists(), "the exam's worker process was stopped"
    first = str(tmp_path / "inbox" / "P001" / "E01.mp4")
    with Ledger(out) as ledger:
        assert ledger.get(first).status == "pending"  # back for the next run, not a crash
    assert not (out / "P001").exists()
    flag.unlink()
    again = run_cli("run", str(pipe))  # exit 75 if the lock were still held
    assert again.returncode == 1 and "1 done, 1 failed" in again.stdout, again.stderr


def test_a_stuck_exam_times_out_and_the_run_goes_on(tmp_path):
    inbox = make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"stuck one", "P002/E01.mp4": b"fine"})
    flag = tmp_path / "stuck.flag"
    flag.write_text("hang")
    stages = {"digest": {"function": DIGEST, "slow_flag": str(flag), "slow_prefix": "stuck"}}
    pipe = write_pipeline(tmp_path / "pipe.toml", Path("inbox"), Path("out"), stages,
                          settle_seconds=0, recheck_seconds=0, exam_timeout_seconds=2)
    t0 = time.monotonic()
    result = run_cli("run", str(pipe))
    assert time.monotonic() - t0 < 40
    assert result.returncode == 1, result.stderr
    assert "1 done, 1 failed" in result.stdout
    stuck = str(inbox / "P001" / "E01.mp4")
    assert f"FAILED {stuck}: timed out after 2 s (exam_timeout_seconds in the pipeline file); stopped" \
        in result.stdout.splitlines()
    with Ledger(tmp_path / "out") as ledger:
        assert ledger.get(stuck).status == "failed" and "timed out" in ledger.get(stuck).error
        assert ledger.get(str(inbox / "P002" / "E01.mp4")).status == "done"
    status = run_cli("status", str(tmp_path / "out"))
    assert "a run is in progress" not in status.stdout and "timed out" in status.stdout


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_the_run_also_ends_its_workers(tmp_path):
    # The soak (benchmarks/soak_batch.py) found a hung worker of a killed run still
    # running minutes later, keeping the forkserver and resource tracker alive with it.
    pipe, out, flag = _setup(tmp_path)
    proc = subprocess.Popen(cli_cmd("run", str(pipe)), env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = Path(str(flag) + ".started")
    _wait_for(started, proc)
    worker = int(started.read_text())
    try:
        proc.send_signal(signal.SIGKILL)
        _reap_killed(proc)
        t0 = time.monotonic()
        while _alive(worker) and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert not _alive(worker), "the worker of the killed run is still running"
    finally:
        flag.unlink()
