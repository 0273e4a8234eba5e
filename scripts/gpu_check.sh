#!/usr/bin/env bash
# Prepared GPU check (≤ 8 minutes on one GPU): does every notebook's `full` profile run on a GPU as written,
# and how fast are the two training steps there?
#
#   bash scripts/gpu_check.sh [OUT_DIR]        # default runs/gpu_check-<stamp>; prints one table at the end
#
# 1. every notebook at the full profile cut short (FEWSHOT_CUT_SHORT=1: every count of the profile's sizes —
#    steps, seeds, evaluation sizes, samples, projector steps — capped at fewshot_lib/experiments.CUT_SHORT_CAPS,
#    the models and batch sizes the full profile's), so each full-profile cell runs once, on CUDA; the same run as
#    tests/test_full_profile.py on CPU;
# 2. benchmarks/stylegan2_step.py (lab config) and benchmarks/lofgan_step.py (the reference 128-px config) on
#    the GPU: seconds per iteration, images per second, peak GPU memory.
# Record the printed table in benchmarks/README.md (date, GPU, torch version) whenever a GPU is available.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FEWSHOT=${FEWSHOT:-.venv/bin/fewshot}
OUT=${1:-runs/gpu_check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('GPU:', torch.cuda.get_device_name(0) if ok else 'none', '| torch', torch.__version__); sys.exit(0 if ok else 3)" \
  || { echo "no CUDA GPU visible: this check is for a GPU machine (the CPU tests cover the same code paths)"; exit 3; }

start=$(date +%s)
FEWSHOT_CUT_SHORT=1 FEWSHOT_PROGRESS=plain timeout 330 "$FEWSHOT" run --profile full --out "$OUT/notebooks" \
  > "$OUT/notebooks.log" 2>&1
nb_status=$?
nb_seconds=$(( $(date +%s) - start ))

bench() {  # name, command...
  local name=$1; shift
  local t0=$(date +%s)
  timeout 75 "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - t0 )) s"
}
bench stylegan2_step "$PY" benchmarks/stylegan2_step.py --skip-official --device cuda --reps 10
bench lofgan_step "$PY" benchmarks/lofgan_step.py --device cuda --iters 10 --warmup 2

echo
echo "=================== GPU check ($OUT) ==================="
echo "notebooks at the full profile, cut short (FEWSHOT_CUT_SHORT=1): exit $nb_status in ${nb_seconds} s"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
res = out / "notebooks" / "results.json"
if res.is_file():
    data = json.loads(res.read_text())
    print(f"{'notebook':32s} {'status':8s} {'seconds':>8s}")
    for r in data["notebooks"]:
        print(f"{r['name']:32s} {r['status']:8s} {r['seconds']:8.0f}")
else:
    print("no results.json: see", out / "notebooks.log")
for name in ("stylegan2_step", "lofgan_step"):
    log = out / f"{name}.log"
    lines = [l for l in log.read_text().splitlines() if any(w in l for w in ("s/it", "img/s", "memory", "GiB"))] if log.is_file() else []
    print(f"-- {name}:", *(lines[-4:] or ["(no figures; see " + str(log) + ")"]), sep="\n   ")
EOF
