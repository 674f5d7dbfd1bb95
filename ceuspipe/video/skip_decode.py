"""Decoding only what sampling needs: plans from packet timestamps, and the two skipping
decode paths of :func:`ceuspipe.video.pyav_source.iter_video_frames` (``skip-nonref``: the
decoder drops non-reference frames that are not samples; ``skip-tails``: a stream without
B-frames is decoded only up to each closed group's last sample). Both hand out frames
bit-identical to a full decode, or return a :class:`Resume` from which the caller decodes
in full."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av

from ceuspipe.errors import InputError
from ceuspipe.video import random_access
from ceuspipe.video.frames import MAX_CLIP_S, Frame, RelativeClock
from ceuspipe.video.orientation import IDENTITY, apply_orientation, frame_orientation
from ceuspipe.video.pyav_decode import frame_rgb, open_container, open_decoder, positive_fraction

__all__ = ["Resume", "SkipPlan", "TailPlan", "plan_skips", "skip_frames", "tail_frames"]

#: Decoders whose ``skip_frame = NONREF`` is verified (tests/video/test_skip_decode.py) to drop
#: only frames nothing refers to, also when it changes between packets with frame threads.
SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg4"})

#: Containers (FFmpeg demuxer names) that store each packet's presentation time. AVI
#: does not: its demuxer guesses (H.264 with B-frames in AVI comes out with packet
#: times one frame off and frames out of order), and a plan made from guesses would
#: not be exact; raw elementary streams have no times at all.
SKIP_NONREF_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts"})


#: Packets (decode order) read to confirm that a stream whose header declares no reorder
#: delay has no B-frames (as many as x264's default GOP). A clip without reordering there
#: is decoded in full without reading further timestamps: nothing would be dropped.
#: Non-reference frames that are not reordered (rare: some encoders' non-reference P
#: frames) are then decoded too; exact, only not faster.
NO_B_FRAMES_PROBE = 250


@dataclass(frozen=True)
class SkipPlan:
    """Every frame of a clip from its packet timestamps: ``pts`` sorted (presentation
    order), ``times_s`` the matching times from the first frame (as :func:`decode_timed`
    computes them), ``keep`` the positions that must be decoded (the samples),
    ``unsent`` the packets (pts) not even sent to the decoder (group tails)."""

    pts: list[int]
    times_s: list[float]
    keep: set[int]
    unsent: frozenset[int] = frozenset()

    @property
    def keep_pts(self) -> set[int]:
        return {self.pts[i] for i in self.keep}


@dataclass(frozen=True)
class Resume:
    """Where the skipping path gave up: the last time handed to ``select`` and its answer."""

    time_s: float
    accepted: bool
    note: str


def plan_skips(path: Path, presample) -> tuple[SkipPlan | None, str | None]:
    """Demux every packet (no decoding) and plan the samples; ``(None, reason)`` when
    skipping would not be exact or would drop nothing. A :class:`TailPlan` (after reading
    only the first packets) when there are no B-frames: the header's reorder delay is 0
    and the first :data:`NO_B_FRAMES_PROBE` packets come in presentation order, none
    marked disposable."""
    try:
        container = open_container(path)
    except InputError as err:
        return None, f"cannot pre-read timestamps ({err.problem})"
    try:
        if not container.streams.video:
            return None, "no video stream"
        if container.format.name not in SKIP_NONREF_CONTAINERS:
            return None, f"container {container.format.name} does not store presentation times"
        stream = container.streams.video[0]
        codec = stream.codec_context.codec
        if codec.intra_only:
            return None, f"intra-only codec ({codec.name}): every frame is a reference"
        if codec.name not in SKIP_NONREF_CODECS:
            return None, f"frame skipping not verified for codec {codec.name}"
        base = positive_fraction(stream, "time_base")
        if base is None:
            return None, "no stream time base"
        # Without B-frames, stop reading after the first packets (TailPlan decodes groups).
        reorders = stream.codec_context.reorder_depth > 0
        extradata = stream.codec_context.extradata
        is_clean = random_access.clean_start_test(codec.name, extradata, reordering=True)
        pts: list[int] = []  # decode order
        starts: list[int] = []  # positions in pts of packets that start a closed group
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    return None, "packets without timestamps"
                if (pts and packet.pts < pts[-1]) or packet.is_disposable:
                    reorders = True
                if is_clean is not None and packet.is_keyframe and is_clean(bytes(packet)):
                    starts.append(len(pts))
                pts.append(packet.pts)
                if not reorders and len(pts) >= NO_B_FRAMES_PROBE:
                    break
        except av.FFmpegError as err:
            return None, f"damaged file ({err})"
    finally:
        container.close()
    if not pts:
        return None, "no packets"
    if not reorders:
        return TailPlan(random_access.clean_start_test(codec.name, extradata, reordering=False)), None
    decode_order = list(pts)
    pts.sort()
    if any(a == b for a, b in zip(pts, pts[1:])):
        return None, "duplicate packet timestamps"
    tb = Fraction(base)
    clock = RelativeClock()
    times = [clock(p * tb) for p in pts]
    if not times[-1] <= MAX_CLIP_S:
        return None, "timestamps beyond the longest clip believed"
    keep = presample.plan(times)
    if len(keep) == len(pts):
        return None, "every frame is a sample"
    return SkipPlan(pts, times, keep, _group_tails(decode_order, starts, {pts[i] for i in keep})), None


def _group_tails(decode_order: list[int], starts: list[int], keep_pts: set[int]) -> frozenset[int]:
    """Packets (pts) after the last sample, in decode order, of each closed group of
    pictures (``starts``: positions in ``decode_order`` where groups begin; the last group
    runs to the end): a sample's references come before it in decode order, and nothing
    after the next group's start refers back, so these are not needed."""
    tails: set[int] = set()
    bounds = [0, *(s for s in starts if s > 0), len(decode_order)]
    for a, b in zip(bounds, bounds[1:]):
        group = decode_order[a:b]
        last = max((j for j, p in enumerate(group) if p in keep_pts), default=-1)
        tails.update(group[last + 1:])
    return frozenset(tails)


class _Unplanned(Exception):
    """A skipping reader met something its plan did not foresee."""

    def __init__(self, resume: Resume):
        super().__init__(resume.note)
        self.resume = resume


class _PlannedFrames:
    """Frames planned from packet timestamps, matched with what the decoder hands out.

    :meth:`plan` each frame in presentation order, ``must`` when it is sure to come out
    of the decoder (a sample, or a frame sent without skipping); :meth:`came_out` with
    each decoded frame calls ``select`` for every planned frame up to it (those the
    decoder dropped included) and yields it as a :class:`Frame` when selected;
    :meth:`finish` at the end of the stream. Anything the plan did not foresee raises
    :class:`_Unplanned` with where a full decode must resume. ``passed_over`` counts
    the planned frames that never came out; ``missing`` names a ``must`` frame that did
    not."""

    def __init__(self, select, missing: str):
        self.select = select
        self.missing = missing
        self.expected: deque[tuple[int, float, bool]] = deque()  # (pts, time_s, must)
        self.last = Resume(-1.0, False, "")
        self.orient = IDENTITY
        self.first = True
        self.position = 0  # planned frames given to select so far
        self.passed_over = 0

    def plan(self, pts: int, time_s: float, must: bool) -> None:
        self.expected.append((pts, time_s, must))

    def resume_here(self, note: str) -> Resume:
        """Where a full decode must resume if this reader stops now, and why (``note``)."""
        return Resume(self.last.time_s, self.last.accepted, note)

    def give_up(self, note: str, resume: Resume | None = None):
        raise _Unplanned(resume or self.resume_here(note))

    def _pass_over(self) -> None:
        _, t, must = self.expected.popleft()
        if must:
            self.give_up(self.missing)
        if self.select(t):
            self.give_up("", Resume(t, True, "a dropped frame was selected"))
        self.last = Resume(t, False, "")
        self.position += 1
        self.passed_over += 1

    def came_out(self, frame) -> Iterator[Frame]:
        if self.first:
            self.orient = frame_orientation(frame)
            self.first = False
        if frame.pts is None:
            self.give_up("a frame came out that was not planned")
        while self.expected and self.expected[0][0] < frame.pts:
            self._pass_over()
        if not self.expected or self.expected[0][0] != frame.pts:
            self.give_up("a frame came out that was not planned")
        _, t, _ = self.expected.popleft()
        index, self.position = self.position, self.position + 1
        accepted = self.select(t)
        self.last = Resume(t, accepted, "")
        if accepted:
            image = apply_orientation(frame_rgb(frame), self.orient)
            self.last = Resume(t, False, "")  # handed out: a restart must not repeat it
            yield Frame(index=index, time_s=t, image=image)

    def decode(self, packet, codec_context=None) -> Iterator[Frame]:
        """Decode ``packet`` (``None``: flush ``codec_context``) and hand out what comes out."""
        try:
            frames = packet.decode() if packet is not None else codec_context.decode(None)
        except av.FFmpegError as err:
            self.give_up(f"decode error while skipping frames ({err})")
        for frame in frames:
            yield from self.came_out(frame)

    def finish(self) -> None:
        while self.expected:
            self._pass_over()


def skip_frames(path: Path, select, threads: bool, plan: SkipPlan):
    """Decode with non-sample, non-reference frames dropped; call ``select`` for every
    planned frame in presentation order. Returns ``(frames the decoder dropped, frames)``
    when done, a :class:`Resume` when something unplanned came out of the decoder (the
    caller decodes in full from there)."""
    container, stream = open_decoder(path, threads)
    cc = stream.codec_context
    keep_pts = plan.keep_pts
    planned = _PlannedFrames(select, missing="a planned sample was not decoded")
    for i, (pts, t) in enumerate(zip(plan.pts, plan.times_s)):
        planned.plan(pts, t, must=i in plan.keep)
    try:
        current = None
        for packet in container.demux(stream):
            if packet.size:
                if packet.pts in plan.unsent:
                    continue
                wanted = "DEFAULT" if packet.pts in keep_pts else "NONREF"
                if wanted != current:
                    cc.skip_frame = current = wanted
            yield from planned.decode(packet)
        planned.finish()
    except _Unplanned as stop:
        return stop.resume
    except av.FFmpegError as err:
        return planned.resume_here(f"damaged file while skipping frames ({err})")
    finally:
        container.close()
    return planned.passed_over, len(plan.pts)


# --------------------------------------------------------------------------- streams without B-frames

#: Packets, and compressed bytes, of one group of pictures held while looking for its
#: end. A group longer than this is decoded as far as it came without waiting, which
#: bounds memory on streams with rare or no IDR pictures (their tails are then only
#: partly left out).
MAX_GROUP_PACKETS = 600
MAX_GROUP_BYTES = 32 << 20


@dataclass(frozen=True)
class TailPlan:
    """A stream without reordering: decode each closed group of pictures only up to its
    last sample. ``is_clean_start(packet_bytes)`` tells the packets that start a group
    (:func:`ceuspipe.video.random_access.clean_start_test`; ``None``: none can be told,
    so nothing is left out but the tail of the last group)."""

    is_clean_start: Callable[[bytes], bool] | None


def tail_frames(path: Path, select, threads: bool, planner, plan: TailPlan):
    """Decode a stream without reordering group by group (packets held from one clean
    start to the next, at most :data:`MAX_GROUP_PACKETS` or :data:`MAX_GROUP_BYTES`);
    the packets after a group's last sample are not sent to the decoder. ``planner`` is a shadow of the sampler
    (``plan_ahead``), run ahead of ``select`` because frame threads hand frames out late.
    Same contract as :func:`skip_frames`: ``(frames left out, frames)`` when done, a
    :class:`Resume` when the caller must decode in full from the last frame handed out."""
    container, stream = open_decoder(path, threads)
    base = Fraction(positive_fraction(stream, "time_base") or Fraction(1, 90000))
    clock = RelativeClock()
    is_clean = plan.is_clean_start
    planned = _PlannedFrames(select, missing="a frame sent to the decoder did not come out")

    def send(group: list, times: list[float], closed: bool) -> Iterator[Frame]:
        """Plan ``group``'s samples; decode it, or (``closed``: a clean start or the end
        of the stream follows) only up to its last sample."""
        keep = planner.plan_ahead(times)
        n_send = (max(keep) + 1 if keep else 0) if closed else len(group)
        for i, (packet, t) in enumerate(zip(group, times)):
            planned.plan(packet.pts, t, must=i < n_send)
            if i < n_send:
                yield from planned.decode(packet)

    try:
        group: list = []
        times: list[float] = []
        prev_pts = None
        held = 0  # bytes in group
        total = 0
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the end-of-stream marker: the decoder is flushed below
            if packet.pts is None or (prev_pts is not None and packet.pts <= prev_pts) or packet.is_disposable:
                planned.give_up("packets out of presentation order after the first ones")
            prev_pts = packet.pts
            t = clock(packet.pts * base)
            if not t <= MAX_CLIP_S:
                planned.give_up("timestamps beyond the longest clip believed")
            if group and is_clean is not None and packet.is_keyframe and is_clean(bytes(packet)):
                yield from send(group, times, closed=True)
                group, times, held = [], [], 0
            group.append(packet)
            times.append(t)
            total += 1
            held += packet.size
            if len(group) >= MAX_GROUP_PACKETS or held >= MAX_GROUP_BYTES:
                yield from send(group, times, closed=False)
                group, times, held = [], [], 0
        yield from send(group, times, closed=True)
        yield from planned.decode(None, stream.codec_context)
        planned.finish()
    except _Unplanned as stop:
        return stop.resume
    except av.FFmpegError as err:
        return planned.resume_here(f"damaged file while skipping frames ({err})")
    finally:
        container.close()
    if total == 0:
        return planned.resume_here("no frames")
    return planned.passed_over, total
