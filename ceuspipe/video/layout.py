"""Find the CEUS and the B-mode (US) panels of dual-amplitude frames.

No positions or sizes are assumed: the two large rectangular image regions are
found from a max projection over a few frames (low threshold, small closing,
connected components, then row/column occupancy runs that cut off rulers and
text), and the CEUS panel is told from the B-mode one by colour (gold/hot maps),
by temporal behaviour (B-mode speckle is frozen in tissue and only shifts with
breathing; contrast speckle is redrawn every frame), and last by darkness
(before and early in wash-in the CEUS panel is nearly black).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.video.panels import Box, PanelLayout, load_layout

log = logging.getLogger("ceuspipe")

#: grey level above which a pixel counts as image content (black background is 0..2).
CONTENT_THRESHOLD = 4
#: smallest accepted panel side, as a fraction of the frame's smaller side.
MIN_PANEL_FRACTION = 0.15
_HINT = "give the layout with --layout FILE or --ceus-box/--us-box"


class LayoutError(InputError):
    """The panels could not be found or the given layout does not fit the frames."""


def _as_stack(frames: Sequence[np.ndarray], source: str | None) -> np.ndarray:
    """``(n, H, W, 3) uint8`` from a list of RGB frames (grey ``(H, W)`` accepted)."""
    frames = list(frames)
    if not frames:
        raise LayoutError(source, "no frames to find the panel layout in")
    out = []
    for f in frames:
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, axis=2)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise LayoutError(source, f"frames must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
        if out and f.shape != out[0].shape:
            raise LayoutError(source, f"frames differ in size: {out[0].shape} and {f.shape}")
        out.append(f)
    return np.stack(out)


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of True in a 1-D bool array ((0, 0) if none)."""
    best, start = (0, 0), None
    for i, v in enumerate(np.append(flags, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def _refine(content: np.ndarray, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Shrink a component's bounding box to the longest runs of well-filled columns and rows.

    A line counts as panel when its fraction of content pixels is at least 60% of
    the median line's, so sparse panels (faint CEUS noise) and text or rulers
    separated from the panel by a few empty lines are told apart.
    """
    for _ in range(3):
        sub = content[y: y + h, x: x + w]
        frac = sub.mean(axis=0)
        c0, c1 = _longest_run(frac >= 0.6 * float(np.median(frac)))
        if c1 <= c0:
            return x, y, 0, 0
        x, w = x + c0, c1 - c0
        frac = content[y: y + h, x: x + w].mean(axis=1)
        r0, r1 = _longest_run(frac >= 0.6 * float(np.median(frac)))
        if r1 <= r0:
            return x, y, 0, 0
        y, h = y + r0, r1 - r0
    return x, y, w, h


def _trim_ringing(grey_max: np.ndarray, x: int, y: int, w: int, h: int, max_px: int = 3
                  ) -> tuple[int, int, int, int]:
    """Drop up to ``max_px`` border rows/columns that are much darker than the panel
    (codec ringing just outside a bright panel edge)."""
    sub = grey_max[y: y + h, x: x + w].astype(np.float32)
    cols, rows = sub.mean(axis=0), sub.mean(axis=1)
    floor_c, floor_r = 0.4 * float(np.median(cols)), 0.4 * float(np.median(rows))
    c0, c1, r0, r1 = 0, w, 0, h
    while c0 < max_px and cols[c0] < floor_c:
        c0 += 1
    while w - c1 < max_px and cols[c1 - 1] < floor_c:
        c1 -= 1
    while r0 < max_px and rows[r0] < floor_r:
        r0 += 1
    while h - r1 < max_px and rows[r1 - 1] < floor_r:
        r1 -= 1
    return x + c0, y + r0, c1 - c0, r1 - r0


def find_panels(grey_max: np.ndarray) -> list[Box]:
    """Large rectangular content regions of a ``(H, W) uint8`` max projection,
    largest first (text, rulers and bars are rejected by size and fill)."""
    H, W = grey_max.shape
    content = (grey_max > CONTENT_THRESHOLD).astype(np.uint8)
    closed = cv2.morphologyEx(content, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    min_side = max(24, int(MIN_PANEL_FRACTION * min(H, W)))
    boxes = []
    for i in range(1, n):
        x, y, w, h, _area = (int(v) for v in stats[i])
        if w < min_side or h < min_side:
            continue
        x, y, w, h = _refine(content, x, y, w, h)
        if w >= min_side and h >= min_side:
            x, y, w, h = _trim_ringing(grey_max, x, y, w, h)
        if w < min_side or h < min_side or not (1 / 4 <= w / h <= 4):
            continue
        if closed[y: y + h, x: x + w].mean() < 0.6:
            continue
        boxes.append(Box(x, y, w, h))
    boxes.sort(key=lambda b: b.w * b.h, reverse=True)
    return boxes


def _channel_max(stack: np.ndarray) -> np.ndarray:
    """Per-pixel max over the last (RGB) axis; elementwise, much faster than ``max(axis=-1)``."""
    return np.maximum(np.maximum(stack[..., 0], stack[..., 1]), stack[..., 2])


def _chroma(stack: np.ndarray, box: Box) -> float:
    """Mean colour saturation (max - min channel) over the box's brighter pixels
    (every second row and column: a mean over speckle needs no more)."""
    sub = stack[:, box.y: box.y + box.h: 2, box.x: box.x + box.w: 2]
    high = _channel_max(sub)
    low = np.minimum(np.minimum(sub[..., 0], sub[..., 1]), sub[..., 2])
    bright = high > 20
    return float((high[bright] - low[bright]).mean(dtype=np.float64)) if bright.any() else 0.0


def _stability(grey: np.ndarray, box: Box) -> float | None:
    """Mean phase-correlation peak between consecutive frames of the box (0..1),
    ``None`` when fewer than two distinct frames are given. High for B-mode."""
    crops = [g[box.y: box.y + box.h, box.x: box.x + box.w].astype(np.float32) for g in grey]
    win = cv2.createHanningWindow((box.w, box.h), cv2.CV_32F)
    responses = []
    for a, b in zip(crops, crops[1:]):
        if np.array_equal(a, b) or a.std() < 1e-3 or b.std() < 1e-3:
            continue
        _, resp = cv2.phaseCorrelate(a - a.mean(), b - b.mean(), win)
        responses.append(resp)
    return float(np.mean(responses)) if responses else None


def _which_is_ceus(stack: np.ndarray, grey: np.ndarray, a: Box, b: Box) -> tuple[Box, Box, str]:
    """Return ``(ceus, us, reason)`` for two panel boxes."""
    ca, cb = _chroma(stack, a), _chroma(stack, b)
    if max(ca, cb) > 12 and min(ca, cb) < 4:
        return (a, b, "colour") if ca > cb else (b, a, "colour")
    sa, sb = _stability(grey, a), _stability(grey, b)
    if sa is not None and sb is not None and max(sa, sb) > 0.1 and max(sa, sb) > 2.0 * min(sa, sb):
        return (b, a, "temporal stability") if sa > sb else (a, b, "temporal stability")
    ma = float(np.mean([g[a.y: a.y + a.h, a.x: a.x + a.w].mean() for g in grey]))
    mb = float(np.mean([g[b.y: b.y + b.h, b.x: b.x + b.w].mean() for g in grey]))
    return (a, b, "darkness") if ma <= mb else (b, a, "darkness")


def detect_layout(frames: Sequence[np.ndarray], *, source: str | os.PathLike | None = None) -> PanelLayout:
    """Find the CEUS and US panels in a few ``(H, W, 3) uint8`` RGB frames of one clip.

    Give a handful (up to ~8) of frames spread over the first seconds; the CEUS
    panel may be nearly black (before contrast). Raises :class:`LayoutError`
    (an :class:`InputError` naming ``source``) unless exactly two side-by-side
    panels are found.
    """
    stack = _as_stack(frames, None if source is None else os.fspath(source))
    src = None if source is None else os.fspath(source)
    grey = _channel_max(stack)
    panels = find_panels(grey.max(axis=0))
    n = len(panels)
    if n >= 2:
        a, b = panels[0], panels[1]
        big, small = max(a.w * a.h, b.w * b.h), min(a.w * a.h, b.w * b.h)
        overlap_y = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
        if big > 3 * small or overlap_y < 0.5 * min(a.h, b.h):
            n = 1  # the second region is not a matching side-by-side panel
    if n < 2:
        raise LayoutError(src, f"found {n} imaging panel{'s' if n != 1 else ''}, expected 2 "
                               f"(CEUS and B-mode); {_HINT}")
    if n > 2:
        log.debug("%s: %d candidate panels, using the two largest", src or "frames", n)
    ceus, us, reason = _which_is_ceus(stack, grey, panels[0], panels[1])
    layout = PanelLayout(ceus=ceus, us=us, frame_width=stack.shape[2], frame_height=stack.shape[1])
    log.debug("%s: CEUS %s, US %s (CEUS told by %s)", src or "frames", ceus, us, reason)
    return layout


def _box(value, name: str, src: str | None) -> Box:
    if isinstance(value, Box):
        return value
    try:
        x, y, w, h = (int(v) for v in value)
        return Box(x, y, w, h)
    except (TypeError, ValueError):
        raise LayoutError(src, f"{name} must be x,y,w,h with w, h > 0 (got {value!r})") from None


def check_layout(layout: PanelLayout, width: int, height: int, source: str | None = None) -> PanelLayout:
    """Raise :class:`LayoutError` unless both boxes fit a ``width`` x ``height`` frame and do not overlap."""
    if (layout.frame_width, layout.frame_height) != (width, height):
        raise LayoutError(source, f"layout is for {layout.frame_width}x{layout.frame_height} frames, "
                                  f"the video is {width}x{height}")
    for name, b in (("CEUS", layout.ceus), ("US", layout.us)):
        if not b.fits(width, height):
            raise LayoutError(source, f"{name} box {b.as_list()} does not fit the {width}x{height} frame")
    c, u = layout.ceus, layout.us
    if c.x < u.x + u.w and u.x < c.x + c.w and c.y < u.y + u.h and u.y < c.y + c.h:
        raise LayoutError(source, f"CEUS box {c.as_list()} and US box {u.as_list()} overlap")
    return layout


def resolve_layout(frames: Sequence[np.ndarray], *, layout_file: str | os.PathLike | None = None,
                   ceus_box=None, us_box=None, ceus_side: str | None = None,
                   source: str | os.PathLike | None = None) -> PanelLayout:
    """The panel layout of a clip: from ``layout_file`` (JSON, see
    :func:`ceuspipe.video.panels.load_layout`), else from ``ceus_box`` and ``us_box``
    (``Box`` or ``(x, y, w, h)`` in full-frame pixels, both required), else detected.
    ``ceus_side`` (``"left"``/``"right"``) then forces which panel is CEUS.
    ``frames``: at least one ``(H, W, 3)`` frame (for its size; all of them for detection).
    """
    src = None if source is None else os.fspath(source)
    frames = list(frames)
    if not frames:
        raise LayoutError(src, "no frames to check the panel layout against")
    height, width = np.asarray(frames[0]).shape[:2]
    if ceus_side not in (None, "left", "right"):
        raise LayoutError(src, f"CEUS side must be 'left' or 'right', not {ceus_side!r}")
    if layout_file is not None:
        if ceus_box is not None or us_box is not None:
            raise LayoutError(src, "give either a layout file or --ceus-box/--us-box, not both")
        layout = load_layout(layout_file)
        src_check = os.fspath(layout_file)
    elif ceus_box is not None or us_box is not None:
        if ceus_box is None or us_box is None:
            raise LayoutError(src, "give both --ceus-box and --us-box")
        layout = PanelLayout(_box(ceus_box, "CEUS box", src), _box(us_box, "US box", src), width, height)
        src_check = src
    else:
        layout = detect_layout(frames, source=src)
        src_check = src
    check_layout(layout, width, height, src_check)
    if ceus_side is not None and layout.ceus_side != ceus_side:
        layout = PanelLayout(layout.us, layout.ceus, layout.frame_width, layout.frame_height)
    return layout


@dataclass(frozen=True)
class LayoutOptions:
    """Panel-layout settings shared by every command that reads clips.

    ``layout_file`` / ``ceus_box`` + ``us_box`` / ``ceus_side`` override the
    automatic detection. Detection looks at 1 fps samples of the first
    ``layout_window_s`` seconds of each clip, at most ``layout_samples`` of them
    spread evenly, and stops early once it is sure (see
    :mod:`ceuspipe.video.clip_stream`). Stage configs inherit these fields; the
    values are checked here, for the CLI, pipeline files and library calls alike.
    """

    layout_file: str | None = None
    ceus_box: Box | None = None
    us_box: Box | None = None
    ceus_side: str | None = None
    layout_samples: int = 64
    layout_window_s: float = 60.0

    def __post_init__(self) -> None:
        from ceuspipe import configs

        configs.path_or_none("layout_file", self.layout_file)
        for key in ("ceus_box", "us_box"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Box):
                try:
                    object.__setattr__(self, key, Box(*(int(v) for v in value)))
                except (TypeError, ValueError):
                    raise configs.ConfigError(key, f"must be [x, y, w, h] in full-frame pixels with w, h > 0, "
                                                   f"got {value!r}") from None
        if (self.ceus_box is None) != (self.us_box is None):
            raise configs.ConfigError("ceus_box", "ceus_box and us_box go together")
        if self.layout_file is not None and self.ceus_box is not None:
            raise configs.ConfigError("layout_file", "give either a layout file or ceus_box/us_box, not both")
        configs.choice("ceus_side", self.ceus_side, (None, "left", "right"))
        configs.number("layout_samples", self.layout_samples, minimum=1, integer=True)
        configs.number("layout_window_s", self.layout_window_s, above=0, unit="seconds")

    def resolve(self, frames: Sequence[np.ndarray], source: str | os.PathLike | None = None) -> PanelLayout:
        """:func:`resolve_layout` with these settings."""
        return resolve_layout(frames, layout_file=self.layout_file, ceus_box=self.ceus_box,
                              us_box=self.us_box, ceus_side=self.ceus_side, source=source)
