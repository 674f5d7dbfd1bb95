"""Batched lesion-probability prediction with PyTorch or ONNX Runtime.

A predictor maps a batch of CEUS and US panels, each ``(B, S, S) float32`` grey
in ``[0, 1]`` (``S`` = the model's input size, 128 for the paper), to lesion
probabilities ``(B, S, S) float32`` in ``[0, 1]`` (sigmoid of the logits).

Pre- and post-processing live here too, so that every engine sees exactly the
same pixels: :func:`prepare_panel` (RGB panel -> BT.601 grey -> area resize to
``S x S`` -> ``/255``) and :func:`probability_to_mask` (bilinear resize back to the
panel size, then threshold).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ceuspipe.cpus import usable_cpus
from ceuspipe.devices import resolve_device
from ceuspipe.errors import InputError
from ceuspipe.segment.model_spec import ModelSpec
from ceuspipe.preprocess import panel_to_input

log = logging.getLogger("ceuspipe")

ENGINES = ("auto", "torch", "onnx")


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


class TorchPredictor:
    """Eager PyTorch inference; fp16 autocast on CUDA when ``amp``."""

    engine = "torch"

    def __init__(self, spec: ModelSpec, device: str = "cpu", *, amp: bool = True):
        import torch

        self._torch = torch
        self.device = device
        self.size = spec.size
        self.model = spec.model.to(device).eval()
        self.amp = amp and device.startswith("cuda")

    def inference_record(self) -> dict:
        """One run per batch; on the CPU with PyTorch's intra-op threads."""
        if self.device.startswith("cuda"):
            return {"runs_per_batch": 1}
        return {"runs_per_batch": 1, "threads_per_run": self._torch.get_num_threads()}

    def __call__(self, ceus: np.ndarray, us: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            c = torch.from_numpy(np.ascontiguousarray(ceus, dtype=np.float32))[:, None].to(self.device)
            u = torch.from_numpy(np.ascontiguousarray(us, dtype=np.float32))[:, None].to(self.device)
            if self.amp:
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.model(c, u)
            else:
                logits = self.model(c, u)
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


class OnnxPredictor:
    """ONNX Runtime CPU inference of an exported model (inputs ``ceus``, ``us``);
    ``engine`` is ``onnx-int8`` for a quantised model, else ``onnx``.

    ``threads``: intra-op threads of one run (default: the usable CPUs).
    ``parallel_frames``: a call with several frames runs as concurrent one-thread
    runs over slices of the batch, one per usable CPU, instead of one run whose
    layers are split over the threads. Same outputs; less CPU time per frame, since
    no thread waits at each layer's barrier for another one that the decoder or
    encoder holds: inside segment-video on 2 cores, int8 inference took 74 core-ms
    a frame this way against 106 (89 with nothing else running). A call with one
    frame still takes one multi-threaded run.
    """

    device = "cpu"

    def __init__(self, onnx_path: str | os.PathLike, size: int, *, threads: int | None = None,
                 int8: bool = False, parallel_frames: bool = False):
        from ceuspipe.segment.onnx_export import feed_for

        self._feed_for = feed_for
        self.size = int(size)
        self.path = Path(onnx_path)
        self.engine = "onnx-int8" if int8 else "onnx"
        self.threads = threads or usable_cpus()
        self.parallel = usable_cpus() if parallel_frames else 1
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()
        session = self._session(1 if self.parallel > 1 else self.threads)  # a bad file fails here
        fixed = session.get_inputs()[0].shape[0]
        self.fixed_batch = fixed if isinstance(fixed, int) else None
        if self.fixed_batch is not None:
            self.parallel = 1  # its batch cannot be sliced

    def inference_record(self) -> dict:
        """How a batch runs, for segment.json: concurrent runs and intra-op threads per run."""
        return {"runs_per_batch": self.parallel, "threads_per_run": 1 if self.parallel > 1 else self.threads}

    @property
    def session(self):
        """The ONNX Runtime session of a whole-batch run."""
        return self._session(self.threads)

    def _session(self, threads: int):
        """The session whose runs use ``threads`` intra-op threads (made on first use)."""
        with self._lock:
            if threads not in self._sessions:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.log_severity_level = 3
                self._sessions[threads] = ort.InferenceSession(str(self.path), sess_options=opts,
                                                               providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def __call__(self, ceus: np.ndarray, us: np.ndarray) -> np.ndarray:
        return self.submit(ceus, us).result()

    def submit(self, ceus: np.ndarray, us: np.ndarray) -> BatchResult:
        """Start a batch: with ``parallel_frames`` (and more than one frame) its slices go to
        the shared frame threads and this returns at once; otherwise it runs here."""
        c = np.ascontiguousarray(ceus, dtype=np.float32)[:, None]
        u = np.ascontiguousarray(us, dtype=np.float32)[:, None]
        n, fixed = c.shape[0], self.fixed_batch
        if fixed is not None and n != fixed:
            # A fixed-batch model: run chunks of ``fixed`` frames, the last one padded by repetition.
            rows = np.arange(-(-n // fixed) * fixed) % n
            out = [self._run(self.session, c[rows[i:i + fixed]], u[rows[i:i + fixed]])
                   for i in range(0, len(rows), fixed)]
            return BatchResult([np.concatenate(out)[:n]])
        if self.parallel > 1 and n > 1:
            single, pool = self._session(1), _frame_pool(self.parallel)
            bounds = np.linspace(0, n, min(n, self.parallel) + 1).round().astype(int)
            return BatchResult([pool.submit(self._run, single, c[a:b], u[a:b])
                                for a, b in zip(bounds[:-1], bounds[1:])])
        return BatchResult([self._run(self.session, c, u)])

    def _run(self, session, c: np.ndarray, u: np.ndarray) -> np.ndarray:
        (logits,) = session.run(["logits"], self._feed_for(session, c, u))
        return sigmoid(logits[:, 0])


@functools.lru_cache(maxsize=None)
def _frame_pool(workers: int) -> ThreadPoolExecutor:
    """The threads that run slices of a batch concurrently (shared by every predictor)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="ceuspipe-infer")


# A forked child has none of the parent's pool threads; a pool copied into it would take
# work and never run it. It makes its own on first use.
os.register_at_fork(after_in_child=_frame_pool.cache_clear)


def make_predictor(spec: ModelSpec, *, engine: str = "auto", device: str = "auto",
                   cache_dir: str | os.PathLike | None = None, parallel_frames: bool = False) -> Predictor:
    """Choose and build the predictor (``device``: see :mod:`ceuspipe.devices`).

    ``engine="auto"``: ONNX Runtime on CPU (the checkpoint is exported once and
    cached, see :func:`ceuspipe.segment.onnx_export.cached_onnx`), PyTorch with
    fp16 autocast on CUDA. ``engine="onnx"`` always runs on CPU. A spec loaded
    from an ONNX file (fp32 or int8) runs as it is with ONNX Runtime on CPU.
    ``parallel_frames``: see :class:`OnnxPredictor` (ONNX Runtime only).
    """
    if engine not in ENGINES:
        raise InputError(None, f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if spec.onnx_path is not None:
        if engine == "torch" or device.startswith("cuda"):
            raise InputError(spec.path, "an ONNX model runs on CPU with ONNX Runtime only "
                                        "(give the .pt checkpoint for PyTorch or CUDA)")
        return OnnxPredictor(spec.onnx_path, spec.size, int8=bool(spec.quantization),
                             parallel_frames=parallel_frames)
    dev = resolve_device(device)
    if engine == "onnx" and dev != "cpu":
        raise InputError(None, "the onnx engine runs on CPU only (use --engine torch for CUDA)")
    if engine == "onnx" or (engine == "auto" and dev == "cpu"):
        from ceuspipe.segment.onnx_export import cached_onnx

        try:
            return OnnxPredictor(cached_onnx(spec, cache_dir=cache_dir), spec.size,
                                 parallel_frames=parallel_frames)
        except ImportError as exc:
            if engine == "onnx":
                raise InputError(None, f"onnx engine unavailable ({exc})") from None
            log.warning("onnxruntime/onnx not importable (%s): using PyTorch on CPU", exc)
            return TorchPredictor(spec, "cpu")
    return TorchPredictor(spec, dev)
