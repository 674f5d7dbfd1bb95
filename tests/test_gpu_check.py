"""benchmarks/gpu_check.py, the one command for a GPU machine, run small on the CPU so it
cannot rot before a GPU is lent: every section runs and is reported, and a failing CUDA
path is recorded with its error line and makes the exit status 1."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_measures_every_section(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["failed"] == []
    ts, pp, sg = (res["sections"][k] for k in ("train_speed", "paper", "segment"))
    assert set(ts["modes"]) == {"eager", "channels_last"} and ts["best"] in ts["modes"]
    assert all(m["images_per_s"] > 0 and m["paper_150_epochs_s"] > 0 for m in ts["modes"].values())
    assert set(pp["variants"]) == {"unet", "full"} and pp["patients"] == 3
    assert all(0 <= v["dice"] <= 1 and v["n_test"] >= 1 for v in pp["variants"].values())
    assert (tmp_path / "paper" / "table1.md").is_file()
    assert sg["frames"] == 18 and sg["end_to_end_fps"] > 0 and sg["limiting_stage"] in ("decode", "inference",
                                                                                          "encode")
    assert set(sg["inference_only"]) == {"1", "4"}
    md = (tmp_path / "gpu_check.md").read_text()
    for heading in ("## Training speed", "## Paper experiment", "## segment-video"):
        assert heading in md
    assert md in done.stdout


def test_a_failing_path_is_recorded_and_exits_1(tmp_path, monkeypatch):
    mod = _module()
    real = mod._train_steps

    def broken(model, device, *, channels_last, **kw):
        if channels_last:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(model, device, channels_last=channels_last, **kw)

    monkeypatch.setattr(mod, "_train_steps", broken)
    assert mod.main(["--tiny", "--out", str(tmp_path), "--sections", "train_speed"]) == 1
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["failed"] == ["train_speed"]
    assert "illegal memory access" in res["sections"]["train_speed"]["modes"]["channels_last"]["error"]
    assert res["sections"]["train_speed"]["best"] == "eager"
    assert "| channels_last | failed: RuntimeError: CUDA error" in (tmp_path / "gpu_check.md").read_text()


def test_cuda_asked_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # on a GPU machine the real run is the check
    assert _module().main(["--out", str(tmp_path)]) == 1
    assert not (tmp_path / "gpu_check.json").exists()
