"""The nightly pipeline end to end: keyframes + segment stages through ``ceuspipe run``."""

from __future__ import annotations

import json
import os
import time


from ceuspipe.batch.ledger import Ledger
from ceuspipe.batch.pipeline_file import load_pipeline
from ceuspipe.batch.runner import run_pipeline
from support.builders import write_clip, write_checkpoint
from support.batch_stages import write_pipeline


def test_keyframes_and_segment_stages(tmp_path):
    write_checkpoint(tmp_path / "tiny.pt")
    clip = write_clip(tmp_path / "inbox" / "P001" / "visit1" / "clip.mp4", frames=8, fps=4.0)
    old = time.time() - 3600
    os.utime(clip, (old, old))
    pipe = write_pipeline(tmp_path / "nightly.toml", "inbox", "out",
                          {"keyframes": {"sample_fps": 2.0, "k": 2},
                           "segment": {"model": "tiny.pt", "engine": "torch", "device": "cpu",
                                       "batch_size": 4, "dynamic_range_db": 50}},
                          settle_seconds=0, recheck_seconds=0)
    report = run_pipeline(load_pipeline(pipe))
    assert report.exit_code == 0 and len(report.done) == 1, report.failed
    exam = tmp_path / "out" / "P001" / "visit1_clip"
    names = {p.name for p in exam.iterdir()}
    assert {"keyframes.json", "scores.csv", "mask.mkv", "overlay.mp4", "tic.csv", "tic.json",
            "segment.json", "report.html", "batch.json"} <= names
    assert not any(n.startswith(".") for n in names)
    seg = json.loads((exam / "segment.json").read_text())
    assert seg["frames"] == 8 and seg["dynamic_range_db"] == 50
    with Ledger(tmp_path / "out") as ledger:
        [row] = ledger.exams()
    outputs = row.outputs["stages"]
    assert outputs["segment"]["mask"] == "mask.mkv" and outputs["segment"]["frames"] == 8
    assert outputs["keyframes"]["n_keyframes"] == 2
    assert (tmp_path / "out" / "manifest.csv").read_text().count("\n") == 3
    assert outputs["segment"]["report"] == "report.html"
    index = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")  # rewritten after the ledger
    assert 'href="P001/visit1_clip/report.html"' in index and 'data-status="done"' in index
