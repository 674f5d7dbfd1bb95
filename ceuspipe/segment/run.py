"""``segment_video``: every frame of a clip -> lesion masks, overlay, time-intensity curve.

The panel layout is resolved first (:func:`ceuspipe.video.clip_stream.open_clip`:
a cheap 1 fps pass over the first minute, stopping once detection is sure).
Then three stages of a :class:`ceuspipe.streaming.StageGroup` run, joined by
bounded channels, so memory does not grow with clip length and decoding,
inference and encoding overlap (PyAV, OpenCV, ONNX Runtime and PyTorch release
the GIL while they work)::

    decode thread   frames -> crop both panels -> grey -> resize to S x S
                    -> repeat of the previous acquired frame? -> channel
    main thread     batches of B new frames -> predictor (the next batch submitted before
                    the last is collected) -> probabilities (S x S)
                    -> optional temporal median -> channel (repeats: no inference)
    encode thread   bilinear resize to the CEUS panel -> threshold -> mask.mkv,
                    overlay.mp4, per-frame TIC scalars (area, mean grey, mean linear power)

Repeated frames (a 30 fps screen capture of a 10 Hz acquisition, see
:mod:`ceuspipe.segment.repeats`) are found in the decode stage; a repeat skips
inference and reuses its anchor's mask. ``mask.mkv`` and ``overlay.mp4`` still
have every frame at its own time; the curve (``tic.csv``) has one row per acquired
frame, at its first appearance, with the number of repeats that followed it
(column ``repeats``). ``dedupe=False`` treats every frame as acquired.

On the CPU a checkpoint runs at ``precision`` auto by default: its cached int8
model, checked against fp32 on 8 frames spread over the clip, the clip redone
with fp32 when they disagree (:mod:`ceuspipe.segment.precision`).

A failure in any stage (decode error, inference error, full disk) or an
interrupt stops all of them within a fraction of a second.

Outputs go to a temporary folder beside ``out_dir`` that is renamed to
``out_dir`` only when everything succeeded (see :func:`ceuspipe.fsutil.atomic_dir`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ceuspipe import __version__
from ceuspipe.devices import resolve_device
from ceuspipe.errors import InputError, OutputError
from ceuspipe.fsutil import atomic_dir, atomic_write_text, safe_name
from ceuspipe.report.exam import REPORT_NAME, write_exam_report
from ceuspipe.segment.cleanup import clean_mask
from ceuspipe.segment.overlay import overlay_frame
from ceuspipe.segment.model_spec import ModelSpec, load_spec
from ceuspipe.segment.int8_check import ClipCheck
from ceuspipe.segment.precision import PrecisionPlan, plan_precision
from ceuspipe.segment.config import OVERLAY_PRESETS, SegmentConfig  # noqa: F401 (re-exported)
from ceuspipe.segment.predictor import BatchResult, Predictor, prepare_panel, probability_to_mask, submit
from ceuspipe.segment.repeats import RepeatDetector
from ceuspipe.segment.temporal import TemporalMedian
from ceuspipe.tic.reference import ImagedArea, reference_ring
from ceuspipe.video.layout import CONTENT_THRESHOLD, layout_warnings
from ceuspipe.preprocess import to_gray
from ceuspipe.video.panels import Box, PanelLayout, crop

log = logging.getLogger("ceuspipe")

#: Batches submitted to the predictor and not yet collected, at most (1: run one batch at a time).
INFLIGHT_BATCHES = 2
OUTPUT_SUFFIX = ".ceuspipe"
MASK_NAME, OVERLAY_NAME = "mask.mkv", "overlay.mp4"
#: x264 options of the overlay beyond preset and crf. CAVLC instead of CABAC: speckle
#: makes the overlay's bit rate high and CABAC is most of x264's time there (800x450
#: phantom overlays, superfast, crf 20: 5.5 against 7.8 core-ms a frame, files 7 % larger,
#: the same PSNR).
OVERLAY_X264_PARAMS = "cabac=0"


@dataclass
class SegmentReport:
    """What :func:`segment_video` did.

    ``frames``: frames segmented; ``frames_decoded``: frames decoded (all, also
    those skipped by ``sample_fps``); ``duration_s``: time of the last segmented
    frame (s from the first frame); ``wall_s``: seconds the run took (model
    loading included); ``fps``: segmented frames per wall-clock second of the
    streaming part; ``engine``/``device``: what ran the model;
    ``model_quantization``: an int8 model's calibration and fp32 agreement (empty for fp32);
    ``precision``: what was asked and used and why, with the per-clip int8 check
    (:mod:`ceuspipe.segment.precision`);
    ``frames_repeated``: segmented frames that repeated an earlier one (no inference, its
    mask; not in the curve); ``acquisition_fps``: acquired (non-repeated) frames per
    second of clip time, ``(n - 1) / (last - first first-appearance time)`` (None with
    fewer than two).
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
    precision: dict = field(default_factory=dict)
    tic: dict = field(default_factory=dict)
    frames_repeated: int = 0
    acquisition_fps: float | None = None

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


@dataclass
class _Item:
    index: int
    time_s: float
    image: np.ndarray      # (H, W, 3) uint8 RGB full frame
    ceus_gray: np.ndarray  # (ceus.h, ceus.w) uint8 BT.601 grey of the CEUS panel (model input, curve, check)
    ceus_in: np.ndarray    # (S, S) float32
    us_in: np.ndarray      # (S, S) float32
    repeat_of: int | None = None  # index of the frame this one repeats (no inference)
    check: bool = False           # also run through fp32 for the int8 check


@dataclass
class StreamResult:
    """What the streaming part of :func:`segment_video` measured.

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


# --------------------------------------------------------------------------- main entry


def segment_video(clip: str | os.PathLike, checkpoint: str | os.PathLike,
                  out_dir: str | os.PathLike | None = None,
                  config: SegmentConfig = SegmentConfig(), progress: bool = False,
                  command_line: list[str] | None = None) -> SegmentReport:
    """Segment every (or every sampled) frame of ``clip`` with ``checkpoint``.

    Writes into ``out_dir`` (default :func:`default_out_dir`): ``mask.mkv``
    (FFV1 grey, CEUS-panel size, 0/255), ``overlay.mp4`` (H.264 full frame,
    black outside the panels, mask contour on CEUS and mirrored on US), both
    with the clip's frame times; ``tic.csv``, ``tic.json``, ``tic.png``;
    ``segment.json`` (this report, with ``command_line``: the CLI passes its
    argv, library calls record None); ``report.html`` (built from those files,
    :mod:`ceuspipe.report.exam`). Nothing appears under ``out_dir`` unless
    the whole run succeeds. Raises :class:`InputError` for an unreadable clip,
    checkpoint or layout, :class:`OutputError` when ``out_dir`` exists and
    ``overwrite`` is False.
    """
    t_start = time.perf_counter()
    clip = Path(clip)
    out = Path(out_dir) if out_dir is not None else default_out_dir(clip)
    if out.exists() and not config.overwrite:
        raise OutputError(out, "output folder exists (use --overwrite to replace it)")

    from ceuspipe.video.reader import probe

    info = probe(clip)  # fails early, with the clip's name, on a non-video
    device = resolve_device(config.device)
    spec = load_spec(checkpoint, device if config.engine != "onnx" else "cpu")
    plan = plan_precision(spec, config, clip, info.duration_s)
    threshold = spec.threshold if config.threshold is None else float(config.threshold)
    fps_hint = info.nominal_fps or 30.0
    if config.sample_fps is not None:
        fps_hint = min(fps_hint, config.sample_fps)

    with atomic_dir(out, overwrite=config.overwrite) as tmp:
        stats = _stream_checked(clip, tmp, plan, spec, config, threshold, fps_hint, progress)
        stream_s = stats.stream_s
        predictor = plan.predictor
        report = SegmentReport(
            source=clip, out_dir=out, frames=stats.frames, frames_decoded=stats.frames_decoded,
            duration_s=stats.duration_s, wall_s=0.0, stream_s=stream_s,
            fps=stats.frames / stream_s if stream_s > 0 else float("nan"),
            engine=predictor.engine, device=predictor.device, batch_size=config.batch_size,
            layout=stats.layout, checkpoint=Path(checkpoint), model_config=spec.config,
            model_quantization=plan.quantization, precision=plan.record, frames_repeated=stats.frames_repeated,
            acquisition_fps=stats.acquisition_fps)
        meta = _metadata(report, config, threshold)
        meta["layout_decision"] = stats.layout_decision
        meta["warnings"] = stats.warnings
        meta["precision"] = plan.record
        meta["inference"] = predictor.inference_record()
        meta["reference_region"] = _reference_meta(config, stats.layout)
        meta["clean_masks"] = config.clean_masks
        meta["command_line"] = list(command_line) if command_line is not None else None
        report.tic = _write_tic(tmp, stats.tic, meta, config)
        report.wall_s = time.perf_counter() - t_start
        tic = report.tic
        tic_short = {"success": tic.get("success"), "reason": tic.get("reason"), "model": tic.get("model"),
                     "qof_percent": tic.get("qof_percent"),
                     "parameters": {k: (v or {}).get("value") for k, v in (tic.get("parameters") or {}).items()
                                    if not k.startswith("fit_")}}
        if "relative_parameters" in tic:
            tic_short["relative_parameters"] = {k: v.get("value") for k, v in tic["relative_parameters"].items()}
            tic_short["reference_success"] = (tic.get("reference") or {}).get("success")
        summary = {**meta, **report.to_dict(), "tic": tic_short, "threshold": threshold,
                   "temporal_smoothing": config.temporal_smoothing,
                   "sample_fps": config.sample_fps, "dedupe": config.dedupe,
                   "outputs": [MASK_NAME, OVERLAY_NAME, "tic.csv", "tic.json", "tic.png", REPORT_NAME]}
        atomic_write_text(tmp / "segment.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
        write_exam_report(tmp)  # last: a folder without report.html is never a complete output
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
    from ceuspipe.segment.onnx_export import file_digest

    return {
        "source": str(report.source),
        "model_checkpoint": str(Path(report.checkpoint).resolve()),
        "model_sha256": file_digest(report.checkpoint),
        "model_config": report.model_config,
        "model_quantization": report.model_quantization,
        "threshold": threshold,
        "layout": report.layout.to_dict(),
        "dynamic_range_db": config.dynamic_range_db,
        "versions": _versions(),
    }


# --------------------------------------------------------------------------- streaming


class _Int8Disagrees(Exception):
    """The per-clip int8 check can no longer pass: stop and redo the clip with fp32."""


def _stream_checked(clip: Path, tmp: Path, plan: PrecisionPlan, spec: ModelSpec, config: SegmentConfig,
                    threshold: float, fps_hint: float, progress: bool) -> StreamResult:
    """:func:`_stream` with the plan's int8 check; when it fails at precision ``auto`` the clip
    is redone with fp32 (one warning); at ``int8`` the int8 outputs stay (one warning).
    ``stream_s`` counts both passes."""
    t0 = time.perf_counter()
    auto = config.precision == "auto"
    try:
        stats = _stream(clip, tmp, plan.predictor, spec, config, threshold, fps_hint, progress,
                        check=plan.check, check_fp32=plan.fp32, stop_early=auto)
    except _Int8Disagrees:
        stats = None
    if plan.check is None:
        return stats
    result = plan.check.result()
    plan.record["check"] = result
    if result["passed"]:
        return stats
    curve = result["curve_max_difference"]
    warning = (f"int8 masks disagree with fp32 on {result['frames']} check frames of this clip (mask Dice mean "
               f"{result['dice_mean']:.3f}, bound {config.int8_min_dice:g}; curve difference "
               f"{'n/a' if curve is None else f'{curve:.3f}'}, bound {result['bounds']['curve_max_difference']:g})")
    if not auto:
        warning += ": int8 kept (precision int8)"
        log.warning("%s: %s", clip.name, warning)
        stats.warnings.append(warning)
        return stats
    warning += ": segmented with fp32 instead"
    log.warning("%s: %s", clip.name, warning)
    plan.fall_back(warning)
    for name in (MASK_NAME, OVERLAY_NAME):
        (tmp / name).unlink(missing_ok=True)
    stats = _stream(clip, tmp, plan.predictor, spec, config, threshold, fps_hint, progress)
    stats.warnings.append(warning)
    stats.stream_s = time.perf_counter() - t0
    return stats


def _stream(clip: Path, tmp: Path, predictor: Predictor, spec: ModelSpec, config: SegmentConfig,
            threshold: float, fps_hint: float, progress: bool, *, check: ClipCheck | None = None,
            check_fp32: Predictor | None = None, stop_early: bool = False) -> StreamResult:
    """Decode (thread) -> inference (this thread) -> masks, overlay, curve (thread).

    With ``check``, its check frames also go through ``check_fp32`` and into the check;
    ``stop_early`` raises :class:`_Int8Disagrees` as soon as the check cannot pass.

    The layout is resolved before any thread starts. Any stage failing, or an
    interrupt of this thread, stops all three within about
    :data:`ceuspipe.streaming.POLL_S` seconds (bar a call stuck inside a library)
    and the first real error is re-raised; the video writers are then aborted.
    """
    from tqdm import tqdm

    from ceuspipe.streaming import StageGroup
    from ceuspipe.tic import TicAccumulator
    from ceuspipe.video.clip_stream import open_clip
    from ceuspipe.video.writer import VideoWriter

    size = spec.size
    t0 = time.perf_counter()
    clip_stream = open_clip(clip, config, sample_fps=config.sample_fps)
    layout = clip_stream.layout
    ceus = layout.ceus
    group = StageGroup("segment")
    decoded = group.channel(config.queue_frames, "decoded frames")
    predicted = group.channel(config.queue_frames, "predicted masks")
    acc = TicAccumulator(config.dynamic_range_db, reference=config.reference)
    user_ref, ring_px = _reference_setup(clip, layout, config)
    imaged = ImagedArea(threshold=CONTENT_THRESHOLD)
    last_mask: list[np.ndarray] = []  # the last non-empty mask: the ring of frames the model misses
    smoother = TemporalMedian(config.temporal_smoothing)
    writers: list[VideoWriter] = []
    bar = tqdm(desc=f"segment {clip.name}", unit="frame", disable=not progress)

    # per acquired frame, grey levels at model input; 8 bytes a frame, like the TIC columns
    changes = {"ceus": array("d"), "us": array("d")}
    repeats = RepeatDetector(config.dedupe)
    counts = {"frames": 0, "repeated": 0, "last_time_s": 0.0}

    def decode() -> None:
        previous = None
        try:
            for f in clip_stream:
                ceus_gray = to_gray(crop(f.image, ceus))
                item = _Item(f.index, f.time_s, f.image, ceus_gray, prepare_panel(ceus_gray, size),
                             prepare_panel(crop(f.image, layout.us), size))
                item.repeat_of = repeats(item.index, item.ceus_in, item.us_in)
                item.check = check is not None and item.repeat_of is None and check.wants(item.time_s)
                if item.repeat_of is None:  # changes between acquired frames, not their repeats
                    if previous is not None:
                        changes["ceus"].append(255.0 * float(np.abs(item.ceus_in - previous.ceus_in).mean()))
                        changes["us"].append(255.0 * float(np.abs(item.us_in - previous.us_in).mean()))
                    previous = item
                decoded.put(item)
        finally:
            clip_stream.close()
        decoded.finish()

    def infer() -> None:
        # Frames leave in decode order: ``pending`` holds them until every earlier acquired
        # frame has its (smoothed) map; a repeat goes out as (item, None): its anchor's mask.
        # A full batch is submitted before the one ahead of it is collected (at most
        # INFLIGHT_BATCHES at once), so the inference threads go on to the next batch
        # without waiting for the slowest slice of the last one.
        batch: list[_Item] = []
        inflight: deque[tuple[list[_Item], BatchResult]] = deque()
        pending: deque[_Item] = deque()
        ready: dict[int, np.ndarray] = {}

        def drain() -> None:
            while pending:
                head = pending[0]
                if head.repeat_of is None:
                    if head.index not in ready:
                        return
                    predicted.put((head, ready.pop(head.index)))
                else:
                    predicted.put((head, None))
                pending.popleft()
                bar.update(1)

        def launch() -> None:
            inflight.append((list(batch), submit(predictor, np.stack([b.ceus_in for b in batch]),
                                                 np.stack([b.us_in for b in batch]))))
            batch.clear()

        def collect() -> None:
            items, result = inflight.popleft()
            probs = result.result()
            checked = [i for i, b in enumerate(items) if b.check]
            if checked:
                ref = check_fp32(np.stack([items[i].ceus_in for i in checked]),
                                 np.stack([items[i].us_in for i in checked]))
                for i, p32 in zip(checked, ref):
                    check.add(items[i].time_s, items[i].ceus_gray, p32, probs[i])
                if stop_early and check.failed_early:
                    raise _Int8Disagrees()
            for b, p in zip(items, probs):
                for it, sp in smoother.push(b, p):
                    ready[it.index] = sp
            drain()

        def flush() -> None:
            if batch:
                launch()
            while inflight:
                collect()

        try:
            for item in decoded:
                pending.append(item)
                if item.repeat_of is None:
                    batch.append(item)
                    if len(batch) == config.batch_size:
                        launch()
                        while len(inflight) >= INFLIGHT_BATCHES:
                            collect()
                elif not batch:
                    drain()
                elif len(pending) >= (INFLIGHT_BATCHES + 1) * config.batch_size + config.queue_frames:
                    flush()  # a long run of repeats: do not hold its frames back any longer
            flush()
        finally:
            for _, result in inflight:  # an error or an early stop: abandon what has not started
                result.cancel()
        for it, sp in smoother.flush():
            ready[it.index] = sp
        drain()
        predicted.finish()

    def encode() -> None:
        mask_video, overlay_video = writers
        mask = None
        for item, prob in predicted:
            counts["frames"] += 1
            counts["last_time_s"] = item.time_s
            if prob is None:  # a repeat: its anchor's mask, not a new sample of the curve
                counts["repeated"] += 1
                acc.add_repeat()
            else:
                mask = probability_to_mask(prob, ceus.h, ceus.w, threshold)
                if config.clean_masks:
                    mask = clean_mask(mask)
            mask_video.write(mask * np.uint8(255), item.time_s)
            ov = overlay_frame(item.image, mask, layout)
            if ov.shape[0] % 2 or ov.shape[1] % 2:
                ov = np.pad(ov, ((0, ov.shape[0] % 2), (0, ov.shape[1] % 2), (0, 0)))
            overlay_video.write(ov, item.time_s)
            if prob is not None:
                grey = item.ceus_gray
                ref = None
                if config.reference:
                    if user_ref is not None:
                        ref = user_ref
                    else:
                        area = imaged.update(grey, to_gray(crop(item.image, layout.us)) if imaged.learning else None)
                        if mask.any():
                            last_mask[:] = [mask]
                        if last_mask:
                            ref = reference_ring(last_mask[0], ring_px[0], ring_px[1], area)
                acc.add(item.index, item.time_s, grey, mask, reference_mask=ref)

    try:
        writers.append(VideoWriter(tmp / MASK_NAME, ceus.w, ceus.h, fps=fps_hint, codec="ffv1",
                                   pix_fmt="gray"))
        # H.264 yuv420p needs even sizes: the overlay keeps the frame size, padded if odd.
        H, W = layout.frame_height, layout.frame_width
        writers.append(VideoWriter(tmp / OVERLAY_NAME, W + W % 2, H + H % 2, fps=fps_hint,
                                   codec="libx264", pix_fmt="yuv420p",
                                   options={"crf": str(config.overlay_crf), "preset": config.overlay_preset,
                                            "x264-params": OVERLAY_X264_PARAMS},
                                   threads=_overlay_threads(predictor)))
        group.start(decode, "decode")
        group.start(encode, "encode")
        group.run(infer, "inference")
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
    if len(acc) == 0:
        raise InputError(clip, "no frames were segmented")
    clip_stream.check_length()
    times = acc.arrays()["time_s"]
    acq_fps = (len(times) - 1) / float(times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
    if counts["repeated"]:
        log.info("%s: %d of %d frames repeat an earlier one (acquisition about %.3g frames/s)",
                 clip.name, counts["repeated"], counts["frames"], acq_fps or float("nan"))
    return StreamResult(frames=counts["frames"], frames_decoded=clip_stream.frames_decoded,
                        duration_s=float(counts["last_time_s"]), layout=layout,
                        layout_decision=clip_stream.decision.to_dict(), tic=acc, stream_s=stream_s,
                        warnings=layout_warnings(clip, layout, changes["ceus"], changes["us"]),
                        frames_repeated=counts["repeated"], acquisition_fps=acq_fps)


def _overlay_threads(predictor: Predictor) -> int:
    """x264 threads of the overlay: one while the model runs on the CPU (its cores are busy with
    inference, and one x264 thread costs 7.8 core-ms a frame against 9.1 for its default of
    1.5 per core with 2 cores), FFmpeg's default (0) when a GPU runs it and x264 could be the
    slowest stage."""
    return 1 if predictor.device == "cpu" else 0


# --------------------------------------------------------------------------- TIC


def _reference_setup(clip: Path, layout: PanelLayout, config: SegmentConfig
                     ) -> tuple[np.ndarray | None, tuple[float, float]]:
    """``(user reference mask (h, w) bool or None, (ring distance, ring width) in pixels)``.

    Raises :class:`InputError` for an unreadable or wrongly sized reference mask, or a
    ring given in mm when the layout has no pixel size."""
    dist, width = float(config.reference_distance_px), float(config.reference_width_px)
    if not config.reference:
        return None, (dist, width)
    if config.reference_distance_mm is not None or config.reference_width_mm is not None:
        if layout.pixel_size_mm is None:
            raise InputError(clip, "reference ring in mm needs the pixel size (DICOM ultrasound regions or "
                                   "pixel_size_mm in the layout); give it in pixels instead")
        mm_per_px = float(np.mean(layout.pixel_size_mm))
        if config.reference_distance_mm is not None:
            dist = config.reference_distance_mm / mm_per_px
        if config.reference_width_mm is not None:
            width = config.reference_width_mm / mm_per_px
    if config.reference_mask is None:
        return None, (dist, width)
    import cv2

    path = Path(config.reference_mask)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if img is None:
        raise InputError(path, "cannot read reference mask (expected a PNG)")
    if img.ndim == 3:
        img = img[..., :3].max(axis=2)
    if img.shape != (layout.ceus.h, layout.ceus.w):
        raise InputError(path, f"reference mask is {img.shape[1]}x{img.shape[0]} px but the CEUS panel is "
                               f"{layout.ceus.w}x{layout.ceus.h} px")
    ref = img != 0
    if not ref.any():
        raise InputError(path, "reference mask is empty (no non-zero pixel)")
    return ref, (dist, width)


def _reference_meta(config: SegmentConfig, layout: PanelLayout) -> dict:
    if not config.reference:
        return {"mode": "off"}
    if config.reference_mask is not None:
        return {"mode": "mask", "mask": str(config.reference_mask)}
    d = {"mode": "ring", "distance_px": config.reference_distance_px, "width_px": config.reference_width_px,
         "distance_mm": config.reference_distance_mm, "width_mm": config.reference_width_mm,
         "imaged_area": "running max of both panels over the first 8 frames > grey "
                        f"{CONTENT_THRESHOLD}, holes filled, eroded 2 px"}
    return d


def _write_tic(tmp: Path, acc, meta: dict, config: SegmentConfig) -> dict:
    """Fit the curve and write ``tic.csv``, ``tic.json`` (with ``meta``), ``tic.png``."""
    from ceuspipe.tic import write_tic_outputs

    result = acc.result(model=config.tic_model)
    write_tic_outputs(result, tmp, source=meta["source"], extra=meta)
    return result.to_json_dict()
