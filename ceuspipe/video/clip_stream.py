"""One streaming pass over a clip whose panel layout is known before the first frame is used.

Every stage that reads clips (key frames, segment-video, int8 calibration,
``ceuspipe layout``) opens them here::

    clip = open_clip(path, layout_options, sample_fps=1.0)
    clip.layout                          # PanelLayout, resolved already
    for frame in clip:                   # SampledFrame(index, time_s, image, samples)
        ...
    clip.check_length()                  # InputError for a clip under 1 s

How the layout is found without holding the clip in memory:

* given (layout file or both boxes): checked against the first frame;
* detected, on a stream of at most ``layout_fps`` (1 fps samples: key frames,
  calibration): the first samples are buffered and detection is tried after
  :data:`FIRST_TRY` of them, then after twice as many, ..., until it is sure
  (no low-confidence warning) or the stream passes ``layout_window_s`` seconds
  (at most ``layout_window_s * sample_fps + 1`` frames held, e.g. 61);
* detected, on a faster stream (segment-video's every frame): a separate cheap
  pass decodes 1 fps samples of the first ``layout_window_s`` seconds (stopping
  as soon as detection is sure) and the main pass starts afterwards.

Detection sees at most ``layout_samples`` frames, spread evenly over what was
read, so a CEUS panel that stays dark for the first 10-20 s is still told
from the B-mode panel by its later enhancement.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.video.sampling import TimeSampler, evenly_spaced
from ceuspipe.video.frames import Frame, check_clip_length, clip_duration_s
from ceuspipe.video.layout import LayoutError, LayoutOptions
from ceuspipe.video.panels import PanelLayout
from ceuspipe.video.reader import VideoSource, open_source

log = logging.getLogger("ceuspipe")

#: Samples read before the first detection attempt (the count doubles after each unsure one).
FIRST_TRY = 8
#: Sampling rate (frames/s) of the frames that layout detection looks at.
LAYOUT_FPS = 1.0


@dataclass(frozen=True)
class SampledFrame:
    """A decoded frame that stands for one or more samples.

    ``index``: position among all decoded frames; ``time_s``: seconds from the
    first frame; ``image``: ``(H, W, 3) uint8`` RGB full frame; ``samples``:
    the sample numbers ``n`` this frame is the sample of (one, or several after a
    gap; with ``sample_fps=None`` each frame is sample ``n`` = its rank)."""

    index: int
    time_s: float
    image: np.ndarray
    samples: tuple[int, ...]


@dataclass
class LayoutDecision:
    """How the layout of a clip was settled: ``frames_seen`` frames over ``seconds_seen``
    seconds were read for it, ``attempts`` detection runs, ``prepass`` when a separate
    1 fps pass was needed."""

    frames_seen: int = 0
    seconds_seen: float = 0.0
    attempts: int = 0
    prepass: bool = False

    def to_dict(self) -> dict:
        return {"frames_seen": self.frames_seen, "seconds_seen": round(self.seconds_seen, 3),
                "attempts": self.attempts, "prepass": self.prepass}


class _LayoutSearch:
    """Collects 1 fps frames and decides the layout once detection is sure or the window is over."""

    def __init__(self, options: LayoutOptions, source: str, regions: list | None = None):
        self.options = options
        self.source = source
        self.regions = regions
        self.images: list[np.ndarray] = []
        self.times: list[float] = []
        self.next_try = FIRST_TRY
        self.decision = LayoutDecision()

    def add(self, image: np.ndarray, time_s: float) -> PanelLayout | None:
        """Offer one frame; the layout once decided, else None."""
        self.images.append(image)
        self.times.append(time_s)
        self.decision.frames_seen += 1
        self.decision.seconds_seen = time_s
        if time_s >= self.options.layout_window_s:
            return self.decide(final=True)
        if len(self.images) >= self.next_try:
            self.next_try *= 2
            return self.decide(final=False)
        return None

    def decide(self, final: bool) -> PanelLayout | None:
        """Detect on (a spread of) the frames seen; None when unsure and more may come."""
        if not self.images:
            raise InputError(self.source, "no frames could be decoded")
        pick = evenly_spaced(len(self.images), self.options.layout_samples)
        self.decision.attempts += 1
        try:
            layout = self.options.resolve([self.images[i] for i in pick], source=self.source,
                                          times_s=[self.times[i] for i in pick], regions=self.regions,
                                          log_warning=final)
        except LayoutError:
            if final:
                raise
            return None
        if final or _is_sure(layout):
            return layout
        return None


def _is_sure(layout: PanelLayout) -> bool:
    """Detection gave no low-confidence warning (layouts without one are sure)."""
    return getattr(layout, "warning", None) is None


@dataclass
class ClipStream:
    """A clip opened for one pass (see :func:`open_clip`). Iterate once; then ``stats``
    (a :class:`~ceuspipe.video.sampling.TimeSampler` counting every decoded frame) and
    :meth:`check_length` describe the whole clip."""

    path: Path
    source: VideoSource
    layout: PanelLayout
    decision: LayoutDecision
    sampler: TimeSampler
    _buffer: list[SampledFrame] = field(default_factory=list, repr=False)
    _frames: Iterator[Frame] | None = field(default=None, repr=False)
    _used: bool = field(default=False, repr=False)

    def __iter__(self) -> Iterator[SampledFrame]:
        if self._used:
            raise RuntimeError(f"{self.path}: a clip stream can be read once")
        self._used = True
        while self._buffer:
            yield self._buffer.pop(0)
        if self._frames is not None:
            for frame in self._frames:
                yield _sampled(frame, self.sampler)

    def close(self) -> None:
        """Release the decoder (also done when the stream is exhausted or collected)."""
        if self._frames is not None and hasattr(self._frames, "close"):
            self._frames.close()
        self._buffer = []

    @property
    def frames_decoded(self) -> int:
        return self.sampler.decoded

    @property
    def decode_path(self) -> str | None:
        """How the source decoded this pass: ``"skip-nonref"`` (only the samples and the
        frames they refer to), ``"skip-tails"`` (no B-frames: each closed group of
        pictures up to its last sample), ``"full"`` (every frame), ``"dicom"``; None if
        not started."""
        return self.sampler.decode_path

    @property
    def decode_note(self) -> str | None:
        """Why the pass decoded every frame (None when it skipped, or nothing to say)."""
        return self.sampler.decode_note

    @property
    def last_time_s(self) -> float:
        return self.sampler.last_time_s

    @property
    def duration_s(self) -> float:
        """Seconds of video covered by the frames decoded so far (:func:`clip_duration_s`)."""
        return clip_duration_s(self.sampler.decoded, self.sampler.last_time_s)

    def check_length(self) -> float:
        """After the pass: the clip's duration (s), :class:`InputError` when under 1 s."""
        return check_clip_length(self.path, self.sampler.decoded, self.sampler.last_time_s)


def _sampled(frame: Frame, sampler: TimeSampler) -> SampledFrame:
    """Tag ``frame`` with its sample numbers; must run before the next frame is decoded
    (the sampler's ``select`` decision for that frame depends on it)."""
    return SampledFrame(frame.index, frame.time_s, frame.image, tuple(sampler.samples_for(frame.time_s)))


def ultrasound_regions(source: VideoSource) -> list | None:
    """A DICOM cine's Sequence of Ultrasound Regions (header only), None for other sources."""
    from ceuspipe.video.reader import DicomSource

    if not isinstance(source, DicomSource):
        return None
    from ceuspipe.video.dicom import read_ultrasound_regions

    return read_ultrasound_regions(source.path)


def _fixed_layout(options: LayoutOptions) -> bool:
    return options.layout_file is not None or options.ceus_box is not None or options.us_box is not None


def open_clip(path: str | os.PathLike, options: LayoutOptions = LayoutOptions(), *,
              sample_fps: float | None = None, threads: bool = True) -> ClipStream:
    """Open ``path`` for one streaming pass at ``sample_fps`` (None: every frame) with its
    panel layout resolved first (see the module docstring). Raises
    :class:`~ceuspipe.errors.InputError` for an unreadable clip or an undetectable layout.
    """
    path = Path(path)
    source = open_source(path, threads=threads)
    name = str(path)
    sampler = TimeSampler(sample_fps)
    frames = source.frames(select=sampler, presample=sampler if sample_fps is not None else None)
    buffer: list[SampledFrame] = []
    decision = LayoutDecision()
    try:
        if _fixed_layout(options):
            first = next(frames, None)
            if first is None:
                raise InputError(path, "no frames could be decoded")
            buffer.append(_sampled(first, sampler))
            layout = options.resolve([first.image], source=name)
        elif sample_fps is not None and sample_fps <= LAYOUT_FPS:
            search = _LayoutSearch(options, name, ultrasound_regions(source))
            layout = None
            for frame in frames:
                buffer.append(_sampled(frame, sampler))
                layout = search.add(frame.image, frame.time_s)
                if layout is not None:
                    break
            if layout is None:
                layout = search.decide(final=True)
            decision = search.decision
        else:
            layout, decision = _prepass_layout(source, options, name)
    except BaseException:
        frames.close()
        raise
    log.debug("%s: layout after %d frame(s) over %.1f s (%d attempt(s)%s)", name, decision.frames_seen,
              decision.seconds_seen, decision.attempts, ", separate pass" if decision.prepass else "")
    return ClipStream(path, source, layout, decision, sampler, buffer, frames)


def _prepass_layout(source: VideoSource, options: LayoutOptions, name: str) -> tuple[PanelLayout, LayoutDecision]:
    """Decode 1 fps samples of the first ``layout_window_s`` seconds until detection is sure."""
    search = _LayoutSearch(options, name, ultrasound_regions(source))
    search.decision.prepass = True
    sampler = TimeSampler(LAYOUT_FPS)
    frames = source.frames(select=sampler, presample=sampler)
    try:
        for frame in frames:
            sampler.samples_for(frame.time_s)
            layout = search.add(frame.image, frame.time_s)
            if layout is not None:
                return layout, search.decision
    finally:
        frames.close()
    return search.decide(final=True), search.decision


def read_layout_frames(path: str | os.PathLike, options: LayoutOptions = LayoutOptions()
                       ) -> tuple[list[np.ndarray], list[float], list | None]:
    """The frames (``(H, W, 3) uint8``), times (s) and DICOM ultrasound regions that
    layout detection of ``path`` looks at when it reads the whole window: 1 fps samples
    of the first ``layout_window_s`` seconds, at most ``layout_samples`` of them spread
    evenly. For ``ceuspipe layout`` and its preview."""
    images: list[np.ndarray] = []
    times: list[float] = []
    sampler = TimeSampler(LAYOUT_FPS)
    source = open_source(path)
    frames = source.frames(select=sampler, presample=sampler)
    try:
        for frame in frames:
            sampler.samples_for(frame.time_s)
            images.append(frame.image)
            times.append(frame.time_s)
            if frame.time_s >= options.layout_window_s:
                break
    finally:
        frames.close()
    if not images:
        raise InputError(path, "no frames could be decoded")
    pick = evenly_spaced(len(images), options.layout_samples)
    return [images[i] for i in pick], [times[i] for i in pick], ultrasound_regions(source)
