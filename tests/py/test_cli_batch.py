"""`kvserve generate --input-file`: a JSONL file of requests runs through the
scheduler together; each result equals the same request run alone, the
greedy one equals llama2.c's run on stories260K (shared/expected/), and bad
lines get an OpenAI-style error object without stopping the others."""
import json
import os
import subprocess
import sys
import tempfile

SHARED = os.environ.get("KVS_SHARED", "../shared")
KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
MODEL = os.path.join(SHARED, "models", "stories260K.gguf")
FLAGS = ["--device-memory", "1GiB", "--threads", "2"]


def run(args, stdin=None):
    r = subprocess.run([KVSERVE, *args], capture_output=True, timeout=600, input=stdin)
    assert r.returncode == 0, f"{args} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r.stdout.decode()


def expected_once_upon():
    with open(os.path.join(SHARED, "expected", "stories260K_greedy_once_upon_a_time_n64.tokens")) as f:
        for line in f:
            if line.startswith("next_token_at_pos_0.."):
                nxt = [int(x) for x in line.split(":", 1)[1].split()]
    return nxt[4:]  # positions 0..3 are the forced prompt tokens


def main():
    reqs = [{"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0}]
    reqs += [{"prompt": f"Tom had {i} apples", "max_tokens": 5 + i % 17, "temperature": 0} for i in range(30)]
    reqs += [{"prompt": "The dog", "max_tokens": 20, "temperature": 0.9, "seed": 7, "top_p": 0.9},
             {"prompt": [1, 403, 407], "max_tokens": 10, "temperature": 0, "stop": [","]}]
    bad = ['{"prompt": 5}', 'not json', '{"prompt": "x", "bogus_field": 1}', '{"prompt": "x", "temperature": -1}',
           '{"prompt": "x", "echo": true}', '{"prompt": ["x", "y"]}']
    lines = [json.dumps(r) for r in reqs] + bad
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "reqs.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        out = [json.loads(l) for l in run(["generate", "-m", MODEL, "--input-file", path,
                                              "--max-num-batched-tokens", "64", *FLAGS]).splitlines()]
    problems = []
    if len(out) != len(lines):
        problems.append(f"{len(out)} results for {len(lines)} lines")
    for i, r in enumerate(out):
        if r.get("id") != i:
            problems.append(f"result {i} has id {r.get('id')}")
    # each good request equals the same request alone
    for i, q in enumerate(reqs):
        r = out[i]
        if "error" in r:
            problems.append(f"request {i} failed: {r['error']}")
            continue
        if isinstance(q["prompt"], str):
            args = ["generate", "-m", MODEL, "--json", "-p", q["prompt"], "-n", str(q["max_tokens"]),
                    "--temperature", str(q["temperature"]), *FLAGS]
            if "seed" in q:
                args += ["--seed", str(q["seed"]), "--top-p", str(q["top_p"])]
            alone = json.loads(run(args))
            if alone["output_token_ids"] != r["output_token_ids"] or alone["text"] != r["text"]:
                problems.append(f"request {i}: batched {r['output_token_ids']} != alone {alone['output_token_ids']}")
        if len(r["output_token_ids"]) > q["max_tokens"]:
            problems.append(f"request {i}: more than max_tokens")
    want = expected_once_upon()[:60]
    if out[0].get("output_token_ids") != want:
        problems.append(f"greedy 'Once upon a time' differs from llama2.c: {out[0].get('output_token_ids')} vs {want}")
    if out[0].get("finish_reason") != "length":
        problems.append(f"finish_reason {out[0].get('finish_reason')}")
    stop = out[len(reqs) - 1]
    if stop.get("finish_reason") != "stop" or stop.get("text") != " a time":
        problems.append(f"stop string: {stop}")
    for k, line in enumerate(bad):
        r = out[len(reqs) + k]
        err = r.get("error")
        if not err or not err.get("message") or err.get("type") != "invalid_request_error":
            problems.append(f"bad line {line!r} gave {r}")
    if out[len(reqs) + 2].get("error", {}).get("param") != "bogus_field":
        problems.append("the unknown field is not named")
    if [out[len(reqs) + k].get("error", {}).get("param") for k in (4, 5)] != ["echo", "prompt"]:
        problems.append("echo / a prompt list in a batch file is not refused by name")
    for p in problems:
        print("FAIL:", p)
    print(f"{len(out)} results checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
