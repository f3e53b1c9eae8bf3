#!/bin/bash
# bench/compare_serve.sh - kvserve against llama.cpp (tag b4747) as whole processes on the same GGUF
# files, the two engines run alternately, 2 threads: (a) 16 concurrent streams through each server,
# (b)+(c) a one-shot greedy generate of 128 tokens (load and start-up included), wall time and peak
# resident memory from /usr/bin/time -v.  Prints a markdown summary (median and range over REPS) and
# keeps every run in LOG.  bench/compare_llamacpp.sh runs it after its table when SERVE=1.
#
#   bench/compare_serve.sh                                  # both parts, the files below
#   PARTS=gen FILES_LIST="build-bench/cmp/llama3.2-1b-q4_k_m.gguf" REPS=3 bench/compare_serve.sh
#
# The peer is built (llama-cli, llama-server, -j2) outside the repository from a public copy of its
# source, like bench/compare_llamacpp.sh does for llama-bench; nothing of it enters the project.
#
# Settings of the two engines (both at THREADS threads, weights of FILE):
#   serve     llama-server -m FILE -t 2 -tb 2 -np 16 -c 16*(IN+OUT) --port P   (continuous batching is
#             its default; one slot of IN+OUT tokens per stream)
#             kvserve serve -m FILE -t 2 --max-num-seqs 16 --max-model-len IN+OUT --port P
#             then bench/serve_bench.py --num-prompts NP --max-concurrency 16 --random-input-len IN
#             --random-output-len OUT (fixed lengths, ignore_eos, temperature 0, the same seed, so the
#             same token prompts through each server's own /tokenize)
#   generate  llama-cli -m FILE -t 2 -tb 2 -p PROMPT -n 128 --temp 0 --ignore-eos -no-cnv
#             (its defaults otherwise: -c 4096, mmap, a warm-up pass)
#             kvserve generate -m FILE -t 2 -p PROMPT -n 128 --temperature 0 --ignore-eos
#             (its defaults otherwise: weights loaded into memory, the model's context length)
# The machine is shared: the 1-minute load average is recorded before and after every run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${MIRROR:-/work/.mirror/ggerganov+llama.cpp/repo}
TAG=${TAG:-b4747}
PEER=${PEER:-/work/peer-llamacpp}
BUILD=${BUILD:-$ROOT/build}
FILES=${FILES:-$ROOT/build-bench/cmp}
FILES_LIST=${FILES_LIST:-"$FILES/llama3.2-1b-q4_k_m.gguf $FILES/llama3.2-1b-f16.gguf"}
PARTS=${PARTS:-"serve gen"}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
STREAMS=${STREAMS:-16}
IN=${IN:-128}
OUT_LEN=${OUT_LEN:-128}
NP=${NP:-$STREAMS}
NGEN=${NGEN:-128}
PROMPT=${PROMPT:-"Once upon a time, in a small village at the edge of a great forest, there lived a girl named Lily who loved to explore."}
PORT=${PORT:-8391}
LOG=${LOG:-$FILES/serve_runs.jsonl}
TMP=${TMP:-$(mktemp -d)}

# ---- the peer: llama-cli and llama-server ----
if [ ! -x "$PEER/build/bin/llama-cli" ] || [ ! -x "$PEER/build/bin/llama-server" ]; then
    echo "== building llama.cpp $TAG in $PEER (llama-cli, llama-server)"
    mkdir -p "$PEER"
    git -C "$MIRROR" archive "$TAG" ggml src include common scripts/xxd.cmake examples/llama-bench \
        examples/quantize examples/main examples/server CMakeLists.txt cmake | tar -x -C "$PEER"
    mkdir -p "$PEER/pocs" && : > "$PEER/pocs/CMakeLists.txt"
    printf 'find_package(Threads REQUIRED)\nllama_add_compile_flags()\ninclude_directories(${CMAKE_CURRENT_SOURCE_DIR})\nadd_subdirectory(llama-bench)\nadd_subdirectory(quantize)\nadd_subdirectory(main)\nadd_subdirectory(server)\n' \
        > "$PEER/examples/CMakeLists.txt"
    cmake -S "$PEER" -B "$PEER/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON > "$PEER/cmake.log"
    nice cmake --build "$PEER/build" -j2 --target llama-cli llama-server > "$PEER/build.log"
fi
LC=$PEER/build/bin/llama-cli
LS=$PEER/build/bin/llama-server

# ---- kvserve ----
nice cmake --build "$BUILD" -j2 --target kvserve > /dev/null
KV=$BUILD/kvserve

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# time_v OUTFILE CMD...: runs CMD under /usr/bin/time -v; prints "wall_s max_rss_kib"
time_v() {
    local out=$1; shift
    /usr/bin/time -v -o "$out.time" "$@" > "$out.stdout" 2> "$out.stderr" || {
        echo "failed: $* (see $out.stderr)" >&2; tail -5 "$out.stderr" >&2; return 1; }
    /usr/bin/python3 - "$out.time" <<'EOF'
import sys
w = r = None
for line in open(sys.argv[1]):
    k, _, v = line.strip().rpartition(": ")
    if k.startswith("Elapsed (wall clock) time"):
        s = 0.0
        for part in v.split(":"):
            s = s * 60 + float(part)
        w = s
    elif k == "Maximum resident set size (kbytes)":
        r = int(v)
print("%.3f %d" % (w, r))
EOF
}

wait_ready() {  # the server answers /health 200 (llama-server: 503 while it loads)
    local pid=$1 port=$2
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2> /dev/null || return 1
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ] && return 0
        sleep 0.2
    done
    return 1
}

# serve_run ENGINE FILE PORT: starts the server under /usr/bin/time -v, runs serve_bench, stops it (SIGTERM);
# prints the serve_bench JSON with the server's wall/RSS added
serve_run() {
    local eng=$1 f=$2 port=$3 out=$TMP/serve-$1-$3 pid ctx=$((STREAMS * (IN + OUT_LEN)))
    case $eng in
        llama) /usr/bin/time -v -o "$out.time" "$LS" -m "$f" -t "$THREADS" -tb "$THREADS" -np "$STREAMS" \
                   -c "$ctx" --host 127.0.0.1 --port "$port" > "$out.log" 2>&1 & ;;
        kvserve) /usr/bin/time -v -o "$out.time" "$KV" serve -m "$f" -t "$THREADS" --max-num-seqs "$STREAMS" \
                   --max-model-len $((IN + OUT_LEN)) --host 127.0.0.1 --port "$port" > "$out.log" 2>&1 & ;;
    esac
    pid=$!
    if ! wait_ready "$pid" "$port"; then
        echo "$eng server did not start (see $out.log)" >&2; tail -5 "$out.log" >&2; kill "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true; return 1
    fi
    local rc=0
    /usr/bin/python3 "$ROOT/bench/serve_bench.py" --port "$port" --num-prompts "$NP" --max-concurrency "$STREAMS" \
        --random-input-len "$IN" --random-output-len "$OUT_LEN" --temperature 0 --seed 0 \
        --json-out "$out.json" > "$out.bench" 2>&1 || rc=$?
    # the server process is /usr/bin/time's child: signal it, then wait for time to write its figures
    kill -TERM $(pgrep -P "$pid") 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    if [ $rc -ne 0 ]; then echo "serve_bench against $eng failed (see $out.bench)" >&2; tail -3 "$out.bench" >&2; fi
    /usr/bin/python3 - "$out.json" "$out.time" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
for line in open(sys.argv[2]):
    if line.strip().startswith("Maximum resident set size (kbytes)"):
        r["server_max_rss_kib"] = int(line.split(": ")[1])
print(json.dumps(r))
EOF
}

: > "$LOG"
nrun=0
for rep in $(seq 1 "$REPS"); do
    for f in $FILES_LIST; do
        name=$(basename "$f")
        if [[ " $PARTS " == *" serve "* ]]; then
            for eng in llama kvserve; do
                l0=$(loadavg)
                # a fresh port per run: the last server's port stays in TIME_WAIT for a minute
                port=$((PORT + nrun)); nrun=$((nrun + 1))
                j=$(serve_run "$eng" "$f" "$port") || j=null
                l1=$(loadavg)
                printf '{"part":"serve","file":"%s","rep":%d,"engine":"%s","load":[%s,%s],"res":%s}\n' \
                    "$name" "$rep" "$eng" "$l0" "$l1" "$j" >> "$LOG"
                echo "rep $rep serve $name $eng (load $l0 $l1)"
            done
        fi
        if [[ " $PARTS " == *" gen "* ]]; then
            for eng in llama kvserve; do
                l0=$(loadavg)
                case $eng in
                    llama) r=$(time_v "$TMP/gen-$eng-$rep-$name" "$LC" -m "$f" -t "$THREADS" -tb "$THREADS" -p "$PROMPT" \
                               -n "$NGEN" --temp 0 --ignore-eos -no-cnv) || r="null null" ;;
                    kvserve) r=$(time_v "$TMP/gen-$eng-$rep-$name" "$KV" generate -m "$f" -t "$THREADS" -p "$PROMPT" \
                               -n "$NGEN" --temperature 0 --ignore-eos) || r="null null" ;;
                esac
                l1=$(loadavg)
                set -- $r
                printf '{"part":"gen","file":"%s","rep":%d,"engine":"%s","load":[%s,%s],"wall_s":%s,"max_rss_kib":%s}\n' \
                    "$name" "$rep" "$eng" "$l0" "$l1" "$1" "$2" >> "$LOG"
                echo "rep $rep gen $name $eng: $1 s, $2 KiB (load $l0 $l1)"
            done
        fi
    done
done

# ---- the summary: medians and ranges, kvserve / llama.cpp ----
/usr/bin/python3 - "$LOG" "$TAG" "$THREADS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tag, threads = sys.argv[2], sys.argv[3]
def med(xs):
    xs = [x for x in xs if x is not None]
    return (statistics.median(xs), min(xs), max(xs), len(xs)) if xs else None
def fmt(m, f="%.1f"):
    return "n/a" if not m else (f % m[0]) + " (" + (f % m[1]) + "-" + (f % m[2]) + ")"
files = sorted({r["file"] for r in runs})
loads = [x for r in runs for x in r["load"]]
print("load average (1 min) over the runs: %.2f-%.2f, median %.2f" % (min(loads), max(loads), statistics.median(loads)))
serve = [r for r in runs if r["part"] == "serve"]
if serve:
    print("\n| file | llama-server out tok/s | kvserve out tok/s | ratio | llama-server RSS MiB | kvserve RSS MiB | failed (llama/kvs) |")
    print("|---|---|---|---|---|---|---|")
    for f in files:
        g = lambda e, k: [r["res"].get(k) if r["res"] else None for r in serve if r["file"] == f and r["engine"] == e]
        if not g("llama", "output_throughput"):
            continue
        ratios = [k / l for k, l in zip(g("kvserve", "output_throughput"), g("llama", "output_throughput")) if k and l]
        mib = lambda xs: [x / 1024 if x else None for x in xs]
        print("| %s | %s | %s | %s | %s | %s | %s/%s |" % (f, fmt(med(g("llama", "output_throughput"))),
              fmt(med(g("kvserve", "output_throughput"))), fmt(med(ratios), "%.2f"),
              fmt(med(mib(g("llama", "server_max_rss_kib"))), "%.0f"), fmt(med(mib(g("kvserve", "server_max_rss_kib"))), "%.0f"),
              sum(x or 0 for x in g("llama", "failed_requests")), sum(x or 0 for x in g("kvserve", "failed_requests"))))
gen = [r for r in runs if r["part"] == "gen"]
if gen:
    print("\n| file | llama-cli wall s | kvserve wall s | ratio | llama-cli max RSS MiB | kvserve max RSS MiB | ratio |")
    print("|---|---|---|---|---|---|---|")
    for f in files:
        g = lambda e, k: [r[k] for r in gen if r["file"] == f and r["engine"] == e]
        if not g("llama", "wall_s"):
            continue
        wr = [k / l for k, l in zip(g("kvserve", "wall_s"), g("llama", "wall_s")) if k and l]
        rr = [k / l for k, l in zip(g("kvserve", "max_rss_kib"), g("llama", "max_rss_kib")) if k and l]
        mib = lambda xs: [x / 1024 if x else None for x in xs]
        print("| %s | %s | %s | %s | %s | %s | %s |" % (f, fmt(med(g("llama", "wall_s")), "%.2f"), fmt(med(g("kvserve", "wall_s")), "%.2f"),
              fmt(med(wr), "%.2f"), fmt(med(mib(g("llama", "max_rss_kib"))), "%.0f"), fmt(med(mib(g("kvserve", "max_rss_kib"))), "%.0f"),
              fmt(med(rr), "%.2f")))
EOF
echo "runs in $LOG, outputs in $TMP"
