"""Per-frame flags of a time-intensity curve: frames the bolus fit must not use.

Flags (boolean arrays, one entry per frame):

* ``empty_mask``  the ROI value is NaN (empty mask, missing frame) or its time is not finite;
* ``user``        excluded by the caller;
* ``flash``       a flash (high-MI burst): the signal jumps far above its running
                  median (window >= 3 s and >= 11 frames) for at most 1 s (and at
                  least 2 frames), with a sudden rise and a sudden fall;
* ``destruction`` frames after a flash that destroyed the bubbles: the level right
                  after the flash is below half the pre-flash enhancement. The bolus
                  model no longer describes these frames (they are a replenishment
                  curve), so every later frame is flagged;
* ``jump``        isolated outliers of the ROI value against its running median
                  (:func:`detect_jumps`), confirmed against a bolus fit that includes
                  them (:func:`confirm_jumps`, done by :func:`~ceuspipe.tic.analyse.analyse_curve`).

Flash and destruction are detected on ``panel_means`` (mean grey level of the whole
CEUS panel, brightened everywhere by a flash) when given, otherwise on the ROI
values. Panel means are log-compressed grey levels averaged over the whole panel:
smooth, but a flash during enhancement can rise only to full scale (grey 255), so
their rise threshold relative to the curve's range is lower
(:data:`PANEL_MIN_REL_RISE`, 5 %) than for ROI values (25 %). Thresholds are relative
to a robust noise level (MAD of first differences) and to the curve's own range, so
they do not depend on units or scanner.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["FLAG_NAMES", "PANEL_MIN_REL_RISE", "running_median", "noise_level", "detect_flash",
           "detect_destruction", "detect_jumps", "confirm_jumps", "frame_flags"]

FLAG_NAMES = ("empty_mask", "user", "flash", "destruction", "jump")
# Flash rise threshold relative to the range of the whole-panel mean grey curve. A phantom
# flash at 2 fps during wash-in (panel mean 196 -> 229 grey, range ~190) rises 15-18 % of
# the range: the ROI default of 25 % missed it (it was then only caught as a "jump").
PANEL_MIN_REL_RISE = 0.05


def running_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median of 1-D ``x`` over ``window`` samples, ignoring NaN.

    Edges use the samples available; an all-NaN window gives NaN. ``(N,) float64``.
    """
    x = np.asarray(x, dtype=np.float64)
    w = max(1, int(window)) | 1
    if x.size == 0:
        return x.copy()
    pad = np.pad(x, w // 2, constant_values=np.nan)
    view = np.lib.stride_tricks.sliding_window_view(pad, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(view, axis=1)


def noise_level(x: np.ndarray) -> float:
    """Robust noise SD of 1-D ``x`` (NaN ignored): 1.4826 * MAD of first differences / sqrt(2).

    Bolus trends and a few outliers barely move it. 0.0 for fewer than 3 finite values.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 3:
        return 0.0
    d = np.diff(x)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def _range(x: np.ndarray) -> float:
    v = x[np.isfinite(x)]
    if v.size == 0:
        return 0.0
    return float(np.percentile(v, 99) - np.percentile(v, 1))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` index pairs of consecutive True entries."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]]
    return list(zip(starts.tolist(), ends.tolist()))


def detect_flash(signal: np.ndarray, *, window: int = 11, max_len: int | None = None, k: float = 8.0,
                 min_rel_rise: float = 0.25) -> np.ndarray:
    """Frames of a flash in ``signal`` ``(N,)`` (panel mean grey or ROI value); ``(N,) bool``.

    Candidates are frames where ``signal - running_median(signal, window)`` exceeds
    ``thr = max(k * noise, min_rel_rise * range)`` (robust noise level, and the 1st
    to 99th percentile range of the running median). A run of candidates is a
    flash only when it lasts at most ``max_len`` frames (default ``window // 2``) and both its edges are
    sudden: its first frame is at least ``thr / 2`` above the valid frame before
    it and its last frame at least ``thr / 2`` above the valid frame after it. A
    bolus, however steep, rises over several frames and falls more slowly still,
    so it is not a flash unless it is sampled at about one frame per rise time.
    """
    x = np.asarray(signal, dtype=np.float64)
    out = np.zeros(x.shape, dtype=bool)
    if np.count_nonzero(np.isfinite(x)) < max(5, window // 2 + 2):
        return out
    base = running_median(x, window)
    r = x - base
    s = noise_level(x)
    thr = max(k * s, min_rel_rise * _range(base), 1e-9 * max(float(np.nanmax(np.abs(x))), 1e-300))
    cand = np.isfinite(r) & (r > thr)
    valid = np.flatnonzero(np.isfinite(x))
    for a, b in _runs(cand):
        if b - a + 1 > (window // 2 if max_len is None else max(1, min(max_len, window // 2))):
            continue
        before = valid[valid < a]
        after = valid[valid > b]
        rise = x[a] - x[before[-1]] if before.size else np.inf
        fall = x[b] - x[after[0]] if after.size else np.inf
        if rise > thr / 2 and fall > thr / 2:
            out[a:b + 1] = True
    return out


def detect_destruction(
    signal: np.ndarray, flash: np.ndarray, *, k: float = 8.0, drop_fraction: float = 0.5, context: int = 5
) -> np.ndarray:
    """Frames after a destructive flash; ``(N,) bool``.

    For each run of ``flash`` frames, ``pre`` is the median of up to ``context``
    valid frames before it and ``post`` the median of up to ``context`` valid,
    non-flash frames after it; ``floor`` is the 5th percentile of the non-flash
    signal. The flash destroyed bubbles when there was enhancement to destroy
    (``pre - floor > k * noise``) and ``post - floor < drop_fraction * (pre - floor)``.
    All frames after the first such flash are flagged.
    """
    x = np.asarray(signal, dtype=np.float64)
    flash = np.asarray(flash, dtype=bool)
    out = np.zeros(x.shape, dtype=bool)
    good = np.isfinite(x) & ~flash
    if np.count_nonzero(good) < 5:
        return out
    floor = float(np.percentile(x[good], 5))
    s = noise_level(np.where(good, x, np.nan))
    for a, b in _runs(flash):
        before = np.flatnonzero(good[:a])[-context:]
        after = b + 1 + np.flatnonzero(good[b + 1:])[:context]
        if before.size < 2 or after.size < 2:
            continue
        pre = float(np.median(x[before]))
        post = float(np.median(x[after]))
        if pre - floor > k * s and post - floor < drop_fraction * (pre - floor):
            out[b + 1:] = True
            break
    return out


def detect_jumps(values: np.ndarray, *, window: int = 5, k: float = 6.0, min_rel: float = 0.05) -> np.ndarray:
    """Isolated outliers of ``values`` ``(N,)`` (NaN frames skipped); ``(N,) bool``.

    On the finite values in order, a frame is a jump when its residual
    ``r = x - running_median(x, window)`` exceeds both ``min_rel`` times the
    curve's robust range (so the curvature of a noise-free peak is never a jump)
    and ``k`` times a noise scale that grows with the level, as speckle noise
    does: ``s_i = c * (|median_i| + d)``, with ``d`` 2% of the range and ``c`` the
    robust SD (1.4826 * MAD / 1.22) of the level-normalised second differences
    ``(x[i] - (x[i-1] + x[i+1]) / 2) / (|median_i| + d)`` over the whole curve.
    """
    x = np.asarray(values, dtype=np.float64)
    out = np.zeros(x.shape, dtype=bool)
    idx = np.flatnonzero(np.isfinite(x))
    if idx.size < window + 4:
        return out
    v = x[idx]
    base = running_median(v, window)
    rng = _range(base)
    if not rng > 0:
        return out
    level = np.abs(base) + 0.02 * rng
    e = v[1:-1] - 0.5 * (v[:-2] + v[2:])
    z = e / level[1:-1]
    c = 1.4826 * float(np.median(np.abs(z - np.median(z)))) / np.sqrt(1.5)
    thr = np.maximum(k * c * level, min_rel * rng)
    out[idx] = np.abs(v - base) > thr
    return out


def confirm_jumps(values: np.ndarray, fitted: np.ndarray, candidates: np.ndarray, used: np.ndarray, *,
                  k: float = 6.0, min_rel: float = 0.05) -> np.ndarray:
    """Keep the jump ``candidates`` that are also outliers against a bolus fit; ``(N,) bool``.

    ``values``, ``fitted`` (the model fitted to the ``used`` frames, candidates
    included, so a sharp peak is not extrapolated), ``candidates`` and ``used`` are
    ``(N,)``. The running median is biased
    at a sharp, coarsely sampled peak; the fitted model is not, so a candidate
    stays a jump only when ``|values - fitted|`` exceeds ``min_rel`` times the
    fitted curve's range and ``k`` times the level-scaled robust SD of the fit
    residuals of the ``used`` frames (same scale model as :func:`detect_jumps`).
    """
    y = np.asarray(values, dtype=np.float64)
    f = np.asarray(fitted, dtype=np.float64)
    cand = np.asarray(candidates, dtype=bool) & np.isfinite(f) & np.isfinite(y)
    used = np.asarray(used, dtype=bool) & np.isfinite(f) & np.isfinite(y)
    if not cand.any() or np.count_nonzero(used) < 5:
        return np.asarray(candidates, dtype=bool).copy()
    rng = _range(f[used])
    if not rng > 0:
        return np.asarray(candidates, dtype=bool).copy()
    level = np.abs(f) + 0.02 * rng
    z = (y - f)[used] / level[used]
    c = 1.4826 * float(np.median(np.abs(z - np.median(z))))
    thr = np.maximum(k * c * level, min_rel * rng)
    return cand & (np.abs(y - f) > thr)


def _flash_window(times_s) -> tuple[int, int]:
    """Running-median window (frames, odd) spanning at least 3 s and 11 frames, and the
    longest flash in frames: 1 s, at least 2 frames (2 without times)."""
    if times_s is None:
        return 11, 2
    t = np.asarray(times_s, dtype=np.float64)
    dt = np.diff(t[np.isfinite(t)])
    dt = dt[dt > 0]
    if dt.size == 0:
        return 11, 2
    med = float(np.median(dt))
    return int(min(max(11, int(np.ceil(3.0 / med))), 301)) | 1, max(2, int(round(1.0 / med)))


def frame_flags(
    values: np.ndarray,
    *,
    times_s: np.ndarray | None = None,
    panel_means: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    flash: bool = True,
    jumps: bool = True,
) -> dict[str, np.ndarray]:
    """All flags of :data:`FLAG_NAMES` for a curve ``values`` ``(N,)``.

    ``panel_means`` ``(N,)``: whole-panel mean grey per frame for flash detection
    (NaN allowed); ``exclude`` ``(N,)`` bool: caller's exclusions; ``flash`` /
    ``jumps`` switch the detectors. Returns ``name -> (N,) bool``; a frame is excluded
    from the fit when any flag is set.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    empty = ~np.isfinite(x)
    if times_s is not None:
        empty |= ~np.isfinite(np.asarray(times_s, dtype=np.float64).ravel())
    user = np.zeros(n, bool) if exclude is None else np.asarray(exclude, dtype=bool).ravel().copy()
    f = np.zeros(n, bool)
    d = np.zeros(n, bool)
    j = np.zeros(n, bool)
    if flash:
        sig = x if panel_means is None else np.asarray(panel_means, dtype=np.float64).ravel()
        sig = np.where(user | (empty if panel_means is None else np.zeros(n, bool)), np.nan, sig)
        window, max_len = _flash_window(times_s)
        f = detect_flash(sig, window=window, max_len=max_len,
                         min_rel_rise=0.25 if panel_means is None else PANEL_MIN_REL_RISE)
        d = detect_destruction(sig, f)
    if jumps:
        xj = np.where(empty | user | f | d, np.nan, x)
        j = detect_jumps(xj)
    return {"empty_mask": empty, "user": user, "flash": f, "destruction": d, "jump": j}
