"""The per-frame result of motion estimation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameMotion:
    """Motion of one frame against the reference.

    ``dx_px``, ``dy_px``: the frame shows the reference's content moved by this much
    (panel px, ``+x`` right, ``+y`` down; sub-pixel). ``score``: normalised
    cross-correlation in ``[-1, 1]`` of the aligned frame's speckle with the
    reference's. ``used``: ``score`` reached the threshold (the frame is in plane);
    when False the displacement is the best guess but should not be relied on.
    """

    index: int
    time_s: float
    dx_px: float
    dy_px: float
    score: float
    used: bool
