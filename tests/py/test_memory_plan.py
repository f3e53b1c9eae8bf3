"""kvserve plan == what a real start gives, and two starts are identical,
on the CPU backend.

For a grid of 30+ configurations (stories260K; header-only synth models of
llama2-110m's shape in f16 and of Qwen3-0.6B's shape; device sizes,
utilizations, block sizes, batch limits, KV dtypes, max-model-len settings,
--mmap, --no-prefix-caching, --kv-cache-memory, thread counts and serving
limits), run `kvserve plan --json` and `kvserve generate ... --memory-report`
twice, and check:

  * every key of the table is equal in the plan and both starts, but for
    the two that are observations: overhead_measured_bytes (what a start
    measured beyond the ledger, which must fit the computed reserve) and
    peak_process_bytes (the observed VmHWM);
  * the formula, computed here from the GGUF header read independently:
    budget = ceil(total * utilization), bytes per block = 2 x layers x
    kv_heads x head_dim x block_size x element size, KV cache = budget -
    weights - activation peak - graphs - overhead rounded down to whole
    blocks, slack inside the budget under one block;
  * the measured activation peak equals the one computed from the shapes;
  * the engine allocated exactly num_blocks blocks (the ledger's KV bytes);
  * peak process memory within the budget.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memtest_util as mt  # noqa: E402

OBSERVED_KEYS = {"overhead_measured_bytes", "peak_process_bytes", "estimate", "overhead_estimate"}
ELT = {"auto": 4, "f32": 4, "f16": 2, "bf16": 2}   # CPU backend: auto = f32



def flags_of(c):
    f = ["--device-memory", c["dm"], "--gpu-memory-utilization", str(c["u"]), "--block-size", str(c["bs"]),
         "--max-num-batched-tokens", str(c["bt"]), "--max-num-seqs", str(c["seqs"]),
         "--kv-cache-dtype", c["kvd"], "--max-model-len", str(c["mml"])]
    return f + c.get("extra", [])


def check_formula(name, r, c, shape, weights_ref, fail):
    """The report against the issue's formula, from figures read here."""
    total = int((mt.GIB if c["dm"].endswith("GiB") else mt.MIB) * float(c["dm"][:-3]))
    budget = math.ceil(Fraction(total) * Fraction(str(c["u"])))
    bb = 2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * c["bs"] * ELT[c["kvd"]]
    opb = r["overhead_per_block_bytes"]
    nb = r["num_blocks"]
    base = r["overhead_bytes"] - nb * opb
    nonkv = (r["weights_bytes"] + r["activation_peak_bytes"] + r["graph_bytes"] + r["overhead_bytes"]
             + r["serving_reserve_bytes"])
    kvmem = c.get("kv_cache_memory")
    want_nb = kvmem // bb if kvmem else (budget - (nonkv - nb * opb)) // (bb + opb)
    ctx = shape["ctx"]
    mml = c["mml"]
    if mml == "auto":  # the largest length a start fits: at most what the cache holds, and one more fails
        mml = r["max_model_len"]
        if mml > min(ctx, nb * c["bs"]):
            fail("%s: auto max_model_len %d is more than the cache holds (%d)" % (name, mml, nb * c["bs"]))
        if mml < ctx and "[plan]" in name:
            f = flags_of(c)
            i = f.index("--max-model-len")
            nxt = mt.run(["plan", "-m", c["model"], "--json"] + f[:i] + f[i + 2:] + ["--max-model-len", str(mml + 1)],
                         check=False)
            if nxt.returncode == 0:
                fail("%s: auto picked %d, but %d fits too" % (name, mml, mml + 1))
    expect = {
        "total_bytes": total, "budget_bytes": budget, "used_by_others_bytes": 0, "graph_bytes": 0,
        "block_size": c["bs"], "kv_bytes_per_token": bb // c["bs"], "num_blocks": want_nb,
        "kv_cache_bytes": nb * bb, "kv_cache_tokens": nb * c["bs"], "max_model_len": mml,
        "slack_inside_bytes": budget - nonkv - nb * bb, "projected_peak_bytes": nonkv + nb * bb,
        "overhead_reserve_bytes": base,
        "activation_peak_bytes": r["activation_formula_bytes"],
    }
    for k, v in expect.items():
        if r[k] != v:
            fail("%s: %s = %s, the formula gives %s" % (name, k, r[k], v))
    if abs(r["max_concurrency"] - nb * c["bs"] / mml) > 1e-9 * r["max_concurrency"]:
        fail("%s: max_concurrency %s != %s" % (name, r["max_concurrency"], nb * c["bs"] / mml))
    if not kvmem and not (0 <= r["slack_inside_bytes"] < bb + opb):
        fail("%s: slack inside the budget %d is not under one block (%d + %d)" %
             (name, r["slack_inside_bytes"], bb, opb))
    if r["projected_peak_bytes"] > r["budget_bytes"]:
        fail("%s: projected peak %d exceeds the budget %d" % (name, r["projected_peak_bytes"], r["budget_bytes"]))
    if r["peak_process_bytes"] > r["budget_bytes"]:
        fail("%s: observed peak (VmHWM) %d exceeds the budget %d" % (name, r["peak_process_bytes"], r["budget_bytes"]))
    # Weights: the tensors' bytes, each rounded up to at most 256 bytes.
    data, n = weights_ref
    if not (data <= r["weights_bytes"] <= data + 256 * n):
        fail("%s: weights %d, the header's tensors hold %d bytes in %d tensors" % (name, r["weights_bytes"], data, n))
    if base < 0:
        fail("%s: negative base overhead" % name)
    return base


def check_inverse(work, fail):
    """plan --target-concurrency C: the smallest utilization and the largest
    max_model_len it gives are the boundaries (one step less or more no
    longer holds C requests): exactly on a GPU profile, whose figures are
    fixed; on the CPU within 2%, since each plan measures its own process
    (whose resident code pages vary by ~100 KiB from run to run), and within
    10% under the sanitizers, whose shadow memory moves the resident set by
    about 1 MiB between runs (1.5% of this 64 MiB device)."""
    l8b = mt.synth(os.path.join(work, "llama3.1-8b-bf16.gguf"), ["--preset", "llama3.1-8b", "--type", "bf16"])
    cases = [(mt.STORIES, ["--device-memory", "64MiB", "--max-model-len", "512"], 20.0),
             (mt.STORIES, ["--device-memory", "64MiB", "--max-model-len", "512"], 100.0),
             (l8b, ["--device", "h100", "--max-model-len", "8192"], 50.0),
             (l8b, ["--device", "h100", "--max-model-len", "8192", "--gpu-memory-utilization", "0.95"], 64.0)]
    for model, flags, conc in cases:
        tol = 0.0  # the runtime overhead is a computed reserve: plans are exact
        t = mt.plan_json(model, flags + ["--target-concurrency", str(conc)])
        name = "%s %s C=%g" % (os.path.basename(model), " ".join(flags), conc)
        u = round(t["min_utilization"], 4)
        if u <= 1.0:
            base = [f for f in flags]
            if "--gpu-memory-utilization" in base:
                i = base.index("--gpu-memory-utilization")
                del base[i:i + 2]
            at = mt.plan_json(model, base + ["--gpu-memory-utilization", "%.4f" % u])
            below = mt.plan_json(model, base + ["--gpu-memory-utilization", "%.4f" % (u - 0.0001)])
            if not (at["max_concurrency"] >= conc * (1 - tol) and conc * (1 + tol) > below["max_concurrency"]):
                fail("%s: min utilization %.4f gives %.3f, %.4f gives %.3f" %
                     (name, u, at["max_concurrency"], u - 0.0001, below["max_concurrency"]))
        L = t["max_model_len_at_utilization"]
        i = flags.index("--max-model-len")
        base = flags[:i] + flags[i + 2:]
        at = mt.plan_json(model, base + ["--max-model-len", str(L)])
        if at["max_concurrency"] < conc * (1 - tol):
            fail("%s: max_model_len %d holds only %.3f requests" % (name, L, at["max_concurrency"]))
        nxt = mt.run(["plan", "-m", model, "--json", "--max-model-len", str(L + 1)] + base, check=False)
        if nxt.returncode == 0 and json.loads(nxt.stdout)["max_concurrency"] >= conc * (1 + tol):
            fail("%s: max_model_len %d is not the largest: %d holds C too" % (name, L, L + 1))
        print("inverse %-60s min utilization %.4f, max_model_len %d" % (name, u, L))


def seqs_of(flags):
    return int(flags[flags.index("--max-num-seqs") + 1]) if "--max-num-seqs" in flags else 256


def serve_report(model, flags, path):
    """The memory report of a real `serve` start with these flags (then SIGTERM)."""
    if os.path.exists(path):
        os.unlink(path)
    p = subprocess.Popen([mt.KVSERVE, "serve", "-m", model, "--port", "0", "-q", "--memory-report", path] + flags,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if re.search(r"listening on http://", line):
                break
        else:
            raise AssertionError("serve %s did not start: rc %s" % (" ".join(flags), p.wait()))
        with open(path) as f:
            return json.load(f)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def check_serve(work, fail):
    """plan == a real `serve` start for the flags that size the serving reserve, at their defaults and
    not: --http-threads, --http-body-pool, --max-connections, --max-request-bytes, --max-structured-seqs,
    --max-grammar-bytes (the structured-output slots, sized from the vocabulary)."""
    S = mt.STORIES
    cases = [(S, f) for f in (
        ["--device-memory", "256MiB"],
        ["--device-memory", "256MiB", "--http-threads", "5", "--http-body-pool", "6MiB", "--max-connections", "16",
         "--max-request-bytes", "512KiB", "--max-structured-seqs", "3", "--max-grammar-bytes", "128KiB"],
        ["--device-memory", "64MiB", "--max-model-len", "512"],
        ["--device-memory", "64MiB", "--max-model-len", "512", "--max-structured-seqs", "0", "--http-threads", "1"],
        ["--device-memory", "28MiB", "--max-model-len", "512", "--max-structured-seqs", "1"],
        ["--device-memory", "1GiB", "--max-num-seqs", "4", "--http-body-pool", "3MiB"],
    )]
    if mt.sanitizer_build():  # the sanitizers' runtime reserve (~30 MiB) does not fit the small devices
        cases = [(m, f) for m, f in cases if not f[1].endswith("MiB") or int(f[1][:-3]) >= 128]
    q3 = os.path.join(work, "qwen3-2l-f16.gguf")
    if os.path.exists(q3):  # a 4096-token vocabulary: bigger matchers
        cases.append((q3, ["--device-memory", "1GiB", "--max-structured-seqs", "5", "--http-threads", "3"]))
    seen_slots = set()
    for model, flags in cases:
        name = "serve %s %s" % (os.path.basename(model), " ".join(flags))
        p = mt.plan_json(model, flags)
        r = serve_report(model, flags, os.path.join(work, "serve_report.json"))
        bad = [k for k in sorted(set(p) | set(r)) if k not in OBSERVED_KEYS and p.get(k) != r.get(k)]
        for k in bad:
            fail("%s: %s: plan %s, serve start %s" % (name, k, p.get(k), r.get(k)))
        if "--max-structured-seqs" in flags:
            want = int(flags[flags.index("--max-structured-seqs") + 1])
            if r["structured_slots"] != want:
                fail("%s: %d structured slots, asked for %d" % (name, r["structured_slots"], want))
        if (r["structured_slots"] > 0) != (r["structured_reserve_bytes"] > 0) or \
                r["structured_reserve_bytes"] > r["serving_reserve_bytes"]:
            fail("%s: structured reserve %d for %d slots, serving reserve %d" %
                 (name, r["structured_reserve_bytes"], r["structured_slots"], r["serving_reserve_bytes"]))
        if "--max-structured-seqs" not in flags and r["structured_slots"] != min(8, seqs_of(flags)):
            fail("%s: %d default structured slots, not min(max-num-seqs, 8)" % (name, r["structured_slots"]))
        seen_slots.add(r["structured_slots"])
        print("%s %-100s serving %.2f MiB (structured %d slots %.2f MiB), %d blocks" %
              ("ok  " if not bad else "FAIL", name, r["serving_reserve_bytes"] / mt.MIB, r["structured_slots"],
               r["structured_reserve_bytes"] / mt.MIB, r["num_blocks"]))
    if len(seen_slots) < 3:
        fail("serve: the cases should cover several slot counts, saw %s" % sorted(seen_slots))
    # more threads or a bigger body pool is a bigger serving reserve (the flags reach the formula)
    fixed = ["--device-memory", "256MiB", "--max-structured-seqs", "2"]
    base = mt.plan_json(S, fixed)
    for extra in (["--http-threads", "6"], ["--http-body-pool", "9MiB"], ["--max-structured-seqs", "9"],
                  ["--max-grammar-bytes", "2MiB"]):
        q = mt.plan_json(S, fixed + extra)
        if not q["serving_reserve_bytes"] > base["serving_reserve_bytes"]:
            fail("plan %s: serving reserve %d, not above the default's %d" %
                 (" ".join(extra), q["serving_reserve_bytes"], base["serving_reserve_bytes"]))


def check_generate_default(work, fail):
    """generate -p without --max-num-seqs runs one sequence per step: its table is plan's with
    --max-num-seqs 1, not plan's default (256 sequences: logits rows for each), and --input-file
    keeps the default."""
    S, dev = mt.STORIES, ["--device-memory", "1GiB"]
    r = mt.measured_json(S, dev, os.path.join(work, "report_p.json"))
    one, dflt = mt.plan_json(S, dev + ["--max-num-seqs", "1"]), mt.plan_json(S, dev)
    bad = [k for k in sorted(set(one) | set(r)) if k not in OBSERVED_KEYS and one.get(k) != r.get(k)]
    for k in bad:
        fail("generate -p (default --max-num-seqs): %s: plan --max-num-seqs 1 %s, start %s" % (k, one.get(k), r.get(k)))
    if not dflt["activation_peak_bytes"] > r["activation_peak_bytes"]:
        fail("generate -p: activation peak %d, not below plan's default (256 sequences) %d" %
             (r["activation_peak_bytes"], dflt["activation_peak_bytes"]))
    inp, rep = os.path.join(work, "one.jsonl"), os.path.join(work, "report_f.json")
    with open(inp, "w") as f:
        f.write(json.dumps({"prompt": "Once upon a time", "max_tokens": 1, "temperature": 0}) + "\n")
    mt.run(["generate", "-m", S, "--input-file", inp, "-o", os.devnull, "--memory-report", rep] + dev)
    with open(rep) as f:
        rf = json.load(f)
    bad = [k for k in sorted(set(dflt) | set(rf)) if k not in OBSERVED_KEYS and dflt.get(k) != rf.get(k)]
    for k in bad:
        fail("generate --input-file: %s: plan %s, start %s" % (k, dflt.get(k), rf.get(k)))
    print("%s generate -p: activation peak %d (plan default %d); --input-file as plan's default" %
          ("ok  " if not bad else "FAIL", r["activation_peak_bytes"], dflt["activation_peak_bytes"]))


def main():
    asan = mt.sanitizer_build()
    work = os.path.join(mt.BUILD, "memtest")
    os.makedirs(work, exist_ok=True)
    # Under the sanitizers every step is ~30x slower: smaller synth models there.
    if asan:
        q3 = mt.synth(os.path.join(work, "qwen3-mini-f16.gguf"),
                      ["--preset", "qwen3-0.6b", "--layers", "1", "--vocab", "2048", "--ctx", "4096", "--type", "f16"])
        l110 = None
    else:
        q3 = mt.synth(os.path.join(work, "qwen3-2l-f16.gguf"),
                      ["--preset", "qwen3-0.6b", "--layers", "2", "--vocab", "4096", "--ctx", "8192", "--type", "f16"])
        l110 = mt.synth(os.path.join(work, "llama2-110m-f16.gguf"), ["--preset", "llama2-110m", "--type", "f16"])
    S = mt.STORIES

    def C(model, dm, u, bs, bt, seqs, kvd, mml, **kw):
        d = dict(model=model, dm=dm, u=u, bs=bs, bt=bt, seqs=seqs, kvd=kvd, mml=mml)
        d.update(kw)
        if "kv_cache_memory" in d:
            d.setdefault("extra", []).extend(["--kv-cache-memory", str(d["kv_cache_memory"])])
        return d

    # stories260K: a 2-level fractional factorial over the seven factors, plus extras.
    grid = [
        C(S, "1GiB", 0.92, 16, 2048, 256, "auto", "auto"),
        C(S, "1GiB", 0.5, 32, 256, 8, "auto", "auto"),
        C(S, "3GiB", 0.92, 32, 256, 256, "f16", "auto"),
        C(S, "3GiB", 0.5, 16, 2048, 8, "f16", "auto"),
        C(S, "1GiB", 0.92, 32, 2048, 8, "f16", 1000),
        C(S, "1GiB", 0.5, 16, 256, 256, "f16", 2048),
        C(S, "3GiB", 0.92, 16, 256, 8, "auto", 512),
        C(S, "3GiB", 0.5, 32, 2048, 256, "auto", 2048),
        C(S, "1GiB", 0.92, 16, 256, 256, "auto", "auto", extra=["--no-prefix-caching"]),
        C(S, "1GiB", 0.92, 16, 256, 8, "bf16", "auto", extra=["--mmap"]),
        C(S, "1GiB", 0.5, 32, 256, 8, "auto", 2048, kv_cache_memory=64 * mt.MIB),
        # small devices, where the reserves are a large part of the budget
        # (the default 8 structured-output slots, 12 MiB at this vocabulary, do not fit below ~40 MiB;
        # the front end's pools, stream buffers included, take ~6.7 MiB more)
        C(S, "28MiB", 0.92, 16, 256, 256, "auto", 1024, extra=["--max-structured-seqs", "1"]),
        C(S, "24MiB", 0.92, 16, 256, 256, "auto", "auto", extra=["--max-structured-seqs", "0"]),
        C(S, "32MiB", 0.8, 8, 128, 64, "f16", 512, extra=["--max-structured-seqs", "1"]),
        C(S, "48MiB", 0.92, 64, 256, 32, "bf16", "auto"),
        C(S, "64MiB", 0.7, 16, 512, 128, "auto", 256, extra=["--threads", "1"]),
        C(S, "64MiB", 0.92, 16, 256, 16, "auto", 2048, extra=["--max-connections", "8", "--max-request-bytes", "64KiB"]),
        C(S, "64MiB", 0.92, 16, 256, 16, "auto", 2048, extra=["--max-connections", "256"]),
        C(S, "96MiB", 0.95, 32, 64, 4, "f16", "auto", extra=["--no-prefix-caching", "--mmap"]),
        C(S, "128MiB", 0.6, 16, 1024, 512, "auto", 1024),
        C(S, "256MiB", 0.92, 128, 256, 256, "f32", 2048),
        C(S, "256MiB", 0.3, 16, 256, 64, "bf16", 100),
        C(S, "512MiB", 1.0, 16, 256, 256, "auto", "auto", extra=["--threads", "2"]),
        C(S, "2GiB", 0.92, 16, 2048, 1024, "auto", 2048),
        C(S, "64MiB", 0.92, 16, 256, 256, "auto", 2048, kv_cache_memory=8 * mt.MIB),
    ]
    if asan:  # the sanitizers' runtime reserve (~30 MiB) does not fit the small devices; every other one
        grid = [c for c in grid if c["dm"].endswith("GiB") or int(c["dm"][:-3]) >= 128][::2]
        grid += [C(q3, "1GiB", 0.92, 16, 64, 8, "auto", "auto"),
                 C(q3, "3GiB", 0.5, 32, 32, 32, "f16", 4096)]
    else:
        grid += [
            C(q3, "1GiB", 0.92, 16, 256, 256, "auto", "auto"),
            C(q3, "3GiB", 0.5, 32, 256, 8, "f16", 8192),
            C(q3, "1GiB", 0.5, 16, 2048, 8, "f16", 4096),
            C(l110, "1GiB", 0.92, 16, 256, 8, "f16", "auto"),
            C(l110, "3GiB", 0.5, 32, 256, 256, "auto", 1024),
            C(l110, "1GiB", 0.92, 32, 256, 8, "auto", 512, extra=["--mmap"]),
        ]

    failures = []
    fail = failures.append
    rows = []
    n_exact = 0
    diffs = []
    headers = {}
    for i, c in enumerate(grid):
        name = "#%d %s %s" % (i, os.path.basename(c["model"]), " ".join(flags_of(c)))
        if c["model"] not in headers:
            meta, tensors = mt.gguf_header(c["model"])
            headers[c["model"]] = (mt.model_shape(c["model"]), (sum(t[3] for t in tensors), len(tensors)))
        shape, wref = headers[c["model"]]
        if "--mmap" in c.get("extra", []):
            wref = (os.path.getsize(c["model"]), 1)   # the mapped file
        p = mt.plan_json(c["model"], flags_of(c))
        r = mt.measured_json(c["model"], flags_of(c), os.path.join(work, "report.json"))
        r2 = mt.measured_json(c["model"], flags_of(c), os.path.join(work, "report2.json"))
        if not p["overhead_estimate"] or r["overhead_estimate"] or r["estimate"] or p["estimate"]:
            fail("%s: estimate flags wrong" % name)
        for k in sorted(set(p) | set(r)):
            if k in OBSERVED_KEYS:
                continue
            if not (p.get(k) == r.get(k) == r2.get(k)):
                fail("%s: %s: plan %s, start %s, second start %s" % (name, k, p.get(k), r.get(k), r2.get(k)))
        check_formula(name + " [plan]", p, c, shape, wref, fail)
        check_formula(name + " [measured]", r, c, shape, wref, fail)
        # The reserve is enforced (and checked here) in a release build; under
        # the sanitizers the start only warns, as their quarantine keeps freed
        # blocks resident and says nothing of kvserve's own memory.
        for rr in (r, r2):
            if not asan and rr["overhead_measured_bytes"] > rr["overhead_reserve_bytes"]:
                fail("%s: measured overhead %d over its reserve %d" % (name, rr["overhead_measured_bytes"],
                                                                     rr["overhead_reserve_bytes"]))
        margin = min(r["overhead_reserve_bytes"] - r["overhead_measured_bytes"],
                     r2["overhead_reserve_bytes"] - r2["overhead_measured_bytes"])
        diffs.append(margin)
        n_exact += all(p.get(k) == r.get(k) == r2.get(k) for k in set(p) | set(r) if k not in OBSERVED_KEYS)
        rows.append((i, os.path.basename(c["model"])[:18], c["dm"], c["u"], c["bs"], c["bt"], c["seqs"], c["kvd"],
                     c["mml"], p["num_blocks"], r["num_blocks"], r2["num_blocks"], r["overhead_reserve_bytes"] / mt.MIB,
                     r["overhead_measured_bytes"] / mt.MIB, margin / mt.MIB, r["serving_reserve_bytes"] / mt.MIB))

    print("%-3s %-18s %-6s %-5s %-3s %-5s %-4s %-5s %-5s %8s %8s %8s %8s %8s %8s %8s" %
          ("#", "model", "dev", "util", "bs", "bt", "seqs", "kv", "mml", "plan blk", "start1", "start2",
           "rsv MiB", "meas MiB", "spare", "serving"))
    for row in rows:
        print("%-3d %-18s %-6s %-5s %-3d %-5d %-4d %-5s %-5s %8d %8d %8d %8.2f %8.2f %8.2f %8.2f" % row)
    print("plan == start == second start on every key in %d of %d configurations; runtime reserve minus measured "
          "overhead: min %.2f MiB, max %.2f MiB" % (n_exact, len(grid), min(diffs) / mt.MIB, max(diffs) / mt.MIB))
    check_inverse(work, fail)
    check_serve(work, fail)
    check_generate_default(work, fail)
    if failures:
        print("\n".join(failures))
        sys.exit("FAIL: %d problems" % len(failures))
    print("OK: %d configurations" % len(grid))


if __name__ == "__main__":
    main()
