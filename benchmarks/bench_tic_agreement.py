"""Agreement of the TIC parameters users read: the model's masks against the truth masks.

Builds (or reuses, ``--work``) a phantom train set and a small CEUSegNet as the demo does
(``synth``, ``keyframes``, ``annotate-phantom``, ``build-dataset``, ``train --width 0.125``),
then ``--heldout`` phantom clips of other seeds (``synth --seed 1234``, as the demo's held-out
clip; crf 20, preset ultrafast). Each held-out clip goes through ``segment-video`` twice at
default settings (reference ring on): with ``--model`` (the model's masks) and with ``--masks``
the phantom's truth mask video (``<clip>.truth/ceus_mask.mkv``).

For PE, TTP, mTT, WiAUC, WiR and rPE it reports, between the two:

* ICC(2,1): two-way random effects, absolute agreement, single measures (Shrout & Fleiss
  1979), from the ANOVA mean squares of the clips x {model, truth} table;
* mean absolute % difference, relative to the truth-mask value;
* Bland-Altman bias and 95 % limits of agreement (bias -+ 1.96 SD) of the relative
  difference ``100 * (a - b) / ((a + b) / 2)`` in %.

and the same for each of the two against the truth: the **nominal** curves of truth.json
(``curves.lesion``; rPE = lesion over parenchyma peak) and the **true curve of the truth
ROI** (the phantom's enhancement weights, :func:`ceuspipe.synth.generate.ceus_weight_maps`,
averaged over each frame's truth mask, times the lesion and parenchyma curves; for rPE also
over a reference ring of segment-video's default size around it, 5 px gap and 15 px wide,
without segment-video's imaged-area limit), fitted with the same lognormal fit as the clips.

Then it splits the gap between PE from the model's masks and the nominal PE into steps,
medians over clips of per-clip ratios (TTP: differences in s):
nominal -> true curve of the truth ROI (the ROI's weights) -> measured with truth masks on a
lossless crf 0 copy of each clip (grey-level conversion and linearisation) -> the same at
crf 20 (the codec) -> measured with the model's masks (the mask), with the true curve of the
model's mask beside it (what the mask takes in, free of measurement). ``--no-crf0`` skips the
lossless copies.

Results print as markdown tables and go to ``--out`` (JSON). The default size (24 patients,
60 epochs, 8 held-out 60 s clips at 10 fps) took about 13.5 minutes on 2 cores: 7.4 the train
set and model (shared machine), 1.3 the held-out clips, 4.8 the 24 segment-video runs and
true curves (quiet machine); ``--quick`` is a smoke run. Usage::

    python benchmarks/bench_tic_agreement.py [--quick] [--work DIR] [--out FILE]
        [--patients 24] [--epochs 60] [--heldout 8] [--duration-s 60] [--fps 10] [--no-crf0]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import ceuspipe_cmd  # noqa: E402

PARAMETERS = ("PE", "TTP", "mTT", "WiAUC", "WiR", "rPE")
#: segment-video's default reference ring (px), reproduced for the true curves
RING_DISTANCE_PX, RING_WIDTH_PX = 5.0, 15.0


# --- statistics ------------------------------------------------------------------------------

def icc_2_1(x) -> float:
    """ICC(2,1) of ``x`` ``(n targets, k raters)``: two-way random effects, absolute
    agreement, single measures (Shrout & Fleiss 1979, case 2):
    ``(BMS - EMS) / (BMS + (k-1) EMS + k (JMS - EMS) / n)`` with the between-targets,
    between-raters (judges) and residual mean squares of the two-way ANOVA. NaN for
    fewer than 2 targets or raters."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        return float("nan")
    n, k = x.shape
    g = x.mean()
    ss_rows = k * np.sum((x.mean(axis=1) - g) ** 2)
    ss_cols = n * np.sum((x.mean(axis=0) - g) ** 2)
    ss_err = np.sum((x - g) ** 2) - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    den = bms + (k - 1) * ems + k * (jms - ems) / n
    return float((bms - ems) / den) if den > 0 else float("nan")


def agreement(a, b) -> dict:
    """Agreement of paired values ``a`` (tested) and ``b`` (reference), ``(n,)`` each;
    pairs with a non-finite value are left out (``n`` counts the rest). ``icc``: ICC(2,1)
    of the ``(n, 2)`` table; ``mapd_pct``: mean ``|a - b| / |b|`` in %; ``ba_*_pct``:
    Bland-Altman bias and 95 % limits (bias -+ 1.96 SD, ddof 1) of ``100 (a - b) /
    ((a + b) / 2)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    out = {"n": int(ok.sum()), "icc": icc_2_1(np.stack([a, b], axis=1)) if ok.sum() >= 2 else float("nan")}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mapd_pct"] = float(np.mean(np.abs(a - b) / np.abs(b)) * 100) if a.size else float("nan")
        rel = 100 * (a - b) / ((a + b) / 2)
    bias = float(rel.mean()) if rel.size else float("nan")
    sd = float(rel.std(ddof=1)) if rel.size > 1 else float("nan")
    out.update(ba_bias_pct=bias, ba_low_pct=bias - 1.96 * sd, ba_high_pct=bias + 1.96 * sd)
    return out


# --- building the data -----------------------------------------------------------------------

def _ceuspipe(*args) -> float:
    """Run ``ceuspipe -q ARGS``; wall seconds. Exits with its stderr on failure."""
    t = time.perf_counter()
    res = subprocess.run(ceuspipe_cmd() + ["-q", *map(str, args)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"ceuspipe {' '.join(map(str, args))} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t


def _step(folder: Path, timings: dict, name: str, *args) -> None:
    """One cached stage: run ``args`` unless ``folder/.complete`` exists (a folder left by an
    interrupted run is made again)."""
    done = folder / ".complete"
    if done.exists():
        timings[name] = "reused"
        return
    shutil.rmtree(folder, ignore_errors=True)
    print(f"  {name} ...", file=sys.stderr, flush=True)
    timings[name] = round(_ceuspipe(*args), 1)
    done.touch()


def build_model(work: Path, a, timings: dict) -> Path:
    """The demo's chain on ``a.patients`` phantom patients; returns ``run/last.pt``."""
    w = work / f"train_p{a.patients}_e{a.epochs}_w{a.width:g}_s{a.train_seed}_{a.duration_s:g}s_{a.fps:g}fps"
    w.mkdir(parents=True, exist_ok=True)
    _step(w / "phantom", timings, "synth train set", "synth", w / "phantom", "--patients", a.patients,
          "--duration-s", a.duration_s, "--fps", a.fps, "--seed", a.train_seed, "--jobs", a.jobs,
          "--preset", "ultrafast")
    _step(w / "keyframes", timings, "keyframes", "keyframes", w / "phantom", w / "keyframes", "--jobs", a.jobs)
    _step(w / "annotations", timings, "annotate-phantom", "annotate-phantom", w / "keyframes", w / "phantom",
          w / "annotations")
    _step(w / "dataset", timings, "build-dataset", "build-dataset", w / "keyframes", w / "annotations",
          w / "dataset", "--seed", a.train_seed)
    _step(w / "run", timings, "train", "train", w / "dataset", w / "run", "--width", a.width, "--epochs", a.epochs,
          "--batch-size", 8, "--seed", a.train_seed)
    return w / "run" / "last.pt"


def heldout_clips(work: Path, a, crf: int, timings: dict) -> list[Path]:
    """``a.heldout`` phantom clips of global seed ``a.heldout_seed`` at libx264 ``crf``."""
    folder = work / f"heldout_n{a.heldout}_s{a.heldout_seed}_{a.duration_s:g}s_{a.fps:g}fps_crf{crf}"
    _step(folder, timings, f"synth held-out crf {crf}", "synth", folder, "--patients", a.heldout,
          "--duration-s", a.duration_s, "--fps", a.fps, "--seed", a.heldout_seed, "--jobs", a.jobs,
          "--preset", "ultrafast", "--crf", crf)
    return sorted(p for p in folder.rglob("*.mp4") if not p.name.startswith("."))


def segment(clip: Path, out: Path, *, model: Path | None = None, masks: Path | None = None) -> dict:
    """tic.json of ``segment-video`` on ``clip`` (default settings), cached in ``out``."""
    tic = out / "tic.json"
    if not tic.exists():
        shutil.rmtree(out, ignore_errors=True)
        src = ["--model", model] if model is not None else ["--masks", masks]
        _ceuspipe("segment-video", clip, *src, "-o", out)
    return json.loads(tic.read_text())


# --- values per clip --------------------------------------------------------------------------

def tic_values(tic: dict) -> dict:
    """The compared parameters of a segment-video ``tic.json`` (NaN when missing)."""
    p = tic.get("parameters", {})
    rel = tic.get("relative_parameters", {})
    out = {}
    for k in PARAMETERS:
        d = rel.get(k) if k.startswith("r") else p.get(k)
        v = d.get("value") if isinstance(d, dict) else None
        out[k] = float(v) if v is not None and tic.get("success", True) else float("nan")
    return out


def _curve_values(model: str, params: dict, duration_s: float) -> dict:
    from ceuspipe.tic.parameters import perfusion_parameters

    p = perfusion_parameters(model, params, t_first=0.0, t_last=duration_s)
    return {k: p[k].value for k in PARAMETERS if k != "rPE"}


def nominal_values(truth: dict) -> dict:
    """Parameters of the nominal lognormal curves of truth.json (rPE: lesion over parenchyma PE)."""
    from ceuspipe.synth.truth import truth_curves

    dur = float(truth["frame_times_s"][-1])
    vals = {}
    for name, c in zip(("lesion", "parenchyma"), truth_curves(truth)):
        vals[name] = _curve_values("lognormal", {"t0": c.t0, "O": 0.0, "A": c.amplitude, "mu": c.mu,
                                                 "sigma": c.sigma}, dur)
    out = vals["lesion"]
    out["rPE"] = out["PE"] / vals["parenchyma"]["PE"]
    return out


def _fit_values(times: np.ndarray, values: np.ndarray) -> dict:
    """Parameters of segment-video's lognormal fit of a noise-free curve (NaN when it fails)."""
    from ceuspipe.tic.analyse import analyse_curve

    res = analyse_curve(times, values, model="lognormal")
    return {k: (res.parameters[k].value if res.success else float("nan")) for k in PARAMETERS if k != "rPE"}


def _mask_video(path: Path):
    from ceuspipe.video.reader import iter_frames

    for f in iter_frames(path):
        img = f.image
        yield (img if img.ndim == 2 else img[..., 0]) > 127


def true_curves(truth: dict, mask_videos: dict[str, Path]) -> dict[str, dict]:
    """For each named mask video (CEUS panel size, one frame per clip frame): the parameters
    of the true curve of its masks, from the phantom's weight maps (rPE: over the true curve
    of the default reference ring around each frame's mask, the last non-empty one when a
    frame's is empty), ``dice`` and ``area_ratio`` (its area over the truth mask's), means
    over frames, against the mask named ``truth``."""
    from ceuspipe.synth.generate import ceus_weight_maps
    from ceuspipe.synth.truth import truth_curves
    from ceuspipe.tic.reference import reference_ring

    lesion, parenchyma = truth_curves(truth)
    names = list(mask_videos)
    readers = {k: _mask_video(v) for k, v in mask_videos.items()}
    roi = {k: [] for k in names}
    ring = {k: [] for k in names}
    dice = {k: [] for k in names}
    area = {k: [] for k in names}
    last = {k: None for k in names}
    times = []
    for t, w in ceus_weight_maps(truth):
        dl, dp = lesion(t) - lesion.offset, parenchyma(t) - parenchyma.offset
        times.append(t)
        masks = {k: next(r) for k, r in readers.items()}
        for k, m in masks.items():
            if m.shape != w.shape[:2]:
                raise SystemExit(f"{mask_videos[k]}: masks {m.shape} are not the CEUS panel's {w.shape[:2]}")
            roi[k].append(w[..., 0][m].mean() * dl + w[..., 1][m].mean() * dp if m.any() else np.nan)
            if m.any():
                last[k] = m
            r = reference_ring(last[k], RING_DISTANCE_PX, RING_WIDTH_PX) if last[k] is not None else None
            ring[k].append(w[..., 0][r].mean() * dl + w[..., 1][r].mean() * dp if r is not None and r.any()
                           else np.nan)
            if "truth" in masks:
                tm = masks["truth"]
                s = m.sum() + tm.sum()
                dice[k].append(2 * (m & tm).sum() / s if s else 1.0)
                if tm.any():
                    area[k].append(m.sum() / tm.sum())
    t = np.array(times)
    out = {}
    for k in names:
        v = _fit_values(t, np.array(roi[k]))
        pe_ring = _fit_values(t, np.array(ring[k]))["PE"]
        v["rPE"] = v["PE"] / pe_ring if pe_ring else float("nan")
        v["dice"] = float(np.mean(dice[k])) if dice[k] else float("nan")
        v["area_ratio"] = float(np.mean(area[k])) if area[k] else float("nan")
        out[k] = v
    return out


def measure_clip(clip: Path, model: Path, work: Path, crf0_clip: Path | None) -> dict:
    """Every value of one held-out clip: ``{source: {parameter: value}}``."""
    from ceuspipe.synth.truth import load_truth, truth_dir_for

    truth = load_truth(truth_dir_for(clip))
    truth_video = truth_dir_for(clip) / truth["masks"]["ceus"]
    tag = f"{clip.parent.name}_{clip.stem}"
    seg_model = work / "model" / tag
    out = {"clip": str(clip), "nominal": nominal_values(truth)}
    out["model_masks"] = tic_values(segment(clip, seg_model, model=model))
    out["truth_masks"] = tic_values(segment(clip, work / "truth" / tag, masks=truth_video))
    if crf0_clip is not None:
        tdir = truth_dir_for(crf0_clip)
        out["truth_masks_crf0"] = tic_values(segment(crf0_clip, work / "truth_crf0" / tag,
                                                     masks=tdir / load_truth(tdir)["masks"]["ceus"]))
    true = true_curves(truth, {"truth": truth_video, "model": seg_model / "mask.mkv"})
    out["true_truth_roi"] = true["truth"]
    out["true_model_mask"] = true["model"]
    out["model_dice"] = true["model"].pop("dice")
    out["model_area_ratio"] = true["model"].pop("area_ratio")
    for k in ("dice", "area_ratio"):
        out["true_truth_roi"].pop(k)
    return out


# --- tables ----------------------------------------------------------------------------------

COMPARISONS = [  # (title, tested, reference)
    ("model masks vs truth masks (segment-video --masks)", "model_masks", "truth_masks"),
    ("model masks vs nominal curve", "model_masks", "nominal"),
    ("truth masks vs nominal curve", "truth_masks", "nominal"),
    ("model masks vs true curve of the truth ROI", "model_masks", "true_truth_roi"),
    ("truth masks vs true curve of the truth ROI", "truth_masks", "true_truth_roi"),
]


def _fmt(v: float, spec: str) -> str:
    return format(v, spec) if v is not None and math.isfinite(v) else "n/a"


def agreement_tables(clips: list[dict]) -> dict:
    tables = {}
    for title, a, b in COMPARISONS:
        tables[title] = {k: agreement([c[a][k] for c in clips], [c[b][k] for c in clips]) for k in PARAMETERS}
    return tables


def _ratio_row(clips, num, den, key="PE"):
    r = np.array([c[num][key] / c[den][key] for c in clips], dtype=np.float64)
    r = r[np.isfinite(r)]
    return r


def decomposition(clips: list[dict]) -> list[dict]:
    """The steps from the nominal PE to PE from the model's masks: per-clip PE ratios and TTP
    differences (s), median and range over clips."""
    have0 = all("truth_masks_crf0" in c for c in clips)
    steps = [("true curve of the truth ROI / nominal", "ROI weights (enhancement not uniform)",
              "true_truth_roi", "nominal")]
    if have0:
        steps += [("truth masks, crf 0 / true curve of the truth ROI", "grey conversion + linearisation",
                   "truth_masks_crf0", "true_truth_roi"),
                  ("truth masks, crf 20 / crf 0", "H.264 crf 20", "truth_masks", "truth_masks_crf0")]
    else:
        steps += [("truth masks / true curve of the truth ROI", "measurement (conversion + codec)",
                   "truth_masks", "true_truth_roi")]
    steps += [("model masks / truth masks", "the model's mask, as measured", "model_masks", "truth_masks"),
              ("true curve of the model mask / of the truth ROI", "the model's mask, in the truth",
               "true_model_mask", "true_truth_roi"),
              ("model masks / nominal (the whole gap)", "total", "model_masks", "nominal")]
    rows = []
    for label, cause, num, den in steps:
        r = _ratio_row(clips, num, den)
        d = np.array([c[num]["TTP"] - c[den]["TTP"] for c in clips], dtype=np.float64)
        d = d[np.isfinite(d)]
        rows.append({"step": label, "what": cause, "n": int(r.size),
                     "pe_ratio_median": float(np.median(r)) if r.size else float("nan"),
                     "pe_ratio_min": float(r.min()) if r.size else float("nan"),
                     "pe_ratio_max": float(r.max()) if r.size else float("nan"),
                     "ttp_diff_s_median": float(np.median(d)) if d.size else float("nan")})
    return rows


def markdown(result: dict) -> str:
    lines = []
    for title, rows in result["agreement"].items():
        lines += [f"\n### {title}\n", "| parameter | n | ICC(2,1) | mean abs % diff | BA bias % | BA 95 % limits % |",
                  "|---|---|---|---|---|---|"]
        for k, s in rows.items():
            lines.append(f"| {k} | {s['n']} | {_fmt(s['icc'], '.3f')} | {_fmt(s['mapd_pct'], '.1f')} | "
                         f"{_fmt(s['ba_bias_pct'], '+.1f')} | {_fmt(s['ba_low_pct'], '+.1f')} .. "
                         f"{_fmt(s['ba_high_pct'], '+.1f')} |")
    lines += ["\n### PE gap, step by step (median over clips of per-clip ratios; TTP differences in s)\n",
              "| step | what | n | PE ratio median | PE ratio range | TTP diff median (s) |", "|---|---|---|---|---|---|"]
    for r in result["pe_decomposition"]:
        lines.append(f"| {r['step']} | {r['what']} | {r['n']} | {_fmt(r['pe_ratio_median'], '.3f')} | "
                     f"{_fmt(r['pe_ratio_min'], '.3f')} .. {_fmt(r['pe_ratio_max'], '.3f')} | "
                     f"{_fmt(r['ttp_diff_s_median'], '+.2f')} |")
    lines += ["\n### Per clip (model masks; Dice and area against the truth masks, means over frames)\n",
              "| clip | Dice | area ratio | PE model / nominal | PE truth masks / nominal | PE true curve, model mask "
              "/ truth ROI | TTP model - nominal (s) |", "|---|---|---|---|---|---|---|"]
    for c in result["clips"]:
        n = c["nominal"]
        lines.append(f"| {Path(c['clip']).parent.name} | {c['model_dice']:.3f} | {_fmt(c['model_area_ratio'], '.2f')} | "
                     f"{_fmt(c['model_masks']['PE'] / n['PE'], '.3f')} | {_fmt(c['truth_masks']['PE'] / n['PE'], '.3f')} | "
                     f"{_fmt(c['true_model_mask']['PE'] / c['true_truth_roi']['PE'], '.3f')} | "
                     f"{_fmt(c['model_masks']['TTP'] - n['TTP'], '+.2f')} |")
    d = [c["model_dice"] for c in result["clips"]]
    st = result["settings"]
    demo = (st["heldout_seed"], st["duration_s"], st["fps"]) == (1234, 60.0, 10.0)
    lines.append(f"\nModel mask Dice: median {np.median(d):.3f} (range {min(d):.3f} .. {max(d):.3f}) over {len(d)} "
                 "clips." + (" P001 is the demo's held-out clip (seed 1234, patient 1)." if demo else ""))
    return "\n".join(lines)


def _finite(x):
    """``x`` with every non-finite float as None (strict JSON)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 6 patients, 8 epochs, 2 held-out 40 s clips")
    ap.add_argument("--work", type=Path, help="build here and keep (reused by later runs) [default: a temp folder]")
    ap.add_argument("--out", type=Path, default=Path("bench_tic_agreement.json"), help="JSON results")
    ap.add_argument("--patients", type=int, default=24, help="training phantom patients")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--width", type=float, default=0.125, help="model width multiplier")
    ap.add_argument("--heldout", type=int, default=8, help="held-out clips (>= 2)")
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--heldout-seed", type=int, default=1234)
    ap.add_argument("--no-crf0", dest="crf0", action="store_false", help="skip the lossless copies of the clips")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    if a.quick:
        a.patients, a.epochs, a.heldout, a.duration_s = 6, 8, 2, 40.0
    if a.heldout < 2:
        ap.error("--heldout must be at least 2")

    from ceuspipe.fsutil import atomic_write_text

    start = time.perf_counter()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_tic_agreement."))
    work.mkdir(parents=True, exist_ok=True)
    timings: dict = {}
    ckpt = build_model(work, a, timings)
    clips = heldout_clips(work, a, 20, timings)
    clips0 = heldout_clips(work, a, 0, timings) if a.crf0 else [None] * len(clips)
    t = time.perf_counter()
    seg = work / f"segment_{ckpt.parent.parent.name}_{clips[0].parents[1].name}"
    per_clip = []
    for i, (c, c0) in enumerate(zip(clips, clips0)):
        print(f"  clip {i + 1}/{len(clips)}: {c.parent.name}", file=sys.stderr, flush=True)
        per_clip.append(measure_clip(c, ckpt, seg, c0))
    timings["segment + truth curves"] = round(time.perf_counter() - t, 1)
    timings["total"] = round(time.perf_counter() - start, 1)
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "checkpoint": str(ckpt), "timings_s": timings,
              "agreement": agreement_tables(per_clip), "pe_decomposition": decomposition(per_clip),
              "clips": per_clip}
    print(markdown(result))
    print(f"\nstage times (s): {json.dumps(timings)}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(_finite(result), indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
