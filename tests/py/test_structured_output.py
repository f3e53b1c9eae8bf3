"""Structured output end to end: `kvserve serve` on stories260K (its real
512-token SentencePiece vocabulary) and on random-weight models with the
32k SentencePiece and 50k GPT-2 vocabularies, asked for JSON by schema
(response_format json_schema, guided_json, structured_outputs.json), any JSON
object, regexes, choices and GBNF grammars, greedy and sampled, plain and
streamed.

The oracles are not ours: every output that finished with "stop" must
validate against its schema with Python's `jsonschema` (Debian's
python3-jsonschema; formats checked where it can), match its regex with
Python's `re.fullmatch`, or be one of the choices.  Outputs cut by max_tokens
must say "length".  Schemas kvserve cannot express are a 400 naming the
field and the feature.  The models' distributions are garbage (random or
tiny), so the grammar is all that makes the outputs valid; the schemas are
mostly ones whose strings are bounded, so most requests finish."""

import json
import os
import re
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from kvs_server_util import BUILD, KVSERVE, SHARED, STORIES, Checks, Server, assert_error, wait_for  # noqa: E402

try:
    import jsonschema
except ImportError:  # scripts/deps.sh installs python3-jsonschema
    print("python3-jsonschema is missing: run scripts/deps.sh")
    sys.exit(1)

LLAMA2_TEMPLATE = os.path.join(SHARED, "templates", "hf-internal-testing-llama-tokenizer-llama2.jinja")

SCHEMAS = [
    {"type": "boolean"},
    {"type": "integer"},
    {"type": "number"},
    {"enum": ["red", "green", "blue"]},
    {"const": {"a": 1, "b": [True, None]}},
    {"type": "string", "maxLength": 8},
    {"type": "string", "minLength": 2, "maxLength": 4},
    {"type": "string", "format": "date"},
    {"type": "string", "format": "uuid"},
    {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10},
                                      "age": {"type": "integer", "minimum": 0}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": ["integer", "null"]},
    {"anyOf": [{"type": "boolean"}, {"type": "string", "maxLength": 3}]},
    {"type": "object", "properties": {"point": {"type": "object", "properties": {
        "x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]}}, "required": ["point"]},
    {"$defs": {"color": {"enum": ["r", "g"]}}, "type": "array", "items": {"$ref": "#/$defs/color"}, "maxItems": 4},
    {"$defs": {"t": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {
        "type": "array", "items": {"$ref": "#/$defs/t"}, "maxItems": 2}}, "required": ["v"]}}, "$ref": "#/$defs/t"},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}}},
    {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
    {"type": "array", "items": {"enum": ["x", "y", 3]}, "minItems": 2, "maxItems": 2},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}, "required": ["when"]},
    {"type": "number", "minimum": 0},
    {"allOf": [{"type": "integer", "minimum": 1}]},
    {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
    {"type": "integer", "minimum": 18, "maximum": 99},
    {"type": "object", "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5},
                                      "delta": {"type": "integer", "exclusiveMinimum": -10, "exclusiveMaximum": 10}},
     "required": ["stars", "delta"], "additionalProperties": False},
    {"title": "Answer", "description": "pydantic style", "type": "object",
     "properties": {"answer": {"title": "Answer", "enum": ["yes", "no"]},
                    "confidence": {"title": "Confidence", "type": "number", "minimum": 0}},
     "required": ["answer", "confidence"]},
]

FORMATS = jsonschema.FormatChecker()


def validate(schema, text):
    value = json.loads(text)
    jsonschema.validate(value, schema, format_checker=FORMATS)


def constraint(kind, schema, i):
    """The request fields asking for `schema`, in the i-th of the supported spellings."""
    if kind == "chat" or i % 3 == 0:
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "s%d" % i, "schema": schema, "strict": True}}}
    if i % 3 == 1:
        return {"guided_json": schema if i % 2 else json.dumps(schema)}
    return {"structured_outputs": {"json": schema}}


class Tally:
    def __init__(self):
        self.stop = self.length = 0
        self.schemas_validated = set()


def check_choice(schema_i, schema, choice, tally, max_tokens):
    text = choice["text"] if "text" in choice else choice["message"]["content"]
    fr = choice["finish_reason"]
    if fr == "stop":
        try:
            validate(schema, text)
        except Exception as e:
            raise AssertionError("schema %d %s: output %r does not validate: %s" % (schema_i, json.dumps(schema),
                                                                                    text, e))
        tally.stop += 1
        tally.schemas_validated.add(schema_i)
    else:
        assert fr == "length", (fr, text)
        tally.length += 1


def t_schemas(srv, tally, max_tokens, endpoint="completions"):
    for i, schema in enumerate(SCHEMAS):
        for mode in ("greedy", "sampled"):
            body = {"max_tokens": max_tokens}
            body.update(constraint("chat" if endpoint == "chat" else "completions", schema, i))
            if mode == "greedy":
                body["temperature"] = 0
            else:
                body.update({"temperature": 1.0, "seed": 100 + i, "n": 2})
            if endpoint == "chat":
                body["messages"] = [{"role": "user", "content": "Reply in JSON."}]
                st, r = srv.post("/v1/chat/completions", body)
            else:
                body["prompt"] = "Once upon a time"
                st, r = srv.post("/v1/completions", body)
            assert st == 200, (i, r)
            for ch in r["choices"]:
                check_choice(i, schema, ch, tally, max_tokens)


def t_stream(srv):
    schema = SCHEMAS[12]
    body = {"prompt": "Once", "max_tokens": 120, "stream": True, "temperature": 0.8, "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}}
    st, events, raw = srv.stream("/v1/completions", body)
    assert st == 200, raw
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
    fr = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"]][-1]
    assert fr in ("stop", "length"), fr
    if fr == "stop":
        validate(schema, text)


def complete_prefix(text):
    """Close a cut JSON text the shortest way (Python's json then parses it
    when the text was a prefix of some JSON document)."""
    stack, in_str, esc, hexleft, out = [], False, False, 0, text
    for c in text:
        if in_str:
            if hexleft:
                hexleft -= 1
            elif esc:
                esc = False
                hexleft = 4 if c == "u" else 0
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            stack.append(c)
        elif c in "}]":
            stack.pop()
    if in_str:
        out += "0" * hexleft + ("n" if esc else "") + '"'
    out = out.rstrip()
    if out.endswith(","):
        out = out[:-1]
    elif out.endswith(":"):
        out += "null"
    elif re.search(r"[-+.eE]$", out) and not out.endswith('"'):
        out += "0"
    # an object key without its value
    if stack and stack[-1] == "{" and re.search(r'[{,]\s*"(?:[^"\\]|\\.)*"$', out):
        out += ":null"
    for c in reversed(stack):
        out += "}" if c == "{" else "]"
    return out


def t_json_object(srv):
    n_stop = n_cut = 0
    for seed in range(4):
        for field in ({"response_format": {"type": "json_object"}}, {"structured_outputs": {"json_object": True}}):
            body = {"prompt": "Once upon a time", "max_tokens": 120, "temperature": 1.0, "seed": seed}
            body.update(field)
            st, r = srv.post("/v1/completions", body)
            assert st == 200, r
            ch = r["choices"][0]
            if ch["finish_reason"] == "stop":
                assert isinstance(json.loads(ch["text"]), dict), ch["text"]
                n_stop += 1
            else:  # cut: still a prefix of a JSON object
                assert ch["finish_reason"] == "length"
                assert isinstance(json.loads(complete_prefix(ch["text"])), dict), ch["text"]
                n_cut += 1
    assert n_stop + n_cut == 8


REGEXES = [
    (r"\d{3}-\d{4}", r"\d{3}-\d{4}"),
    (r"(yes|no|maybe)!?", r"(yes|no|maybe)!?"),
    (r"[a-z]{1,5}( [a-z]{1,5}){0,2}\.", r"[a-z]{1,5}( [a-z]{1,5}){0,2}\."),
    (r"^[A-F0-9]{2}(:[A-F0-9]{2}){2}$", r"[A-F0-9]{2}(:[A-F0-9]{2}){2}"),
    (r"(?:\+1 )?\(\d{3}\) \d{3}", r"(?:\+1 )?\(\d{3}\) \d{3}"),
]


def t_regex_and_choice(srv):
    n_stop = 0
    for i, (ours, py) in enumerate(REGEXES):
        for temp in (0, 1.0):
            field = {"guided_regex": ours} if i % 2 else {"structured_outputs": {"regex": ours}}
            body = {"prompt": "Once upon a time", "max_tokens": 60, "temperature": temp, "seed": i, "n": 2}
            body.update(field)
            st, r = srv.post("/v1/completions", body)
            assert st == 200, r
            for ch in r["choices"]:
                if ch["finish_reason"] == "stop":
                    assert re.fullmatch(py, ch["text"]), (ours, ch["text"])
                    n_stop += 1
    assert n_stop >= 10, n_stop
    # a prompt of BOS alone: the first token's SentencePiece space is not output, nor seen by the grammar
    for temp in (0, 1.0):
        st, r = srv.post("/v1/completions", {"prompt": [1], "max_tokens": 30, "n": 3, "temperature": temp, "seed": 4,
                                             "guided_regex": "(hello|world) [a-z]{2,4}"})
        assert st == 200, r
        for ch in r["choices"]:
            assert ch["finish_reason"] == "stop" and re.fullmatch("(hello|world) [a-z]{2,4}", ch["text"]), ch
    choices = ["Paris", "London", "New York", "caf\u00e9 \"au lait\""]
    for temp in (0, 1.0):
        for field in ({"guided_choice": choices}, {"structured_outputs": {"choice": choices}}):
            body = {"prompt": "The capital is", "max_tokens": 20, "temperature": temp, "seed": 3, "n": 3}
            body.update(field)
            st, r = srv.post("/v1/completions", body)
            assert st == 200, r
            for ch in r["choices"]:
                assert ch["finish_reason"] == "stop", ch
                assert ch["text"] in choices, ch["text"]


def t_grammar(srv):
    gbnf = 'root ::= "(" expr ")"\nexpr ::= num ([+*] num){0,3}\nnum ::= [1-9] [0-9]?\n'
    for field in ({"guided_grammar": gbnf}, {"structured_outputs": {"grammar": gbnf}}):
        body = {"prompt": "Once", "max_tokens": 40, "temperature": 1.0, "seed": 5, "n": 3}
        body.update(field)
        st, r = srv.post("/v1/completions", body)
        assert st == 200, r
        for ch in r["choices"]:
            if ch["finish_reason"] == "stop":
                assert re.fullmatch(r"\([1-9][0-9]?([+*][1-9][0-9]?){0,3}\)", ch["text"]), ch["text"]


def t_length(srv):
    body = {"prompt": "Once", "max_tokens": 3, "temperature": 0,
            "guided_json": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}
    st, r = srv.post("/v1/completions", body)
    assert st == 200, r
    ch = r["choices"][0]
    assert ch["finish_reason"] == "length", ch
    assert r["usage"]["completion_tokens"] == 3
    try:
        json.loads(ch["text"])
        raise AssertionError("a cut output parsed: %r" % ch["text"])
    except json.JSONDecodeError:
        pass


def t_unsupported(srv):
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "patternProperties": {"^a": {"type": "string"}}}}}},
         "response_format", "patternProperties"),
        ({"guided_json": {"type": "array", "uniqueItems": True}}, "guided_json", "uniqueItems"),
        ({"guided_json": {"type": "string", "format": "email"}}, "guided_json", "email"),
        ({"structured_outputs": {"json": {"type": "number", "maximum": 5}}}, "structured_outputs", "maximum"),
        ({"guided_regex": "(a)\\1"}, "guided_regex", "backreferences"),
        ({"guided_regex": "a(?=b)"}, "guided_regex", "lookaround"),
        ({"guided_grammar": "root ::= missing"}, "guided_grammar", "undefined rule 'missing'"),
        ({"guided_choice": []}, "guided_choice", "non-empty"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "only one"),
        ({"response_format": {"type": "yaml"}}, "response_format", "yaml"),
        ({"structured_outputs": {"json": {}, "whatever": 1}}, "structured_outputs", "whatever"),
    ]
    for field, param, needle in cases:
        for path, base in (("/v1/completions", {"prompt": "Once"}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
            body = dict(base, max_tokens=5)
            body.update(field)
            st, r = srv.post(path, body)
            assert_error(st, r, 400, param=param, contains=needle)
    # response_format text is no constraint
    st, r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 5, "response_format": {"type": "text"}})
    assert st == 200, r


def t_slots(model):
    """The structured-output reserve (--max-structured-seqs, --max-grammar-bytes): a request that finds
    every slot busy is a 503 with Retry-After (not queued), one of more sequences than the server holds
    and a constraint over the compile limit are 400s naming the flag, the slots come back when requests
    end, and /metrics shows their use.  The holder is a stream on a model slow enough (110M, zero
    weights) that it is still running while the other requests are made."""
    choice = {"prompt": "Once", "max_tokens": 5, "guided_choice": ["yes", "no"]}
    with Server(model, "--max-model-len", "512", "--max-structured-seqs", "2", "--max-grammar-bytes", "16KiB",
                "--device-memory", "1GiB") as srv:
        m = srv.metrics()
        assert m["kvserve:structured_output_slots_capacity"] == 2, m
        assert m["kvserve:memory_structured_reserve_bytes"] > 0, m
        # over the compile arena: a clean 400 naming the limit (any JSON object needs more than 16 KiB)
        st, r = srv.post("/v1/completions", dict(choice, guided_choice=None, response_format={"type": "json_object"}))
        assert_error(st, r, 400, param="response_format", contains="--max-grammar-bytes")
        # more sequences than the server holds
        st, r = srv.post("/v1/completions", dict(choice, n=3))
        assert_error(st, r, 400, param="guided_choice", contains="--max-structured-seqs 2")
        # one stream holds one slot while it runs
        body = json.dumps({"prompt": "Once", "max_tokens": 400, "stream": True, "ignore_eos": True,
                           "guided_regex": "[a-z ]*"}).encode()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=120)
        try:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            head = b""
            while b"data: " not in head:  # its first token: it is running
                head += s.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            m = srv.metrics()
            assert m["kvserve:structured_output_slots_used"] == 1, m
            st, hdrs, data = srv.request("POST", "/v1/completions", dict(choice, n=2))
            r = json.loads(data)
            assert_error(st, r, 503, param="guided_choice", code="server_busy", contains="--max-structured-seqs")
            assert hdrs.get("retry-after") == "1", hdrs
            # one sequence still fits, and sequential requests never find their own slot busy
            for _ in range(3):
                st, r = srv.post("/v1/completions", choice)
                assert st == 200 and r["choices"][0]["text"] in ("yes", "no"), (st, r)
        finally:
            s.close()
        assert wait_for(lambda: srv.metrics()["kvserve:structured_output_slots_used"] == 0, timeout=60)
        for _ in range(3):  # an idle engine gives each finished request's slots back at once
            st, r = srv.post("/v1/completions", dict(choice, n=2))
            assert st == 200 and all(c["text"] in ("yes", "no") for c in r["choices"]), (st, r)
        m = srv.metrics()
        assert m["kvserve:structured_output_refused_too_large_total"] == 1, m
        assert m["kvserve:requests_refused_memory_total"] >= 1, m
        assert m["kvserve:structured_output_slots_high_water"] == 2, m
        assert srv.stop() == 0  # (under the sanitizers: no leak, every lease and matcher back)
    with Server(model, "--max-model-len", "512", "--max-structured-seqs", "0", "--device-memory", "1GiB") as srv:
        st, r = srv.post("/v1/completions", choice)
        assert_error(st, r, 400, param="guided_choice", contains="--max-structured-seqs 0")
        st, r = srv.post("/v1/completions", {"prompt": "Once", "max_tokens": 3})
        assert st == 200, r


def t_reserve_resident(model):
    """The slots are resident from the start and inside their reserve: the resident memory of a start
    with 8 slots over one with none (the same KV cache) is positive and at most the reserve.  (Not under
    the sanitizers, whose shadow memory and redzones make every allocation resident several times.)"""
    cache = os.path.join(BUILD, "CMakeCache.txt")
    if os.path.exists(cache) and "KVS_SANITIZE:BOOL=ON" in open(cache).read():
        print("    skipped under the sanitizers")
        return
    rss = {}
    for n in ("0", "8"):
        with Server(model, "--max-model-len", "512", "--max-structured-seqs", n, "--device-memory", "1GiB",
                    "--kv-cache-memory", "32MiB") as srv:
            m = srv.metrics()
            rss[n] = m["kvserve:memory_resident_bytes"]
            reserve = m["kvserve:memory_structured_reserve_bytes"]
            assert (reserve > 0) == (n != "0"), m
    delta = rss["8"] - rss["0"]
    print("    %s: 8 slots add %.2f MiB resident, reserve %.2f MiB" % (os.path.basename(model), delta / 2**20,
                                                                      reserve / 2**20))
    assert 0 < delta <= reserve, (delta, reserve)


def main():
    checks = Checks()
    chat_model = os.path.join(BUILD, "structured_chat.gguf")
    subprocess.run([KVSERVE, "synth", "-o", chat_model, "--preset", "stories260k", "--vocab-from", STORIES,
                    "--chat-template", LLAMA2_TEMPLATE, "--seed", "11"], check=True, timeout=120)
    big = {}
    for name, vocab in (("spm32k", "ggml-vocab-llama-spm.gguf"), ("gpt2", "ggml-vocab-gpt-2.gguf")):
        big[name] = os.path.join(BUILD, "structured_%s.gguf" % name)
        subprocess.run([KVSERVE, "synth", "-o", big[name], "--preset", "stories260k", "--vocab-from",
                        os.path.join(SHARED, "vocab", vocab), "--seed", "5"], check=True, timeout=120)
    slow = os.path.join(BUILD, "structured_110m.gguf")
    subprocess.run([KVSERVE, "synth", "-o", slow, "--preset", "llama2-110m", "--type", "q8_0", "--header-only",
                    "--vocab-from", STORIES], check=True, timeout=120)
    checks.run("structured-output slots: 503 when busy, 400 over the limits, metrics", t_slots, slow)
    tallies = {}
    with Server(STORIES, "--max-model-len", "512") as srv:
        tallies["stories260K"] = Tally()
        checks.run("%d schemas, greedy and sampled (stories260K)" % len(SCHEMAS), t_schemas, srv,
                   tallies["stories260K"], 160)
        checks.run("streamed json_schema", t_stream, srv)
        checks.run("json_object", t_json_object, srv)
        checks.run("regex and choice", t_regex_and_choice, srv)
        checks.run("GBNF grammar", t_grammar, srv)
        checks.run("cut by max_tokens: length", t_length, srv)
        checks.run("unsupported: clean 400s", t_unsupported, srv)
    with Server(chat_model, "--served-model-name", "chat", "--max-model-len", "512") as srv:
        tallies["chat"] = Tally()
        checks.run("chat response_format json_schema", t_schemas, srv, tallies["chat"], 160, "chat")
    checks.run("structured-output slots resident inside their reserve", t_reserve_resident, big["gpt2"])
    for name, path in big.items():
        with Server(path, "--max-model-len", "512") as srv:
            tallies[name] = Tally()
            checks.run("schemas on a random model, %s vocabulary" % name, t_schemas, srv, tallies[name], 120)

    def enough():
        total_stop = sum(t.stop for t in tallies.values())
        total = total_stop + sum(t.length for t in tallies.values())
        validated = set().union(*(t.schemas_validated for t in tallies.values()))
        for name, t in tallies.items():
            print("  %-12s %3d outputs validated (finished), %3d cut by max_tokens, %2d schemas validated" %
                  (name, t.stop, t.length, len(t.schemas_validated)))
        print("  all: %d of %d outputs finished and validated; %d of %d schemas have validated outputs" %
              (total_stop, total, len(validated), len(SCHEMAS)))
        assert len(validated) >= 20, validated
        assert total_stop >= total // 2, (total_stop, total)
    checks.run("enough outputs finished and validated", enough)
    checks.finish()


if __name__ == "__main__":
    main()
