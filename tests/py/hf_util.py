"""Hugging Face checkpoints for tests: a safetensors writer and reader, random-weight
model directories with real config.json keys, and a NumPy reference forward pass
written from each architecture's published equations (the transformers modeling
files' math, in float64 on the stored weights).

Reference, per family (h = hidden state, T tokens, positions 0..T-1):
  x = embed[tokens]                                   (Gemma 2: * sqrt(hidden_size) in the config's dtype)
  per layer l:
    a = norm(x, input_layernorm)                      norm(v, w) = v / sqrt(mean(v^2) + eps) * w
                                                      (Gemma 2: * (1 + w))
    q, k, v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv) (Qwen2 biases; Phi-3: one qkv_proj, split)
    q, k = norm(q_head, q_norm), norm(k_head, k_norm)  (Qwen3)
    q, k = rotate_half RoPE on the first rot dims:     x*cos + rotate_half(x)*sin, cos/sin * mscale (yarn)
           inv_freq from rope_scaling: default, linear (/factor), dynamic (vLLM: base for
           max_pos * factor), llama3 (per-wavelength), yarn (ramp, mscale)
    s = q k^T * scale                                  scale = head_dim^-0.5 (Gemma 2: query_pre_attn_scalar^-0.5)
    s = cap * tanh(s / cap)                            (Gemma 2 attn_logit_softcapping)
    mask: key j visible to query i iff j <= i and (no window or i - j < sliding_window)
          windowed layers: Mistral/Phi-3 all, Gemma 2 even layers, Qwen2 layers >= max_window_layers
    o = softmax(s) v Wo^T                              (Gemma 2: o = norm(o, post_attention_layernorm))
    x = x + o
    a = norm(x, post_attention_layernorm)              (Gemma 2: pre_feedforward_layernorm)
    m = (act(a Wg^T) * (a Wu^T)) Wd^T                  act: silu; Gemma 2 gelu (tanh); Phi-3 gate_up split
    x = x + m                                          (Gemma 2: m = norm(m, post_feedforward_layernorm))
  logits = norm(x, model.norm) (lm_head or embed)^T    (Gemma 2: final_logit_softcapping)
"""
import json
import math
import os
import struct

import numpy as np

# ---------------------------------------------------------------- safetensors

ST_DT = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (None, 2), "I64": ("<i8", 8), "I32": ("<i4", 4)}


def to_bf16_bits(a):
    """float32 -> bfloat16 bits, round to nearest even."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def encode(a, dtype):
    """Bytes of array a in a safetensors dtype, and the float64 values they hold."""
    if dtype == "BF16":
        bits = to_bf16_bits(a)
        return bits.tobytes(), from_bf16_bits(bits).astype(np.float64)
    if dtype == "F16":
        h = np.asarray(a, np.float16)
        return h.tobytes(), h.astype(np.float64)
    if dtype == "F32":
        f = np.asarray(a, np.float32)
        return f.tobytes(), f.astype(np.float64)
    if dtype == "I64":
        i = np.asarray(a, np.int64)
        return i.tobytes(), i.astype(np.float64)
    raise ValueError(dtype)


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js)
        for *_, data in tensors:
            f.write(data)


def read_safetensors(path):
    """{name: float64 array} (F32/F16/BF16)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack_from("<Q", data)[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        raw = data[8 + n + b: 8 + n + en]
        if e["dtype"] == "BF16":
            v = from_bf16_bits(np.frombuffer(raw, "<u2")).astype(np.float64)
        else:
            v = np.frombuffer(raw, ST_DT[e["dtype"]][0]).astype(np.float64)
        out[name] = v.reshape(e["shape"])
    return out


def read_dir_weights(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        W = {}
        for shard in sorted(set(json.load(open(idx))["weight_map"].values())):
            W.update(read_safetensors(os.path.join(d, shard)))
        return W
    return read_safetensors(os.path.join(d, "model.safetensors"))


# ---------------------------------------------------------------- random checkpoints

def tensor_shapes(cfg):
    """HF tensor names and shapes of a config."""
    arch = cfg["architectures"][0]
    D, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or D // H
    F, V = cfg["intermediate_size"], cfg["vocab_size"]
    gemma, phi3 = arch == "Gemma2ForCausalLM", arch == "Phi3ForCausalLM"
    tied = cfg.get("tie_word_embeddings", gemma)
    out = [("model.embed_tokens.weight", (V, D), "w"), ("model.norm.weight", (D,), "n")]
    if not tied:
        out.append(("lm_head.weight", (V, D), "w"))
    for l in range(L):
        p = f"model.layers.{l}."
        out.append((p + "input_layernorm.weight", (D,), "n"))
        if phi3:
            out.append((p + "self_attn.qkv_proj.weight", ((H + 2 * KV) * hd, D), "w"))
        else:
            out += [(p + "self_attn.q_proj.weight", (H * hd, D), "w"), (p + "self_attn.k_proj.weight", (KV * hd, D), "w"),
                    (p + "self_attn.v_proj.weight", (KV * hd, D), "w")]
        if arch == "Qwen2ForCausalLM":
            out += [(p + "self_attn.q_proj.bias", (H * hd,), "b"), (p + "self_attn.k_proj.bias", (KV * hd,), "b"),
                    (p + "self_attn.v_proj.bias", (KV * hd,), "b")]
        if arch == "Qwen3ForCausalLM":
            out += [(p + "self_attn.q_norm.weight", (hd,), "n"), (p + "self_attn.k_norm.weight", (hd,), "n")]
        out.append((p + "self_attn.o_proj.weight", (D, H * hd), "w"))
        out.append((p + "post_attention_layernorm.weight", (D,), "n"))
        if gemma:
            out += [(p + "pre_feedforward_layernorm.weight", (D,), "n"), (p + "post_feedforward_layernorm.weight", (D,), "n")]
        if phi3:
            out.append((p + "mlp.gate_up_proj.weight", (2 * F, D), "w"))
        else:
            out += [(p + "mlp.gate_proj.weight", (F, D), "w"), (p + "mlp.up_proj.weight", (F, D), "w")]
        out.append((p + "mlp.down_proj.weight", (D, F), "w"))
    return out


def make_dir(d, cfg, dtype="BF16", shards=1, seed=0, extra=None, gen=None, tok_cfg=None):
    """Write a random-weight checkpoint; return {name: float64 array as stored}."""
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    rng = np.random.default_rng(seed)
    gemma = cfg["architectures"][0] == "Gemma2ForCausalLM"
    tensors, W = [], {}
    for name, shape, kind in tensor_shapes(cfg):
        if kind == "w":
            a = rng.normal(0, 1.0 / math.sqrt(shape[-1]), shape)
            if name == "model.embed_tokens.weight" and gemma:
                a *= 1.0 / math.sqrt(cfg["hidden_size"])  # Gemma scales the embeddings back up
        elif kind == "n":  # Gemma stores w - 1
            a = rng.normal(0, 0.1, shape) + (0.0 if gemma else 1.0)
        else:
            a = rng.normal(0, 0.1, shape)
        data, vals = encode(a, dtype)
        tensors.append((name, dtype, shape, data))
        W[name] = vals.reshape(shape)
    for name, dt, shape, data in (extra or []):
        tensors.append((name, dt, shape, data))
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, {"format": "pt"})
    else:
        per = (len(tensors) + shards - 1) // shards
        wm, total = {}, 0
        for i in range(shards):
            fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = tensors[i * per:(i + 1) * per]
            write_safetensors(os.path.join(d, fn), part, {"format": "pt"})
            for t in part:
                wm[t[0]] = fn
                total += len(t[3])
        json.dump({"metadata": {"total_size": total}, "weight_map": wm},
                  open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    write_tokenizer(d, cfg["vocab_size"], tok_cfg)
    if gen is not None:
        json.dump(gen, open(os.path.join(d, "generation_config.json"), "w"), indent=2)
    return W


def write_tokenizer(d, vocab_size, tok_cfg=None):
    """A byte-level BPE tokenizer.json of exactly vocab_size tokens (256 byte
    tokens, merges of letter pairs, then <s> and </s> as added tokens)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_char = {b: chr(c) for b, c in zip(bs, cs)}
    vocab = {byte_char[b]: i for i, b in enumerate(range(256))}
    merges = []
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    for a in letters:
        for b in letters:
            if len(vocab) >= vocab_size - 2:
                break
            if a + b not in vocab:
                merges.append(f"{a} {b}")
                vocab[a + b] = len(vocab)
    while len(vocab) < vocab_size - 2:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<s>"], vocab["</s>"] = bos, eos
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, c in ((bos, "<s>"), (eos, "</s>"))],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False)
    tc = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
          "chat_template": "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"}
    tc.update(tok_cfg or {})
    json.dump(tc, open(os.path.join(d, "tokenizer_config.json"), "w"), indent=2)
    return bos, eos


# ---------------------------------------------------------------- the reference

def rope_inv_freq(cfg, rot):
    """inv_freq[rot/2] and the cos/sin scale, from the config (transformers' formulas)."""
    rp = cfg.get("rope_parameters") or {}
    base = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    rs = cfg.get("rope_scaling") or rp
    kind = rs.get("rope_type", rs.get("type", "default")) if rs else "default"
    i = np.arange(0, rot, 2, dtype=np.float64)
    if kind == "dynamic":  # vLLM's static NTK base for max_position_embeddings * factor
        f = rs["factor"]
        base = base * (f * f - (f - 1)) ** (rot / (rot - 2))
    inv = 1.0 / base ** (i / rot)
    mscale = 1.0
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":
        f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        out = np.where(wl > old / lo, inv / f, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / f + smooth * out
        medium = ~(wl < old / hi) & ~(wl > old / lo)
        inv = np.where(medium, smoothed, out)
    elif kind == "yarn":
        f = rs["factor"]
        old = rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def corr(r):
            return rot * math.log(old / (r * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = max(math.floor(corr(fast)), 0), min(math.ceil(corr(slow)), rot - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(rot // 2) - lo) / (hi - lo), 0, 1)
        extra = 1 - ramp
        inv = inv / f * (1 - extra) + inv * extra
        mscale = rs.get("attention_factor") or (0.1 * math.log(f) + 1.0 if f > 1 else 1.0)
    return inv, mscale


def forward(cfg, W, tokens):
    """Logits [T, vocab] for one sequence at positions 0..T-1."""
    arch = cfg["architectures"][0]
    gemma, phi3 = arch == "Gemma2ForCausalLM", arch == "Phi3ForCausalLM"
    D, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads", H)
    hd = cfg.get("head_dim") or D // H
    F = cfg["intermediate_size"]
    eps = cfg.get("rms_norm_eps", 1e-6)
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))
    rot -= rot % 2
    T = len(tokens)
    tied = cfg.get("tie_word_embeddings", gemma)

    def norm(v, w):
        v = v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps)
        return v * (1.0 + w) if gemma else v * w

    inv, msc = rope_inv_freq(cfg, rot)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :] * msc, np.sin(ang)[:, None, :] * msc

    def rope(x):  # x [T, heads, hd]; rotate_half on the first rot dims
        x = x.copy()
        half = rot // 2
        a, b = x[..., :half].copy(), x[..., half:rot].copy()
        x[..., :half] = a * cos - b * sin
        x[..., half:rot] = b * cos + a * sin
        return x

    scale = cfg.get("query_pre_attn_scalar", 256) ** -0.5 if gemma else hd ** -0.5
    acap = cfg.get("attn_logit_softcapping", 50.0) if gemma else None
    fcap = cfg.get("final_logit_softcapping", 30.0) if gemma else None
    window = cfg.get("sliding_window")
    if arch == "LlamaForCausalLM" or (arch.startswith("Qwen") and not cfg.get("use_sliding_window")):
        window = None

    def windowed(l):
        if window is None:
            return False
        if gemma:
            return l % 2 == 0
        if arch.startswith("Qwen"):
            return l >= cfg.get("max_window_layers", L)
        return True

    x = W["model.embed_tokens.weight"][tokens]
    if gemma:  # the normalizer is a tensor of the model's dtype
        dt = cfg.get("dtype", cfg.get("torch_dtype"))
        nrm = np.float64(math.sqrt(D))
        if dt == "bfloat16":
            nrm = from_bf16_bits(to_bf16_bits(np.array([nrm], np.float32)))[0]
        elif dt == "float16":
            nrm = np.float64(np.float16(nrm))
        x = x * float(nrm)
    i_idx, j_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    for l in range(L):
        g = lambda n: W[f"model.layers.{l}.{n}"]
        a = norm(x, g("input_layernorm.weight"))
        if phi3:
            qkv = a @ g("self_attn.qkv_proj.weight").T
            q, k, v = qkv[:, :H * hd], qkv[:, H * hd:(H + KV) * hd], qkv[:, (H + KV) * hd:]
        else:
            q, k, v = a @ g("self_attn.q_proj.weight").T, a @ g("self_attn.k_proj.weight").T, a @ g("self_attn.v_proj.weight").T
        if arch == "Qwen2ForCausalLM":
            q, k, v = q + g("self_attn.q_proj.bias"), k + g("self_attn.k_proj.bias"), v + g("self_attn.v_proj.bias")
        q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
        if arch == "Qwen3ForCausalLM":
            q, k = norm(q, g("self_attn.q_norm.weight")), norm(k, g("self_attn.k_norm.weight"))
        q, k = rope(q), rope(k)
        visible = j_idx <= i_idx
        if windowed(l):
            visible &= (i_idx - j_idx) < window
        out = np.empty((T, H, hd))
        for h in range(H):
            kh = h // (H // KV)
            s = q[:, h] @ k[:, kh].T * scale
            if acap:
                s = acap * np.tanh(s / acap)
            s = np.where(visible, s, -np.inf)
            p = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, h] = (p / p.sum(axis=1, keepdims=True)) @ v[:, kh]
        o = out.reshape(T, H * hd) @ g("self_attn.o_proj.weight").T
        if gemma:
            o = norm(o, g("post_attention_layernorm.weight"))
            x = x + o
            a = norm(x, g("pre_feedforward_layernorm.weight"))
        else:
            x = x + o
            a = norm(x, g("post_attention_layernorm.weight"))
        if phi3:
            gu = a @ g("mlp.gate_up_proj.weight").T
            gate, up = gu[:, :F], gu[:, F:]
        else:
            gate, up = a @ g("mlp.gate_proj.weight").T, a @ g("mlp.up_proj.weight").T
        if gemma:
            act = 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
        else:
            act = gate / (1 + np.exp(-gate))
        m = (act * up) @ g("mlp.down_proj.weight").T
        if gemma:
            m = norm(m, g("post_feedforward_layernorm.weight"))
        x = x + m
    x = norm(x, W["model.norm.weight"])
    logits = x @ (W["model.embed_tokens.weight"] if tied else W["lm_head.weight"]).T
    if fcap:
        logits = fcap * np.tanh(logits / fcap)
    return logits


def greedy(cfg, W, prompt, n):
    """The reference's greedy continuation (n tokens) and the logits of every position."""
    toks = list(prompt)
    for _ in range(n):
        toks.append(int(forward(cfg, W, toks)[-1].argmax()))
    return toks, forward(cfg, W, toks)
