"""Lesion shape and respiratory motion: the analytic geometry behind every mask.

Coordinates are panel pixels (``x`` column, ``y`` row, pixel centres at
integers) with the tissue at rest; at time ``t`` the whole panel content is
shifted by :meth:`RespiratoryMotion.offset`. Both panels show the same plane,
so one shape serves the CEUS and the B-mode panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class Harmonic:
    """Radius perturbation ``amplitude * cos(k * theta + phase)`` (relative)."""

    k: int
    amplitude: float
    phase: float


def _perturbation(theta: np.ndarray, harmonics: tuple[Harmonic, ...]) -> np.ndarray:
    out = np.zeros_like(theta)
    for h in harmonics:
        out += h.amplitude * np.cos(h.k * theta + h.phase)
    return out


@dataclass(frozen=True)
class LesionShape:
    """Irregular lesion: B-mode boundary ``r_b(theta) = radius * (1 + sum harmonics)``,
    CEUS region of interest ``r_roi(theta) = r_b(theta) * (1 + roi_dilation + sum roi_harmonics)``.

    ``center_x``, ``center_y``, ``radius`` in panel pixels; ``edge_px`` is the
    width of the fuzzy B-mode boundary, ``roi_edge_px`` that of the CEUS one.
    ``roi_dilation`` exceeds the sum of ``|roi_harmonics|`` amplitudes, so the ROI
    always contains the B-mode lesion and is larger.
    """

    center_x: float
    center_y: float
    radius: float
    harmonics: tuple[Harmonic, ...]
    roi_dilation: float
    roi_harmonics: tuple[Harmonic, ...]
    edge_px: float
    roi_edge_px: float

    def radius_at(self, theta: np.ndarray) -> np.ndarray:
        """B-mode lesion radius in pixels at polar angle(s) ``theta`` (radians)."""
        return self.radius * (1.0 + _perturbation(theta, self.harmonics))

    def roi_radius_at(self, theta: np.ndarray) -> np.ndarray:
        """CEUS region-of-interest radius in pixels at angle(s) ``theta``."""
        return self.radius_at(theta) * (1.0 + self.roi_dilation + _perturbation(theta, self.roi_harmonics))

    @property
    def max_roi_radius(self) -> float:
        """Upper bound of :meth:`roi_radius_at` in pixels."""
        b = 1.0 + sum(abs(h.amplitude) for h in self.harmonics)
        r = 1.0 + self.roi_dilation + sum(abs(h.amplitude) for h in self.roi_harmonics)
        return self.radius * b * r

    def polar(self, xs: np.ndarray, ys: np.ndarray, dx: float = 0.0, dy: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(rho, theta)`` of points ``(xs, ys)`` around the centre moved by ``(dx, dy)``."""
        ox = xs - (self.center_x + dx)
        oy = ys - (self.center_y + dy)
        return np.hypot(ox, oy), np.arctan2(oy, ox)

    def masks(self, shape: tuple[int, int], dx: float = 0.0, dy: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
        """Hard masks ``(roi, lesion)``, each ``(h, w) uint8`` 0/1, for a panel of
        ``shape = (h, w)`` with the tissue shifted by ``(dx, dy)`` pixels.

        A pixel is inside when its centre lies within the boundary radius. Only a
        bounding box around the lesion is evaluated; ``cos(k theta + phase)`` is
        taken as the real part of ``u**k * exp(i phase)`` with ``u = e^(i theta)``.
        """
        h, w = shape
        roi = np.zeros((h, w), np.uint8)
        lesion = np.zeros((h, w), np.uint8)
        r = self.max_roi_radius + 1.0
        cx, cy = self.center_x + dx, self.center_y + dy
        x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
        y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
        if x0 >= x1 or y0 >= y1:
            return roi, lesion
        oy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
        ox = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
        z = ox + 1j * oy
        rho = np.abs(z)
        u = z / np.where(rho > 0, rho, 1.0)
        kmax = max([hm.k for hm in self.harmonics + self.roi_harmonics] + [1])
        powers = [np.ones_like(u), u]
        for _ in range(2, kmax + 1):
            powers.append(powers[-1] * u)

        def pert(harmonics):
            out = np.zeros(u.shape, np.float64)
            for hm in harmonics:
                out += hm.amplitude * (powers[hm.k] * complex(math.cos(hm.phase), math.sin(hm.phase))).real
            return out

        rb = self.radius * (1.0 + pert(self.harmonics))
        lesion[y0:y1, x0:x1] = rho <= rb
        roi[y0:y1, x0:x1] = rho <= rb * (1.0 + self.roi_dilation + pert(self.roi_harmonics))
        return roi, lesion

    def to_dict(self) -> dict:
        return {
            "center_x": self.center_x, "center_y": self.center_y, "radius": self.radius,
            "harmonics": [vars(h) for h in self.harmonics],
            "roi_dilation": self.roi_dilation,
            "roi_harmonics": [vars(h) for h in self.roi_harmonics],
            "edge_px": self.edge_px, "roi_edge_px": self.roi_edge_px,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LesionShape":
        def harm(items):
            return tuple(Harmonic(int(i["k"]), float(i["amplitude"]), float(i["phase"])) for i in items)

        return cls(float(d["center_x"]), float(d["center_y"]), float(d["radius"]),
                   harm(d["harmonics"]), float(d["roi_dilation"]), harm(d["roi_harmonics"]),
                   float(d["edge_px"]), float(d["roi_edge_px"]))


@dataclass(frozen=True)
class RespiratoryMotion:
    """Sinusoidal whole-image shift: ``(ax, ay) * sin(2 pi t / period_s + phase)`` pixels."""

    amplitude_x_px: float
    amplitude_y_px: float
    period_s: float
    phase: float

    def offset(self, t: float) -> tuple[float, float]:
        """Shift ``(dx, dy)`` in pixels of the panel content at time ``t`` seconds."""
        s = math.sin(2.0 * math.pi * t / self.period_s + self.phase)
        return self.amplitude_x_px * s, self.amplitude_y_px * s

    @property
    def max_px(self) -> float:
        return max(abs(self.amplitude_x_px), abs(self.amplitude_y_px))

    def scaled(self, factor: float) -> "RespiratoryMotion":
        """The same breathing with both amplitudes times ``factor`` (period and phase kept)."""
        return replace(self, amplitude_x_px=self.amplitude_x_px * factor,
                       amplitude_y_px=self.amplitude_y_px * factor)

    def to_dict(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: dict) -> "RespiratoryMotion":
        return cls(float(d["amplitude_x_px"]), float(d["amplitude_y_px"]), float(d["period_s"]),
                   float(d["phase"]))


def draw_lesion(rng: np.random.Generator, panel_size: int) -> LesionShape:
    """Random irregular lesion for a square panel of ``panel_size`` pixels."""
    s = float(panel_size)
    radius = s * float(rng.uniform(0.10, 0.17))
    margin = radius * 1.6 + 0.05 * s
    cx = float(rng.uniform(margin, s - margin))
    cy = float(rng.uniform(max(margin, 0.3 * s), s - margin))
    harmonics = tuple(Harmonic(k, float(rng.uniform(0.02, 0.14 / k ** 0.5)), float(rng.uniform(0, 2 * math.pi)))
                      for k in range(2, 6))
    roi_dilation = float(rng.uniform(0.14, 0.24))
    roi_harmonics = tuple(Harmonic(k, float(rng.uniform(0.005, 0.018)), float(rng.uniform(0, 2 * math.pi)))
                          for k in range(3, 7))
    scale = s / 360.0
    return LesionShape(cx, cy, radius, harmonics, roi_dilation, roi_harmonics,
                       edge_px=float(rng.uniform(1.5, 3.5)) * scale,
                       roi_edge_px=max(0.6, 1.2 * scale))


def draw_motion(rng: np.random.Generator, panel_size: int) -> RespiratoryMotion:
    """Breathing: 2-6 px vertical (at a 360 px panel, scaled), smaller lateral, period 3-6 s."""
    scale = panel_size / 360.0
    ay = float(rng.uniform(2.0, 6.0)) * scale
    ax = ay * float(rng.uniform(0.15, 0.5)) * float(rng.choice([-1.0, 1.0]))
    return RespiratoryMotion(ax, ay, float(rng.uniform(3.0, 6.0)), float(rng.uniform(0, 2 * math.pi)))


def inside_footprint(shape: LesionShape, motion: RespiratoryMotion, room: np.ndarray,
                     target: tuple[float, float], *, edge_is_outside: bool = True) -> LesionShape:
    """``shape`` moved along the line towards ``target`` ``(x, y)`` (panel px) until its
    region of interest, at any breathing offset, lies inside ``room``, an ``(h, w) bool``
    mask (the image footprint less what must stay clear of the lesion); failing that,
    to the pixel of the eroded room nearest ``target``. ``edge_is_outside``: pixels
    beyond the panel's edges count as outside the room."""
    r = shape.max_roi_radius + math.hypot(motion.amplitude_x_px, motion.amplitude_y_px) + 2.0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(math.ceil(r)) + 1,) * 2)
    if edge_is_outside:
        inner = cv2.erode(room.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        inner = cv2.erode(room.astype(np.uint8), kernel)
    inner = inner.astype(bool)
    h, w = room.shape
    cx, cy = shape.center_x, shape.center_y
    tx, ty = target
    for k in range(101):
        x, y = cx + (tx - cx) * k / 100, cy + (ty - cy) * k / 100
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < w and 0 <= yi < h and inner[yi, xi]:
            return replace(shape, center_x=float(x), center_y=float(y))
    if inner.any():
        ys, xs = np.nonzero(inner)
        j = int(np.argmin((xs - tx) ** 2 + (ys - ty) ** 2))
        return replace(shape, center_x=float(xs[j]), center_y=float(ys[j]))
    return replace(shape, center_x=float(tx), center_y=float(ty))
