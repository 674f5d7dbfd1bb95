"""Helpers shared by the benchmarks: timed child processes with their peak memory."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of that child in MiB). Raises on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def median_of(cmd: list[str], repeats: int, before=None) -> tuple[float, float]:
    """Median wall time and max peak RSS over ``repeats`` runs (``before()`` runs untimed first)."""
    walls, rss = [], []
    for _ in range(repeats):
        if before:
            before()
        w, r = run_measured(cmd)
        walls.append(w)
        rss.append(r)
    return statistics.median(walls), max(rss)


def ceuspipe_cmd() -> list[str]:
    exe = BIN / "ceuspipe"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ceuspipe.cli"]


def require_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if not path:
        sys.exit("ffmpeg CLI not found: install it (apt-get install ffmpeg) to run this benchmark")
    return path


def make_phantom_clip(out_dir: Path, duration_s: float, fps: float, width: int = 800,
                      height: int = 450, seed: int = 0) -> Path:
    """Generate one phantom clip with ``ceuspipe synth`` (cached by its parameters; a
    folder left by an interrupted run, without its completion mark, is made again)."""
    folder = out_dir / f"phantom_{int(duration_s)}s_{fps:g}fps_{width}x{height}_s{seed}"
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(ceuspipe_cmd() + ["-q", "synth", str(folder), "--patients", "1",
                                         "--duration-s", str(duration_s), "--fps", str(fps),
                                         "--width", str(width), "--height", str(height),
                                         "--seed", str(seed)], check=True)
        done.touch()
    return sorted(p for p in folder.rglob("*.mp4") if not p.name.startswith("."))[0]
