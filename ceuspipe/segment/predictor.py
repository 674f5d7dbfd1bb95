"""What every inference engine's predictor is (:class:`Predictor`), and the pixels it sees.

A predictor maps a batch of CEUS and US panels, each ``(B, S, S) float32`` grey
in ``[0, 1]`` (``S`` = the model's input size, 128 for the paper), to lesion
probabilities ``(B, S, S) float32`` in ``[0, 1]`` (sigmoid of the logits).

Pre- and post-processing live here too, so that every engine sees exactly the
same pixels: :func:`prepare_panel` (RGB panel -> BT.601 grey -> area resize to
``S x S`` -> ``/255``) and :func:`probability_to_mask` (bilinear resize back to the
panel size, then threshold). The engines themselves are in :mod:`ceuspipe.segment.engines`.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

import cv2
import numpy as np

from ceuspipe.preprocess import panel_to_input


def prepare_panel(panel: np.ndarray, size: int) -> np.ndarray:
    """Model input for one panel: :func:`ceuspipe.preprocess.panel_to_input` (as in training)."""
    return panel_to_input(panel, size)


def probability_to_mask(prob: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """Lesion mask of a panel from one model-size probability map.

    ``prob``: ``(S, S) float32`` in ``[0, 1]``. Returns ``(height, width) uint8``
    0/1: the map resized bilinearly to the panel size, ``>= threshold`` is lesion.
    """
    big = cv2.resize(np.ascontiguousarray(prob, dtype=np.float32), (width, height),
                     interpolation=cv2.INTER_LINEAR)
    return (big >= threshold).astype(np.uint8)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


class Predictor(Protocol):
    """``predictor(ceus, us) -> prob``; all ``(B, S, S) float32``. One that can run a batch in
    the background also has ``submit(ceus, us) -> BatchResult`` (see :func:`submit`)."""

    engine: str
    device: str
    size: int

    def __call__(self, ceus: np.ndarray, us: np.ndarray) -> np.ndarray: ...

    def inference_record(self) -> dict:
        """How a batch runs, for segment.json."""
        ...


class BatchResult:
    """The probabilities of one submitted batch, in parts (arrays, or futures of arrays)."""

    def __init__(self, parts: list):
        self._parts = parts

    def result(self) -> np.ndarray:
        """``(B, S, S) float32``; waits for parts still running and re-raises their errors."""
        arrays = [p.result() if isinstance(p, Future) else p for p in self._parts]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def cancel(self) -> None:
        """Drop the parts that have not started (an abandoned batch)."""
        for p in self._parts:
            if isinstance(p, Future):
                p.cancel()


def submit(predictor: Predictor, ceus: np.ndarray, us: np.ndarray) -> BatchResult:
    """Start ``predictor`` on a batch: returns at once when it runs batches in the background
    (:meth:`OnnxPredictor.submit` with ``parallel_frames``), else after running it. Keeping
    the next batch submitted while the last one finishes leaves no core idle between them."""
    start = getattr(predictor, "submit", None)
    return start(ceus, us) if start is not None else BatchResult([predictor(ceus, us)])
