"""Shared helpers of the batch tests: tiny clips, pipeline files, test-only stages.

The stages are importable as ``support.batch_stages:<name>`` (the tests put the
tests folder on ``PYTHONPATH`` for subprocess runs), the way a site adds its own stages.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from ceuspipe.errors import InputError

HERE = Path(__file__).resolve().parent.parent  # tests/: where ``support.batch_stages`` imports from
REPO = HERE.parent


# ------------------------------------------------------------------ test stages


def digest_stage(exam, exam_tmp_dir: Path, options: dict) -> dict:
    """Write ``digest.txt`` (sha256 and ids of the input). Options:
    ``fail_prefix``: raise InputError when the content starts with it;
    ``crash_prefix``: kill this process (SIGKILL) when the content starts with it;
    ``pad_bytes``: also write ``pad.bin`` of that many zero bytes (to fill a disk);
    ``slow_flag``: while that file exists, write ``partial.txt``, signal
    ``<slow_flag>.started`` and sleep (to be killed mid-exam); with ``slow_prefix`` only
    for content starting with it."""
    data = Path(exam.path).read_bytes()
    if options.get("fail_prefix") and data.startswith(options["fail_prefix"].encode()):
        raise InputError(exam.path, "test stage: bad content")
    if options.get("crash_prefix") and data.startswith(options["crash_prefix"].encode()):
        os.kill(os.getpid(), signal.SIGKILL)
    flag = options.get("slow_flag")
    slow_here = not options.get("slow_prefix") or data.startswith(options["slow_prefix"].encode())
    if flag and Path(flag).exists() and slow_here:
        (Path(exam_tmp_dir) / "partial.txt").write_text("half done\n")
        Path(flag + ".started").write_text(str(os.getpid()))
        for _ in range(600):
            time.sleep(0.1)
            if not Path(flag).exists():
                break
    if options.get("pad_bytes"):
        (Path(exam_tmp_dir) / "pad.bin").write_bytes(bytes(int(options["pad_bytes"])))
    out = Path(exam_tmp_dir) / "digest.txt"
    out.write_text(f"{hashlib.sha256(data).hexdigest()} {exam.patient_id} {exam.exam_id}\n")
    return {"digest": out, "bytes": len(data)}


def decode_stage(exam, exam_tmp_dir: Path, options: dict) -> dict:
    """Decode every frame with the project reader; write ``frames.json`` (count, last time)."""
    from ceuspipe.video.reader import iter_frames

    n, last = 0, 0.0
    for frame in iter_frames(exam.path):
        n, last = n + 1, frame.time_s
    out = Path(exam_tmp_dir) / "frames.json"
    out.write_text(json.dumps({"frames": n, "last_time_s": round(last, 4)}))
    return {"frames": n}


# ------------------------------------------------------------------ data


def write_pipeline(path: Path, inbox: Path, output: Path, stages: dict, **top) -> Path:
    """A pipeline TOML with ``stages`` = {name: {option: value}} (strings, numbers)."""
    def val(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = [f"inbox = {val(str(inbox))}", f"output = {val(str(output))}"]
    lines += [f"{k} = {val(v)}" for k, v in top.items()]
    for name, opts in stages.items():
        lines.append(f"[stages.{json.dumps(name) if ':' in name else name}]")
        lines += [f"{k} = {val(v)}" for k, v in opts.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_inbox(root: Path, names: dict[str, bytes]) -> Path:
    """Files under ``root`` from ``{"P001/E01.mp4": b"..."}``, mtimes set an hour back."""
    for rel, data in names.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        old = time.time() - 3600
        os.utime(p, (old, old))
    return root


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ceuspipe.cli import main; main()", *args]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``ceuspipe ARGS`` in a subprocess (test stages importable)."""
    return subprocess.run(cli_cmd(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout)
