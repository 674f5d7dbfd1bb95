"""Mask videos and phantom exams for the mask export tests (tests/mask_export).

A mask video is what segment-video writes as ``mask.mkv``: FFV1 grey, CEUS-panel size,
0/255, each frame at its own time. The phantom's truth CEUS masks are one already.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def write_mask_video(path: Path, masks, times_s) -> Path:
    """``masks`` (``(H, W)`` 0/1 or bool each) at ``times_s`` seconds as an FFV1 grey mkv."""
    from ceuspipe.video.writer import VideoWriter

    masks = list(masks)
    h, w = masks[0].shape
    with VideoWriter(path, w, h, fps=10.0, codec="ffv1", pix_fmt="gray") as writer:
        for mask, t in zip(masks, times_s, strict=True):
            writer.write(np.asarray(mask, np.uint8) * np.uint8(255), float(t))
    return path


def read_mask_video(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """The ``(H, W) bool`` masks and times (s) of a mask video, read with ceuspipe's reader."""
    from ceuspipe.video.reader import iter_frames

    frames = list(iter_frames(path))
    return [f.image[..., 0] > 127 for f in frames], [f.time_s for f in frames]


def phantom_exam(folder: Path, *, container: str = "mp4", duration_s: float = 3.0, fps: float = 4.0,
                 seed: int = 3):
    """A small (320x180) phantom exam ``folder/exam.<mp4|dcm>`` and a segment-video-like output
    folder ``folder/out`` whose ``mask.mkv`` is the phantom's true CEUS mask video.

    Returns ``(clip, out_dir, layout, truth)``; ``layout`` carries the phantom's pixel size.
    """
    from ceuspipe.synth import PhantomConfig, generate_exam
    from ceuspipe.synth.truth import CEUS_MASK_VIDEO
    from ceuspipe.video.panels import PanelLayout

    config = PhantomConfig(duration_s=duration_s, fps=fps, width=320, height=180, container=container)
    clip = folder / f"exam{config.clip_suffix}"
    truth_dir = folder / "exam.truth"
    truth = generate_exam(clip, truth_dir, config, seed=seed)
    out = folder / "out"
    out.mkdir()
    shutil.copyfile(truth_dir / CEUS_MASK_VIDEO, out / "mask.mkv")
    px = truth["container"]["pixel_size_mm"] if "container" in truth else None
    layout = PanelLayout.from_dict({**truth["layout"], "pixel_size_mm": px})
    return clip, out, layout, truth
