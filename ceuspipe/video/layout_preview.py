"""Measure one clip's panel layout and draw a preview to check it by eye.

``write_layout_files(clip, "layout.json", "preview.png")`` reads 1 fps samples
over the clip's first minute (videos and DICOM cines alike, through
:func:`ceuspipe.video.reader.iter_frames`), resolves the layout (DICOM
ultrasound regions first, then detection) and writes a layout JSON usable as
``--layout`` and a preview PNG: a frame from the enhanced phase with both boxes
drawn and labelled, the cues and confidence in a strip below it, and everything
outside the panels blurred and dimmed so burned-in text cannot be read.
"""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from ceuspipe.video.panels import Box, PanelLayout, save_layout

log = logging.getLogger("ceuspipe")

#: what the samples span (s) and how many detection sees at most
SAMPLE_SPAN_S = 60.0
MAX_SAMPLES = 64
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_CEUS_COLOUR = (255, 190, 0)
_US_COLOUR = (0, 200, 255)


def measure_layout(path: str | os.PathLike, *, ceus_side: str | None = None,
                   span_s: float = SAMPLE_SPAN_S) -> tuple[PanelLayout, list[np.ndarray], list[float]]:
    """``(layout, frames, times_s)`` of one clip: DICOM ultrasound regions when the
    file has usable ones, else detection on the 1 fps samples of its first ``span_s``
    seconds (:func:`ceuspipe.video.clip_stream.read_layout_frames`; ``ceus_side``
    forces the CEUS panel, see :func:`ceuspipe.video.layout.resolve_layout`)."""
    from ceuspipe.video.clip_stream import read_layout_frames
    from ceuspipe.video.layout import LayoutOptions

    options = LayoutOptions(ceus_side=ceus_side, layout_window_s=span_s, layout_samples=MAX_SAMPLES)
    frames, times, regions = read_layout_frames(path, options)
    layout = options.resolve(frames, source=path, times_s=times, regions=regions)
    return layout, frames, times


def _enhanced_frame(frames: list[np.ndarray], box: Box) -> np.ndarray:
    """The frame whose CEUS panel is brightest after a 3-sample median (a flash frame
    alone is not picked)."""
    means = np.array([float(f[box.y: box.y + box.h: 4, box.x: box.x + box.w: 4].mean()) for f in frames])
    if means.size >= 3:
        padded = np.concatenate(([means[0]], means, [means[-1]]))
        means = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return frames[int(np.argmax(means))]


def obscure_outside(frame: np.ndarray, layout: PanelLayout, *, dim: float = 0.35) -> np.ndarray:
    """Copy of ``frame`` ``(H, W, 3) uint8`` with everything outside the two panels
    blurred beyond reading (downscaled to 1/16, blown up, Gaussian-blurred) and
    dimmed to ``dim`` of its brightness; the panels are kept as they are."""
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (max(1, w // 16), max(1, h // 16)), interpolation=cv2.INTER_AREA)
    blurred = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = max(2.0, min(h, w) / 60.0)
    blurred = cv2.GaussianBlur(blurred, (0, 0), sigma)
    out = np.clip(blurred.astype(np.float32) * dim, 0, 255).astype(np.uint8)
    for b in (layout.ceus, layout.us):
        out[b.y: b.y + b.h, b.x: b.x + b.w] = frame[b.y: b.y + b.h, b.x: b.x + b.w]
    return out


def _info_lines(layout: PanelLayout) -> list[str]:
    conf = "n/a" if layout.confidence is None else f"{layout.confidence:.2f}"
    lines = [f"CEUS {layout.ceus_side}  box {layout.ceus.as_list()}   US box {layout.us.as_list()}",
             f"origin {layout.origin or 'n/a'}   confidence {conf}"
             + ("" if layout.pixel_size_mm is None else
                f"   pixel {layout.pixel_size_mm[0]:.3f} x {layout.pixel_size_mm[1]:.3f} mm")]
    lines.append(geometry_line(layout))
    for name, cue in layout.cues.items():
        if isinstance(cue, dict):
            lines.append(f"{name}: CEUS {cue['ceus']:g}  US {cue['us']:g}  vote {cue['vote']:+.2f}")
        else:
            lines.append(f"{name}: {cue}")
    if layout.warning:
        lines.append("WARNING: " + layout.warning)
    return lines


def geometry_line(layout: PanelLayout) -> str:
    """One line on the pair's geometry: sizes, whether they agree, a placed box."""
    c, u = layout.ceus, layout.us
    g = layout.geometry or {}
    agree = g.get("sizes_agree", (c.w, c.h) == (u.w, u.h))
    text = f"sizes CEUS {c.w}x{c.h}, US {u.w}x{u.h}: " + ("agree" if agree else "DISAGREE")
    if g.get("placed_from_partner"):
        text += (f"; {g['placed_from_partner'].upper()} box placed from its partner"
                 f" (found {g.get('detected', {}).get(g['placed_from_partner'])}, position uncertainty "
                 f"{g.get('position_uncertainty_px', 0)} px)")
    if g.get("split"):
        text += f"; touching panels split at a {g['split']}"
    return text


def render_preview(frames: list[np.ndarray], layout: PanelLayout) -> np.ndarray:
    """The preview image ``(H + strip, W, 3) uint8`` RGB: an enhanced-phase frame with
    everything outside the panels obscured (:func:`obscure_outside`), both boxes
    outlined and labelled ``CEUS`` / ``US``, and a strip below with the cues,
    confidence and any warning."""
    frame = _enhanced_frame(frames, layout.ceus)
    img = obscure_outside(frame, layout)
    h, w = img.shape[:2]
    fs = max(0.35, min(1.0, w / 1400.0))
    thick = 1 if w < 1200 else 2
    for box, name, colour in ((layout.ceus, "CEUS", _CEUS_COLOUR), (layout.us, "US", _US_COLOUR)):
        cv2.rectangle(img, (max(0, box.x - 1), max(0, box.y - 1)),
                      (min(w - 1, box.x + box.w), min(h - 1, box.y + box.h)), colour, thick)
        (tw, th), base = cv2.getTextSize(name, _FONT, fs, thick)
        x0, y0 = box.x + 2, box.y + 2
        cv2.rectangle(img, (x0, y0), (x0 + tw + 4, y0 + th + base + 4), (0, 0, 0), -1)
        cv2.putText(img, name, (x0 + 2, y0 + th + 2), _FONT, fs, colour, thick, cv2.LINE_AA)
    lines = _info_lines(layout)
    (_, th), base = cv2.getTextSize("Ag", _FONT, fs * 0.9, 1)
    line_h = th + base + 6
    strip = np.full((line_h * len(lines) + 8, w, 3), 24, np.uint8)
    for i, text in enumerate(lines):
        colour = (255, 120, 90) if text.startswith("WARNING") else (230, 230, 230)
        cv2.putText(strip, text, (6, 4 + (i + 1) * line_h - base - 3), _FONT, fs * 0.9, colour, 1, cv2.LINE_AA)
    return np.vstack([img, strip])


def write_layout_files(path: str | os.PathLike, layout_json: str | os.PathLike | None,
                       preview_png: str | os.PathLike | None = None, *, ceus_side: str | None = None,
                       span_s: float = SAMPLE_SPAN_S) -> PanelLayout:
    """Measure ``path``'s layout (:func:`measure_layout`) and, when given, write it to
    ``layout_json`` (atomically; loads with :func:`ceuspipe.video.panels.load_layout`)
    and the preview (:func:`render_preview`) to ``preview_png``. Returns the layout."""
    from ceuspipe.fsutil import atomic_write_bytes

    layout, frames, _ = measure_layout(path, ceus_side=ceus_side, span_s=span_s)
    if layout_json is not None:
        save_layout(layout, layout_json)
    if preview_png is not None:
        preview = render_preview(frames, layout)
        ok, data = cv2.imencode(".png", cv2.cvtColor(preview, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        atomic_write_bytes(preview_png, data.tobytes())
    log.debug("%s: layout %s (written to %s)", path, layout.to_dict(), layout_json)
    return layout
