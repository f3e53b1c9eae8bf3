#!/bin/bash
# bench/compare_llamacpp.sh - kvserve against llama.cpp (tag b4747) on the same GGUF files, the two
# engines run alternately, 2 threads, weights loaded into memory (llama-bench -mmp 0); writes a table
# of kvserve / llama.cpp ratios (median and range over the repetitions) into bench/RESULTS.md.
#
#   bench/compare_llamacpp.sh                 # everything (see the variables below)
#   SHAPES=llama2-110m TYPES="q4_k_m" REPS=2 bench/compare_llamacpp.sh
#
# llama.cpp is a benchmark peer only: it is built outside the repository from a public copy of its
# source (MIRROR: a clone of github.com/ggerganov/llama.cpp holding the tag) into PEER, and nothing of
# it enters the project.  Only llama-bench and llama-quantize are built (-j2).
#
# Files: `kvserve synth` writes each shape in F16 and, for the quantized types, with llama-quantize's
# per-tensor rules (--ftype / --type q4_k_m); llama-quantize also quantizes the F16 file (LQ_TYPES),
# so that both engines run on a file of each quantizer.
#
# Measured per file and repetition, llama.cpp first then kvserve:
#   prefill  llama-bench pp512 (one 512-token batch)   vs bench_model's 512-token prefill step
#   decode   llama-bench tg64 (64 tokens from an empty context) vs bench_model's batch-1 decode at a
#            context of 32 (median step), both tokens/s
# and the machine's read bandwidth (bench_model, 2 threads, best of its runs) with the batch-1 roofline.
# The machine is shared: the load average is recorded around every run, and each engine's own spread
# over the repetitions is printed next to the ratios.
# SERVE=1 then runs bench/compare_serve.sh (llama-server / llama-cli against kvserve serve / generate:
# 16 concurrent streams, and a whole-process one-shot generate with wall time and peak memory).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${MIRROR:-/work/.mirror/ggerganov+llama.cpp/repo}
TAG=${TAG:-b4747}
PEER=${PEER:-/work/peer-llamacpp}
BUILD=${BUILD:-$ROOT/build}
FILES=${FILES:-$ROOT/build-bench/cmp}
SHAPES=${SHAPES:-"llama2-110m llama3.2-1b"}
TYPES=${TYPES:-"f16 q8_0 q4_0 q4_k_m q6_k"}
LQ_TYPES=${LQ_TYPES:-"q4_k_m q6_k"}
REPS=${REPS:-3}
REPS_1B=${REPS_1B:-$REPS}   # repetitions of the llama3.2-1b files (they take ~4x longer)
THREADS=${THREADS:-2}
OUT=${OUT:-$ROOT/bench/RESULTS.md}
LOG=${LOG:-$FILES/runs.jsonl}

mkdir -p "$FILES"
if [ -n "${TABLE_ONLY:-}" ]; then
    exec /usr/bin/python3 "$ROOT/bench/compare_table.py" "$LOG" "$OUT" "$TAG" "$THREADS" "$REPS"
fi

# ---- the peer ----
if [ ! -x "$PEER/build/bin/llama-bench" ] || [ ! -x "$PEER/build/bin/llama-quantize" ]; then
    echo "== building llama.cpp $TAG in $PEER (llama-bench, llama-quantize)"
    mkdir -p "$PEER"
    git -C "$MIRROR" archive "$TAG" ggml src include common examples/llama-bench examples/quantize \
        CMakeLists.txt cmake | tar -x -C "$PEER"
    # only the two tools: a minimal examples/ and an empty pocs/
    mkdir -p "$PEER/pocs" && : > "$PEER/pocs/CMakeLists.txt"
    printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\ninclude_directories(${CMAKE_CURRENT_SOURCE_DIR})\nadd_subdirectory(llama-bench)\nadd_subdirectory(quantize)\n' \
        > "$PEER/examples/CMakeLists.txt"
    cmake -S "$PEER" -B "$PEER/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF > "$PEER/cmake.log"
    cmake --build "$PEER/build" -j2 --target llama-bench llama-quantize > "$PEER/build.log"
fi
LB=$PEER/build/bin/llama-bench
LQ=$PEER/build/bin/llama-quantize

# ---- kvserve ----
cmake --build "$BUILD" -j2 --target kvserve bench_model > /dev/null
KV=$BUILD/kvserve
BM=$BUILD/bench/bench_model

# ---- the files ----
files=()
for shape in $SHAPES; do
    f16=$FILES/$shape-f16.gguf
    [ -s "$f16" ] || "$KV" synth --preset "$shape" --type f16 -o "$f16"
    for t in $TYPES; do
        f=$FILES/$shape-$t.gguf
        case $t in
            f16) ;;
            q4_k_m|q4_k_s|q5_k_m|q5_k_s|q3_k_m) [ -s "$f" ] || "$KV" synth --preset "$shape" --type "$t" -o "$f" ;;
            *) [ -s "$f" ] || "$KV" synth --preset "$shape" --ftype "$t" -o "$f" ;;
        esac
        files+=("$f")
    done
    for t in $LQ_TYPES; do
        f=$FILES/$shape-$t-llama-quantize.gguf
        [ -s "$f" ] || "$LQ" "$f16" "$f" "$(echo "$t" | tr a-z A-Z)" 2 > "$f.log" 2>&1
        files+=("$f")
    done
done

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# ---- the runs, alternating ----
: > "$LOG"
for rep in $(seq 1 "$REPS"); do
    for f in "${files[@]}"; do
        case $(basename "$f") in llama3.2-1b-*) [ "$rep" -le "$REPS_1B" ] || continue ;; esac
        l0=$(loadavg)
        lj=$("$LB" -m "$f" -mmp 0 -t "$THREADS" -p 512 -n 64 -r 1 -o json 2> /dev/null | tr -d '\n')
        l1=$(loadavg)
        kj=$("$BM" -m "$f" -t "$THREADS" --ctx 32 --batches 1 --prefill 512 --prefill-reps 2 \
                   --prefill-warmup 1 --steps 24 --engine-prompt 0 --seconds 6 --bw-mib 512 2> /dev/null | grep '^{"bench"')
        l2=$(loadavg)
        printf '{"file":"%s","rep":%d,"load":[%s,%s,%s],"llama":%s,"kvserve":%s}\n' \
            "$(basename "$f")" "$rep" "$l0" "$l1" "$l2" "$lj" "$kj" >> "$LOG"
        echo "rep $rep $(basename "$f") done (load $l0 $l1 $l2)"
    done
done

# ---- the table (bench/compare_table.py; TABLE_ONLY=1 remakes it from an existing LOG) ----
/usr/bin/python3 "$ROOT/bench/compare_table.py" "$LOG" "$OUT" "$TAG" "$THREADS" "$REPS"

# ---- whole processes: the servers at 16 streams, one-shot generate (bench/compare_serve.sh) ----
if [ -n "${SERVE:-}" ]; then
    MIRROR=$MIRROR TAG=$TAG PEER=$PEER BUILD=$BUILD FILES=$FILES THREADS=$THREADS "$ROOT/bench/compare_serve.sh"
fi
