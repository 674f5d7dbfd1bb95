"""The phantom's replenishment protocol: a contrast infusion refilled after destructive flashes.

With ``PhantomConfig(protocol="replenishment", flash_times_s=...)`` the regions do not follow
a bolus. The infusion arrives at ``t0`` and fills each region (lesion, parenchyma) towards its
steady level ``A``: ``A * (1 - exp(-(t - t0) / tau_s))``. Every flash destroys the bubbles:
from the first frame after the flash frames (``t_d``, the destruction) the region refills as
``A * (1 - exp(-beta * (t - t_d)))`` until the next destruction, the model that
:mod:`ceuspipe.tic.replenishment` fits, with ``beta`` (1/s) per region. Values are mean linear
power above the noise floor (relative to full scale, 1 = grey 255), as the bolus curves of
:mod:`ceuspipe.synth.bolus`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["PROTOCOLS", "RefillCurve", "destruction_times", "draw_refills", "regional_enhancement"]

#: ``bolus``: one injection (:mod:`ceuspipe.synth.bolus`); ``replenishment``: an infusion with
#: destructive flashes at ``flash_times_s``.
PROTOCOLS = ("bolus", "replenishment")


@dataclass(frozen=True)
class RefillCurve:
    """One region's enhancement: ``A`` (linear power above the noise floor), ``beta`` (1/s),
    the infusion's arrival ``t0`` (s) and time constant ``tau_s`` (s), and the destruction
    times ``destructions_s`` (s, increasing)."""

    A: float
    beta: float
    t0: float
    tau_s: float
    destructions_s: tuple[float, ...] = ()

    def __call__(self, t: float | np.ndarray) -> np.ndarray | float:
        """Enhancement at time(s) ``t`` (s); 0 at each destruction time itself."""
        t = np.asarray(t, dtype=np.float64)
        d = np.asarray(self.destructions_s, dtype=np.float64)
        k = np.searchsorted(d, t, side="right")  # destructions at or before t
        td = np.where(k > 0, d[np.maximum(k - 1, 0)] if d.size else 0.0, np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            infusion = np.where(t > self.t0, self.A * (1.0 - np.exp(-(t - self.t0) / self.tau_s)), 0.0)
            refill = self.A * (1.0 - np.exp(-self.beta * (t - td)))
        out = np.where(k > 0, refill, infusion)
        return float(out) if out.ndim == 0 else out

    def to_dict(self) -> dict:
        return {"A": self.A, "beta_per_s": self.beta, "A_beta": self.A * self.beta, "t0_s": self.t0,
                "infusion_tau_s": self.tau_s, "destructions_s": list(self.destructions_s)}

    @classmethod
    def from_dict(cls, d: dict) -> "RefillCurve":
        return cls(A=float(d["A"]), beta=float(d["beta_per_s"]), t0=float(d["t0_s"]),
                   tau_s=float(d["infusion_tau_s"]), destructions_s=tuple(float(v) for v in d["destructions_s"]))


def destruction_times(flash_times_s, flash_duration_s: float, fps: float, n_frames: int) -> list[float]:
    """Time (s) of the first frame after each flash's frames (frame ``i`` at ``i / fps``; a
    flash at ``tf`` lights frames ``ceil(tf * fps)`` to ``ceil((tf + duration) * fps) - 1``),
    sorted, without repeats or frames past the clip."""
    out = set()
    for tf in flash_times_s:
        i = math.ceil((float(tf) + flash_duration_s) * fps - 1e-9)
        if i < n_frames:
            out.add(i / fps)
    return sorted(out)


def draw_refills(seed: int, destructions_s) -> tuple[RefillCurve, RefillCurve]:
    """``(lesion, parenchyma)`` of one exam from its ``seed`` (a stream of its own, so the other
    draws of the exam do not change): infusion arrival 2-5 s with a time constant of 2-4 s;
    lesion ``A`` 0.05-0.2 of full scale, ``beta`` 0.3-1.0/s; parenchyma ``A`` 0.5-1.2 times
    the lesion's, ``beta`` 0.15-0.45/s (slower flow)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    t0, tau = float(rng.uniform(2.0, 5.0)), float(rng.uniform(2.0, 4.0))
    a = float(rng.uniform(0.05, 0.2))
    d = tuple(float(v) for v in destructions_s)
    lesion = RefillCurve(A=a, beta=float(rng.uniform(0.3, 1.0)), t0=t0, tau_s=tau, destructions_s=d)
    parenchyma = RefillCurve(A=a * float(rng.uniform(0.5, 1.2)), beta=float(rng.uniform(0.15, 0.45)), t0=t0,
                             tau_s=tau, destructions_s=d)
    return lesion, parenchyma


def regional_enhancement(truth: dict) -> tuple[Callable, Callable]:
    """``(lesion, parenchyma)``: functions of time (s) giving each region's enhancement above
    the noise floor in an exam's ``truth`` (its bolus curves, or its refill curves under the
    replenishment protocol)."""
    if truth.get("protocol", "bolus") == "replenishment":
        r = truth["replenishment"]
        return RefillCurve.from_dict(r["lesion"]), RefillCurve.from_dict(r["parenchyma"])
    from ceuspipe.synth.bolus import LognormalBolus

    les, par = (LognormalBolus.from_dict(truth["curves"][k]) for k in ("lesion", "parenchyma"))
    return (lambda t: les(t) - les.offset), (lambda t: par(t) - par.offset)
