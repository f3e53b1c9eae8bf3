#!/usr/bin/python3
"""`generate --input-file` compiles structured output into the slots.

A batch line with response_format takes a lease of the structured-output
slots (grammar/gpool.h) when the engine has room for it, as a server
request does, instead of compiling with malloc outside the budget: its
constraint is held to --max-grammar-bytes, --max-structured-seqs 0 turns
structured output off, and with fewer slots than lines a line waits for a
running one to give its lease back (every line still runs, and its output
parses under its schema)."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memtest_util as mt  # noqa: E402

failures = []
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 12}},
          "required": ["a", "b"]}


def check(cond, what):
    print("%-4s %s" % ("ok" if cond else "FAIL", what))
    if not cond:
        failures.append(what)


def batch(lines, *flags):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", dir=mt.BUILD or None, delete=False) as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
        path = f.name
    try:
        p = subprocess.run([mt.KVSERVE, "generate", "-m", mt.STORIES, "--device-memory", "64MiB", "--max-model-len",
                            "512", "--input-file", path] + list(flags), capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(path)
    if p.returncode != 0:
        failures.append("generate failed: %s" % p.stderr[-500:])
        return []
    return [json.loads(x) for x in p.stdout.splitlines()]


def fmt(schema):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def main():
    lines = [dict(prompt="Once upon a time %d" % i, max_tokens=80, temperature=0.9, seed=i, response_format=fmt(SCHEMA))
             for i in range(10)] + [dict(prompt="Lily", max_tokens=10, temperature=0)]
    out = batch(lines, "--max-structured-seqs", "2", "--max-num-seqs", "8")
    check(len(out) == 11 and [r["id"] for r in out] == list(range(11)), "11 results in order")
    good = 0
    for r in out[:10]:
        try:
            v = json.loads(r.get("text", ""))
            good += isinstance(v, dict) and isinstance(v.get("a"), int) and isinstance(v.get("b"), str) and \
                len(v["b"]) <= 12 and r["finish_reason"] == "stop"
        except ValueError:
            pass
    check(good == 10, "10 structured lines through 2 slots: %d parse under their schema" % good)
    check(len(out) == 11 and "error" not in out[10] and out[10]["finish_reason"] == "length", "the plain line runs")

    big = {"type": "object", "properties": {"k%d" % i: {"type": "string", "enum": ["v%d_%d" % (i, j) for j in range(30)]}
                                            for i in range(40)}}
    out = batch([dict(prompt="x", max_tokens=5, response_format=fmt(big)), dict(prompt="y", max_tokens=3)],
                "--max-grammar-bytes", "16KiB")
    err = (out[0].get("error") or {}) if out else {}
    check("--max-grammar-bytes" in (err.get("message") or "") and err.get("param") == "response_format",
          "a constraint past --max-grammar-bytes is refused: %r" % err)
    check(len(out) == 2 and "error" not in out[1], "... the next line runs")

    out = batch(lines[:2], "--max-structured-seqs", "0")
    check(len(out) == 2 and all("--max-structured-seqs 0" in ((r.get("error") or {}).get("message") or "")
                                for r in out), "--max-structured-seqs 0: structured output is off")
    if failures:
        sys.exit("FAIL:\n" + "\n".join(failures))
    print("OK")


if __name__ == "__main__":
    main()
