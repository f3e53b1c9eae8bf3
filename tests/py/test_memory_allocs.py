#!/usr/bin/python3
"""The serving loop allocates nothing per token.

An LD_PRELOAD shim (tests/tools/alloc_count.c) counts every malloc,
calloc, realloc and aligned allocation.  For greedy and for sampled
requests (temperature, top-k, top-p, min-p, the three penalties, a stop
string that is held back and never matches, logprobs where the command
has them), generating 256 tokens must make no more allocations than
generating 32:

  * `generate -p`: the whole process (the engine runs on the main thread);
  * `generate --input-file`: the whole process, four requests at once;
  * `serve`, streaming (completions greedy and sampled with logprobs, chat
    greedy and sampled with top_logprobs, include_usage, n=2): the WHOLE
    process, HTTP threads included (they write each chunk with the
    fixed-buffer JSON writer into a buffer taken once per request), and the
    engine thread;
  * `serve`, not streaming (completions greedy, sampled with logprobs=5
    and echo, n=2; chat greedy, sampled with top_logprobs and n=2): the
    WHOLE process and the engine thread (the text and the per-token logprob
    records are kept in runs of the answer pool; the document is written
    with the fixed-buffer writer in small units as MHD sends it);
  * the streaming chat parser alone (tests/tools/chat_stream_main.c): its
    steps over reasoning and over Hermes tool calls being written, 256
    vs 2048 bytes of output;
  * `serve` with `--reasoning-parser deepseek_r1`, plain and streamed chat:
    the WHOLE process (the parser reads the output kept in the answer pool
    and hands back its deltas without building JSON);
  * structured output (a repeating regex, a GBNF grammar of sentences, a
    json_schema with a long string field: constraints that allow 256
    tokens, so every request runs to max_tokens), greedy and sampled:
    `generate --input-file` (the whole process) and `serve`, streamed and
    not (the whole process and the engine thread): the matchers come from
    the structured-output slots and mask each step's logits in place.

Not under the sanitizers (they own malloc)."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memtest_util as mt  # noqa: E402
from kvs_server_util import Server  # noqa: E402

SHIM = os.environ.get("KVS_ALLOC_COUNT", "")
failures = []

SAMPLED = ["--temperature", "0.9", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.02",
           "--repetition-penalty", "1.1", "--presence-penalty", "0.2", "--frequency-penalty", "0.1",
           "--seed", "7", "--stop", "zzzz never"]
BASE = ["--device-memory", "64MiB", "--max-model-len", "512", "--ignore-eos"]


def counted(args, out_path, env_extra=None):
    env = dict(os.environ, LD_PRELOAD=SHIM, KVS_ALLOC_COUNT_OUT=out_path)
    if env_extra:
        env.update(env_extra)
    p = subprocess.run([mt.KVSERVE] + args, capture_output=True, text=True, timeout=300, env=env)
    if p.returncode != 0:
        sys.exit("FAIL: kvserve %s: %s" % (" ".join(args), p.stderr))
    return read_counts(out_path), p.stdout


def read_counts(path):
    with open(path) as f:
        return {k: int(v) for k, v in (line.split() for line in f if line.strip())}


def compare(what, small, large, key, unit=("32 tokens", "256 tokens")):
    ok = large[key] <= small[key]
    print("%-4s %-58s %s: %6d   %s: %6d  (%s)" % ("ok" if ok else "FAIL", what, unit[0], small[key], unit[1],
                                                 large[key], key))
    if not ok:
        failures.append("%s: %d allocations for %s, %d for %s" % (what, large[key], unit[1], small[key], unit[0]))


def check_plain(what, body, r, n):
    """A plain answer holds every token's logprobs (and the echoed prompt's)."""
    chs = r["choices"]
    if len(chs) != body.get("n", 1):
        failures.append("serve %s: %d choices" % (what, len(chs)))
    for c in chs:
        lp = c.get("logprobs")
        if body.get("logprobs") is None or body.get("logprobs") is False:
            if lp is not None:
                failures.append("serve %s: logprobs %r" % (what, lp))
            continue
        if "content" in (lp or {}):
            got, top = len(lp["content"]), [len(e["top_logprobs"]) for e in lp["content"]]
            want_top = body.get("top_logprobs", 0)
            if got != n or any(t != want_top for t in top):
                failures.append("serve %s: %d logprobs entries (want %d), top sizes %s" % (what, got, n, set(top)))
        else:
            got = len(lp["tokens"])
            extra = got - n  # the echoed prompt's tokens
            if (extra <= 0) != (not body.get("echo")) or len(lp["text_offset"]) != got or \
                    lp["text_offset"] != sorted(lp["text_offset"]) or \
                    any(t is not None and len(t) < 1 for t in lp["top_logprobs"]):
                failures.append("serve %s: %d logprobs tokens for %d generated" % (what, got, n))
        if "reasoning" in what and not (c["message"].get("reasoning_content") and c["message"]["content"] is None):
            failures.append("serve %s: message %r" % (what, c["message"]))


# Structured output that allows 256 tokens (each checked to run to max_tokens).
REGEX = "(the [a-z]+ (was|is|ran) [a-z]+\\. )+"
GBNF = 'root ::= sentence+\nsentence ::= word (" " word)* ". "\nword ::= [a-z]+'
SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 1200}}, "required": ["story"]}
STRUCTURED = [("regex", dict(guided_regex=REGEX)), ("GBNF grammar", dict(guided_grammar=GBNF)),
              ("json_schema", dict(response_format={"type": "json_schema",
                                                    "json_schema": {"name": "story", "schema": SCHEMA}}))]


def structured_text_ok(kind, text):
    """The output so far is a prefix of a sentence of its constraint (loosely: its characters)."""
    if kind == "json_schema":
        return text.startswith('{') and '"story"' in text[:20]
    return all(ch in "abcdefghijklmnopqrstuvwxyz. " for ch in text)


def check_structured(what, body, text):
    for kind, field in STRUCTURED:
        if all(body.get(k) == v for k, v in field.items()) and not structured_text_ok(kind, text):
            failures.append("serve %s: the output %r is not under its constraint" % (what, text[:80]))


def main():
    if mt.sanitizer_build():
        print("SKIP: the sanitizers own malloc")
        return
    if not SHIM or not os.path.exists(SHIM):
        sys.exit("FAIL: KVS_ALLOC_COUNT (the shim) is not built")
    work = tempfile.mkdtemp(prefix="kvs_allocs_", dir=mt.BUILD)
    cnt = os.path.join(work, "counts.txt")

    # generate -p
    for label, flags in (("greedy", ["--temperature", "0"]), ("sampled", SAMPLED)):
        res = {}
        for n in (32, 256):
            c, out = counted(["generate", "-m", mt.STORIES, "-p", "Once upon a time", "-n", str(n)] + BASE + flags, cnt)
            res[n] = c
        compare("generate -p, %s" % label, res[32], res[256], "total")

    # generate --input-file
    for label, params in (("greedy", dict(temperature=0)),
                          ("sampled, logprobs", dict(temperature=0.9, top_k=40, top_p=0.9, min_p=0.02,
                                                     repetition_penalty=1.1, presence_penalty=0.2,
                                                     frequency_penalty=0.1, seed=7, logprobs=3,
                                                     stop=["zzzz never"]))):
        res = {}
        for n in (32, 256):
            path = os.path.join(work, "reqs.jsonl")
            with open(path, "w") as f:
                for p in ("Once upon a time", "The cat", "Lily and Ben", "One day"):
                    f.write(json.dumps(dict(prompt=p, max_tokens=n, ignore_eos=True, **params)) + "\n")
            c, out = counted(["generate", "-m", mt.STORIES, "--input-file", path] + BASE[:4], cnt)
            lens = [len(json.loads(line)["output_token_ids"]) for line in out.splitlines()]
            if lens != [n] * 4:
                failures.append("batch: output lengths %s, expected %d each" % (lens, n))
            res[n] = c
        compare("generate --input-file (4 requests), %s" % label, res[32], res[256], "total")

    # generate --input-file with structured output: a regex, a GBNF grammar and a json_schema line, each
    # greedy and sampled, all at once
    res = {}
    for n in (32, 256):
        path = os.path.join(work, "reqs.jsonl")
        lines = [dict(prompt="Once upon a time", max_tokens=n, ignore_eos=True, temperature=t, seed=7, **field)
                 for _, field in STRUCTURED for t in (0, 0.9)]
        with open(path, "w") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
        c, out = counted(["generate", "-m", mt.STORIES, "--input-file", path] + BASE[:4], cnt)
        results = [json.loads(line) for line in out.splitlines()]
        kinds = [k for k, _ in STRUCTURED for _ in (0, 1)]
        for kind, r in zip(kinds, results):
            if "error" in r or len(r["output_token_ids"]) != n or not structured_text_ok(kind, r["text"]):
                failures.append("batch, %s: %s" % (kind, {k: r.get(k) for k in ("error", "finish_reason", "text")}))
        if len(results) != len(lines):
            failures.append("batch, structured output: %d results for %d lines" % (len(results), len(lines)))
        res[n] = c
    compare("generate --input-file, structured output (6 requests)", res[32], res[256], "total")

    # the streaming chat parser alone (kvs_chat_stream_step over a growing output, 4 bytes a step):
    # reasoning, and a Hermes tool call whose arguments stream, after a complete one; the last step
    # (where a call is parsed whole, allocating per call) is left out
    tool = os.environ.get("KVS_CHAT_STREAM", "")
    for kind, label in ((0, "reasoning"), (1, "a tool call being written"), (2, "a complete call, then one being written")):
        res = {}
        for nbytes in (256, 2048):
            env = dict(os.environ, LD_PRELOAD=SHIM, KVS_ALLOC_COUNT_OUT=cnt)
            p = subprocess.run([tool, str(nbytes), str(kind), "nofinal"], capture_output=True, text=True, env=env,
                               timeout=120)
            if p.returncode != 0:
                sys.exit("FAIL: kvs_chat_stream: %s" % p.stderr)
            res[nbytes] = read_counts(cnt)
        compare("chat stream parser, %s" % label, res[256], res[2048], "total", ("256 bytes", "2048 bytes"))

    # serve: streams (the whole process) and plain answers (the engine thread)
    template = os.path.join(mt.SHARED, "templates", "hf-internal-testing-llama-tokenizer-llama2.jinja")
    msgs = [{"role": "user", "content": "Tell me a story."}]
    streams = [
        ("completions, greedy", "/v1/completions", dict(prompt="Once upon a time", temperature=0, stream=True)),
        ("completions, sampled, logprobs, usage", "/v1/completions",
         dict(prompt="The cat", temperature=0.9, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.1,
              presence_penalty=0.2, frequency_penalty=0.1, seed=3, logprobs=2, stop=["zzzz never"], stream=True,
              stream_options={"include_usage": True})),
        ("chat, greedy", "/v1/chat/completions", dict(messages=msgs, temperature=0, stream=True)),
        ("chat, sampled, top_logprobs, n=2, usage", "/v1/chat/completions",
         dict(messages=msgs, temperature=0.8, seed=5, n=2, logprobs=True, top_logprobs=5, stop=["zzzz never"],
              stream=True, stream_options={"include_usage": True})),
    ]
    plain = [
        ("completions, n=2, sampled", "/v1/completions", dict(prompt="One day", temperature=0.8, n=2, seed=5)),
        ("completions, greedy", "/v1/completions", dict(prompt="Lily", temperature=0)),
        ("completions, sampled, logprobs=5, echo", "/v1/completions",
         dict(prompt="The cat", temperature=0.9, top_k=40, top_p=0.9, seed=3, logprobs=5, echo=True,
              stop=["zzzz never"])),
        ("chat, greedy", "/v1/chat/completions", dict(messages=msgs, temperature=0)),
        ("chat, sampled, top_logprobs, n=2", "/v1/chat/completions",
         dict(messages=msgs, temperature=0.8, seed=5, n=2, logprobs=True, top_logprobs=5, stop=["zzzz never"])),
    ]
    # deepseek_r1: the whole output (stories260K never writes </think>) is reasoning_content
    reasoning = [
        ("chat, reasoning parser, sampled, top_logprobs", "/v1/chat/completions",
         dict(messages=msgs, temperature=0.8, seed=6, logprobs=True, top_logprobs=3)),
        ("chat, reasoning parser, greedy, n=2", "/v1/chat/completions", dict(messages=msgs, temperature=0, n=2)),
        ("chat, reasoning parser, streamed, sampled, top_logprobs, n=2, usage", "/v1/chat/completions",
         dict(messages=msgs, temperature=0.8, seed=5, n=2, logprobs=True, top_logprobs=5, stream=True,
              stream_options={"include_usage": True})),
        ("chat, reasoning parser, streamed, greedy", "/v1/chat/completions",
         dict(messages=msgs, temperature=0, stream=True)),
    ]
    structured = []
    for kind, field in STRUCTURED:
        for stream in (False, True):
            sampled = dict(temperature=0.9, seed=11) if stream == (kind != "regex") else dict(temperature=0)
            tag = "%s, %s, %s" % (kind, "streamed" if stream else "plain", "sampled" if "seed" in sampled else "greedy")
            usage = dict(stream_options={"include_usage": True}) if stream else {}
            structured.append(("completions, " + tag, "/v1/completions",
                               dict(prompt="Once upon a time", stream=stream, **sampled, **usage, **field)))
            structured.append(("chat, " + tag, "/v1/chat/completions",
                               dict(messages=msgs, stream=stream, **sampled, **usage, **field)))
    for label, cases, extra in (("streams", streams, []), ("plain answers", plain, []),
                                ("plain answers and streams, --reasoning-parser", reasoning,
                                 ["--reasoning-parser", "deepseek_r1"]),
                                ("structured output, plain and streamed", structured, [])):
        res = {}
        for n in (32, 256):
            env = {"LD_PRELOAD": SHIM, "KVS_ALLOC_COUNT_OUT": cnt}
            srv = Server(mt.STORIES, "--max-model-len", "512", "--chat-template", template, *extra, env=env)
            try:
                for what, path, body in cases:
                    b = dict(body, max_tokens=n, ignore_eos=True)
                    if b.get("stream"):
                        st, ev, _ = srv.stream(path, b)
                        if st == 200:
                            chunks = [e for e in ev[:-1] if e["choices"]]
                            got = sum(len((c.get("logprobs") or {}).get("content") or
                                          (c.get("logprobs") or {}).get("tokens") or [])
                                      for e in chunks for c in e["choices"])
                            want = n * b.get("n", 1) if b.get("logprobs") else 0
                            if got != want or ev[-1] != "[DONE]":
                                failures.append("serve %s: %d logprobs entries (want %d), last %r" %
                                                (what, got, want, ev[-1]))
                            if b.get("stream_options") and ev[-2]["usage"]["completion_tokens"] != n * b.get("n", 1):
                                failures.append("serve %s: usage %s" % (what, ev[-2]["usage"]))
                            text = "".join(c.get("text") or (c.get("delta") or {}).get("content") or ""
                                           for e in chunks for c in e["choices"])
                            check_structured(what, b, text)
                    else:
                        st, r = srv.post(path, b)
                        if st == 200 and r["usage"]["completion_tokens"] != n * b.get("n", 1):
                            failures.append("serve %s: %s tokens" % (what, r["usage"]))
                        if st == 200:
                            check_plain(what, b, r, n)
                            c0 = r["choices"][0]
                            check_structured(what, b, c0["text"] if "text" in c0 else c0["message"]["content"] or "")
                    if st != 200:
                        failures.append("serve %s: status %s" % (what, st))
            finally:
                rc = srv.stop()
            if rc != 0:
                failures.append("serve exited %s" % rc)
            res[n] = read_counts(cnt)
            if res[n].get("engine_threads") != 1:
                failures.append("serve: the shim saw %s engine threads name themselves (expected 1)" %
                                res[n].get("engine_threads"))
        compare("serve, %s (%d requests), engine thread" % (label, len(cases)), res[32], res[256], "engine")
        compare("serve, %s, whole process" % label, res[32], res[256], "total")
    if failures:
        sys.exit("FAIL:\n" + "\n".join(failures))
    print("OK")


if __name__ == "__main__":
    main()
