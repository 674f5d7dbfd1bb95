"""Generate phantom exams: clip + ground truth, streamed frame by frame.

``generate_phantom(out_dir, n, config)`` writes ``out_dir/P001/exam1.mp4`` and
``out_dir/P001/exam1.truth/`` for every patient, plus ``out_dir/phantom.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ceuspipe.fsutil import atomic_dir, atomic_write_text
from ceuspipe.synth.anatomy import LesionShape, RespiratoryMotion
from ceuspipe.synth.bolus import draw_curves
from ceuspipe.synth.config import BREATHING, PhantomConfig, patient_id, patient_seed
from ceuspipe.synth.out_of_plane import OtherPlane, draw_episodes, frames_in_episodes, in_episode
from ceuspipe.synth.replenishment import destruction_times, draw_refills, regional_enhancement
from ceuspipe.synth.screen import (DEFAULT_SKIN, ScreenSkin, TimerOverlay, gold_lut, make_geometry,
                                   panel_footprint, render_static)
from ceuspipe.synth.speckle import SpeckleGenerator, log_compress
from ceuspipe.synth.tissue import render_tissue, warp
from ceuspipe.synth.truth import (CEUS_MASK_VIDEO, MOTION_CSV, TRUTH_FORMAT, TRUTH_JSON, US_MASK_VIDEO,
                                  geometry_side, truth_dir_for, truth_motion_csv, truth_out_of_plane,
                                  truth_skin)

log = logging.getLogger("ceuspipe")

_FIRST = ["JANE", "JOHN", "MARIA", "WEI", "AHMED", "ANNA", "LUCA", "YUKI", "OLGA", "PEDRO"]
_LAST = ["DOE", "ROE", "SMITH", "NGUYEN", "MUELLER", "ROSSI", "TANAKA", "IVANOVA", "SILVA", "KHAN"]
# libx264 single-threaded: patients are parallelised by --jobs instead.
THREADS = 1
FLASH_POWER = 0.35  # mean linear power of a flash frame (before speckle)


def _header(rng: np.random.Generator, fps: float, dr: float) -> dict:
    d = date(2019, 1, 1) + timedelta(days=int(rng.integers(0, 5 * 365)))
    return {
        "name": f"{rng.choice(_LAST)}^{rng.choice(_FIRST)}",
        "id": f"{int(rng.integers(10**6, 10**7))}",
        "date": d.isoformat(),
        "time": f"{int(rng.integers(7, 18)):02d}:{int(rng.integers(0, 60)):02d}",
        "mi_ceus": round(float(rng.uniform(0.05, 0.12)), 2),
        "mi_bmode": round(float(rng.uniform(0.05, 0.12)), 2),
        "gain_db": int(rng.integers(40, 70)),
        "fps": fps,
        "dynamic_range_db": dr,
    }


def draw_truth(config: PhantomConfig, seed: int, *, patient: str = "P001") -> dict:
    """Draw every per-exam parameter from ``seed`` and return the truth dict
    (without frame times, which :func:`generate_exam` adds)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    side = config.ceus_side if config.ceus_side != "random" else str(rng.choice(["left", "right"]))
    skin = ScreenSkin.parse(config.skin)
    geom = make_geometry(config.width, config.height, side, config.panel_size, skin=skin)
    screen = geom.screen
    s = geom.panel_size
    dr = float(config.dynamic_range_db) if config.dynamic_range_db is not None \
        else round(float(rng.uniform(50.0, 70.0)), 1)
    # the noise floor relative to the display floor: above it, the pre-contrast CEUS
    # panel is faint grey; below it (dark start), black but for rare speckle peaks of a
    # few grey levels (and its pre-contrast grey levels read as the display floor)
    noise_floor = 10.0 ** ((-dr + screen.noise_floor_db(skin)) / 10.0)
    lesion, parenchyma, pattern = draw_curves(rng, noise_floor)
    shape, motion = screen.draw_lesion(rng, geom)
    if config.breathing != "normal":
        motion = motion.scaled(BREATHING[config.breathing])
    echo = str(rng.choice(["hypo", "hyper"]))
    contrast = float(rng.uniform(-10.0, -5.0) if echo == "hypo" else rng.uniform(4.0, 8.0))
    scale = s / 360.0
    bmode = {"echogenicity": echo, "lesion_contrast_db": contrast,
             "background_db": float(rng.uniform(-33.0, -27.0)),
             "psf_sigma_px": [1.3 * scale, 0.8 * scale]}
    ceus_psf = [1.0 * scale, 0.8 * scale]
    flash_frames = sorted({i for tf in config.flash_times_s
                           for i in range(math.ceil(tf * config.fps - 1e-9),
                                          math.ceil((tf + config.flash_duration_s) * config.fps - 1e-9))
                           if i < config.n_frames})
    return {
        "format": TRUTH_FORMAT,
        "patient_id": patient,
        "exam_id": config.exam_id,
        "seed": int(seed),
        "frame_width": config.width,
        "frame_height": config.height,
        "fps": float(config.fps),
        "n_frames": config.n_frames,
        "duration_s": config.n_frames / config.fps,
        "ceus_side": geom.layout.ceus_side,
        "layout": _boxes_dict(geom.layout),
        "dynamic_range_db": dr,
        "colormap": config.colormap,
        "noise_floor_power": noise_floor,
        "curves": {
            "units": "time in s, power linear relative to full scale (1 = grey 255); "
                     "offset = noise floor; ttp_s from clip start; pe includes offset",
            "pattern": pattern,
            "lesion": lesion.to_dict(),
            "parenchyma": parenchyma.to_dict(),
        },
        "lesion_shape": shape.to_dict(),
        "bmode": bmode,
        "ceus_psf_sigma_px": ceus_psf,
        "motion": motion.to_dict(),
        "flash": {"times_s": list(config.flash_times_s), "duration_s": config.flash_duration_s,
                  "frame_indices": flash_frames,
                  "frame_times_s": [i / config.fps for i in flash_frames],
                  "mean_power": FLASH_POWER},
        "screen": {"panel_size": s, "ruler_gap_px": geom.ruler_gap, "depth_cm": geom.depth_cm,
                   "header": _header(rng, float(config.fps), dr)},
        "masks": {"ceus": CEUS_MASK_VIDEO, "us": US_MASK_VIDEO},
        "config": config.to_dict(),
    } | _skin_truth(config, skin, geom) | screen.truth_extras(shape, geom) | _out_of_plane_truth(config, seed) \
      | _protocol_truth(config, seed)


def _boxes_dict(layout) -> dict:
    """The truth's ``layout``: the two boxes and the frame size (the format read by
    :meth:`PanelLayout.from_dict`, without the detection fields)."""
    d = layout.to_dict()
    return {k: d[k] for k in ("ceus", "us", "frame_width", "frame_height")}


def _skin_truth(config: PhantomConfig, skin: ScreenSkin, geom) -> dict:
    """Truth entries of a non-default screen or container (none for the original one,
    whose truth files stay as they were)."""
    out = {}
    if skin != DEFAULT_SKIN:
        out["skin"] = {"name": config.skin, **skin.to_dict(),
                       "separator_x": geom.separator_x}
    if config.container != "mp4":
        out["container"] = {"format": config.container, "ultrasound_regions": config.dicom_regions,
                            "pixel_size_mm": [10.0 * geom.depth_cm / geom.panel_shape[0]] * 2}
    return out


def _out_of_plane_truth(config: PhantomConfig, seed: int) -> dict:
    """The truth's ``out_of_plane`` entry (none without episodes, so earlier truths stay
    as they were): ``episodes_s`` ``[[start, end], ...]`` and the ``frame_indices`` in them."""
    if not config.out_of_plane_episodes:
        return {}
    episodes = draw_episodes(seed, config.out_of_plane_episodes, config.out_of_plane_s, config.duration_s)
    frames = frames_in_episodes([i / config.fps for i in range(config.n_frames)], episodes)
    return {"out_of_plane": {"episodes_s": episodes, "frame_indices": frames}}


def _protocol_truth(config: PhantomConfig, seed: int) -> dict:
    """The truth's ``protocol`` and ``replenishment`` entries under the replenishment protocol
    (none for a bolus, so earlier truths stay as they were): each region's ``A``,
    ``beta_per_s``, ``A_beta`` and infusion, and the destruction times (s)."""
    if config.protocol == "bolus":
        return {}
    destructions = destruction_times(config.flash_times_s, config.flash_duration_s, config.fps, config.n_frames)
    lesion, parenchyma = draw_refills(seed, destructions)
    return {"protocol": config.protocol,
            "replenishment": {
                "units": "A: mean linear power above the noise floor relative to full scale (1 = grey 255); "
                         "beta_per_s: 1/s; A_beta: power/s; times in s from clip start",
                "model": "A*(1 - exp(-beta*(t - t_d))) after each destruction t_d (the first frame after a "
                         "flash); A*(1 - exp(-(t - t0_s)/infusion_tau_s)) before the first; the 'curves' "
                         "entry (a bolus) is not rendered",
                "destructions_s": destructions, "lesion": lesion.to_dict(), "parenchyma": parenchyma.to_dict()}}


def exam_truth(config: PhantomConfig, seed: int, *, patient: str = "P001", clip_name: str = "exam1.mp4") -> dict:
    """The complete truth dict of an exam (as :func:`ceuspipe.synth.truth.load_truth` returns it)."""
    truth = draw_truth(config, seed, patient=patient)
    truth["clip"] = clip_name
    truth["frame_times_s"] = [i / config.fps for i in range(config.n_frames)]
    # Round-trip through JSON: the renderer then uses exactly what load_truth will see,
    # so its masks equal truth_masks_at bit for bit.
    return json.loads(json.dumps(truth))


def _keep_off(shape: LesionShape, motion: RespiratoryMotion, panel: tuple[int, int]) -> np.ndarray:
    """``(h, w) bool``: the lesion and its ROI at rest grown by the breathing amplitude
    and 3 px, where nothing may be drawn over the panels (truth masks and curves stay exact)."""
    keep_off = np.zeros(panel, np.uint8)
    roi, lesion = shape.masks(panel)
    keep_off[(roi | lesion).astype(bool)] = 1
    grow = int(math.ceil(motion.max_px)) + 3
    return cv2.dilate(keep_off, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)


def _marks(shape: LesionShape, motion: RespiratoryMotion, panel: tuple[int, int], fan: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Marks drawn inside the panels of ``panel = (h, w)`` px: ``(ceus_marks, us_marks)``,
    each ``(h, w, 3) uint8`` RGB with 0 where there is no mark. A mode label top left,
    a focus triangle at the right edge, a dotted yellow ROI circle in the quadrant away
    from the lesion (CEUS panel); never on the lesion's region of interest at any
    breathing offset, so the truth curves and masks stay exact; only on the image
    footprint ``fan`` (``(h, w) bool``) when given."""
    out = []
    h, w = panel
    fs = max(0.25, 0.4 * w / 360.0)
    for label in ("CEUS", "B"):
        img = np.zeros((h, w, 3), np.uint8)
        m = max(2, w // 40)
        x_text = m if fan is None else int(0.38 * w)
        cv2.putText(img, label, (x_text, m + int(22 * fs)), cv2.FONT_HERSHEY_SIMPLEX, fs, (240, 240, 90), 1,
                    cv2.LINE_AA)
        fy = int(0.4 * h)
        tri = np.array([[w - 2, fy], [w - 2 - max(3, w // 40), fy - max(2, w // 60)],
                        [w - 2 - max(3, w // 40), fy + max(2, w // 60)]], np.int32)
        if fan is not None:
            tri[:, 0] -= int(0.25 * w)
        cv2.fillPoly(img, [tri], (255, 255, 255))
        if label == "CEUS":
            cx = 0.25 * w if shape.center_x > w / 2 else 0.75 * w
            cy = 0.7 * h if shape.center_y < h / 2 else 0.35 * h
            rad = max(4, int(0.07 * min(h, w)))
            for k in range(0, 360, 20):
                cv2.ellipse(img, (int(cx), int(cy)), (rad, rad), 0, k, k + 10, (250, 220, 40), 1)
        out.append(img)
    keep_off = _keep_off(shape, motion, panel)
    for img in out:
        img[keep_off] = 0
        if fan is not None:
            img[~fan] = 0
    return out[0], out[1]


def _overlay(panel: np.ndarray, marks: np.ndarray) -> None:
    """Paint the non-zero pixels of ``marks`` ``(h, w, 3)`` onto ``panel`` in place."""
    on = marks.any(axis=2)
    panel[on] = marks[on]


def _exam_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(tissue, frame)`` generators of an exam: the tissue maps, then per-frame speckle."""
    ss = np.random.SeedSequence([int(seed), 2])
    tissue_rng, frame_rng = (np.random.default_rng(c) for c in ss.spawn(2))
    return tissue_rng, frame_rng


def ceus_weight_maps(truth: dict) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_s, maps)`` for every frame of an exam, ``maps`` float32 ``(h, w, 2)``
    in CEUS panel pixels: channel 0 the lesion-ROI weight, channel 1 the parenchyma
    weight, moved with the frame's breathing offset (sector and logiq skins: zero
    outside the image footprint; logiq: parenchyma only in ``truth["ceus_territory"]``).

    Frame ``i``'s mean linear power before speckle is ``maps[..., 0] * (L(t) - L.offset)
    + maps[..., 1] * (P(t) - P.offset) + noise_floor_power`` (``L``, ``P`` the lesion and
    parenchyma curves of ``truth["curves"]``; under the replenishment protocol their refill
    curves, :func:`ceuspipe.synth.replenishment.regional_enhancement`), so the true curve of any region is its
    weights' mean times the two curves: the truth for a reference ring that takes in some
    of the soft ROI edge, or a mask that takes in parenchyma. Out of the lesion's plane
    (``truth["out_of_plane"]``) channel 0 is zero and channel 1 holds both weights.
    """
    shape = LesionShape.from_dict(truth["lesion_shape"])
    motion = RespiratoryMotion.from_dict(truth["motion"])
    s = int(truth["screen"]["panel_size"])
    panel = (int(truth["layout"]["ceus"]["h"]), int(truth["layout"]["ceus"]["w"]))
    pad = int(math.ceil(motion.max_px)) + 3
    tissue = render_tissue(_exam_rngs(truth["seed"])[0], shape, s, pad, truth["dynamic_range_db"],
                           truth["bmode"], truth.get("ceus_territory"))
    fan = panel_footprint(truth_skin(truth), panel)
    episodes = truth_out_of_plane(truth)
    for t in truth["frame_times_s"]:
        maps = warp(tissue.ceus_maps, pad, panel, *motion.offset(t))
        if in_episode(t, episodes):
            _lesion_out_of_plane(maps)
        if fan is not None:
            maps[~fan] = 0.0
        yield float(t), maps


def _lesion_out_of_plane(maps: np.ndarray) -> None:
    """Weights ``(h, w, 2)`` of a frame out of the lesion's plane, in place: parenchyma
    where the lesion's region of interest was, no lesion."""
    maps[..., 1] += maps[..., 0]
    maps[..., 0] = 0.0


def render_exam(truth: dict) -> Iterator[tuple[int, float, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(index, time_s, frame, ceus_roi, bmode_lesion)`` for every frame of an exam.

    ``frame``: ``(H, W, 3) uint8`` RGB screen; masks: ``(h, w) uint8`` 0/1 in panel
    coordinates (empty out of the lesion's plane). Deterministic for a given truth (its
    ``seed``); one frame at a time.
    """
    seed = truth["seed"]
    shape = LesionShape.from_dict(truth["lesion_shape"])
    motion = RespiratoryMotion.from_dict(truth["motion"])
    lesion, parenchyma = regional_enhancement(truth)  # enhancement above the noise floor
    skin = truth_skin(truth)
    geom = make_geometry(truth["frame_width"], truth["frame_height"], geometry_side(truth),
                         truth["screen"]["panel_size"], skin=skin)
    lay, s, dr = geom.layout, geom.panel_size, truth["dynamic_range_db"]
    panel = geom.panel_shape  # (h, w); (s, s) but on the logiq screen
    tissue_rng, frame_rng = _exam_rngs(seed)
    pad = int(math.ceil(motion.max_px)) + 3
    tissue = render_tissue(tissue_rng, shape, s, pad, dr, truth["bmode"], truth.get("ceus_territory"))
    speckle = SpeckleGenerator(*truth["ceus_psf_sigma_px"])
    header_lines, footer = geom.screen.header_text(truth["screen"]["header"], dr, geom)
    static = render_static(geom, header_lines, footer, seed=seed)
    timer = TimerOverlay(geom)
    lut = gold_lut() if truth["colormap"] == "gold" else None
    offset = np.float32(truth["noise_floor_power"])
    flash = set(truth["flash"]["frame_indices"])
    cb, ub = lay.ceus, lay.us
    fan = panel_footprint(skin, panel)
    marks = _marks(shape, motion, panel, fan) if skin.marks else None
    deco_at = deco_rgb = None
    overlay = geom.screen.overlay(geom)
    if overlay is not None:  # what the screen paints inside the panels over every frame, off the lesion
        inside = np.zeros(overlay.shape[:2], bool)
        for b in (cb, ub):
            inside[b.y: b.y + b.h, b.x: b.x + b.w] = ~_keep_off(shape, motion, panel)
        deco_at = np.nonzero(inside & overlay.any(axis=2))
        deco_rgb = overlay[deco_at]
    episodes = truth_out_of_plane(truth)
    other = OtherPlane(seed, panel, truth["bmode"], dr, s / 360.0) if episodes else None
    frozen = None
    if skin.frozen_bmode:
        fdx, fdy = motion.offset(0.0)
        frozen = np.rint(warp(tissue.bmode_grey, pad, panel, fdx, fdy)).astype(np.uint8)
        frozen_lesion = shape.masks((ub.h, ub.w), fdx, fdy)[1]
        if fan is not None:
            frozen[~fan] = 0
    for i, t in enumerate(truth["frame_times_s"]):
        dx, dy = motion.offset(t)
        maps = warp(tissue.ceus_maps, pad, panel, dx, dy)
        away = other is not None and in_episode(t, episodes)
        if away:
            _lesion_out_of_plane(maps)
        if i in flash:
            mean = np.float32(FLASH_POWER) * (0.5 + maps[..., 0] + maps[..., 1])
        else:
            mean = maps[..., 0] * np.float32(lesion(t))
            mean += maps[..., 1] * np.float32(parenchyma(t))
            mean += offset
        ceus_grey = log_compress(mean * speckle.draw(frame_rng, panel), dr)
        if fan is not None:
            ceus_grey[~fan] = 0
        frame = static.copy()
        if lut is not None:
            frame[cb.y: cb.y + cb.h, cb.x: cb.x + cb.w] = lut[ceus_grey]
        else:
            frame[cb.y: cb.y + cb.h, cb.x: cb.x + cb.w] = ceus_grey[..., None]
        if frozen is not None:
            bm8 = frozen
        else:
            bm8 = other.bmode(dx, dy) if away else np.rint(warp(tissue.bmode_grey, pad, panel, dx, dy)).astype(np.uint8)
            if fan is not None:
                bm8[~fan] = 0
        frame[ub.y: ub.y + ub.h, ub.x: ub.x + ub.w] = bm8[..., None]
        if marks is not None:
            _overlay(frame[cb.y: cb.y + cb.h, cb.x: cb.x + cb.w], marks[0])
            _overlay(frame[ub.y: ub.y + ub.h, ub.x: ub.x + ub.w], marks[1])
        if deco_at is not None:
            frame[deco_at] = deco_rgb
        timer.apply(frame, t)
        roi, les = shape.masks((cb.h, cb.w), dx, dy)
        if (ub.h, ub.w) != (cb.h, cb.w):
            les = shape.masks((ub.h, ub.w), dx, dy)[1]
        if frozen is not None:
            les = frozen_lesion
        if away:
            roi, les = np.zeros_like(roi), np.zeros_like(les)
        yield i, t, frame, roi, les


def generate_exam(path: str | os.PathLike, truth_dir: str | os.PathLike | None, config: PhantomConfig,
                  seed: int, *, patient: str = "P001", progress: bool = False) -> dict:
    """Write one exam clip to ``path`` (H.264 MP4, or a multi-frame US DICOM cine when
    ``config.container`` says so) and its ground truth to ``truth_dir``
    (default ``<path stem>.truth`` beside the clip). Returns the truth dict.

    Frames are ``config.width x config.height`` RGB shown at ``i / config.fps`` s;
    nothing is held in memory beyond one frame and the frozen tissue maps (and,
    for JPEG DICOM, the compressed frames).
    """
    from tqdm import tqdm

    from ceuspipe.video.writer import VideoWriter

    path = Path(path)
    truth_dir = Path(truth_dir) if truth_dir is not None else truth_dir_for(path)
    truth = exam_truth(config, seed, patient=patient, clip_name=path.name)
    lay = truth["layout"]
    cb, ub = lay["ceus"], lay["us"]
    with atomic_dir(truth_dir, overwrite=True) as tmp, \
            _clip_writer(path, config, truth) as video, \
            VideoWriter(tmp / CEUS_MASK_VIDEO, cb["w"], cb["h"], fps=config.fps, codec="ffv1",
                        pix_fmt="gray") as ceus_mv, \
            VideoWriter(tmp / US_MASK_VIDEO, ub["w"], ub["h"], fps=config.fps, codec="ffv1",
                        pix_fmt="gray") as us_mv:
        for _, t, frame, roi, les in tqdm(render_exam(truth), total=config.n_frames, disable=not progress,
                                          desc=patient, unit="frame", leave=False):
            video.write(frame, t)
            ceus_mv.write(roi * np.uint8(255), t)
            us_mv.write(les * np.uint8(255), t)
        atomic_write_text(tmp / TRUTH_JSON, json.dumps(truth, indent=1) + "\n")
        atomic_write_text(tmp / MOTION_CSV, truth_motion_csv(truth))
    log.debug("wrote %s (%d frames)", path, config.n_frames)
    return truth


class _DicomClip:
    """:class:`~ceuspipe.synth.dicom_cine.DicomCineWriter` with the ``write(frame, t)``
    of a video writer (DICOM frame times come from FrameTime)."""

    def __init__(self, path: Path, config: PhantomConfig, truth: dict):
        from ceuspipe.synth.dicom_cine import DicomCineWriter
        from ceuspipe.video.panels import Box

        regions = None
        if config.dicom_regions:
            cm = truth["container"]["pixel_size_mm"][0] / 10.0
            regions = [(Box(**truth["layout"][k]), cm) for k in ("ceus", "us")]
            regions.sort(key=lambda r: (r[0].y, r[0].x))
        hdr = truth["screen"]["header"]
        self._writer = DicomCineWriter(path, config.width, config.height, config.n_frames, fps=config.fps,
                                       encoding="rgb" if config.container == "dicom-rgb" else "jpeg",
                                       regions=regions, patient={"name": hdr["name"], "id": hdr["id"],
                                                                 "date": hdr["date"]})

    def write(self, frame: np.ndarray, time_s: float) -> None:
        self._writer.write(frame)

    def __enter__(self) -> "_DicomClip":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.__exit__(exc_type, exc, tb)


def _clip_writer(path: Path, config: PhantomConfig, truth: dict):
    """The writer of the exam clip: libx264 MP4 or a DICOM cine."""
    from ceuspipe.video.writer import VideoWriter

    if config.container == "mp4":
        opts = {"crf": str(config.crf), "preset": config.preset}
        return VideoWriter(path, config.width, config.height, fps=config.fps, codec="libx264", threads=THREADS,
                           options=opts)
    return _DicomClip(path, config, truth)


def exam_paths(out_dir: str | os.PathLike, index: int, config: PhantomConfig) -> tuple[Path, Path]:
    """``(clip, truth_dir)`` of patient ``index`` (0-based) under ``out_dir``."""
    clip = Path(out_dir) / patient_id(index) / f"{config.exam_id}{config.clip_suffix}"
    return clip, truth_dir_for(clip)


def _exam_done(clip: Path, truth_dir: Path) -> bool:
    return clip.is_file() and (truth_dir / TRUTH_JSON).is_file()


def _one(out_dir: str, index: int, config: PhantomConfig, global_seed: int, overwrite: bool) -> str:
    clip, tdir = exam_paths(out_dir, index, config)
    if not overwrite and _exam_done(clip, tdir):
        log.info("%s exists, kept", clip)
        return str(clip)
    generate_exam(clip, tdir, config, patient_seed(global_seed, index), patient=patient_id(index))
    return str(clip)


def generate_phantom(out_dir: str | os.PathLike, n_patients: int, config: PhantomConfig, *,
                     seed: int = 0, jobs: int = 1, overwrite: bool = False,
                     progress: bool = False) -> list[Path]:
    """Generate ``n_patients`` exams under ``out_dir``; returns the clip paths in patient order.

    Patient ``i`` uses :func:`patient_seed` ``(seed, i)``, so its exam does not depend
    on ``jobs`` or ``n_patients``. Complete exams already present are kept unless
    ``overwrite``. ``out_dir/phantom.json`` lists the exams.
    """
    from tqdm import tqdm

    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = [(str(out), i, config, int(seed), overwrite) for i in range(n_patients)]
    if jobs == 1 or n_patients == 1:
        clips = [_one(*a) for a in tqdm(args, disable=not progress, desc="synth", unit="exam")]
    else:
        from joblib import Parallel, delayed

        gen = Parallel(n_jobs=jobs, return_as="generator")(delayed(_one)(*a) for a in args)
        clips = list(tqdm(gen, total=n_patients, disable=not progress, desc="synth", unit="exam"))
    manifest = {
        "format": "ceuspipe-synth-phantom/1",
        "seed": int(seed),
        "config": config.to_dict(),
        "exams": [{"patient_id": patient_id(i), "exam_id": config.exam_id,
                   "clip": os.path.relpath(c, out), "truth": os.path.relpath(truth_dir_for(c), out),
                   "seed": patient_seed(seed, i)} for i, c in enumerate(clips)],
    }
    atomic_write_text(out / "phantom.json", json.dumps(manifest, indent=1) + "\n")
    return [Path(c) for c in clips]
