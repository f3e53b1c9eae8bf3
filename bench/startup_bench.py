#!/usr/bin/env python3
"""Start-up and one-shot generate times of kvserve binaries, alternated.

    bench/startup_bench.py -m MODEL [-n TOKENS] [--reps R] NAME=BINARY[,FLAG...] ...

Each repetition runs every NAME once, in order (so a noisy neighbour hits
all of them alike), as `BINARY generate -m MODEL -p hi -n TOKENS
--temperature 0 -v FLAGS`, and records the whole process's wall time and
the start-up phases from its log ("Model loading took ..." and, where the
binary prints it, "Start-up took ...: ... load, profile, KV cache").
Prints, per NAME, the median (min-max) of each figure and, against the
first NAME, the ratio of medians.  The machine's 1-minute load average is
printed around the runs.

Example (the table of bench/RESULTS.md, "Start-up"):

    bench/startup_bench.py -m /tmp/1b-f16.gguf --reps 5 \\
        before=/tmp/base/build/kvserve after=build/kvserve full=build/kvserve,--full-profile
"""
import argparse
import os
import re
import statistics
import subprocess
import time

PHASES = re.compile(r"Start-up took ([\d.]+) seconds: header and budget ([\d.]+), load ([\d.]+), "
                    r"profile ([\d.]+)[^,]*, KV cache ([\d.]+), other ([\d.]+)")
LOADED = re.compile(r"Model loading took [\d.]+ GiB and ([\d.]+) seconds")


def one(binary, flags, model, n):
    t0 = time.monotonic()
    p = subprocess.run([binary, "generate", "-m", model, "-p", "hi", "-n", str(n), "--temperature", "0", "-v"] + flags,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=3600)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (binary, p.stderr))
    r = {"wall": wall}
    m = LOADED.search(p.stderr)
    if m:
        r["load"] = float(m.group(1))
    m = PHASES.search(p.stderr)
    if m:
        r.update(startup=float(m.group(1)), load=float(m.group(3)), profile=float(m.group(4)),
                 kv=float(m.group(5)), other=float(m.group(6)))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-n", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("runs", nargs="+", help="NAME=BINARY[,FLAG...]")
    a = ap.parse_args()
    runs = []
    for spec in a.runs:
        name, rest = spec.split("=", 1)
        parts = rest.split(",")
        runs.append((name, parts[0], parts[1:]))
    res = {name: [] for name, _, _ in runs}
    print("load average before: %.2f" % os.getloadavg()[0])
    for rep in range(a.reps):
        for name, binary, flags in runs:
            r = one(binary, flags, a.model, a.n)
            res[name].append(r)
            print("rep %d %-8s %s" % (rep + 1, name, " ".join("%s %.3f" % kv for kv in r.items())), flush=True)
    print("load average after: %.2f" % os.getloadavg()[0])
    keys = ["wall", "startup", "load", "profile", "kv", "other"]
    first = runs[0][0]
    print("\n| run | " + " | ".join(k for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, _, _ in runs:
        cells = []
        for k in keys:
            v = [r[k] for r in res[name] if k in r]
            if not v:
                cells.append("-")
                continue
            med = statistics.median(v)
            ref = [r[k] for r in res[first] if k in r]
            ratio = " (%.2fx)" % (med / statistics.median(ref)) if ref and name != first and med > 0 else ""
            cells.append("%.3f [%.3f-%.3f]%s" % (med, min(v), max(v), ratio))
        print("| %s | %s |" % (name, " | ".join(cells)))
    print("\nmedian [min-max] seconds over %d repetitions; (Nx) = this run's median / %s's" % (a.reps, first))


if __name__ == "__main__":
    main()
