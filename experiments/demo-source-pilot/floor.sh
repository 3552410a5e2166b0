#!/usr/bin/env bash
# Real-vs-real floor of the source model's evaluation: 900 images of source.zip (a seeded random choice, written to
# .cache/demo-data/source-900.zip) against the 900 of source-heldout.zip, the same metric as the pilot and the long run.
# Appends to experiments/demo-source-pilot/results.jsonl with config "floor".
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
DATA=.cache/demo-data
$PY - <<'PYEOF'
import random, zipfile
with zipfile.ZipFile(".cache/demo-data/source.zip") as src:
    names = sorted(n for n in src.namelist() if n.endswith(".png"))
    keep = sorted(random.Random(0).sample(names, 900))
    with zipfile.ZipFile(".cache/demo-data/source-900.zip.tmp", "w") as dst:
        for n in keep:
            dst.writestr(n, src.read(n))
import os; os.replace(".cache/demo-data/source-900.zip.tmp", ".cache/demo-data/source-900.zip")
PYEOF
$PY scripts/calc_fid.py --data $DATA/source-900.zip --ref $DATA/source-heldout.zip --metrics fid,kid --device cpu \
    | $PY -c "import json,sys; [print(json.dumps(dict(json.loads(l), config='floor'))) for l in sys.stdin]" \
    >> experiments/demo-source-pilot/results.jsonl
