"""Patient-level train/test split and optional cross-validation folds.

Frames of one patient are never in two splits: the split is drawn over patient
ids, then every case inherits its patient's split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class PatientSplit:
    """``train``/``test`` patient ids (sorted); ``folds`` a list of
    ``{"train": [...], "val": [...]}`` over the training patients (or empty)."""

    train: list[str]
    test: list[str]
    folds: list[dict[str, list[str]]] = field(default_factory=list)


def split_patients(patients: Sequence[str], test_fraction: float = 1 / 3, folds: int = 0,
                   seed: int = 0) -> PatientSplit:
    """Split ``patients`` (distinct ids) into train and test, seeded.

    The test set has ``round(n * test_fraction)`` patients, at least one and at
    most ``n - 1`` when ``n >= 2`` and ``0 < test_fraction < 1`` (a 2:1 split is
    ``test_fraction = 1/3``); ``test_fraction = 0`` puts every patient in train.
    ``folds >= 2`` makes that many folds over the shuffled training patients
    (each training patient is in exactly one ``val``). Raises ``ValueError`` for
    an impossible request.
    """
    ids = sorted(set(patients))
    if len(ids) != len(patients):
        raise ValueError("patient ids must be distinct")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    if folds < 0 or folds == 1:
        raise ValueError(f"folds must be 0 (none) or at least 2, got {folds}")
    n = len(ids)
    n_test = int(round(n * test_fraction))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(n)]
    test = sorted(order[:n_test])
    train_shuffled = order[n_test:]
    fold_list: list[dict[str, list[str]]] = []
    if folds:
        if folds > len(train_shuffled):
            raise ValueError(f"{folds} folds need at least {folds} training patients, "
                             f"there are {len(train_shuffled)}")
        chunks = np.array_split(np.arange(len(train_shuffled)), folds)
        for chunk in chunks:
            val = sorted(train_shuffled[i] for i in chunk)
            fold_list.append({"train": sorted(set(train_shuffled) - set(val)), "val": val})
    return PatientSplit(train=sorted(train_shuffled), test=test, folds=fold_list)
