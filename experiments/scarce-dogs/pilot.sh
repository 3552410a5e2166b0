#!/usr/bin/env bash
# The pilot of experiment 2 (before the main runs): at 100 dogs, one seed, 4 kimg, one run each of logistic+LeCam at
# the weight of the LeCam StyleGAN2 scripts (3e-7) and rooted k=8+DiffAugment, to see (1) the size of LeCam's
# penalty against D's loss on our logits (Loss/lecam_penalty and Loss/D/loss in stats.jsonl), which decides whether
# the paper's weight must be scaled, (2) that DiffAugment runs on the 1-channel images, (3) the time per run.
# Needs the subsets run.sh makes (run it with STAGES= first). Output: experiments/scarce-dogs/pilot/ (summary.md,
# pilot.txt: the LeCam figures).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
EXP=experiments/scarce-dogs
OUT="${OUT:-$EXP/out}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
$PY scripts/compare_objectives.py --network stylegan_rlo/assets/demo-source.pkl \
    --data "$OUT/data/dogs100.zip" --ref .cache/demo-data/dogs-heldout.zip \
    --arms "$EXP/arms/pilot.toml" \
    --seeds 0 --kimg 4 --snap-kimg 4 --metrics fid50k_full,kid50k_full --metrics-num 300 \
    --batch 32 --mirror 1 --aug ada --gamma 0.1 --glr 0.001 --dlr 0.001 --ema-kimg 2 --workers 1 \
    --outdir "$OUT/pilot" --continue
mkdir -p "$EXP/pilot"
cp "$OUT/pilot/summary.md" "$EXP/pilot/"
$PY - "$OUT/pilot" > "$EXP/pilot/pilot.txt" <<'PYEOF'
import glob, json, sys
for run in sorted(glob.glob(sys.argv[1] + "/runs/*")):
    print(run.split("/")[-1])
    for line in open(run + "/stats.jsonl"):
        rec = json.loads(line)
        get = lambda k: rec.get(k, {}).get("mean")
        print(f"  kimg {get('Progress/kimg'):.3f}  D loss {get('Loss/D/loss')}  lecam penalty {get('Loss/lecam_penalty')}"
              f"  scores real {get('Loss/scores/real')}  fake {get('Loss/scores/fake')}  sec/kimg {get('Timing/sec_per_kimg')}")
PYEOF
cat "$EXP/pilot/pilot.txt"
