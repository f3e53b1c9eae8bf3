"""`kvserve convert` both ways, and the two RoPE layouts.

1. stories260K.gguf -> HF directory (`--to hf`): q/k rows are un-permuted from
   llama.cpp's interleaved layout to transformers' rotate-half layout (checked
   against the permutation written out here from convert_hf_to_gguf.py's
   `permute`), every other tensor is copied unchanged; kvserve on the directory
   gives the same logits as on the GGUF and reproduces llama2.c's greedy tokens
   (../shared/expected).  Once tokenizer.json support is built, `kvserve
   generate` on the directory prints llama2.c's text too.
2. The directory -> GGUF again: every tensor equals the original byte for byte.
3. Random HF checkpoints (Qwen2, Gemma 2, Phi-3, Mistral, Llama+yarn) -> GGUF
   at F16/BF16/Q8_0/Q4_0: the GGUF runs through kvserve's GGUF path (names,
   norm +1, fused tensors, keys) with the same logits as the directory (exact
   types) or within the quantization error (Q8_0/Q4_0).
"""
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_util  # noqa: E402
from test_reference_forward import read_gguf  # noqa: E402

KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
DUMP = os.environ.get("KVS_FORWARD_DUMP", "build/tests/kvs_forward_dump")
SHARED = os.environ.get("KVS_SHARED", "../shared")
WORK = os.path.join(os.environ.get("KVS_BUILD_DIR", "build"), "hf_convert")
STORIES = os.path.join(SHARED, "models", "stories260K.gguf")
ok = True


def check(cond, msg):
    global ok
    print(("ok   " if cond else "FAIL ") + msg)
    ok = ok and bool(cond)


def convert(*args):
    r = subprocess.run([KVSERVE, "convert", *args], capture_output=True, timeout=300)
    return r.returncode, r.stderr.decode(errors="replace")


def logits(model, tokens, tag):
    spec = {"model": model, "kv_dtype": "f32", "block_size": 16, "threads": 2, "shuffle_seed": 3,
            "steps": [{"seqs": [{"id": 0, "tokens": tokens, "start_pos": 0}]}]}
    sp, op = os.path.join(WORK, tag + ".json"), os.path.join(WORK, tag + ".bin")
    json.dump(spec, open(sp, "w"))
    r = subprocess.run([DUMP, sp, op], capture_output=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{tag}: {r.stderr.decode(errors='replace')}")
    V = json.loads(r.stdout)["n_vocab"]
    return np.fromfile(op, "<f4").reshape(-1, V)


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py permute(): rotate-half rows -> interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def stories():
    hf = os.path.join(WORK, "stories260K-hf")
    rc, err = convert(STORIES, "-o", hf, "--to", "hf")
    check(rc == 0, f"convert stories260K.gguf -> {hf} ({err.strip().splitlines()[-1] if err.strip() else ''})")
    meta, G = read_gguf(STORIES)
    W = hf_util.read_safetensors(os.path.join(hf, "model.safetensors"))
    H, KV = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    same = all(np.array_equal(permute(W[f"model.layers.{l}.self_attn.q_proj.weight"], H), G[f"blk.{l}.attn_q.weight"])
               and np.array_equal(permute(W[f"model.layers.{l}.self_attn.k_proj.weight"], KV), G[f"blk.{l}.attn_k.weight"])
               for l in range(5))
    differs = not np.array_equal(W["model.layers.0.self_attn.q_proj.weight"], G["blk.0.attn_q.weight"])
    check(same and differs, "q/k rows: HF = inverse of llama.cpp's permute of the GGUF rows (and not the same rows)")
    check(np.array_equal(W["model.layers.3.mlp.down_proj.weight"], G["blk.3.ffn_down.weight"]) and
          np.array_equal(W["model.embed_tokens.weight"], G["token_embd.weight"]), "other tensors copied unchanged")
    cfg = json.load(open(os.path.join(hf, "config.json")))
    check(cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 4 and
          cfg["rms_norm_eps"] == 1e-5 and cfg["tie_word_embeddings"] is False, "config.json keys")

    # the same tokens: llama2.c's greedy run from BOS
    text = open(os.path.join(SHARED, "expected", "stories260K_greedy_bos_n200.tokens")).read()
    nxt = [ln for ln in text.splitlines() if ln.startswith("next_token_at_pos")][0]
    toks = [1] + [int(t) for t in nxt.split(":", 1)[1].split()]
    seq = toks[:120]
    a, b = logits(STORIES, seq, "stories_gguf"), logits(hf, seq, "stories_hf")
    rel = np.abs(a - b).max() / np.abs(a).max()
    check(rel <= 1e-5, f"logits: HF directory vs GGUF, max |d|/max = {rel:.1e} over {len(seq)} positions")
    agree = np.mean(b[:-1].argmax(axis=1) == np.array(seq[1:]))
    check(agree == 1.0, f"greedy tokens from the HF directory = llama2.c's ({agree * 100:.0f}% of {len(seq) - 1})")

    # back to GGUF: every tensor equal
    back = os.path.join(WORK, "stories260K-back.gguf")
    rc, err = convert(hf, "-o", back)
    check(rc == 0, "convert the HF directory -> GGUF")
    meta2, G2 = read_gguf(back)
    eq = set(G) == set(G2) and all(np.array_equal(G[k], G2[k]) for k in G)
    check(eq, f"all {len(G)} tensors of the round trip equal the original's")
    keys = {"llama.embedding_length": None, "llama.block_count": None, "llama.feed_forward_length": None,
            "llama.attention.head_count": None, "llama.attention.head_count_kv": None, "llama.context_length": None,
            "llama.rope.freq_base": 10000.0, "llama.attention.layer_norm_rms_epsilon": None}
    diff = [k for k, dflt in keys.items() if meta.get(k, dflt) != meta2.get(k)]
    check(not diff, f"hyperparameter keys equal (absent ones at llama.cpp's defaults) {diff}")
    raw_types = gguf_types(STORIES) == gguf_types(back)
    check(raw_types, "tensor types equal (f32)")

    # text: the directory carries the tokenizer
    def gen(model):
        r = subprocess.run([KVSERVE, "generate", "-m", model, "-p", "Once upon a time", "-n", "64",
                            "--temperature", "0"], capture_output=True, timeout=300)
        return r.returncode, r.stdout.decode(errors="replace")
    (rc1, hf_text), (rc2, gguf_text) = gen(hf), gen(STORIES)
    want = open(os.path.join(SHARED, "expected", "stories260K_greedy_once_upon_a_time_n64.txt")).read()
    check(rc1 == 0 and rc2 == 0 and hf_text == gguf_text and hf_text.strip() and
          ("Once upon a time" + hf_text).startswith(want.rstrip("\n")),
          "kvserve generate on the HF directory prints the GGUF's text, which continues llama2.c's")


def gguf_types(path):
    """{name: ggml type} from the tensor infos."""
    import struct
    data = open(path, "rb").read()
    from test_reference_forward import Reader
    r = Reader(data)
    r.p = 8
    n_t, n_kv = r.take("<Q"), r.take("<Q")
    for _ in range(n_kv):
        r.string()
        r.value(r.take("<I"))
    out = {}
    for _ in range(n_t):
        name = r.string()
        nd = r.take("<I")
        [r.take("<Q") for _ in range(nd)]
        out[name] = r.take("<I")
        r.take("<Q")
    del struct
    return out


def to_gguf():
    import test_hf_forward as F
    cases = {c[0]: c for c in F.CASES}
    # (case, --type, tolerance vs the directory's logits, expected ggml type of a matrix)
    runs = [("qwen2_bias_tied_bf16", "F16", 1e-5, 1), ("qwen2_bias_tied_bf16", "BF16", 1e-5, 30),
            # GGUF Gemma 2 scales embeddings by sqrt(hidden) in f32 (llama.cpp), transformers in bf16
            ("gemma2_bf16", "BF16", 2e-3, 30), ("phi3_fused_f16", "F16", 1e-5, 1),
            ("mistral_window_bf16", "Q8_0", 3e-2, 8), ("llama_llama3_bf16", "BF16", 1e-5, 30), ("llama_yarn_f32_v5keys", "F32", 1e-5, 0),
            ("qwen3_hd32_bf16", "Q4_0", None, 2)]
    for name, ty, tol, ggml in runs:
        _, cfg, dtype, shards = cases[name]
        d = os.path.join(WORK, name)
        hf_util.make_dir(d, cfg, dtype, shards, seed=7)
        out = os.path.join(WORK, f"{name}_{ty}.gguf")
        rc, err = convert(d, "-o", out, "--type", ty)
        if rc != 0:
            check(False, f"convert {name} --type {ty}: {err.strip()}")
            continue
        types = gguf_types(out)
        mat = "blk.0.attn_qkv.weight" if "phi3" in name else "blk.0.attn_q.weight"
        rng = np.random.default_rng(1)
        seq = [int(t) for t in rng.integers(0, cfg["vocab_size"], 24)]
        a, b = logits(d, seq, name + "_dir"), logits(out, seq, f"{name}_{ty}")
        rel = np.abs(a - b).max() / np.abs(a).max()
        norm_f32 = types.get("blk.0.attn_norm.weight") == 0
        if tol is None:  # Q4_0 of random weights: check the weights' error, and that the logits follow
            _, G = read_gguf(out)
            Wd = hf_util.read_dir_weights(d)
            w0, g0 = Wd["model.layers.0.mlp.down_proj.weight"], G["blk.0.ffn_down.weight"]
            werr = np.sqrt(np.mean((w0 - g0) ** 2) / np.mean(w0 ** 2))
            corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            check(werr < 0.15 and corr > 0.8 and types.get(mat) == ggml and norm_f32,
                  f"{name} -> GGUF {ty}: {mat} type {types.get(mat)}, ffn_down rms error {werr:.3f} (< 0.15), "
                  f"logits correlation with the directory's {corr:.3f} (> 0.8)")
            continue
        check(rel <= tol and types.get(mat) == ggml and norm_f32,
              f"{name} -> GGUF {ty}: {mat} type {types.get(mat)}, logits vs directory max |d|/max = {rel:.1e} "
              f"(tol {tol:.0e})")


def quantized_to_hf():
    """A q8_0 Qwen3 GGUF (synth) -> HF directory: dequantized to f32, q/k norms named as transformers does;
    the directory's logits follow the GGUF's (within 2e-2: a q8_0 kernel may round activations)."""
    g = os.path.join(WORK, "qwen3_q8_0.gguf")
    r = subprocess.run([KVSERVE, "synth", "-o", g, "--arch", "qwen3", "--dim", "64", "--heads", "4", "--kv-heads", "2",
                        "--head-dim", "32", "--hidden", "128", "--layers", "2", "--vocab", "288", "--type", "q8_0",
                        "--seed", "3"], capture_output=True, timeout=120)
    check(r.returncode == 0, "synth a q8_0 qwen3 GGUF")
    d = os.path.join(WORK, "qwen3_q8_0-hf")
    rc, err = convert(g, "-o", d, "--shards", "2")
    W = hf_util.read_dir_weights(d)
    _, G = read_gguf(g)
    exact = np.array_equal(W["model.layers.1.self_attn.q_proj.weight"], G["blk.1.attn_q.weight"]) and \
        np.array_equal(W["model.layers.0.self_attn.k_norm.weight"], G["blk.0.attn_k_norm.weight"].ravel())
    check(rc == 0 and exact and os.path.exists(os.path.join(d, "model.safetensors.index.json")),
          "q8_0 GGUF -> 2-shard HF directory: the dequantized values, qwen3 names")
    seq = [int(t) for t in np.random.default_rng(2).integers(0, 288, 20)]
    a, b = logits(g, seq, "qwen3_q8_0_gguf"), logits(d, seq, "qwen3_q8_0_hf")
    rel = np.abs(a - b).max() / np.abs(a).max()
    check(rel < 2e-2, f"logits of the f32 directory vs the q8_0 GGUF: max |d|/max = {rel:.1e} (< 2e-2)")


def mix_to_gguf():
    """convert DIR --type q4_k_m gives every tensor the type llama-quantize's
    rules give it, as `synth --from` (whose rules were checked against
    llama-quantize's own Q4_K_M file) does on the same model as a GGUF."""
    f16 = os.path.join(WORK, "mix-f16.gguf")
    r = subprocess.run([KVSERVE, "synth", "-o", f16, "--preset", "llama2-110m", "--layers", "3", "--vocab", "512",
                        "--type", "f16", "--seed", "3"], capture_output=True)
    check(r.returncode == 0, "synth a 3-layer llama2-110m-shaped f16 GGUF")
    d = os.path.join(WORK, "mix-hf")
    r = subprocess.run([KVSERVE, "convert", f16, "-o", d, "--to", "hf"], capture_output=True)
    check(r.returncode == 0, "convert it to an HF directory")
    a, b = os.path.join(WORK, "mix-convert.gguf"), os.path.join(WORK, "mix-synth.gguf")
    r1 = subprocess.run([KVSERVE, "convert", d, "-o", a, "--type", "q4_k_m"], capture_output=True)
    r2 = subprocess.run([KVSERVE, "synth", "--from", f16, "-o", b, "--type", "q4_k_m"], capture_output=True)
    ta, tb = (gguf_types(a), gguf_types(b)) if r1.returncode == 0 and r2.returncode == 0 else ({}, {})
    check(ta and ta == tb and len(set(ta.values())) > 2,
          f"convert DIR --type q4_k_m: the same per-tensor types as synth's Q4_K_M ({sorted(set(ta.values()))})")
    r = subprocess.run([KVSERVE, "convert", d, "-o", os.path.join(WORK, "x"), "--to", "hf", "--type", "q4_k_m"],
                       capture_output=True)
    check(r.returncode == 2, "a mix with --to hf is refused")


def main():
    os.makedirs(WORK, exist_ok=True)
    stories()
    quantized_to_hf()
    to_gguf()
    mix_to_gguf()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
