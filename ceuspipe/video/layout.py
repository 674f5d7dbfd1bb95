"""Find the CEUS and the B-mode (US) panels of dual-amplitude frames.

Three steps, each in its own module:

1. candidate panels from projections of the frames (:mod:`ceuspipe.video.panel_finder`);
2. the pair held to one size and top (:mod:`ceuspipe.video.panel_pair`): a box that
   disagrees with its partner is placed from it or reported;
3. which panel is CEUS, by colour, stability, bolus and darkness cues
   (:mod:`ceuspipe.video.panel_cues`).

The result records how sure each step was: ``confidence`` and ``warning`` cover both
the CEUS/US decision and the pair's geometry (``geometry``), so a pair of boxes that
disagree never passes silently. DICOM ultrasound regions, layout files and explicit
boxes override detection (:func:`resolve_layout`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np

from ceuspipe.errors import InputError
from ceuspipe.video.panel_cues import (CUE_WEIGHTS, LOW_CONFIDENCE, assign_panels,  # noqa: F401 (re-exported)
                                       decide_ceus, low_confidence_warning)
from ceuspipe.video.panel_finder import (CONTENT_THRESHOLD, MIN_PANEL_FRACTION,  # noqa: F401 (re-exported)
                                         Projections, channel_max, find_candidates, find_panels, spread)
from ceuspipe.video.panel_pair import SIZE_TOLERANCE_PX, PairGeometry, pair_candidates, reconcile
from ceuspipe.video.panels import CEUS_SIDES, Box, PanelLayout, load_layout

log = logging.getLogger("ceuspipe")

_HINT = "give the layout with --layout FILE or --ceus-box/--us-box"
_GEOMETRY_HINT = "check the preview of `ceuspipe layout CLIP --preview P.png` and give --layout FILE if it is wrong"
#: at most this many frames (evenly spread) feed the temporal cues.
MAX_CUE_FRAMES = 64
#: swapped_panels_warning: a CEUS panel changing less than this (grey levels) is still...
SWAP_STILL = 0.5
#: ...while a US panel changing at least this much is not.
SWAP_MOVING = 1.5
#: confidence of a pair whose boxes disagree and could not be reconciled
DISAGREE_CONFIDENCE = 0.4
#: confidence of a pair whose placed box could sit anywhere in a range wider than the tolerance
UNCERTAIN_CONFIDENCE = 0.45
#: factor on the confidence when one box was placed from its partner (and fits one place)
PLACED_FACTOR = 0.9


class LayoutError(InputError):
    """The panels could not be found or the given layout does not fit the frames."""


def geometry_report(geo: PairGeometry, ceus_first: bool) -> dict:
    """The pair's geometry as stored on a layout (``PanelLayout.geometry``), in CEUS and
    US terms: arrangement, whether the sizes agree, the final size difference (CEUS minus
    US, px), the boxes as found from content, which box was placed from its partner and
    how uncertain its position is (px), how touching panels were split, the problem."""
    ceus, us = (geo.first, geo.second) if ceus_first else (geo.second, geo.first)
    found_ceus, found_us = geo.detected if ceus_first else geo.detected[::-1]
    placed = None
    if geo.placed is not None:
        placed = "ceus" if (geo.placed == 0) == ceus_first else "us"
    return {"arrangement": "stacked" if geo.stacked else "side-by-side",
            "sizes_agree": geo.agree,
            "size_difference_px": [ceus.w - us.w, ceus.h - us.h],
            "detected": {"ceus": found_ceus.as_list(), "us": found_us.as_list()},
            "placed_from_partner": placed,
            "position_uncertainty_px": geo.uncertainty_px,
            "split": geo.split,
            "problem": geo.problem}


def given_geometry(layout: PanelLayout) -> dict:
    """The geometry report of boxes that were given, not detected (DICOM regions, a
    layout file, explicit boxes): whether they have one size and top (left)."""
    c, u = layout.ceus, layout.us
    if layout.stacked:
        aligned = abs(c.x - u.x) <= SIZE_TOLERANCE_PX
    else:
        aligned = abs(c.y - u.y) <= SIZE_TOLERANCE_PX
    agree = aligned and abs(c.w - u.w) <= SIZE_TOLERANCE_PX and abs(c.h - u.h) <= SIZE_TOLERANCE_PX
    return {"arrangement": "stacked" if layout.stacked else "side-by-side", "sizes_agree": agree,
            "size_difference_px": [c.w - u.w, c.h - u.h], "detected": None, "placed_from_partner": None,
            "position_uncertainty_px": 0, "split": None, "problem": None}


def _gap(a: Box, b: Box) -> int:
    """Pixels between two boxes side by side or stacked (0 when touching)."""
    return max(b.x - (a.x + a.w), a.x - (b.x + b.w), b.y - (a.y + a.h), a.y - (b.y + b.h))


def _geometry_verdict(layout: PanelLayout, geo: PairGeometry) -> PanelLayout:
    """``layout`` with its geometry report, and its confidence and warning lowered when
    the pair's boxes disagree or a placed box's position is uncertain."""
    report = geometry_report(geo, ceus_first=layout.ceus == geo.first)
    conf = float(layout.confidence if layout.confidence is not None else 1.0)
    problem = None
    if not geo.agree:
        conf = min(conf, DISAGREE_CONFIDENCE)
        problem = (f"{geo.problem} (CEUS {layout.ceus.w}x{layout.ceus.h}, B-mode {layout.us.w}x{layout.us.h}); "
                   "a dual display shows one plane twice, so the crops may be misaligned")
    elif geo.placed is not None:
        who = "CEUS" if report["placed_from_partner"] == "ceus" else "B-mode"
        other = "B-mode" if who == "CEUS" else "CEUS"
        if geo.uncertainty_px > 2 * SIZE_TOLERANCE_PX:
            conf = min(conf, UNCERTAIN_CONFIDENCE)
            placed = layout.ceus if who == "CEUS" else layout.us
            partner = layout.us if who == "CEUS" else layout.ceus
            flush = _gap(placed, partner) <= SIZE_TOLERANCE_PX
            problem = (f"the {who} panel is mostly dark, so its box was placed from the {other} panel's size"
                       + (" flush against it" if flush else "")
                       + f", but its content fits anywhere in a {geo.uncertainty_px} px range")
        else:
            conf *= PLACED_FACTOR
    warning = layout.warning
    if problem is not None:
        report["warning"] = problem
        warning = f"{warning}; {problem}" if warning else f"{problem}; {_GEOMETRY_HINT}"
    return replace(layout, confidence=round(conf, 3), warning=warning, geometry=report)


def detect_layout(frames: Sequence[np.ndarray], *, times_s: Sequence[float] | None = None,
                  source: str | os.PathLike | None = None) -> PanelLayout:
    """Find the CEUS and US panels in ``(H, W, 3) uint8`` RGB frames of one clip.

    Give up to ~64 frames spread over the clip's first minute (1 fps samples;
    ``times_s`` their times in seconds, used only to order them), or a handful
    from its first seconds: the CEUS panel may be nearly black before contrast
    arrives, and the bolus cue needs the minute. The geometry uses all frames
    (a max projection); the temporal cues at most :data:`MAX_CUE_FRAMES` of them,
    downscaled. Raises :class:`LayoutError` (an :class:`InputError` naming
    ``source``) unless two panels side by side or stacked are found. The result
    has ``origin="detected"``, ``confidence``, ``cues`` and, when the confidence
    is below :data:`LOW_CONFIDENCE`, ``warning``.
    """
    src = None if source is None else os.fspath(source)
    frames = _checked_frames(frames, src)
    if times_s is not None:
        times = list(times_s)
        if len(times) != len(frames):
            raise LayoutError(src, f"{len(times)} frame times for {len(frames)} frames")
        order = sorted(range(len(frames)), key=lambda i: float(times[i]))
        frames = [frames[i] for i in order]
    pr = Projections.of(frames)
    found = find_candidates(pr)
    pair = pair_candidates(found, pr)
    if pair is None:
        n = min(len(found), 1)
        raise LayoutError(src, f"found {n} imaging panel{'s' if n != 1 else ''}, expected 2 "
                               f"(CEUS and B-mode); {_HINT}")
    if len(found) > 2:
        log.debug("%s: %d candidate panels, using the best-matching pair", src or "frames", len(found))
    geo = reconcile(pr, *pair)
    height, width = pr.grey_max.shape
    cue_frames = [frames[i] for i in spread(len(frames), MAX_CUE_FRAMES)]
    layout = _geometry_verdict(assign_panels(cue_frames, geo.first, geo.second, width, height), geo)
    log.debug("%s: CEUS %s, US %s (confidence %.2f, cues %s, geometry %s)", src or "frames", layout.ceus,
              layout.us, layout.confidence, layout.cues, layout.geometry)
    return layout


def _checked_frames(frames: Sequence[np.ndarray], src: str | None) -> list[np.ndarray]:
    """The frames as a list of ``(H, W, 3) uint8`` arrays of one size (grey expanded)."""
    out = []
    for f in frames:
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, axis=2)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise LayoutError(src, f"frames must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
        if out and f.shape != out[0].shape:
            raise LayoutError(src, f"frames differ in size: {out[0].shape} and {f.shape}")
        out.append(f)
    if not out:
        raise LayoutError(src, "no frames to find the panel layout in")
    return out


def swapped_panels_warning(ceus_changes, us_changes) -> str | None:
    """A one-line warning when the panels look swapped, else ``None``.

    ``ceus_changes``, ``us_changes``: per-sample mean absolute grey change of the
    chosen CEUS and US panels over the clip (e.g. the key-frame scores), grey
    levels. Warns when the CEUS panel barely changes (median under
    :data:`SWAP_STILL` grey levels) while the US panel does (median at least
    :data:`SWAP_MOVING` and 4x the CEUS one): contrast speckle changes every
    frame, frozen B-mode does not.
    """
    c = np.asarray(ceus_changes, dtype=np.float64).ravel()
    u = np.asarray(us_changes, dtype=np.float64).ravel()
    c, u = c[np.isfinite(c)], u[np.isfinite(u)]
    if c.size == 0 or u.size == 0:
        return None
    mc, mu = float(np.median(c)), float(np.median(u))
    if mc < SWAP_STILL and mu >= SWAP_MOVING and mu >= 4 * mc:
        return (f"the CEUS panel barely changes (median change {mc:.2f} grey levels) while the B-mode "
                f"panel does ({mu:.2f}): the panels look swapped; give --ceus-side left|right "
                "or --layout FILE")
    return None


def layout_warnings(path, layout, ceus_changes, us_changes) -> list[str]:
    """One-line warnings about a clip's panel layout, each naming ``path``: detection
    was unsure (:attr:`PanelLayout.warning`), or the chosen CEUS panel barely changed
    over the clip while the B-mode one did (panels swapped?). Each is logged once."""
    lines = []
    if layout.warning:
        lines.append(f"{path}: {layout.warning}")  # already logged by the layout step
    swapped = swapped_panels_warning(ceus_changes, us_changes)
    if swapped:
        lines.append(f"{path}: {swapped}")
        log.warning("%s", lines[-1])
    return lines


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


def _clipped(box: Box, width: int, height: int, slack: int = 2) -> Box:
    """``box`` cut to a ``width`` x ``height`` frame when it overshoots by at most
    ``slack`` px (scanners write a region's inclusive max corner one past the last
    pixel); otherwise as it is (and then refused as not fitting)."""
    x1, y1 = box.x + box.w, box.y + box.h
    if width < x1 <= width + slack or height < y1 <= height + slack:
        return Box(box.x, box.y, min(x1, width) - box.x, min(y1, height) - box.y)
    return box


def regions_layout(frames: Sequence[np.ndarray], regions: Sequence, *,
                   source: str | None = None) -> tuple[PanelLayout | None, str]:
    """The layout from a DICOM Sequence of Ultrasound Regions, or ``(None, why not)``.

    ``regions``: objects with ``box`` (:class:`Box`), ``spatial_format``,
    ``data_type`` and ``pixel_size_mm`` (see
    :func:`ceuspipe.video.dicom.read_ultrasound_regions`). The two largest
    2-D image regions (spatial format 1, data type tissue or unknown) are the
    panels when they fit the frame, do not overlap, are of similar size and hold
    image content (at least 30% of each box above the background in a max
    projection of ``frames``); which one is CEUS is still told by the cues. The
    returned reason is one line naming region numbers and boxes only. Doppler,
    M-mode, ECG and grey-bar regions are ignored; a single 2-D region is a
    single-panel screen and raises :class:`LayoutError`. A box overshooting the
    frame by a pixel or two (an inclusive corner written one too far) is cut to it.
    """
    frames = _checked_frames(frames, source)
    height, width = frames[0].shape[:2]
    usable = [(i + 1, r, _clipped(r.box, width, height)) for i, r in enumerate(regions)
              if r.box is not None and r.spatial_format in (None, 1) and r.data_type in (None, 0, 1, 2)]
    if len(usable) == 1:
        i, _, box = usable[0]
        raise LayoutError(source, f"found 1 imaging panel (DICOM ultrasound region {i}, {box.w}x{box.h}), "
                                  f"expected 2 (CEUS and B-mode); {_HINT}")
    if len(usable) < 2:
        return None, f"{len(regions)} ultrasound region(s), {len(usable)} of them 2-D images; need 2"
    usable.sort(key=lambda item: item[2].w * item[2].h, reverse=True)
    (ia, ra, a), (ib, rb, b) = usable[:2]
    for i, box in ((ia, a), (ib, b)):
        if not box.fits(width, height):
            return None, f"region {i} box {box.as_list()} does not fit the {width}x{height} frame"
    if a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h:
        return None, f"regions {ia} and {ib} overlap"
    if max(a.w * a.h, b.w * b.h) > 3 * min(a.w * a.h, b.w * b.h):
        return None, f"regions {ia} and {ib} differ more than 3x in area"
    projection = frames[0].copy()
    for f in frames[1:]:
        cv2.max(projection, f, dst=projection)
    content = channel_max(projection) > CONTENT_THRESHOLD
    for i, box in ((ia, a), (ib, b)):
        filled = float(content[box.y: box.y + box.h, box.x: box.x + box.w].mean())
        if filled < 0.3:
            return None, f"region {i} box {box.as_list()} is mostly background ({filled:.0%} content)"
    if (a.x, a.y) > (b.x, b.y):
        (ia, ra, a), (ib, rb, b) = (ib, rb, b), (ia, ra, a)
    cue_frames = [frames[i] for i in spread(len(frames), MAX_CUE_FRAMES)]
    layout = assign_panels(cue_frames, a, b, width, height, origin="dicom-regions")
    layout = replace(layout, geometry=given_geometry(layout))
    ceus_region = ra if layout.ceus == a else rb
    cues = dict(layout.cues)
    cues["dicom_regions"] = f"regions {min(ia, ib)} and {max(ia, ib)} used"
    return replace(layout, cues=cues, pixel_size_mm=getattr(ceus_region, "pixel_size_mm", None)), "used"


def resolve_layout(frames: Sequence[np.ndarray], *, layout_file: str | os.PathLike | None = None,
                   ceus_box=None, us_box=None, ceus_side: str | None = None,
                   source: str | os.PathLike | None = None, times_s: Sequence[float] | None = None,
                   regions: Sequence | None = None, log_warning: bool = True) -> PanelLayout:
    """The panel layout of a clip: from ``layout_file`` (JSON, see
    :func:`ceuspipe.video.panels.load_layout`), else from ``ceus_box`` and ``us_box``
    (``Box`` or ``(x, y, w, h)`` in full-frame pixels, both required), else from
    the DICOM ``regions`` (:func:`regions_layout`) when they are given and fit the
    pixels, else detected (:func:`detect_layout`; ``times_s`` the frames' times in
    seconds). Why regions were not used is recorded in ``cues["dicom_regions"]``.

    ``ceus_side`` then forces which panel is CEUS: ``"left"``/``"right"``
    (for stacked panels ``"top"``/``"bottom"``, or ``"left"`` for the top one and
    ``"right"`` for the bottom one). ``frames``: at least one ``(H, W, 3)`` frame
    (for its size; all of them for detection). The result's ``origin`` says
    where it came from; a low-confidence ``warning`` is also logged (unless not
    ``log_warning``: a tentative attempt that more frames may settle).
    """
    src = None if source is None else os.fspath(source)
    frames = list(frames)
    if not frames:
        raise LayoutError(src, "no frames to check the panel layout against")
    height, width = np.asarray(frames[0]).shape[:2]
    if ceus_side is not None and ceus_side not in CEUS_SIDES:
        raise LayoutError(src, f"CEUS side must be one of {', '.join(CEUS_SIDES)}, not {ceus_side!r}")
    if layout_file is not None:
        if ceus_box is not None or us_box is not None:
            raise LayoutError(src, "give either a layout file or --ceus-box/--us-box, not both")
        layout = replace(load_layout(layout_file), origin="layout-file", warning=None)
        layout = replace(layout, geometry=given_geometry(layout))
        src_check = os.fspath(layout_file)
    elif ceus_box is not None or us_box is not None:
        if ceus_box is None or us_box is None:
            raise LayoutError(src, "give both --ceus-box and --us-box")
        layout = PanelLayout(_box(ceus_box, "CEUS box", src), _box(us_box, "US box", src), width, height,
                             origin="boxes")
        layout = replace(layout, geometry=given_geometry(layout))
        src_check = src
    else:
        layout, why = None, "absent"
        if regions:
            layout, why = regions_layout(frames, regions, source=src)
            if layout is None:
                log.info("%s: DICOM ultrasound regions not used: %s", src or "frames", why)
        if layout is None:
            layout = detect_layout(frames, times_s=times_s, source=src)
            if regions is not None:
                layout = replace(layout, cues={**layout.cues, "dicom_regions": why})
        src_check = src
    check_layout(layout, width, height, src_check)
    if ceus_side is not None:
        want = ceus_side
        if layout.stacked and want in ("left", "right"):
            want = "top" if want == "left" else "bottom"
        if layout.ceus_side != want:
            layout = layout.swapped()
        # the side is settled; a problem with the boxes themselves is not
        problem = layout.geometry.get("warning")
        layout = replace(layout, warning=f"{problem}; {_GEOMETRY_HINT}" if problem else None,
                         cues={**layout.cues, "ceus_side": f"given ({ceus_side})"})
    if layout.warning and log_warning:
        log.warning("%s: %s", src or "frames", layout.warning)
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
        configs.choice("ceus_side", self.ceus_side, (None, *CEUS_SIDES))
        configs.number("layout_samples", self.layout_samples, minimum=1, integer=True)
        configs.number("layout_window_s", self.layout_window_s, above=0, unit="seconds")

    def resolve(self, frames: Sequence[np.ndarray], source: str | os.PathLike | None = None, *,
                times_s: Sequence[float] | None = None, regions: Sequence | None = None,
                log_warning: bool = True) -> PanelLayout:
        """:func:`resolve_layout` with these settings (``times_s``: the frames' times
        in seconds; ``regions``: a DICOM file's ultrasound regions)."""
        return resolve_layout(frames, layout_file=self.layout_file, ceus_box=self.ceus_box,
                              us_box=self.us_box, ceus_side=self.ceus_side, source=source,
                              times_s=times_s, regions=regions, log_warning=log_warning)
