#!/usr/bin/python3
"""`kvserve chat-template` and the server's template handling, against Jinja2.

The CLI prints what Python Jinja2, set up as transformers sets it up, renders for the same
template, messages, tools and kwargs (templates from $KVS_SHARED/templates); -m takes the
template and the BOS/EOS pieces from a model file; named templates in a tokenizer_config.json;
a template's raise_exception is the CLI's error.  The server: --chat-template overrides the
model's template, role "developer" renders as "system", a chat request whose content is an
empty list is a 400, and a template that cannot render (a syntax error, or one that raises on a
one-message conversation) stops `kvserve serve` at start-up with a clear error.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kvs_server_util import BUILD, KVSERVE, SHARED, STORIES, Checks, Server, assert_error  # noqa: E402
import test_chat_jinja as J  # noqa: E402

TEMPLATES = os.path.join(SHARED, "templates")
QWEN3 = os.path.join(TEMPLATES, "Qwen-Qwen3-0.6B.jinja")
LLAMA31 = os.path.join(TEMPLATES, "meta-llama-Llama-3.1-8B-Instruct.jinja")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris? ☀"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "22C"}]
TOOLS = J.TOOLS[:2]


def write(name, obj):
    path = os.path.join(BUILD, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False))
    return path


def cli(*args):
    return subprocess.run([KVSERVE, "chat-template", *args], capture_output=True, timeout=60)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def t_cli_matches_jinja2():
    msgs, tools = write("cli_msgs.json", MESSAGES), write("cli_tools.json", TOOLS)
    for tmpl, kwargs in [(QWEN3, {"enable_thinking": False}), (QWEN3, {}), (LLAMA31, {"date_string": "1 Jan 2025"})]:
        for agp in (True, False):
            args = ["--template", tmpl, "--messages", msgs, "--tools", tools, "--bos-token", "<s>", "--eos-token",
                    "</s>"] + (["--add-generation-prompt"] if agp else []) + \
                   (["--kwargs", json.dumps(kwargs)] if kwargs else [])
            p = cli(*args)
            ref = J.reference({"template": read(tmpl), "messages": MESSAGES, "tools": TOOLS,
                               "add_generation_prompt": agp, "bos_token": "<s>", "eos_token": "</s>",
                               "kwargs": kwargs})
            assert p.returncode == 0, p.stderr.decode()
            assert ref[0] == "ok" and p.stdout.decode() == ref[1], (tmpl, kwargs, agp, p.stdout[-300:], ref)


def t_cli_model():
    model = os.path.join(BUILD, "cli_chat_llama31.gguf")
    subprocess.run([KVSERVE, "synth", "-o", model, "--preset", "stories260k", "--vocab-from", STORIES,
                    "--chat-template", LLAMA31, "--seed", "3"], check=True, timeout=120, capture_output=True)
    msgs = write("cli_msgs_simple.json", MESSAGES[:2])
    p = cli("-m", model, "--messages", msgs, "--add-generation-prompt")
    assert p.returncode == 0, p.stderr.decode()
    ref = J.reference({"template": read(LLAMA31), "messages": MESSAGES[:2], "add_generation_prompt": True,
                       "bos_token": "<s>", "eos_token": "</s>"})  # stories260K's BOS / EOS pieces
    assert p.stdout.decode() == ref[1], (p.stdout[:300], ref)
    p = cli("-m", STORIES, "--messages", msgs)
    assert p.returncode == 1 and b"no tokenizer.chat_template" in p.stderr, p.stderr


def t_cli_named_and_raise():
    cfg = write("cli_tokenizer_config.json", {"chat_template": [
        {"name": "default", "template": "{% for m in messages %}{{ m.content }}{% endfor %}"},
        {"name": "tool_use", "template": "{{ tools | map(attribute='function.name') | join(',') }}"}]})
    msgs, tools = write("cli_msgs_simple.json", MESSAGES[:2]), write("cli_tools.json", TOOLS)
    p = cli("--template", cfg, "--messages", msgs)
    assert p.returncode == 0 and p.stdout.decode() == "Be brief.Weather in Paris? ☀", p
    p = cli("--template", cfg, "--messages", msgs, "--tools", tools)
    assert p.stdout.decode() == "get_weather,search", p
    p = cli("--template", cfg, "--messages", msgs, "--template-name", "default", "--tools", tools)
    assert p.stdout.decode() == "Be brief.Weather in Paris? ☀", p
    gemma = os.path.join(TEMPLATES, "google-gemma-2-2b-it.jinja")
    p = cli("--template", gemma, "--messages", msgs)
    ref = J.reference({"template": read(gemma), "messages": MESSAGES[:2], "add_generation_prompt": False})
    assert ref[0] == "raise" and p.returncode == 1 and ref[1] in p.stderr.decode(), (ref, p.stderr)


def t_server_template_handling():
    tmpl = write("srv_chatml.jinja", "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                                     "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    with Server(STORIES, "--chat-template", tmpl) as srv:
        st, a = srv.post("/tokenize", {"messages": [{"role": "developer", "content": "x"}]})
        st2, b = srv.post("/tokenize", {"messages": [{"role": "system", "content": "x"}]})
        assert st == 200 and st2 == 200 and a["tokens"] == b["tokens"], (a, b)
        st, r = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert st == 200 and r["choices"][0]["message"]["role"] == "assistant", r
        st, e = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": []}]})
        assert_error(st, e, 400, param="messages", contains="empty array")
        st, e = srv.post("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]})
        assert_error(st, e, 400, param="messages")
    raising = write("srv_raise.jinja", "{% if messages[0].role != 'system' %}"
                                       "{{ raise_exception('The first message must be a system message.') }}"
                                       "{% endif %}")
    broken = write("srv_broken.jinja", "{% for m in messages %}{{ m.content }")
    for path, want in [(raising, "The first message must be a system message."), (broken, "line 1")]:
        p = subprocess.run([KVSERVE, "serve", "-m", STORIES, "--port", "0", "--device-memory", "256MiB",
                            "--chat-template", path], capture_output=True, timeout=60)
        err = p.stderr.decode()
        assert p.returncode == 1 and want in err and "--chat-template" in err, (p.returncode, err[-500:])
    p = subprocess.run([KVSERVE, "serve", "-m", STORIES, "--port", "0", "--device-memory", "256MiB",
                        "--enable-auto-tool-choice"], capture_output=True, timeout=60)
    assert p.returncode == 1 and b"--tool-call-parser" in p.stderr, p.stderr[-300:]
    p = subprocess.run([KVSERVE, "serve", "-m", STORIES, "--port", "0", "--device-memory", "256MiB",
                        "--reasoning-parser", "o1"], capture_output=True, timeout=60)
    assert p.returncode == 1 and b"deepseek_r1" in p.stderr, p.stderr[-300:]


def main():
    checks = Checks()
    checks.run("chat-template CLI = Jinja2", t_cli_matches_jinja2)
    checks.run("chat-template -m MODEL", t_cli_model)
    checks.run("named templates, raise_exception", t_cli_named_and_raise)
    checks.run("server: --chat-template, developer, errors", t_server_template_handling)
    checks.finish()


if __name__ == "__main__":
    main()
