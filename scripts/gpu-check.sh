#!/usr/bin/env bash
# gpu-check.sh - the CUDA backend's checks on a lent GPU, in one run.
#
#   bash scripts/gpu-check.sh prepare   # here (no GPU): build build-gpu/carry
#   bash scripts/gpu-check.sh run       # on the GPU machine, with build-gpu/carry carried
#
# prepare builds kvserve and the GPU tests with the CUDA backend for sm_80 and
# sm_90 (static cudart) and copies them, with the shared libraries they need
# that a bare machine may lack, into build-gpu/carry (a few MiB: the device
# tool carries at most 64 MiB).  run needs only python3 and the NVIDIA driver:
#   1. the card, driver and nvidia-smi's view;
#   2. test_backend_ops: every kernel against the CPU backend;
#   3. tests/py/test_cuda_e2e.py: greedy tokens on CUDA equal the CPU's;
#   4. the budget on the card: `plan --device <card>` against a real start's
#      memory report for the 1B and 8B shapes (synth --header-only files,
#      whose weights read as zeros: real sizes, no minutes of writing), and the
#      peak device memory of the process (nvidia-smi, sampled) against the
#      budget;
# and writes everything to $OUT (the device tool's folder) or gpu-results/,
# with a summary in RESULTS-gpu.md there, to be copied into bench/ here.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-}"
CARRY=build-gpu/carry

prepare() {
  set -e
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DKVS_CUDA=ON -DKVS_NATIVE=OFF \
        -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
  cmake --build build-gpu -j"$(nproc)" --target kvserve test_backend_ops
  rm -rf "$CARRY" && mkdir -p "$CARRY/lib"
  cp build-gpu/kvserve build-gpu/tests/test_backend_ops "$CARRY/"
  # Libraries outside glibc and the driver, so a bare machine can run them.
  for bin in "$CARRY/kvserve" "$CARRY/test_backend_ops"; do
    ldd "$bin" | awk '/=> \//{print $3}' | grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libcuda)\.so' |
      xargs -r -I{} cp -L -n {} "$CARRY/lib/"
  done
  du -sh "$CARRY"
}

run_checks() {
  local out="${OUT:-gpu-results}"
  mkdir -p "$out"
  export LD_LIBRARY_PATH="$PWD/$CARRY/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export KVSERVE="$PWD/$CARRY/kvserve" KVS_SHARED="${KVS_SHARED:-$PWD/shared}" KVS_BUILD_DIR="$out"
  [ -d "$KVS_SHARED/models" ] || KVS_SHARED="$PWD/../shared"
  local sum="$out/RESULTS-gpu.md" rc=0
  {
    echo "# kvserve on a GPU: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 | head -5
    echo '```'
  } >"$sum"

  echo "== test_backend_ops"
  "$CARRY/test_backend_ops" >"$out/backend_ops.log" 2>&1
  case $? in 0) r=pass ;; 77) r="skipped: no device"; rc=1 ;; *) r=FAIL; rc=1 ;; esac
  tail -n 15 "$out/backend_ops.log"
  echo "- test_backend_ops: $r" >>"$sum"

  echo "== test_cuda_e2e"
  KVS_GPU_RESULTS="$out/e2e.json" python3 tests/py/test_cuda_e2e.py >"$out/e2e.log" 2>&1
  case $? in 0) r=pass ;; 77) r="skipped: no device"; rc=1 ;; *) r=FAIL; rc=1 ;; esac
  tail -n 15 "$out/e2e.log"
  echo "- test_cuda_e2e: $r" >>"$sum"

  echo "== budget: plan vs start"
  local card
  card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z')"
  case "$card" in *h200*) card=h200 ;; *h100*) card=h100 ;; *a100*) card=a100-80gb ;; *) card="" ;; esac
  for preset in llama3.2-1b llama3.1-8b; do
    local m="$out/$preset.gguf"
    "$KVSERVE" synth -o "$m" --preset "$preset" --type bf16 --header-only >/dev/null 2>&1 || { echo "synth $preset failed"; rc=1; continue; }
    [ -n "$card" ] && "$KVSERVE" plan -m "$m" --device "$card" --max-model-len 8192 --json >"$out/plan-$preset.json" 2>"$out/plan-$preset.err"
    # A start on the card, sampling the process's device memory meanwhile.
    ( while sleep 0.2; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null; done ) \
      >"$out/smi-$preset.log" & local sampler=$!
    "$KVSERVE" generate -m "$m" --device cuda --max-model-len 8192 -p "Once upon a time" -n 64 --ignore-eos \
      --memory-report "$out/start-$preset.json" >"$out/gen-$preset.log" 2>&1 || { echo "start $preset failed"; rc=1; }
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
    python3 - "$out" "$preset" >>"$sum" <<'EOF'
import json, os, sys
out, preset = sys.argv[1], sys.argv[2]
def load(p):
    try: return json.load(open(p))
    except Exception: return None
plan, start = load(f"{out}/plan-{preset}.json"), load(f"{out}/start-{preset}.json")
print(f"\n## {preset} (bf16, max-model-len 8192)\n")
if not start:
    print("- start: no memory report (see gen log)"); sys.exit(0)
keys = [k for k in start if isinstance(start[k], (int, float)) and not isinstance(start[k], bool)]
print("| key | plan | start | diff |\n|---|---|---|---|")
for k in keys:
    p = plan.get(k) if plan else None
    d = "" if p is None else f"{(start[k] - p):+}"
    print(f"| {k} | {p} | {start[k]} | {d} |")
peak = 0
for line in open(f"{out}/smi-{preset}.log"):
    try: peak = max(peak, int(line.split(",")[1]) * 1048576)
    except Exception: pass
b = start.get("budget_bytes")
print(f"\n- peak device memory (nvidia-smi, sampled every 0.2 s): {peak / 2**30:.3f} GiB; budget {b / 2**30 if b else 0:.3f} GiB; "
      f"{'inside' if b and peak <= b else 'OVER'}")
EOF
    rm -f "$m"
  done
  cat "$sum"
  return $rc
}

case "$MODE" in
  prepare) prepare ;;
  run) run_checks ;;
  *) echo "usage: bash scripts/gpu-check.sh prepare|run" >&2; exit 2 ;;
esac
