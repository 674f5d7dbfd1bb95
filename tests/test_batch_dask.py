"""A Dask local cluster (2 worker processes) gives the same outputs as the joblib pool."""

from __future__ import annotations

import json
import os
import time

from ceuspipe.batch.ledger import Ledger
from ceuspipe.batch.pipeline_file import load_pipeline
from ceuspipe.batch.runner import run_pipeline
from conftest import write_clip
from test_batch_helpers import make_inbox, write_pipeline


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
              "digest": {"function": "test_batch_helpers:digest_stage"}}
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
