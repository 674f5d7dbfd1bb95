"""Panel boxes of a dual-amplitude CEUS frame, cropping and blacking out.

Frames are ``(H, W, 3) uint8`` RGB arrays; a :class:`Box` is in pixels of the
full frame, ``x, y`` the top-left corner.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class PanelLayout:
    """Where the CEUS and the B-mode (US) panels sit in the full frame."""

    ceus: Box
    us: Box
    frame_width: int
    frame_height: int

    @property
    def ceus_side(self) -> str:
        """``"left"`` or ``"right"``: the side of the CEUS panel."""
        return "left" if self.ceus.x < self.us.x else "right"

    def to_dict(self) -> dict:
        return {
            "ceus": asdict(self.ceus),
            "us": asdict(self.us),
            "frame_width": self.frame_width,
            "frame_height": self.frame_height,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PanelLayout":
        return cls(
            ceus=Box(**{k: int(d["ceus"][k]) for k in "xywh"}),
            us=Box(**{k: int(d["us"][k]) for k in "xywh"}),
            frame_width=int(d["frame_width"]),
            frame_height=int(d["frame_height"]),
        )


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
    """Write ``layout`` as JSON (``{"ceus": {x,y,w,h}, "us": {...}, frame_width, frame_height}``)."""
    from ceuspipe.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(layout.to_dict(), indent=2) + "\n")
