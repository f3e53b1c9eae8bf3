"""kvserve's quantized weight types against a NumPy dequantizer written from
ggml's block layouts (tests/py/ggml_blocks.py).

1. Dequantization, bit for bit: for every type, a GGUF file of raw blocks
   (random bytes; f16 scales that are 0, -0, the largest finite half, the
   smallest subnormal, negative, random; quants and packed scales all zero,
   all ones, alternating bits, random) is dequantized by kvserve
   (tests/tools/dequant_dump.c: core kvs_dtype_to_f32, the CPU backend's
   SIMD path and its scalar twin, rows split at a block boundary) and the
   three must equal NumPy's float32 result exactly.
2. Quantizers: `kvserve synth` draws the same weights whatever the type
   (same seed), so the f32 file is the truth for the quantized ones; every
   type's relative RMS error must stay within its bound (measured values
   printed), and more bits must not be worse.
3. Mixes: `--type q4_k_m` (and the other llama-quantize file types) give
   each tensor the type llama-quantize's rules give it, checked on a
   16-layer shape against a table written here from those rules.
4. Row lengths the block does not divide are rejected with a message.
"""
import os
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import ggml_blocks as gb  # noqa: E402
from test_reference_forward import read_gguf_raw  # noqa: E402

KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
DUMP = os.environ.get("KVS_DEQUANT_DUMP", "build/tests/kvs_dequant_dump")
WORK = os.path.join(os.environ.get("KVS_BUILD_DIR", "build"), "quant_types")

TYPES = [gb.Q8_0, gb.Q4_0, gb.Q4_1, gb.Q5_0, gb.Q5_1, gb.Q2_K, gb.Q3_K, gb.Q4_K, gb.Q5_K, gb.Q6_K]

# f16 bit patterns for scales: 0, -0, max finite, -max, smallest subnormal, largest
# subnormal, smallest normal, 1, -1, 2^-14 * 1.5
HALF_SPECIAL = [0x0000, 0x8000, 0x7BFF, 0xFBFF, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x0600]

# byte offsets of the f16 scale fields in each block
HALF_FIELDS = {gb.Q8_0: [0], gb.Q4_0: [0], gb.Q4_1: [0, 2], gb.Q5_0: [0], gb.Q5_1: [0, 2],
               gb.Q2_K: [80, 82], gb.Q3_K: [108], gb.Q4_K: [0, 2], gb.Q5_K: [0, 2], gb.Q6_K: [208]}


def write_raw_gguf(path, tensors):
    """tensors: [(name, type, ne0, ne1, raw bytes)] -> a GGUF v3 file (alignment 32)."""
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 0)
    infos, off = b"", 0
    for name, t, ne0, ne1, raw in tensors:
        infos += s(name) + struct.pack("<IQQIQ", 2, ne0, ne1, t, off)
        off = (off + len(raw) + 31) // 32 * 32
    data = head + infos
    data += b"\0" * ((-len(data)) % 32)
    for _, _, _, _, raw in tensors:
        data += raw + b"\0" * ((-len(raw)) % 32)
    with open(path, "wb") as f:
        f.write(data)


def make_blocks(t, rng):
    """Raw blocks of type t covering the special cases, then random ones."""
    be, bb = gb.BLOCK[t]
    patterns = [0x00, 0xFF, 0x55, 0xAA]
    blocks = []
    for p in patterns:                    # constant quant/scale bytes with each special half
        for h in HALF_SPECIAL:
            b = bytearray([p]) * bb
            for o in HALF_FIELDS[t]:
                struct.pack_into("<H", b, o, h)
            blocks.append(bytes(b))
    for i in range(160):                  # random bytes, random or special halves
        b = bytearray(rng.integers(0, 256, bb, dtype=np.uint8).tobytes())
        for o in HALF_FIELDS[t]:
            if i % 3 == 0:
                h = HALF_SPECIAL[rng.integers(len(HALF_SPECIAL))]
            else:  # a finite half of random sign and magnitude
                h = int(rng.integers(0, 0x7C00)) | (0x8000 if rng.integers(2) else 0)
            struct.pack_into("<H", b, o, h)
        blocks.append(bytes(b))
    while len(blocks) % 4:
        blocks.append(blocks[-1])
    return b"".join(blocks), len(blocks) * be


def check_dequant():
    rng = np.random.default_rng(7)
    tensors = []
    for t in TYPES:
        raw, n = make_blocks(t, rng)
        be = gb.BLOCK[t][0]
        tensors.append((f"t_{gb.NAMES[t]}", t, 4 * be, n // (4 * be), raw))
    path, out = os.path.join(WORK, "blocks.gguf"), os.path.join(WORK, "blocks.bin")
    write_raw_gguf(path, tensors)
    r = subprocess.run([DUMP, path, out], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    got = np.fromfile(out, "<u4")
    pos, ok = 0, True
    for name, t, ne0, ne1, raw in tensors:
        n = ne0 * ne1
        want = gb.dequantize(raw, t, n).view("<u4")
        assert np.isfinite(want.view("<f4")).all()
        for path_name in ("kvs_dtype_to_f32", "cpu simd", "cpu scalar"):
            g = got[pos:pos + n]
            pos += n
            bad = np.nonzero(g != want)[0]
            if len(bad):
                i = bad[0]
                print(f"FAIL dequant {gb.NAMES[t]:5s} {path_name}: {len(bad)} of {n} differ, first at {i}: "
                      f"{g[i:i+1].view('<f4')[0]!r} vs numpy {want[i:i+1].view('<f4')[0]!r}")
                ok = False
        print(f"{'ok  ' if ok else 'FAIL'} dequant {gb.NAMES[t]:5s} {n // gb.BLOCK[t][0]:4d} blocks bit-exact "
              f"(3 paths)")
    assert pos == len(got)
    return ok


# relative RMS error bounds of kvserve's quantizers on N(0, s^2) weights (measured values printed)
RMSE_BOUND = {"q8_0": 0.006, "q6_k": 0.02, "q5_1": 0.042, "q5_0": 0.047, "q5_k": 0.04, "q4_1": 0.085,
              "q4_0": 0.094, "q4_k": 0.078, "q3_k": 0.16, "q2_k": 0.29}  # about 1.1x the values measured


def synth(path, flags):
    r = subprocess.run([KVSERVE, "synth", "-o", path, "--seed", "3"] + flags.split(), capture_output=True,
                       timeout=300)
    return r


def check_quantizers():
    shape = "--dim 256 --heads 4 --kv-heads 2 --hidden 512 --layers 2 --vocab 300"
    base = os.path.join(WORK, "w_f32.gguf")
    assert synth(base, shape + " --type f32").returncode == 0
    _, ref = read_gguf_raw(base)
    ok, errs = True, {}
    for name in RMSE_BOUND:
        path = os.path.join(WORK, f"w_{name}.gguf")
        r = synth(path, shape + f" --type {name}")
        assert r.returncode == 0, r.stderr
        _, q = read_gguf_raw(path)
        num = den = 0.0
        for tn, (t, ne, raw) in q.items():
            if len(ne) < 2 or ne[1] == 1:
                continue
            assert gb.NAMES[t].lower() == name, (tn, t)
            x = gb.dequantize(ref[tn][2], gb.F32, int(np.prod(ne))).astype(np.float64)
            y = gb.dequantize(raw, t, int(np.prod(ne))).astype(np.float64)
            num += np.sum((x - y) ** 2)
            den += np.sum(x ** 2)
        errs[name] = e = np.sqrt(num / den)
        good = e <= RMSE_BOUND[name]
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} quantizer {name:5s} relative rms error {e:.4f} (bound {RMSE_BOUND[name]})")
    for lo, hi in [("q2_k", "q3_k"), ("q3_k", "q4_k"), ("q4_k", "q5_k"), ("q5_k", "q6_k"), ("q6_k", "q8_0"),
                   ("q4_0", "q4_1"), ("q4_1", "q5_1"), ("q5_0", "q5_1")]:
        if not errs[hi] <= errs[lo]:
            print(f"FAIL quantizer {hi} ({errs[hi]:.4f}) is worse than {lo} ({errs[lo]:.4f})")
            ok = False
    return ok


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_mix(mix, name, layer, n, gqa):
    """llama-quantize's rules (llama-quant.cpp, b4747) for a dense llama, all rows divisible by 256."""
    base = {"q2_k": "q2_K", "q3_k_m": "q3_K", "q4_k_s": "q4_K", "q4_k_m": "q4_K", "q5_k_s": "q5_K",
            "q5_k_m": "q5_K", "q6_k": "q6_K", "q4_0": "q4_0", "q8_0": "q8_0"}[mix]
    if name == "output.weight":
        return "q8_0" if base == "q8_0" else "q6_K"
    if name == "token_embd.weight":
        return base
    if name.endswith("attn_v.weight"):
        if mix == "q2_k":
            return "q4_K" if gqa >= 4 else "q3_K"
        if mix == "q3_k_m":
            return "q5_K" if layer < 2 else "q4_K"
        if mix in ("q4_k_m", "q5_k_m") and more_bits(layer, n):
            return "q6_K"
        if mix == "q4_k_s" and layer < 4:
            return "q5_K"
    if name.endswith("ffn_down.weight"):
        if mix == "q2_k":
            return "q3_K"
        if mix == "q3_k_m":
            return "q5_K" if layer < n // 16 else "q4_K"
        if mix in ("q4_k_m", "q5_k_m") and more_bits(layer, n):
            return "q6_K"
        if mix == "q4_k_s" and layer < n // 8:
            return "q5_K"
    if name.endswith("attn_output.weight"):
        if mix == "q2_k":
            return "q3_K"
        if mix == "q3_k_m":
            return "q4_K"
    return base


def check_mixes():
    ok = True
    shape = "--dim 256 --heads 8 --kv-heads 2 --hidden 256 --layers 16 --vocab 300"
    for mix in ["q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q3_k_m", "q2_k", "q6_k", "q4_0", "q8_0"]:
        path = os.path.join(WORK, f"mix_{mix}.gguf")
        flag = f"--type {mix}" if mix.endswith(("_m", "_s")) else f"--ftype {mix}"
        r = synth(path, shape + " " + flag)
        assert r.returncode == 0, r.stderr
        meta, ts = read_gguf_raw(path)
        bad = []
        for tn, (t, ne, _) in ts.items():
            layer = int(tn.split(".")[1]) if tn.startswith("blk.") else 0
            want = "f32" if len(ne) < 2 or ne[1] == 1 else expected_mix(mix, tn, layer, 16, 4)
            if gb.NAMES[t] != want:
                bad.append(f"{tn}: {gb.NAMES[t]} (llama-quantize: {want})")
        good = not bad and "general.file_type" in meta
        ok &= good
        counts = {}
        for t, _, _ in ts.values():
            counts[gb.NAMES[t]] = counts.get(gb.NAMES[t], 0) + 1
        print(f"{'ok  ' if good else 'FAIL'} mix {mix:7s} {counts} " + "; ".join(bad[:4]))
    # rows not divisible by 256: llama-quantize's fallbacks (q4_K -> q5_0, q6_K -> q8_0, then f16)
    path = os.path.join(WORK, "mix_fallback.gguf")
    r = synth(path, "--dim 64 --heads 4 --kv-heads 2 --hidden 172 --layers 8 --vocab 300 --type q4_k_m")
    assert r.returncode == 0, r.stderr
    _, ts = read_gguf_raw(path)
    want = {"token_embd.weight": "q5_0", "output.weight": "q8_0", "blk.0.attn_q.weight": "q5_0",
            "blk.0.attn_v.weight": "q8_0", "blk.1.attn_v.weight": "q5_0", "blk.0.ffn_down.weight": "f16",
            "blk.0.ffn_up.weight": "q5_0"}
    got = {k: gb.NAMES[ts[k][0]] for k in want}
    good = got == want
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} mix fallbacks for rows of 64 and 172: {got}")
    return ok


def check_rejects():
    ok = True
    for flags, what in [("--dim 64 --hidden 256 --type q4_k", "q4_K"), ("--dim 64 --hidden 48 --type q5_1", "q5_1"),
                        ("--dim 128 --hidden 256 --type q6_k", "q6_K")]:
        r = synth(os.path.join(WORK, "reject.gguf"), "--heads 4 --kv-heads 2 --layers 1 --vocab 300 " + flags)
        msg = r.stderr.decode()
        good = r.returncode != 0 and what in msg and "multiple" in msg
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} rejects {flags}: {msg.strip()[:120]}")
    # a hand-made file whose q4_K rows are 128 long must not load
    path = os.path.join(WORK, "bad_rows.gguf")
    write_raw_gguf(path, [("t", gb.Q4_K, 128, 2, bytes(144))])
    r = subprocess.run([DUMP, path, os.path.join(WORK, "bad.bin")], capture_output=True, timeout=60)
    msg = r.stderr.decode()
    good = r.returncode != 0 and "256" in msg
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} a q4_K tensor with rows of 128 is rejected: {msg.strip()[:120]}")
    return ok


def main():
    os.makedirs(WORK, exist_ok=True)
    ok = check_dequant()
    ok = check_quantizers() and ok
    ok = check_mixes() and ok
    ok = check_rejects() and ok
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
