#!/usr/bin/env bash
# One device run: build the probe with the machine's own nvcc (fall back to
# the binaries built elsewhere and carried in tools/cuda_probe/bin/), then run
#   noblas-lazy   context + our kernels + allocations + graphs, no cuBLAS linked
#   noblas-eager  the same with CUDA_MODULE_LOADING=EAGER
#   full-lazy     everything, cuBLAS + cuBLASLt included
#   full-eager    the same with CUDA_MODULE_LOADING=EAGER
#   lt-only-lazy  everything but cuBLAS proper (cuBLASLt cost on its own)
# Output: $OUT/probe.log (everything), $OUT/results.jsonl (one JSON per run).
# Device call: run(command="bash tools/cuda_probe/run_on_device.sh",
#                  carry=["tools/cuda_probe/bin"], timeout_s=300)
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/cuda_probe_out}
mkdir -p "$OUT"

smi_mem() {
    nvidia-smi --query-gpu=memory.used,memory.reserved,memory.total --format=csv,noheader 2>/dev/null ||
        nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader 2>/dev/null || true
}

body() {
    echo "== environment ($(date -u +%FT%TZ))"
    nvidia-smi || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,persistence_mode,compute_mode,mig.mode.current --format=csv || true
    nvidia-smi -q -d MEMORY || true
    cat /proc/driver/nvidia/version 2>/dev/null || true
    uname -r
    command -v nvcc && nvcc --version | tail -2
    ls -l /usr/local/cuda/lib64/libcublas.so* 2>/dev/null | head -3

    echo "== build on device"
    B=tools/cuda_probe/bin-device
    if timeout 150 bash tools/cuda_probe/build.sh "$B"; then
        echo "using device-built binaries ($B)"
    else
        B=tools/cuda_probe/bin
        echo "DEVICE BUILD FAILED: falling back to carried binaries ($B)"
    fi
    export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    ldd "$B/cuda_probe" | grep -E "cublas|cudart" || true

    run() {
        local name=$1
        shift
        echo
        echo "== run $name   (nvidia-smi before: $(smi_mem))"
        timeout 90 "$@" --variant "$name"
        echo "== $name exit status $?   (nvidia-smi after: $(smi_mem))"
        sleep 1
    }
    run noblas-lazy  env -u CUDA_MODULE_LOADING "$B/cuda_probe_noblas"
    run noblas-eager env CUDA_MODULE_LOADING=EAGER "$B/cuda_probe_noblas"
    run full-lazy    env -u CUDA_MODULE_LOADING "$B/cuda_probe"
    run full-eager   env CUDA_MODULE_LOADING=EAGER "$B/cuda_probe"
    run lt-only-lazy env -u CUDA_MODULE_LOADING "$B/cuda_probe" --skip-cublas
    echo
    echo "== done ($(date -u +%FT%TZ))"
}

body 2>&1 | tee "$OUT/probe.log"
grep '^JSON:' "$OUT/probe.log" | sed 's/^JSON://' > "$OUT/results.jsonl"
echo "== $(wc -l < "$OUT/results.jsonl") JSON lines in $OUT/results.jsonl"
