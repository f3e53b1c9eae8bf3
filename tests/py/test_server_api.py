#!/usr/bin/python3
"""`kvserve serve`: the OpenAI / vLLM request fields beyond the basics.

Prompt lists (choices numbered prompt-major, usage summed), GET
/v1/models/{id}, stop_reason, \\u0000 in JSON strings, integral floats,
usage: null on stream chunks, min_tokens, logit_bias, echo with the prompt
tokens' logprobs (computed in chunks inside the logits buffer), suffix, and
which length field an error names.

References we did not write: llama2.c's float32 logits of stories260K at
positions 0..3 and its greedy runs (shared/expected; log-softmax with numpy),
and llama2.c's tokenizer file tok512.bin (its pieces, <0xXX> byte tokens
decoded as llama2.c's decode() does)."""

import json
import os
import socket
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvs_server_util import (BUILD, KVSERVE, SHARED, STORIES, Checks, Server, assert_error,  # noqa: E402
                             wait_for)

EXPECTED = os.path.join(SHARED, "expected")
LLAMA2_TEMPLATE = os.path.join(SHARED, "templates", "hf-internal-testing-llama-tokenizer-llama2.jinja")
ONCE = "Once upon a time"
ONCE_IDS = [1, 403, 407, 261, 378]   # llama2.c: the prompt encodes to these (shared/README.md)
EOS = 2


def complete(srv, **body):
    st, r = srv.post("/v1/completions", body)
    assert st == 200, (st, r)
    return r


def llama2c_logsoftmax():
    """llama2.c's logits at positions 0..3 (inputs 1, 403, 407, 261) as log-softmax rows."""
    rows = [np.array([float(x) for x in l.split()[-512:]], dtype=np.float64)
            for l in open(os.path.join(EXPECTED, "stories260K_logits_pos0-3.txt")).read().splitlines()
            if len(l.split()) >= 512]
    assert len(rows) == 4
    out = []
    for row in rows:
        ls = row - row.max()
        out.append(ls - np.log(np.exp(ls).sum()))
    return out


def llama2c_pieces():
    """tok512.bin: int max_len, then per token float score, int len, bytes."""
    b = open(os.path.join(SHARED, "models", "tok512.bin"), "rb").read()
    o, pieces = 4, []
    while o < len(b):
        _, n = struct.unpack("<fi", b[o:o + 8])
        o += 8
        pieces.append(b[o:o + n])
        o += n
    return pieces


def llama2c_decode(pieces, ids):
    """llama2.c run.c decode(): <0xXX> is that byte; a space after BOS is dropped; BOS/EOS
    themselves are never printed (generate() starts after BOS and stops at it)."""
    out, prev = b"", None
    for t in ids:
        if t in (1, 2):
            prev = t
            continue
        p = pieces[t]
        if prev == 1 and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            p = bytes([int(p[3:5], 16)])
        out += p
        prev = t
    return out


# ---------------------------------------------------------------- prompt lists

def t_prompt_lists(srv):
    lily = srv.post("/tokenize", {"prompt": "Lily"})[1]["tokens"]
    singles = [complete(srv, prompt=p, max_tokens=6, temperature=0) for p in (ONCE, "Lily")]
    for prompt in (["Once upon a time", "Lily"], [ONCE_IDS, lily]):
        r = complete(srv, prompt=prompt, max_tokens=6, temperature=0, n=2)
        ch = r["choices"]
        # OpenAI numbers them prompt-major: index = prompt * n + choice
        assert [c["index"] for c in ch] == [0, 1, 2, 3], ch
        for i, c in enumerate(ch):
            assert c["text"] == singles[i // 2]["choices"][0]["text"], (i, c, singles[i // 2])
        u = r["usage"]
        assert u["prompt_tokens"] == 5 + len(lily) and u["completion_tokens"] == 24, u
        assert u["total_tokens"] == u["prompt_tokens"] + 24
    # a single list of ids is one prompt; a list of one string is one prompt
    r = complete(srv, prompt=ONCE_IDS, max_tokens=6, temperature=0)
    assert [c["text"] for c in r["choices"]] == [singles[0]["choices"][0]["text"]]
    r = complete(srv, prompt=[ONCE], max_tokens=6, temperature=0)
    assert len(r["choices"]) == 1 and r["usage"]["prompt_tokens"] == 5
    # seeded sampling: choice i of each prompt uses seed + i, as a request of that prompt alone
    body = dict(max_tokens=12, temperature=1.0, seed=77, n=2)
    both = complete(srv, prompt=[ONCE, "Lily"], **body)
    alone = [complete(srv, prompt=p, **body) for p in (ONCE, "Lily")]
    assert [c["text"] for c in both["choices"]] == [c["text"] for a in alone for c in a["choices"]]
    # streaming: each index once, the same texts, one usage chunk summing all
    st, ev, _ = srv.stream("/v1/completions", dict(prompt=[ONCE, "Lily"], max_tokens=6, temperature=0, n=2,
                                                   stream=True, stream_options={"include_usage": True}))
    assert st == 200 and ev[-1] == "[DONE]"
    texts, fins = {}, {}
    for c in ev[:-2]:
        for x in c["choices"]:
            texts[x["index"]] = texts.get(x["index"], "") + x["text"]
            if x["finish_reason"]:
                fins[x["index"]] = x["finish_reason"]
    assert texts == {i: singles[i // 2]["choices"][0]["text"] for i in range(4)}, texts
    assert fins == {i: "length" for i in range(4)} and ev[-2]["usage"]["completion_tokens"] == 24, ev[-2]
    for bad in ([], [[]], ["a", [1]], [[1], "a"], [[1, "x"]], [1, [2]], ["a"] * 65, [[1, 99999]], {"a": 1}):
        st, e = srv.post("/v1/completions", {"prompt": bad, "max_tokens": 1})
        assert_error(st, e, 400, param="prompt")
    st, e = srv.post("/v1/completions", {"prompt": ["a"] * 20, "n": 16, "max_tokens": 1})
    assert_error(st, e, 400, param="n")
    # a too-long prompt in a list is a 400 naming the prompt; nothing runs
    st, e = srv.post("/v1/completions", {"prompt": [[1, 2], [1] * 2048], "max_tokens": 1})
    assert_error(st, e, 400, param="prompt", code="context_length_exceeded")


def t_models_retrieve(srv):
    st, data = srv.get("/v1/models/stories260K")
    assert st == 200, (st, data)   # http.c routes GET /v1/models/{id} to kvs_api_model()
    m = json.loads(data)
    st, lst = srv.get("/v1/models")
    assert m == json.loads(lst)["data"][0] and m["id"] == "stories260K" and m["object"] == "model", m
    st, data = srv.get("/v1/models/gpt-4")
    assert_error(st, json.loads(data), 404, param="model", code="model_not_found")


# ---------------------------------------------------------------- stop_reason

def t_stop_reason(srv):
    base = dict(prompt=ONCE, max_tokens=40, temperature=0)
    full = complete(srv, **base)["choices"][0]
    assert full["finish_reason"] == "length" and full["stop_reason"] is None, full
    c = complete(srv, stop=["zzz", "Lily"], **base)["choices"][0]
    assert c["finish_reason"] == "stop" and c["stop_reason"] == "Lily", c
    dot = srv.post("/tokenize", {"prompt": ".", "add_special_tokens": False})[1]["tokens"][-1]
    c = complete(srv, stop_token_ids=[dot], **base)["choices"][0]
    assert c["finish_reason"] == "stop" and c["stop_reason"] == dot and "." not in c["text"], c
    # EOS: finish_reason stop, stop_reason null (vLLM); a +100 bias makes EOS the first token
    c = complete(srv, logit_bias={str(EOS): 100}, **base)
    assert c["choices"][0]["finish_reason"] == "stop" and c["choices"][0]["stop_reason"] is None, c
    assert c["usage"]["completion_tokens"] == 1 and c["choices"][0]["text"] == "", c
    st, ev, _ = srv.stream("/v1/completions", dict(base, stop="Lily", stream=True))
    last = ev[-2]["choices"][0]
    assert last["finish_reason"] == "stop" and last["stop_reason"] == "Lily", last
    assert all(x["choices"][0]["stop_reason"] is None for x in ev[:-2])


# ---------------------------------------------------------------- JSON edge cases

def t_nul_and_numbers(srv):
    # \u0000 inside a JSON string is valid JSON: the prompt holds a NUL byte (tokenized as <0x00>, id 3)
    raw = b'{"prompt": "nd\\u0000ed", "max_tokens": 2, "temperature": 0}'
    st, _, data = srv.request("POST", "/v1/completions", raw)
    assert st == 200, data
    r = json.loads(data)
    st, _, tok = srv.request("POST", "/tokenize", b'{"prompt": "nd\\u0000ed"}')
    tok = json.loads(tok)
    assert st == 200 and 3 in tok["tokens"] and r["usage"]["prompt_tokens"] == tok["count"], (tok, r)
    # the same ids as a list: the same completion
    assert complete(srv, prompt=tok["tokens"], max_tokens=2, temperature=0)["choices"][0]["text"] == \
        r["choices"][0]["text"]
    # /detokenize keeps the NUL byte (it used to stop there and return "nd")
    pieces = llama2c_pieces()
    for ids in ([264, 3, 266], [1, 264, 3, 266], [3], [3, 3, 264]):
        st, _, data = srv.request("POST", "/detokenize", {"tokens": ids})
        assert st == 200 and b"\\u0000" in data, data
        want = llama2c_decode(pieces, ids).decode("utf-8")
        assert json.loads(data)["prompt"] == want, (ids, data, want)
    st, d = srv.post("/detokenize", {"tokens": [264.0, 3.0, 266.0]})  # integral floats here too
    assert st == 200 and d["prompt"] == "nd\x00ed", d
    st, e = srv.post("/detokenize", {"tokens": [264.5]})
    assert_error(st, e, 400, param="tokens")
    # a stop string holding NUL is matched with its length
    st, _, data = srv.request("POST", "/v1/completions",
                              b'{"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0, "stop": ["x\\u0000"]}')
    assert st == 200 and json.loads(data)["choices"][0]["finish_reason"] == "length", data
    # a model name with a NUL in it is not the served model
    st, _, data = srv.request("POST", "/v1/completions", b'{"prompt": "a", "model": "stories260K\\u0000x"}')
    assert_error(st, json.loads(data), 404, param="model", code="model_not_found")
    # integral floats where integers go (vLLM's validation accepts 2.0, rejects 2.5)
    r = complete(srv, prompt=ONCE, max_tokens=3.0, temperature=0, n=2.0, top_k=5.0, seed=3.0, logprobs=1.0)
    assert r["usage"]["completion_tokens"] == 6 and len(r["choices"]) == 2, r
    assert len(r["choices"][0]["logprobs"]["tokens"]) == 3
    r2 = complete(srv, prompt=[1.0, 403.0, 407.0, 261.0, 378.0], max_tokens=3, temperature=0)
    assert r2["choices"][0]["text"] == r["choices"][0]["text"]
    for k, v in [("max_tokens", 2.5), ("n", 1.5), ("top_k", 0.5), ("logprobs", 1.5), ("min_tokens", 0.5),
                 ("stop_token_ids", [2.5]), ("prompt", [1, 2.5]), ("max_tokens", 1e300)]:
        st, e = srv.post("/v1/completions", {"prompt": "a", k: v} if k != "prompt" else {"prompt": v})
        assert_error(st, e, 400, param=k)


def t_stream_usage_null(srv):
    body = dict(prompt=ONCE, max_tokens=5, temperature=0, stream=True)
    st, ev, _ = srv.stream("/v1/completions", dict(body, stream_options={"include_usage": True}))
    chunks = ev[:-1]
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1]), chunks[:-1]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5, chunks[-1]
    st, ev, _ = srv.stream("/v1/completions", body)
    assert all("usage" not in c for c in ev[:-1])


# ---------------------------------------------------------------- min_tokens, logit_bias

def t_min_tokens(srv):
    base = dict(prompt=ONCE, max_tokens=30, temperature=0, logit_bias={str(EOS): 100})
    for m in (0, 1, 5, 12):
        r = complete(srv, min_tokens=m, **base)
        c = r["choices"][0]
        # EOS is masked until min_tokens outputs exist, then the +100 bias makes it come at once
        assert c["finish_reason"] == "stop" and r["usage"]["completion_tokens"] == max(m, 0) + 1, (m, r)
    # with min_tokens = max_tokens the length limit comes first
    r = complete(srv, min_tokens=30, **base)
    assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 30, r
    # a stop token id is masked too, and stop strings are not looked for before min_tokens
    full = complete(srv, prompt=ONCE, max_tokens=40, temperature=0, logprobs=0)
    toks = full["choices"][0]["logprobs"]["tokens"]
    dot = srv.post("/tokenize", {"prompt": ".", "add_special_tokens": False})[1]["tokens"][-1]
    first_dot = toks.index(".")
    r = complete(srv, prompt=ONCE, max_tokens=40, temperature=0, stop_token_ids=[dot], min_tokens=first_dot + 1,
                 logprobs=0)
    got = r["choices"][0]["logprobs"]["tokens"]
    assert got[:first_dot] == toks[:first_dot] and got[first_dot] != ".", (got, toks)
    assert r["usage"]["completion_tokens"] > first_dot + 1, r
    lily_end = len(full["choices"][0]["text"][:full["choices"][0]["text"].index("Lily")])
    r = complete(srv, prompt=ONCE, max_tokens=40, temperature=0, stop=["Lily"], min_tokens=20)
    assert r["choices"][0]["text"][:lily_end + 4].endswith("Lily"), r  # the early Lily did not stop it
    for body in ({"min_tokens": -1}, {"min_tokens": 5, "max_tokens": 4}, {"min_tokens": "3"}):
        st, e = srv.post("/v1/completions", dict(prompt="a", **body))
        assert_error(st, e, 400, param="min_tokens")


def t_logit_bias(srv):
    ls = llama2c_logsoftmax()
    # prompt [BOS]: llama2.c's best first token is 403; with -100 on it, greedy takes llama2.c's second best
    order = np.argsort(-ls[0], kind="stable")
    assert order[0] == 403
    r = complete(srv, prompt=[1], max_tokens=1, temperature=0, logit_bias={"403": -100}, logprobs=2)
    lp = r["choices"][0]["logprobs"]
    st, d = srv.post("/detokenize", {"tokens": [1, int(order[1])]})
    assert r["choices"][0]["text"] == d["prompt"], (r, d, order[:3])
    # the reported logprob is of the model's distribution (vLLM's default raw logprobs), not the biased one
    assert abs(lp["token_logprobs"][0] - ls[0][order[1]]) < 1e-3, (lp, ls[0][order[1]])
    # +100 on a token makes it every greedy token; the clamp to [-100, 100] keeps 1e6 the same
    a = complete(srv, prompt=ONCE, max_tokens=6, temperature=0, logit_bias={"261": 100})
    b = complete(srv, prompt=ONCE, max_tokens=6, temperature=0, logit_bias={"261": 1e6})
    st, d = srv.post("/detokenize", {"tokens": [261] * 6})
    assert a["choices"][0]["text"] == b["choices"][0]["text"] == " " + d["prompt"], (a, d)
    # and a sampled request too
    c = complete(srv, prompt=ONCE, max_tokens=6, temperature=1.0, seed=1, logit_bias={"261": 100})
    assert c["choices"][0]["text"] == a["choices"][0]["text"]
    for bias in ({"x": 1}, {"-1": 1}, {"512": 1}, {"99999": 1}, {"3": "a"}, [1], {"1.5": 1}):
        st, e = srv.post("/v1/completions", {"prompt": "a", "logit_bias": bias})
        assert_error(st, e, 400, param="logit_bias")


# ---------------------------------------------------------------- echo

def check_prompt_logprobs(lp, n_top, ls):
    """lp: a completion logprobs object whose first 4 tokens are the prompt [1, 403, 407, 261]."""
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None, lp
    for i, tok in ((1, 403), (2, 407), (3, 261)):
        assert abs(lp["token_logprobs"][i] - ls[i - 1][tok]) < 1e-3, (i, lp["token_logprobs"][i], ls[i - 1][tok])
        top = sorted(lp["top_logprobs"][i].values(), reverse=True)
        want = sorted(ls[i - 1], reverse=True)[:n_top]
        assert len(top) >= n_top and np.allclose(top[:n_top], want, atol=1e-3), (i, top, want)


def t_echo(srv, small_srv):
    ls = llama2c_logsoftmax()
    prompt = ONCE_IDS[:4]
    st, d = srv.post("/detokenize", {"tokens": prompt})
    ptext = d["prompt"]
    r = complete(srv, prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=3)
    c = r["choices"][0]
    lp = c["logprobs"]
    assert c["text"] == ptext + " time", c  # llama2.c's greedy token after "Once upon a" is 378 " time"
    assert len(lp["tokens"]) == 5 and r["usage"]["prompt_tokens"] == 4 and r["usage"]["completion_tokens"] == 1
    check_prompt_logprobs(lp, 3, ls)
    assert abs(lp["token_logprobs"][4] - ls[3][378]) < 1e-3  # the generated token, llama2.c's row 3
    offs = lp["text_offset"]
    assert offs == sorted(offs) and offs[-1] == len(ptext), offs
    assert "".join(lp["tokens"][1:]).lstrip() == c["text"], lp["tokens"]
    # echo without logprobs, and a text prompt: the prompt as sent comes first
    r = complete(srv, prompt=ONCE, max_tokens=8, temperature=0, echo=True)
    plain = complete(srv, prompt=ONCE, max_tokens=8, temperature=0)
    assert r["choices"][0]["text"] == ONCE + plain["choices"][0]["text"] and r["choices"][0]["logprobs"] is None
    # echo with max_tokens 0: the prompt and its logprobs only (vLLM), nothing generated
    r = complete(srv, prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    c = r["choices"][0]
    assert c["text"] == ptext and len(c["logprobs"]["tokens"]) == 4 and r["usage"]["completion_tokens"] == 0, r
    check_prompt_logprobs(c["logprobs"], 2, ls)
    st, e = srv.post("/v1/completions", {"prompt": "a", "max_tokens": 0})
    assert_error(st, e, 400, param="max_tokens")
    # streaming: the prompt and its logprobs come in each choice's first chunk
    body = dict(prompt=[prompt, ONCE_IDS[:2]], max_tokens=4, temperature=0, echo=True, logprobs=1, n=2)
    ref = complete(srv, **body)
    st, ev, _ = srv.stream("/v1/completions", dict(body, stream=True))
    texts, lps = {}, {}
    for x in ev[:-1]:
        for ch in x["choices"]:
            texts[ch["index"]] = texts.get(ch["index"], "") + ch["text"]
            l = lps.setdefault(ch["index"], {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []})
            for k in l:
                l[k] += ch["logprobs"][k]
    assert len(ref["choices"]) == 4
    for ch in ref["choices"]:
        assert texts[ch["index"]] == ch["text"] and lps[ch["index"]] == ch["logprobs"], (ch, texts, lps)
    check_prompt_logprobs(ref["choices"][1]["logprobs"], 1, ls)
    # a long prompt: the same prompt logprobs when the logits buffer has only 2 rows per step (so they are
    # computed 2 positions at a time, alongside other requests), and after a prefix-cache hit
    long_ids = complete(srv, prompt=[1], max_tokens=60, temperature=0, logprobs=0)
    st, ids = srv.post("/tokenize", {"prompt": long_ids["choices"][0]["text"]})
    ids = ids["tokens"]
    body = dict(prompt=ids, max_tokens=3, temperature=0, echo=True, logprobs=2)
    a = complete(srv, **body)
    b = complete(srv, **body)   # the prefix cache holds this prompt now: it must not skip positions
    c = complete(small_srv, **body)
    la, lb, lc = (x["choices"][0]["logprobs"] for x in (a, b, c))
    assert len(la["tokens"]) == len(ids) + 3 and la["tokens"] == lb["tokens"] == lc["tokens"]
    for l in (lb, lc):
        assert np.allclose(np.array(la["token_logprobs"][1:]), np.array(l["token_logprobs"][1:]), atol=1e-4)
    assert a["choices"][0]["text"] == c["choices"][0]["text"]
    # several at once on the 2-row server: each gets the same as alone
    import concurrent.futures as cf
    with cf.ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda _: small_srv.post("/v1/completions", body), range(4)))
    for st, o in outs:
        assert st == 200 and o["choices"][0]["logprobs"]["tokens"] == la["tokens"], o
        assert np.allclose(np.array(o["choices"][0]["logprobs"]["token_logprobs"][1:]),
                           np.array(la["token_logprobs"][1:]), atol=1e-4)
    # suffix stays a 400 naming it for a model without infill tokens (this one)
    st, e = srv.post("/v1/completions", {"prompt": "a", "suffix": "b"})
    assert_error(st, e, 400, param="suffix", contains="infill")


def t_suffix_fim(fim_srv, model, pieces):
    """suffix on a vocabulary with fill-in-the-middle tokens: llama.cpp's infill prompt
    [BOS] PRE prefix SUF suffix MID, with the ids read from the GGUF's token list."""
    from test_reference_forward import read_gguf
    meta, _ = read_gguf(model)
    vocab = meta["tokenizer.ggml.tokens"]
    pre, suf, mid = (vocab.index(p) for p in pieces)
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))"

    def tok(text, special):
        st, r = fim_srv.post("/tokenize", {"prompt": text, "add_special_tokens": special})
        assert st == 200, r
        return r["tokens"]
    bos = tok("", True)
    ids = bos + [pre] + tok(prefix, False) + [suf] + tok(suffix, False) + [mid]
    r = complete(fim_srv, prompt=prefix, suffix=suffix, max_tokens=8, temperature=0)
    ref = complete(fim_srv, prompt=ids, max_tokens=8, temperature=0)
    assert r["usage"]["prompt_tokens"] == len(ids), (r["usage"], len(ids))
    assert r["choices"][0]["text"] == ref["choices"][0]["text"], (r, ref)
    r2 = complete(fim_srv, prompt=[prefix, "x = "], suffix=suffix, max_tokens=4, temperature=0, n=2)
    assert len(r2["choices"]) == 4 and r2["choices"][0]["text"] == r["choices"][0]["text"][:len(r2["choices"][0]["text"])]
    for body in ({"echo": True}, {"prompt": [1, 2]}, {"suffix": 5}):
        st, e = fim_srv.post("/v1/completions", dict({"prompt": prefix, "suffix": suffix}, **body))
        assert_error(st, e, 400, param="suffix")


def t_list_disconnect(srv):
    """A client of a prompt list that leaves: every choice of every prompt is aborted, the blocks freed."""
    ab = 'kvserve:request_success_total{finished_reason="abort"}'

    def idle():
        m = srv.metrics()
        return m if m["kvserve:num_requests_running"] == 0 and m["kvserve:num_requests_waiting"] == 0 else None
    before = wait_for(idle, timeout=30)
    for stream in (True, False):
        body = json.dumps(dict(prompt=[ONCE, "Lily", "The cat"], n=2, max_tokens=1500, ignore_eos=True,
                               stream=stream)).encode()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert wait_for(lambda: srv.metrics()["kvserve:num_requests_running"] == 6, timeout=30)
        s.close()
        after = wait_for(idle, timeout=30)
        assert after and after["kvserve:kv_cache_usage_perc"] == 0.0, after
        assert after[ab] == before[ab] + 6, (before[ab], after[ab])
        before = after


# ---------------------------------------------------------------- chat: length field, usage null

def t_chat_fields(chat_srv):
    msgs = [{"role": "user", "content": "Tell me a story."}]
    for field in ("max_tokens", "max_completion_tokens"):
        st, e = chat_srv.post("/v1/chat/completions", {"messages": msgs, field: 5000})
        assert_error(st, e, 400, param=field, code="context_length_exceeded")
    st, _, data = chat_srv.request("POST", "/v1/chat/completions",
                                   b'{"messages": [{"role": "user\\u0000x", "content": "hi"}]}')
    assert_error(st, json.loads(data), 400, param="messages")  # never taken for "user"
    st, ev, _ = chat_srv.stream("/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "stream": True,
                                                         "stream_options": {"include_usage": True}})
    assert all(c["usage"] is None for c in ev[:-2]) and ev[-2]["usage"]["completion_tokens"] == 4, ev
    st, r = chat_srv.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 20, "temperature": 0,
                                                   "logit_bias": {str(EOS): 100}, "min_tokens": 3})
    c = r["choices"][0]
    assert st == 200 and c["finish_reason"] == "stop" and c["stop_reason"] is None, r
    assert r["usage"]["completion_tokens"] == 4, r


def main():
    checks = Checks()
    chat_model = os.path.join(BUILD, "serve_api_chat_test.gguf")
    subprocess.run([KVSERVE, "synth", "-o", chat_model, "--preset", "stories260k", "--vocab-from", STORIES,
                    "--chat-template", LLAMA2_TEMPLATE, "--seed", "3", "--init-scale", "3"], check=True, timeout=120)
    with Server(STORIES) as srv, Server(STORIES, "--max-num-seqs", "2", "--max-num-batched-tokens", "16") as small:
        checks.run("prompt lists", t_prompt_lists, srv)
        checks.run("GET /v1/models/{id}", t_models_retrieve, srv)
        checks.run("stop_reason", t_stop_reason, srv)
        checks.run("\\u0000 and integral floats", t_nul_and_numbers, srv)
        checks.run("stream usage: null", t_stream_usage_null, srv)
        checks.run("min_tokens", t_min_tokens, srv)
        checks.run("logit_bias = llama2.c's ranking", t_logit_bias, srv)
        checks.run("echo and prompt logprobs = llama2.c", t_echo, srv, small)
        checks.run("a prompt list's client leaves -> all aborted", t_list_disconnect, srv)
        rc, rc2 = srv.stop(), small.stop()

        def exited_0():
            assert rc == 0 and rc2 == 0, (rc, rc2)
        checks.run("SIGTERM exits 0", exited_0)
    with Server(chat_model, "--served-model-name", "chat") as chat_srv:
        checks.run("chat: length field, usage null, min_tokens", t_chat_fields, chat_srv)
    for vocab, pieces in (("starcoder", ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")),
                          ("deepseek-coder", ("<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
                                              "<\uff5cfim\u2581end\uff5c>"))):
        fim_model = os.path.join(BUILD, "serve_api_fim_%s.gguf" % vocab)
        subprocess.run([KVSERVE, "synth", "-o", fim_model, "--preset", "stories260k", "--vocab-from",
                        os.path.join(SHARED, "vocab", "ggml-vocab-%s.gguf" % vocab), "--seed", "3",
                        "--init-scale", "3"], check=True, timeout=120, capture_output=True)
        with Server(fim_model) as fim_srv:
            checks.run("suffix: fill in the middle (%s's tokens)" % vocab, t_suffix_fim, fim_srv, fim_model, pieces)
    checks.finish()


if __name__ == "__main__":
    main()
