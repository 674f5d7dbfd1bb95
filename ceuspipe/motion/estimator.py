"""Streaming in-plane motion of a CEUS clip from its B-mode panel.

Feed :meth:`MotionEstimator.add` one frame at a time (the B-mode panel's grey levels:
tissue speckle is stable there, contrast speckle is not); each call returns the
frame's :class:`FrameMotion` at once.

Reference: the first frame with texture is the anchor: displacements are measured in
its coordinates. Over the next ``reference_s`` seconds the frames that match it
(score at or above the threshold) are aligned to it and their temporal median becomes
the reference for the rest of the clip (a clip starts with the probe on the lesion).
Memory is bounded: at most ``reference_frames`` working images during those seconds,
then only the reference's spectrum, texture and weights.

Motion model: a translation per frame. The phantom's breathing is a whole-image
shift, so an affine or deformable model has nothing to gain there; it is left out.
"""

from __future__ import annotations

import math

import numpy as np

from ceuspipe.motion.frame import FrameMotion
from ceuspipe.motion.phase import PhaseCorrelator
from ceuspipe.motion.prepare import WORK_PX, downsample, hann, image_area, speckle, work_shape
from ceuspipe.motion.reference import ReferenceBuilder
from ceuspipe.motion.score import weighted_ncc
from ceuspipe.motion.warp import shift_image

#: a frame whose aligned speckle correlates less than this with the reference's is out
#: of plane (``used`` False). Chosen on the phantom (H.264 clips; default, sector,
#: logiq and stacked screens; normal and large breathing; 2 seeds each, 30 s at
#: 12 fps): in-plane frames scored 0.81 or more (0.74 on 144 px panels, about 0.6
#: with grey noise of SD 20 added), out-of-plane frames 0.10 or less; 0.5 sits in
#: the gap, nearer the out-of-plane side to allow for noisier real B-mode.
SCORE_THRESHOLD = 0.5
#: seconds after the anchor whose matching frames make the reference median
REFERENCE_S = 2.0
#: most frames held for the reference median (spread over ``REFERENCE_S``)
REFERENCE_FRAMES = 24
#: a working image whose grey levels vary less than this (standard deviation) has no
#: texture to align (a blank frame); it cannot be the anchor and scores 0
MIN_TEXTURE_GREY = 2.0


class MotionEstimator:
    """Per-frame translation of the B-mode panel against an automatic reference.

    ``reference_s``: seconds after the anchor frame whose frames make the reference
    (0: the anchor alone); ``reference_frames``: most frames held for it;
    ``score_threshold``: below it a frame is out of plane; ``work_px``: longer side
    (px) of the downsampled image the estimate is made on.
    """

    def __init__(self, *, reference_s: float = REFERENCE_S, reference_frames: int = REFERENCE_FRAMES,
                 score_threshold: float = SCORE_THRESHOLD, work_px: int = WORK_PX):
        if not (math.isfinite(reference_s) and reference_s >= 0):
            raise ValueError(f"reference_s must be a number of seconds >= 0, got {reference_s!r}")
        if isinstance(reference_frames, bool) or not isinstance(reference_frames, int) or reference_frames < 1:
            raise ValueError(f"reference_frames must be an integer >= 1, got {reference_frames!r}")
        if not (math.isfinite(score_threshold) and -1.0 <= score_threshold <= 1.0):
            raise ValueError(f"score_threshold must be in [-1, 1], got {score_threshold!r}")
        if isinstance(work_px, bool) or not isinstance(work_px, int) or work_px < 16:
            raise ValueError(f"work_px must be an integer >= 16, got {work_px!r}")
        self.reference_s = float(reference_s)
        self.reference_frames = reference_frames
        self.score_threshold = float(score_threshold)
        self.work_px = work_px
        self._panel: tuple[int, int] | None = None
        self._work: tuple[int, int] = (0, 0)
        self._scale = (1.0, 1.0)
        self._correlator: PhaseCorrelator | None = None
        self._ref_speckle: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self._area: np.ndarray | None = None
        self._builder: ReferenceBuilder | None = None

    def add(self, index: int, time_s: float, us_gray: np.ndarray) -> FrameMotion:
        """Motion of frame ``index`` shown at ``time_s`` s, from its B-mode panel
        ``us_gray`` ``(h, w)`` uint8 (every frame the same size).

        The anchor frame gives ``(0, 0)``, score 1; a blank frame (see
        :data:`MIN_TEXTURE_GREY`) score 0, not used. Raises ``ValueError`` for an
        empty or non-2-D panel, a size other than the first frame's, or a time that
        is not finite.
        """
        time_s = float(time_s)
        work = self._working(index, time_s, us_gray)
        textured = float(work.std()) >= MIN_TEXTURE_GREY
        if self._correlator is None:
            if not textured:
                return FrameMotion(int(index), time_s, 0.0, 0.0, 0.0, False)
            self._set_reference(work)
            if self.reference_s > 0:
                self._builder = ReferenceBuilder(time_s, self.reference_s, self.reference_frames)
                self._builder.add(work, time_s)
            return FrameMotion(int(index), time_s, 0.0, 0.0, 1.0, True)
        if self._builder is not None and self._builder.complete(time_s):
            self._set_reference(self._builder.median())
            self._builder = None
        dx, dy = self._correlator(work)
        aligned = shift_image(work, -dx, -dy, border="replicate")
        score = self._score(aligned, dx, dy) if textured else 0.0
        used = score >= self.score_threshold
        if used and self._builder is not None and self._builder.wants(time_s):
            self._builder.add(aligned, time_s)
        return FrameMotion(int(index), time_s, dx * self._scale[0], dy * self._scale[1], score, used)

    def _working(self, index: int, time_s: float, us_gray: np.ndarray) -> np.ndarray:
        """The checked panel as a working image ``(h, w)`` float32."""
        gray = np.asarray(us_gray)
        if gray.ndim != 2 or gray.size == 0:
            raise ValueError(f"frame {index}: the B-mode panel must be a non-empty (h, w) grey array, "
                             f"got shape {gray.shape}")
        if not (np.issubdtype(gray.dtype, np.integer) or np.issubdtype(gray.dtype, np.floating)) \
                or gray.dtype == bool:
            raise ValueError(f"frame {index}: the B-mode panel must hold grey levels (uint8), got {gray.dtype}")
        if not math.isfinite(time_s):
            raise ValueError(f"frame {index}: time must be finite, got {time_s}")
        if self._panel is None:
            self._panel = gray.shape
            self._work = work_shape(gray.shape, self.work_px)
            self._scale = (gray.shape[1] / self._work[1], gray.shape[0] / self._work[0])
        elif gray.shape != self._panel:
            raise ValueError(f"frame {index}: the B-mode panel is {gray.shape[1]}x{gray.shape[0]} px, "
                             f"the first frame's was {self._panel[1]}x{self._panel[0]}")
        if gray.dtype not in (np.uint8, np.float32):
            gray = gray.astype(np.float32)
        return downsample(gray, self._work)

    def _set_reference(self, reference: np.ndarray) -> None:
        self._area = image_area(reference)
        self._window = hann(reference.shape) * self._area
        self._correlator = PhaseCorrelator(reference, self._window)
        self._ref_speckle = speckle(reference)

    def _score(self, aligned: np.ndarray, dx: float, dy: float) -> float:
        """Similarity of the ``aligned`` working image to the reference, over the part
        of the window where both show an image (the screen's fixed image area moves
        by ``(-dx, -dy)`` working px with the alignment)."""
        weight = self._window * shift_image(self._area, -dx, -dy)
        return weighted_ncc(speckle(aligned), self._ref_speckle, weight)

    @property
    def nbytes(self) -> int:
        """Bytes of image data the estimator holds (bounded: see the module doc)."""
        held = [self._ref_speckle, self._window, self._area]
        total = sum(a.nbytes for a in held if a is not None)
        if self._correlator is not None:
            total += self._correlator.nbytes
        if self._builder is not None:
            total += self._builder.nbytes
        return total
