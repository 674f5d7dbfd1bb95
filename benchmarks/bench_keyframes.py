"""Time `ceuspipe keyframes` against ffmpeg, PyAV and PySceneDetect in the same run.

Targets (issue 16), on a 2-minute 800x450 25 fps H.264 clip:

* with B-frames: at most 0.75x the time of ``ffmpeg -i clip -vf fps=1 -f null -`` and
  faster than ``scenedetect -i clip --frame-skip 24 detect-content``;
* without B-frames (no non-reference frames; only the frames after each closed group's
  last sample can be left out): at most 1.05x a bare PyAV decode of every frame
  (decoder threads = cores, no conversion);
* peak memory flat from a 1-minute to a 4-minute clip.

    python benchmarks/bench_keyframes.py [--repeats 3] [--seconds 120] [--fps 25]
        [--scenedetect bench_out/sd-venv/bin/scenedetect] [--quick]

The B-frame clip is the phantom from ``ceuspipe synth`` (libx264 defaults: High
profile, 3 B-frames, B-pyramid); the clip without B-frames is the same video
re-encoded by ffmpeg with ``-bf 0``; the 4-minute clip is the 2-minute one played
twice (stream copy), the 1-minute clip a phantom of its own. Every tool runs as a
whole process (start-up included), alternating, and the median of the repeats is
reported; this machine is shared and noisy. PySceneDetect is not a dependency of
ceuspipe: install it into a venv of its own (``python -m venv bench_out/sd-venv &&
bench_out/sd-venv/bin/pip install scenedetect-headless``); without it its column is
left empty. ``pyav-nonref`` (PyAV with ``skip_frame=NONREF`` for every packet, which
drops the samples' frames too) is printed as the floor of what skipping can reach.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))  # this checkout's ceuspipe, as its children get
from _common import ceuspipe_cmd, make_phantom_clip, require_ffmpeg, run_measured  # noqa: E402

from ceuspipe import png  # noqa: E402

PYAV_DECODE = """
import sys, av
from ceuspipe.video.pyav_decode import decoder_threads
c = av.open(sys.argv[1]); s = c.streams.video[0]
s.thread_type = "AUTO"; s.codec_context.thread_count = decoder_threads()
s.codec_context.skip_frame = sys.argv[2]
n = sum(1 for _ in c.decode(s))
"""


def load() -> str:
    """The machine's 1, 5 and 15 minute load averages (this machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def has_b_frames(clip: Path) -> bool:
    import av

    with av.open(str(clip)) as c:
        for packet in c.demux(c.streams.video[0]):
            if packet.size and packet.pts is not None and packet.dts is not None and packet.pts != packet.dts:
                return True
    return False


def derived(ffmpeg: str, src: Path, dst: Path, before: list[str], after: list[str]) -> Path:
    """``ffmpeg BEFORE -i src AFTER dst`` once (cached by name)."""
    if not dst.exists():
        tmp = dst.with_suffix(".part.mp4")
        subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-y", *before, "-i", str(src), *after, str(tmp)],
                       check=True)
        tmp.rename(dst)
    return dst


def keyframes_json(out: Path) -> dict:
    return json.loads(next(out.rglob("keyframes.json")).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the timed clips")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate of the phantom clips")
    ap.add_argument("--work", type=Path, default=Path("bench_out"))
    ap.add_argument("--scenedetect", type=Path, default=Path("bench_out/sd-venv/bin/scenedetect"))
    ap.add_argument("--quick", action="store_true", help="20 s clips, 1 repeat (smoke run)")
    args = ap.parse_args()
    ffmpeg = require_ffmpeg()
    seconds = 20.0 if args.quick else args.seconds
    repeats = 1 if args.quick else args.repeats
    args.work.mkdir(parents=True, exist_ok=True)
    bclip = make_phantom_clip(args.work, seconds, args.fps)
    noclip = derived(ffmpeg, bclip, bclip.with_name("exam1_nob.mp4"),
                     [], ["-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-bf", "0"])
    sd = args.scenedetect if args.scenedetect.exists() else None
    skip = max(1, round(args.fps) - 1)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))}

    threads = len(os.sched_getaffinity(0))
    print(f"clips: 800x450 H.264 phantom, {seconds:g} s at {args.fps:g} fps; medians of {repeats} run(s); "
          f"{threads} usable cores; PySceneDetect: {sd or 'not installed'}; "
          f"PNG deflate: {png.deflate_backend()}; load average {load()}")
    print(f"{'clip':<12} {'ffmpeg':>7} {'pyav':>7} {'nonref':>7} {'scened.':>8} {'ceuspipe':>9} "
          f"{'/ffmpeg':>8} {'/pyav':>6} {'/scened.':>9} {'MiB':>5}  decode_path")
    for label, clip in (("B-frames", bclip), ("no B-frames", noclip)):
        times: dict[str, list[float]] = {k: [] for k in ("ff", "pyav", "nonref", "sd", "cp")}
        mem, meta = [], {}
        for _ in range(repeats):
            times["ff"].append(run_measured([ffmpeg, "-nostdin", "-v", "error", "-i", str(clip),
                                             "-vf", "fps=1", "-f", "null", "-"])[0])
            times["pyav"].append(run_measured([sys.executable, "-c", PYAV_DECODE, str(clip), "DEFAULT"], env)[0])
            times["nonref"].append(run_measured([sys.executable, "-c", PYAV_DECODE, str(clip), "NONREF"], env)[0])
            if sd:
                times["sd"].append(run_measured([str(sd), "-q", "-i", str(clip), "--frame-skip", str(skip),
                                                 "detect-content"])[0])
            out = Path(tempfile.mkdtemp(dir=args.work))
            w, m = run_measured(ceuspipe_cmd() + ["-q", "keyframes", str(clip), str(out / "kf")], env)
            times["cp"].append(w)
            mem.append(m)
            meta = keyframes_json(out / "kf")
            shutil.rmtree(out, ignore_errors=True)
        med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
        print(f"{label:<12} {med['ff']:>7.2f} {med['pyav']:>7.2f} {med['nonref']:>7.2f} {med['sd']:>8.2f} "
              f"{med['cp']:>9.2f} {med['cp'] / med['ff']:>8.2f} {med['cp'] / med['pyav']:>6.2f} "
              f"{med['cp'] / med['sd']:>9.2f} {max(mem):>5.0f}  {meta.get('decode_path')} "
              f"({meta.get('decode_note')}; B-frames: {has_b_frames(clip)})")
        for k, v in times.items():
            if v:
                print(f"{'':<12} runs {k}: " + " ".join(f"{x:.2f}" for x in v))
        print(f"{'':<12} load average {load()}")

    if args.quick:
        return
    short = make_phantom_clip(args.work, 60, args.fps)
    long_ = derived(ffmpeg, bclip, bclip.with_name("exam1_x2.mp4"), ["-stream_loop", "1"], ["-an", "-c", "copy"])
    peaks = {}
    for name, clip in (("1-minute", short), ("2-minute", bclip), ("4-minute", long_)):
        out = Path(tempfile.mkdtemp(dir=args.work))
        w, m = run_measured(ceuspipe_cmd() + ["-q", "keyframes", str(clip), str(out / "kf")], env)
        meta = keyframes_json(out / "kf")
        shutil.rmtree(out, ignore_errors=True)
        peaks[name] = m
        print(f"memory {name}: {meta['n_frames_decoded']} frames, {w:.2f} s, peak {m:.0f} MiB, "
              f"{meta['decode_path']}")
    print(f"peak memory 4-minute / 1-minute clip: {peaks['4-minute'] / peaks['1-minute']:.2f}x; "
          f"load average {load()}")


if __name__ == "__main__":
    main()
