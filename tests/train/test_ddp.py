"""Two CPU processes with gloo through torchrun train and write one run folder."""

import csv
import os
import subprocess
import sys

from support.toy_dataset import make_toy_dataset

from ceuspipe.train.checkpoint import read_checkpoint


def test_torchrun_two_cpu_processes(tmp_path):
    ds = make_toy_dataset(tmp_path / "ds", n_train=8, n_test=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ceuspipe", "train", str(ds), str(tmp_path / "run"), "--width", "0.125", "--size", "32",
           "--epochs", "1", "--batch-size", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == 1 and 0 <= float(rows[0]["val_dice"]) <= 1
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["config"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])
