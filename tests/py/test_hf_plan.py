"""`kvserve plan -m DIR` from config.json and the safetensors headers alone, on
directories of real models' shapes (Llama-3.1-8B, Qwen2.5-7B in bf16, sharded as
their repositories are) whose shard files are sparse: the headers are real and
the data sections are holes (80 KiB on disk for 15 GiB of bf16), so the test
needs no download.

Checks, on --device h100 (no tokenizer is needed there):
  - weights = the headers' tensors, each rounded up to 256 bytes, norms as f32,
    plus the llama3 RoPE table (64 doubles), computed here independently;
    rounded to the H100 profile's 2 MiB allocation granularity;
  - the same plan (weights, activation peak, KV cache, blocks) as for the GGUF
    that `kvserve synth --header-only` writes for the same preset;
  - a start-up figure that depends only on the shapes (KV bytes per token) equal too.
"""
import json
import os
import struct
import subprocess
import sys

KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
WORK = os.path.join(os.environ.get("KVS_BUILD_DIR", "build"), "hf_plan")
ok = True


def check(cond, msg):
    global ok
    print(("ok   " if cond else "FAIL ") + msg)
    ok = ok and bool(cond)


MODELS = {
    "llama3.1-8b": ({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                     "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                     "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                     "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}, 4, 64),
    "qwen2.5-7b": ({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
                    "vocab_size": 152064, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                    "rope_theta": 1000000.0, "sliding_window": 131072, "use_sliding_window": False,
                    "max_window_layers": 28, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}, 4, 0),
}


def shapes(c):
    D, L, H, KV = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, F, V = D // H, c["intermediate_size"], c["vocab_size"]
    out = [("model.embed_tokens.weight", [V, D], False), ("model.norm.weight", [D], True),
           ("lm_head.weight", [V, D], False)]
    for l in range(L):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", [D], True), (p + "post_attention_layernorm.weight", [D], True),
                (p + "self_attn.q_proj.weight", [H * hd, D], False), (p + "self_attn.k_proj.weight", [KV * hd, D], False),
                (p + "self_attn.v_proj.weight", [KV * hd, D], False), (p + "self_attn.o_proj.weight", [D, H * hd], False),
                (p + "mlp.gate_proj.weight", [F, D], False), (p + "mlp.up_proj.weight", [F, D], False),
                (p + "mlp.down_proj.weight", [D, F], False)]
        if c["architectures"][0] == "Qwen2ForCausalLM":
            out += [(p + "self_attn.q_proj.bias", [H * hd], True), (p + "self_attn.k_proj.bias", [KV * hd], True),
                    (p + "self_attn.v_proj.bias", [KV * hd], True)]
    return out


def write_sparse_dir(d, cfg, n_shards):
    os.makedirs(d, exist_ok=True)
    ts = shapes(cfg)
    per = (len(ts) + n_shards - 1) // n_shards
    wm, expect = {}, 0
    for s in range(n_shards):
        fn = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, is_norm in ts[s * per:(s + 1) * per]:
            n = 1
            for x in shape:
                n *= x
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + 2 * n]}
            off += 2 * n
            wm[name] = fn
            expect += ((4 * n if is_norm else 2 * n) + 255) // 256 * 256
        js = json.dumps(header).encode()
        js += b" " * (-len(js) % 8)
        with open(os.path.join(d, fn), "wb") as f:
            f.write(struct.pack("<Q", len(js)) + js)
            f.truncate(8 + len(js) + off)   # the data: a hole
    json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    return expect


def plan(model):
    r = subprocess.run([KVSERVE, "plan", "-m", model, "--device", "h100", "--max-model-len", "8192", "--json"],
                       capture_output=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.decode(errors="replace"))
    j = json.loads(r.stdout)
    return j.get("report", j)


def main():
    os.makedirs(WORK, exist_ok=True)
    for preset, (cfg, n_shards, rope_pairs) in MODELS.items():
        d = os.path.join(WORK, preset)
        expect = write_sparse_dir(d, cfg, n_shards) + (rope_pairs * 8 + 255) // 256 * 256
        p = plan(d)
        gran = 2 << 20   # the H100 profile rounds each allocation up to 2 MiB
        rounded = (expect + gran - 1) // gran * gran
        check(p["weights_bytes"] == rounded,
              f"{preset}: plan -m DIR weights {p['weights_bytes']} = headers' {expect} rounded to 2 MiB "
              f"({expect / 2**30:.2f} GiB)")
        g = os.path.join(WORK, preset + ".gguf")
        r = subprocess.run([KVSERVE, "synth", "--preset", preset, "--type", "bf16", "--header-only", "-o", g],
                           capture_output=True, timeout=120)
        check(r.returncode == 0, f"synth {preset}")
        q = plan(g)
        keys = ["weights_bytes", "kv_bytes_per_token", "activation_peak_bytes", "kv_cache_bytes", "num_blocks"]
        check(all(q[k] == p[k] for k in keys),
              f"{preset}: equal to the plan of the GGUF header of the same shape on {keys} "
              f"(KV cache {p['kv_cache_bytes'] / 2**30:.2f} GiB, {p['num_blocks']} blocks)")
        du = sum(os.stat(os.path.join(d, f)).st_blocks * 512 for f in os.listdir(d))
        check(du < 1 << 20, f"{preset}: the directory takes {du / 1024:.0f} KiB on disk")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
