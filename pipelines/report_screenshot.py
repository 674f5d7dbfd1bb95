"""Screenshot of a per-exam report.html for the README (docs/report.png, < 150 KB).

Usage: python pipelines/report_screenshot.py [OUTPUT_FOLDER] [--png docs/report.png]

OUTPUT_FOLDER: a segment-video output folder (e.g. demo_out/segment after
``make demo``); its report.html is rebuilt first. Without one, a small synthetic
phantom clip is segmented with an *untrained* width-1/8 model into a temporary
folder (so the masks are noise and the curve fit may fail: the screenshot shows
the report's layout, not a result). Needs chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _phantom_output(tmp: Path) -> Path:
    import torch

    from ceuspipe.model import build_model
    from ceuspipe.segment import SegmentConfig, segment_video
    from ceuspipe.synth import PhantomConfig, generate_exam
    from ceuspipe.train.checkpoint import save_checkpoint

    clip = tmp / "P001" / "exam1.mp4"
    generate_exam(clip, None, PhantomConfig(duration_s=50.0, fps=3.0, width=480, height=270), seed=4)
    torch.manual_seed(0)
    ckpt = tmp / "untrained.pt"
    save_checkpoint(ckpt, {"config": {"variant": "full", "width": 0.125, "size": 64, "threshold": 0.5},
                           "model": build_model("full", 0.125).state_dict(), "epoch": 0})
    out = tmp / "exam1.ceuspipe"
    segment_video(clip, ckpt, out, SegmentConfig(cache_dir=str(tmp / "cache")),
                  command_line=["ceuspipe", "segment-video", str(clip), "--model", str(ckpt)])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path)
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "report.png")
    ap.add_argument("--width", type=int, default=1000, help="browser window width (px)")
    ap.add_argument("--height", type=int, default=1500, help="browser window height (px)")
    ap.add_argument("--scale", type=float, default=0.6, help="the PNG is scaled by this")
    args = ap.parse_args()
    exe = next((shutil.which(n) for n in ("chromium", "chromium-headless-shell", "google-chrome")
                if shutil.which(n)), None)
    if exe is None:
        sys.exit("report_screenshot: no chromium found (apt-get install -y chromium)")
    from PIL import Image

    from ceuspipe.report import write_exam_report

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        folder = args.folder or _phantom_output(tmp)
        report = write_exam_report(folder)
        shot = tmp / "shot.png"
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp / 'profile'}", f"--window-size={args.width},{args.height}",
                        f"--screenshot={shot}", report.resolve().as_uri()], check=True, capture_output=True,
                       timeout=120)
        img = Image.open(shot).convert("RGB")
        img = img.resize((round(img.width * args.scale), round(img.height * args.scale)), Image.LANCZOS)
        img = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    args.png.write_bytes(buf.getvalue())
    print(f"wrote {args.png} ({img.width}x{img.height}, {len(buf.getvalue()) // 1024} KB) from {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
