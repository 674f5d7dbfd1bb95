"""Reading exam clips: one entry point for every kind of source.

A source is a video file read through PyAV (:mod:`ceuspipe.video.pyav_source`)
or a multi-frame DICOM cine read through pydicom (:mod:`ceuspipe.video.dicom`);
both follow :class:`VideoSource`. Frames come out one at a time in presentation
order with their true presentation time (seconds from the first frame), so
variable frame rate and 29.97 fps clips keep correct times and memory does not
grow with clip length. Container metadata is a hint only: count and time the
frames that are yielded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from ceuspipe.video.frames import (MAX_CLIP_S, MIN_CLIP_S, TIME_NUDGE_S, Frame, RelativeClock, VideoInfo,
                                   check_clip_length, clip_duration_s)
from ceuspipe.video.orientation import (apply_orientation, orientation_from_display_matrix,
                                        rotation_matrix_ccw)

__all__ = ["MAX_CLIP_S", "MIN_CLIP_S", "TIME_NUDGE_S", "Frame", "RelativeClock", "VideoInfo", "VideoSource",
           "apply_orientation", "check_clip_length", "clip_duration_s", "is_dicom_path", "iter_frames",
           "open_source", "orientation_from_display_matrix", "probe", "rotation_matrix_ccw"]

Select = Callable[[float], bool]


class VideoSource(Protocol):
    """One readable clip. ``probe()`` reads metadata (and at most the first frame);
    ``frames(select)`` yields :class:`Frame` objects, calling ``select(time_s)`` once per
    frame and converting only those it accepts (``None``: every frame).

    ``presample`` (a :class:`~ceuspipe.video.sampling.TimeSampler`, which is usually ``select``
    too) lets a source that knows every frame's time before decoding it plan the samples
    and decode only what they need; the source reports the path it took through
    ``presample.record_path`` (``"skip-nonref"``, ``"skip-tails"``, ``"full"`` or ``"dicom"``)."""

    path: Path

    def probe(self) -> VideoInfo: ...

    def frames(self, select: Select | None = None, presample=None) -> Iterator[Frame]: ...


@dataclass(frozen=True)
class PyAVSource:
    """A video file (MP4, MOV, AVI, MKV, ...) decoded by FFmpeg through PyAV."""

    path: Path
    threads: bool = True

    def probe(self) -> VideoInfo:
        from ceuspipe.video.pyav_source import probe_video

        return probe_video(self.path)

    def frames(self, select: Select | None = None, presample=None) -> Iterator[Frame]:
        from ceuspipe.video.pyav_source import iter_video_frames

        return iter_video_frames(self.path, select=select, threads=self.threads, presample=presample)


@dataclass(frozen=True)
class DicomSource:
    """A multi-frame ultrasound DICOM cine read frame by frame through pydicom."""

    path: Path

    def probe(self) -> VideoInfo:
        from ceuspipe.video.dicom import probe_dicom

        return probe_dicom(self.path)

    def frames(self, select: Select | None = None, presample=None) -> Iterator[Frame]:
        from ceuspipe.video.dicom import iter_dicom_frames

        if presample is not None:  # pixel data of rejected frames is never read anyway
            presample.record_path("dicom", "DICOM cine: only the selected frames' pixel data is read")
        return iter_dicom_frames(self.path, select=select)


def is_dicom_path(path: str | os.PathLike) -> bool:
    """True if ``path`` ends in ``.dcm`` (any case) or has ``DICM`` at byte 128."""
    from ceuspipe.video.dicom import has_dicom_magic

    return Path(path).suffix.lower() == ".dcm" or has_dicom_magic(path)


def open_source(path: str | os.PathLike, *, threads: bool = True) -> VideoSource:
    """The :class:`VideoSource` for ``path`` (DICOM by name or magic, else PyAV).
    ``threads`` enables FFmpeg's threaded decoding (ignored for DICOM)."""
    path = Path(path)
    return DicomSource(path) if is_dicom_path(path) else PyAVSource(path, threads)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Metadata of a clip without decoding it all (see :class:`VideoInfo`). Raises
    :class:`~ceuspipe.errors.InputError` for a missing, non-video or undecodable file."""
    return open_source(path).probe()


def iter_frames(path: str | os.PathLike, *, select: Select | None = None,
                threads: bool = True) -> Iterator[Frame]:
    """Yield the frames of a video or DICOM cine one at a time, in presentation order.

    ``select(time_s)`` is called once per decoded frame; only frames for which it
    returns True are converted to RGB arrays and yielded (``Frame.index`` still
    counts every decoded frame). Raises :class:`~ceuspipe.errors.InputError` when
    the file cannot be opened, has no video stream or yields no frame. The input
    file is never modified.
    """
    yield from open_source(path, threads=threads).frames(select)
