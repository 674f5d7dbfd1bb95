"""A Dask local cluster (2 worker processes) gives the same outputs as the joblib pool."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ceuspipe.batch.ledger import Ledger
from ceuspipe.batch.pipeline_file import load_pipeline
from ceuspipe.batch.runner import run_pipeline
from support.builders import write_clip
from support.batch_stages import make_inbox, write_pipeline


def _tree(root):
    """{relative path: bytes} of every output file (batch.json reduced to what must match;
    index.html only present: it shows each run's times and durations)."""
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() or rel.startswith(".ceuspipe"):
            continue
        if p.name == "batch.json":
            rec = json.loads(p.read_text())
            files[rel] = (rec["source"], rec["sha256"], rec["stages_hash"], rec["outputs"])
        elif p.name == "index.html":
            files[rel] = "present"
        else:
            files[rel] = p.read_bytes()
    return files


def test_dask_local_cluster_matches_joblib(tmp_path):
    from distributed import LocalCluster

    inbox = tmp_path / "inbox"
    for i in range(3):
        write_clip(inbox / f"P00{i}" / "exam.mp4", frames=8, seed=i)
    make_inbox(inbox, {"P009/broken.mp4": b"BAD not a video"})
    old = time.time() - 3600
    for p in inbox.rglob("*.mp4"):
        os.utime(p, (old, old))
    stages = {"keyframes": {"sample_fps": 2.0, "k": 3},
              "digest": {"function": "support.batch_stages:digest_stage"}}
    reports = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        for name, kw in (("joblib", {"jobs": 2}), ("dask", {"scheduler": cluster.scheduler_address})):
            pipe = load_pipeline(write_pipeline(tmp_path / f"{name}.toml", inbox, tmp_path / name, stages,
                                                settle_seconds=0, recheck_seconds=0))
            reports[name] = run_pipeline(pipe, **kw)
    for report in reports.values():
        assert len(report.done) == 3 and report.exit_code == 1
        assert [os.path.basename(p) for p, _ in report.failed] == ["broken.mp4"]
    a, b = _tree(tmp_path / "joblib"), _tree(tmp_path / "dask")
    assert a.keys() == b.keys() and "manifest.csv" in a and "P001/exam/keyframes.json" in a
    assert a == b
    with Ledger(tmp_path / "dask") as ledger:
        assert ledger.counts() == {"pending": 0, "running": 0, "done": 3, "failed": 1}


def _task(tmp_path, name: str, content: bytes, **options):
    from ceuspipe.batch.pipeline_file import StageSpec
    from ceuspipe.batch.worker import ExamTask
    from ceuspipe.inputs import ExamInput

    src = make_inbox(tmp_path / "inbox", {f"P1/{name}.mp4": content}) / "P1" / f"{name}.mp4"
    stage = StageSpec("digest", "support.batch_stages:digest_stage", options)
    return ExamTask(ExamInput(src, "P1", name), str(tmp_path / "tmp" / name), (stage,))


def test_isolated_exam_runs_times_out_and_survives_a_crash(tmp_path):
    """What a Dask task runs: the exam in a fresh interpreter. A good exam comes back
    done with its files; one that hangs is killed after its time limit; one whose
    process is killed -9 fails alone as "worker process died"."""
    from ceuspipe.batch.worker import run_exam_isolated

    good = run_exam_isolated(_task(tmp_path, "good", b"fine"), timeout_s=60)
    assert good.ok, good.error
    assert (tmp_path / "tmp" / "good" / "digest.txt").read_text().split()[1:] == ["P1", "good"]

    flag = tmp_path / "hang.flag"
    flag.write_text("x")
    t0 = time.monotonic()
    hung = run_exam_isolated(_task(tmp_path, "hang", b"slow", slow_flag=str(flag)), timeout_s=2)
    assert not hung.ok and "timed out after 2 s" in hung.error
    assert time.monotonic() - t0 < 20
    pid = int(Path(str(flag) + ".started").read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()

    crash = run_exam_isolated(_task(tmp_path, "crash", b"CRASH", crash_prefix="CRASH"), timeout_s=60)
    assert not crash.ok and "worker process died (killed by SIGKILL)" in crash.error


def test_dask_exam_timeout_fails_the_stuck_exam_alone(tmp_path):
    """exam_timeout_seconds holds on Dask: a stuck exam fails as "timed out", the others
    are done, and the run ends long before the stuck stage would."""
    from distributed import LocalCluster

    inbox = make_inbox(tmp_path / "inbox", {"P001/E01.mp4": b"first", "P002/E01.mp4": b"HANG second",
                                            "P003/E01.mp4": b"third"})
    flag = tmp_path / "slow.flag"
    flag.write_text("sleep")
    stages = {"digest": {"function": "support.batch_stages:digest_stage", "slow_flag": str(flag),
                         "slow_prefix": "HANG"}}
    pipe = load_pipeline(write_pipeline(tmp_path / "dask.toml", inbox, tmp_path / "out", stages,
                                        settle_seconds=0, recheck_seconds=0, exam_timeout_seconds=3))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        t0 = time.monotonic()
        report = run_pipeline(pipe, scheduler=cluster.scheduler_address)
        took = time.monotonic() - t0
    assert len(report.done) == 2 and took < 40
    assert [(os.path.basename(os.path.dirname(p)), "timed out after 3 s" in e) for p, e in report.failed] \
        == [("P002", True)]
