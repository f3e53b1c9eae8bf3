#!/usr/bin/env bash
# Build the two probe binaries into OUTDIR (default: tools/cuda_probe/bin,
# which tools/cuda_probe/.gitignore keeps out of git):
#   cuda_probe         links cuBLAS + cuBLASLt (all steps)
#   cuda_probe_noblas  no cuBLAS at all (clean context figures, lazy and eager)
# Env: NVCC (default nvcc), CC (default cc), ARCH (default sm_90).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/bin}
NVCC=${NVCC:-nvcc}
CC=${CC:-cc}
ARCH=${ARCH:-sm_90}
nvcc_path=$(command -v "$NVCC")
cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc_path")")")
mkdir -p "$out"
cflags=(-std=c17 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE "-I$cuda_home/include")

"$NVCC" -O2 -arch="$ARCH" -Xcompiler -Wall -c "$here/probe.cu" -o "$out/probe.o"
for f in rec report nvml_dl blas_steps blas_none; do
    "$CC" "${cflags[@]}" -c "$here/$f.c" -o "$out/$f.o"
done
"$CC" "${cflags[@]}" '-DPROBE_BINARY="full"' -c "$here/main.c" -o "$out/main_full.o"
"$CC" "${cflags[@]}" '-DPROBE_BINARY="noblas"' -c "$here/main.c" -o "$out/main_noblas.o"
"$NVCC" -arch="$ARCH" -o "$out/cuda_probe" "$out/main_full.o" "$out/rec.o" "$out/report.o" \
    "$out/nvml_dl.o" "$out/blas_steps.o" "$out/probe.o" -lcublas -lcublasLt -ldl
"$NVCC" -arch="$ARCH" -o "$out/cuda_probe_noblas" "$out/main_noblas.o" "$out/rec.o" "$out/report.o" \
    "$out/nvml_dl.o" "$out/blas_none.o" "$out/probe.o" -ldl
echo "built: $out/cuda_probe $out/cuda_probe_noblas ($("$NVCC" --version | tail -1))"
