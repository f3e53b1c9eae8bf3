"""The start-up profile: the default walk of the largest step's allocations
gives the same start as the computed step (--full-profile).

For stories260K, a random-weight synth model of another family (qwen3: q/k
norms, GQA) and a header-only synth of llama2-110m's shape, under several
limits (batched tokens, sequences, block sizes, max-model-len, KV dtypes,
--mmap, threads), `kvserve generate --memory-report` runs once with each
profile, and:

  * every key of the memory report is equal (weights, activation peak and
    its formula, reserves, KV blocks, lengths, slack, ...), but for the two
    observations (the overhead measured beyond the ledger, and VmHWM);
  * the measured overhead of the walk is within 1 MiB of the full
    profile's (release builds): the walk's small real step leaves the same
    code, stacks and scratch resident (the sanitizers' quarantine makes the
    reading meaningless there);
  * the greedy tokens generated are identical;
  * the start-up log names the profile that ran (walk / full).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memtest_util as mt  # noqa: E402

OBSERVED = {"overhead_measured_bytes", "peak_process_bytes"}


def start(model, flags, report, full):
    if os.path.exists(report):
        os.unlink(report)
    args = ["generate", "-m", model, "-p", "Once upon a time", "-n", "6", "--temperature", "0", "--json", "-v",
            "--memory-report", report] + flags + (["--full-profile"] if full else [])
    p = mt.run(args)
    with open(report) as f:
        rep = json.load(f)
    return rep, json.loads(p.stdout)["output_token_ids"], p.stderr


def main():
    asan = mt.sanitizer_build()
    work = os.path.join(mt.BUILD, "startup_profile")
    os.makedirs(work, exist_ok=True)
    q3 = os.path.join(work, "qwen3-mini-f16.gguf")
    if not os.path.exists(q3):
        mt.run(["synth", "-o", q3, "--preset", "qwen3-0.6b", "--layers", "2", "--vocab", "2048", "--ctx", "4096",
                "--dim", "256", "--hidden", "768", "--heads", "4", "--kv-heads", "2", "--type", "f16"])
    l110 = mt.synth(os.path.join(work, "llama2-110m-f16.gguf"), ["--preset", "llama2-110m", "--type", "f16"])
    S = mt.STORIES
    base = ["--device-memory", "2GiB"]
    grid = [
        (S, []),
        (S, ["--max-num-batched-tokens", "2048", "--max-num-seqs", "256", "--block-size", "32"]),
        (S, ["--max-num-batched-tokens", "64", "--max-num-seqs", "8", "--kv-cache-dtype", "f16",
             "--max-model-len", "100", "--block-size", "8"]),
        (S, ["--max-num-batched-tokens", "300", "--max-num-seqs", "300", "--kv-cache-dtype", "bf16", "--mmap",
             "--threads", "1"]),
        (S, ["--max-model-len", "auto", "--block-size", "1", "--max-num-batched-tokens", "17"]),
        (q3, ["--max-num-batched-tokens", "128", "--max-num-seqs", "16", "--max-model-len", "1024"]),
        (q3, ["--kv-cache-dtype", "f16", "--block-size", "64", "--max-model-len", "auto"]),
        (l110, ["--max-num-batched-tokens", "32", "--max-num-seqs", "4", "--max-model-len", "512"]),
    ]
    if asan:
        grid = grid[:3] + grid[5:6]
    failures = []
    fail = failures.append
    for i, (model, flags) in enumerate(grid):
        name = "#%d %s %s" % (i, os.path.basename(model), " ".join(flags))
        rw, tw, ew = start(model, base + flags, os.path.join(work, "walk.json"), False)
        rf, tf, ef = start(model, base + flags, os.path.join(work, "full.json"), True)
        for k in sorted(set(rw) | set(rf)):
            if k not in OBSERVED and rw.get(k) != rf.get(k):
                fail("%s: %s: walk %s, full profile %s" % (name, k, rw.get(k), rf.get(k)))
        if rw["activation_peak_bytes"] != rw["activation_formula_bytes"]:
            fail("%s: walked peak %d, from the shapes %d" % (name, rw["activation_peak_bytes"],
                                                             rw["activation_formula_bytes"]))
        d = rw["overhead_measured_bytes"] - rf["overhead_measured_bytes"]
        if not asan and abs(d) > mt.MIB:
            fail("%s: measured overhead %d after the walk, %d after the full profile" %
                 (name, rw["overhead_measured_bytes"], rf["overhead_measured_bytes"]))
        if tw != tf:
            fail("%s: tokens %s after the walk, %s after the full profile" % (name, tw, tf))
        if "profile" not in ew or "(walk)" not in ew or "(full)" not in ef:
            fail("%s: the start-up log does not name the profile" % name)
        print("%-90s peak %9d  overhead walk %.2f / full %.2f MiB" %
              (name[:90], rw["activation_peak_bytes"], rw["overhead_measured_bytes"] / mt.MIB,
               rf["overhead_measured_bytes"] / mt.MIB))
    if failures:
        print("\n".join(failures))
        sys.exit("FAIL: %d problems" % len(failures))
    print("OK: %d configurations" % len(grid))


if __name__ == "__main__":
    main()
