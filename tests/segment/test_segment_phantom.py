"""segment-video acceptance on phantom clips with a small model trained in the test.

A tiny CEUSegNet (width 0.125, 64x64 inputs) is trained on frames of 60 phantom
patients, then ``segment_video`` runs on held-out phantom clips (other seeds) and
its outputs are compared with the phantom's ground truth: mask Dice, recovered
TTP/PE of the known lesion curve (and the bias of grey-level averaging), flash
frames flagged and excluded, wash-out marked extrapolated on a truncated clip.
The clips run at default settings, so on the CPU with the checked int8 model
(calibrated on the first of them); the int8 tests compare them with an fp32 run.

Everything is module-scoped: training data (~3 s), training (16 epochs, 40-55 s on
one core of the shared 2-core machine; the whole file ~55-75 s), and three held-out
clips (under 1 s each to generate, 1-6 s each to segment).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ceuspipe.segment import SegmentConfig, segment_video
from ceuspipe.synth import PhantomConfig, generate_exam, truth_masks_at
from ceuspipe.synth.generate import exam_truth, render_exam
from ceuspipe.tic import analyse_curve, read_tic_csv
from ceuspipe.tic.parameters import perfusion_parameters
from ceuspipe.video.panels import PanelLayout, crop
from ceuspipe.video.reader import iter_frames

WIDTH, HEIGHT = 320, 180          # small screens: 144 x 144 panels
TRAIN_SEEDS = range(1000, 1060)   # 54 training + 6 validation patients
N_VAL = 6
TRAIN_FRAMES = (0, 25, 49)        # frames per patient (1 fps, 50 s): before, during, after the peak
HELD_OUT = 202                    # full (100 s) and truncated clips of this patient
FLASH_SEED = 201                  # the flash clip
FLASH_TIMES_S = (22.0, 44.0)
TIMINGS: dict[str, float] = {}


# --------------------------------------------------------------------------- helpers


def _grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def _write_training_set(root: Path) -> Path:
    """Dataset folder in the build-dataset layout (imagesTr/labelsTr, splits.json) made
    directly from rendered phantom frames: CEUS crop, US crop, truth CEUS ROI."""
    cfg = PhantomConfig(duration_s=50.0, fps=1.0, width=WIDTH, height=HEIGHT)
    cases: dict[str, list[str]] = {"train": [], "test": []}
    for suffix in ("Tr", "Ts"):
        (root / f"images{suffix}").mkdir(parents=True)
        (root / f"labels{suffix}").mkdir(parents=True)
    for k, seed in enumerate(TRAIN_SEEDS):
        truth = exam_truth(cfg, seed, patient=f"P{k:03d}")
        lay = PanelLayout.from_dict(truth["layout"])
        split, suffix = ("test", "Ts") if k >= len(TRAIN_SEEDS) - N_VAL else ("train", "Tr")
        for i, _, frame, roi, _ in render_exam(truth):
            if i not in TRAIN_FRAMES:
                continue
            case = f"p{k:03d}_{i:03d}"
            cv2.imwrite(str(root / f"images{suffix}" / f"{case}_0000.png"), _grey(crop(frame, lay.ceus)))
            cv2.imwrite(str(root / f"images{suffix}" / f"{case}_0001.png"), _grey(crop(frame, lay.us)))
            cv2.imwrite(str(root / f"labels{suffix}" / f"{case}.png"), roi)
            cases[split].append(case)
    (root / "dataset.json").write_text(json.dumps({
        "name": "phantom", "channel_names": {"0": "ceus", "1": "us"},
        "labels": {"background": 0, "lesion": 1}, "numTraining": len(cases["train"]),
        "numTest": len(cases["test"]), "file_ending": ".png"}))
    (root / "splits.json").write_text(json.dumps(cases))
    return root


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.sum(a & b)) / s


def _truth_parameters(truth: dict, t_last: float) -> dict:
    L = truth["curves"]["lesion"]
    return perfusion_parameters("lognormal", {"t0": L["t0"], "O": L["offset"], "A": L["amplitude"],
                                              "mu": L["mu"], "sigma": L["sigma"]},
                                t_first=0.0, t_last=t_last)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """best.pt of a width-0.125, 64x64 model trained for 16 epochs (lr 3e-3, batch 8)."""
    from ceuspipe.train.config import TrainConfig
    from ceuspipe.train.loop import train

    root = tmp_path_factory.mktemp("phantom_train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core machine are several times slower
    try:
        t = time.perf_counter()
        ds = _write_training_set(root / "dataset")
        TIMINGS["dataset_s"] = time.perf_counter() - t
        t = time.perf_counter()
        result = train(TrainConfig(dataset=str(ds), run_dir=str(root / "run"), width=0.125, size=64,
                                   epochs=16, batch_size=8, lr=3e-3, device="cpu", seed=0))
        TIMINGS["train_s"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    TIMINGS["val_dice"] = result.best_dice
    return root / "run" / "best.pt"


def _segment(root: Path, name: str, ckpt: Path, config: PhantomConfig, seed: int, **kw):
    """Generate and segment one clip at default settings (precision auto: the checked int8)."""
    clip = root / name / "exam1.mp4"
    truth = generate_exam(clip, None, config, seed=seed)
    lay = PanelLayout.from_dict(truth["layout"])
    out = root / f"{name}.out"
    t = time.perf_counter()
    report = segment_video(clip, ckpt, out, SegmentConfig(ceus_box=lay.ceus, us_box=lay.us,
                                                          cache_dir=str(root / "cache"), **kw))
    TIMINGS[f"segment_{name}_s"] = time.perf_counter() - t
    return {"clip": clip, "truth": truth, "out": out, "report": report,
            "tic": json.loads((out / "tic.json").read_text()), "csv": read_tic_csv(out / "tic.csv")}


@pytest.fixture(scope="module")
def clips(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom_clips")
    base = dict(width=WIDTH, height=HEIGHT)
    full = _segment(root, "full", model, PhantomConfig(duration_s=100.0, fps=1.0, **base), HELD_OUT)
    ttp = full["truth"]["curves"]["lesion"]["ttp_s"]
    return {
        "ckpt": model,
        "full": full,
        "truncated": _segment(root, "truncated", model,
                              PhantomConfig(duration_s=round(ttp + 4.0), fps=1.0, **base), HELD_OUT),
        "flash": _segment(root, "flash", model,
                          PhantomConfig(duration_s=60.0, fps=2.0, flash_times_s=FLASH_TIMES_S,
                                        flash_duration_s=0.8, **base), FLASH_SEED),
    }


@pytest.fixture(scope="module")
def fp32_full(clips):
    """The held-out 100 s clip segmented at precision fp32 (the reference for int8 runs)."""
    full = clips["full"]
    lay = PanelLayout.from_dict(full["truth"]["layout"])
    out = full["out"].with_name("full_fp32.out")
    report = segment_video(full["clip"], clips["ckpt"], out, SegmentConfig(
        ceus_box=lay.ceus, us_box=lay.us, cache_dir=str(full["out"].parent / "cache"), precision="fp32"))
    return {"out": out, "report": report, "tic": json.loads((out / "tic.json").read_text()),
            "csv": read_tic_csv(out / "tic.csv"), "truth": full["truth"]}


def _mask_dice(run: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame of mask.mkv: (time_s, Dice vs truth ROI, Dice of an all-foreground mask)."""
    times, dice, full = [], [], []
    for f in iter_frames(run["out"] / "mask.mkv"):
        roi, _ = truth_masks_at(run["truth"], f.time_s)
        times.append(f.time_s)
        dice.append(_dice(f.image[..., 0] > 127, roi))
        full.append(_dice(np.ones_like(roi), roi))
    return np.array(times), np.array(dice), np.array(full)


# --------------------------------------------------------------------------- segmentation


def test_mask_dice_against_phantom_truth(clips):
    """Held-out clips (phantom seeds 202 and 201, never seen in training): mask.mkv
    against the truth CEUS ROI, every frame after contrast arrival (t > t0 of the
    lesion curve, flash frames left out).

    Measured (torch 2.13 CPU): mean Dice 0.89 (seed 202, 100 s) and 0.92 (seed 201,
    60 s); validation Dice of the training run 0.88. The same model on 12 held-out
    seeds (200-211, rendered frames): mean 0.885, worst patient 0.79. Bound: mean
    Dice >= 0.7 per clip, and far above an all-foreground mask (Dice 0.13-0.18) and
    an empty one (Dice 0).
    """
    for name in ("full", "flash"):
        run = clips[name]
        t, dice, full = _mask_dice(run)
        truth = run["truth"]
        assert len(t) == truth["n_frames"]
        flash = np.isin(np.arange(len(t)), truth["flash"]["frame_indices"])
        after = (t > truth["curves"]["lesion"]["t0"]) & ~flash
        assert after.sum() > 30
        mean = float(dice[after].mean())
        TIMINGS[f"dice_{name}"] = mean
        assert mean >= 0.7, f"{name}: mean Dice {mean:.3f}"
        assert mean > float(full[after].mean()) + 0.3  # all-foreground mask
        assert float(np.percentile(dice[after], 10)) > 0.5  # not a few lucky frames


# --------------------------------------------------------------------------- time-intensity curve


def test_ttp_pe_recovered_through_trained_masks_and_grey_averaging_biased(clips):
    """The full held-out clip through the trained model's masks: the linearised TIC
    (tic.json) recovers the phantom's TTP and PE. The same frames analysed on mean grey
    levels (tic.csv's mean_gray column) are biased.

    Measured: TTP -0.14 s, PE +3 % (earlier, less accurate models of this test: TTP
    within 1.7 s, PE within 20 %, as masks that take in parenchyma dilute the peak).
    Bounds: TTP within 2 s, PE within 25 %, mTT within a factor 2. Grey levels:
    arrival (TI) 3.7 s early, mTT x31; bounds 1 s early and x3. The true-mask version
    with tighter bounds is in test_segment.py.
    """
    run = clips["full"]
    truth = run["truth"]
    want = _truth_parameters(truth, run["report"].duration_s)
    L = truth["curves"]["lesion"]
    assert abs(want["TTP"].value - L["ttp_s"]) < 1e-3
    doc = run["tic"]
    assert doc["success"], doc["reason"]
    P = doc["parameters"]
    ttp_err = P["TTP"]["value"] - want["TTP"].value
    pe_rel = P["PE"]["value"] / want["PE"].value - 1.0
    TIMINGS.update(ttp_err_s=ttp_err, pe_rel_err=pe_rel)
    assert P["TTP"]["unit"] == "s" and abs(ttp_err) < 2.0
    assert abs(pe_rel) < 0.25

    csv = run["csv"]
    grey = analyse_curve(csv["time_s"], csv["mean_gray"], panel_means=csv["panel_mean"],
                         frame_index=csv["frame_index"], quantity="mean_gray")
    assert grey.success, grey.reason
    # Log-compressed grey levels: arrival early and transit times many times too long.
    TIMINGS.update(grey_ti_err_s=grey.value("TI") - want["TI"].value,
                   grey_mtt_ratio=grey.value("mTT") / want["mTT"].value)
    assert grey.value("TI") < want["TI"].value - 1.0
    assert grey.value("mTT") > 3 * want["mTT"].value
    lin_mtt = P["mTT"]["value"] / want["mTT"].value
    assert 0.5 < lin_mtt < 2.0


def test_flash_frames_flagged_and_excluded(clips):
    """Two flashes (0.8 s, two frames at 2 fps each) on the held-out flash clip: tic.csv
    flags exactly the phantom's flash frames, excludes them from the fit, flags no
    destruction, and TTP is still recovered (measured error -0.19 s; bound 2 s)."""
    run = clips["flash"]
    truth = run["truth"]
    want_idx = truth["flash"]["frame_indices"]
    assert len(want_idx) == 4
    csv = run["csv"]
    flagged = csv["frame_index"][csv["flash"] == 1].tolist()
    assert flagged == want_idx
    np.testing.assert_allclose(csv["time_s"][csv["flash"] == 1], truth["flash"]["frame_times_s"], atol=1e-3)
    assert np.all(csv["excluded"][csv["flash"] == 1] == 1)
    assert not csv["destruction"].any()
    doc = run["tic"]
    assert doc["flags"]["flash"] == want_idx
    assert doc["success"], doc["reason"]
    assert doc["n_used"] <= doc["n_frames"] - len(want_idx)
    # the flash frames are visibly off the fitted curve that ignored them
    i = csv["flash"] == 1
    assert np.all(csv["mean_linear"][i] > 2 * csv["fitted"][i])
    want = _truth_parameters(truth, run["report"].duration_s)
    TIMINGS["flash_ttp_err_s"] = doc["parameters"]["TTP"]["value"] - want["TTP"].value
    assert abs(TIMINGS["flash_ttp_err_s"]) < 2.0


WASHOUT = ("TO", "FT", "WoR", "WoAUC", "WiWoAUC", "mTT")


def test_truncated_washout_flagged_extrapolated(clips):
    """The same patient cut 4 s after its peak: tic.json marks every wash-out parameter
    extrapolated (the fitted curve's wash-out end lies after the last frame), while the
    wash-in parameters are not; on the 100 s clip (TO ~73 s) nothing is extrapolated."""
    short, full = clips["truncated"]["tic"], clips["full"]["tic"]
    assert short["success"], short["reason"]
    last = clips["truncated"]["report"].duration_s
    P = short["parameters"]
    assert P["TO"]["value"] > last
    for name in WASHOUT:
        assert P[name]["extrapolated"], name
    for name in ("TTP", "PE", "TI", "RT", "WiR", "WiAUC"):
        assert not P[name]["extrapolated"], name
    Q = full["parameters"]
    assert Q["TO"]["value"] < clips["full"]["report"].duration_s
    assert not any(Q[name]["extrapolated"] for name in Q), [n for n in Q if Q[n]["extrapolated"]]


def test_int8_model_agrees_with_fp32_on_held_out_clip(model, clips, fp32_full, tmp_path):
    """The trained model exported as int8 (calibrated on its training split, checked on
    its test split) segments the held-out 100 s clip like the fp32 model: per-frame
    mask Dice between the two mask videos, the truth Dice, and the TIC's TTP and PE.

    Measured: int8 vs fp32 mask Dice mean 0.99, held-out check at export 0.99; TTP
    and PE within 0.1 s and 1 % of fp32. Bounds: mean 0.95, 10th percentile 0.9, truth
    Dice >= 0.7, TTP within 0.5 s and PE within 5 % of the fp32 run's.
    """
    from ceuspipe.segment.quantize import export_int8

    report = export_int8(model, tmp_path / "model.int8.onnx", [model.parent.parent / "dataset"], frames=64)
    TIMINGS["int8_export_dice"] = report.agreement.dice_mean
    assert report.agreement.frames == N_VAL * len(TRAIN_FRAMES)  # the test split
    assert report.calibration_frames == 64
    fp32 = {**clips["full"], **fp32_full}
    lay = PanelLayout.from_dict(fp32["truth"]["layout"])
    out = tmp_path / "int8.out"
    run = segment_video(fp32["clip"], report.path, out, SegmentConfig(ceus_box=lay.ceus, us_box=lay.us))
    assert run.engine == "onnx-int8" and run.frames == fp32["report"].frames
    summary = json.loads((out / "segment.json").read_text())
    assert summary["model_quantization"]["agreement_vs_fp32"]["dice_mean"] == report.agreement.dice_mean

    a = [f.image[..., 0] > 127 for f in iter_frames(fp32["out"] / "mask.mkv")]
    b = [f.image[..., 0] > 127 for f in iter_frames(out / "mask.mkv")]
    dice = np.array([_dice(x, y) for x, y in zip(a, b, strict=True)])
    TIMINGS["int8_vs_fp32_dice"] = float(dice.mean())
    assert dice.mean() >= 0.95 and np.percentile(dice, 10) >= 0.9
    _, truth_dice, _ = _mask_dice({"out": out, "truth": fp32["truth"]})
    after = np.array([f.time_s for f in iter_frames(out / "mask.mkv")]) > fp32["truth"]["curves"]["lesion"]["t0"]
    assert truth_dice[after].mean() >= 0.7

    P8 = json.loads((out / "tic.json").read_text())["parameters"]
    P32 = fp32["tic"]["parameters"]
    TIMINGS["int8_ttp_minus_fp32_s"] = P8["TTP"]["value"] - P32["TTP"]["value"]
    TIMINGS["int8_pe_over_fp32"] = P8["PE"]["value"] / P32["PE"]["value"]
    assert abs(P8["TTP"]["value"] - P32["TTP"]["value"]) < 0.5
    assert abs(P8["PE"]["value"] / P32["PE"]["value"] - 1) < 0.05


def test_every_frame_segmented_and_measurements(clips):
    """Every frame of each clip was segmented; the measured numbers go to the test log
    (``pytest -rP`` shows them)."""
    for name in ("full", "truncated", "flash"):
        assert clips[name]["report"].frames == clips[name]["truth"]["n_frames"]
    print({k: round(v, 3) for k, v in TIMINGS.items()})


@pytest.mark.parametrize("dt", [0.5, 1.0])
def test_flash_on_log_compressed_panel_means_during_enhancement(dt):
    """Regression for what the flash clip showed: whole-panel mean grey levels are
    log-compressed, so a flash during enhancement (grey ~200 -> ~230, 15-18 % of the
    curve's range) must still read as a flash (before the fix it was only caught as a
    jump); a steep bolus sampled at 1 fps must not."""
    from ceuspipe.synth.bolus import LognormalBolus
    from ceuspipe.tic.flags import frame_flags

    rng = np.random.default_rng(0)
    t = np.arange(0, 60, dt)

    def panel_grey(bolus):  # 60 dB log compression of the panel's mean power, grey 0..255
        return 255 * (1 + 10 * np.log10(bolus(t)) / 60) + rng.normal(0, 0.3, t.size)

    floor = 10 ** -5.7
    for rise_s in (2.0, 15.0):  # steep and ordinary boluses, peak grey ~205
        grey = panel_grey(LognormalBolus.from_peak(5.0, rise_s, 0.5, 0.067, floor))
        assert 180 < grey.max() - grey.min() < 200
        flags = frame_flags(np.full(t.size, 0.05), times_s=t, panel_means=grey)
        assert not flags["flash"].any(), np.flatnonzero(flags["flash"])
    flash = [int(round(14 / dt)), int(round(40 / dt))]  # wash-in and wash-out, one frame each
    rise = np.minimum(grey[flash] + 33.0, 255.0) - grey[flash]
    grey[flash] += rise
    assert np.all(rise < 0.2 * (grey.max() - grey.min()))
    flags = frame_flags(np.full(t.size, 0.05), times_s=t, panel_means=grey)
    assert np.flatnonzero(flags["flash"]).tolist() == flash
    assert not flags["destruction"].any()


RELATIVE = ("PE", "WiAUC", "WoAUC", "WiWoAUC", "WiR", "WiPI")


def _curves_seen_through_masks(run: dict, distance_px: float = 5.0, width_px: float = 15.0):
    """Truth curves of the regions segment-video measured on ``run``: per frame of
    mask.mkv, the lesion mask and the reference ring built from it as the stage builds
    it (5 px out, 15 px wide, inside the imaged area learnt from the first frames, the
    last non-empty mask standing in for an empty one), each region's mean phantom weight
    maps times the lesion and parenchyma curves. Returns ``(times_s, lesion, ring)``,
    ``(N,)`` each, in linear power (NaN where the region is empty)."""
    from ceuspipe.synth.generate import ceus_weight_maps
    from ceuspipe.synth.truth import truth_curves
    from ceuspipe.tic.linearize import to_gray
    from ceuspipe.tic.reference import ImagedArea, reference_ring
    from ceuspipe.video.layout import CONTENT_THRESHOLD

    truth = run["truth"]
    L, P = truth_curves(truth)
    lay = PanelLayout.from_dict(truth["layout"])
    imaged = ImagedArea(threshold=CONTENT_THRESHOLD)
    last: np.ndarray | None = None
    times, lesion, ring = [], [], []
    for m, f, (t, maps) in zip(iter_frames(run["out"] / "mask.mkv"), iter_frames(run["clip"]),
                               ceus_weight_maps(truth)):
        area = imaged.update(to_gray(crop(f.image, lay.ceus)), to_gray(crop(f.image, lay.us)))
        mask = m.image[..., 0] > 127
        last = mask if mask.any() else last
        dl, dp = L(t) - L.offset, P(t) - P.offset
        seen = []
        for region in (mask, None if last is None else reference_ring(last, distance_px, width_px, area)):
            if region is None or not region.any():
                seen.append(np.nan)
            else:
                w = maps[region].mean(axis=0)
                seen.append(float(w[0] * dl + w[1] * dp + truth["noise_floor_power"]))
        times.append(t)
        lesion.append(seen[0])
        ring.append(seen[1])
    assert len(times) == truth["n_frames"]
    return np.array(times), np.array(lesion), np.array(ring)


def test_relative_parameters_against_phantom_parenchyma(clips):
    """The automatic reference ring (5 px outside each trained-model mask, 15 px wide,
    inside the imaged area) on the held-out 100 s clip (seed 202): lesion-over-reference
    parameters against the truth of the very regions measured.

    Truth: the phantom's weight maps averaged over each frame's mask and ring
    (:func:`_curves_seen_through_masks`), noise-free curves fitted with the same model.
    This checks everything after segmentation (speckle, H.264, linearisation, the
    ring, both fits, the ratios). Measured: every ratio within 2.1 % (rWoAUC +2.1 %,
    rPE -0.5 %), dTTP -0.17 s with fp32 masks and -0.18 s with the default checked int8;
    bounds 8 % and 0.5 s.

    Against the nominal curves (lesion over parenchyma, as if the ring saw weight 1
    parenchyma and the mask only the lesion) the ratios read 27-44 % high: the ring sits
    in the soft ROI edge (some lesion weight) and the parenchyma weight there is below 1
    (x(1 - 0.25 depth), the ROI edge). The seen-truth ratios carry the same bias
    (measured +28..+41 %, within 3 points of it), which shows where it comes from; bounds
    -10 %..+60 % and dTTP within 2 s. Values printed with ``pytest -rP``."""
    run = clips["full"]
    truth = run["truth"]
    t_last = run["report"].duration_s
    want_l = _truth_parameters(truth, t_last)
    P = truth["curves"]["parenchyma"]
    want_r = perfusion_parameters("lognormal", {"t0": P["t0"], "O": P["offset"], "A": P["amplitude"],
                                                "mu": P["mu"], "sigma": P["sigma"]}, t_first=0.0, t_last=t_last)
    doc = run["tic"]
    assert doc["reference"]["success"], doc["reference"]["reason"]
    rel = doc["relative_parameters"]

    t, seen_l, seen_r = _curves_seen_through_masks(run)
    fits = [analyse_curve(t, v, detect_flash=False, detect_jumps=False) for v in (seen_l, seen_r)]
    assert all(f.success for f in fits), [f.reason for f in fits]
    seen = {k: fits[0].value(k) / fits[1].value(k) for k in RELATIVE}
    seen_err = {k: rel[f"r{k}"]["value"] / seen[k] - 1.0 for k in RELATIVE}
    seen_dttp = rel["dTTP"]["value"] - (fits[0].value("TTP") - fits[1].value("TTP"))
    nominal_err = {k: rel[f"r{k}"]["value"] / (want_l[k].value / want_r[k].value) - 1.0 for k in RELATIVE}
    nominal_dttp = rel["dTTP"]["value"] - (want_l["TTP"].value - want_r["TTP"].value)
    TIMINGS.update({f"r{k}_err_vs_seen": v for k, v in seen_err.items()}, dTTP_err_vs_seen_s=seen_dttp)
    TIMINGS.update({f"r{k}_err_vs_nominal": v for k, v in nominal_err.items()}, dTTP_err_vs_nominal_s=nominal_dttp)
    TIMINGS.update({f"r{k}_seen_bias": seen[k] / (want_l[k].value / want_r[k].value) - 1.0 for k in RELATIVE})
    print({k: round(v, 3) for k, v in TIMINGS.items() if k.startswith(("r", "dTTP"))})
    for k in RELATIVE:
        assert abs(seen_err[k]) < 0.08, (k, seen_err)
        assert -0.1 < nominal_err[k] < 0.6, (k, nominal_err)
    assert abs(seen_dttp) < 0.5 and abs(nominal_dttp) < 2.0
    csv = run["csv"]
    assert np.all(csv["ref_area_px"][csv["area_px"] > 0] > 0)
    assert "ref_fitted" in csv and np.isfinite(csv["ref_fitted"]).all()
    summary = json.loads((run["out"] / "segment.json").read_text())
    assert summary["reference_region"]["mode"] == "ring"
    assert summary["tic"]["relative_parameters"]["rPE"] == rel["rPE"]["value"]


# --------------------------------------------------------------------------- the checked int8 default


def _mask_stack(out: Path) -> list[np.ndarray]:
    return [f.image[..., 0] > 127 for f in iter_frames(out / "mask.mkv")]


def test_default_is_checked_int8_calibrated_once_on_the_first_clip(clips):
    """At default settings on the CPU the trained model runs int8: calibrated on the first
    clip segmented (the 100 s clip), reused for the next two, each checked on 8 frames.

    Measured (7-bit weights): calibration held-out Dice 0.984; per-clip check Dice means
    0.986-0.989, curve differences 0.1-1.0 % of the checked peak. Bounds: the stated ones (0.95, 5 %)."""
    docs = {name: json.loads((clips[name]["out"] / "segment.json").read_text())
            for name in ("full", "truncated", "flash")}
    for name, doc in docs.items():
        p = doc["precision"]
        TIMINGS[f"int8_check_{name}_dice"] = p["check"]["dice_mean"]
        TIMINGS[f"int8_check_{name}_curve"] = p["check"]["curve_max_difference"]
        assert p["requested"] == "auto" and p["used"] == "int8", (name, p)
        assert doc["engine"] == "onnx-int8" and clips[name]["report"].engine == "onnx-int8"
        assert p["check"]["passed"] and p["check"]["frames"] == 8 and doc["warnings"] == [], (name, doc["warnings"])
        assert p["check"]["dice_mean"] >= 0.95 and p["check"]["curve_max_difference"] <= 0.05
        assert doc["model_quantization"]["agreement_vs_fp32"]["dice_mean"] == p["int8_model"]["held_out_dice_mean"]
        times = p["check"]["times_s"]  # spread over the whole clip
        assert times[0] == 0.0 and times[-1] >= 0.8 * doc["duration_s"]
    assert docs["full"]["precision"]["int8_model"]["calibrated_on_this_clip"]
    assert not docs["truncated"]["precision"]["int8_model"]["calibrated_on_this_clip"]
    assert not docs["flash"]["precision"]["int8_model"]["calibrated_on_this_clip"]
    assert len({d["precision"]["int8_model"]["file"] for d in docs.values()}) == 1
    TIMINGS["int8_calibration_held_out_dice"] = docs["full"]["precision"]["int8_model"]["held_out_dice_mean"]
    print({k: round(v, 4) for k, v in TIMINGS.items() if k.startswith("int8_c")})
    html = (clips["full"]["out"] / "report.html").read_text()
    assert "int8 check on this clip" in html and "int8 (asked auto)" in html


def test_default_int8_masks_and_curve_close_to_fp32(clips, fp32_full):
    """The default (checked int8) run of the held-out 100 s clip against its fp32 run, on every
    frame: mask Dice, the inside-mask mean linear power, and the fitted TTP and PE.

    Measured (7-bit weights): mask Dice mean 0.985; curve within 1.6 % of its peak; TTP +0.03 s,
    PE +0.2 %.
    Bounds: Dice mean 0.95 and 10th percentile 0.9; curve 5 % of peak; TTP 0.5 s, PE 5 %."""
    a, b = _mask_stack(fp32_full["out"]), _mask_stack(clips["full"]["out"])
    dice = np.array([_dice(x, y) for x, y in zip(a, b, strict=True)])
    TIMINGS["default_vs_fp32_dice"] = float(dice.mean())
    assert dice.mean() >= 0.95 and np.percentile(dice, 10) >= 0.9
    c32, c8 = fp32_full["csv"], clips["full"]["csv"]
    np.testing.assert_array_equal(c32["time_s"], c8["time_s"])
    p32, p8 = np.nan_to_num(c32["mean_linear"]), np.nan_to_num(c8["mean_linear"])
    TIMINGS["default_vs_fp32_curve"] = float(np.max(np.abs(p8 - p32)) / np.max(p32))
    assert np.max(np.abs(p8 - p32)) <= 0.05 * np.max(p32)
    P8, P32 = clips["full"]["tic"]["parameters"], fp32_full["tic"]["parameters"]
    TIMINGS["default_ttp_minus_fp32_s"] = P8["TTP"]["value"] - P32["TTP"]["value"]
    TIMINGS["default_pe_over_fp32"] = P8["PE"]["value"] / P32["PE"]["value"]
    print({k: round(v, 4) for k, v in TIMINGS.items() if k.startswith("default_")})
    assert abs(P8["TTP"]["value"] - P32["TTP"]["value"]) < 0.5
    assert abs(P8["PE"]["value"] / P32["PE"]["value"] - 1) < 0.05


def test_int8_calibrated_on_black_frames_fails_the_clip_check_and_falls_back(clips, fp32_full, tmp_path,
                                                                            monkeypatch):
    """An int8 model calibrated on black frames agrees with fp32 on its (black) held-out frames,
    but not on a real clip: the per-clip check catches it and the clip is redone with fp32,
    giving exactly the fp32 run's masks (measured: the first check frame's Dice 0.11 ends the
    int8 pass at once)."""
    from ceuspipe.segment import int8_cache

    def black(path, size, per_clip, layout, sample_fps=1.0):
        z = np.zeros((size, size), np.float32)
        return [(z, z, f"black{i}") for i in range(8)]

    monkeypatch.setattr(int8_cache, "clip_frames", black)
    full = clips["full"]
    lay = PanelLayout.from_dict(full["truth"]["layout"])
    out = tmp_path / "out"
    rep = segment_video(full["clip"], clips["ckpt"], out, SegmentConfig(
        ceus_box=lay.ceus, us_box=lay.us, cache_dir=str(tmp_path / "cache")))
    doc = json.loads((out / "segment.json").read_text())
    p = doc["precision"]
    TIMINGS["black_calibration_held_out_dice"] = p["int8_model"]["held_out_dice_mean"]
    assert p["int8_model"]["held_out_dice_mean"] >= 0.95  # the calibration's own check cannot see it
    assert p["used"] == "fp32" and p["fell_back"] and not p["check"]["passed"]
    assert rep.engine == doc["engine"] == "onnx" and doc["model_quantization"] == {}
    assert len(doc["warnings"]) == 1 and "fp32 instead" in doc["warnings"][0]
    a, b = _mask_stack(fp32_full["out"]), _mask_stack(out)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
