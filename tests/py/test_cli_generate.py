"""`kvserve generate` end to end against llama2.c's greedy runs on stories260K
(shared/expected/, made by karpathy/llama2.c run.c on the same weights).

llama2.c prints the piece of every next token (the first without its leading
space after BOS), then a newline; with a prompt, the prompt's pieces come
first.  `generate --json` gives prompt_token_ids, output_token_ids and text
(the output only).
"""
import json
import os
import subprocess
import sys

SHARED = os.environ.get("KVS_SHARED", "../shared")
KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
MODEL = os.path.join(SHARED, "models", "stories260K.gguf")


def expected(stem):
    base = os.path.join(SHARED, "expected", stem)
    prompt, nxt = None, None
    with open(base + ".tokens") as f:
        for line in f:
            if line.startswith("prompt_tokens"):
                prompt = [int(x) for x in line.split(":", 1)[1].split()]
            elif line.startswith("next_token_at_pos_0.."):
                nxt = [int(x) for x in line.split(":", 1)[1].split()]
    with open(base + ".txt", "rb") as f:
        text = f.read().decode("utf-8")
    return prompt, nxt, text


def generate(prompt, n, *extra):
    cmd = [KVSERVE, "generate", "-m", MODEL, "--temperature", "0", "--json", "-n", str(n), "-p", prompt,
           "--device-memory", "1GiB", "--threads", "2", *extra]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return json.loads(r.stdout)


def check(name, got, want):
    if got != want:
        print(f"FAIL {name}:\n  got  {got!r}\n  want {want!r}")
        sys.exit(1)
    print(f"ok   {name}")


def main():
    prompt, nxt, text = expected("stories260K_greedy_bos_n200")
    assert len(nxt) == 200 and prompt == [1]
    for extra in ([], ["--block-size", "1"], ["--max-num-batched-tokens", "4"]):
        out = generate("", 200, *extra)
        tag = " ".join(extra) or "defaults"
        check(f"BOS: prompt_token_ids ({tag})", out["prompt_token_ids"], prompt)
        check(f"BOS: 200 output_token_ids = llama2.c ({tag})", out["output_token_ids"], nxt)
        check(f"BOS: text + newline = llama2.c's output ({tag})", out["text"] + "\n", text)

    prompt, nxt, text = expected("stories260K_greedy_once_upon_a_time_n64")
    assert len(nxt) == 64 and len(prompt) == 5
    out = generate("Once upon a time", 60)
    check("prompt: prompt_token_ids", out["prompt_token_ids"], prompt)
    check("prompt: 60 output_token_ids = llama2.c (positions 4..63)", out["output_token_ids"], nxt[4:])
    check("prompt: prompt + text + newline = llama2.c's output", "Once upon a time" + out["text"] + "\n", text)

    # streamed (not --json): the text on stdout, then a newline
    cmd = [KVSERVE, "generate", "-m", MODEL, "--temperature", "0", "-n", "200", "-p", "",
           "--device-memory", "1GiB", "--threads", "2"]
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    check("streamed stdout = llama2.c's output", r.stdout.decode("utf-8"),
          expected("stories260K_greedy_bos_n200")[2])


if __name__ == "__main__":
    main()
