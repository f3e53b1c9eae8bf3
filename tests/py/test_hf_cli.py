"""`-m DIR` end to end through the CLI: tokenize, generate, plan and info on a
random-weight Hugging Face directory (3 shards, bf16) with a byte-level BPE
tokenizer.json written by hf_util.write_tokenizer.

  - `kvserve generate -m DIR --temperature 0 --json`: the output token ids are
    the NumPy reference's greedy continuation of the prompt ids it reports;
  - `kvserve plan -m DIR --json` equals the start's memory report in every
    figure that does not depend on the runtime overhead, and its weights are
    the safetensors headers' tensor bytes (norms as f32, each rounded up to 256);
  - the start logs a one-line load summary naming the shards;
  - `kvserve info -m DIR` lists the config and the tensor map;
  - `kvserve convert DIR -o X.gguf` carries the tokenizer: the GGUF generates the same tokens.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_util  # noqa: E402

KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
WORK = os.path.join(os.environ.get("KVS_BUILD_DIR", "build"), "hf_cli")
CFG = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 320, "max_position_embeddings": 256,
       "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
       "eos_token_id": 319, "bos_token_id": 318}
EQUAL = ["device", "total_bytes", "utilization", "budget_bytes", "weights_bytes", "activation_peak_bytes",
         "graph_bytes", "block_size", "kv_bytes_per_token"]
ok = True


def check(cond, msg):
    global ok
    print(("ok   " if cond else "FAIL ") + msg)
    ok = ok and bool(cond)


def run(*args):
    r = subprocess.run([KVSERVE, *args], capture_output=True, timeout=300)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def main():
    os.makedirs(WORK, exist_ok=True)
    d = os.path.join(WORK, "qwen2-bf16-3shards")
    W = hf_util.make_dir(d, CFG, "BF16", 3, seed=5, gen={"eos_token_id": [319, 317], "bos_token_id": 318,
                                                          "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                                                          "repetition_penalty": 1.05, "do_sample": True})
    rc, out, err = run("info", "-m", d)
    check(rc == 0 and "Qwen2ForCausalLM" in out and "tensors (27 used, 0 ignored)" in out and
          "model.layers.1.mlp.down_proj.weight" in out, "info -m DIR")
    tc_len = len(json.load(open(os.path.join(d, "tokenizer_config.json")))["chat_template"].encode())
    check(f"chat template: {tc_len} bytes" in out, "chat template from tokenizer_config.json")
    check("generation_config eos: 319 317" in out and
          "defaults: temperature 0.7 top_p 0.8 top_k 20 repetition_penalty 1.05" in out,
          "generation_config.json: the EOS list and the sampling defaults")
    jinja = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    open(os.path.join(d, "chat_template.jinja"), "w").write(jinja)
    rc, out, err = run("info", "-m", d)
    check(f"chat template: {len(jinja)} bytes" in out, "chat_template.jinja takes precedence")
    os.remove(os.path.join(d, "chat_template.jinja"))
    rc, out, err = run("tokenize", "-m", d, "the rain in spain")
    check(rc == 0 and out.split(), f"tokenize -m DIR: {out.strip()} {err.strip()}")

    common = ["--device-memory", "1GiB", "--max-model-len", "128", "--max-num-seqs", "4", "--threads", "2"]
    report = os.path.join(WORK, "report.json")
    rc, out, err = run("generate", "-m", d, "-p", "the rain in spain", "-n", "12", "--temperature", "0",
                       "--ignore-eos", "--json", "--verbose", "--memory-report", report, *common)
    check(rc == 0, f"generate -m DIR ({err.strip().splitlines()[-1] if err.strip() else ''})")
    if rc != 0:
        sys.exit(1)
    res = json.loads(out)
    prompt, got = res["prompt_token_ids"], res["output_token_ids"]
    want, _ = hf_util.greedy(CFG, W, prompt, len(got))
    check(got == want[len(prompt):], f"greedy tokens equal the reference: {got} vs {want[len(prompt):]}")
    check("loaded" in err and "3 safetensors shards" in err, "one-line load summary names the shards")

    # the directory converted to GGUF (tokenizer included) generates the same tokens
    gg = os.path.join(WORK, "converted.gguf")
    rc, _, err = run("convert", d, "-o", gg, "--type", "bf16")
    check(rc == 0 and "tokenizer was not converted" not in err, f"convert DIR -> GGUF with its tokenizer {err.strip()}")
    rc, out2, err = run("generate", "-m", gg, "-p", "the rain in spain", "-n", "12", "--temperature", "0",
                        "--ignore-eos", "--json", *common)
    res2 = json.loads(out2) if rc == 0 else {}
    check(res2.get("prompt_token_ids") == prompt and res2.get("output_token_ids") == got,
          "the converted GGUF: same prompt ids and greedy tokens")

    rc, out, err = run("plan", "-m", d, "--json", *common)
    check(rc == 0, f"plan -m DIR {err.strip()}")
    plan = json.loads(out)
    start = json.load(open(report))
    p, s = plan.get("report", plan), start.get("report", start)
    diff = [k for k in EQUAL if p.get(k) != s.get(k)]
    check(not diff, f"plan equals the start on {EQUAL} (differ: {diff})")
    expect = 0
    for name, shape, kind in hf_util.tensor_shapes(CFG):
        n = 1
        for x in shape:
            n *= x
        b = n * 4 if kind in ("n", "b") else n * 2
        expect += (b + 255) // 256 * 256
    check(p.get("weights_bytes") == expect, f"plan weights {p.get('weights_bytes')} = headers' {expect}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
