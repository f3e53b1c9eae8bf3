"""Helpers for the memory-budget tests: running kvserve, making models, and
an independent reading of a GGUF header (shapes and tensor sizes), so that
the tests check kvserve's figures against the issue's formulas rather than
against kvserve's own code."""
import json
import os
import struct
import subprocess
import sys

KVSERVE = os.environ.get("KVSERVE", "")
SHARED = os.environ.get("KVS_SHARED", "")
BUILD = os.environ.get("KVS_BUILD_DIR", "")
STORIES = os.path.join(SHARED, "models", "stories260K.gguf")
MIB = 1 << 20
GIB = 1 << 30


def sanitizer_build():
    """True when KVSERVE is an AddressSanitizer build (slow: smaller grids)."""
    cache = os.path.join(BUILD, "CMakeCache.txt")
    try:
        with open(cache) as f:
            return "KVS_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


def run(args, check=True):
    """Run kvserve; returns CompletedProcess (text)."""
    p = subprocess.run([KVSERVE] + args, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        sys.exit("FAIL: kvserve %s\nrc=%d\nstderr: %s" % (" ".join(args), p.returncode, p.stderr))
    return p


def as_generate_p(flags):
    """plan's flags for the job of `generate -p` with these flags: its one
    prompt makes --max-num-seqs default to 1 there (256 elsewhere)."""
    return flags if "--max-num-seqs" in flags else ["--max-num-seqs", "1"] + flags


def plan_json(model, flags):
    return json.loads(run(["plan", "-m", model, "--json"] + flags).stdout)


def measured_json(model, flags, path):
    if os.path.exists(path):
        os.unlink(path)
    run(["generate", "-m", model, "-p", "Once upon a time", "-n", "1", "--temperature", "0",
         "--memory-report", path] + flags)
    with open(path) as f:
        return json.load(f)


def synth(path, args):
    """A header-only model (a sparse file whose tensors read as zeros): real
    shapes, no disk and no time.  Reused when already written."""
    if not os.path.exists(path):
        run(["synth", "-o", path, "--header-only"] + args)
    return path


# --- GGUF header, read independently ---------------------------------------

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
# ggml type -> (block elements, block bytes)
_TYPE_SIZE = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34), 30: (1, 2)}


class Reader:
    def __init__(self, data):
        self.d, self.o = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.o:self.o + n].decode("utf-8", "replace")
        self.o += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        return self.take(_SCALAR[t])


def gguf_header(path):
    """(metadata dict, [(name, ne list, type, nbytes)]) from the file's header."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    r = Reader(data)
    assert data[:4] == b"GGUF", path
    r.o = 4
    r.take("<I")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    meta = {}
    for _ in range(n_kv):
        k = r.string()
        meta[k] = r.value(r.take("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        t = r.take("<I")
        r.take("<Q")
        n = 1
        for x in ne:
            n *= x
        be, bb = _TYPE_SIZE[t]
        tensors.append((name, ne, t, n // be * bb))
    return meta, tensors


def model_shape(path):
    """layers, kv_heads, head_dim, trained context: from the metadata."""
    meta, _ = gguf_header(path)
    arch = meta["general.architecture"]
    g = lambda k, d=None: meta.get("%s.%s" % (arch, k), d)
    heads = g("attention.head_count")
    kv_heads = g("attention.head_count_kv", heads)
    head_dim = g("attention.key_length", g("embedding_length") // heads)
    return {"layers": g("block_count"), "kv_heads": kv_heads, "head_dim": head_dim,
            "ctx": g("context_length")}
