"""Panel boxes of a dual-amplitude CEUS frame, cropping and blacking out.

Frames are ``(H, W, 3) uint8`` RGB arrays; a :class:`Box` is in pixels of the
full frame, ``x, y`` the top-left corner.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ceuspipe.errors import InputError


@dataclass(frozen=True)
class Box:
    """Axis-aligned pixel box: columns ``x:x+w``, rows ``y:y+h``."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if min(self.x, self.y) < 0 or min(self.w, self.h) <= 0:
            raise ValueError(f"invalid box {self}")

    def fits(self, width: int, height: int) -> bool:
        """True when the box lies inside a ``width`` x ``height`` frame."""
        return self.x + self.w <= width and self.y + self.h <= height

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


#: The values of ``ceus_side`` (``--ceus-side``, the ``ceus_side`` option everywhere):
#: left/right for side-by-side panels, top/bottom for stacked ones (where left also
#: means top and right bottom).
CEUS_SIDES = ("left", "right", "top", "bottom")

#: Where a layout came from (:attr:`PanelLayout.origin`).
ORIGINS = ("detected", "dicom-regions", "layout-file", "boxes")


@dataclass(frozen=True)
class PanelLayout:
    """Where the CEUS and the B-mode (US) panels sit in the full frame.

    The optional fields describe how the layout was found; they default to
    "unknown" so layouts built from two boxes (and old layout files) still work:

    - ``origin``: one of :data:`ORIGINS` (``None``: not recorded);
    - ``confidence``: in ``[0, 1]``, how sure the CEUS/US assignment is
      (``None`` for layouts that were given rather than decided);
    - ``cues``: cue name -> value or vote (see :func:`ceuspipe.video.layout.detect_layout`);
    - ``warning``: one line, set when ``confidence`` is low, naming the hint to give;
    - ``pixel_size_mm``: ``(dx, dy)`` in mm per pixel (from DICOM ultrasound regions);
    - ``geometry``: how the pair's boxes agree (one size, one top or left), and for
      detected layouts how they were found (see
      :func:`ceuspipe.video.layout.geometry_report`); empty when not recorded.

    Equality compares the boxes and frame size only.
    """

    ceus: Box
    us: Box
    frame_width: int
    frame_height: int
    origin: str | None = field(default=None, compare=False)
    confidence: float | None = field(default=None, compare=False)
    cues: dict = field(default_factory=dict, compare=False, hash=False)
    warning: str | None = field(default=None, compare=False)
    pixel_size_mm: tuple[float, float] | None = field(default=None, compare=False)
    geometry: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def stacked(self) -> bool:
        """True when the panels sit one above the other (their rows overlap by less than half)."""
        c, u = self.ceus, self.us
        overlap_y = min(c.y + c.h, u.y + u.h) - max(c.y, u.y)
        return overlap_y < 0.5 * min(c.h, u.h)

    @property
    def ceus_side(self) -> str:
        """``"left"`` or ``"right"``: the side of the CEUS panel (``"top"``/``"bottom"``
        when the panels are :attr:`stacked`)."""
        if self.stacked:
            return "top" if self.ceus.y < self.us.y else "bottom"
        return "left" if self.ceus.x < self.us.x else "right"

    def swapped(self) -> "PanelLayout":
        """The same layout with the CEUS and US boxes exchanged (its geometry report too)."""
        return replace(self, ceus=self.us, us=self.ceus, geometry=_swapped_geometry(self.geometry))

    def to_dict(self) -> dict:
        d = {
            "ceus": asdict(self.ceus),
            "us": asdict(self.us),
            "frame_width": self.frame_width,
            "frame_height": self.frame_height,
            "origin": self.origin,
            "confidence": None if self.confidence is None else round(float(self.confidence), 3),
            "cues": _jsonable(self.cues),
            "warning": self.warning,
            "pixel_size_mm": None if self.pixel_size_mm is None else [float(v) for v in self.pixel_size_mm],
            "geometry": _jsonable(self.geometry),
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PanelLayout":
        origin = d.get("origin")
        if origin is not None and origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
        conf = d.get("confidence")
        pix = d.get("pixel_size_mm")
        cues = d.get("cues") or {}
        if not isinstance(cues, dict):
            raise ValueError("cues must be an object")
        warning = d.get("warning")
        geometry = d.get("geometry") or {}
        if not isinstance(geometry, dict):
            raise ValueError("geometry must be an object")
        return cls(
            ceus=Box(**{k: int(d["ceus"][k]) for k in "xywh"}),
            us=Box(**{k: int(d["us"][k]) for k in "xywh"}),
            frame_width=int(d["frame_width"]),
            frame_height=int(d["frame_height"]),
            origin=origin,
            confidence=None if conf is None else float(conf),
            cues=dict(cues),
            warning=None if warning is None else str(warning),
            pixel_size_mm=None if pix is None else (float(pix[0]), float(pix[1])),
            geometry=dict(geometry),
        )


def _swapped_geometry(geometry: dict) -> dict:
    """A geometry report (see :attr:`PanelLayout.geometry`) with CEUS and US exchanged."""
    g = dict(geometry)
    if isinstance(g.get("size_difference_px"), (list, tuple)):
        g["size_difference_px"] = [-v for v in g["size_difference_px"]]
    if isinstance(g.get("detected"), dict):
        g["detected"] = {"ceus": g["detected"].get("us"), "us": g["detected"].get("ceus")}
    placed = g.get("placed_from_partner")
    if placed in ("ceus", "us"):
        g["placed_from_partner"] = "us" if placed == "ceus" else "ceus"
    return g


def _jsonable(value):
    """``value`` with numpy scalars and tuples turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 4)
    return value


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """Return the ``(h, w, ...)`` view of ``image`` inside ``box``."""
    return image[box.y : box.y + box.h, box.x : box.x + box.w]


def black_outside_panels(frame: np.ndarray, layout: PanelLayout) -> np.ndarray:
    """Copy of ``frame`` with everything outside the two panels set to 0.

    This removes burned-in patient text and scanner graphics from a full frame
    before it leaves the program (annotator exports).
    """
    out = np.zeros_like(frame)
    for box in (layout.ceus, layout.us):
        out[box.y : box.y + box.h, box.x : box.x + box.w] = crop(frame, box)
    return out


def load_layout(path: str | os.PathLike) -> PanelLayout:
    """Read a layout JSON file as written by :func:`save_layout`.

    Raises :class:`InputError` naming the file for any problem.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PanelLayout.from_dict(data)
    except FileNotFoundError:
        raise InputError(path, "layout file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a valid layout file ({exc.__class__.__name__}: {exc})") from None


def save_layout(layout: PanelLayout, path: str | os.PathLike) -> None:
    """Write ``layout`` as JSON (``{"ceus": {x,y,w,h}, "us": {...}, frame_width, frame_height}``
    plus the optional ``origin``, ``confidence``, ``cues``, ``warning``, ``pixel_size_mm``,
    ``geometry``)."""
    from ceuspipe.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(layout.to_dict(), indent=2) + "\n")
