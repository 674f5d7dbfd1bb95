"""The streaming part of segment-video: three named stages joined by bounded channels.

::

    DecodeStage   (thread)  frames -> crop both panels -> grey -> model input S x S
                            -> repeat of the previous acquired frame? -> channel
    InferStage    (caller)  batches of B new frames -> predictor (the next batch submitted
                            before the last is collected) -> probabilities (S x S)
                            -> optional temporal median -> channel (repeats: no inference)
    EncodeStage   (thread)  bilinear resize to the CEUS panel -> threshold -> mask.mkv,
                            overlay.mp4, per-frame curve samples (lesion and reference)

The stages share no mutable state: each owns what it changes, and what the run measured
is read from them afterwards into a :class:`StreamResult`. Memory is bounded by the
channels, so it does not grow with clip length. Any stage failing, or an interrupt,
stops all three within about :data:`ceuspipe.streaming.POLL_S` seconds and the first
real error is re-raised; the video writers are then aborted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.motion import FrameMotion, MotionEstimator
from ceuspipe.preprocess import to_gray
from ceuspipe.segment.cleanup import clean_mask
from ceuspipe.segment.given_masks import GivenMasks
from ceuspipe.segment.int8_check import ClipCheck
from ceuspipe.segment.maps_output import MapCollector
from ceuspipe.segment.overlay import overlay_frame
from ceuspipe.segment.predictor import BatchResult, Predictor, prepare_panel, probability_to_mask, submit
from ceuspipe.segment.reference_region import ReferenceRegion
from ceuspipe.segment.repeats import RepeatDetector
from ceuspipe.segment.temporal import TemporalMedian
from ceuspipe.streaming import Channel
from ceuspipe.video.layout import layout_warnings
from ceuspipe.video.panel_change import PanelChangeMeter
from ceuspipe.video.panels import PanelLayout, crop

log = logging.getLogger("ceuspipe")

#: Batches submitted to the predictor and not yet collected, at most (1: run one batch at a time).
INFLIGHT_BATCHES = 2
MASK_NAME, OVERLAY_NAME = "mask.mkv", "overlay.mp4"
#: x264 options of the overlay beyond preset and crf. CAVLC instead of CABAC: speckle
#: makes the overlay's bit rate high and CABAC is most of x264's time there (800x450
#: phantom overlays, superfast, crf 20: 5.5 against 7.8 core-ms a frame, files 7 % larger,
#: the same PSNR).
OVERLAY_X264_PARAMS = "cabac=0"


@dataclass
class FrameItem:
    """One decoded frame on its way through the stages."""

    index: int
    time_s: float
    image: np.ndarray      # (H, W, 3) uint8 RGB full frame
    ceus_gray: np.ndarray  # (ceus.h, ceus.w) uint8 BT.601 grey of the CEUS panel (model input, curve, check)
    ceus_in: np.ndarray    # (S, S) float32
    us_in: np.ndarray      # (S, S) float32
    repeat_of: int | None = None  # index of the frame this one repeats (no inference)
    check: bool = False           # also run through fp32 for the int8 check
    motion: FrameMotion | None = None  # in-plane displacement (acquired frames, with motion on)
    given_mask: np.ndarray | None = None  # (ceus.h, ceus.w) uint8 0/1 from --masks (then no inference)


@dataclass
class StreamResult:
    """What the streaming part of segment-video measured.

    ``frames``: frames segmented; ``frames_decoded``: every decoded frame;
    ``duration_s``: time of the last segmented frame (s); ``stream_s``: wall
    seconds of the streaming part; ``tic``: the per-frame curve accumulator;
    ``warnings``: one-line layout warnings (unsure detection, panels look swapped)."""

    frames: int
    frames_decoded: int
    duration_s: float
    layout: PanelLayout
    layout_decision: dict
    tic: Any
    stream_s: float
    warnings: list[str] = field(default_factory=list)
    frames_repeated: int = 0
    acquisition_fps: float | None = None
    motion: list[FrameMotion] | None = None  # per acquired frame, in curve order (None: motion off)
    maps: MapCollector | None = None  # block curves for the perfusion maps (None: maps off)
    masks: dict | None = None  # where given masks came from (None: the model's masks)

    def out_of_plane(self) -> np.ndarray | None:
        """``(n,) bool`` per curve row: frames left out as out of plane (None: motion off)."""
        return None if self.motion is None else np.array([not m.used for m in self.motion], dtype=bool)


class Int8Disagrees(Exception):
    """The per-clip int8 check can no longer pass: stop and redo the clip with fp32."""


@dataclass(frozen=True)
class Int8Check:
    """The per-clip int8 check riding along a stream: ``check`` collects, ``fp32`` is the
    reference predictor; ``stop_early`` raises :class:`Int8Disagrees` once it cannot pass."""

    check: ClipCheck
    fp32: Predictor
    stop_early: bool = False


class DecodeStage:
    """Frames of ``clip_stream`` -> :class:`FrameItem` (model inputs, repeat marks) into ``out``.

    Also measures how much both panels change (:class:`~ceuspipe.video.panel_change.PanelChangeMeter`,
    acquired frames only), for the swapped-panel warning, and with ``motion`` each acquired
    frame's in-plane displacement from the B-mode panel (:mod:`ceuspipe.motion`)."""

    def __init__(self, clip_stream, size: int, out: Channel, repeats: RepeatDetector,
                 check: ClipCheck | None = None, motion: MotionEstimator | None = None):
        self.clip_stream, self.size, self.out = clip_stream, size, out
        self.repeats, self.check, self.motion = repeats, check, motion
        self.changes = PanelChangeMeter()

    def run(self) -> None:
        layout = self.clip_stream.layout
        try:
            for f in self.clip_stream:
                ceus_gray = to_gray(crop(f.image, layout.ceus))
                us_panel = crop(f.image, layout.us)
                item = FrameItem(f.index, f.time_s, f.image, ceus_gray, prepare_panel(ceus_gray, self.size),
                                 prepare_panel(us_panel, self.size))
                item.repeat_of = self.repeats(item.index, item.ceus_in, item.us_in)
                if self.motion is not None and item.repeat_of is None:
                    item.motion = self.motion.add(item.index, item.time_s, to_gray(us_panel))
                item.check = self.check is not None and item.repeat_of is None and self.check.wants(item.time_s)
                if item.repeat_of is None:  # changes between acquired frames, not their repeats
                    self.changes.add(item.time_s, item.ceus_in, item.us_in, scale=255.0)
                self.out.put(item)
        finally:
            self.clip_stream.close()
        self.out.finish()


class InferStage:
    """Acquired frames of ``inp`` -> probability maps ``(S, S) float32`` -> ``out`` as
    ``(item, prob)``, in decode order; a repeat goes out as ``(item, None)``.

    ``pending`` holds frames until every earlier acquired frame has its (smoothed) map. A
    full batch is submitted before the one ahead of it is collected (at most
    :data:`INFLIGHT_BATCHES` at once), so the inference threads go on to the next batch
    without waiting for the slowest slice of the last one."""

    def __init__(self, predictor: Predictor, inp: Channel, out: Channel, *, batch_size: int,
                 queue_frames: int, smoother: TemporalMedian, int8_check: Int8Check | None = None,
                 on_frame=lambda: None):
        self.predictor, self.inp, self.out = predictor, inp, out
        self.batch_size, self.queue_frames = batch_size, queue_frames
        self.smoother, self.int8_check, self.on_frame = smoother, int8_check, on_frame
        self.batch: list[FrameItem] = []
        self.inflight: deque[tuple[list[FrameItem], BatchResult]] = deque()
        self.pending: deque[FrameItem] = deque()
        self.ready: dict[int, np.ndarray] = {}

    def run(self) -> None:
        try:
            for item in self.inp:
                self.pending.append(item)
                if item.repeat_of is None:
                    self.batch.append(item)
                    if len(self.batch) == self.batch_size:
                        self._launch()
                        while len(self.inflight) >= INFLIGHT_BATCHES:
                            self._collect()
                elif not self.batch:
                    self._drain()
                elif len(self.pending) >= (INFLIGHT_BATCHES + 1) * self.batch_size + self.queue_frames:
                    self._flush()  # a long run of repeats: do not hold its frames back any longer
            self._flush()
        finally:
            for _, result in self.inflight:  # an error or an early stop: abandon what has not started
                result.cancel()
        for it, sp in self.smoother.flush():
            self.ready[it.index] = sp
        self._drain()
        self.out.finish()

    def _drain(self) -> None:
        while self.pending:
            head = self.pending[0]
            if head.repeat_of is None:
                if head.index not in self.ready:
                    return
                self.out.put((head, self.ready.pop(head.index)))
            else:
                self.out.put((head, None))
            self.pending.popleft()
            self.on_frame()

    def _launch(self) -> None:
        ceus = np.stack([b.ceus_in for b in self.batch])
        us = np.stack([b.us_in for b in self.batch])
        self.inflight.append((list(self.batch), submit(self.predictor, ceus, us)))
        self.batch.clear()

    def _collect(self) -> None:
        items, result = self.inflight.popleft()
        probs = result.result()
        if self.int8_check is not None:
            self._check(items, probs)
        for b, p in zip(items, probs):
            for it, sp in self.smoother.push(b, p):
                self.ready[it.index] = sp
        self._drain()

    def _check(self, items: list[FrameItem], probs: np.ndarray) -> None:
        chk = self.int8_check
        checked = [i for i, b in enumerate(items) if b.check]
        if not checked:
            return
        ref = chk.fp32(np.stack([items[i].ceus_in for i in checked]), np.stack([items[i].us_in for i in checked]))
        for i, p32 in zip(checked, ref):
            chk.check.add(items[i].time_s, items[i].ceus_gray, p32, probs[i])
        if chk.stop_early and chk.check.failed_early:
            raise Int8Disagrees()

    def _flush(self) -> None:
        if self.batch:
            self._launch()
        while self.inflight:
            self._collect()


class GivenMaskStage:
    """In place of :class:`InferStage` with ``--masks``: each frame of ``inp`` gets its given
    mask (:class:`~ceuspipe.segment.given_masks.GivenMasks`) and goes out as ``(item, mask)``,
    a repeat as ``(item, None)`` (its mask is written, the curve counts it as a repeat)."""

    def __init__(self, masks, inp: Channel, out: Channel, *, on_frame=lambda: None):
        self.masks, self.inp, self.out, self.on_frame = masks, inp, out, on_frame

    def run(self) -> None:
        for item in self.inp:
            item.given_mask = self.masks.mask_for(item.index, item.time_s, item.motion)
            self.out.put((item, None if item.repeat_of is not None else item.given_mask))
            self.on_frame()
        self.out.finish()


class EncodeStage:
    """``(item, prob)`` of ``inp`` -> thresholded CEUS-panel mask -> ``mask_video``,
    ``overlay_video`` (every frame) and ``curve`` (acquired frames; a repeat is counted).

    ``frames``, ``repeated`` and ``last_time_s`` say what it wrote; ``motions`` the acquired
    frames' displacements in curve order (when the decode stage measured them). ``maps``: a
    :class:`~ceuspipe.segment.maps_output.MapCollector` fed each acquired frame (None: off)."""

    def __init__(self, inp: Channel, layout: PanelLayout, threshold: float, *, clean: bool, mask_video,
                 overlay_video, curve, reference: ReferenceRegion, maps: MapCollector | None = None):
        self.inp, self.layout, self.threshold, self.clean = inp, layout, threshold, clean
        self.mask_video, self.overlay_video = mask_video, overlay_video
        self.curve, self.reference, self.maps = curve, reference, maps
        self.frames, self.repeated, self.last_time_s = 0, 0, 0.0
        self.motions: list[FrameMotion] = []

    def run(self) -> None:
        ceus, mask = self.layout.ceus, None
        for item, prob in self.inp:
            self.frames += 1
            self.last_time_s = item.time_s
            if prob is None:  # a repeat: its anchor's mask (or its own given one), not a new curve sample
                self.repeated += 1
                self.curve.add_repeat()
                if item.given_mask is not None:
                    mask = item.given_mask
            elif item.given_mask is not None:
                mask = item.given_mask
            else:
                mask = probability_to_mask(prob, ceus.h, ceus.w, self.threshold)
                if self.clean:
                    mask = clean_mask(mask)
            self.mask_video.write(mask * np.uint8(255), item.time_s)
            ov = overlay_frame(item.image, mask, self.layout)
            if ov.shape[0] % 2 or ov.shape[1] % 2:
                ov = np.pad(ov, ((0, ov.shape[0] % 2), (0, ov.shape[1] % 2), (0, 0)))
            self.overlay_video.write(ov, item.time_s)
            if prob is not None:
                if item.motion is not None:
                    self.motions.append(item.motion)
                ref = self.reference.mask_for(item.image, item.ceus_gray, mask, item.motion)
                self.curve.add(item.index, item.time_s, item.ceus_gray, mask, reference_mask=ref)
                if self.maps is not None:
                    us = to_gray(crop(item.image, self.layout.us)) if self.maps.learning else None
                    self.maps.add(item.time_s, item.ceus_gray, us, mask, item.motion)


def overlay_threads(predictor: Predictor | None) -> int:
    """x264 threads of the overlay: one while the model runs on the CPU (its cores are busy with
    inference, and one x264 thread costs 7.8 core-ms a frame against 9.1 for its default of
    1.5 per core with 2 cores), FFmpeg's default (0) when a GPU runs it and x264 could be the
    slowest stage."""
    return 1 if predictor is None or predictor.device == "cpu" else 0


def map_block_px(clip: Path, config, layout: PanelLayout) -> int:
    """The maps' block side in px: ``config.map_block_mm`` over the layout's pixel size, or
    ``config.map_block_px``. Raises :class:`InputError` for a size in mm without a pixel size."""
    if config.map_block_mm is None:
        return int(config.map_block_px)
    if layout.pixel_size_mm is None:
        raise InputError(clip, "map block size in mm needs the pixel size (DICOM ultrasound regions or "
                               "pixel_size_mm in the layout); give --map-block-px instead")
    return max(1, round(config.map_block_mm / float(np.mean(layout.pixel_size_mm))))


def run_stream(clip: Path, out_dir: Path, predictor: Predictor, size: int, config, threshold: float,
               fps_hint: float, progress: bool, int8_check: Int8Check | None = None) -> StreamResult:
    """Segment ``clip`` into ``out_dir`` (``mask.mkv``, ``overlay.mp4``) with ``predictor``
    (model input ``size`` px) under ``config`` (a ``SegmentConfig``); returns what was
    measured, with the curve accumulator. The layout is resolved before any thread starts.
    With ``config.masks`` the given masks are used (:mod:`ceuspipe.segment.given_masks`) and
    ``predictor`` is None."""
    from tqdm import tqdm

    from ceuspipe.streaming import StageGroup
    from ceuspipe.tic import TicAccumulator
    from ceuspipe.video.clip_stream import open_clip
    from ceuspipe.video.writer import VideoWriter

    t0 = time.perf_counter()
    clip_stream = open_clip(clip, config, sample_fps=config.sample_fps)
    layout = clip_stream.layout
    group = StageGroup("segment")
    decoded = group.channel(config.queue_frames, "decoded frames")
    predicted = group.channel(config.queue_frames, "predicted masks")
    curve = TicAccumulator(config.dynamic_range_db, reference=config.reference)
    reference = ReferenceRegion(clip, layout, config)
    maps = (MapCollector((layout.ceus.h, layout.ceus.w), block_px=map_block_px(clip, config, layout),
                         dynamic_range_db=config.dynamic_range_db) if config.maps else None)
    bar = tqdm(desc=f"segment {clip.name}", unit="frame", disable=not progress)
    decode = DecodeStage(clip_stream, size, decoded, RepeatDetector(config.dedupe),
                         int8_check.check if int8_check else None,
                         MotionEstimator() if config.motion else None)
    given = GivenMasks(config.masks, layout) if config.masks is not None else None
    if given is not None:
        infer = GivenMaskStage(given, decoded, predicted, on_frame=lambda: bar.update(1))
    else:
        infer = InferStage(predictor, decoded, predicted, batch_size=config.batch_size,
                           queue_frames=config.queue_frames, smoother=TemporalMedian(config.temporal_smoothing),
                           int8_check=int8_check, on_frame=lambda: bar.update(1))
    writers: list[VideoWriter] = []
    try:
        writers.append(VideoWriter(out_dir / MASK_NAME, layout.ceus.w, layout.ceus.h, fps=fps_hint,
                                   codec="ffv1", pix_fmt="gray"))
        # H.264 yuv420p needs even sizes: the overlay keeps the frame size, padded if odd.
        H, W = layout.frame_height, layout.frame_width
        writers.append(VideoWriter(out_dir / OVERLAY_NAME, W + W % 2, H + H % 2, fps=fps_hint,
                                   codec="libx264", pix_fmt="yuv420p",
                                   options={"crf": str(config.overlay_crf), "preset": config.overlay_preset,
                                            "x264-params": OVERLAY_X264_PARAMS},
                                   threads=overlay_threads(predictor)))
        encode = EncodeStage(predicted, layout, threshold, clean=config.clean_masks, mask_video=writers[0],
                             overlay_video=writers[1], curve=curve, reference=reference, maps=maps)
        group.start(decode.run, "decode")
        group.start(encode.run, "encode")
        group.run(infer.run, "inference")
        group.join()
        for w in writers:
            w.close()
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            group.stop(exc)
        with contextlib.suppress(Exception):  # a decoder still busy in a stuck thread
            clip_stream.close()
        for w in writers:
            w.abort()
        raise
    finally:
        bar.close()
    stream_s = time.perf_counter() - t0
    if len(curve) == 0:
        raise InputError(clip, "no frames were segmented")
    clip_stream.check_length()
    if given is not None:
        given.finish(clip_stream.frames_decoded)
    times = curve.arrays()["time_s"]
    acq_fps = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
    if encode.repeated:
        log.info("%s: %d of %d frames repeat an earlier one (acquisition about %.3g frames/s)",
                 clip.name, encode.repeated, encode.frames, acq_fps or float("nan"))
    return StreamResult(frames=encode.frames, frames_decoded=clip_stream.frames_decoded,
                        duration_s=float(encode.last_time_s), layout=layout,
                        layout_decision=clip_stream.decision.to_dict(), tic=curve, stream_s=stream_s,
                        warnings=layout_warnings(clip, layout, decode.changes.ceus_changes,
                                                 decode.changes.us_changes),
                        frames_repeated=encode.repeated, acquisition_fps=acq_fps,
                        motion=encode.motions if config.motion else None, maps=maps,
                        masks=given.record() if given is not None else None)
