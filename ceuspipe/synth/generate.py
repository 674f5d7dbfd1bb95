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

import numpy as np

from ceuspipe.fsutil import atomic_dir, atomic_write_text
from ceuspipe.synth.anatomy import LesionShape, RespiratoryMotion, draw_lesion, draw_motion
from ceuspipe.synth.bolus import LognormalBolus, draw_curves
from ceuspipe.synth.config import PhantomConfig, patient_id, patient_seed
from ceuspipe.synth.screen import TimerOverlay, gold_lut, make_geometry, render_static
from ceuspipe.synth.speckle import SpeckleGenerator, log_compress
from ceuspipe.synth.tissue import render_tissue, warp
from ceuspipe.synth.truth import (CEUS_MASK_VIDEO, TRUTH_FORMAT, TRUTH_JSON, US_MASK_VIDEO,
                                  truth_dir_for)

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
    geom = make_geometry(config.width, config.height, side, config.panel_size)
    s = geom.panel_size
    dr = float(config.dynamic_range_db) if config.dynamic_range_db is not None \
        else round(float(rng.uniform(50.0, 70.0)), 1)
    noise_floor = 10.0 ** ((-dr + 3.0) / 10.0)
    lesion, parenchyma, pattern = draw_curves(rng, noise_floor)
    shape = draw_lesion(rng, s)
    motion = draw_motion(rng, s)
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
        "ceus_side": side,
        "layout": geom.layout.to_dict(),
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
    }


def exam_truth(config: PhantomConfig, seed: int, *, patient: str = "P001", clip_name: str = "exam1.mp4") -> dict:
    """The complete truth dict of an exam (as :func:`ceuspipe.synth.truth.load_truth` returns it)."""
    truth = draw_truth(config, seed, patient=patient)
    truth["clip"] = clip_name
    truth["frame_times_s"] = [i / config.fps for i in range(config.n_frames)]
    # Round-trip through JSON: the renderer then uses exactly what load_truth will see,
    # so its masks equal truth_masks_at bit for bit.
    return json.loads(json.dumps(truth))


def render_exam(truth: dict) -> Iterator[tuple[int, float, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(index, time_s, frame, ceus_roi, bmode_lesion)`` for every frame of an exam.

    ``frame``: ``(H, W, 3) uint8`` RGB screen; masks: ``(h, w) uint8`` 0/1 in panel
    coordinates. Deterministic for a given truth (its ``seed``); one frame at a time.
    """
    seed = truth["seed"]
    shape = LesionShape.from_dict(truth["lesion_shape"])
    motion = RespiratoryMotion.from_dict(truth["motion"])
    lesion = LognormalBolus.from_dict(truth["curves"]["lesion"])
    parenchyma = LognormalBolus.from_dict(truth["curves"]["parenchyma"])
    geom = make_geometry(truth["frame_width"], truth["frame_height"], truth["ceus_side"],
                         truth["screen"]["panel_size"])
    lay, s, dr = geom.layout, geom.panel_size, truth["dynamic_range_db"]
    ss = np.random.SeedSequence([int(seed), 2])
    tissue_rng, frame_rng = (np.random.default_rng(c) for c in ss.spawn(2))
    pad = int(math.ceil(motion.max_px)) + 3
    tissue = render_tissue(tissue_rng, shape, s, pad, dr, truth["bmode"])
    speckle = SpeckleGenerator(*truth["ceus_psf_sigma_px"])
    hdr = truth["screen"]["header"]
    static = render_static(
        geom,
        (f"{hdr['name']}  ID {hdr['id']}  {hdr['date']} {hdr['time']}",
         f"CEUS MI {hdr['mi_ceus']:.2f}  B MI {hdr['mi_bmode']:.2f}  {hdr['fps']:g} Hz"),
        f"C5-1  G {hdr['gain_db']}  DR {dr:g}")
    timer = TimerOverlay(geom)
    lut = gold_lut() if truth["colormap"] == "gold" else None
    offset = np.float32(truth["noise_floor_power"])
    flash = set(truth["flash"]["frame_indices"])
    cb, ub = lay.ceus, lay.us
    for i, t in enumerate(truth["frame_times_s"]):
        dx, dy = motion.offset(t)
        maps = warp(tissue.ceus_maps, pad, s, dx, dy)
        if i in flash:
            mean = np.float32(FLASH_POWER) * (0.5 + maps[..., 0] + maps[..., 1])
        else:
            mean = maps[..., 0] * np.float32(lesion(t) - lesion.offset)
            mean += maps[..., 1] * np.float32(parenchyma(t) - parenchyma.offset)
            mean += offset
        ceus_grey = log_compress(mean * speckle.draw(frame_rng, (s, s)), dr)
        frame = static.copy()
        if lut is not None:
            frame[cb.y: cb.y + cb.h, cb.x: cb.x + cb.w] = lut[ceus_grey]
        else:
            frame[cb.y: cb.y + cb.h, cb.x: cb.x + cb.w] = ceus_grey[..., None]
        bm = warp(tissue.bmode_grey, pad, s, dx, dy)
        frame[ub.y: ub.y + ub.h, ub.x: ub.x + ub.w] = np.rint(bm).astype(np.uint8)[..., None]
        timer.apply(frame, t)
        roi, les = shape.masks((cb.h, cb.w), dx, dy)
        if (ub.h, ub.w) != (cb.h, cb.w):
            les = shape.masks((ub.h, ub.w), dx, dy)[1]
        yield i, t, frame, roi, les


def generate_exam(path: str | os.PathLike, truth_dir: str | os.PathLike | None, config: PhantomConfig,
                  seed: int, *, patient: str = "P001", progress: bool = False) -> dict:
    """Write one exam clip to ``path`` (H.264 MP4) and its ground truth to ``truth_dir``
    (default ``<path stem>.truth`` beside the clip). Returns the truth dict.

    Frames are ``config.width x config.height`` RGB shown at ``i / config.fps`` s;
    nothing is held in memory beyond one frame and the frozen tissue maps.
    """
    from tqdm import tqdm

    from ceuspipe.video.writer import VideoWriter

    path = Path(path)
    truth_dir = Path(truth_dir) if truth_dir is not None else truth_dir_for(path)
    truth = exam_truth(config, seed, patient=patient, clip_name=path.name)
    lay = truth["layout"]
    cb, ub = lay["ceus"], lay["us"]
    opts = {"crf": str(config.crf), "preset": config.preset}
    with atomic_dir(truth_dir, overwrite=True) as tmp, \
            VideoWriter(path, config.width, config.height, fps=config.fps, codec="libx264", threads=THREADS,
                        options=opts) as video, \
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
    log.debug("wrote %s (%d frames)", path, config.n_frames)
    return truth


def exam_paths(out_dir: str | os.PathLike, index: int, config: PhantomConfig) -> tuple[Path, Path]:
    """``(clip, truth_dir)`` of patient ``index`` (0-based) under ``out_dir``."""
    clip = Path(out_dir) / patient_id(index) / f"{config.exam_id}.mp4"
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
