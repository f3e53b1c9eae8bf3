#!/usr/bin/env python3
"""Turn a device run's results.jsonl (one probe JSON per run, from
run_on_device.sh) into tools/cuda_probe/results-<card>.json: the runs verbatim
plus a "derived" block of the figures a planner needs (bytes).

usage: collect_results.py RESULTS_JSONL CARD KIND MEASURED_UTC RUNTIME_NOTE > results-CARD.json
Standard library only."""
import json
import sys


def step(run, key):
    for s in run["steps"]:
        if s["key"] == key:
            return s
    return None


def delta(run, key):
    s = step(run, key)
    return None if s is None or s["delta"] is None else s["delta"]


def net(run, key):
    s = step(run, key)
    return None if s is None or s["delta"] is None else s["delta"] - s["ours"]


def add(*vals):
    return None if any(v is None for v in vals) else sum(vals)


def derive(by):
    lazy, eager = by.get("noblas-lazy"), by.get("noblas-eager")
    full, full_e, lt = by.get("full-lazy"), by.get("full-eager"), by.get("lt-only-lazy")
    pre = step(lazy, "pre_context")
    d = {
        "note": "bytes; cudaMemGetInfo (total-free) deltas at the driver's 2 MiB resolution; "
                "see docs/cuda-runtime-overhead.md",
        "driver_reserved_bytes": pre["nvml_v2_reserved"],
        "cudart_total_bytes": lazy["device"]["total_bytes"],
        "context_lazy_bytes": lazy["summary"]["context_nvml_delta"],
        "context_eager_bytes": eager["summary"]["context_nvml_delta"] if eager else None,
        "context_proc_used_bytes": lazy["summary"]["context_proc_used"],
        "first_kernel_lazy_bytes": delta(lazy, "first_kernel"),
        "malloc_page_bytes": 2 * 1024 * 1024,
        "malloc_small_alignment_bytes": step(lazy, "malloc_1B_b")["ptr"] - step(lazy, "malloc_1B_a")["ptr"],
        "graph_first_instantiate_bytes": delta(lazy, "graph1_instantiate"),
        "graphs_10x100_nodes_bytes": delta(lazy, "graphs10"),
        "graph_1000_nodes_bytes": delta(lazy, "graph1000"),
    }
    if full:
        d.update({
            "cublas_create_lazy_bytes": delta(full, "cublas_create"),
            "cublas_first_sgemm_lazy_bytes": delta(full, "sgemm_first"),
            "cublas_first_gemmex_bf16_lazy_bytes": delta(full, "gemmex_bf16_first"),
            "cublas_total_lazy_bytes": add(delta(full, "cublas_create"), delta(full, "sgemm_first"),
                                           delta(full, "gemmex_bf16_first")),
            "cublas_destroy_returns_bytes": -delta(full, "blas_destroy"),
            "cublaslt_after_cublas_bytes": add(delta(full, "cublaslt_create"), net(full, "cublaslt_matmul_first")),
        })
    if full_e:
        d.update({
            "cublas_create_eager_bytes": delta(full_e, "cublas_create"),
            "cublas_total_eager_bytes": add(delta(full_e, "cublas_create"), delta(full_e, "sgemm_first"),
                                            delta(full_e, "gemmex_bf16_first")),
        })
    if lt:
        d.update({
            "cublaslt_create_alone_lazy_bytes": delta(lt, "cublaslt_create"),
            "cublaslt_first_matmul_beyond_our_workspace_bytes": net(lt, "cublaslt_matmul_first"),
            "cublaslt_our_workspace_bytes": step(lt, "cublaslt_workspace")["ours"],
        })
    return d


def main(argv):
    if len(argv) != 6:
        sys.stderr.write(__doc__)
        return 2
    runs = [json.loads(line) for line in open(argv[1]) if line.strip()]
    by = {r["variant"]: r for r in runs}
    if "noblas-lazy" not in by:
        sys.stderr.write("no noblas-lazy run in %s\n" % argv[1])
        return 1
    first = by["noblas-lazy"]
    head = {
        "card": argv[2], "kind": argv[3], "measured_utc": argv[4],
        "device": first["device"], "driver_version": first["driver_version"],
        "cuda_runtime": first["cuda_runtime"],
        "cublas": by["full-lazy"]["cublas"] if "full-lazy" in by else None,
        "runtime": argv[5], "derived": derive(by),
    }
    out = sys.stdout
    out.write("{\n")
    for k, v in head.items():
        out.write(" %s: %s,\n" % (json.dumps(k), json.dumps(v)))
    out.write(' "runs": [\n')
    out.write(",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in runs))
    out.write("\n ]\n}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
