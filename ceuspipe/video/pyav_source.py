"""Video files through PyAV (FFmpeg): one decoder generator per clip, frames in
presentation order with their true presentation times.

Times are taken from each frame's ``pts * time_base`` (never from
``index / fps``) and made relative to the first decoded frame. Container
metadata (frame count, nominal rate, duration) is reported by :func:`probe_video`
as hints only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterator

import av

from ceuspipe.errors import InputError
from ceuspipe.video.frames import Frame, VideoInfo, check_exists
from ceuspipe.video.orientation import IDENTITY, apply_orientation, frame_orientation
from ceuspipe.video.pyav_decode import (decode_timed, frame_rgb, nominal_rate, open_container, open_decoder,
                                        positive_fraction, video_stream)
from ceuspipe.video.skip_decode import Resume, TailPlan, plan_skips, skip_frames, tail_frames

log = logging.getLogger("ceuspipe")

__all__ = ["iter_video_frames", "probe_video"]


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read container metadata and the first frame's size and rotation.

    Decodes at most the first frame. Raises :class:`InputError` for a missing
    file, a non-video file, a file without a video stream, or one whose first
    frame cannot be decoded.
    """
    path = Path(path)
    check_exists(path)
    container = open_container(path)
    try:
        stream = video_stream(container, path)
        frames = decode_timed(container, stream, path)
        first = next(frames, None)
        frames.close()
        if first is None:
            raise InputError(path, "no frames could be decoded")
        frame, _ = first
        orient = frame_orientation(frame)
        w, h = frame.width, frame.height
        if orient.transpose:
            w, h = h, w
        duration = None
        stream_tb = positive_fraction(stream, "time_base")
        if stream.duration and stream_tb:
            duration = float(stream.duration * stream_tb)
        elif container.duration:
            duration = container.duration / av.time_base
        return VideoInfo(path=path, kind="video", width=w, height=h,
                         codec=stream.codec_context.name, nominal_fps=nominal_rate(stream),
                         duration_s=duration, frame_count_hint=stream.frames or None,
                         rotation=orient.rotation)
    finally:
        container.close()


def iter_video_frames(path: str | os.PathLike, *, select: Callable[[float], bool] | None = None,
                      threads: bool = True, presample=None) -> Iterator[Frame]:
    """Yield the frames of a video file one at a time, in presentation order.

    ``select(time_s)`` is called once per decoded frame; only frames for which it
    returns True are converted to RGB arrays and yielded (``Frame.index`` still
    counts every decoded frame). ``select=None`` yields every frame.
    ``threads`` enables FFmpeg's threaded decoding.

    ``presample`` (optional; :class:`~ceuspipe.video.sampling.TimeSampler` is one) has
    ``plan(times_s) -> set of positions``, ``shadow()`` (a copy that plans ahead,
    ``plan_ahead``) and ``record_path(path, note)``. With it,
    every packet's timestamp is read first (demuxing only), the samples are
    planned from the exact frame times, and the decoder is told to drop the
    non-reference frames that are not samples (``skip_frame``, set per packet):
    path ``"skip-nonref"``. A stream without B-frames (seen from the header and the
    first packets) has no such frames; there the frames after the last sample of each
    closed group of pictures (up to the next IDR picture, read from the bitstream by
    :mod:`ceuspipe.video.random_access`) are not sent to the decoder: path
    ``"skip-tails"``. Either way all references of the samples are still decoded, so
    the samples are bit-identical to a full decode. ``select`` is still called once per
    frame, in presentation order, also for dropped frames (counting is unchanged). Where
    that is not exact or not possible (intra-only or unverified codec, missing or
    duplicate packet timestamps, damaged file, every frame a sample) the clip is decoded
    in full (path ``"full"``, with the reason); a surprise while decoding (a frame that
    was not planned, packets out of order) restarts a full decode after the last frame
    handed out.

    Times are ``pts * time_base`` relative to the first frame. A frame without
    pts uses its dts, else previous time + its duration, else previous time +
    1/nominal rate. A frame whose time does not increase is kept in decode order
    and given previous time + 1 microsecond (counted, one warning at the end).
    Decode errors mid-stream are counted, logged and skipped. Raises
    :class:`InputError` when the file cannot be opened, has no video stream or
    yields no frame. The input file is never modified.
    """
    path = Path(path)
    check_exists(path)
    plan = None
    if presample is not None and select is not None:
        plan, note = plan_skips(path, presample)
        if plan is None:
            presample.record_path("full", note)
            log.debug("%s: decoding every frame (%s)", path, note)
    if plan is not None:
        if isinstance(plan, TailPlan):
            name, why = "skip-tails", "after the last sample of a closed group of pictures"
            reader = tail_frames(path, select, threads, presample.shadow(), plan)
        else:
            name, why = "skip-nonref", "neither samples nor frames they refer to"
            reader = skip_frames(path, select, threads, plan)
        presample.record_path(name)
        resume = yield from reader
        if isinstance(resume, tuple):
            dropped, total = resume
            presample.record_path(name, f"{dropped} of {total} frames not decoded ({why})")
            return
        presample.record_path("full", resume.note)
        log.warning("%s: %s; decoding every frame from the start", path, resume.note)
        yield from _full_frames(path, select, threads, resume)
        return
    yield from _full_frames(path, select, threads, None)


def _full_frames(path: Path, select, threads: bool, resume: "Resume | None") -> Iterator[Frame]:
    """Decode every frame (the reference path); ``resume`` skips what the skipping path
    already handed to ``select`` before it had to give up."""
    container, stream = open_decoder(path, threads)
    try:
        count = 0
        orient = IDENTITY
        for frame, time_s in decode_timed(container, stream, path):
            if resume is not None:
                if count == 0:
                    orient = frame_orientation(frame)
                if time_s < resume.time_s or (time_s == resume.time_s and not resume.accepted):
                    count += 1
                    continue
                if time_s == resume.time_s:  # select accepted it already; hand it out
                    index, count = count, count + 1
                    resume = None
                    image = apply_orientation(frame_rgb(frame), orient)
                    yield Frame(index=index, time_s=time_s, image=image)
                    continue
                resume = None
            if count == 0:
                # Read once per clip: the display matrix is a property of the stream,
                # and every frame.side_data access leaks memory in PyAV 18 (measured:
                # peak RSS grew ~0.5 MiB per access), which would make memory grow
                # with clip length.
                orient = frame_orientation(frame)
            index = count
            count += 1
            if select is not None and not select(time_s):
                continue
            image = frame_rgb(frame)
            image = apply_orientation(image, orient)
            yield Frame(index=index, time_s=time_s, image=image)
        if count == 0:
            raise InputError(path, "no frames could be decoded")
    finally:
        container.close()
