"""Settings of the synthetic CEUS phantom."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

CEUS_SIDES = ("left", "right", "random")
COLORMAPS = ("gray", "gold")
#: clip containers: H.264 MP4, or a multi-frame US DICOM cine (uncompressed RGB or
#: JPEG baseline YBR_FULL_422).
CONTAINERS = ("mp4", "dicom-rgb", "dicom-jpeg")
#: libx264 speed presets offered for the phantom's clips (encoding is most of the generation time)
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
#: breathing presets: the factor on the drawn breathing amplitude (normal: 2-6 px
#: vertical at a 360 px panel; large: 3x that, 6-18 px, for motion compensation)
BREATHING = {"normal": 1.0, "large": 3.0}


@dataclass(frozen=True)
class PhantomConfig:
    """What every generated exam shares; per-patient values are drawn from the seed.

    ``duration_s`` seconds, ``fps`` frames per second (frame ``i`` is shown at
    ``i / fps`` s), ``width`` x ``height`` the full screen in pixels, ``panel_size``
    the square panel side in pixels (``None``: ``min(0.8 H, 0.45 W)``; the ``logiq``
    skin's panel width, ``None``: ``min(0.48 W, H)``).
    ``dynamic_range_db``: display dynamic range in dB (``None``: drawn per patient
    in 50-70 dB). ``flash_times_s``: start times of high-MI flash frames (bright
    CEUS panel for ``flash_duration_s``); empty by default. ``crf``/``preset`` are
    the libx264 settings of the clip.
    ``skin``: the screen's display features, names registered in
    :data:`ceuspipe.synth.skins.SKINS` joined by ``+`` (``"default"``: the original
    screen; for ``"stacked"``, ``ceus_side`` ``"left"`` puts CEUS on top).
    ``container``: one of :data:`CONTAINERS`; ``dicom_regions``: write a Sequence of
    Ultrasound Regions for the two panels into DICOM cines.
    ``breathing``: a key of :data:`BREATHING` (``"large"``: three times the drawn
    amplitude; the lesion is placed as for normal breathing, so on fan-shaped screens
    its region of interest can cross the image's edge at the breathing extremes).
    ``out_of_plane_episodes``: how many times the probe leaves the lesion's plane for
    ``out_of_plane_s`` seconds (see :mod:`ceuspipe.synth.out_of_plane`); 0 by default.
    ``protocol``: one of :data:`~ceuspipe.synth.replenishment.PROTOCOLS`: ``"bolus"`` (one
    injection), or ``"replenishment"`` (an infusion; every flash of ``flash_times_s``, at least
    one, each before the clip's end, destroys the bubbles, and each region refills with its
    own ``A`` and ``beta``, see :mod:`ceuspipe.synth.replenishment`).
    """

    duration_s: float = 90.0
    fps: float = 12.0
    width: int = 800
    height: int = 450
    panel_size: int | None = None
    ceus_side: str = "left"
    colormap: str = "gray"
    dynamic_range_db: float | None = 60.0
    flash_times_s: tuple[float, ...] = field(default_factory=tuple)
    flash_duration_s: float = 0.2
    exam_id: str = "exam1"
    crf: int = 20
    preset: str = "veryfast"
    skin: str = "default"
    container: str = "mp4"
    dicom_regions: bool = True
    breathing: str = "normal"
    out_of_plane_episodes: int = 0
    out_of_plane_s: float = 0.5
    protocol: str = "bolus"

    def __post_init__(self) -> None:
        from ceuspipe import configs

        configs.number("duration_s", self.duration_s, above=0, unit="s")
        configs.number("fps", self.fps, above=0, unit="frames per second")
        configs.number("width", self.width, minimum=64, integer=True, unit="px")
        configs.number("height", self.height, minimum=36, integer=True, unit="px")
        configs.number("panel_size", self.panel_size, minimum=32, integer=True, optional=True, unit="px")
        configs.choice("ceus_side", self.ceus_side, CEUS_SIDES)
        configs.choice("colormap", self.colormap, COLORMAPS)
        configs.number("dynamic_range_db", self.dynamic_range_db, minimum=10, maximum=120, optional=True, unit="dB")
        configs.number("flash_duration_s", self.flash_duration_s, above=0, unit="s")
        configs.number("crf", self.crf, minimum=0, maximum=51, integer=True)
        configs.choice("preset", self.preset, PRESETS)
        configs.choice("container", self.container, CONTAINERS)
        configs.choice("breathing", self.breathing, tuple(BREATHING))
        configs.number("out_of_plane_episodes", self.out_of_plane_episodes, minimum=0, integer=True)
        configs.number("out_of_plane_s", self.out_of_plane_s, above=0, unit="s")
        from ceuspipe.synth.replenishment import PROTOCOLS

        configs.choice("protocol", self.protocol, PROTOCOLS)
        if self.width % 2 or self.height % 2:
            raise configs.ConfigError("width", "width and height must be even (yuv420p)")
        for t in self.flash_times_s:
            configs.number("flash_times_s", t, minimum=0, unit="s")
        object.__setattr__(self, "flash_times_s", tuple(float(t) for t in self.flash_times_s))
        if self.protocol == "replenishment":
            if not self.flash_times_s:
                raise configs.ConfigError("flash_times_s", "the replenishment protocol needs at least one flash")
            late = [t for t in self.flash_times_s if t >= float(self.duration_s)]
            if late:
                raise configs.ConfigError("flash_times_s", f"flash at {late[0]:g} s is not before the clip's end "
                                                           f"({float(self.duration_s):g} s)")
        for name in ("duration_s", "fps", "flash_duration_s", "out_of_plane_s"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("width", "height", "crf"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.dynamic_range_db is not None:
            object.__setattr__(self, "dynamic_range_db", float(self.dynamic_range_db))
        from ceuspipe.synth.screen import ScreenSkin, make_geometry

        try:
            skin = ScreenSkin.parse(self.skin)
        except ValueError as err:  # an unknown name (the known ones named), or clashing skins
            raise configs.ConfigError("skin", str(err)) from None
        make_geometry(self.width, self.height, "left", self.panel_size, skin=skin)  # raises if too small
        self._check_out_of_plane(skin)

    def _check_out_of_plane(self, skin) -> None:
        from ceuspipe import configs
        from ceuspipe.synth.out_of_plane import episodes_fit

        n = self.out_of_plane_episodes
        if not episodes_fit(self.duration_s, n, self.out_of_plane_s):
            raise configs.ConfigError("out_of_plane_episodes", f"{n} episodes of {self.out_of_plane_s:g} s "
                                      f"(1 s apart, none in the first 1 s) do not fit in {self.duration_s:g} s")
        if n and skin.frozen_bmode:
            raise configs.ConfigError("out_of_plane_episodes", "a frozen B-mode panel cannot leave the plane")

    @property
    def clip_suffix(self) -> str:
        """``".mp4"`` or ``".dcm"``."""
        return ".mp4" if self.container == "mp4" else ".dcm"

    @property
    def n_frames(self) -> int:
        """Number of frames: times ``0, 1/fps, ...`` strictly below ``duration_s``."""
        return max(1, int(np.ceil(self.duration_s * self.fps - 1e-9)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flash_times_s"] = list(self.flash_times_s)
        # fields added with the screen skins and the motion options are written only when
        # set, so the files of the earlier settings stay byte-identical to those before them
        for key, default in (("skin", "default"), ("container", "mp4"), ("dicom_regions", True),
                             ("breathing", "normal"), ("out_of_plane_episodes", 0), ("out_of_plane_s", 0.5),
                             ("protocol", "bolus")):
            if d[key] == default:
                del d[key]
        return d


def patient_seed(global_seed: int, index: int) -> int:
    """Seed of patient ``index`` (0-based), independent of how many are generated or how."""
    ss = np.random.SeedSequence([int(global_seed), int(index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def patient_id(index: int) -> str:
    """``P001`` for index 0 (at least three digits)."""
    return f"P{index + 1:03d}"
