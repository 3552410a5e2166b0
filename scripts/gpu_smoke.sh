#!/usr/bin/env bash
# First GPU run of stylegan-rlo (before `make gpu-check` exists): CUDA op tests incl. the slow plugin builds, a short
# fp16 training run with exact resume, generate, the training benchmark at 256x256 and the full test suite on a GPU.
# Usage (on a machine with a GPU, from the repo root): OUT=dir bash scripts/gpu_smoke.sh
set -u
OUT=${OUT:-gpu-smoke-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.txt"; }
step() { local name=$1 limit=$2; shift 2; log "start $name"; local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  log "end $name rc=$rc wall=$((SECONDS - t0))s"; tail -n 4 "$OUT/$name.log" | tee -a "$OUT/steps.txt"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; $PY -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))'; nvcc --version | tail -1; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. CUDA op tests, the slow plugin builds included (first build timed inside).
step ops 200 $PY -m pytest -q -m "" -p no:cacheprovider -rs --durations=8 tests/upstream_api/test_custom_ops.py tests/upstream_api/test_ops_bias_act.py tests/upstream_api/test_ops_upfirdn2d.py tests/upstream_api/test_ops_conv2d_resample.py tests/upstream_api/test_ops_conv2d_gradfix.py

# 2. Short fp16 training run (64x64: fp16 in the top 4 resolutions), exact resume, generate.
D=/tmp/smoke; rm -rf $D; mkdir -p $D/imgs
$PY - <<'PY'
import numpy as np, PIL.Image
rng = np.random.default_rng(0)
for i in range(64):
    PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(f"/tmp/smoke/imgs/{i:03d}.png")
PY
TRAIN="$PY scripts/train.py --data $D/imgs --outdir $D/runs --device cuda --cbase 4096 --cmax 128 --batch 16 --tick 0.1 --snap 1 --workers 2 --loss rooted --k 8"
step train_fp16 120 $TRAIN --kimg 0.4
SNAP=$(ls $D/runs/*/network-snapshot-*.pkl | tail -1)
step train_resume 90 $TRAIN --kimg 0.6 --resume "$SNAP"
step fp16_vs_fp32 45 $PY - "$SNAP" <<'PY'
import sys, torch
from stylegan_rlo.checkpoints.pickles import load_network_pkl
G = load_network_pkl(sys.argv[1])["G_ema"].cuda().eval()
z = torch.randn([8, G.z_dim], device="cuda", generator=torch.Generator("cuda").manual_seed(0))
c = torch.zeros([8, 0], device="cuda")
with torch.no_grad():
    a = G(z, c, noise_mode="const"); b = G(z, c, noise_mode="const", force_fp32=True)
print("finite", bool(torch.isfinite(a).all()), "max|fp16-fp32|", float((a - b).abs().max()), "mean", float((a - b).abs().mean()))
PY
step generate 45 $PY scripts/generate.py --network "$SNAP" --seeds 0-15 --grid 4x4 --outdir $D/gen --device cuda
cp $D/gen/grid.png "$OUT/" 2>/dev/null; cp "$(ls $D/runs/*/log.txt | tail -1)" "$OUT/train_log.txt" 2>/dev/null

# 3. Training benchmark at 256x256 (paper256 capacity: cbase 16384, cmax 512), both objectives.
for L in "logistic" "rooted --k 8"; do
  step "bench_${L%% *}" 90 $PY scripts/bench.py --device cuda --res 256 --cbase 16384 --cmax 512 --batch 32 --map 8 --iters 20 --warmup 5 --loss $L
done

# 4. The whole suite on a GPU machine (auto devices pick cuda here), in parallel, for what remains of the time.
step suite 150 $PY -m pytest -q -p no:cacheprovider -n 8 --maxfail=30 -o addopts="" -m "not slow" tests
log done
