#!/usr/bin/python3
"""Chat templates: the C renderer against Python Jinja2, byte for byte.

Every template in $KVS_SHARED/templates is rendered by Jinja2 set up the way
Hugging Face transformers sets it up (sandboxed, trim_blocks, lstrip_blocks,
loop controls, a json.dumps-based tojson, raise_exception, strftime_now with a
fixed clock) and by kvserve's native renderer (the kvs_chat_render driver,
$KVS_CHAT_RENDER), over a set of conversations.  Where Jinja2 renders, the C
output must be identical; where the template raises, C must refuse with the
template's message.  Then: C-only refusals (tool and unknown roles, no
messages), the date options, detection of the expected format per file, and
mutated templates: whatever variant C accepts it must render exactly as
Jinja2 does, so a changed template is either refused or rendered right.  The
default system messages that C reads out of templates: its evaluation of
string literals against Jinja2's, and no copy of them in the sources.
"""
import datetime
import json
import os
import re
import subprocess
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox

SHARED = os.environ.get("KVS_SHARED", os.path.join(os.path.dirname(__file__), "../../../shared"))
DRIVER = os.environ.get("KVS_CHAT_RENDER")
TEMPLATES = os.path.join(SHARED, "templates")

FIXED_TODAY = datetime.datetime(2024, 7, 26, 13, 5, 0)

# file -> (expected format name, bos_token, eos_token), tokens from each model's tokenizer.
EXPECTED = {
    "hf-internal-testing-llama-tokenizer-llama2.jinja": ("llama2", "<s>", "</s>"),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ("llama3", "<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("llama3.2", "<|begin_of_text|>", "<|eot_id|>"),
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("qwen2.5", "", "<|im_end|>"),
    "Qwen-Qwen3-0.6B.jinja": ("qwen3", "", "<|im_end|>"),
    "Qwen-Qwen3-Coder-30B-A3B-Instruct.jinja": ("chatml", "", "<|im_end|>"),
    "mistralai-Mistral-7B-Instruct-v0.3.jinja": ("mistral-v3", "<s>", "</s>"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("mistral-nemo", "<s>", "</s>"),
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": ("mistral-small-3.2", "<s>", "</s>"),
    "google-gemma-2-2b-it.jinja": ("gemma", "<bos>", "<eos>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("phi3", "<s>", "<|endoftext|>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": (
        "deepseek-r1", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}


def S(c):
    return {"role": "system", "content": c}


def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


CONVERSATIONS = {
    "system_user": [S("You are a terse assistant."), U("What is 2+2?")],
    "user_only": [U("Hello!")],
    "multi_turn": [U("Hi"), A("Hello, how can I help?"), U("Tell me a joke.")],
    "system_multi_turn": [S("Be brief."), U("Hi"), A("Hello."), U("Bye"), A("Goodbye.")],
    "unicode": [S("Réponds en français 🇫🇷"), U("\u3000 你好，世界！ \u00a0"),
                A("\u2003Ça va? 😀 \t"), U("ñandú — “quotes” \u2028")],
    "empty_content": [S(""), U(""), A(""), U("")],
    "empty_user": [U("")],
    "whitespace": [S("\n  be brief \n"), U(" \t hi\n\n"), A("\n\nhello  "), U("\x1c \x85x\x0b")],
    "markup": [U("{{ not jinja }} {% if %} \"quotes\" 'single' \\ back\\n [INST] <|im_end|>")],
    "think_history": [U("2+2?"), A("<think>\nadd them\n</think>\n\n4"), U("and 3+3?"),
                      A("<think>\n\nsum\n\n</think>\n\n\n6\n")],
    "think_plain_last": [U("q"), A("plain answer")],
    "think_odd": [U("q"), A("a</think>b</think>\nc"), U("q2"), A("<think>x<think>y</think>z")],
    "tool_response_user": [U("weather?"), A("<think>look it up</think>calling"),
                           U("<tool_response>\n22C\n</tool_response>"), A("It is 22C.")],
    "long": [S("s" * 3000), U("x" * 20000 + "\n"), A("y" * 5000)],
    # Conversations that some templates refuse.
    "user_user": [U("a"), U("b")],
    "assistant_first": [A("a"), U("b")],
    "system_middle": [U("a"), S("b"), U("c")],
    "system_only": [S("only a system prompt")],
    "two_systems_first": [S("one"), S("two"), U("u")],
    "late_system": [S("first"), U("u1"), A("a1"), S("late"), U("u2")],
}

C_ONLY_REFUSALS = {  # conversation -> expected status; Jinja2 may render these
    "tool_role": ([U("x"), {"role": "tool", "content": "42"}], "unsupported"),
    "unknown_role": ([U("x"), {"role": "developer", "content": "y"}], "invalid"),
    "no_messages": ([], "invalid"),
    "null_content": ([{"role": "user", "content": None}], "invalid"),
}


class TemplateRaised(Exception):
    pass


def make_env(today):
    """The Jinja2 environment of transformers' chat templating."""
    def raise_exception(message):
        raise TemplateRaised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return today.strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENVS = {}
COMPILED = {}


def compiled(env, template):
    key = (id(env), template)
    if key not in COMPILED:
        COMPILED[key] = env.from_string(template)
    return COMPILED[key]


def reference(req):
    """Jinja2's rendering: ("ok", text) or ("raise", message) or ("error", text)."""
    today = FIXED_TODAY
    if "date" in req:
        today = datetime.datetime.strptime(req["date"], "%Y-%m-%d")
    env = ENVS.setdefault(today, make_env(today))
    kwargs = dict(messages=req["messages"], tools=None, documents=None,
                  add_generation_prompt=req["add_generation_prompt"],
                  bos_token=req["bos"], eos_token=req["eos"])
    if "date_string" in req:
        kwargs["date_string"] = req["date_string"]
    if "enable_thinking" in req:
        kwargs["enable_thinking"] = req["enable_thinking"]
    try:
        return ("ok", compiled(env, req["template"]).render(**kwargs))
    except TemplateRaised as e:
        return ("raise", str(e))
    except Exception as e:  # e.g. an undefined attribute: the template fails
        return ("error", "%s: %s" % (type(e).__name__, e))


def run_batch(requests, mode="--batch"):
    p = subprocess.run([DRIVER, mode], input=json.dumps(requests).encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("driver failed (%d): %s" % (p.returncode, p.stderr.decode()))
    out = json.loads(p.stdout.decode())
    assert len(out) == len(requests), "driver answered %d of %d" % (len(out), len(requests))
    return out


def load(name):
    with open(os.path.join(TEMPLATES, name), encoding="utf-8") as f:
        return f.read()


class Checker:
    def __init__(self):
        self.failures = []
        self.counts = {"match": 0, "both_refuse": 0}

    def fail(self, msg):
        self.failures.append(msg)
        if len(self.failures) <= int(os.environ.get("KVS_CHAT_SHOW", "20")):
            print("FAIL:", msg)

    def compare(self, label, req, got, strict_refusal=True):
        kind, ref = reference(req)
        if kind == "ok":
            if not got["ok"]:
                if strict_refusal:
                    self.fail("%s: Jinja2 renders but C refused: %s: %s"
                              % (label, got["status"], got["error"]))
                return
            if got["text"] != ref:
                self.fail("%s: output differs\n  jinja: %r\n  C:     %r"
                          % (label, ref[:600], got["text"][:600]))
                return
            self.counts["match"] += 1
        else:
            if got["ok"]:
                self.fail("%s: Jinja2 fails (%s) but C rendered %r" % (label, ref, got["text"][:200]))
                return
            if kind == "raise" and strict_refusal:
                if got["status"] != "invalid" or ref not in got["error"]:
                    self.fail("%s: template raised %r but C said %s: %s"
                              % (label, ref, got["status"], got["error"]))
                    return
            self.counts["both_refuse"] += 1


def base_request(template, bos, eos, messages, gen):
    return {"template": template, "messages": messages, "add_generation_prompt": gen,
            "bos": bos, "eos": eos}


def check_shared_templates(ck):
    names = sorted(f for f in os.listdir(TEMPLATES) if f.endswith(".jinja"))
    assert set(names) == set(EXPECTED), "template files changed: %s" % names
    supported = []
    for name in names:
        fmt, bos, eos = EXPECTED[name]
        template = load(name)
        reqs, labels = [], []
        for conv, msgs in CONVERSATIONS.items():
            for gen in (False, True):
                reqs.append(base_request(template, bos, eos, msgs, gen))
                labels.append("%s/%s/gen=%d" % (name, conv, gen))
        # Dates: the clock (strftime_now) and an explicit date_string.
        for extra in ({"date": "2025-01-05"}, {"date": "2000-02-29"},
                      {"date_string": "01 Feb 2030"},
                      {"date": "2031-12-31", "date_string": "explicit"},
                      {"enable_thinking": False}, {"enable_thinking": True}):
            for conv in ("system_user", "user_only", "think_history"):
                r = base_request(template, bos, eos, CONVERSATIONS[conv], True)
                r.update(extra)
                reqs.append(r)
                labels.append("%s/%s/%s" % (name, conv, extra))
        # Other BOS/EOS strings are passed through verbatim.
        r = base_request(template, "[B]", "[E]", CONVERSATIONS["system_multi_turn"], False)
        reqs.append(r)
        labels.append("%s/custom-bos-eos" % name)
        got = run_batch(reqs)
        for label, req, g in zip(labels, reqs, got):
            if g["ok"] and g["format"] != fmt:
                ck.fail("%s: detected %s, expected %s" % (label, g["format"], fmt))
            ck.compare(label, req, g)
        supported.append("%s -> %s" % (name, fmt))

        # Refusals that are kvserve's own (Jinja2 may render something).
        reqs = [base_request(template, bos, eos, m, True) for m, _ in C_ONLY_REFUSALS.values()]
        for (label, (_, want)), g in zip(C_ONLY_REFUSALS.items(), run_batch(reqs)):
            if g["ok"] or g["status"] != want:
                ck.fail("%s/%s: expected C to refuse with %s, got %r" % (name, label, want, g))
    return supported


def check_single_mode(ck):
    """The plain stdin/stdout mode: prompt on stdout, exit 2 + message on error."""
    template = load("meta-llama-Llama-3.1-8B-Instruct.jinja")
    req = base_request(template, "<|begin_of_text|>", "<|eot_id|>",
                       CONVERSATIONS["unicode"], True)
    p = subprocess.run([DRIVER], input=json.dumps(req).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    kind, ref = reference(req)
    if p.returncode != 0 or p.stdout != ref.encode("utf-8"):
        ck.fail("single mode: rc=%d out=%r" % (p.returncode, p.stdout[:200]))
    for template, want_status, want_text in (
            ("", "not_found", "model has no chat template"),
            ("{{ messages }}", "unsupported", "chat template not recognised; supported: llama2"),
            (template.replace("December 2023", "December 2024"), "unsupported",
             "looks like Llama 3")):
        req = base_request(template, "", "", [U("x")], True)
        p = subprocess.run([DRIVER], input=json.dumps(req).encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        err = p.stderr.decode()
        if p.returncode != 2 or p.stdout or not err.startswith("error: %s: " % want_status) \
                or want_text not in err:
            ck.fail("single mode refusal: rc=%d stderr=%r" % (p.returncode, err))
    req = base_request(None, "", "", [U("x")], True)
    del req["template"]
    p = subprocess.run([DRIVER], input=json.dumps(req).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 2 or "model has no chat template" not in p.stderr.decode():
        ck.fail("no template: rc=%d stderr=%r" % (p.returncode, p.stderr))


LITERAL_RE = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
TOKEN_MUTATIONS = [
    ("|trim", ""), ("| trim", ""), (".strip()", ""), (".lstrip('\\n')", ""),
    (".rstrip('\\n')", ""), (".strip('\\n')", ""), ("[-1]", "[0]"), ("[1:]", "[2:]"),
    ("% 2 == 0", "% 2 == 1"), ("loop.last", "loop.first"), ("loop.first", "loop.last"),
    ("not ", ""), (" and ", " or "), ("== 'user'", "== 'assistant'"),
    ('== "user"', '== "assistant"'), ("add_generation_prompt", "not add_generation_prompt"),
    ("{{- ", "{{ "), ("{%- ", "{% "), (" -}}", " }}"), ("bos_token", "eos_token"),
    ("eos_token", "bos_token"), ("is defined", "is not defined"), ("'system'", "'user'"),
    ('"system"', '"user"'), ("[0]", "[1]"),
]
WS_INSERTIONS = [" ", "\n", "\t", "\n  ", "x"]


def mutants(template):
    """Deterministic edits of a template: every string literal with an extra
    character, each occurrence of some tokens changed, whitespace and text
    inserted around tags."""
    out = []
    for m in LITERAL_RE.finditer(template):
        if m.end() - m.start() > 2:
            mid = (m.start() + m.end()) // 2
            out.append(template[:mid] + "Z" + template[mid:])
    for old, new in TOKEN_MUTATIONS:
        start = 0
        while True:
            i = template.find(old, start)
            if i < 0:
                break
            out.append(template[:i] + new + template[i + len(old):])
            start = i + 1
    tags = [m.start() for m in re.finditer(r"\{[{%#]", template)]
    ends = [m.end() for m in re.finditer(r"[}%#]\}", template)]
    for k, pos in enumerate(sorted(set(tags + ends))[::3]):
        ins = WS_INSERTIONS[k % len(WS_INSERTIONS)]
        out.append(template[:pos] + ins + template[pos:])
    return out


def check_mutants(ck):
    """Whatever C accepts, it renders exactly as Jinja2 does.  (Refusing a
    mutant is always allowed, so only the accepted ones go to Jinja2.)"""
    convs = ["system_user", "multi_turn", "system_multi_turn", "whitespace", "think_history",
             "empty_content", "late_system", "user_user"]
    total = accepted = 0
    env = ENVS.setdefault(FIXED_TODAY, make_env(FIXED_TODAY))
    for name in sorted(EXPECTED):
        fmt, bos, eos = EXPECTED[name]
        cands = mutants(load(name))
        total += len(cands)
        det = run_batch([base_request(t, bos, eos, [U("x")], True) for t in cands])
        ok = []
        for t, d in zip(cands, det):
            if d["ok"]:
                try:
                    compiled(env, t)
                except jinja2.TemplateSyntaxError:
                    continue  # not a template any model could ship
                ok.append(t)
            elif d["status"] not in ("unsupported", "invalid"):
                ck.fail("%s mutant: unexpected status %s" % (name, d["status"]))
        accepted += len(ok)
        reqs, labels = [], []
        for i, t in enumerate(ok):
            for conv in convs:
                for gen in (False, True):
                    reqs.append(base_request(t, bos, eos, CONVERSATIONS[conv], gen))
                    labels.append("%s mutant %d/%s/gen=%d" % (name, i, conv, gen))
        if reqs:
            for label, req, g in zip(labels, reqs, run_batch(reqs)):
                # A refused rendering of an accepted mutant is fine only when
                # Jinja2 fails too; a different output never is.
                ck.compare(label, req, g, strict_refusal=False)
    print("mutants: %d made, %d accepted by C and rendered identically" % (total, accepted))


def check_scanner(ck):
    """The C scanner of text outside tags against Jinja2's own lexer."""
    env = make_env(FIXED_TODAY)
    cases = []
    for name in sorted(EXPECTED):
        t = load(name)
        cases.append(t)
        spots = sorted(set([m.start() for m in re.finditer(r"\{[{%#]", t)] +
                           [m.end() for m in re.finditer(r"[}%#]\}", t)]))
        for k, pos in enumerate(spots[::2]):
            for ins in (" ", "\n", "\t \n  ", "  ", "\n\n"):
                cases.append(t[:pos] + ins + t[pos:])
    extra = ["{# c #}\n  {% if 1 %}{% endif %}", "{# c #}\n  {{ 1 }}", "{% if 1 %}  {% endif %}",
             "  {% if 1 %}{% endif %}", "{{ 1 }}\n  {% if 1 %}{% endif %}",
             "{{ {'a': {'b': 1}} }}", "{{ '}}' }}x", "{% raw %}{% endraw %}", "{%+ if 1 %}{% endif %}",
             "a\n  {%+ if 1 %}{% endif %}", "{% if 1 +%}\n{% endif %}", "{{ 1 -}}\n\n {{ 2 }}",
             "{#- x -#}\n {{ 1 }}", "{% if 1 -%}\n {%- endif %}"]
    cases += extra
    valid = []
    for t in cases:
        try:
            data = any(tok == "data" for _, tok, _ in env.lex(t))
        except jinja2.TemplateSyntaxError:
            continue
        valid.append((t, data))
    got = run_batch([t for t, _ in valid], "--scan")
    for (t, data), g in zip(valid, got):
        raw = "{% raw" in t
        if g != data and not (raw and g):  # a raw block is reported as text on purpose
            ck.fail("scanner: Jinja2 lexer data=%s, C=%s for %r" % (data, g, t[:120]))
    print("scanner: %d templates compared with Jinja2's lexer" % len(valid))


def check_fingerprints_current(ck):
    """src/server/chat_markers.c is what gen_chat_markers.py makes of the shared templates."""
    gen = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../tools/gen_chat_markers.py")
    p = subprocess.run([sys.executable, gen, DRIVER, SHARED, "--check"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    if p.returncode != 0:
        ck.fail("fingerprints: %s" % p.stdout.decode())
    # The file holds counts and hashes only, no template text: its one string
    # literal is the #include, and no tag of any template occurs in it.
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "../../src/server/chat_markers.c")
    with open(src, encoding="utf-8") as f:
        markers = f.read()
    literals = re.findall(r'"(?:[^"\\\n]|\\.)*"', markers)
    if literals != ['"server/chat_internal.h"']:
        ck.fail("chat_markers.c has string literals: %r" % literals[:5])
    for name in sorted(EXPECTED):
        p = subprocess.run([DRIVER, "--tags"], input=json.dumps(load(name)).encode(),
                           stdout=subprocess.PIPE, timeout=60)
        for tag in json.loads(p.stdout.decode()):
            if len(tag) > 8 and tag in markers:
                ck.fail("chat_markers.c contains a tag of %s: %r" % (name, tag[:80]))


EXPR_CASES = [
    r'"plain"', r"'single'", r'"a\nb"', r'"tab\there"', r'"\\"', r'"\'"', r"'\"'",
    r'"\a\b\f\v\r"', r'"\0"', r'"\101\1012\7777\08"', r'"\x41\xe9\xff\xAb"', r'"\x4"',
    r'"\x"', r'"\u20ac\U0001F600\u00e9"', r'"\u20a"', r'"\U00110000"', r'"\U0010ffff"',
    r'"\ud83d\ude00"', r'"\q\8\9\ \-\{"', '"line\\\ncontinued"', '"crlf\r\nx\ry\n"',
    '"esc\\\r\ncont\\\rx"', '"é\\é\\€\\😀 \\\u00a0"', '"\\\\é"', r'"\N{EM DASH}"',
    '"a" "b" \'c\'', '"x" + today + "y"', 'today', 'today + today', '"a" +\n "b"\t+ \'c\'',
    '"a" + ', '+ "a"', '"a" - "b"', 'unknown', '"unterminated', '"a" today', 'today "a"',
    '', '  ', '"a" ~ "b"', r'"\u0000"', '"Ω" + \'\\Ω\'',
]


def check_expressions(ck):
    """The C evaluator of string literals and '+' (which reads default system
    messages out of templates) against Jinja2 on `{{ EXPR }}`, with
    hand-written cases and every string literal of the shared templates.  C
    may refuse what it does not support (status "unsupported": NUL, lone
    surrogates, \\N{...}, other operators, unknown variables), never give
    another value, and must evaluate every literal of the templates."""
    cases = list(EXPR_CASES)
    from_templates = set()
    for name in sorted(EXPECTED):
        t = load(name)
        found = [m.group(0) for m in LITERAL_RE.finditer(t)]
        found += re.findall(r"set default_system_message = (.*?) %\}", t, re.S)
        cases += found
        from_templates.update(found)
    env = ENVS.setdefault(FIXED_TODAY, make_env(FIXED_TODAY))
    got = run_batch(cases, "--expr")
    refused = same = 0
    for expr, g in zip(cases, got):
        try:
            ref = env.from_string("{{ " + expr + " }}").render(today="2024-07-26")
        except Exception:
            ref = None  # Jinja2 refuses
        if g["ok"]:
            if g["text"] != ref:
                ck.fail("expr %r: Jinja2 %r, C %r" % (expr, ref and ref[:200], g["text"][:200]))
            else:
                same += 1
        elif ref is not None and (g["status"] != "unsupported" or expr in from_templates):
            ck.fail("expr %r: Jinja2 gives %r, C refused: %s" % (expr, ref[:80], g["error"]))
        else:
            refused += 1
    print("expressions: %d of %d evaluated as Jinja2 does, %d refused"
          % (same, len(cases), refused))


def c_literal_text(src):
    """The C string literals of a source file, unescaped and joined."""
    out = []
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', src):
        out.append(re.sub(r"\\(.)", lambda e: {"n": "\n", "t": "\t"}.get(e.group(1), e.group(1)),
                          m.group(1)))
    return "".join(out)


def check_no_template_text(ck):
    """The renderers keep no copy of templates' long texts (a default system
    message): no 40 characters of a template string of 64 or more characters,
    raise_exception messages aside, occur in src/server/chat_*.c, neither in
    their string literals nor anywhere else."""
    src_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../src/server")
    hay = []
    for f in sorted(os.listdir(src_dir)):
        if f.startswith("chat_") and f.endswith((".c", ".h")):
            with open(os.path.join(src_dir, f), encoding="utf-8") as fh:
                text = fh.read()
            hay += [(f, text), (f, c_literal_text(text))]
    env = make_env(FIXED_TODAY)
    checked = 0
    for name in sorted(EXPECTED):
        toks = list(env.lexer.tokenize(load(name)))
        for i, tok in enumerate(toks):
            if tok.type != "string" or len(tok.value) < 64:
                continue
            if i >= 2 and toks[i - 1].type == "lparen" and toks[i - 2].value == "raise_exception":
                continue
            checked += 1
            v = tok.value
            for k in range(0, len(v) - 40 + 1, 8):
                w = v[k:k + 40]
                for f, text in hay:
                    if w in text:
                        ck.fail("%s holds text of %s: %r" % (f, name, w))
                        break
                else:
                    continue
                break
    print("template text: %d long strings of the templates are not in the sources" % checked)


def main():
    if not DRIVER or not os.path.exists(DRIVER):
        print("KVS_CHAT_RENDER not set or missing: %r" % DRIVER)
        return 1
    ck = Checker()
    check_fingerprints_current(ck)
    check_no_template_text(ck)
    check_expressions(ck)
    supported = check_shared_templates(ck)
    check_single_mode(ck)
    check_scanner(ck)
    check_mutants(ck)
    print("supported templates:\n  " + "\n  ".join(supported))
    print("cases: %d identical renderings, %d refused by both"
          % (ck.counts["match"], ck.counts["both_refuse"]))
    if ck.failures:
        print("%d failures" % len(ck.failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
