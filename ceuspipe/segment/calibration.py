"""Model-input frames for int8 calibration, from a dataset folder or from clips.

Both sources give pairs of panels prepared exactly as segment-video prepares them
(:func:`ceuspipe.preprocess.panel_to_input`): ``ceus`` and ``us``, each
``(N, S, S) float32`` grey in ``[0, 1]``, plus one label per frame naming where it
came from (``case`` or ``clip@time``), and a held-out set of the same form on
which the quantised model's masks are compared with fp32 ones.

* A ``build-dataset`` folder: the training split calibrates, the test split is
  held out (the training cases are what the model was fitted to; the test cases
  stand for new exams).
* Clips (files or folders, as for ``ceuspipe keyframes``): frames evenly spaced
  in time over each clip; alternate frames calibrate and are held out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.video.sampling import evenly_spaced
from ceuspipe.preprocess import panel_to_input
from ceuspipe.video.layout import LayoutOptions


@dataclass
class PanelPairs:
    """``ceus``, ``us``: ``(N, S, S) float32`` in [0, 1]; ``labels``: N source names."""

    ceus: np.ndarray
    us: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def stack(cls, items: Sequence[tuple[np.ndarray, np.ndarray, str]], size: int) -> "PanelPairs":
        if not items:
            empty = np.zeros((0, size, size), np.float32)
            return cls(empty, empty.copy(), [])
        c, u, names = zip(*items)
        return cls(np.stack(c), np.stack(u), list(names))

    def take(self, index: np.ndarray | slice) -> "PanelPairs":
        idx = np.arange(len(self))[index]
        return PanelPairs(self.ceus[idx], self.us[idx], [self.labels[i] for i in idx])


@dataclass
class CalibrationSet:
    """Frames that set the int8 ranges (``calibrate``) and frames held out to check them."""

    calibrate: PanelPairs
    held_out: PanelPairs
    source: str


def from_dataset(root: str | os.PathLike, size: int, frames: int) -> CalibrationSet:
    """Training cases (at most ``frames``, evenly spread) calibrate; test cases are held out."""
    from ceuspipe.dataset.torch_dataset import case_files, read_dataset_info, read_grey, split_cases

    root = Path(root)
    read_dataset_info(root)

    def load(split: str, limit: int) -> PanelPairs:
        try:
            cases = split_cases(root, split)
        except InputError:
            if split == "test":  # a dataset may have no test split: hold out part of train instead
                return PanelPairs.stack([], size)
            raise
        cases = [cases[i] for i in evenly_spaced(len(cases), limit)]
        items = []
        for case in cases:
            f = case_files(root, case)
            items.append((panel_to_input(read_grey(f.ceus), size), panel_to_input(read_grey(f.us), size), case))
        return PanelPairs.stack(items, size)

    train = load("train", frames)
    test = load("test", frames)
    if len(test) == 0:
        return CalibrationSet(train.take(slice(0, None, 2)), train.take(slice(1, None, 2)), str(root))
    return CalibrationSet(train, test, str(root))


def clip_frames(path: Path, size: int, per_clip: int, layout: LayoutOptions,
                sample_fps: float = 1.0) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``per_clip`` frames evenly spread over one clip, sampled at ``sample_fps`` while streaming.

    Memory is bounded: when more than ``2 * per_clip`` samples are held, every
    other one is dropped and the sampling stride doubles.
    """
    from ceuspipe.video.clip_stream import open_clip
    from ceuspipe.video.panels import crop

    clip = open_clip(path, layout, sample_fps=sample_fps)
    panels = clip.layout
    kept: list[tuple[np.ndarray, np.ndarray, str]] = []
    stride = 1
    try:
        for seen, frame in enumerate(clip):
            if seen % stride:
                continue
            kept.append((panel_to_input(crop(frame.image, panels.ceus), size),
                         panel_to_input(crop(frame.image, panels.us), size), f"{path.name}@{frame.time_s:.1f}s"))
            if len(kept) > 2 * per_clip:
                kept = kept[::2]
                stride *= 2
    finally:
        clip.close()
    return [kept[i] for i in evenly_spaced(len(kept), per_clip)]


def from_clips(paths: Sequence[str | os.PathLike], size: int, frames: int,
               layout: LayoutOptions | None = None) -> CalibrationSet:
    """About ``2 * frames`` frames evenly spread over the clips; alternate ones calibrate / are held out."""
    from ceuspipe.inputs import find_inputs

    exams = find_inputs(paths)
    if not exams:
        raise InputError(paths[0] if paths else None, "no clips found for calibration")
    per_clip = max(2, -(-2 * frames // len(exams)))
    items = []
    for exam in exams:
        items.extend(clip_frames(exam.path, size, per_clip, layout or LayoutOptions()))
    pairs = PanelPairs.stack(items, size)
    return CalibrationSet(pairs.take(slice(0, None, 2)), pairs.take(slice(1, None, 2)),
                          ", ".join(str(p) for p in paths))


def calibration_set(sources: Sequence[str | os.PathLike], size: int, frames: int = 64,
                    layout: LayoutOptions | None = None) -> CalibrationSet:
    """:func:`from_dataset` when ``sources`` is one folder holding ``dataset.json``, else :func:`from_clips`."""
    if not sources:
        raise InputError(None, "int8 quantisation needs calibration data (--calibration DATASET or clips)")
    if frames < 1:
        raise InputError(None, "calibration frames must be at least 1")
    if len(sources) == 1 and (Path(sources[0]) / "dataset.json").is_file():
        return from_dataset(sources[0], size, frames)
    return from_clips(sources, size, frames, layout)
