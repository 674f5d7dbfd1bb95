#!/usr/bin/env bash
# The whole chain on the built-in synthetic CEUS phantom (make demo).
# Usage: pipelines/demo.sh [OUT]   (default demo_out; rerunning starts afresh)
# About 5 minutes on a quiet 2-core CPU (measured 4 min 59 s; test Dice 0.83 of a
# width-1/8 model on 16 held-out cases). DEMO_PATIENTS and DEMO_EPOCHS change the size.
set -euo pipefail
OUT=${1:-demo_out}
PATIENTS=${DEMO_PATIENTS:-24}
EPOCHS=${DEMO_EPOCHS:-60}
rm -rf "$OUT"
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }

step "1/7 synthetic CEUS phantom: $PATIENTS patients (clips + ground truth)"
ceuspipe synth "$OUT/phantom" --patients "$PATIENTS" --duration-s 60 --fps 10 --seed 0 --jobs 2 --preset ultrafast

step "2/7 key frames: 1 fps, top-40 by grey-level change"
ceuspipe keyframes "$OUT/phantom" "$OUT/keyframes" --jobs 2

step "3/7 annotations from the phantom's ground truth (LabelMe JSON)"
ceuspipe annotate-phantom "$OUT/keyframes" "$OUT/phantom" "$OUT/annotations"

step "4/7 dataset: 2 grey-balanced frames per patient, patient-level 2:1 split"
ceuspipe build-dataset "$OUT/keyframes" "$OUT/annotations" "$OUT/dataset" --seed 0

step "5/7 train a small CEUSegNet (width 1/8) on CPU"
ceuspipe train "$OUT/dataset" "$OUT/run" --width 0.125 --epochs "$EPOCHS" --batch-size 8 --seed 0

step "6/7 evaluate the last checkpoint on the test patients (best.pt was picked on them)"
ceuspipe evaluate "$OUT/run/last.pt" "$OUT/dataset" -o "$OUT/run/eval"

step "7/7 segment a held-out phantom clip: mask video, overlay, time-intensity curve"
ceuspipe synth "$OUT/heldout" --patients 1 --duration-s 60 --fps 10 --seed 1234 --preset ultrafast
clip=$(find "$OUT/heldout" -name '*.mp4' | head -n 1)
ceuspipe segment-video "$clip" --model "$OUT/run/last.pt" -o "$OUT/segment" --maps
# the same clip from the phantom's truth masks (no model): what the model's masks cost the curve
ceuspipe segment-video "$clip" --masks "${clip%.mp4}.truth/ceus_mask.mkv" -o "$OUT/segment_truth_masks"

printf '\nDemo finished. Outputs under %s/:\n' "$OUT"
python - "$OUT" "$clip" <<'PY'
import json, sys
from pathlib import Path
out, clip = sys.argv[1], Path(sys.argv[2])
m = json.load(open(f"{out}/run/eval/metrics.json"))
print(f"  test Dice     {m['dice_mean']:.3f} +/- {m['dice_std']:.3f} (IoU {m['iou_mean']:.3f}) "
      f"on {len(m['cases'])} held-out cases, width {m['width']:g} {m['variant']}")
truth = json.load(open(clip.with_suffix(".truth") / "truth.json"))["curves"]["lesion"]
print(f"  held-out clip TIC (phantom's nominal lesion curve: TTP {truth['ttp_s']:.1f} s, "
      f"PE {truth['pe'] - truth['offset']:.3g})")
for name, folder in (("model's masks", "segment"), ("truth masks", "segment_truth_masks")):
    t = json.load(open(f"{out}/{folder}/tic.json"))
    p = t["parameters"]
    if t["success"]:
        print(f"    from the {name:<14} TTP {p['TTP']['value']:.1f} s, PE {p['PE']['value']:.3g}, "
              f"mTT {p['mTT']['value']:.1f} s, QOF {p['QOF']['value']:.0f} %")
    else:
        print(f"    from the {name:<14} curve fit failed: {t.get('reason')}")
PY
printf '  key frames   %s/keyframes/manifest.csv\n' "$OUT"
printf '  dataset      %s/dataset/dataset.json\n' "$OUT"
printf '  model        %s/run/last.pt (metrics.csv, learning_curve.png)\n' "$OUT"
printf '  segment-video %s/segment/ (mask.mkv, overlay.mp4, tic.*, motion.csv, maps.npz, map_*.png, segment.json)\n' "$OUT"
printf '  report       %s/segment/report.html (open it in any browser)\n' "$OUT"
