"""Ground truth of a phantom exam: reading ``truth.json`` and rebuilding masks.

An exam ``OUT/<patient>/<exam>.mp4`` has ``OUT/<patient>/<exam>.truth/`` with
``truth.json``, ``ceus_mask.mkv``, ``us_mask.mkv`` (see data/README.md) and
``motion.csv`` (:func:`truth_motion_csv`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.synth.anatomy import LesionShape, RespiratoryMotion
from ceuspipe.synth.bolus import LognormalBolus
from ceuspipe.synth.out_of_plane import in_episode
from ceuspipe.video.panels import PanelLayout

TRUTH_FORMAT = "ceuspipe-synth-truth/1"
TRUTH_JSON = "truth.json"
CEUS_MASK_VIDEO = "ceus_mask.mkv"
US_MASK_VIDEO = "us_mask.mkv"
MOTION_CSV = "motion.csv"


def truth_dir_for(clip: str | os.PathLike) -> Path:
    """``<exam>.truth`` folder beside ``<exam>.mp4``."""
    clip = Path(clip)
    return clip.with_name(clip.stem + ".truth")


def load_truth(truth_dir: str | os.PathLike) -> dict:
    """Read ``truth_dir/truth.json`` (a truth folder, or the json file itself).

    Raises :class:`InputError` naming the file when it is missing or not a phantom truth.
    """
    path = Path(truth_dir)
    if path.is_dir():
        path = path / TRUTH_JSON
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "phantom truth file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable phantom truth ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(truth, dict) or truth.get("format") != TRUTH_FORMAT:
        raise InputError(path, f"not a phantom truth file (format is not {TRUTH_FORMAT})")
    return truth


def truth_layout(truth: dict) -> PanelLayout:
    """Panel boxes of the exam's frames."""
    return PanelLayout.from_dict(truth["layout"])


def truth_skin(truth: dict):
    """The :class:`~ceuspipe.synth.screen.ScreenSkin` of the exam's screen (the
    original screen for truths written without one)."""
    from ceuspipe.synth.screen import DEFAULT_SKIN, ScreenSkin

    d = truth.get("skin")
    if not d:
        return DEFAULT_SKIN
    keys = ScreenSkin.__dataclass_fields__
    return ScreenSkin(**{k: v for k, v in d.items() if k in keys})


def geometry_side(truth: dict) -> str:
    """``"left"``/``"right"`` for :func:`~ceuspipe.synth.screen.make_geometry`
    (a stacked screen's ``"top"`` CEUS is ``"left"``)."""
    side = truth["ceus_side"]
    return {"top": "left", "bottom": "right"}.get(side, side)


def truth_curves(truth: dict) -> tuple[LognormalBolus, LognormalBolus]:
    """``(lesion, parenchyma)`` bolus curves: mean linear power vs time in seconds."""
    c = truth["curves"]
    return LognormalBolus.from_dict(c["lesion"]), LognormalBolus.from_dict(c["parenchyma"])


def truth_masks_at(truth: dict, time_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks at ``time_s`` seconds: ``(ceus_roi, bmode_lesion)``.

    ``ceus_roi`` is ``(h, w) uint8`` 0/1 of the CEUS panel size, ``bmode_lesion``
    the same for the US panel, both in panel pixel coordinates. Computed from
    the recorded shape and motion; equal to the mask videos' frame at a frame time.
    (With a frozen B-mode panel the lesion mask is that of time 0.)
    """
    layout = truth_layout(truth)
    shape = LesionShape.from_dict(truth["lesion_shape"])
    motion = RespiratoryMotion.from_dict(truth["motion"])
    dx, dy = motion.offset(float(time_s))
    roi, lesion = shape.masks((layout.ceus.h, layout.ceus.w), dx, dy)
    if (layout.us.h, layout.us.w) != (layout.ceus.h, layout.ceus.w):
        lesion = shape.masks((layout.us.h, layout.us.w), dx, dy)[1]
    if truth_skin(truth).frozen_bmode:  # the B-mode panel shows frame 0 throughout
        lesion = shape.masks((layout.us.h, layout.us.w), *motion.offset(0.0))[1]
    if in_episode(float(time_s), truth_out_of_plane(truth)):  # the lesion is not in the plane
        roi, lesion = np.zeros_like(roi), np.zeros_like(lesion)
    return roi, lesion


def truth_out_of_plane(truth: dict) -> list[list[float]]:
    """``[[start_s, end_s], ...]``: the episodes out of the lesion's plane (frames at
    ``start <= t < end``); empty for exams without them."""
    return [[float(a), float(b)] for a, b in truth.get("out_of_plane", {}).get("episodes_s", [])]


def truth_frame_motion(truth: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame of the clip: ``(dx_px, dy_px, out_of_plane)``, each ``(n_frames,)``.

    ``dx_px``, ``dy_px`` (float64): shift of both panels' content from the tissue at
    rest, panel px, ``+x`` right, ``+y`` down (a point at rest at ``(x, y)`` is shown
    at ``(x + dx, y + dy)``; a frozen B-mode panel keeps frame 0's shift);
    ``out_of_plane`` (bool): the frame is outside the lesion's plane (its B-mode
    shows other tissue, its masks are empty).
    """
    motion = RespiratoryMotion.from_dict(truth["motion"])
    times = [float(t) for t in truth["frame_times_s"]]
    offsets = np.array([motion.offset(t) for t in times], np.float64).reshape(-1, 2)
    episodes = truth_out_of_plane(truth)
    away = np.array([in_episode(t, episodes) for t in times], bool)
    return offsets[:, 0], offsets[:, 1], away


def truth_motion_csv(truth: dict) -> str:
    """Text of ``motion.csv``: ``frame_index,time_s,dx_px,dy_px,out_of_plane`` (0/1) per
    frame, from :func:`truth_frame_motion`."""
    dx, dy, away = truth_frame_motion(truth)
    rows = ["frame_index,time_s,dx_px,dy_px,out_of_plane"]
    rows += [f"{i},{float(t):.6f},{dx[i]:.6f},{dy[i]:.6f},{int(away[i])}"
             for i, t in enumerate(truth["frame_times_s"])]
    return "\n".join(rows) + "\n"
