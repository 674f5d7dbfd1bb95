"""Lognormal bolus curves: mean contrast echo power over time.

``f(t) = O + A / (sqrt(2 pi) * sigma * t') * exp(-(ln t' - mu)^2 / (2 sigma^2))``
with ``t' = t - t0`` (``f = O`` for ``t <= t0``); times in seconds, power in
linear full-scale units (1 = grey 255 after log compression).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LognormalBolus:
    """One bolus curve. ``t0`` s, ``mu`` ln(s), ``sigma`` (unitless), ``amplitude``
    power x s, ``offset`` power."""

    t0: float
    mu: float
    sigma: float
    amplitude: float
    offset: float = 0.0

    def __call__(self, t: float | np.ndarray) -> np.ndarray | float:
        """Mean linear power at time(s) ``t`` in seconds."""
        t = np.asarray(t, dtype=np.float64)
        tp = t - self.t0
        pos = tp > 0
        safe = np.where(pos, tp, 1.0)
        val = self.amplitude / (math.sqrt(2 * math.pi) * self.sigma * safe) * np.exp(
            -((np.log(safe) - self.mu) ** 2) / (2 * self.sigma**2))
        out = self.offset + np.where(pos, val, 0.0)
        return float(out) if out.ndim == 0 else out

    @property
    def ttp(self) -> float:
        """Time to peak in seconds from the clip start: ``t0 + exp(mu - sigma^2)``."""
        return self.t0 + math.exp(self.mu - self.sigma**2)

    @property
    def pe(self) -> float:
        """Peak enhancement (value at TTP, offset included), linear power."""
        m = math.exp(self.mu - self.sigma**2)
        return self.offset + self.amplitude / (math.sqrt(2 * math.pi) * self.sigma * m) * math.exp(
            -self.sigma**2 / 2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ttp_s"] = self.ttp
        d["pe"] = self.pe
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LognormalBolus":
        return cls(**{k: float(d[k]) for k in ("t0", "mu", "sigma", "amplitude", "offset")})

    @classmethod
    def from_peak(cls, t0: float, rise_s: float, sigma: float, peak: float,
                  offset: float = 0.0) -> "LognormalBolus":
        """Curve with TTP ``t0 + rise_s`` and peak ``offset + peak``."""
        mu = math.log(rise_s) + sigma**2
        amplitude = peak * math.sqrt(2 * math.pi) * sigma * rise_s * math.exp(sigma**2 / 2)
        return cls(t0=t0, mu=mu, sigma=sigma, amplitude=amplitude, offset=offset)


def draw_curves(rng: np.random.Generator, offset: float) -> tuple[LognormalBolus, LognormalBolus, str]:
    """Draw (lesion, parenchyma, enhancement pattern) for one patient.

    Lesion: t0 5-15 s, TTP 15-40 s, peak 0.05-0.2 of full scale above ``offset``.
    The pattern is ``"hyper-washout"`` (lesion arrives earlier and brighter, then
    washes out faster: hypo-enhancing late), ``"hypo"`` (lesion dimmer throughout)
    or ``"iso-late"`` (similar peak, lesion slower).
    """
    t0 = float(rng.uniform(5.0, 15.0))
    ttp = float(rng.uniform(max(15.0, t0 + 6.0), 40.0))
    peak = float(rng.uniform(0.05, 0.2))
    pattern = str(rng.choice(["hyper-washout", "hypo", "iso-late"]))
    if pattern == "hyper-washout":
        sigma = float(rng.uniform(0.7, 0.95))
        lesion = LognormalBolus.from_peak(t0, ttp - t0, sigma, peak, offset)
        pt0 = t0 + float(rng.uniform(1.0, 4.0))
        prise = (ttp - t0) * float(rng.uniform(1.2, 1.6))
        parenchyma = LognormalBolus.from_peak(pt0, prise, float(rng.uniform(0.45, 0.6)),
                                              peak * float(rng.uniform(0.45, 0.7)), offset)
    elif pattern == "hypo":
        sigma = float(rng.uniform(0.45, 0.7))
        lesion = LognormalBolus.from_peak(t0, ttp - t0, sigma, peak, offset)
        pt0 = t0 - float(rng.uniform(0.0, min(3.0, t0 - 2.0)))
        parenchyma = LognormalBolus.from_peak(pt0, (ttp - t0) * float(rng.uniform(0.8, 1.1)),
                                              float(rng.uniform(0.5, 0.75)),
                                              min(0.25, peak * float(rng.uniform(1.5, 2.2))),
                                              offset)
    else:
        sigma = float(rng.uniform(0.5, 0.7))
        lesion = LognormalBolus.from_peak(t0, ttp - t0, sigma, peak, offset)
        parenchyma = LognormalBolus.from_peak(t0 - float(rng.uniform(0.0, 2.0)),
                                              (ttp - t0) * float(rng.uniform(0.6, 0.8)),
                                              float(rng.uniform(0.6, 0.9)),
                                              peak * float(rng.uniform(0.8, 1.1)), offset)
    return lesion, parenchyma, pattern
