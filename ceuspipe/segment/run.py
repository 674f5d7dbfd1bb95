"""``segment_video``: every frame of a clip -> lesion masks, overlay, time-intensity curve.

Pipeline (three threads, bounded queues, so memory does not grow with clip
length and decoding, inference and encoding overlap; PyAV, OpenCV, ONNX Runtime
and PyTorch release the GIL while they work)::

    decode thread   iter_frames -> panel layout (first frames) -> crop both panels
                    -> grey -> resize to S x S -> queue (bounded)
    main thread     batches of B -> predictor -> probabilities (S x S)
                    -> optional temporal median -> queue (bounded)
    encode thread   bilinear resize to the CEUS panel -> threshold -> mask.mkv,
                    overlay.mp4, per-frame TIC scalars (area, mean grey, mean linear power)

Outputs go to a temporary folder beside ``out_dir`` that is renamed to
``out_dir`` only when everything succeeded (see :func:`ceuspipe.fsutil.atomic_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ceuspipe import __version__
from ceuspipe.errors import CeuspipeError, InputError, OutputError
from ceuspipe.fsutil import atomic_dir, atomic_write_text, safe_name
from ceuspipe.segment.overlay import overlay_frame
from ceuspipe.segment.predictor import (ModelSpec, Predictor, load_spec, make_predictor,
                                        prepare_panel, probability_to_mask, resolve_device)
from ceuspipe.segment.temporal import TemporalMedian
from ceuspipe.video.layout import LayoutOptions
from ceuspipe.preprocess import to_gray
from ceuspipe.video.panels import Box, PanelLayout, crop

log = logging.getLogger("ceuspipe")

OUTPUT_SUFFIX = ".ceuspipe"
MASK_NAME, OVERLAY_NAME = "mask.mkv", "overlay.mp4"
_END = object()


@dataclass(frozen=True)
class SegmentConfig(LayoutOptions):
    """Options of :func:`segment_video`.

    ``sample_fps``: frames per second of presentation time to segment (None:
    every frame). ``batch_size``: frames per inference call. ``device``:
    ``auto|cpu|cuda``; ``engine``: ``auto|torch|onnx`` (auto = ONNX Runtime on
    CPU, PyTorch fp16 autocast on CUDA). ``dynamic_range_db``: display dynamic
    range for linearising grey levels (dB). ``tic_model``: ``lognormal|gamma``.
    ``temporal_smoothing``: median window in frames (0 = off, see
    :mod:`ceuspipe.segment.temporal`). ``threshold``: probability threshold
    (None: the checkpoint's, 0.5 in the paper). Layout options come from
    :class:`~ceuspipe.video.layout.LayoutOptions` (``layout_samples`` early
    frames are used for detection). ``overwrite``: replace an existing output
    folder. ``cache_dir``: where exported ONNX models are cached.
    ``overlay_crf``: H.264 quality of the overlay (lower = better).
    """

    sample_fps: float | None = None
    batch_size: int = 8
    device: str = "auto"
    engine: str = "auto"
    dynamic_range_db: float = 60.0
    tic_model: str = "lognormal"
    temporal_smoothing: int = 0
    threshold: float | None = None
    overwrite: bool = False
    cache_dir: str | None = None
    overlay_crf: int = 20
    queue_frames: int = 16


@dataclass
class SegmentReport:
    """What :func:`segment_video` did.

    ``frames``: frames segmented; ``frames_decoded``: frames decoded (all, also
    those skipped by ``sample_fps``); ``duration_s``: time of the last segmented
    frame (s from the first frame); ``wall_s``: seconds the run took (model
    loading included); ``fps``: segmented frames per wall-clock second of the
    streaming part; ``engine``/``device``: what ran the model;
    ``model_quantization``: an int8 model's calibration and fp32 agreement (empty for fp32).
    """

    source: Path
    out_dir: Path
    frames: int
    frames_decoded: int
    duration_s: float
    wall_s: float
    stream_s: float
    fps: float
    engine: str
    device: str
    batch_size: int
    layout: PanelLayout
    checkpoint: Path
    model_config: dict = field(default_factory=dict)
    model_quantization: dict = field(default_factory=dict)
    tic: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("layout",)}
        d["layout"] = self.layout.to_dict()
        for k in ("source", "out_dir", "checkpoint"):
            d[k] = str(d[k])
        return d


def default_out_dir(clip: str | os.PathLike) -> Path:
    """``<clip folder>/<clip stem>.ceuspipe`` (the stem sanitised)."""
    clip = Path(clip)
    return clip.parent / f"{safe_name(clip.stem)}{OUTPUT_SUFFIX}"


# --------------------------------------------------------------------------- threads


class _Worker(threading.Thread):
    """A daemon thread whose exception is re-raised by :meth:`join_checked`."""

    def __init__(self, target: Callable[[], None], name: str):
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc

    def join_checked(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put with back-pressure; False when the run is being stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event, worker: _Worker | None = None) -> Any:
    """Get, giving up when the producer thread died or the run is being stopped."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _END
            if worker is not None and not worker.is_alive():
                try:
                    return q.get_nowait()
                except queue.Empty:
                    worker.join_checked()
                    return _END


@dataclass
class _Item:
    index: int
    time_s: float
    image: np.ndarray      # (H, W, 3) uint8 RGB full frame
    ceus_in: np.ndarray    # (S, S) float32
    us_in: np.ndarray      # (S, S) float32


class _Sampler:
    """``select`` callback keeping the first frame at or after each ``n / fps`` s."""

    def __init__(self, sample_fps: float | None):
        self.fps = sample_fps
        self.next_n = 0
        self.decoded = 0
        self.last_time_s = 0.0

    def __call__(self, time_s: float) -> bool:
        self.decoded += 1
        self.last_time_s = time_s
        if self.fps is None:
            return True
        reached = int(np.floor(time_s * self.fps + 1e-9))
        if reached < self.next_n:
            return False
        self.next_n = reached + 1
        return True


# --------------------------------------------------------------------------- main entry


def segment_video(clip: str | os.PathLike, checkpoint: str | os.PathLike,
                  out_dir: str | os.PathLike | None = None,
                  config: SegmentConfig = SegmentConfig(), progress: bool = False) -> SegmentReport:
    """Segment every (or every sampled) frame of ``clip`` with ``checkpoint``.

    Writes into ``out_dir`` (default :func:`default_out_dir`): ``mask.mkv``
    (FFV1 grey, CEUS-panel size, 0/255), ``overlay.mp4`` (H.264 full frame,
    black outside the panels, mask contour on CEUS and mirrored on US), both
    with the clip's frame times; ``tic.csv``, ``tic.json``, ``tic.png``;
    ``segment.json`` (this report). Nothing appears under ``out_dir`` unless
    the whole run succeeds. Raises :class:`InputError` for an unreadable clip,
    checkpoint or layout, :class:`OutputError` when ``out_dir`` exists and
    ``overwrite`` is False.
    """
    t_start = time.perf_counter()
    clip = Path(clip)
    out = Path(out_dir) if out_dir is not None else default_out_dir(clip)
    if config.batch_size < 1:
        raise InputError(None, "batch size must be at least 1")
    if config.sample_fps is not None and not config.sample_fps > 0:
        raise InputError(None, "sample fps must be positive")
    from ceuspipe.tic.models import MODELS

    if config.tic_model not in MODELS:
        raise InputError(None, f"unknown TIC model {config.tic_model!r} ({' or '.join(MODELS)})")
    if out.exists() and not config.overwrite:
        raise OutputError(out, "output folder exists (use --overwrite to replace it)")

    from ceuspipe.video.reader import probe

    info = probe(clip)  # fails early, with the clip's name, on a non-video
    device = resolve_device(config.device)
    spec = load_spec(checkpoint, device if config.engine != "onnx" else "cpu")
    predictor = make_predictor(spec, engine=config.engine, device=config.device,
                               cache_dir=config.cache_dir)
    threshold = spec.threshold if config.threshold is None else float(config.threshold)
    fps_hint = info.nominal_fps or 30.0
    if config.sample_fps is not None:
        fps_hint = min(fps_hint, config.sample_fps)

    with atomic_dir(out, overwrite=config.overwrite) as tmp:
        stats = _stream(clip, tmp, predictor, spec, config, threshold, fps_hint, progress)
        stream_s = stats["stream_s"]
        report = SegmentReport(
            source=clip, out_dir=out, frames=stats["frames"], frames_decoded=stats["decoded"],
            duration_s=stats["duration_s"], wall_s=0.0, stream_s=stream_s,
            fps=stats["frames"] / stream_s if stream_s > 0 else float("nan"),
            engine=predictor.engine, device=predictor.device, batch_size=config.batch_size,
            layout=stats["layout"], checkpoint=Path(checkpoint), model_config=spec.config,
            model_quantization=spec.quantization)
        meta = _metadata(report, config, threshold)
        report.tic = _write_tic(tmp, stats["tic"], meta, config)
        report.wall_s = time.perf_counter() - t_start
        tic = report.tic
        tic_short = {"success": tic.get("success"), "reason": tic.get("reason"), "model": tic.get("model"),
                     "qof_percent": tic.get("qof_percent"),
                     "parameters": {k: (v or {}).get("value") for k, v in (tic.get("parameters") or {}).items()
                                    if not k.startswith("fit_")}}
        summary = {**meta, **report.to_dict(), "tic": tic_short, "threshold": threshold,
                   "temporal_smoothing": config.temporal_smoothing,
                   "sample_fps": config.sample_fps,
                   "outputs": [MASK_NAME, OVERLAY_NAME, "tic.csv", "tic.json", "tic.png"]}
        atomic_write_text(tmp / "segment.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    return report


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Box):
        return obj.as_list()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _versions() -> dict:
    import av
    import cv2
    import torch

    v = {"ceuspipe": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "numpy": np.__version__, "av": av.__version__, "opencv": cv2.__version__}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return v


def _metadata(report: SegmentReport, config: SegmentConfig, threshold: float) -> dict:
    return {
        "source": str(report.source),
        "model_checkpoint": str(Path(report.checkpoint).resolve()),
        "model_config": report.model_config,
        "model_quantization": report.model_quantization,
        "threshold": threshold,
        "layout": report.layout.to_dict(),
        "dynamic_range_db": config.dynamic_range_db,
        "versions": _versions(),
    }


# --------------------------------------------------------------------------- streaming


def _stream(clip: Path, tmp: Path, predictor: Predictor, spec: ModelSpec, config: SegmentConfig,
            threshold: float, fps_hint: float, progress: bool) -> dict:
    from tqdm import tqdm

    from ceuspipe.tic import TicAccumulator
    from ceuspipe.video.reader import iter_frames
    from ceuspipe.video.writer import VideoWriter

    size = spec.size
    stop = threading.Event()
    in_q: queue.Queue = queue.Queue(maxsize=max(2, config.queue_frames))
    out_q: queue.Queue = queue.Queue(maxsize=max(2, config.queue_frames))
    layout_box: dict[str, PanelLayout] = {}
    layout_ready = threading.Event()
    sampler = _Sampler(config.sample_fps)

    def items(frames, layout: PanelLayout) -> Iterator[_Item]:
        for f in frames:
            yield _Item(f.index, f.time_s, f.image, prepare_panel(crop(f.image, layout.ceus), size),
                        prepare_panel(crop(f.image, layout.us), size))

    def decode() -> None:
        try:
            pending = []
            layout = None
            for frame in iter_frames(clip, select=sampler):
                if stop.is_set():
                    return
                if layout is None:
                    pending.append(frame)
                    if len(pending) < config.layout_samples:
                        continue
                    layout = _layout(pending)
                    frames = pending
                    pending = []
                else:
                    frames = [frame]
                for item in items(frames, layout):
                    if not _put(in_q, item, stop):
                        return
            if layout is None:
                if not pending:
                    raise InputError(clip, "no frames could be decoded")
                layout = _layout(pending)
                for item in items(pending, layout):
                    if not _put(in_q, item, stop):
                        return
        finally:
            layout_ready.set()
            _put(in_q, _END, stop)

    def _layout(frames) -> PanelLayout:
        layout = config.resolve([f.image for f in frames], source=str(clip))
        layout_box["layout"] = layout
        layout_ready.set()
        return layout

    acc = TicAccumulator(config.dynamic_range_db)
    writers: dict[str, VideoWriter] = {}

    def encode() -> None:
        layout = layout_box["layout"]
        ceus = layout.ceus
        writers["mask"] = VideoWriter(tmp / MASK_NAME, ceus.w, ceus.h, fps=fps_hint, codec="ffv1",
                                      pix_fmt="gray")
        # H.264 yuv420p needs even sizes: the overlay keeps the frame size, padded if odd.
        H, W = layout.frame_height, layout.frame_width
        writers["overlay"] = VideoWriter(tmp / OVERLAY_NAME, W + W % 2, H + H % 2, fps=fps_hint,
                                         codec="libx264", pix_fmt="yuv420p",
                                         options={"crf": str(config.overlay_crf), "preset": "veryfast"})
        while True:
            got = _get(out_q, stop)
            if got is _END:
                return
            item, prob = got
            mask = probability_to_mask(prob, ceus.h, ceus.w, threshold)
            writers["mask"].write(mask * np.uint8(255), item.time_s)
            ov = overlay_frame(item.image, mask, layout)
            if ov.shape[0] % 2 or ov.shape[1] % 2:
                ov = np.pad(ov, ((0, ov.shape[0] % 2), (0, ov.shape[1] % 2), (0, 0)))
            writers["overlay"].write(ov, item.time_s)
            acc.add(item.index, item.time_s, to_gray(crop(item.image, ceus)), mask)

    decoder = _Worker(decode, "ceuspipe-decode")
    encoder = _Worker(encode, "ceuspipe-encode")
    smoother = TemporalMedian(config.temporal_smoothing)
    t0 = time.perf_counter()
    decoder.start()
    n_done = 0
    bar = tqdm(desc=f"segment {clip.name}", unit="frame", disable=not progress)
    try:
        layout_ready.wait()
        if "layout" not in layout_box:
            decoder.join_checked()
            raise InputError(clip, "no frames could be decoded")
        encoder.start()
        done = False
        while not done:
            batch: list[_Item] = []
            while len(batch) < config.batch_size:
                got = _get(in_q, stop, decoder)
                if got is _END:
                    done = True
                    break
                batch.append(got)
            if encoder.error is not None:
                break
            if batch:
                probs = predictor(np.stack([b.ceus_in for b in batch]), np.stack([b.us_in for b in batch]))
                for b, p in zip(batch, probs):
                    for pair in smoother.push(b, p):
                        _put(out_q, pair, stop)
                n_done += len(batch)
                bar.update(len(batch))
        for pair in smoother.flush():
            _put(out_q, pair, stop)
        _put(out_q, _END, stop)
        encoder.join_checked()
        decoder.join_checked()
        for w in writers.values():
            w.close()
    except BaseException:
        stop.set()
        for w in (decoder, encoder):
            if w.is_alive() or w.ident is not None:
                w.join(timeout=30)
        for wr in writers.values():
            wr.abort()
        raise
    finally:
        bar.close()
    stream_s = time.perf_counter() - t0
    if len(acc) == 0:
        raise InputError(clip, "no frames were segmented")
    from ceuspipe.video.reader import check_clip_length

    check_clip_length(clip, sampler.decoded, sampler.last_time_s)
    return {"frames": len(acc), "decoded": sampler.decoded, "duration_s": float(acc.arrays()["time_s"][-1]),
            "layout": layout_box["layout"], "tic": acc, "stream_s": stream_s}


# --------------------------------------------------------------------------- TIC


def _write_tic(tmp: Path, acc, meta: dict, config: SegmentConfig) -> dict:
    """Fit the curve and write ``tic.csv``, ``tic.json`` (with ``meta``), ``tic.png``."""
    from ceuspipe.tic import write_tic_outputs

    result = acc.result(model=config.tic_model)
    write_tic_outputs(result, tmp, source=meta["source"], extra=meta)
    return result.to_json_dict()
