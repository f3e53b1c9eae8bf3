#!/usr/bin/env python3
"""End to end on the CUDA backend: the same greedy tokens as the CPU backend.

Skipped (exit 77) where `kvserve` has no CUDA backend or no GPU is present.
On a GPU (scripts/gpu-check.sh runs it there):
  - stories260K (F32 weights, f32 KV cache): 200 greedy tokens from BOS equal
    llama2.c's (../shared/expected) on CUDA, as they do on the CPU;
  - random-weight models of real shapes written by `kvserve synth` (the 110M
    Llama-2 shape and a GQA qwen2 shape with q/k/v biases), F32/F16/BF16:
    the first 32 greedy tokens equal the CPU's; Q8_0/Q4_0: the first
    divergence, if any, is reported (both backends dequantize the same bytes
    and accumulate in f32, so one is expected only at a near-tie).
Results go to $KVS_GPU_RESULTS (a JSON file) when that is set.
"""
import json
import os
import subprocess
import sys
import tempfile

KVSERVE = os.environ.get("KVSERVE", "build/kvserve")
SHARED = os.environ.get("KVS_SHARED", "../shared")
OUT = os.environ.get("KVS_BUILD_DIR", tempfile.gettempdir())


def run(args, check=True):
    p = subprocess.run([KVSERVE] + args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"FAIL: kvserve {' '.join(args)}\n{p.stderr}")
    return p


def gen(model, device, prompt, n, extra=()):
    p = run(["generate", "-m", model, "--device", device, "-p", prompt, "-n", str(n), "--temperature", "0",
             "--json", "--ignore-eos", "--kv-cache-dtype", "f32", *extra])
    return json.loads(p.stdout.strip().splitlines()[-1])["output_token_ids"]


def main():
    probe = run(["generate", "-m", f"{SHARED}/models/stories260K.gguf", "--device", "cuda", "-p", "a", "-n", "1"],
                check=False)
    if probe.returncode != 0:
        print(f"SKIP: no usable CUDA device: {probe.stderr.strip().splitlines()[-1] if probe.stderr else ''}")
        return 77
    results = {"cases": []}
    failures = 0

    # stories260K against llama2.c's greedy run.
    model = f"{SHARED}/models/stories260K.gguf"
    cpu = gen(model, "cpu", "", 200)
    cuda = gen(model, "cuda", "", 200)
    same = cpu == cuda
    results["cases"].append({"model": "stories260K", "tokens": 200, "cuda_equals_cpu": same})
    if not same:
        failures += 1
        print(f"FAIL stories260K: cuda {cuda[:16]} vs cpu {cpu[:16]}")

    shapes = [("llama2-110m", ["--preset", "llama2-110m"]),
              ("qwen2-gqa", ["--arch", "qwen2", "--dim", "512", "--layers", "4", "--heads", "8", "--kv-heads", "2",
                             "--hidden", "1408", "--vocab", "4096"])]
    for name, flags in shapes:
        for t in ["f32", "f16", "bf16", "q8_0", "q4_0"]:
            path = os.path.join(OUT, f"cuda-e2e-{name}-{t}.gguf")
            run(["synth", "-o", path, *flags, "--type", t, "--seed", "7"])
            for prompt in ["Once upon a time", "The quick brown fox jumps over"]:
                a = gen(path, "cpu", prompt, 32)
                b = gen(path, "cuda", prompt, 32)
                div = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
                case = {"model": name, "type": t, "prompt": prompt, "first_divergence": div}
                if div is not None and t in ("f32", "f16", "bf16"):
                    failures += 1
                    print(f"FAIL {name} {t}: tokens differ at {div}: cpu {a[div]} cuda {b[div]}")
                results["cases"].append(case)
            os.unlink(path)

    if os.environ.get("KVS_GPU_RESULTS"):
        with open(os.environ["KVS_GPU_RESULTS"], "w") as f:
            json.dump(results, f, indent=1)
    print(f"{len(results['cases']) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
