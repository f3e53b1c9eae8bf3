"""Malformed Hugging Face directories give a clear error that names the file and the
problem, and never crash: `kvserve info -m DIR` (config and safetensors headers)
and tests/tools/forward_dump (the full load: shapes, dtypes, data) on directories
broken one way each.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_util  # noqa: E402

KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
DUMP = os.environ.get("KVS_FORWARD_DUMP", "build/tests/kvs_forward_dump")
WORK = os.path.join(os.environ.get("KVS_BUILD_DIR", "build"), "hf_malformed")

CFG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 280, "max_position_embeddings": 64,
       "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


def fresh(name, shards=1, cfg=CFG, dtype="BF16", extra=None):
    d = os.path.join(WORK, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    hf_util.make_dir(d, cfg, dtype, shards, seed=3, extra=extra)
    return d


def edit_config(d, fn):
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    fn(c)
    json.dump(c, open(p, "w"))


def load(d):
    """(exit code, stderr) of a full load through forward_dump."""
    spec = os.path.join(WORK, "spec.json")
    json.dump({"model": d, "block_size": 4, "steps": [{"seqs": [{"id": 0, "tokens": [1, 2], "start_pos": 0}]}]},
              open(spec, "w"))
    r = subprocess.run([DUMP, spec, os.path.join(WORK, "out.bin")], capture_output=True, timeout=60)
    return r.returncode, r.stderr.decode(errors="replace")


def info(d):
    r = subprocess.run([KVSERVE, "info", "-m", d], capture_output=True, timeout=60)
    return r.returncode, r.stderr.decode(errors="replace") + r.stdout.decode(errors="replace")


def case_missing_config():
    d = fresh("no_config")
    os.remove(os.path.join(d, "config.json"))
    return d, ["config.json is missing"]


def case_bad_json():
    d = fresh("bad_json")
    open(os.path.join(d, "config.json"), "w").write('{"architectures": ["LlamaForCausalLM"], "hidden_size": 32,,}')
    return d, ["config.json", "invalid JSON"]


def case_missing_key():
    d = fresh("missing_key")
    edit_config(d, lambda c: c.pop("num_attention_heads"))
    return d, ["config.json", '"num_attention_heads" is missing']


def case_wrong_type():
    d = fresh("wrong_type")
    edit_config(d, lambda c: c.update(hidden_size="32"))
    return d, ["config.json", '"hidden_size" is not an integer']


def case_unknown_arch():
    d = fresh("unknown_arch")
    edit_config(d, lambda c: c.update(architectures=["MambaForCausalLM"]))
    return d, ["config.json", "MambaForCausalLM", "not supported"]


def case_bad_rope():
    d = fresh("bad_rope")
    edit_config(d, lambda c: c.update(rope_scaling={"rope_type": "longrope", "factor": 2.0}))
    return d, ["config.json", "longrope", "not supported"]


def case_shape():
    d = fresh("shape")
    edit_config(d, lambda c: c.update(intermediate_size=50))
    return d, ["model.layers.0.mlp.gate_proj.weight", "model.safetensors", "[48, 32]", "config.json implies [50, 32]"]


def case_vocab_shape():
    d = fresh("vocab_shape")
    edit_config(d, lambda c: c.update(vocab_size=300))
    return d, ["model.embed_tokens.weight", "[280, 32]", "[300, 32]"]


def case_missing_tensor():
    d = fresh("missing_tensor")
    W = hf_util.read_safetensors(os.path.join(d, "model.safetensors"))
    keep = [(n, "BF16", a.shape, hf_util.encode(a, "BF16")[0]) for n, a in W.items()
            if n != "model.layers.1.self_attn.k_proj.weight"]
    hf_util.write_safetensors(os.path.join(d, "model.safetensors"), keep)
    return d, ["model.layers.1.self_attn.k_proj.weight", "is missing from the checkpoint"]


def case_unsupported_dtype():
    d = fresh("dtype_i64")
    W = hf_util.read_safetensors(os.path.join(d, "model.safetensors"))
    ts = []
    for n, a in W.items():
        if n == "model.norm.weight":
            ts.append((n, "I64", a.shape, hf_util.encode(a, "I64")[0]))
        else:
            ts.append((n, "BF16", a.shape, hf_util.encode(a, "BF16")[0]))
    hf_util.write_safetensors(os.path.join(d, "model.safetensors"), ts)
    return d, ["model.norm.weight", "type I64"]


def case_missing_shard():
    d = fresh("missing_shard", shards=3)
    os.remove(os.path.join(d, "model-00002-of-00003.safetensors"))
    return d, ["shard model-00002-of-00003.safetensors is missing"]


def case_truncated_shard():
    d = fresh("truncated_shard", shards=3)
    p = os.path.join(d, "model-00003-of-00003.safetensors")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size - 10)
    return d, ["model-00003-of-00003.safetensors", "truncated"]


def case_index_lies():
    d = fresh("index_lies", shards=2)
    p = os.path.join(d, "model.safetensors.index.json")
    idx = json.load(open(p))
    idx["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
    json.dump(idx, open(p, "w"))
    return d, ["model.norm.weight", "is not in shard model-00002-of-00002.safetensors"]


def case_bad_index():
    d = fresh("bad_index", shards=2)
    open(os.path.join(d, "model.safetensors.index.json"), "w").write("{ nope")
    return d, ["model.safetensors.index.json", "invalid JSON"]


def case_no_weights():
    d = fresh("no_weights")
    os.remove(os.path.join(d, "model.safetensors"))
    open(os.path.join(d, "pytorch_model.bin"), "wb").write(b"PK")
    return d, ["no model.safetensors", "pytorch_model.bin is not supported"]


def case_bad_header():
    d = fresh("bad_header")
    p = os.path.join(d, "model.safetensors")
    data = bytearray(open(p, "rb").read())
    data[8:9] = b"["  # not an object
    open(p, "wb").write(bytes(data))
    return d, ["model.safetensors", "header"]


def case_header_length():
    d = fresh("header_length")
    p = os.path.join(d, "model.safetensors")
    data = bytearray(open(p, "rb").read())
    data[0:8] = (len(data) * 2).to_bytes(8, "little")
    open(p, "wb").write(bytes(data))
    return d, ["model.safetensors", "header length", "past the end of the file"]


def case_bad_generation_config():
    d = fresh("bad_gen")
    open(os.path.join(d, "generation_config.json"), "w").write('{"temperature": "hot"}')
    return d, ["generation_config.json", "temperature"]


CASES = [case_missing_config, case_bad_json, case_missing_key, case_wrong_type, case_unknown_arch, case_bad_rope,
         case_shape, case_vocab_shape, case_missing_tensor, case_unsupported_dtype, case_missing_shard,
         case_truncated_shard, case_index_lies, case_bad_index, case_no_weights, case_bad_header,
         case_header_length, case_bad_generation_config]
# errors that opening the directory (config, headers) finds, before any shape check
AT_OPEN = {"case_missing_config", "case_bad_json", "case_missing_key", "case_wrong_type", "case_unknown_arch",
           "case_bad_rope", "case_missing_shard", "case_truncated_shard", "case_index_lies", "case_bad_index",
           "case_no_weights", "case_bad_header", "case_header_length", "case_bad_generation_config"}


def main():
    os.makedirs(WORK, exist_ok=True)
    ok = True
    # a good directory loads (the cases below each break one thing)
    rc, err = load(fresh("good"))
    if rc != 0:
        print(f"FAIL good directory: {err}")
        ok = False
    for fn in CASES:
        d, want = fn()
        rc, err = load(d)
        good = rc == 1 and all(w in err for w in want) and "Sanitizer" not in err
        if fn.__name__ in AT_OPEN:
            rc2, out2 = info(d)
            good = good and rc2 == 1 and all(w in out2 for w in want)
        print(f"{'ok  ' if good else 'FAIL'} {fn.__name__:30s} {err.strip()}")
        if not good:
            print(f"     expected exit 1 and {want}")
        ok = ok and good
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
