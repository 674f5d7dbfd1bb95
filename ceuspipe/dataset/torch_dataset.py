"""A torch Dataset over the nnU-Net-like dataset folder written by ``ceuspipe build-dataset``.

Layout read: ``DATASET/dataset.json``, ``DATASET/splits.json``,
``images{Tr,Ts}/<case>_0000.png`` (CEUS, grey uint8), ``<case>_0001.png`` (US, grey
uint8, any size), ``labels{Tr,Ts}/<case>.png`` (uint8 0/1 at CEUS size).

Items are ``(ceus, us, label)``, each ``(1, size, size)`` float32: images resized
by :func:`ceuspipe.preprocess.panel_to_input` (area averaging when shrinking) and scaled to [0, 1], the label resized with nearest neighbour (0/1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ceuspipe.errors import InputError
from ceuspipe.preprocess import panel_to_input

SPLITS = ("train", "test")


@dataclass(frozen=True)
class CaseFiles:
    """Paths of one case's CEUS image, US image and label."""

    case: str
    ceus: Path
    us: Path
    label: Path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing (not a dataset folder written by build-dataset?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def read_dataset_info(root: str | Path) -> dict:
    """``dataset.json`` of ``root``, checked for the two channels and the PNG file ending."""
    path = Path(root) / "dataset.json"
    info = _read_json(path)
    names = info.get("channel_names")
    if not isinstance(names, dict) or [str(v).lower() for _, v in sorted(names.items())] != ["ceus", "us"]:
        raise InputError(path, f'channel_names must be {{"0": "ceus", "1": "us"}}, got {names!r}')
    if info.get("file_ending", ".png") != ".png":
        raise InputError(path, f"file_ending {info.get('file_ending')!r} not supported (only .png)")
    return info


def split_cases(root: str | Path, split: str = "train", fold: int | None = None) -> list[str]:
    """Case ids of ``split`` ("train", "test", or "val" with a ``fold``) from ``splits.json``.

    With ``fold``, "train" and "val" are that fold's lists.
    """
    path = Path(root) / "splits.json"
    splits = _read_json(path)
    if fold is not None:
        folds = splits.get("folds") or []
        if not isinstance(folds, list) or not 0 <= fold < len(folds):
            raise InputError(path, f"fold {fold} not present ({len(folds) if isinstance(folds, list) else 0} folds)")
        if split == "test":
            cases = splits.get("test")
        else:
            cases = folds[fold].get("val" if split == "val" else "train")
    else:
        if split == "val":
            raise InputError(path, "split 'val' needs a fold")
        cases = splits.get(split)
    if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases):
        raise InputError(path, f"split {split!r} missing or not a list of case ids")
    if not cases:
        raise InputError(path, f"split {split!r}{'' if fold is None else f' of fold {fold}'} is empty")
    return cases


def case_files(root: str | Path, case: str) -> CaseFiles:
    """Locate ``case`` under imagesTr/labelsTr, else imagesTs/labelsTs."""
    root = Path(root)
    for suffix in ("Tr", "Ts"):
        ceus = root / f"images{suffix}" / f"{case}_0000.png"
        if ceus.exists():
            return CaseFiles(case, ceus, root / f"images{suffix}" / f"{case}_0001.png",
                             root / f"labels{suffix}" / f"{case}.png")
    raise InputError(root / "imagesTr" / f"{case}_0000.png", f"case {case!r} has no CEUS image")


def read_grey(path: Path) -> np.ndarray:
    """``(H, W) uint8`` grey image; colour PNGs are converted to grey."""
    if not path.exists():
        raise InputError(path, "missing")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(path, "not a readable image")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        raise InputError(path, f"expected 8-bit image, got {img.dtype}")
    return img


def read_case(files: CaseFiles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ceus (H, W) uint8, us (H', W') uint8, label (H, W) uint8 0/1)`` at native size."""
    ceus, us, label = read_grey(files.ceus), read_grey(files.us), read_grey(files.label)
    if label.shape != ceus.shape:
        raise InputError(files.label, f"label size {label.shape} differs from CEUS size {ceus.shape}")
    if label.max(initial=0) > 1:
        raise InputError(files.label, f"label values must be 0/1, found {int(label.max())}")
    return ceus, us, label


def to_input(img: np.ndarray, size: int) -> np.ndarray:
    """``(H, W) uint8`` -> ``(size, size) float32`` in [0, 1], exactly as segment-video prepares frames."""
    return panel_to_input(img, size)


def _augment(rng: np.random.Generator, ceus, us, label):
    """Flips, a small affine (rotation ±10°, scale 0.9-1.1, shift ±5 %) and intensity jitter."""
    if rng.random() < 0.5:
        ceus, us, label = ceus[:, ::-1], us[:, ::-1], label[:, ::-1]
    if rng.random() < 0.5:
        ceus, us, label = ceus[::-1], us[::-1], label[::-1]
    size = ceus.shape[0]
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-10, 10), rng.uniform(0.9, 1.1))
    m[:, 2] += rng.uniform(-0.05, 0.05, 2) * size
    warp = lambda a, interp: cv2.warpAffine(np.ascontiguousarray(a), m, (size, size), flags=interp,  # noqa: E731
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ceus, us = warp(ceus, cv2.INTER_LINEAR), warp(us, cv2.INTER_LINEAR)
    label = warp(label, cv2.INTER_NEAREST)
    gain, bias = rng.uniform(0.9, 1.1, 2), rng.uniform(-0.05, 0.05, 2)
    ceus = np.clip(ceus * gain[0] + bias[0], 0, 1)
    us = np.clip(us * gain[1] + bias[1], 0, 1)
    return ceus, us, label


class CeusSegDataset(Dataset):
    """Cases of one split, loaded into memory once (small PNGs), resized to ``size``.

    ``augment`` draws each item's augmentation from ``(seed, epoch, index)`` (call
    :meth:`set_epoch`), so runs are reproducible and resumable with any worker count.
    """

    def __init__(self, root: str | Path, split: str = "train", size: int = 128, augment: bool = False,
                 fold: int | None = None, seed: int = 0):
        self.root = Path(root)
        read_dataset_info(self.root)
        self.cases = split_cases(self.root, split, fold)
        self.files = [case_files(self.root, c) for c in self.cases]
        self.size, self.augment, self.seed, self.epoch = size, augment, seed, 0
        self._items = []
        for f in self.files:
            ceus, us, label = read_case(f)
            lab = cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST).astype(np.float32)
            self._items.append((to_input(ceus, size), to_input(us, size), lab))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int):
        ceus, us, label = self._items[index]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            ceus, us, label = _augment(rng, ceus, us, label)
        return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
                     for a in (ceus, us, label))
