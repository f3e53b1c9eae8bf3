#!/usr/bin/python3
"""The fixed-buffer JSON writer (src/core/json_out.h) against Python's json
module and jansson.

tests/tools/json_out_main.c writes each case with the writer (and into
buffers too small for it: it must flag the overflow, keep the prefix and
write nothing past the buffer) and with jansson's json_dumps.  Here:

  * strings: random bytes, ASCII with quotes, backslashes and every
    control character, random Unicode (BMP, astral, U+2028, DEL, NUL) and
    broken UTF-8 (truncated, overlong, surrogates, past U+10FFFF).  The
    writer must call exactly the strings Python's strict decoder accepts
    valid, json.loads must give back the decoded text, and the text must
    be jansson's byte for byte; the lossy form must read back as the
    bytes with each byte that starts no valid sequence as U+FFFD (Python's
    surrogateescape marks exactly those bytes);
  * doubles: random bit patterns and edge values; json.loads must give
    back the same double (bit for bit, -0.0 included), always as a float,
    the text must be jansson's, and NaN / infinities are null;
  * integers: the 64-bit range;
  * documents: random nested objects and arrays written back identically
    to jansson (commas, nesting, key order)."""
import json
import math
import os
import random
import struct
import subprocess
import sys

TOOL = os.environ.get("KVS_JSON_OUT", "")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def rand_bytes(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
    if kind == 1:
        return "".join(rng.choice('ab"\\/ \x7f' + "".join(map(chr, range(32))))
                       for _ in range(rng.randrange(0, 30))).encode()
    if kind == 2:
        cps = []
        for _ in range(rng.randrange(0, 20)):
            r = rng.randrange(5)
            cp = (rng.randrange(0x80) if r == 0 else rng.randrange(0x80, 0x800) if r == 1 else
                  rng.choice([0x2028, 0x2029, 0xFEFF, 0xFFFD, 0xFFFF, 0, 0x7F]) if r == 2 else
                  rng.randrange(0x10000, 0x110000) if r == 3 else rng.randrange(0x800, 0x10000))
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0x41
            cps.append(chr(cp))
        return "".join(cps).encode()
    broken = [b"\xe2\x82", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf",
              b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xbf", b"\xff",
              b"\xf0\x9f\x98", b"\xe2\x82\x41", b"\xf0\x80\x80\x80", b"\xef\xbf\xbd"]
    parts = [rng.choice(broken) if rng.random() < 0.5 else "é€😀a\n".encode()[rng.randrange(0, 4):]
             for _ in range(rng.randrange(1, 6))]
    return b"".join(parts)


def lossy_reference(b):
    s = b.decode("utf-8", "surrogateescape")
    return "".join("\ufffd" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in s)


def rand_double(rng):
    r = rng.randrange(4)
    if r == 0:
        return struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
    if r == 1:
        return rng.choice([0.0, -0.0, 1.0, -1.0, 0.1, 1e20, 1e-5, 1e21, 1e16, 1e17, 123456789012345678.0,
                           5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -9999.0, 0.5, 100.0,
                           float("inf"), float("-inf"), float("nan")])
    if r == 2:
        return float(struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0])  # float logprobs
    return rng.uniform(-30, 0)


def rand_doc(rng, depth=0):
    r = rng.randrange(8 if depth < 4 else 5)
    if r == 0:
        return rng.randrange(-2**63, 2**63)
    if r == 1:
        d = rand_double(rng)
        return d if math.isfinite(d) else 0.25
    if r == 2:
        return rand_bytes(rng).decode("utf-8", "replace")
    if r == 3:
        return rng.choice([True, False, None])
    if r == 4:
        return ""
    if r == 5:
        return [rand_doc(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rand_bytes(rng).decode("utf-8", "replace").replace("\0", "") + str(k): rand_doc(rng, depth + 1)  # jansson: no NUL in keys
            for k in range(rng.randrange(0, 5))}


def main():
    if not TOOL or not os.path.exists(TOOL):
        sys.exit("FAIL: KVS_JSON_OUT (the driver) is not built")
    rng = random.Random(20261203)
    strings = [rand_bytes(rng) for _ in range(3000)] + [bytes([c]) for c in range(256)] + [b""]
    doubles = [rand_double(rng) for _ in range(3000)]
    ints = [0, 1, -1, 2**63 - 1, -2**63] + [rng.randrange(-2**63, 2**63) for _ in range(300)]
    docs = [rand_doc(rng) for _ in range(400)]
    lines = (["s " + b.hex() for b in strings] +
             ["d %016x" % struct.unpack("<Q", struct.pack("<d", d))[0] for d in doubles] +
             ["i %d" % i for i in ints] +
             ["j " + json.dumps(d, ensure_ascii=True) for d in docs])
    p = subprocess.run([TOOL], input="\n".join(lines) + "\n", capture_output=True, text=True,
                       encoding="utf-8", errors="surrogateescape", timeout=120)
    if p.returncode != 0:
        sys.exit("FAIL: the driver: " + p.stderr)
    out = p.stdout.split("\n")[:-1]
    if len(out) != len(lines):
        sys.exit("FAIL: %d answers for %d cases" % (len(out), len(lines)))
    k = 0
    n_valid = n_lossy = 0
    for b in strings:
        w, lossy, jan, ok = out[k].split("\t")
        k += 1
        check(ok == "ok", "string %r: %s" % (b, ok))
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        check((w != "-") == (text is not None), "string %r: validity %r, Python %r" % (b, w != "-", text is not None))
        check((jan != "-") == (text is not None), "string %r: jansson's validity differs" % b)
        if text is not None:
            n_valid += 1
            check(json.loads(w) == text, "string %r: reads back as %r" % (b, json.loads(w)))
            check(w == jan, "string %r: writer %r, jansson %r" % (b, w, jan))
            check(lossy == w, "string %r: valid, yet the lossy form differs" % b)
        else:
            n_lossy += 1
        check(json.loads(lossy) == lossy_reference(b), "string %r: lossy %r, want %r" % (b, lossy, lossy_reference(b)))
    for d in doubles:
        w, jan, ok = out[k].split("\t")
        k += 1
        check(ok == "ok", "double %r: %s" % (d, ok))
        if not math.isfinite(d):
            check(w == "null", "double %r: %r (want null)" % (d, w))
            continue
        v = json.loads(w)
        check(isinstance(v, float) and struct.pack("<d", v) == struct.pack("<d", d),
              "double %r: %r reads back as %r" % (d, w, v))
        check(w == jan, "double %r: writer %r, jansson %r" % (d, w, jan))
    for i in ints:
        w, jan, ok = out[k].split("\t")
        k += 1
        check(ok == "ok" and json.loads(w) == i and w == jan, "int %d: %r / %r %s" % (i, w, jan, ok))
    for d in docs:
        w, jan, ok = out[k].split("\t")
        k += 1
        check(ok == "ok", "document: %s" % ok)
        check(w == jan, "document: writer %r\n  jansson %r" % (w[:300], jan[:300]))
        check(json.loads(w) == d, "document %r reads back differently" % (json.dumps(d)[:200]))
    print("%d strings (%d valid UTF-8, %d broken), %d doubles, %d integers, %d documents" %
          (len(strings), n_valid, n_lossy, len(doubles), len(ints), len(docs)))
    if failures:
        sys.exit("FAIL (%d):\n" % len(failures) + "\n".join(failures[:30]))
    print("OK")


if __name__ == "__main__":
    main()
