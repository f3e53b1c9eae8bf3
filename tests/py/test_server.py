#!/usr/bin/python3
"""`kvserve serve` over loopback: the OpenAI API's shapes and numbers.

References we did not write: llama2.c's greedy runs of stories260K
(shared/expected), its float32 logits at positions 0..3 (log-softmax with
numpy for logprobs), Jinja2 rendering the model's chat template as
Hugging Face does, and curl as a second HTTP client.  Load, faults and
shutdown are in test_server_load.py."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvs_server_util import (BUILD, KVSERVE, SHARED, STORIES, Checks, Server, assert_error,  # noqa: E402
                             parse_sse, raw_http)

EXPECTED = os.path.join(SHARED, "expected")
LLAMA2_TEMPLATE = os.path.join(SHARED, "templates", "hf-internal-testing-llama-tokenizer-llama2.jinja")


def expected_tokens(name):
    """(prompt ids, greedy next tokens after the prompt) from a llama2.c .tokens file."""
    lines = open(os.path.join(EXPECTED, name + ".tokens")).read().splitlines()
    prompt = [int(x) for x in next(l for l in lines if l.startswith("prompt_tokens")).split(":")[1].split()]
    nxt = [int(x) for x in next(l for l in lines if l.startswith("next_token_at_pos")).split(":")[1].split()]
    return prompt, nxt[len(prompt) - 1:]


def counts(u):
    """usage without prompt_tokens_details (cached tokens depend on what ran before)."""
    return (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"])


def complete(srv, **body):
    st, r = srv.post("/v1/completions", body)
    assert st == 200, (st, r)
    return r


# ---------------------------------------------------------------- basics

def t_health_models(srv):
    st, data = srv.get("/health")
    assert st == 200 and data == b"", (st, data)
    st, data = srv.get("/v1/models")
    m = json.loads(data)
    assert st == 200 and m["object"] == "list" and len(m["data"]) == 1, m
    d = m["data"][0]
    assert d["id"] == "stories260K" and d["object"] == "model" and d["max_model_len"] == 2048, d
    st, data = srv.get("/version")
    assert st == 200 and "version" in json.loads(data)


def t_greedy_matches_llama2c(srv):
    prompt, nxt = expected_tokens("stories260K_greedy_once_upon_a_time_n64")
    want_text = open(os.path.join(EXPECTED, "stories260K_greedy_once_upon_a_time_n64.txt")).read()
    r = complete(srv, prompt="Once upon a time", max_tokens=len(nxt), temperature=0)
    c = r["choices"][0]
    assert c["finish_reason"] == "length", c
    assert ("Once upon a time" + c["text"]).rstrip("\n") == want_text.rstrip("\n"), (c["text"], want_text)
    # the same tokens as llama2.c, through /detokenize
    st, d = srv.post("/detokenize", {"tokens": prompt + nxt})
    assert st == 200 and d["prompt"].rstrip("\n") == want_text.rstrip("\n"), d
    # token-id prompt gives the same
    r2 = complete(srv, prompt=prompt, max_tokens=len(nxt), temperature=0)
    assert r2["choices"][0]["text"] == c["text"]
    u = r["usage"]
    assert u == {"prompt_tokens": 5, "completion_tokens": len(nxt), "total_tokens": 5 + len(nxt),
                 "prompt_tokens_details": u["prompt_tokens_details"]}, u
    # kvserve generate agrees
    out = subprocess.run([KVSERVE, "generate", "-m", STORIES, "-p", "Once upon a time", "-n", str(len(nxt)),
                          "--temperature", "0", "--json", "--device-memory", "256MiB"],
                         capture_output=True, text=True, timeout=120, check=True)
    g = json.loads(out.stdout)
    assert g["output_token_ids"] == nxt and g["text"] == c["text"], g


def t_greedy_from_bos(srv):
    _, nxt = expected_tokens("stories260K_greedy_bos_n200")
    want = open(os.path.join(EXPECTED, "stories260K_greedy_bos_n200.txt")).read()
    r = complete(srv, prompt="", max_tokens=len(nxt), temperature=0, ignore_eos=True)
    st, d = srv.post("/detokenize", {"tokens": [1] + nxt})
    assert r["choices"][0]["text"] == d["prompt"], (r["choices"][0]["text"][:80], d["prompt"][:80])
    assert want.startswith(r["choices"][0]["text"].split("\n")[0]), want[:80]


def t_logprobs_against_llama2c_logits(srv):
    rows = [np.array([float(x) for x in l.split()[-512:]], dtype=np.float64)
            for l in open(os.path.join(EXPECTED, "stories260K_logits_pos0-3.txt")).read().splitlines()
            if len(l.split()) >= 512]
    assert len(rows) == 4, len(rows)
    # prompt [BOS]: the 4 greedy tokens are llama2.c's inputs 403, 407, 261 and then 378
    r = complete(srv, prompt=[1], max_tokens=4, temperature=0, logprobs=3)
    lp = r["choices"][0]["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}, lp
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == 4
    toks = [403, 407, 261, 378]
    for i, row in enumerate(rows):
        ls = row - row.max()
        ls = ls - np.log(np.exp(ls).sum())
        assert abs(lp["token_logprobs"][i] - ls[toks[i]]) < 1e-3, (i, lp["token_logprobs"][i], ls[toks[i]])
        top = sorted(lp["top_logprobs"][i].values(), reverse=True)
        want = sorted(ls, reverse=True)[:3]
        assert len(top) == 3 and np.allclose(top, want, atol=1e-3), (top, want)
    offs = lp["text_offset"]
    assert offs == sorted(offs) and offs[0] == 0, offs
    assert "".join(lp["tokens"]).lstrip() == r["choices"][0]["text"].lstrip(), lp["tokens"]


def t_stream_format(srv):
    body = dict(prompt="Once upon a time", max_tokens=40, temperature=0)
    ref = complete(srv, **body)
    st, ev, raw = srv.stream("/v1/completions", dict(body, stream=True, stream_options={"include_usage": True}))
    assert st == 200 and ev[-1] == "[DONE]", raw[-200:]
    chunks = ev[:-1]
    usage = chunks[-1]
    assert usage["choices"] == [] and counts(usage["usage"]) == counts(ref["usage"]), usage
    text = ""
    for i, ch in enumerate(chunks[:-1]):
        assert ch["object"] == "text_completion" and ch["model"] == "stories260K", ch
        assert ch["id"] == chunks[0]["id"] and ch["id"].startswith("cmpl-"), ch
        assert len(ch["choices"]) == 1 and ch["choices"][0]["index"] == 0, ch
        fr = ch["choices"][0]["finish_reason"]
        assert (fr is None) == (i < len(chunks) - 2), (i, fr)
        text += ch["choices"][0]["text"]
    assert text == ref["choices"][0]["text"] and chunks[-2]["choices"][0]["finish_reason"] == "length"
    # without include_usage: no usage chunk
    st, ev, _ = srv.stream("/v1/completions", dict(body, stream=True))
    assert all("usage" not in c for c in ev[:-1]) and ev[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in ev[:-1]) == text


def t_stream_curl(srv):
    body = json.dumps(dict(prompt="Once upon a time", max_tokens=30, temperature=0, stream=True))
    out = subprocess.run(["curl", "-sS", "-N", "--max-time", "60", "-H", "Content-Type: application/json",
                          "-d", body, "http://127.0.0.1:%d/v1/completions" % srv.port],
                         capture_output=True, text=True, timeout=90, check=True)
    ev = parse_sse(out.stdout)
    assert ev[-1] == "[DONE]"
    ref = complete(srv, prompt="Once upon a time", max_tokens=30, temperature=0)
    assert "".join(c["choices"][0]["text"] for c in ev[:-1]) == ref["choices"][0]["text"]
    # curl, non-streaming, with --fail-with-body on an error
    out = subprocess.run(["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
                          "-d", '{"prompt": 5}',
                          "http://127.0.0.1:%d/v1/completions" % srv.port],
                         capture_output=True, text=True, timeout=90, check=True)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "400" and json.loads(body)["error"]["param"] == "prompt", out.stdout


def t_n_and_seed(srv):
    r = complete(srv, prompt="Once upon a time", max_tokens=20, temperature=0, n=2)
    ch = r["choices"]
    assert [c["index"] for c in ch] == [0, 1] and ch[0]["text"] == ch[1]["text"], ch
    assert r["usage"]["completion_tokens"] == 40 and r["usage"]["prompt_tokens"] == 5, r["usage"]
    body = dict(prompt="Once upon a time", max_tokens=24, temperature=1.0, n=3, seed=1234)
    a, b = complete(srv, **body), complete(srv, **body)
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]], (a, b)
    assert len({c["text"] for c in a["choices"]}) > 1, a["choices"]  # seeds differ per choice
    # streaming n=2: each index finishes once, texts equal the non-streamed ones
    st, ev, _ = srv.stream("/v1/completions", dict(body, n=2, stream=True))
    texts, fins = {0: "", 1: ""}, {}
    for c in ev[:-1]:
        for x in c["choices"]:
            texts[x["index"]] += x["text"]
            if x["finish_reason"]:
                fins[x["index"]] = x["finish_reason"]
    assert texts == {0: a["choices"][0]["text"], 1: a["choices"][1]["text"]} and fins == {0: "length", 1: "length"}


def t_stop_strings(srv):
    full = complete(srv, prompt="Once upon a time", max_tokens=60, temperature=0)["choices"][0]["text"]
    cut = full.index("Lily")
    r = complete(srv, prompt="Once upon a time", max_tokens=60, temperature=0, stop=["Lily", "zzz"])
    c = r["choices"][0]
    assert c["text"] == full[:cut] and c["finish_reason"] == "stop", (c, full[:cut])
    st, ev, _ = srv.stream("/v1/completions", dict(prompt="Once upon a time", max_tokens=60, temperature=0,
                                                   stop="Lily", stream=True))
    assert "".join(x["choices"][0]["text"] for x in ev[:-1]) == full[:cut]
    assert ev[-2]["choices"][0]["finish_reason"] == "stop"
    # a stop token id (EOS of this vocabulary is 2; '.' is a stop id here)
    dot = srv.post("/tokenize", {"prompt": ".", "add_special_tokens": False})[1]["tokens"]
    r = complete(srv, prompt="Once upon a time", max_tokens=60, temperature=0, stop_token_ids=dot[-1:])
    assert r["choices"][0]["finish_reason"] == "stop" and "." not in r["choices"][0]["text"], r


def t_sampling_params(srv):
    base = dict(prompt="Once upon a time", max_tokens=8, seed=5)
    for k, v in [("temperature", 0.7), ("top_p", 0.9), ("top_k", 20), ("min_p", 0.05), ("presence_penalty", 0.5),
                 ("frequency_penalty", 0.5), ("repetition_penalty", 1.2), ("ignore_eos", True), ("user", "u")]:
        r = complete(srv, **dict(base, **{k: v}))
        assert r["usage"]["completion_tokens"] >= 1, (k, r)
    for k, v in [("temperature", -1), ("temperature", "hot"), ("top_p", 0), ("top_k", "x"), ("min_p", 2),
                 ("presence_penalty", 3), ("frequency_penalty", -3), ("repetition_penalty", 0), ("n", 0),
                 ("n", 100), ("max_tokens", 0), ("max_tokens", "5"), ("seed", 1.5), ("logprobs", 6),
                 ("stop", 5), ("stop", ["a"] * 9), ("stop", [""]), ("ignore_eos", "yes"), ("stream", 1),
                 ("stream_options", 3), ("stop_token_ids", ["x"])]:
        st, e = srv.post("/v1/completions", dict(base, **{k: v}))
        assert_error(st, e, 400, param=k)


def t_chat(chat_srv):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise ValueError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    tmpl = env.from_string(open(LLAMA2_TEMPLATE).read())
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."},
            {"role": "assistant", "content": "Once upon a time."}, {"role": "user", "content": "More!"}]
    rendered = tmpl.render(messages=msgs, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
    assert rendered.startswith("<s>")
    st, tok = chat_srv.post("/tokenize", {"messages": msgs})
    assert st == 200, tok
    # the template's <s> and </s> are the special tokens (no BOS added before the first), the text between
    # them is tokenized as a prompt of its own (as llama.cpp does with parse_special)
    ref = []
    for frag in re.split(r"(<s>|</s>)", rendered):
        if frag in ("<s>", "</s>"):
            ref.append(1 if frag == "<s>" else 2)
        elif frag:
            ref += chat_srv.post("/tokenize", {"prompt": frag, "add_special_tokens": False})[1]["tokens"]
    assert tok["tokens"] == ref and tok["tokens"].count(1) == 2, (tok, ref)  # <s> twice: two turns
    assert tok["count"] == len(tok["tokens"]) and tok["max_model_len"] == 512
    body = dict(messages=msgs, max_tokens=12, temperature=0)
    st, r = chat_srv.post("/v1/chat/completions", body)
    assert st == 200, r
    c = r["choices"][0]
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-") and r["model"] == "chat", r
    assert c["message"]["role"] == "assistant" and c["finish_reason"] in ("length", "stop"), c
    assert r["usage"]["prompt_tokens"] == tok["count"], (r["usage"], tok["count"])
    # the same tokens through /v1/completions give the same text
    st, rc = chat_srv.post("/v1/completions", dict(prompt=tok["tokens"], max_tokens=12, temperature=0))
    assert rc["choices"][0]["text"] == c["message"]["content"], (rc, c)
    # max_completion_tokens, logprobs
    st, r2 = chat_srv.post("/v1/chat/completions", dict(messages=msgs, max_completion_tokens=5, temperature=0,
                                                        logprobs=True, top_logprobs=2))
    lp = r2["choices"][0]["logprobs"]["content"]
    assert st == 200 and len(lp) == r2["usage"]["completion_tokens"] == 5, r2
    for e in lp:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"} and len(e["top_logprobs"]) == 2, e
        assert e["logprob"] <= 0 and all(set(t) == {"token", "logprob", "bytes"} for t in e["top_logprobs"])
        assert abs(e["top_logprobs"][0]["logprob"] - e["logprob"]) < 1e-5  # greedy: the best one
    # streaming: role first, then content, then [DONE]; usage chunk
    st, ev, _ = chat_srv.stream("/v1/chat/completions", dict(body, stream=True, stream_options={"include_usage": True}))
    assert ev[-1] == "[DONE]" and ev[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}, ev[:2]
    assert all(x["object"] == "chat.completion.chunk" for x in ev[:-1])
    text = "".join(x["choices"][0]["delta"].get("content", "") for x in ev[1:-2])
    assert text == c["message"]["content"] and counts(ev[-2]["usage"]) == counts(r["usage"]), (text, ev[-2])
    # content as text parts
    st, r3 = chat_srv.post("/v1/chat/completions", dict(body, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "text", "text": "a story."}]}]))
    st2, r4 = chat_srv.post("/v1/chat/completions", dict(body, messages=[
        {"role": "user", "content": "Tell me\na story."}]))
    assert st == st2 == 200 and r3["choices"][0]["message"] == r4["choices"][0]["message"]
    # the template's own error (roles must alternate) is a 400
    st, e = chat_srv.post("/v1/chat/completions", dict(body, messages=[{"role": "user", "content": "a"},
                                                                       {"role": "user", "content": "b"}]))
    assert_error(st, e, 400, param="messages")


def t_no_template(srv):
    st, e = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert_error(st, e, 400, param="messages", code="no_chat_template", contains="chat template")
    st, e = srv.post("/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
    assert_error(st, e, 400, param="messages")


def t_tokenize(srv):
    inp = open(os.path.join(SHARED, "vocab", "stories260K.gguf.inp")).read().split("\n__ggml_vocab_test__\n")
    out = open(os.path.join(SHARED, "vocab", "stories260K.gguf.out")).read().split("\n")
    checked = 0
    for text, ids in zip(inp, out):
        if not text:
            continue
        st, r = srv.post("/tokenize", {"prompt": text, "add_special_tokens": False})
        assert st == 200 and r["tokens"] == [int(x) for x in ids.split()], (text, r, ids)
        checked += 1
    assert checked > 30, checked
    st, r = srv.post("/tokenize", {"prompt": "Hello", "model": "stories260K"})
    assert r["tokens"][0] == 1 and r["count"] == len(r["tokens"]) and r["max_model_len"] == 2048
    st, d = srv.post("/detokenize", {"tokens": r["tokens"]})
    assert st == 200 and d == {"prompt": "Hello"}, d
    for body, param in [({"tokens": [1, 99999]}, "tokens"), ({"tokens": "x"}, "tokens"), ({"tokens": [-1]}, "tokens"),
                        ({"tokens": [1], "extra": 1}, "extra")]:
        st, e = srv.post("/detokenize", body)
        assert_error(st, e, 400, param=param)
    for body, param in [({}, "prompt"), ({"prompt": 3}, "prompt"), ({"prompt": "a", "add_special_tokens": 1},
                                                                     "add_special_tokens")]:
        st, e = srv.post("/tokenize", body)
        assert_error(st, e, 400, param=param)
    st, e = srv.post("/tokenize", {"prompt": "a", "model": "nope"})
    assert_error(st, e, 404, param="model", code="model_not_found")


def t_bad_requests(srv):
    L = 2048
    cases = [
        (b"{not json", 400, None, "invalid_json"),
        (b"[1, 2]", 400, None, "invalid_json"),
        (b"", 400, None, "invalid_json"),
        ({"prompt": "a", "best_of": 2}, 400, "best_of", None),
        ({"prompt": "a", "echo": "yes"}, 400, "echo", None),
        ({"prompt": "a", "suffix": "b"}, 400, "suffix", None),
        ({"prompt": ["a", 1]}, 400, "prompt", None),
        ({"prompt": [1, 2, 99999]}, 400, "prompt", None),
        ({"prompt": [1, "x"]}, 400, "prompt", None),
        ({}, 400, "prompt", None),
        ({"prompt": "a", "model": 7}, 400, "model", None),
        ({"prompt": "a", "model": "gpt-4"}, 404, "model", "model_not_found"),
        ({"prompt": [1] * L, "max_tokens": 1}, 400, "prompt", "context_length_exceeded"),
        ({"prompt": [1] * 10, "max_tokens": L}, 400, "max_tokens", "context_length_exceeded"),
        ({"prompt": "a", "logprobs": True}, 400, "logprobs", None),
    ]
    for body, status, param, code in cases:
        st, _, data = srv.request("POST", "/v1/completions", body)
        assert_error(st, json.loads(data), status, param=param, code=code)
    st, _, data = srv.request("POST", "/v1/completions", {"prompt": [1] * 10, "max_tokens": L})
    assert "maximum context length is 2048 tokens" in json.loads(data)["error"]["message"]
    chat_cases = [
        ({"messages": "hi"}, "messages"), ({"messages": []}, "messages"), ({"messages": [{"content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": []}, "tools"),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
        ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1}, "max_completion_tokens"),
    ]
    for body, param in chat_cases:
        st, e = srv.post("/v1/chat/completions", body)
        assert_error(st, e, 400, param=param)
    st, _, data = srv.request("GET", "/v1/completions")
    assert_error(st, json.loads(data), 405)
    st, _, data = srv.request("GET", "/v1/nothing")
    assert_error(st, json.loads(data), 404)
    # bodies over the limit: announced (answered before the body is sent) and chunked
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n")
    resp = raw_http(srv.port, head)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:100]
    assert_error(413, json.loads(resp.partition(b"\r\n\r\n")[2]), 413, code="request_too_large")
    chunk = b"x" * (1 << 20)
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(2)) + b"0\r\n\r\n"  # the limit is 1 MiB
    resp = raw_http(srv.port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:100]
    # the server still serves
    assert complete(srv, prompt="Once", max_tokens=2)["usage"]["completion_tokens"] == 2


def t_named_and_key(tmp_unused=None):
    key = "sk-test-123"
    with Server(STORIES, "--served-model-name", "tiny", "--api-key", key) as srv:
        auth = {"Authorization": "Bearer " + key}
        st, data = srv.get("/v1/models", auth)
        assert st == 200 and json.loads(data)["data"][0]["id"] == "tiny"
        for h in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": key}, {"Authorization": "Bearer " + key + "x"}]:
            st, hdr, data = srv.request("GET", "/v1/models", headers=h)
            assert_error(st, json.loads(data), 401, code="invalid_api_key")
            st, _, data = srv.request("POST", "/v1/completions", {"prompt": "a"}, headers=h)
            assert st == 401
        st, _ = srv.get("/health")  # not under /v1
        assert st == 200
        st, r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 3, "model": "tiny"}, auth)
        assert st == 200 and r["model"] == "tiny", r
        st, e = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 3, "model": "stories260K"}, auth)
        assert_error(st, e, 404, param="model", code="model_not_found")
        assert 'model_name="tiny"' in srv.get("/metrics")[1].decode()
        assert srv.stop() == 0
    with Server(STORIES, env={"KVSERVE_API_KEY": "envkey"}) as srv:
        assert srv.request("GET", "/v1/models")[0] == 401
        assert srv.request("GET", "/v1/models", headers={"Authorization": "Bearer envkey"})[0] == 200
        assert srv.stop(signal.SIGINT) == 0  # Ctrl-C stops cleanly too


def t_metrics_text(srv):
    st, data = srv.get("/metrics")
    text = data.decode()
    m = srv.metrics()
    for name in ["kvserve:num_requests_running", "kvserve:num_requests_waiting", "kvserve:kv_cache_usage_perc",
                 "kvserve:num_preemptions_total", "kvserve:prompt_tokens_total", "kvserve:generation_tokens_total",
                 "kvserve:prefix_cache_queries_total", "kvserve:prefix_cache_hits_total",
                 "kvserve:time_to_first_token_seconds_count", "kvserve:time_per_output_token_seconds_count",
                 "kvserve:e2e_request_latency_seconds_count", 'kvserve:request_success_total{finished_reason="length"}',
                 "kvserve:memory_weights_bytes", "kvserve:memory_kv_cache_bytes", "kvserve:memory_budget_bytes",
                 "kvserve:memory_activation_peak_bytes", "kvserve:memory_overhead_bytes"]:
        assert name in m, name
    assert "# TYPE kvserve:time_to_first_token_seconds histogram" in text
    assert 'le="+Inf"' in text and 'model_name="stories260K"' in text
    # histogram buckets are cumulative and end at the count
    b = [v for k, v in m.items() if k.startswith("kvserve:e2e_request_latency_seconds_bucket")]
    assert b == sorted(b) and b[-1] == m["kvserve:e2e_request_latency_seconds_count"] > 0
    before = srv.metrics()
    r = complete(srv, prompt="Once upon a time", max_tokens=7, temperature=0)
    after = srv.metrics()
    assert after["kvserve:generation_tokens_total"] - before["kvserve:generation_tokens_total"] == 7
    assert after["kvserve:prompt_tokens_total"] - before["kvserve:prompt_tokens_total"] == 5
    assert after['kvserve:request_success_total{finished_reason="length"}'] - \
        before['kvserve:request_success_total{finished_reason="length"}'] == 1
    assert after["kvserve:time_per_output_token_seconds_count"] - before["kvserve:time_per_output_token_seconds_count"] == 6
    assert r["usage"]["completion_tokens"] == 7
    # the memory report's terms
    rep = json.load(open(os.path.join(BUILD, "serve_memory_report.json")))
    for k in ["weights_bytes", "kv_cache_bytes", "budget_bytes", "activation_peak_bytes", "overhead_bytes",
              "total_bytes"]:
        assert m["kvserve:memory_" + k] == rep[k], k


def main():
    checks = Checks()
    chat_model = os.path.join(BUILD, "serve_chat_test.gguf")
    subprocess.run([KVSERVE, "synth", "-o", chat_model, "--preset", "stories260k", "--vocab-from", STORIES,
                    "--chat-template", LLAMA2_TEMPLATE, "--seed", "3", "--init-scale", "3"], check=True, timeout=120)
    report = os.path.join(BUILD, "serve_memory_report.json")
    with Server(STORIES, "--memory-report", report) as srv:
        checks.run("health and models", t_health_models, srv)
        checks.run("greedy = llama2.c (Once upon a time)", t_greedy_matches_llama2c, srv)
        checks.run("greedy from BOS = llama2.c", t_greedy_from_bos, srv)
        checks.run("logprobs = llama2.c logits", t_logprobs_against_llama2c_logits, srv)
        checks.run("SSE stream format and usage", t_stream_format, srv)
        checks.run("curl stream", t_stream_curl, srv)
        checks.run("n and seed", t_n_and_seed, srv)
        checks.run("stop strings and ids", t_stop_strings, srv)
        checks.run("sampling parameters", t_sampling_params, srv)
        checks.run("chat without a template", t_no_template, srv)
        checks.run("tokenize / detokenize", t_tokenize, srv)
        checks.run("bad requests", t_bad_requests, srv)
        checks.run("metrics", t_metrics_text, srv)
        rc = srv.stop()

        def exited_0():
            assert rc == 0, (rc, "".join(srv.log[-5:]))
        checks.run("SIGTERM exits 0", exited_0)
    with Server(chat_model, "--served-model-name", "chat") as chat_srv:
        checks.run("chat template, stream, logprobs", t_chat, chat_srv)
    checks.run("served model name and API key", t_named_and_key)
    checks.finish()


if __name__ == "__main__":
    main()
