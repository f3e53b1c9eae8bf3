"""kvserve's forward pass on Hugging Face checkpoint directories against the NumPy
reference in hf_util.py (written from each architecture's published equations).

For every family (Llama with each rope_scaling type, Mistral with a sliding window,
Qwen2, Qwen3, Gemma 2, Phi-3) a random-weight directory with real config.json
keys is written in bf16, f16 or f32, single-file or sharded, with tied or untied
embeddings.  The reference computes a greedy continuation of a prompt in float64;
kvserve (tests/tools/forward_dump.c: the model source, the loader and the runner
over a paged KV cache, as the engine uses them) runs the same tokens as a prefill
chunk followed by single-token decode steps, next to a second sequence.  Checks:
  - every row of logits: max |kvserve - reference| / max |reference| <= 1e-4;
  - the greedy tokens: kvserve's argmax at each position is the reference's next token.
Sequences are longer than the sliding windows, so the windows matter.
"""
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_util  # noqa: E402

DUMP = os.environ.get("KVS_FORWARD_DUMP", "build/tests/kvs_forward_dump")
WORK = os.path.join(os.environ.get("KVS_BUILD_DIR", "build"), "hf_forward")
TOL = 1e-4


def base(arch, **kw):
    c = {"architectures": [arch], "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 300, "max_position_embeddings": 64,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
         "hidden_act": "silu", "bos_token_id": 298, "eos_token_id": 299}
    c.update(kw)
    return c


CASES = [
    # name, config, safetensors dtype, shards
    ("llama_llama3_bf16", base("LlamaForCausalLM", rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}), "BF16", 1),
    ("llama_linear_f16_tied_sharded", base("LlamaForCausalLM", tie_word_embeddings=True, torch_dtype="float16",
                                           rope_scaling={"type": "linear", "factor": 2.0}), "F16", 3),
    ("llama_yarn_f32_v5keys", {k: v for k, v in base("LlamaForCausalLM", dtype="float32", rope_parameters={
        "rope_type": "yarn", "rope_theta": 20000.0, "factor": 4.0, "original_max_position_embeddings": 16}).items()
                               if k not in ("torch_dtype", "rope_theta")}, "F32", 1),
    ("llama_dynamic_f32", base("LlamaForCausalLM", rope_scaling={"type": "dynamic", "factor": 2.0}), "F32", 1),
    ("mistral_window_bf16", base("MistralForCausalLM", sliding_window=7, head_dim=16), "BF16", 2),
    ("qwen2_bias_tied_bf16", base("Qwen2ForCausalLM", tie_word_embeddings=True, rope_theta=1000000.0,
                                  use_sliding_window=False, sliding_window=4096, max_window_layers=3), "BF16", 1),
    ("qwen2_window_f32", base("Qwen2ForCausalLM", use_sliding_window=True, sliding_window=6,
                              max_window_layers=1), "F32", 1),
    ("qwen2_layer_types_f32", base("Qwen2ForCausalLM", use_sliding_window=True, sliding_window=5, max_window_layers=2,
                                   layer_types=["full_attention", "full_attention", "sliding_attention"]), "F32", 1),
    ("qwen3_hd32_bf16", base("Qwen3ForCausalLM", head_dim=32, rope_theta=1000000.0), "BF16", 1),
    ("gemma2_bf16", base("Gemma2ForCausalLM", hidden_size=72, head_dim=32, intermediate_size=128, query_pre_attn_scalar=24,
                         attn_logit_softcapping=2.0, final_logit_softcapping=3.0, sliding_window=6,
                         hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh",
                         tie_word_embeddings=True, rms_norm_eps=1e-6), "BF16", 1),
    ("phi3_fused_f16", base("Phi3ForCausalLM", sliding_window=9, partial_rotary_factor=0.5,
                            torch_dtype="float16"), "F16", 2),
]

PROMPT, NEW, OTHER = 12, 20, 19

# Config keys whose removal must change the logits far beyond the tolerance.
WITHOUT = {
    "llama_llama3_bf16": ["rope_scaling"],
    "llama_linear_f16_tied_sharded": ["rope_scaling"],
    "llama_yarn_f32_v5keys": ["rope_parameters"],
    "llama_dynamic_f32": ["rope_scaling"],
    "mistral_window_bf16": ["sliding_window"],
    "qwen2_window_f32": ["use_sliding_window"],
    "qwen2_layer_types_f32": ["use_sliding_window"],
    "gemma2_bf16": ["attn_logit_softcapping", "final_logit_softcapping", "sliding_window"],
    "phi3_fused_f16": ["partial_rotary_factor"],
}


def run(name, cfg, dtype, shards, seed, mmap=False):
    d = os.path.join(WORK, name)
    W = hf_util.make_dir(d, cfg, dtype, shards, seed)
    rng = np.random.default_rng(seed + 100)
    V = cfg["vocab_size"]
    prompt = [int(t) for t in rng.integers(0, V, PROMPT)]
    other = [int(t) for t in rng.integers(0, V, OTHER)]
    toks, ref0 = hf_util.greedy(cfg, W, prompt, NEW)
    ref1 = hf_util.forward(cfg, W, other)
    T = len(toks)
    # prefill chunks next to each other, then one token per step
    steps = [{"seqs": [{"id": 0, "tokens": toks[:PROMPT], "start_pos": 0},
                       {"id": 1, "tokens": other[:5], "start_pos": 0}]},
             {"seqs": [{"id": 1, "tokens": other[5:], "start_pos": 5},
                       {"id": 0, "tokens": toks[PROMPT:PROMPT + 1], "start_pos": PROMPT}]}]
    where = [(0, p) for p in range(PROMPT)] + [(1, p) for p in range(5)] + \
            [(1, p) for p in range(5, OTHER)] + [(0, PROMPT)]
    for p in range(PROMPT + 1, T):
        steps.append({"seqs": [{"id": 0, "tokens": [toks[p]], "start_pos": p}]})
        where.append((0, p))
    spec = {"model": d, "kv_dtype": "f32", "block_size": 4, "threads": 2, "shuffle_seed": seed, "steps": steps,
            "mmap": mmap}
    tag = name + ("_mmap" if mmap else "")
    sp, op = os.path.join(WORK, tag + ".json"), os.path.join(WORK, tag + ".bin")
    json.dump(spec, open(sp, "w"))
    r = subprocess.run([DUMP, sp, op], capture_output=True, timeout=300)
    if r.returncode != 0:
        print(f"FAIL {tag}: forward_dump: {r.stderr.decode(errors='replace').strip()}")
        return False
    got = np.fromfile(op, "<f4").reshape(-1, V).astype(np.float64)
    ref = np.stack([(ref0 if s == 0 else ref1)[p] for s, p in where])
    rel = (np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)).max()
    # greedy: at positions PROMPT-1 .. T-2 of sequence 0, the argmax is the next token
    idx = {w: i for i, w in enumerate(where)}
    kv_next = [int(got[idx[(0, p)]].argmax()) for p in range(PROMPT - 1, T - 1)]
    greedy_ok = kv_next == toks[PROMPT:]
    # the deviation under test matters: the reference without it is far from kvserve
    sens = ""
    if name in WITHOUT:
        alt_cfg = {k: v for k, v in cfg.items() if k not in WITHOUT[name]}
        alt = hf_util.forward(alt_cfg, W, toks)
        rows = [i for i, (sq, _) in enumerate(where) if sq == 0]
        alt_rel = (np.abs(got[rows] - alt[[p for sq, p in where if sq == 0]]).max(axis=1) /
                   np.abs(alt).max()).max()
        sens = f"  without {'/'.join(WITHOUT[name])}: {alt_rel:.1e}"
        if alt_rel < 100 * TOL:
            print(f"FAIL {tag}: removing {WITHOUT[name]} changes the reference by only {alt_rel:.1e}")
            return False
    ok = rel <= TOL and greedy_ok and np.isfinite(got).all()
    print(f"{'ok  ' if ok else 'FAIL'} {tag:34s} {dtype:4s} shards {shards}  rows {len(where):3d}  "
          f"max |d|/max|ref| {rel:.2e} (tol {TOL:.0e})  greedy {NEW}/{NEW}{sens}" if greedy_ok else
          f"FAIL {tag}: greedy differs: kvserve {kv_next} reference {toks[PROMPT:]} (rel {rel:.2e})")
    return ok


def self_check():
    # bf16 rounding: nearest even
    assert hf_util.to_bf16_bits(np.array([1.0, 1.00390625, 1.01171875], np.float32)).tolist() == [0x3F80, 0x3F80, 0x3F82]
    # rotate_half RoPE at position 1, base 1 (every angle 1 rad), 4 dims: pairs (0, 2), (1, 3)
    cfg = {"rope_theta": 1.0}
    inv, m = hf_util.rope_inv_freq(cfg, 4)
    assert np.allclose(inv, [1.0, 1.0]) and m == 1.0
    # llama3: the lowest frequency (longest wavelength) is divided by the factor
    inv, _ = hf_util.rope_inv_freq({"rope_theta": 10000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}, 16)
    plain = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)
    s0 = (16 / (2 * np.pi) - 1.0) / 3.0  # position 0: wavelength 2 pi, between 16/4 and 16/1: smoothed
    assert np.isclose(inv[-1], plain[-1] / 8) and np.isclose(inv[0], (1 - s0) / 8 + s0)


def main():
    os.makedirs(WORK, exist_ok=True)
    self_check()
    ok = True
    for i, (name, cfg, dtype, shards) in enumerate(CASES):
        ok = run(name, cfg, dtype, shards, seed=i + 1) and ok
    # weights used in place from the mapped shards
    name, cfg, dtype, shards = CASES[1]
    ok = run(name, cfg, dtype, shards, seed=2, mmap=True) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
