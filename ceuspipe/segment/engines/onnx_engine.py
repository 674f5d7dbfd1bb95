"""ONNX Runtime CPU inference of an exported model (fp32, or ceuspipe's quantised int8)."""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ceuspipe.cpus import usable_cpus
from ceuspipe.segment.engines.base import Engine, EngineOptions, register_engine
from ceuspipe.segment.model_spec import ModelSpec
from ceuspipe.segment.predictor import BatchResult, sigmoid


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


def _build(spec: ModelSpec, device: str, options: EngineOptions) -> OnnxPredictor:
    """The options' model file, else the spec's ONNX file, else the checkpoint exported once
    and cached (:func:`ceuspipe.segment.onnx_export.cached_onnx`)."""
    if options.model_file is not None:
        return OnnxPredictor(options.model_file, spec.size, int8=options.int8,
                             parallel_frames=options.parallel_frames)
    if spec.onnx_path is not None:
        return OnnxPredictor(spec.onnx_path, spec.size, int8=bool(spec.quantization),
                             parallel_frames=options.parallel_frames)
    from ceuspipe.segment.onnx_export import cached_onnx

    return OnnxPredictor(cached_onnx(spec, cache_dir=options.cache_dir), spec.size,
                         parallel_frames=options.parallel_frames)


#: on the CPU, ``engine auto`` runs ONNX Runtime (the checkpoint exported once and cached)
ENGINE = register_engine(Engine("onnx", _build, devices=("cpu",), precisions=("fp32", "int8"),
                                model_files=("checkpoint", "onnx"), auto_for=("cpu",), auto_rank=0,
                                requires=("onnxruntime", "onnx")))
