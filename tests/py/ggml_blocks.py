"""ggml's block-quantized weight types, dequantized with NumPy from the
format's definition (the block layouts of ggml-common.h, as documented in
kvserve's src/core/dtype.h), for the tests.

dequantize(raw, type, n) returns float32 values computed with the float32
operations in the format's order (ggml dequantizes the same way), so a
correct implementation agrees bit for bit:

  Q8_0   x = d * q
  Q4_0   x = (nib - 8) * d            Q4_1  x = nib * d + m
  Q5_0   x = (q5 - 16) * d            Q5_1  x = q5 * d + m
  Q4_K   x = (d * sc) * q - (dmin * m)        (8 sub-blocks of 32, 6-bit sc/m)
  Q5_K   as Q4_K with a 5th bit
  Q6_K   x = (d * sc) * (q6 - 32)             (16 sub-blocks of 16, int8 sc)
  Q2_K   x = (d * (s & 15)) * q2 - (dmin * (s >> 4))
  Q3_K   x = (d * (sc6 - 32)) * (q2 | hbit << 2 - 4)
"""
import numpy as np

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16 = 10, 11, 12, 13, 14, 30

# (elements per block, bytes per block)
BLOCK = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q8_0: (32, 34), Q4_0: (32, 18), Q4_1: (32, 20),
         Q5_0: (32, 22), Q5_1: (32, 24), Q2_K: (256, 84), Q3_K: (256, 110), Q4_K: (256, 144),
         Q5_K: (256, 176), Q6_K: (256, 210)}
NAMES = {F32: "f32", F16: "f16", BF16: "bf16", Q8_0: "q8_0", Q4_0: "q4_0", Q4_1: "q4_1", Q5_0: "q5_0",
         Q5_1: "q5_1", Q2_K: "q2_K", Q3_K: "q3_K", Q4_K: "q4_K", Q5_K: "q5_K", Q6_K: "q6_K"}

f32 = np.float32


def _h(b, name):
    return b[name].astype(np.float32)


def _blocks(raw, fields):
    return np.frombuffer(raw, np.dtype(fields))


def _nibbles32(qs):
    """[nb, 16] bytes -> [nb, 32]: element j < 16 the low nibble of qs[j], j + 16 the high."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def _fifth_bits(qh):
    """[nb, 4] bytes (a little-endian u32) -> [nb, 32]: bit j is element j's 5th bit."""
    w = qh.astype(np.uint32)
    word = w[:, 0] | w[:, 1] << 8 | w[:, 2] << 16 | w[:, 3] << 24
    return ((word[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32)


def _scale_min_k4(s):
    """[nb, 12] packed bytes -> (sc [nb, 8], m [nb, 8]), 6 bits each."""
    s = s.astype(np.int32)
    sc = np.empty((s.shape[0], 8), np.int32)
    m = np.empty((s.shape[0], 8), np.int32)
    for j in range(8):
        if j < 4:
            sc[:, j], m[:, j] = s[:, j] & 63, s[:, j + 4] & 63
        else:
            sc[:, j] = (s[:, j + 4] & 15) | ((s[:, j - 4] >> 6) << 4)
            m[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, m


def _q3k_scales(s):
    """[nb, 12] packed bytes -> [nb, 16] signed 6-bit scales (value - 32)."""
    s = s.astype(np.int32)
    out = np.empty((s.shape[0], 16), np.int32)
    for j in range(16):
        lo = s[:, j] & 15 if j < 8 else s[:, j - 8] >> 4
        hi = (s[:, 8 + j % 4] >> (2 * (j // 4))) & 3
        out[:, j] = (lo | hi << 4) - 32
    return out


def _lanes16(nb):
    """Element e of a 256-block as (half h, quarter c, lane l): e = 128 h + 32 c + l."""
    e = np.arange(256)
    return e // 128, (e // 32) % 4, e % 32


def dequantize(raw, t, n):
    """float32 array of the n values of type t stored in raw (bit-exact)."""
    if t == F32:
        return np.frombuffer(raw, "<f4").copy()
    if t == F16:
        return np.frombuffer(raw, "<f2").astype(np.float32)
    if t == BF16:
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view("<f4")
    if t == Q8_0:
        b = _blocks(raw, [("d", "<f2"), ("q", "i1", 32)])
        return (_h(b, "d")[:, None] * b["q"].astype(np.float32)).reshape(n)
    if t == Q4_0:
        b = _blocks(raw, [("d", "<f2"), ("qs", "u1", 16)])
        return ((_nibbles32(b["qs"]) - 8).astype(np.float32) * _h(b, "d")[:, None]).reshape(n)
    if t == Q4_1:
        b = _blocks(raw, [("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])
        return (_nibbles32(b["qs"]).astype(np.float32) * _h(b, "d")[:, None] + _h(b, "m")[:, None]).reshape(n)
    if t == Q5_0:
        b = _blocks(raw, [("d", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)])
        q = _nibbles32(b["qs"]) | _fifth_bits(b["qh"]) << 4
        return ((q - 16).astype(np.float32) * _h(b, "d")[:, None]).reshape(n)
    if t == Q5_1:
        b = _blocks(raw, [("d", "<f2"), ("m", "<f2"), ("qh", "u1", 4), ("qs", "u1", 16)])
        q = _nibbles32(b["qs"]) | _fifth_bits(b["qh"]) << 4
        return (q.astype(np.float32) * _h(b, "d")[:, None] + _h(b, "m")[:, None]).reshape(n)
    if t in (Q4_K, Q5_K):
        fields = [("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12)]
        if t == Q5_K:
            fields.append(("qh", "u1", 32))
        b = _blocks(raw, fields + [("qs", "u1", 128)])
        sc, m = _scale_min_k4(b["scales"])
        e = np.arange(256)
        j, l = e // 32, e % 32                      # sub-block, lane
        qs = b["qs"].astype(np.int32)
        q = (qs[:, 32 * (j // 2) + l] >> (4 * (j % 2))) & 15
        if t == Q5_K:
            q = q | ((b["qh"].astype(np.int32)[:, l] >> j) & 1) << 4
        ds = _h(b, "d")[:, None] * sc[:, j].astype(np.float32)
        ms = _h(b, "dmin")[:, None] * m[:, j].astype(np.float32)
        return (ds * q.astype(np.float32) - ms).reshape(n)
    if t == Q6_K:
        b = _blocks(raw, [("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")])
        h, c, l = _lanes16(len(b))
        ql = b["ql"].astype(np.int32)[:, 64 * h + 32 * (c & 1) + l] >> (4 * (c >> 1)) & 15
        qh = (b["qh"].astype(np.int32)[:, 32 * h + l] >> (2 * c)) & 3
        q = (ql | qh << 4) - 32
        s = b["scales"].astype(np.float32)[:, 8 * h + 2 * c + l // 16]
        return ((_h(b, "d")[:, None] * s) * q.astype(np.float32)).reshape(n)
    if t == Q2_K:
        b = _blocks(raw, [("scales", "u1", 16), ("qs", "u1", 64), ("d", "<f2"), ("dmin", "<f2")])
        h, c, l = _lanes16(len(b))
        q = (b["qs"].astype(np.int32)[:, 32 * h + l] >> (2 * c)) & 3
        s = b["scales"].astype(np.int32)[:, 8 * h + 2 * c + l // 16]
        dl = _h(b, "d")[:, None] * (s & 15).astype(np.float32)
        ml = _h(b, "dmin")[:, None] * (s >> 4).astype(np.float32)
        return (dl * q.astype(np.float32) - ml).reshape(n)
    if t == Q3_K:
        b = _blocks(raw, [("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<f2")])
        h, c, l = _lanes16(len(b))
        q = (b["qs"].astype(np.int32)[:, 32 * h + l] >> (2 * c)) & 3
        hb = (b["hmask"].astype(np.int32)[:, l] >> (4 * h + c)) & 1
        q = q - np.where(hb == 1, 0, 4)
        s = _q3k_scales(b["scales"])[:, 8 * h + 2 * c + l // 16]
        return ((_h(b, "d")[:, None] * s.astype(np.float32)) * q.astype(np.float32)).reshape(n)
    raise ValueError(f"type {t}")


def nbytes(t, n):
    be, bb = BLOCK[t]
    assert n % be == 0, (t, n)
    return n // be * bb
