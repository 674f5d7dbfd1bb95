"""Synthetic time-intensity curves of known parameters, for tests and benchmarks.

:func:`simulate_curve` draws one ROI curve (mean linear power, a.u. relative to
full scale) and the matching whole-panel mean grey level, at a fixed frame rate,
with

* multiplicative, speckle-like noise: each frame's ROI value is the true curve
  times ``G ~ Gamma(shape=1/cv**2, scale=cv**2)`` (mean 1, coefficient of
  variation ``cv``), the law of a mean of ``1/cv**2`` independent speckle cells.
  The panel mean averages many more cells: its power gets noise of CV ``cv/10``
  before the display log-compression (``DR`` 60 dB);
* optional flashes (high-MI bursts lighting the whole panel): for 0.25-1 s the ROI
  power is replaced by a bright ``U(0.35, 0.7)`` of full scale (as in the phantom of
  :mod:`ceuspipe.synth`), noise included;
* an optional destruction-refill: a flash during wash-out (while 30-70 % of the
  peak enhancement is left) destroys the bubbles,
  the enhancement falls to ``U(0, 0.1)`` of the bolus' current value and refills
  as ``1 - exp(-tau / tau_r)`` with ``tau_r`` 3-8 s.

The truth (model parameters, perfusion parameters on the noise-free bolus,
flash and destruction frames) comes with the curve. Pure numpy; nothing is
written anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ceuspipe.tic.models import get_model
from ceuspipe.tic.parameters import Parameter, perfusion_parameters

__all__ = ["SimulatedCurve", "draw_params", "gamma_noise", "simulate_curve", "simulate_replenishment"]

DR_DB = 60.0


@dataclass
class SimulatedCurve:
    """One synthetic curve. Arrays are ``(N,)``: ``times_s`` (s), ``values`` (ROI mean
    linear power, a.u.), ``clean`` (noise-free bolus), ``panel_means`` (whole-panel
    mean grey 0..255), ``flash`` and ``destruction`` (bool truth per frame).
    ``params``: public model parameters; ``truth``: perfusion parameters of the
    noise-free bolus over the whole clip."""

    model: str
    times_s: np.ndarray
    values: np.ndarray
    clean: np.ndarray
    panel_means: np.ndarray
    flash: np.ndarray
    destruction: np.ndarray
    params: dict[str, float]
    truth: dict[str, Parameter] = field(default_factory=dict)
    noise_cv: float = 0.0


def gamma_noise(rng: np.random.Generator, cv: float, size) -> np.ndarray:
    """Multiplicative noise factors of mean 1 and coefficient of variation ``cv``."""
    if cv <= 0:
        return np.ones(size)
    k = 1.0 / (cv * cv)
    return rng.gamma(k, 1.0 / k, size=size)


def draw_params(rng: np.random.Generator, model: str = "lognormal") -> dict[str, float]:
    """Public parameters of a plausible bolus: onset 3-15 s, time from onset to peak
    5-25 s, peak 0.05-0.2 of full scale above an offset of 2-15 % of the peak."""
    t0 = float(rng.uniform(3.0, 15.0))
    m = float(rng.uniform(5.0, 25.0))
    peak = float(rng.uniform(0.05, 0.2))
    O = peak * float(rng.uniform(0.02, 0.15))
    if model == "lognormal":
        s = float(rng.uniform(0.4, 0.8))
        mu = math.log(m) + s * s
        A = peak * math.sqrt(2 * math.pi) * s * m * math.exp(0.5 * s * s)
        return {"t0": t0, "O": O, "A": A, "mu": mu, "sigma": s}
    if model == "gamma":
        a = float(rng.uniform(1.5, 6.0))
        b = m / a
        K = peak * math.exp(a * (1.0 - math.log(m)))
        return {"t0": t0, "O": O, "K": K, "alpha": a, "beta": b}
    raise ValueError(f"no parameter draw for model {model!r}")


def _to_grey(power: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        g = 255.0 * (1.0 + 10.0 * np.log10(np.maximum(power, 1e-30)) / DR_DB)
    return np.clip(g, 0.0, 255.0)


def simulate_curve(
    rng: np.random.Generator,
    model: str = "lognormal",
    *,
    params: dict[str, float] | None = None,
    fps: float = 8.0,
    duration_s: float = 150.0,
    noise_cv: float = 0.3,
    n_flashes: int = 0,
    flash_times_s: tuple[float, ...] | None = None,
    destruction: bool = False,
    destruction_time_s: float | None = None,
) -> SimulatedCurve:
    """Draw one curve (see the module docstring).

    ``params``: public model parameters (drawn by :func:`draw_params` when None);
    ``fps``, ``duration_s``: sampling; ``noise_cv``: ROI noise CV; ``n_flashes``
    non-destructive flashes at random times (or at ``flash_times_s``), at least 3 s
    apart; ``destruction``: add a destructive flash during wash-out (or at
    ``destruction_time_s``).
    """
    bm = get_model(model)
    p = dict(params) if params is not None else draw_params(rng, model)
    t = np.arange(int(round(duration_s * fps))) / fps
    n = t.size
    clean = bm(t, p)
    truth = perfusion_parameters(model, p, t_first=float(t[0]), t_last=float(t[-1]))
    bolus = clean - p["O"]
    level = clean.copy()
    flash = np.zeros(n, bool)
    destroyed = np.zeros(n, bool)
    bright = np.zeros(n)

    def add_flash(start: float) -> tuple[int, int]:
        length = int(round(float(rng.uniform(0.25, 1.0)) * fps))
        a = int(np.searchsorted(t, start))
        b = min(n, a + max(1, length))
        flash[a:b] = True
        bright[a:b] = float(rng.uniform(0.35, 0.7))
        return a, b

    if destruction:
        if destruction_time_s is not None:
            td = destruction_time_s
        else:  # during wash-out, while 30-70 % of the peak enhancement is left to destroy
            left = float(rng.uniform(0.3, 0.7)) * truth["PE"].value
            after = np.flatnonzero((t > truth["TTP"].value) & (bolus < left))
            td = float(t[after[0]]) if after.size else truth["TTP"].value + 10.0
        a, b = add_flash(min(td, t[-1] - 20.0))
        tau = t[b:] - t[b] + 1.0 / fps
        r0 = float(rng.uniform(0.0, 0.1))
        tau_r = float(rng.uniform(3.0, 8.0))
        level[b:] = p["O"] + bolus[b:] * (r0 + (1 - r0) * (1 - np.exp(-tau / tau_r)))
        destroyed[b:] = True
    if flash_times_s is None and n_flashes:
        chosen: list[float] = []
        for _ in range(200):
            if len(chosen) == n_flashes:
                break
            c = float(rng.uniform(2.0, t[-1] - 2.0))
            if all(abs(c - o) > 3.0 for o in chosen) and not np.any(flash[max(0, int((c - 3) * fps)):
                                                                          int((c + 3) * fps)]):
                chosen.append(c)
        flash_times_s = tuple(chosen)
    for ft in flash_times_s or ():
        add_flash(ft)
    power = np.where(flash, bright, level)
    values = power * gamma_noise(rng, noise_cv, n)
    panel_power = np.where(flash, bright, level)
    panel = _to_grey(panel_power * gamma_noise(rng, noise_cv / 10.0, n))
    destroyed &= ~flash
    return SimulatedCurve(model=model, times_s=t, values=values, clean=clean, panel_means=panel,
                          flash=flash, destruction=destroyed, params=p, truth=truth, noise_cv=noise_cv)


def simulate_replenishment(rng: np.random.Generator, A: float, beta: float, *, flashes_s=(20.0, 40.0),
                           duration_s: float = 60.0, fps: float = 10.0, noise_cv: float = 0.14,
                           floor: float = 0.002) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A replenishment protocol of known ``A`` (a.u. above ``floor``) and ``beta`` (1/s):
    ``(times_s, values, panel_means, flash)``, all ``(N,)``.

    An infusion arrives at 3 s (time constant 3 s); each flash of ``flashes_s`` lights two
    frames (power 0.5) and destroys the bubbles: from the first frame after it the ROI refills
    as ``floor + A * (1 - exp(-beta * (t - t_d)))``. ROI values get multiplicative noise of CV
    ``noise_cv``, the whole panel's mean grey (60 dB, as :func:`simulate_curve`) a tenth of it.
    """
    t = np.arange(int(round(duration_s * fps))) / fps
    level = np.where(t > 3, A * (1 - np.exp(-(t - 3) / 3.0)), 0.0)
    flash = np.zeros(t.size, bool)
    for tf in flashes_s:
        a = int(round(tf * fps))
        flash[a:a + 2] = True
        if a + 2 < t.size:
            level = np.where(t >= t[a + 2], A * (1 - np.exp(-beta * (t - t[a + 2]))), level)
    power = np.where(flash, 0.5, floor + level)
    values = power * gamma_noise(rng, noise_cv, t.size)
    return t, values, _to_grey(power * gamma_noise(rng, noise_cv / 10.0, t.size)), flash
