"""Fuzz run: mutated MP4/MKV/AVI/DICOM files (byte flips, truncations, zeroed ranges,
header corruption, deleted chunks, junk) through probe, iter_frames and the key-frame
driver in a separate process, so that a segfault would be seen too.

Every input must end as a success with a complete output folder, or as one-line
:class:`~ceuspipe.errors.CeuspipeError` leaving nothing behind, within 30 s and
6 GiB of address space (the worker's limit). The suite tries
``CEUSPIPE_FUZZ_N`` inputs (default 240); set it higher for a long run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from support.bad_inputs import two_panel_frames, write_dicom, write_video

WORKER = Path(__file__).parent / "support" / "fuzz_worker.py"
MUTATIONS = ("flip", "truncate", "zero_range", "header", "delete_chunk", "junk", "duplicate_chunk")


def make_seeds(folder: Path) -> list[Path]:
    """Small valid clips (1.5 s, two panels): H.264 MP4, FFV1 MKV, MPEG-4 AVI, MJPEG AVI,
    RGB and grey DICOM cines."""
    frames = two_panel_frames(12, width=112, height=64)
    folder.mkdir(parents=True)
    return [
        write_video(folder / "seed_h264.mp4", frames),
        write_video(folder / "seed_ffv1.mkv", frames, codec="ffv1", pix_fmt="bgr0"),
        write_video(folder / "seed_mpeg4.avi", frames, codec="mpeg4"),
        write_video(folder / "seed_mjpeg.avi", frames, codec="mjpeg"),
        write_dicom(folder / "seed_rgb.dcm", np.stack(frames)),
        write_dicom(folder / "seed_grey.dcm", np.stack(frames)[..., 1].copy(), photometric="MONOCHROME2"),
    ]


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One deterministic mutation of ``data``."""
    b = bytearray(data)
    n = len(b)
    if kind == "flip":
        for pos in rng.integers(0, n, int(rng.integers(1, 24))):
            b[pos] ^= int(rng.integers(1, 256))
    elif kind == "truncate":
        b = b[: int(rng.integers(0, n))]
    elif kind == "zero_range":
        start = int(rng.integers(0, n))
        b[start:start + int(rng.integers(1, max(2, n // 4)))] = bytes(min(n - start, n))[: len(b[start:start + n // 4 or 1])]
    elif kind == "header":
        end = min(n, 512)
        for pos in rng.integers(0, end, int(rng.integers(1, 16))):
            b[pos] = int(rng.integers(0, 256))
    elif kind == "delete_chunk":
        start = int(rng.integers(0, n))
        del b[start:start + int(rng.integers(1, max(2, n // 8)))]
    elif kind == "duplicate_chunk":
        start = int(rng.integers(0, n))
        chunk = b[start:start + int(rng.integers(1, max(2, n // 8)))]
        at = int(rng.integers(0, n))
        b[at:at] = chunk
    elif kind == "junk":
        keep = int(rng.integers(0, 140))  # sometimes keep the magic / DICOM preamble
        b = b[:keep] + bytearray(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes())
    return bytes(b)


def make_corpus(seeds: list[Path], folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True)
    blobs = [(p.suffix, p.read_bytes()) for p in seeds]
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        suffix, data = blobs[i % len(blobs)]
        kind = MUTATIONS[(i // len(blobs)) % len(MUTATIONS)]
        path = folder / f"m{i:05d}_{kind}{suffix}"
        path.write_bytes(mutate(data, kind, rng))
        out.append(path)
    return out


def run_worker(corpus: Path, out_root: Path, report: Path, timeout: float) -> tuple[int, list[dict], str | None]:
    """Run the worker; on a signal exit, restart it on the files after the one that crashed."""
    results: list[dict] = []
    crashed: str | None = None
    proc = subprocess.run([sys.executable, str(WORKER), str(corpus), str(out_root), str(report)],
                          capture_output=True, text=True, timeout=timeout)
    started = None
    for line in report.read_text().splitlines():
        if line.startswith("START "):
            started = line[6:]
        else:
            results.append(json.loads(line))
            started = None
    if proc.returncode != 0:
        crashed = f"{started} (exit {proc.returncode}): {proc.stderr[-500:]}"
    return proc.returncode, results, crashed


def test_fuzzed_videos_and_dicoms_never_crash_or_leave_partial_output(tmp_path):
    n = int(os.environ.get("CEUSPIPE_FUZZ_N", "240"))
    seeds = make_seeds(tmp_path / "seeds")
    corpus = make_corpus(seeds, tmp_path / "corpus", n)
    before = {p.name: p.read_bytes() for p in corpus[:50]}
    out_root = tmp_path / "out"
    rc, results, crashed = run_worker(tmp_path / "corpus", out_root, tmp_path / "report.jsonl",
                                      timeout=max(120, n * 2))
    assert crashed is None, f"the decoder process died on {crashed}"
    assert rc == 0
    assert len(results) == n == len(corpus), "every input was tried"
    outcomes = Counter(r["outcome"] for r in results)
    crashes = [r for r in results if r["outcome"] == "crash"]
    assert crashes == [], crashes[:5]
    assert [r for r in results if r["left"]] == []
    slow = [r for r in results if r["seconds"] > 30]
    assert slow == [], slow  # damaged timestamps or sizes must not make work explode
    assert [p for p in out_root.rglob("*") if p.name.startswith(".")] == []
    # every successful input has its complete folder, every failed one none
    done = {p.name for p in (out_root / "fuzz").iterdir()} if (out_root / "fuzz").exists() else set()
    assert done == {r["file"].replace(".", "_") for r in results if r["outcome"] == "ok"}
    for r in results:
        if r["outcome"] == "input_error":
            assert r["detail"].startswith(str(tmp_path / "corpus" / r["file"])) or r["file"] in r["detail"], r
    assert {p.name: p.read_bytes() for p in corpus[:50]} == before, "inputs are never modified"
    # the mutations really produce both outcomes (the corpus is not all junk, nor all fine)
    assert outcomes["ok"] > n // 20 and outcomes["input_error"] > n // 4, outcomes
    summary = tmp_path.parent / f"fuzz_summary_{n}.json"
    summary.write_text(json.dumps({"tried": n, **outcomes}))
