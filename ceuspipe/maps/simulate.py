"""A CEUS panel sequence of known regional curves and known motion, for tests and benchmarks.

:class:`RegionPhantom` makes one panel per frame, on demand (a clip is never held in
memory): each region of a label image follows its own bolus curve
(:mod:`ceuspipe.tic.models`), every pixel gets independent multiplicative speckle noise
(``Gamma`` of mean 1 and CV ``noise_cv``, :func:`ceuspipe.tic.simulate.gamma_noise`), the
tissue moves by a known in-plane shift per frame, and the screen outside the imaged area is
black. Panels come as linear power (float32) or as grey levels log-compressed over
``dynamic_range_db`` (uint8, as a scanner shows them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ceuspipe.motion.warp import shift_image
from ceuspipe.tic.models import get_model
from ceuspipe.tic.parameters import Parameter, perfusion_parameters
from ceuspipe.tic.simulate import gamma_noise

__all__ = ["RegionPhantom", "two_region_phantom", "sector_mask"]


@dataclass
class RegionPhantom:
    """``labels`` ``(H, W)`` int: region index per pixel of the reference frame (into
    ``params``); ``params``: public model parameters per region; ``imaged`` ``(H, W)`` bool:
    the screen's imaged area (fixed; the tissue moves under it); ``times_s`` ``(F,)``;
    ``shifts`` ``(F, 2)``: ``(dx, dy)`` px, how far the tissue has moved in each frame
    (what :meth:`ceuspipe.maps.BlockAccumulator.add` takes to move it back)."""

    labels: np.ndarray
    params: list[dict[str, float]]
    imaged: np.ndarray
    times_s: np.ndarray
    shifts: np.ndarray
    model: str = "lognormal"
    noise_cv: float = 1.0
    dynamic_range_db: float = 60.0
    truth: list[dict[str, Parameter]] = field(default_factory=list)

    def __post_init__(self):
        bm = get_model(self.model)
        t = self.times_s
        self._levels = np.stack([bm(t, p) for p in self.params], axis=1).astype(np.float32)  # (F, regions)
        if not self.truth:
            self.truth = [perfusion_parameters(self.model, p, t_first=float(t[0]), t_last=float(t[-1]))
                          for p in self.params]

    def __len__(self) -> int:
        return int(self.times_s.size)

    def frame(self, i: int, rng: np.random.Generator, *, gray: bool = True) -> np.ndarray:
        """Frame ``i``: ``(H, W)`` uint8 grey (``gray``) or float32 linear power."""
        power = self._levels[i][self.labels] * gamma_noise(rng, self.noise_cv, self.labels.shape).astype(np.float32)
        dx, dy = (float(v) for v in self.shifts[i])
        if dx or dy:
            power = shift_image(power, dx, dy, border="replicate")
        power = np.where(self.imaged, power, 0.0).astype(np.float32)
        if not gray:
            return power
        with np.errstate(divide="ignore"):
            g = 255.0 * (1.0 + 10.0 * np.log10(np.maximum(power, 1e-30)) / self.dynamic_range_db)
        return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def sector_mask(shape: tuple[int, int], half_angle_deg: float = 35.0) -> np.ndarray:
    """``(H, W)`` bool fan of a curvilinear probe: apex above the top centre, black corners."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    apex_y = -0.25 * H
    ang = np.degrees(np.arctan2(xx - (W - 1) / 2, yy - apex_y))
    r = np.hypot(xx - (W - 1) / 2, yy - apex_y)
    return (np.abs(ang) <= half_angle_deg) & (r <= H - apex_y)


def two_region_phantom(shape: tuple[int, int] = (96, 96), *, fps: float = 10.0, duration_s: float = 90.0,
                       model: str = "lognormal", noise_cv: float = 1.0, shift_px: float = 0.0,
                       imaged: np.ndarray | None = None) -> RegionPhantom:
    """A disc (lesion: early, high, fast bolus) in parenchyma (later, lower, slower): region 1
    is the disc of radius ``0.25 * min(H, W)`` at the centre, region 0 the rest. The tissue
    moves as slow breathing, ``shift_px`` px amplitude in x and half that in y (4.5 s period)."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    disc = (yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2 <= (0.25 * min(H, W)) ** 2
    bm = get_model(model)
    shapes = {"lognormal": (0.45, 0.7), "gamma": (4.0, 2.0)}[model]
    # (t0, O, P, m, shape) per region: parenchyma, lesion
    peaks = [(9.0, 0.002, 0.03, 16.0, shapes[1]), (6.0, 0.002, 0.08, 8.0, shapes[0])]
    params = [dict(zip(bm.param_names, bm.from_peak(*pk))) for pk in peaks]
    t = np.arange(int(round(duration_s * fps))) / fps
    w = 2 * math.pi / 4.5
    shifts = np.column_stack([shift_px * np.sin(w * t), 0.5 * shift_px * np.sin(w * t + 1.0)])
    return RegionPhantom(labels=disc.astype(np.intp), params=params,
                         imaged=np.ones(shape, bool) if imaged is None else np.asarray(imaged, bool),
                         times_s=t, shifts=shifts, model=model, noise_cv=noise_cv)
