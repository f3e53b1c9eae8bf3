"""Memory-budget error paths through the CLI: each gives one clear line on
stderr and a non-zero exit, never a crash (a signal) or a sanitizer report.

  * a utilization above what is free (host memory, where others always
    hold some): the message gives the others' use and the largest
    utilization that fits, and that utilization does start;
  * a budget that cannot hold the weights (tiny utilization, or a device
    smaller than the model);
  * a max-model-len that does not fit: the message gives the KV memory
    needed and available in GiB, the largest max-model-len that fits and
    the utilization that would fit, and both suggestions work;
  * a KV cache of zero blocks; --kv-cache-memory larger than the budget or
    smaller than one block;
  * bad flag values.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memtest_util as mt  # noqa: E402

S = mt.STORIES
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def cmd_args(cmd, flags):
    """generate -p x, or plan predicting that job (mt.as_generate_p)."""
    if cmd == "generate":
        return [cmd, "-m", S, "-p", "x", "-n", "1"] + flags
    return [cmd, "-m", S] + mt.as_generate_p(flags)


def expect_error(cmd, flags, must=(), what=""):
    """Run a command that must fail cleanly; returns its error line."""
    args = cmd_args(cmd, flags)
    p = mt.run(args, check=False)
    err = p.stderr.strip()
    name = "%s %s (%s)" % (cmd, " ".join(flags), what)
    if p.returncode <= 0:
        fail("%s: exit status %d (expected a positive error status; negative = a signal)" % (name, p.returncode))
    lines = [l for l in err.splitlines() if not l.startswith("WARNING")]
    if len(lines) != 1 or not lines[0].startswith("kvserve %s: error: " % cmd):
        fail("%s: expected one error line, got:\n%s" % (name, err))
    for bad in ("Sanitizer", "runtime error", "Segmentation", "Aborted"):
        if bad in err:
            fail("%s: crashed: %s" % (name, err))
    for m in must:
        if not re.search(m, err):
            fail("%s: message lacks /%s/: %s" % (name, m, err))
    print("ok  %-70s %s" % (name[:70], lines[0][len("kvserve %s: error: " % cmd):][:150] if lines else ""))
    return err


def expect_ok(cmd, flags, what=""):
    args = cmd_args(cmd, flags)
    p = mt.run(args, check=False)
    if p.returncode != 0:
        fail("%s %s (%s): expected to start, got: %s" % (cmd, " ".join(flags), what, p.stderr.strip()))
    return p


def number(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def main():
    work = os.path.join(mt.BUILD, "memtest")
    os.makedirs(work, exist_ok=True)

    # 1. Utilization above what is free: on host memory (no --device-memory),
    #    others always hold something, so 1.0 never fits.
    for cmd in ("generate", "plan"):
        err = expect_error(cmd, ["--gpu-memory-utilization", "1.0"],
                           [r"GiB( \([0-9.]+ MiB\))? used by other processes", r"largest --gpu-memory-utilization that fits now is 0\.\d{4}"],
                           "utilization above what is free")
        u = number(r"fits now is (0\.\d+)", err)
        # Somewhat less than the suggestion starts (other programs may take
        # memory meanwhile; a small KV cache keeps the test light, and the
        # budget check still applies).
        if u is not None and cmd == "generate":
            expect_ok("generate", ["--gpu-memory-utilization", "%.4f" % max(u * 0.8, 0.01), "--kv-cache-memory", "64MiB"],
                      "below the suggested utilization")
    # The default (no utilization given) on host memory never refuses for want of free memory.
    p = expect_ok("generate", ["--kv-cache-memory", "64MiB"], "default utilization on host memory")
    if "WARNING" in p.stderr and "largest that fits now" not in p.stderr:
        fail("default utilization lowered without saying why: %s" % p.stderr)

    # 2. A budget that cannot hold the weights.
    for cmd in ("generate", "plan"):
        expect_error(cmd, ["--device-memory", "1GiB", "--gpu-memory-utilization", "0.001"],
                     [r"does not hold the model", r"weights 0\.\d+ GiB", r"--gpu-memory-utilization 0\.\d{4}"],
                     "utilization too small for the weights")
    l110 = mt.synth(os.path.join(work, "llama2-110m-f16.gguf"), ["--preset", "llama2-110m", "--type", "f16"])
    for cmd in ("generate", "plan"):
        p = mt.run([cmd, "-m", l110, "--device-memory", "128MiB"] + (["-p", "x", "-n", "1"] if cmd == "generate" else []),
                   check=False)
        if p.returncode <= 0 or "does not hold the model" not in p.stderr or "more memory than the device has" not in p.stderr:
            fail("%s: a 110M f16 model on a 128 MiB device: rc %d, %s" % (cmd, p.returncode, p.stderr.strip()))
        else:
            print("ok  %s llama2-110m f16 on --device-memory 128MiB: %s" % (cmd, p.stderr.strip()[:150]))

    # 3. A max-model-len that does not fit.  Size the device from the plan so
    #    that about 1000 tokens of KV cache remain at utilization 0.5: the
    #    header alone says 2048 might fit, the measured overhead says not.
    pj = mt.plan_json(S, mt.as_generate_p(["--device-memory", "96MiB"]))  # (generate -p x's job; any device that plans: the terms below do not depend on it)
    block = pj["kv_bytes_per_token"] * pj["block_size"]
    opb = pj["overhead_per_block_bytes"]
    fixed = (pj["weights_bytes"] + pj["activation_peak_bytes"] + pj["graph_bytes"] + pj["overhead_bytes"]
             - pj["num_blocks"] * opb + pj["serving_reserve_bytes"])
    dm = int((fixed + 63 * (block + opb)) / 0.5)
    base = ["--device-memory", str(dm), "--gpu-memory-utilization", "0.5"]
    auto = mt.measured_json(S, base + ["--max-model-len", "auto"], os.path.join(work, "auto.json"))
    err = expect_error("generate", base + ["--max-model-len", "2048"],
                       [r"needs 0\.\d+ GiB", r"only 0\.\d+ GiB .*\(\d+ tokens\) is available",
                        r"largest max_model_len that fits is \d+", r"--gpu-memory-utilization 0\.\d{4}"],
                       "max-model-len that does not fit")
    need = number(r"needs (0\.\d+) GiB", err)
    if need is None or abs(need - 128 * block / mt.GIB) > 0.00006:
        fail("needed KV memory %s GiB, expected %.4f (128 blocks of %d bytes)" % (need, 128 * block / mt.GIB, block))
    n_fit = number(r"largest max_model_len that fits is (\d+)", err)
    u_fit = number(r"needs --gpu-memory-utilization (0\.\d+)", err)
    # The overhead is a computed reserve: the suggestion is exact.
    slack = 0
    if n_fit is None or abs(n_fit - auto["max_model_len"]) > slack:
        fail("largest max_model_len %s, but --max-model-len auto started with %d" % (n_fit, auto["max_model_len"]))
    else:
        print("    largest that fits: %d (auto measured %d); utilization for 2048: %s" % (n_fit, auto["max_model_len"], u_fit))
        expect_ok("generate", base + ["--max-model-len", str(int(n_fit) - slack)], "the suggested length")
        expect_error("generate", base + ["--max-model-len", str(int(n_fit) + 1)], [r"largest max_model_len"],
                     "one more than the suggested length")
    if u_fit is not None:
        expect_ok("generate", ["--device-memory", str(dm), "--gpu-memory-utilization", "%.4f" % u_fit,
                               "--max-model-len", "2048"], "the suggested utilization")
    expect_error("plan", base + ["--max-model-len", "2048"], [r"largest max_model_len that fits is \d+"],
                 "plan: max-model-len that does not fit")

    # 4. Zero KV blocks: a budget 1 MiB short of the fixed terms at the
    #    model's length (auto would pick a shorter length, whose request pool
    #    and activation peak are smaller).
    dm0 = int((fixed - mt.MIB) / 0.92)
    expect_error("generate", ["--device-memory", str(dm0), "--max-model-len", str(pj["max_model_len"])],
                 [r"no KV cache|no memory is left for the KV cache",
                  r"--gpu-memory-utilization 0\.\d{4}|more memory than the device has"], "zero KV blocks")
    expect_error("generate", ["--device-memory", "1GiB", "--kv-cache-memory", "100"],
                 [r"less than one KV block"], "--kv-cache-memory under one block")
    # --kv-cache-memory larger than the budget.
    for cmd in ("generate", "plan"):
        expect_error(cmd, ["--device-memory", "1GiB", "--kv-cache-memory", "2GiB"],
                     [r"--kv-cache-memory 2\.00 GiB does not fit the budget", r"0\.92\d* GiB"],
                     "--kv-cache-memory over the budget")
    expect_error("generate", ["--device-memory", "1GiB", "--gpu-memory-utilization", "0.5", "--kv-cache-memory", "600MiB"],
                 [r"does not fit the budget", r"--gpu-memory-utilization 0\.\d{4}"], "--kv-cache-memory over a half budget")

    # 5. Bad flag values.
    bad = [
        (["--gpu-memory-utilization", "1.5"], r"\(0, 1\]"),
        (["--gpu-memory-utilization", "0"], r"\(0, 1\]"),
        (["--gpu-memory-utilization", "-0.5"], r"utilization"),
        (["--gpu-memory-utilization", "abc"], r"utilization"),
        (["--block-size", "0"], r"block-size"),
        (["--block-size", "100000"], r"block-size"),
        (["--kv-cache-dtype", "q4"], r"kv-cache-dtype"),
        (["--kv-cache-dtype", ""], r"kv-cache-dtype"),
        (["--device-memory", "lots"], r"device-memory"),
        (["--kv-cache-memory", "-5"], r"kv-cache-memory"),
        (["--max-model-len", "0"], r"max-model-len"),
        (["--max-model-len", "100000"], r"max-model-len"),
        (["--max-num-seqs", "0"], r"max-num-seqs"),
        (["--max-num-batched-tokens", "0"], r"max-num-batched-tokens"),
    ]
    for cmd in ("generate", "plan"):
        for flags, m in bad:
            expect_error(cmd, ["--device-memory", "1GiB"] + flags if "--device-memory" not in flags else flags, [m],
                         "bad value")
    expect_error("plan", ["--device", "h100", "--gpu-memory-utilization", "1.5"], [r"\(0, 1\]"], "bad value, GPU profile")
    expect_error("plan", ["--device", "tpu9"], [r"unknown device"], "unknown device")

    if failures:
        sys.exit("FAIL: %d problems" % len(failures))
    print("OK")


if __name__ == "__main__":
    main()
