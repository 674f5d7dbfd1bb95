"""What a screen skin is: the :class:`Skin` registered under each name, the
:class:`Screen` that lays out and draws a family of screens, and the records they
share (:class:`ScreenSkin`, :class:`ScreenGeometry`).

Skin names (``--skin``, joined by ``+``) are looked up in :data:`SKINS`; a name's
:class:`Skin` switches on display features (fields of :class:`ScreenSkin`) and, for a
skin that brings its own screen, holds that :class:`Screen`. The built-in skins are
registered by :mod:`ceuspipe.synth.skins` (one file per family); other packages add
theirs in code (``SKINS.register("name", Skin(...))``) or through an entry point in
the group ``ceuspipe.phantom_skins`` (``name = "package.module:SKIN"``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol

from ceuspipe.registry import Registry
from ceuspipe.video.panels import PanelLayout

if TYPE_CHECKING:
    import numpy as np

    from ceuspipe.synth.anatomy import LesionShape, RespiratoryMotion

#: the entry-point group other packages register skins under
ENTRY_POINT_GROUP = "ceuspipe.phantom_skins"
#: the skin of the original screen, whose screen draws every skin without its own
DEFAULT = "default"


@dataclass(frozen=True)
class ScreenSkin:
    """The display features of a phantom screen, merged from its skin names.

    ``probe``: ``linear`` (image fills the panel), ``sector`` or ``trapezoid`` (see
    :func:`~ceuspipe.synth.skins.drawing.panel_footprint`); ``arrangement``: ``side``
    or ``stacked``; ``gap``: ``wide``, ``touching`` or ``separator``; ``dark_start``:
    CEUS nearly black before contrast; ``full_hd``: image area centred, thumbnails,
    colour bars; ``marks``: labels and marks inside the panels; ``frozen_bmode``: the
    B-mode panel repeats frame 0; ``scanner``: the skin whose :class:`Screen` lays out
    and draws the screen (``"default"``: the original screen)."""

    probe: str = "linear"
    arrangement: str = "side"
    gap: str = "wide"
    dark_start: bool = False
    full_hd: bool = False
    marks: bool = False
    frozen_bmode: bool = False
    scanner: str = DEFAULT

    @classmethod
    def parse(cls, spec: str) -> "ScreenSkin":
        """``"name+name..."`` -> the named skins' features merged; ``ValueError`` for an
        unknown name (naming the known ones), features that clash, or a combination the
        screen cannot show (:meth:`Screen.check`)."""
        merged: dict = {}
        for name in str(spec).split("+"):
            for k, v in SKINS.get(name.strip()).features.items():
                if k in merged and merged[k] != v:
                    raise ValueError(f"screen skins {spec!r} clash on {k}")
                merged[k] = v
        skin = cls(**merged)
        skin.screen.check(skin, spec)
        return skin

    @property
    def screen(self) -> "Screen":
        """The :class:`Screen` that lays out and draws this skin."""
        screen = SKINS.get(self.scanner).screen
        if screen is None:
            raise ValueError(f"screen skin {self.scanner!r} brings no screen")
        return screen

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["scanner"] == DEFAULT:  # added with the logiq skin: older skins' truths stay as they were
            del d["scanner"]
        return d


DEFAULT_SKIN = ScreenSkin()


@dataclass(frozen=True)
class ScreenGeometry:
    """Frame size, panel boxes and the decoration positions, all in pixels:
    ``panel_size`` the side of the square the tissue is rendered on, ``ruler_gap``
    and ``tick_len`` the depth ruler's distance from its panel and tick length,
    ``depth_cm`` the depth the panels show, ``separator_x`` the column of a
    separator line between the panels (``None``: none)."""

    layout: PanelLayout
    panel_size: int
    ruler_gap: int
    tick_len: int
    depth_cm: float
    skin: ScreenSkin = DEFAULT_SKIN
    separator_x: int | None = None

    @property
    def panel_shape(self) -> tuple[int, int]:
        """``(h, w)`` of each panel in pixels (both panels are the same size); the tissue
        is rendered on a ``panel_size`` square and a non-square panel shows its top
        ``h`` rows."""
        return self.layout.ceus.h, self.layout.ceus.w

    @property
    def width(self) -> int:
        return self.layout.frame_width

    @property
    def height(self) -> int:
        return self.layout.frame_height

    @property
    def screen(self) -> "Screen":
        """The :class:`Screen` of this geometry's skin."""
        return self.skin.screen


class Screen(Protocol):
    """How a family of screens is laid out and drawn (what the skins of one scanner
    share); :class:`~ceuspipe.synth.skins.generic.GenericScreen` is the original one.
    Frames are ``(H, W, 3) uint8`` RGB, positions in pixels. The panels' content
    (tissue, contrast, marks, frozen B-mode, footprint) is drawn by the renderer from
    the :class:`ScreenSkin` features."""

    def check(self, skin: ScreenSkin, spec: str) -> None:
        """Raise ``ValueError`` (naming ``spec``) for features this screen cannot show."""

    def geometry(self, width: int, height: int, ceus_side: str, panel_size: int | None,
                 depth_cm: float | None, skin: ScreenSkin) -> ScreenGeometry:
        """Place the panels on a ``width x height`` frame, CEUS on ``ceus_side``
        (``"left"``/``"right"``); ``None``: the screen's panel size and depth.
        ``ValueError`` when the frame is too small."""

    def header_text(self, header: dict, dynamic_range_db: float, geom: ScreenGeometry
                    ) -> tuple[tuple[str, str], str]:
        """``((line1, line2), footer)`` burned into the screen, from the truth's
        ``screen.header`` (name, id, date, time, MIs, gain, fps)."""

    def render_static(self, geom: ScreenGeometry, header_lines: tuple[str, str], footer: str,
                      seed: int) -> "np.ndarray":
        """``(H, W, 3) uint8`` background of every frame (``seed`` draws any random
        part); the panel boxes are overwritten by the images each frame."""

    def timer_box(self, geom: ScreenGeometry, font_scale: float) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the running timer's patch, text at ``font_scale``."""

    def timer_text(self, seconds: int) -> str:
        """The timer's text at ``seconds`` since the clip's start."""

    def noise_floor_db(self, skin: ScreenSkin) -> float:
        """CEUS noise floor relative to the bottom of the display range, in dB."""

    def draw_lesion(self, rng, geom: ScreenGeometry) -> tuple["LesionShape", "RespiratoryMotion"]:
        """Draw the lesion, then the breathing, from ``rng`` and place the lesion where the
        screen shows it (panel px at rest)."""

    def truth_extras(self, shape: "LesionShape", geom: ScreenGeometry) -> dict:
        """Entries this screen adds to the exam's truth (``{}``: none)."""

    def overlay(self, geom: ScreenGeometry) -> "np.ndarray | None":
        """``(H, W, 3) uint8``, 0 where nothing is drawn: what is painted inside the
        panels over every frame (kept off the lesion), or ``None``."""


@dataclass(frozen=True)
class Skin:
    """What a skin name stands for: the :class:`ScreenSkin` ``features`` it switches on
    and, for a skin that brings its own screen, the ``screen`` (registering it sets
    the ``scanner`` feature to the skin's name)."""

    features: Mapping[str, object] = field(default_factory=dict)
    screen: Screen | None = None


def _checked(name: str, skin: object) -> Skin:
    """``skin`` as stored under ``name``: a :class:`Skin` of known features, with
    ``scanner`` set when it brings a screen."""
    if not isinstance(skin, Skin):
        raise TypeError(f"screen skin {name!r} must be a Skin, not {type(skin).__name__}")
    unknown = set(skin.features) - {f.name for f in dataclasses.fields(ScreenSkin)}
    if unknown:
        raise ValueError(f"screen skin {name!r}: unknown features {', '.join(sorted(unknown))}")
    if skin.screen is not None and name != DEFAULT:  # the default skin's is the field's default
        return dataclasses.replace(skin, features={"scanner": name, **skin.features})
    return skin


#: every skin known, by name (:class:`ceuspipe.registry.Registry`)
SKINS: Registry[Skin] = Registry("screen skin", ENTRY_POINT_GROUP, wrap=_checked)
