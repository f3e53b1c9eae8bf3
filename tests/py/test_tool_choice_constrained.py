"""tool_choice "required" and a named function constrain decoding (as vLLM does).

A random-weight model (GPT-2's 50k vocabulary, Qwen2.5's real chat template)
never writes a tool call by itself; with tool_choice "required" or a named
function the output is constrained to the tool-call JSON by the structured-
output grammar, so every response must come back as tool calls whose names are
the tools' and whose arguments validate against the tool's `parameters` with
Python's `jsonschema` (the oracle), plain and streamed, greedy and sampled.
Combining a forced tool_choice with response_format is a 400 naming tool_choice.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from kvs_server_util import BUILD, KVSERVE, SHARED, Checks, Server, assert_error  # noqa: E402

import jsonschema  # noqa: E402  (python3-jsonschema, scripts/deps.sh)

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                         "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"tz": {"enum": ["utc", "cet"]}}, "required": ["tz"],
        "additionalProperties": False}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def check_calls(calls, only=None):
    assert calls, "no tool calls"
    for c in calls:
        name = c["function"]["name"]
        assert name in PARAMS and (only is None or name == only), name
        jsonschema.validate(json.loads(c["function"]["arguments"]), PARAMS[name])


def body(tool_choice, **kw):
    b = {"model": "toolm", "max_tokens": 400, "messages": [{"role": "user", "content": "Weather in Paris?"}],
         "tools": TOOLS, "tool_choice": tool_choice}
    b.update(kw)
    return b


def plain(s, tool_choice, only, allow_length=False, **kw):
    """One request; True when it finished with tool calls (all of which must
    validate).  With allow_length, an output cut by max_tokens (an unbounded
    "required" array of calls can go on) is accepted if it is the start of the
    constrained JSON array."""
    st, r = s.post("/v1/chat/completions", body(tool_choice, **kw))
    assert st == 200, r
    ch = r["choices"][0]
    if allow_length and ch["finish_reason"] == "length":
        assert ch["message"]["content"].lstrip().startswith("["), ch
        return False
    assert ch["finish_reason"] == "tool_calls", ch
    check_calls(ch["message"]["tool_calls"], only)
    return True


def streamed(s, tool_choice, only, **kw):
    st, events, text = s.stream("/v1/chat/completions", body(tool_choice, stream=True, **kw))
    assert st == 200, text
    calls = {}
    finish = None
    for e in events:
        if e == "[DONE]":
            continue
        for ch in e["choices"]:
            finish = ch.get("finish_reason") or finish
            for tc in ch["delta"].get("tool_calls") or []:
                c = calls.setdefault(tc["index"], {"function": {"name": "", "arguments": ""}})
                f = tc.get("function") or {}
                c["function"]["name"] += f.get("name") or ""
                c["function"]["arguments"] += f.get("arguments") or ""
    assert finish == "tool_calls", finish
    check_calls([calls[i] for i in sorted(calls)], only)


def main():
    model = os.path.join(BUILD, "toolm.gguf")
    subprocess.run([KVSERVE, "synth", "-o", model, "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                    "--hidden", "128", "--type", "f32", "--vocab-from",
                    os.path.join(SHARED, "vocab", "ggml-vocab-gpt-2.gguf"), "--chat-template",
                    os.path.join(SHARED, "templates", "Qwen-Qwen2.5-7B-Instruct.jinja")],
                   check=True, capture_output=True)
    checks = Checks()
    # (one structured-output slot: the requests come one at a time, and under the sanitizers the default
    # 8 over this 50k vocabulary, 16 MiB, leave the device no KV cache; 320 MiB: the sanitizers' larger
    # code and runtime left 256 MiB 140 KiB short of 1024 tokens)
    with Server(model, "--max-model-len", "1024", "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
                "--max-structured-seqs", "1", "--device-memory", "320MiB") as s:
        named = {"type": "function", "function": {"name": "get_time"}}
        def required_sampled():
            done = sum(plain(s, "required", None, allow_length=True, temperature=1.0, seed=sd) for sd in range(1, 7))
            assert done >= 3, f"only {done} of 6 sampled 'required' outputs closed their array"
        checks.run("required, sampled (6 seeds)", required_sampled)
        for seed in (1, 2, 3):
            checks.run(f"named, sampled (seed {seed})", lambda sd=seed: plain(s, named, "get_time", temperature=1.0, seed=sd))
        checks.run("named, greedy", lambda: plain(s, named, "get_time", temperature=0))
        checks.run("required, streamed", lambda: streamed(s, "required", None, temperature=1.0, seed=4))
        checks.run("named, streamed", lambda: streamed(s, named, "get_time", temperature=1.0, seed=5))

        def combined():
            st, r = s.post("/v1/chat/completions", body("required", response_format={"type": "json_object"}))
            assert_error(st, r, 400, param="tool_choice")
        checks.run("required + response_format is a 400", combined)
    checks.finish()


if __name__ == "__main__":
    main()
