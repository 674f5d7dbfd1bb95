"""Per-frame flags of a time-intensity curve: frames the bolus fit must not use.

Flags (boolean arrays, one entry per frame):

* ``empty_mask``  the ROI value is NaN (empty mask, missing frame) or its time is not finite;
* ``user``        excluded by the caller;
* ``flash``       a flash (high-MI burst): a short (at most 1 s), large, sudden rise far
                  above the running median (window >= 3 s and >= 11 frames), judged
                  against a local robust noise level and a run-length rule so that
                  speckle at the peak cannot produce it (:func:`detect_flash`);
* ``destruction`` frames after a flash that destroyed the bubbles: a significant,
                  sustained drop right after the flash to near the pre-contrast level
                  (:func:`detect_destruction`). The bolus model no longer describes
                  these frames (they are a replenishment curve), so every later frame
                  is flagged;
* ``jump``        isolated outliers of the ROI value against its running median
                  (:func:`detect_jumps`), confirmed against a bolus fit that includes
                  them (:func:`confirm_jumps`, done by :func:`~ceuspipe.tic.analyse.analyse_curve`).

Flash and destruction are detected on ``panel_means`` (mean grey level of the whole
CEUS panel, brightened everywhere by a flash) when given, otherwise on the ROI
values. Panel means are log-compressed grey levels averaged over the whole panel:
smooth, but a flash during enhancement can rise only to full scale (grey 255), so
their rise threshold relative to the curve's range is lower
(:data:`PANEL_MIN_REL_RISE`, 5 %) than for ROI values (25 %). ROI values are linear
power with multiplicative noise, so those two detectors work on their logarithm,
where the noise is the same at every level. Thresholds are relative to robust noise
levels and to the curve's own range, so they do not depend on units or scanner.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["FLAG_NAMES", "PANEL_MIN_REL_RISE", "running_median", "noise_level", "detect_flash",
           "detect_destruction", "destructive_flashes", "detect_jumps", "confirm_jumps", "frame_flags"]

FLAG_NAMES = ("empty_mask", "user", "flash", "destruction", "jump")
# Flash rise threshold relative to the range of the whole-panel mean grey curve. A phantom
# flash at 2 fps during wash-in (panel mean 196 -> 229 grey, range ~190) rises 15-18 % of
# the range: the ROI default of 25 % missed it (it was then only caught as a "jump").
PANEL_MIN_REL_RISE = 0.05
# A flash's edges are sudden: most of its rise above the running median happens in one frame.
EDGE_FRACTION = 0.6
# Jump threshold in level-scaled noise SDs. At 6, speckle of 50 % CV (gamma-distributed,
# right-skewed) put a false jump on about one curve in ten of 1200 frames; at 8, about one
# in a hundred. The fit's Huber loss copes with the outliers that are left.
JUMP_K = 8.0


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


def _work_scale(x: np.ndarray, log_scale: bool) -> np.ndarray:
    """``log(x)`` (floored at 1e-3 of the 99th percentile) for power-like values, else ``x``."""
    if not log_scale:
        return x
    v = x[np.isfinite(x)]
    top = float(np.percentile(v, 99)) if v.size else 0.0
    if not top > 0:
        return x
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(np.maximum(x, 1e-3 * top))


def _local_sd(r: np.ndarray, window: int) -> np.ndarray:
    """Robust local SD of residuals ``r`` ``(N,)`` (NaN ignored): 1.4826 * running median of
    ``|r|`` over ``window`` samples, floored at a quarter of the global value."""
    a = np.abs(r)
    glob = 1.4826 * float(np.nanmedian(a)) if np.any(np.isfinite(a)) else 0.0
    loc = 1.4826 * running_median(a, window)
    with np.errstate(invalid="ignore"):
        return np.fmax(np.nan_to_num(loc, nan=glob), 0.25 * glob)


def detect_flash(signal: np.ndarray, *, window: int = 11, max_len: int | None = None, k: float = 5.0,
                 k_run: float = 3.0, min_rel_rise: float = 0.25, log_scale: bool = False) -> np.ndarray:
    """Frames of a flash in ``signal`` ``(N,)`` (panel mean grey or ROI value); ``(N,) bool``.

    A flash is a short, large, sudden event; noise must not be able to produce the
    evidence. On the working scale (``log(signal)`` with ``log_scale``, which makes
    multiplicative speckle noise the same at every level; ``signal`` otherwise) the
    residual ``r = x - running_median(x, window)`` is divided by a *local* robust
    noise SD (1.4826 x running median of ``|r|`` over ``3 * window`` samples), so
    the peak, where speckle is largest, is judged against its own noise. Candidates
    are frames with ``z > k_run`` whose rise above the running median is also at
    least ``min_rel_rise`` of the running median's 1st-99th percentile range in the
    signal's own units. A run of candidates is a flash when

    * it lasts at most ``max_len`` frames (default ``window // 2``),
    * one frame alone reaches ``z > k``; two or more consecutive frames each reach
      ``k_run`` (for independent noise a run of two above 3 SD is as rare as one
      frame above about 4.8 SD; speckle's log is lighter-tailed still),
    * both its edges are sudden: its first frame is above the valid frame before it
      by at least ``k_run / 2`` local SDs, :data:`EDGE_FRACTION` of its own rise above
      the running median and ``min_rel_rise / 2`` of the range, and the same for its
      last frame against the frame after it. A bolus, however steep, rises over
      several frames and falls more slowly still, and the running median's lag at a
      sharp peak (several consecutive frames slightly above it) has no such edges.
    """
    x0 = np.asarray(signal, dtype=np.float64)
    out = np.zeros(x0.shape, dtype=bool)
    if np.count_nonzero(np.isfinite(x0)) < max(5, window // 2 + 2):
        return out
    x = _work_scale(x0, log_scale)
    base = running_median(x, window)
    with np.errstate(invalid="ignore"):  # inf - inf in a curve of overflowed values: NaN, not a flash
        r = x - base
    sd = _local_sd(r, 3 * window)
    tiny = 1e-9 * max(float(np.nanmax(np.abs(x))), 1e-300)
    sd = np.maximum(sd, tiny)
    with np.errstate(invalid="ignore"):
        z = r / sd
    base0 = base if not log_scale else running_median(x0, window)
    rise_min = max(min_rel_rise * _range(base0), 1e-9 * max(float(np.nanmax(np.abs(x0))), 1e-300))
    with np.errstate(invalid="ignore"):
        cand = np.isfinite(z) & (z > k_run) & (x0 - base0 > rise_min)
    valid = np.flatnonzero(np.isfinite(x))
    longest = window // 2 if max_len is None else max(1, min(max_len, window // 2))
    for a, b in _runs(cand):
        if b - a + 1 > longest:
            continue
        if b == a and not z[a] > k:
            continue
        before = valid[valid < a]
        after = valid[valid > b]
        ok = True
        for i, j in ((a, before[-1] if before.size else None), (b, after[0] if after.size else None)):
            if j is None:
                continue
            step = x[i] - x[j]
            if not (step > 0.5 * k_run * sd[i] and step > EDGE_FRACTION * r[i] and x0[i] - x0[j] > 0.5 * rise_min):
                ok = False
        if ok:
            out[a:b + 1] = True
    return out


def detect_destruction(
    signal: np.ndarray, flash: np.ndarray, *, window: int = 5, post_window: int = 3, k: float = 5.0,
    drop_fraction: float = 0.6, sustained: float = 0.7, log_scale: bool = False,
) -> np.ndarray:
    """Frames after a flash that destroyed the bubbles; ``(N,) bool``.

    Destruction is a sustained drop to near the pre-contrast level (which then
    refills), not a noisy stretch. On the working scale of :func:`detect_flash`, for
    each run of ``flash`` frames: ``pre`` is the median of up to ``window`` valid
    non-flash frames before it and ``post`` of up to ``post_window`` after it (short:
    refill starts at once, with a time constant of a few seconds), ``floor`` the
    pre-contrast level (5th percentile of the running median over ``window``
    frames before the flash; the 5th percentile of the whole signal when there are
    too few) and ``s`` the robust noise SD (:func:`noise_level`). The flash
    destroyed bubbles when all of these hold:

    * the drop is significant: ``pre - post > k * 1.25 * s * sqrt(1/n_pre + 1/n_post)``;
    * it goes to near the pre-contrast level: ``post - floor < drop_fraction * (pre - floor)``;
    * it is sustained: at least ``sustained`` of those ``post_window`` frames lie
      below ``floor + drop_fraction * (pre - floor)``.

    All frames after the first such flash are flagged.
    """
    x0 = np.asarray(signal, dtype=np.float64)
    flash = np.asarray(flash, dtype=bool)
    out = np.zeros(x0.shape, dtype=bool)
    good = np.isfinite(x0) & ~flash
    if np.count_nonzero(good) < 5 or not flash.any():
        return out
    x = _work_scale(x0, log_scale)
    s = noise_level(np.where(good, x, np.nan))
    xg = np.where(good, x, np.nan)
    w = max(3, int(window))
    rm = running_median(xg, w)
    glob_floor = float(np.nanpercentile(xg, 5))
    for a, b in _runs(flash):
        before = np.flatnonzero(good[:a])[-w:]
        after = b + 1 + np.flatnonzero(good[b + 1:])[:max(3, int(post_window))]
        if before.size < 3 or after.size < 3:
            continue
        pre = float(np.median(x[before]))
        post = float(np.median(x[after]))
        earlier = rm[:max(0, before[0])]
        earlier = earlier[np.isfinite(earlier)]
        floor = float(np.percentile(earlier, 5)) if earlier.size >= w else glob_floor
        enh = pre - floor
        mid = floor + drop_fraction * enh
        se = 1.25 * s * np.sqrt(1.0 / before.size + 1.0 / after.size)
        if (enh > 0 and pre - post > k * se and post < mid
                and np.count_nonzero(x[after] < mid) >= sustained * after.size):
            out[b + 1:] = True
            break
    return out


def detect_jumps(values: np.ndarray, *, window: int = 5, k: float = JUMP_K, min_rel: float = 0.05) -> np.ndarray:
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
                  k: float = JUMP_K, min_rel: float = 0.05, noise_sd: np.ndarray | None = None) -> np.ndarray:
    """Keep the jump ``candidates`` that are also outliers against a bolus fit; ``(N,) bool``.

    ``values``, ``fitted`` (the model fitted to the ``used`` frames, candidates
    included, so a sharp peak is not extrapolated), ``candidates`` and ``used`` are
    ``(N,)``. The running median is biased
    at a sharp, coarsely sampled peak; the fitted model is not, so a candidate
    stays a jump only when ``|values - fitted|`` exceeds ``min_rel`` times the
    fitted curve's range and ``k`` times the level-scaled robust SD of the fit
    residuals of the ``used`` frames (same scale model as :func:`detect_jumps`) and,
    when given, ``k`` times the fit's own noise model ``noise_sd`` ``(N,)`` (where few
    frames carry the bolus, their fit residuals alone understate the noise).
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
    if noise_sd is not None:
        thr = np.fmax(thr, k * np.asarray(noise_sd, dtype=np.float64))
    return cand & (np.abs(y - f) > thr)


def _mostly_positive(x: np.ndarray) -> bool:
    v = x[np.isfinite(x)]
    return bool(v.size) and np.count_nonzero(v > 0) >= 0.99 * v.size


def _flash_window(times_s) -> tuple[int, int, int, int]:
    """Running-median window (frames, odd) spanning at least 3 s and 11 frames, the
    longest flash in frames (1 s, at least 2 frames; 2 without times) and the
    destruction test's windows before (2 s, at least 5 frames) and after the flash
    (0.5 s, at least 3 frames)."""
    if times_s is None:
        return 11, 2, 5, 3
    t = np.asarray(times_s, dtype=np.float64)
    dt = np.diff(t[np.isfinite(t)])
    dt = dt[dt > 0]
    if dt.size == 0:
        return 11, 2, 5, 3
    med = float(np.median(dt))
    return (int(min(max(11, int(np.ceil(3.0 / med))), 301)) | 1, max(2, int(round(1.0 / med))),
            int(min(max(5, round(2.0 / med)), 200)), int(min(max(3, round(0.5 / med)), 50)))


def destructive_flashes(values: np.ndarray, flash: np.ndarray, *, times_s: np.ndarray | None = None,
                        exclude: np.ndarray | None = None, log_scale: bool = False) -> list[tuple[int, int]]:
    """Every flash after which the bubbles of this curve's region were destroyed, as inclusive
    ``(first, last)`` frame indices of its run in ``flash`` ``(N,) bool`` (the ``flash`` flag of
    :func:`frame_flags`).

    :func:`detect_destruction` judges only the first destructive flash (every later frame is
    flagged anyway); a replenishment protocol destroys again and again. Here each run of flash
    frames is judged on its own by the same test, with the other flashes' frames, empty frames
    (``values`` NaN or ``times_s`` not finite) and ``exclude`` ``(N,)`` left out. The test runs
    on ``values`` themselves, linear intensity, unless ``log_scale``: the refill's first
    frames hold some 5-20 % of the refilled level, which is "near the pre-contrast level" in
    linear units but only 7-13 dB under it, far from a floor that lies tens of dB down (a dark
    CEUS panel before contrast), so panel grey levels or log values miss such destructions.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    flash = np.asarray(flash, dtype=bool).ravel()
    skip = ~np.isfinite(x)
    if times_s is not None:
        skip |= ~np.isfinite(np.asarray(times_s, dtype=np.float64).ravel())
    if exclude is not None:
        skip |= np.asarray(exclude, dtype=bool).ravel()
    _, _, dwin, pwin = _flash_window(times_s)
    out = []
    for a, b in _runs(flash):
        one = np.zeros(n, bool)
        one[a:b + 1] = True
        sig = np.where(skip | (flash & ~one), np.nan, x)
        if detect_destruction(sig, one, window=dwin, post_window=pwin, log_scale=log_scale).any():
            out.append((a, b))
    return out


def frame_flags(
    values: np.ndarray,
    *,
    times_s: np.ndarray | None = None,
    panel_means: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    flash: bool = True,
    jumps: bool = True,
    log_values: bool = True,
) -> dict[str, np.ndarray]:
    """All flags of :data:`FLAG_NAMES` for a curve ``values`` ``(N,)``.

    ``panel_means`` ``(N,)``: whole-panel mean grey per frame for flash detection
    (NaN allowed); ``exclude`` ``(N,)`` bool: caller's exclusions; ``flash`` /
    ``jumps`` switch the detectors; ``log_values``: ``values`` are power-like (linear
    intensity, multiplicative noise), so the ROI-based flash and destruction tests work
    on their logarithm (panel means are grey levels, already logarithmic). Returns ``name -> (N,) bool``; a frame is excluded
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
        window, max_len, dwin, pwin = _flash_window(times_s)
        use_log = panel_means is None and log_values and _mostly_positive(sig)
        f = detect_flash(sig, window=window, max_len=max_len, log_scale=use_log,
                         min_rel_rise=0.25 if panel_means is None else PANEL_MIN_REL_RISE)
        d = detect_destruction(sig, f, window=dwin, post_window=pwin, log_scale=use_log)
    if jumps:
        xj = np.where(empty | user | f | d, np.nan, x)
        j = detect_jumps(xj)
    return {"empty_mask": empty, "user": user, "flash": f, "destruction": d, "jump": j}
