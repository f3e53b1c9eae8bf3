#!/usr/bin/python3
"""The ratio table of bench/compare_llamacpp.sh from its runs log (usable on a partial log):
    bench/compare_table.py RUNS.jsonl RESULTS.md TAG THREADS REPS"""
import json, statistics, sys, datetime, os
log, out, tag, threads, reps = sys.argv[1:6]
rows = {}
for line in open(log):
    r = json.loads(line)
    ll = {(x["n_prompt"], x["n_gen"]): x["avg_ts"] for x in r["llama"]}
    k = r["kvserve"]
    e = rows.setdefault(r["file"], {"pp": [], "tg": [], "kpp": [], "ktg": [], "lpp": [], "ltg": [], "bw": [],
                                     "roof": [], "load": [], "wb": k["weight_bytes_per_token"]})
    kpp, ktg = k["prefill_tokens_per_s"], k["decode"][0]["tokens_per_s"]
    lpp, ltg = ll[(512, 0)], ll[(0, 64)]
    e["pp"].append(kpp / lpp); e["tg"].append(ktg / ltg)
    e["kpp"].append(kpp); e["ktg"].append(ktg); e["lpp"].append(lpp); e["ltg"].append(ltg)
    e["bw"].append(k["bandwidth_gbs"]); e["roof"].append(k["roofline_fraction_b1_median"]); e["load"] += r["load"]
med = statistics.median
def rng(xs):
    return f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"
def spread(xs):
    return f"{max(xs) / min(xs):.2f}x" if min(xs) > 0 else "-"
lines = [f"### kvserve vs llama.cpp {tag} ({datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, "
         f"{threads} threads, {reps} alternating repetitions)", "",
         "Ratios are kvserve / llama.cpp tokens/s, median (min-max) over the repetitions; each repetition "
         "runs llama-bench then bench_model on the same file. Spread = max/min of an engine's own "
         "readings over the repetitions (1.00x = perfectly steady). Load = the 1-minute load average "
         "around the runs (2 cores).", "",
         "| file | prefill 512 ratio | decode b=1 ratio | kvserve pp / tg tok/s | llama.cpp pp / tg tok/s | "
         "spread kv pp,tg / llama pp,tg | bandwidth GB/s | kvserve b=1 roofline | load |",
         "|---|---|---|---|---|---|---|---|---|"]
for f, e in rows.items():
    lines.append(f"| {f} | {rng(e['pp'])} | {rng(e['tg'])} | {med(e['kpp']):.0f} / {med(e['ktg']):.1f} | "
                 f"{med(e['lpp']):.0f} / {med(e['ltg']):.1f} | {spread(e['kpp'])},{spread(e['ktg'])} / "
                 f"{spread(e['lpp'])},{spread(e['ltg'])} | {min(e['bw']):.0f}-{max(e['bw']):.0f} | "
                 f"{100 * med(e['roof']):.0f}% | {min(e['load']):.1f}-{max(e['load']):.1f} |")
table = "\n".join(lines) + "\n"
print(table)
begin, end = "<!-- compare_llamacpp:begin -->", "<!-- compare_llamacpp:end -->"
text = open(out).read() if os.path.exists(out) else "# kvserve benchmark results\n"
if begin in text and end in text:
    a, b = text.index(begin), text.index(end) + len(end)
    text = text[:a] + begin + "\n" + table + end + text[b:]
else:
    text = text.rstrip("\n") + "\n\n## Side by side with llama.cpp (bench/compare_llamacpp.sh)\n\n" + begin + "\n" + \
        table + end + "\n"
open(out, "w").write(text)
