#!/usr/bin/python3
"""Fit errors that can be followed, and the SVG report.

For each fit error: `plan` and a start print the same message (the same
suggestions), and following each suggestion starts, while one step less
(0.0001 of utilization, one token of max-model-len) still fails.  Zero
sizes are errors, not "unset"; a --device-memory larger than the host is
refused naming the host's memory.  The SVG marks a plan as an estimate,
picks MiB for a small device, gives small terms a leader line, and keeps
every label inside the picture."""
import os
import re
import sys
import xml.dom.minidom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memtest_util as mt  # noqa: E402

S = mt.STORIES
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def gen(flags):
    return mt.run(["generate", "-m", S, "-p", "Once", "-n", "1", "--temperature", "0"] + flags, check=False)


def plan(flags):
    return mt.run(["plan", "-m", S] + mt.as_generate_p(flags), check=False)


def message(p):
    return re.sub(r"^kvserve \w+: error: ", "", p.stderr.strip())


def same_error(what, flags, must):
    """Both commands fail with the same message, which matches `must`."""
    g, p = gen(flags), plan(flags)
    if g.returncode <= 0 or p.returncode <= 0:
        fail("%s: generate rc %d, plan rc %d" % (what, g.returncode, p.returncode))
        return ""
    if message(g) != message(p):
        fail("%s: plan and start differ:\n  start: %s\n  plan:  %s" % (what, message(g), message(p)))
    if not re.search(must, message(g)):
        fail("%s: message lacks /%s/: %s" % (what, must, message(g)))
    print("ok   %-34s %s" % (what, message(g)[:150]))
    return message(g)


def starts(what, flags, ok=True):
    g = gen(flags)
    if (g.returncode == 0) != ok:
        fail("%s: %s %s: rc %d %s" % (what, "expected a start" if ok else "expected a failure", " ".join(flags),
                                      g.returncode, g.stderr.strip()[:300]))
    else:
        print("ok   %-34s %s %s" % (what, "starts:" if ok else "fails: ", " ".join(flags)))


def util_flags(flags, u):
    f = list(flags)
    if "--gpu-memory-utilization" in f:
        i = f.index("--gpu-memory-utilization")
        del f[i:i + 2]
    return f + ["--gpu-memory-utilization", "%.4f" % u]


def follow_util(what, flags, msg, keep=()):
    m = re.search(r"--gpu-memory-utilization (\d\.\d{4})", msg)
    if not m:
        fail("%s: no utilization suggested: %s" % (what, msg))
        return
    u = float(m.group(1))
    starts(what + ": the suggested utilization", util_flags(flags, u))
    starts(what + ": 0.0001 less", util_flags(flags, u - 0.0001), ok=False)


def fixed_terms(length):
    """Every term but the KV cache (and its per-block bookkeeping) at this length: the reserves depend on
    the build (CUDA, sanitizers), so the devices below are sized from the plan."""
    pj = mt.plan_json(S, mt.as_generate_p(["--device-memory", "1GiB", "--max-model-len", str(length)]))
    return (pj["budget_bytes"] - pj["kv_cache_bytes"] - pj["slack_inside_bytes"]
            - pj["num_blocks"] * pj["overhead_per_block_bytes"]), pj


def main():
    # zero sizes and a device larger than the host
    for flag in ("--device-memory", "--kv-cache-memory"):
        same_error("%s 0" % flag, [flag, "0"] + (["--device-memory", "1GiB"] if flag != "--device-memory" else []),
                   r"%s must be more than 0" % flag)
        srv = mt.run(["serve", "-m", S, "--port", "0", flag, "0"], check=False)
        if srv.returncode <= 0 or "must be more than 0" not in srv.stderr:
            fail("serve %s 0: rc %d %s" % (flag, srv.returncode, srv.stderr.strip()))
    with open("/proc/meminfo") as f:
        host = int(re.search(r"MemTotal:\s+(\d+) kB", f.read()).group(1)) * 1024
    msg = same_error("--device-memory above the host", ["--device-memory", str(host * 2)],
                     r"more than this host has: [0-9.]+ GiB \(\d+ bytes")
    got = re.search(r"more than this host has: [0-9.]+ GiB \((\d+) bytes", msg)
    if got and int(got.group(1)) > host:
        fail("the host's memory named as %s, /proc/meminfo says %d" % (got.group(1), host))

    # a max-model-len that does not fit: the suggested length and utilization
    fx, pj = fixed_terms(2048)
    per_tok = pj["kv_bytes_per_token"] + pj["overhead_per_block_bytes"] / pj["block_size"]
    flags = ["--device-memory", str(int((fx + 1200 * per_tok) / 0.92)), "--max-model-len", "2048"]
    msg = same_error("max-model-len too long", flags, r"largest max_model_len that fits is \d+")
    m = re.search(r"largest max_model_len that fits is (\d+)", msg)
    if m:
        L = int(m.group(1))
        starts("the suggested max-model-len", flags[:2] + ["--max-model-len", str(L)])
        starts("one token more", flags[:2] + ["--max-model-len", str(L + 1)], ok=False)
        auto = mt.measured_json(S, flags[:2] + ["--max-model-len", "auto"], os.path.join(mt.BUILD, "fit_auto.json"))
        if auto["max_model_len"] != L:
            fail("--max-model-len auto picked %d, the error suggests %d" % (auto["max_model_len"], L))
    follow_util("max-model-len too long", flags, msg)

    # zero KV blocks
    fx, _ = fixed_terms(256)
    flags = ["--device-memory", str(int((fx - mt.MIB // 2) / 0.92)), "--max-model-len", "256"]
    msg = same_error("no room for the KV cache", flags, r"no KV cache|no memory is left for the KV cache")
    follow_util("no room for the KV cache", flags, msg)

    # --kv-cache-memory over the budget
    fx, _ = fixed_terms(512)
    ask = int(0.3 * 256 * mt.MIB - fx + 8 * mt.MIB)
    flags = ["--device-memory", "256MiB", "--gpu-memory-utilization", "0.3", "--kv-cache-memory", str(ask),
             "--max-model-len", "512"]
    msg = same_error("--kv-cache-memory over the budget", flags, r"does not fit the budget")
    follow_util("--kv-cache-memory over the budget", flags, msg)

    # a budget that does not hold the weights
    flags = ["--device-memory", "1GiB", "--gpu-memory-utilization", "0.005", "--max-model-len", "512"]
    msg = same_error("budget under the weights", flags, r"does not hold the model")
    follow_util("budget under the weights", flags, msg)

    # the SVG report: plan (estimate) and start, on a small device (24 MiB in a release build)
    fx, _ = fixed_terms(1024)
    small = str(max(24 * mt.MIB, int((fx + 5 * mt.MIB) / 0.92)))
    for what, cmd in (("plan", ["plan", "-m", S] + mt.as_generate_p(["--device-memory", small, "--max-model-len",
                                                                     "1024", "--svg"])),
                      ("start", ["generate", "-m", S, "-p", "x", "-n", "1", "--device-memory", small,
                                 "--max-model-len", "1024", "--memory-report-svg"])):
        path = os.path.join(mt.BUILD, "fit_%s.svg" % what)
        mt.run(cmd + [path])
        doc = xml.dom.minidom.parse(path)
        svg = doc.documentElement
        width = float(svg.getAttribute("width"))
        texts = [(float(t.getAttribute("x")), t.getAttribute("text-anchor"), float(t.getAttribute("font-size") or 12),
                  "".join(n.data for n in t.childNodes if n.nodeType == n.TEXT_NODE))
                 for t in doc.getElementsByTagName("text")]
        body = " ".join(t[3] for t in texts)
        for x, anchor, size, s in texts:
            w = 0.6 * size * len(s)  # a sans-serif character is at most ~0.6 em wide on average
            lo, hi = (x - w, x) if anchor == "end" else ((x - w / 2, x + w / 2) if anchor == "middle" else (x, x + w))
            if lo < 0 or hi > width:
                fail("%s SVG: label %r runs outside the picture (%.0f..%.0f of %.0f)" % (what, s, lo, hi, width))
        if "MiB" not in body or " GiB" in body.replace("GiB of", ""):
            fail("%s SVG: a small device should be drawn in MiB: %s" % (what, body[:200]))
        if what == "plan" and "estimate" not in body.lower():
            fail("plan SVG: not marked as an estimate")
        if what == "start" and "estimate" in texts[0][3].lower():
            fail("start SVG: a measured start marked as an estimate")
        if not doc.getElementsByTagName("polyline"):
            fail("%s SVG: the small terms have no leader lines" % what)
        if "serving reserve" not in body:
            fail("%s SVG: no serving reserve" % what)
        print("ok   %s SVG: %d labels inside %.0f px, MiB, %d leader lines" %
              (what, len(texts), width, len(doc.getElementsByTagName("polyline"))))
    if failures:
        sys.exit("FAIL: %d problems" % len(failures))
    print("OK")


if __name__ == "__main__":
    main()
