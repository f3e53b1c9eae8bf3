"""kvserve's forward pass against a NumPy reference written from the published
equations, on random-weight models of many shapes (`kvserve synth`).

The reference reads the GGUF file itself (a small reader below: the v3
container, F32, F16, BF16, Q8_0 and Q4_0 from ggml's block layouts) and
computes in float64 on the dequantized weights:

  x = embedding[tokens]
  per layer:
    h = rmsnorm(x) * attn_norm                   rmsnorm(v) = v / sqrt(mean(v^2) + eps)
    q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)      biases: qwen2
    q, k = rmsnorm(q_head) * q_norm, rmsnorm(k_head) * k_norm     per head: qwen3
    q, k = RoPE(q, pos), RoPE(k, pos)            theta_i = pos * base^(-2i / rot_dim)
        llama ("normal"): rotate pairs (2i, 2i+1); qwen2/qwen3 (NeoX): pairs (i, i + rot_dim/2)
    attention per query head h over KV head h // (n_heads / n_kv_heads) (GQA),
        causal, softmax(q k^T / sqrt(head_dim)) v
    x += attn Wo^T
    h = rmsnorm(x) * ffn_norm
    x += (silu(h Wgate^T) * (h Wup^T)) Wdown^T  (SwiGLU)
  logits = rmsnorm(x) * output_norm  Wout^T      Wout = embedding when tied

kvserve runs the same tokens through tools/forward_dump.c (kvs_runner_forward
step by step over a paged KV cache with shuffled block tables): several
sequences at once, prefill chunks next to single decode tokens, a ~300-token
prompt spanning many blocks, block sizes 1, 16 and 32, KV cache f32, f16 and
bf16.  Every token's logits are compared with the reference's at the same
sequence position.  With an f16/bf16 KV cache the reference rounds its keys
(after RoPE) and values the same way, so the tolerance only has to absorb
the rare rounding that lands on the other side of a half-way point.
"""
import json
import os
import struct
import subprocess
import sys

import numpy as np

KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
DUMP = os.environ.get("KVS_FORWARD_DUMP", "build/tests/kvs_forward_dump")
WORK = os.path.join(os.environ.get("KVS_BUILD_DIR", "build"), "ref_forward")

# ---------------------------------------------------------------- GGUF reader

GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                12: "<d"}
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ggml_blocks import BLOCK, BF16, F16, F32, Q4_0, Q8_0, dequantize  # noqa: E402  (every ggml block type)


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.p:self.p + n].decode("utf-8")
        self.p += n
        return s

    def value(self, t):
        if t in GGUF_SCALARS:
            return self.take(GGUF_SCALARS[t])
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {t}")


def read_gguf_raw(path):
    """Metadata dict and {name: (ggml type, ne, raw bytes)} in file order."""
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    assert data[:4] == b"GGUF", "not a GGUF file"
    r.p = 4
    version = r.take("<I")
    assert version in (2, 3), version
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        infos.append((name, ne, r.take("<I"), r.take("<Q")))
    align = meta.get("general.alignment", 32)
    base = (r.p + align - 1) // align * align
    tensors = {}
    for name, ne, t, off in infos:
        n = int(np.prod(ne))
        be, bb = BLOCK[t]
        tensors[name] = (t, ne, data[base + off: base + off + n // be * bb])
    return meta, tensors


def read_gguf(path):
    """Metadata dict and {name: float64 array of shape (ne1, ne0)} (the file's own dequantized weights)."""
    meta, raw = read_gguf_raw(path)
    tensors = {}
    for name, (t, ne, data) in raw.items():
        n = int(np.prod(ne))
        tensors[name] = dequantize(data, t, n).astype(np.float64).reshape(n // ne[0], ne[0])
    return meta, tensors


# ---------------------------------------------------------------- the reference model

def hparams(meta):
    a = meta["general.architecture"]
    dim, heads = meta[f"{a}.embedding_length"], meta[f"{a}.attention.head_count"]
    hd = meta.get(f"{a}.attention.key_length", dim // heads)
    return dict(arch=a, dim=dim, layers=meta[f"{a}.block_count"], heads=heads,
                kv_heads=meta.get(f"{a}.attention.head_count_kv", heads), head_dim=hd,
                rot_dim=meta.get(f"{a}.rope.dimension_count", hd),
                eps=meta.get(f"{a}.attention.layer_norm_rms_epsilon", 1e-5),
                base=meta.get(f"{a}.rope.freq_base", 10000.0), neox=a in ("qwen2", "qwen3"))


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, rot_dim, base, neox):
    """x: [T, heads, head_dim]; rotate the first rot_dim dims of each head."""
    half = rot_dim // 2
    theta = pos[:, None] * base ** (-2.0 * np.arange(half) / rot_dim)   # [T, half]
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    x = x.copy()
    if neox:
        a, b = x[..., :half].copy(), x[..., half:rot_dim].copy()
        x[..., :half], x[..., half:rot_dim] = a * c - b * s, a * s + b * c
    else:
        a, b = x[..., 0:rot_dim:2].copy(), x[..., 1:rot_dim:2].copy()
        x[..., 0:rot_dim:2], x[..., 1:rot_dim:2] = a * c - b * s, a * s + b * c
    return x


def round_to(x, kv):
    if kv == "f16":
        return x.astype(np.float16).astype(np.float64)
    if kv == "bf16":  # f32, then round to nearest even on the top 16 bits
        u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        return u.astype(np.uint32).view(np.float32).astype(np.float64)
    return x


def forward(hp, W, tokens, kv="f32"):
    """Logits [T, vocab] of one sequence of tokens at positions 0..T-1."""
    T, H, KV, hd = len(tokens), hp["heads"], hp["kv_heads"], hp["head_dim"]
    pos = np.arange(T, dtype=np.float64)
    x = W["token_embd.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(hp["layers"]):
        g = lambda n: W[f"blk.{l}.{n}"]
        h = rmsnorm(x, g("attn_norm.weight")[0], hp["eps"])
        q, k, v = h @ g("attn_q.weight").T, h @ g("attn_k.weight").T, h @ g("attn_v.weight").T
        if f"blk.{l}.attn_q.bias" in W:
            q, k, v = q + g("attn_q.bias")[0], k + g("attn_k.bias")[0], v + g("attn_v.bias")[0]
        q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
        if f"blk.{l}.attn_q_norm.weight" in W:
            q = rmsnorm(q, g("attn_q_norm.weight")[0], hp["eps"])
            k = rmsnorm(k, g("attn_k_norm.weight")[0], hp["eps"])
        q = rope(q, pos, hp["rot_dim"], hp["base"], hp["neox"])
        k = rope(k, pos, hp["rot_dim"], hp["base"], hp["neox"])
        k, v = round_to(k, kv), round_to(v, kv)
        out = np.empty((T, H, hd))
        for hh in range(H):
            kh = hh // (H // KV)
            s = q[:, hh] @ k[:, kh].T / np.sqrt(hd) + mask
            p = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, hh] = (p / p.sum(axis=1, keepdims=True)) @ v[:, kh]
        x = x + out.reshape(T, H * hd) @ g("attn_output.weight").T
        h = rmsnorm(x, g("ffn_norm.weight")[0], hp["eps"])
        a, b = h @ g("ffn_gate.weight").T, h @ g("ffn_up.weight").T
        x = x + (a / (1.0 + np.exp(-a)) * b) @ g("ffn_down.weight").T
    x = rmsnorm(x, W["output_norm.weight"][0], hp["eps"])
    return x @ W.get("output.weight", W["token_embd.weight"]).T


# ---------------------------------------------------------------- the cases

MODELS = {
    # name: synth flags.  Shapes: GQA, head counts 6 and 12, head_dim != dim/heads,
    # rows that are not a multiple of the SIMD width, both RoPE layouts, every weight type.
    "llama_gqa6x2_f32": "--arch llama --dim 72 --heads 6 --kv-heads 2 --hidden 172 --layers 2 --vocab 300 "
                        "--type f32",
    "llama_12x4_f16_tied": "--arch llama --dim 192 --heads 12 --kv-heads 4 --hidden 320 --layers 2 --vocab 288 "
                           "--type f16 --tied --rope-base 500000",
    "qwen2_4x2_bf16": "--arch qwen2 --dim 128 --heads 4 --kv-heads 2 --hidden 256 --layers 2 --vocab 320 "
                      "--type bf16 --rope-base 1000000 --norm-eps 1e-6",
    "qwen3_6x2_hd32_q8_0_tied": "--arch qwen3 --dim 64 --heads 6 --kv-heads 2 --head-dim 32 --hidden 160 "
                                "--layers 2 --vocab 320 --type q8_0 --tied --rope-base 1000000 --norm-eps 1e-6",
    "llama_8x4_q4_0_wide": "--arch llama --dim 128 --heads 8 --kv-heads 4 --hidden 640 --layers 2 --vocab 320 "
                           "--type q4_0 --embd-type f16",
    "qwen3_3x1_hd64_bf16": "--arch qwen3 --dim 96 --heads 3 --kv-heads 1 --head-dim 64 --hidden 192 --layers 1 "
                           "--vocab 264 --type bf16 --embd-type f32",
    # the k-quants and the other legacy types, alone and in llama-quantize's mixes
    "llama_4x2_q4_k_m": "--arch llama --dim 256 --heads 4 --kv-heads 2 --hidden 512 --layers 2 --vocab 300 "
                        "--type q4_k_m",
    "qwen2_8x2_q5_k_m": "--arch qwen2 --dim 256 --heads 8 --kv-heads 2 --hidden 768 --layers 2 --vocab 280 "
                        "--type q5_k_m --rope-base 1000000 --norm-eps 1e-6",
    "llama_4x4_q6_k_tied": "--arch llama --dim 256 --heads 4 --kv-heads 4 --hidden 512 --layers 1 --vocab 270 "
                           "--type q6_k --tied",
    "llama_8x2_q2_k_mix": "--arch llama --dim 256 --heads 8 --kv-heads 2 --hidden 256 --layers 2 --vocab 300 "
                          "--ftype q2_k",
    "qwen3_4x2_hd64_q3_k_m": "--arch qwen3 --dim 256 --heads 4 --kv-heads 2 --head-dim 64 --hidden 512 --layers 2 "
                             "--vocab 300 --type q3_k_m --rope-base 1000000 --norm-eps 1e-6",
    "llama_4x2_q4_k_s_q5_k": "--arch llama --dim 256 --heads 4 --kv-heads 2 --hidden 512 --layers 1 --vocab 300 "
                             "--type q4_k_s",
    "llama_4x2_q5_k_q4_k": "--arch llama --dim 256 --heads 4 --kv-heads 2 --hidden 512 --layers 1 --vocab 300 "
                           "--type q5_k --embd-type q4_k",
    "llama_6x2_q4_1": "--arch llama --dim 96 --heads 6 --kv-heads 2 --hidden 160 --layers 2 --vocab 300 "
                      "--type q4_1",
    "llama_6x2_q5_0_q5_1": "--arch llama --dim 96 --heads 6 --kv-heads 2 --hidden 160 --layers 2 --vocab 300 "
                           "--type q5_0 --embd-type q5_1",
    "llama_6x2_q5_1_f16": "--arch llama --dim 96 --heads 6 --kv-heads 2 --hidden 160 --layers 1 --vocab 300 "
                          "--type q5_1 --embd-type f16",
}

# (model, block_size, kv dtype[, "last": ask only each sequence's last token, in reverse order])
RUNS = [
    ("llama_gqa6x2_f32", 16, "f32"),
    ("llama_gqa6x2_f32", 16, "f32", "last"),
    ("llama_gqa6x2_f32", 1, "f32"),
    ("llama_gqa6x2_f32", 32, "f16"),
    ("llama_12x4_f16_tied", 32, "f32"),
    ("llama_12x4_f16_tied", 16, "bf16"),
    ("qwen2_4x2_bf16", 16, "f32"),
    ("qwen2_4x2_bf16", 1, "f16"),
    ("qwen3_6x2_hd32_q8_0_tied", 16, "f32"),
    ("qwen3_6x2_hd32_q8_0_tied", 32, "f16"),
    ("llama_8x4_q4_0_wide", 1, "f32"),
    ("llama_8x4_q4_0_wide", 16, "f16"),
    ("qwen3_3x1_hd64_bf16", 32, "f32"),
    ("llama_4x2_q4_k_m", 16, "f32"),
    ("llama_4x2_q4_k_m", 16, "f16", "last"),
    ("qwen2_8x2_q5_k_m", 32, "f32"),
    ("llama_4x4_q6_k_tied", 16, "f32"),
    ("llama_8x2_q2_k_mix", 16, "f32"),
    ("qwen3_4x2_hd64_q3_k_m", 1, "f32"),
    ("llama_4x2_q4_k_s_q5_k", 16, "f32"),
    ("llama_4x2_q5_k_q4_k", 32, "f32"),
    ("llama_6x2_q4_1", 16, "f32"),
    ("llama_6x2_q5_0_q5_1", 16, "bf16"),
    ("llama_6x2_q5_1_f16", 1, "f32"),
]

# Tolerances on max |kvserve - reference| / max |reference row|.  f32 accumulates
# in a different order than float64 (measured <= 5e-7); f16/bf16 caches add the
# odd rounding flip (measured <= 2e-4 / 5e-5).
TOL = {"f32": 2e-5, "f16": 1e-3, "bf16": 4e-3}


def schedule(vocab, seed):
    """Sequences and the steps that feed them: prefill chunks next to decode tokens."""
    rng = np.random.default_rng(seed)
    seqs = {0: rng.integers(0, vocab, 303), 1: rng.integers(0, vocab, 14),
            2: rng.integers(0, vocab, 25), 3: rng.integers(0, vocab, 102)}
    # per step: {seq: (start, end)}
    plan = [
        {0: (0, 37), 1: (0, 9)},
        {1: (9, 10), 0: (37, 150), 2: (0, 1)},
        {2: (1, 21), 0: (150, 300), 1: (10, 11)},
        {3: (0, 100), 1: (11, 12), 0: (300, 301), 2: (21, 22)},
        {0: (301, 302), 3: (100, 101), 2: (22, 23), 1: (12, 13)},
        {2: (23, 25), 3: (101, 102), 0: (302, 303), 1: (13, 14)},
    ]
    return seqs, plan


def run_case(model, bs, kv, last, path, hp, W, seqs, plan, refs):
    spec = {"model": path, "kv_dtype": kv, "block_size": bs, "threads": 2, "shuffle_seed": bs * 7 + len(kv),
            "steps": [{"seqs": [{"id": s, "tokens": [int(t) for t in seqs[s][a:b]], "start_pos": a}
                                for s, (a, b) in step.items()]} for step in plan]}
    where = [(s, p) for step in plan for s, (a, b) in step.items() for p in range(a, b)]
    if last:  # token indices of each sequence's last token in the step, in reverse
        where = []
        for st, step in zip(spec["steps"], plan):
            ends = list(np.cumsum([b - a for a, b in step.values()]) - 1)[::-1]
            st["rows"] = [int(e) for e in ends]
            where += [(s, b - 1) for s, (a, b) in reversed(list(step.items()))]
    tag = f"{model}_bs{bs}_{kv}" + ("_last" if last else "")
    spec_path, out_path = os.path.join(WORK, tag + ".json"), os.path.join(WORK, tag + ".bin")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    r = subprocess.run([DUMP, spec_path, out_path], capture_output=True, timeout=600)
    if r.returncode != 0:
        print(f"FAIL {tag}: forward_dump exited {r.returncode}: {r.stderr.decode(errors='replace')}")
        return False
    info = json.loads(r.stdout)
    V = info["n_vocab"]
    got = np.fromfile(out_path, "<f4").reshape(-1, V).astype(np.float64)
    assert got.shape[0] == len(where) == info["n_rows"], (got.shape, len(where))
    if kv not in refs:
        refs[kv] = {s: forward(hp, W, toks, kv) for s, toks in seqs.items()}
    ref = np.stack([refs[kv][s][p] for s, p in where])
    d = np.abs(got - ref)
    row_rel = (d.max(axis=1) / np.abs(ref).max(axis=1)).max()
    max_abs = d.max()
    el_rel = (d / np.maximum(np.abs(ref), 1e-2 * np.abs(ref).max(axis=1, keepdims=True))).max()
    same_argmax = np.mean(got.argmax(axis=1) == ref.argmax(axis=1))
    ok = row_rel <= TOL[kv] and np.isfinite(got).all()
    print(f"{'ok  ' if ok else 'FAIL'} {tag:40s} rows {len(where):4d} blocks {info['n_blocks']:4d}  "
          f"max abs {max_abs:.2e}  max abs/row max {row_rel:.2e}  max rel {el_rel:.2e}  "
          f"argmax agree {same_argmax:.3f}  (tol {TOL[kv]:.0e})")
    return ok


def self_check():
    """The reader's dequantization on hand-made blocks (ggml's layouts)."""
    d = np.float16(0.5).tobytes()
    q8 = d + bytes((np.arange(32) - 16).astype(np.int8).tobytes())
    assert np.array_equal(dequantize(q8, Q8_0, 32), 0.5 * (np.arange(32) - 16))
    qs = bytes(range(0, 256, 17))[:16]  # bytes 0x00, 0x11, ... : both nibbles j
    want = 0.5 * (np.concatenate([np.arange(16), np.arange(16)]) - 8)
    assert np.array_equal(dequantize(d + qs, Q4_0, 32), want)
    bf = np.array([0x3F80, 0xC000, 0x0000], "<u2").tobytes()  # 1.0, -2.0, 0.0
    assert np.array_equal(dequantize(bf, BF16, 3), [1.0, -2.0, 0.0])
    # RoPE layouts: a head of 4 dims at position 1, base 1 (angle 1 rad for both pairs)
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    c, s = np.cos(1.0), np.sin(1.0)
    assert np.allclose(rope(x, np.array([1.0]), 4, 1.0, False),
                       [[[c - 2 * s, s + 2 * c, 3 * c - 4 * s, 3 * s + 4 * c]]])
    assert np.allclose(rope(x, np.array([1.0]), 4, 1.0, True),
                       [[[c - 3 * s, 2 * c - 4 * s, s + 3 * c, 2 * s + 4 * c]]])


def main():
    os.makedirs(WORK, exist_ok=True)
    self_check()
    ok = True
    cache = {}
    for model, bs, kv, *last in RUNS:
        if model not in cache:
            path = os.path.join(WORK, model + ".gguf")
            cmd = [KVSERVE, "synth", "-o", path, "--seed", str(len(cache) + 11)] + MODELS[model].split()
            r = subprocess.run(cmd, capture_output=True, timeout=300)
            assert r.returncode == 0, r.stderr
            meta, W = read_gguf(path)
            hp = hparams(meta)
            vocab = W["token_embd.weight"].shape[0]
            seqs, plan = schedule(vocab, len(cache) + 5)
            cache[model] = (path, hp, W, seqs, plan, {})
        path, hp, W, seqs, plan, refs = cache[model]
        ok = run_case(model, bs, kv, bool(last), path, hp, W, seqs, plan, refs) and ok
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
