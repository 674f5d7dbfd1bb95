"""Out-of-plane episodes: a few frames where the probe leaves the lesion's plane.

During an episode the B-mode panel shows tissue of another plane (a fresh speckle
pattern every frame, no lesion), the CEUS panel shows parenchyma where the lesion
was, and the truth masks are empty. Episodes are drawn from their own random
stream, so every frame outside them is the same as without episodes.
"""

from __future__ import annotations

import numpy as np

from ceuspipe.synth.speckle import SpeckleGenerator, log_compress
from ceuspipe.synth.tissue import smooth_field, warp

#: no episode starts before this time (s): the clip opens in the lesion's plane
FIRST_START_S = 1.0
#: at least this long (s) in plane between two episodes
GAP_S = 1.0


def episodes_fit(duration_s: float, n: int, episode_s: float) -> bool:
    """Whether ``n`` episodes of ``episode_s`` s fit in a clip of ``duration_s`` s
    (after :data:`FIRST_START_S`, :data:`GAP_S` apart)."""
    return n == 0 or FIRST_START_S + n * episode_s + (n - 1) * GAP_S <= duration_s


def draw_episodes(seed: int, n: int, episode_s: float, duration_s: float) -> list[list[float]]:
    """``n`` non-overlapping ``[start_s, end_s]`` intervals in time order, drawn from
    ``seed``'s own stream (``episodes_fit`` must hold)."""
    if n == 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3]))
    slack = duration_s - FIRST_START_S - n * episode_s - (n - 1) * GAP_S
    lead = np.sort(rng.uniform(0.0, max(slack, 0.0), n))
    starts = [FIRST_START_S + float(lead[k]) + k * (episode_s + GAP_S) for k in range(n)]
    return [[s, s + episode_s] for s in starts]


def in_episode(time_s: float, episodes: list) -> bool:
    """Whether ``time_s`` lies in one of the ``[start, end)`` intervals."""
    return any(a <= time_s < b for a, b in episodes)


def frames_in_episodes(times_s, episodes: list) -> list[int]:
    """Indices of the frame times inside an episode."""
    return [i for i, t in enumerate(times_s) if in_episode(t, episodes)]


class OtherPlane:
    """B-mode frames of tissue outside the lesion's plane: the background echo level
    of the exam (``bmode["background_db"]``, the same depth trend) with its own
    smooth heterogeneity, and a fresh speckle pattern every frame."""

    def __init__(self, seed: int, panel: tuple[int, int], bmode: dict, dynamic_range_db: float, scale: float):
        self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4]))
        h, w = panel
        depth = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / np.float32(h)
        db = (np.float32(bmode["background_db"]) + 2.5 * (0.5 - depth)
              + 1.5 * smooth_field(self._rng, (h, w), 18 * scale))
        self._power = np.power(np.float32(10.0), db / np.float32(10.0)).astype(np.float32)
        self._speckle = SpeckleGenerator(*bmode["psf_sigma_px"])
        self._dr = float(dynamic_range_db)
        self._shape = (h, w)

    def bmode(self, dx: float, dy: float) -> np.ndarray:
        """The next out-of-plane B-mode panel, ``(h, w) uint8``, resampled (bilinear) at
        the fractional part of the frame's breathing shift ``(dx, dy)`` px like the
        in-plane frames, so its speckle looks the same."""
        grey = log_compress(self._power * self._speckle.draw(self._rng, self._shape), self._dr, rounded=False)
        return np.rint(warp(grey, 0, self._shape, dx % 1.0, dy % 1.0)).astype(np.uint8)
