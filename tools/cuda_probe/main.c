/*
 * cuda_probe: measures what the CUDA runtime itself costs in device memory,
 * so that kvserve's planner can predict it without a GPU.
 *
 * Steps, each followed by a snapshot (see probe.h):
 *   pre_context -> context (cudaSetDevice + cudaFree(0)) -> first kernel of
 *   our module (lazy module load) -> second kernel of the same module ->
 *   stream -> cudaMalloc granularity (1 B, 1 MiB, 2 MiB+1, 64 MiB+1, each
 *   twice where useful) -> free -> CUDA graphs (1 graph of 100 launches:
 *   capture / instantiate / first launch; 10 more such graphs; one graph of
 *   1000 launches) -> cuBLAS / cuBLASLt (full build only) -> end.
 *
 * Usage: cuda_probe [--variant NAME] [--skip-cublas] [--skip-lt] [--dim N]
 * Exit status 0 when every step succeeded, 1 otherwise (results still printed).
 */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probe.h"
#include "probe_kernels.h"
#include "report.h"

#ifndef PROBE_BINARY
#define PROBE_BINARY "full"
#endif

#define MIB (1024ull * 1024ull)
#define GRAPH_NODES 100
#define GRAPHS_MORE 10
#define GRAPH_BIG_NODES 1000

static int capture_graph(probe_rec *r, cudaStream_t s, int nodes, cudaGraph_t *g)
{
    if (!probe_cuda_ok(r, cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture"))
        return 0;
    cudaError_t first = cudaSuccess;
    for (int i = 0; i < nodes; i++) {
        cudaError_t e = probe_launch_noop(s);
        if (e != cudaSuccess && first == cudaSuccess)
            first = e;
    }
    cudaError_t e = cudaStreamEndCapture(s, g);
    if (!probe_cuda_ok(r, first, "kernel launch during capture"))
        return 0;
    return probe_cuda_ok(r, e, "cudaStreamEndCapture");
}

static int graph_steps(probe_rec *r, cudaStream_t s)
{
    enum { NG = 1 + GRAPHS_MORE + 1 };
    cudaGraph_t g[NG];
    cudaGraphExec_t x[NG];
    int ng = 0, nx = 0, ok = 0;
    memset(g, 0, sizeof g);
    memset(x, 0, sizeof x);

    probe_begin(r);
    if (!capture_graph(r, s, GRAPH_NODES, &g[ng]))
        goto done;
    ng++;
    probe_snap(r, "graph1_capture", "graph #1: capture 100 launches", 0, 0);

    probe_begin(r);
    if (!probe_cuda_ok(r, cudaGraphInstantiate(&x[nx], g[0], 0), "cudaGraphInstantiate"))
        goto done;
    nx++;
    probe_snap(r, "graph1_instantiate", "graph #1: instantiate", 0, 0);

    probe_begin(r);
    if (!probe_cuda_ok(r, cudaGraphLaunch(x[0], s), "cudaGraphLaunch") ||
        !probe_cuda_ok(r, cudaStreamSynchronize(s), "sync graph"))
        goto done;
    probe_snap(r, "graph1_launch", "graph #1: first launch", 0, 0);

    probe_begin(r);
    for (int i = 0; i < GRAPHS_MORE; i++) {
        if (!capture_graph(r, s, GRAPH_NODES, &g[ng]))
            goto done;
        ng++;
        if (!probe_cuda_ok(r, cudaGraphInstantiate(&x[nx], g[ng - 1], 0), "cudaGraphInstantiate (10)"))
            goto done;
        nx++;
        if (!probe_cuda_ok(r, cudaGraphLaunch(x[nx - 1], s), "cudaGraphLaunch (10)"))
            goto done;
    }
    if (!probe_cuda_ok(r, cudaStreamSynchronize(s), "sync graphs"))
        goto done;
    probe_snap(r, "graphs10", "10 more graphs (100 launches each)", 0, 0);

    probe_begin(r);
    if (!capture_graph(r, s, GRAPH_BIG_NODES, &g[ng]))
        goto done;
    ng++;
    if (!probe_cuda_ok(r, cudaGraphInstantiate(&x[nx], g[ng - 1], 0), "cudaGraphInstantiate (1000)"))
        goto done;
    nx++;
    if (!probe_cuda_ok(r, cudaGraphLaunch(x[nx - 1], s), "cudaGraphLaunch (1000)") ||
        !probe_cuda_ok(r, cudaStreamSynchronize(s), "sync graph 1000"))
        goto done;
    probe_snap(r, "graph1000", "1 graph of 1000 launches", 0, 0);
    ok = 1;
done:
    probe_begin(r);
    for (int i = 0; i < nx; i++)
        cudaGraphExecDestroy(x[i]);
    for (int i = 0; i < ng; i++)
        cudaGraphDestroy(g[i]);
    if (ok)
        probe_snap(r, "graphs_destroy", "destroy all graphs", 0, 0);
    return ok;
}

static int alloc_steps(probe_rec *r)
{
    static const struct {
        const char *key, *label;
        size_t bytes;
    } req[] = {
        {"malloc_1B_a", "cudaMalloc 1 B (first ever)", 1},
        {"malloc_1B_b", "cudaMalloc 1 B (second)", 1},
        {"malloc_1MiB_a", "cudaMalloc 1 MiB", 1 * MIB},
        {"malloc_1MiB_b", "cudaMalloc 1 MiB (second)", 1 * MIB},
        {"malloc_2MiBp1_a", "cudaMalloc 2 MiB + 1", 2 * MIB + 1},
        {"malloc_2MiBp1_b", "cudaMalloc 2 MiB + 1 (second)", 2 * MIB + 1},
        {"malloc_64MiBp1", "cudaMalloc 64 MiB + 1", 64 * MIB + 1},
        {"malloc_64MiB", "cudaMalloc 64 MiB exactly", 64 * MIB},
    };
    enum { N = sizeof req / sizeof req[0] };
    void *p[N];
    int n = 0, ok = 1;
    memset(p, 0, sizeof p);
    for (; n < N; n++) {
        probe_begin(r);
        if (!probe_cuda_ok(r, cudaMalloc(&p[n], req[n].bytes), req[n].key)) {
            ok = 0;
            break;
        }
        probe_snap(r, req[n].key, req[n].label, req[n].bytes, (unsigned long long)(size_t)p[n]);
    }
    probe_begin(r);
    for (int i = 0; i < n; i++)
        cudaFree(p[i]);
    probe_snap(r, "malloc_free_all", "cudaFree all of the above", 0, 0);
    return ok;
}

static void usage(void)
{
    fprintf(stderr, "usage: cuda_probe [--variant NAME] [--skip-cublas] [--skip-lt] [--dim N]\n");
}

int main(int argc, char **argv)
{
    static probe_rec r;
    static probe_info in;
    int skip_cublas = 0, skip_lt = 0;
    cudaStream_t s = NULL;

    in.variant = "default";
    in.binary = PROBE_BINARY;
    in.gemm_dim = 4096;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--variant") == 0 && i + 1 < argc) {
            in.variant = argv[++i];
        } else if (strcmp(argv[i], "--skip-cublas") == 0) {
            skip_cublas = 1;
        } else if (strcmp(argv[i], "--skip-lt") == 0) {
            skip_lt = 1;
        } else if (strcmp(argv[i], "--dim") == 0 && i + 1 < argc) {
            in.gemm_dim = atoi(argv[++i]);
            if (in.gemm_dim < 16 || in.gemm_dim > 16384) {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    in.module_loading = getenv("CUDA_MODULE_LOADING");
    in.cublas_ws_config = getenv("CUBLAS_WORKSPACE_CONFIG");

    /* NVML first: its "before" figure must precede any CUDA context. */
    r.nvml = probe_nvml_open(in.nvml_note, sizeof in.nvml_note);
    probe_nvml_driver_version(r.nvml, in.driver_version, sizeof in.driver_version);
    probe_begin(&r);
    probe_snap(&r, "pre_context", "before any context (NVML)", 0, 0);

    probe_begin(&r);
    if (!probe_cuda_ok(&r, cudaSetDevice(0), "cudaSetDevice") ||
        !probe_cuda_ok(&r, cudaFree(0), "cudaFree(0)"))
        goto report;
    r.have_context = 1;
    probe_snap(&r, "context", "context: cudaSetDevice + cudaFree(0)", 0, 0);

    struct cudaDeviceProp prop;
    if (probe_cuda_ok(&r, cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties")) {
        snprintf(in.device_name, sizeof in.device_name, "%s", prop.name);
        in.cc_major = prop.major;
        in.cc_minor = prop.minor;
        in.sm_count = prop.multiProcessorCount;
        in.total_mem = prop.totalGlobalMem;
        in.l2_bytes = (unsigned long long)prop.l2CacheSize;
    }
    cudaDriverGetVersion(&in.cuda_driver_api);
    cudaRuntimeGetVersion(&in.cuda_runtime);
    in.cublas_version = probe_cublas_version();
    in.cublaslt_version = probe_cublaslt_version();

    probe_begin(&r);
    if (!probe_cuda_ok(&r, probe_launch_noop(0), "first kernel launch"))
        goto report;
    probe_snap(&r, "first_kernel", "first launch of our kernel", 0, 0);

    probe_begin(&r);
    if (!probe_cuda_ok(&r, probe_launch_fill(NULL, 0, 0.0f, 0, 0), "second kernel launch"))
        goto report;
    probe_snap(&r, "second_kernel", "second kernel, same module", 0, 0);

    probe_begin(&r);
    if (!probe_cuda_ok(&r, cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"))
        goto report;
    probe_snap(&r, "stream_create", "cudaStreamCreate (non-blocking)", 0, 0);

    if (!alloc_steps(&r))
        goto report;
    if (!graph_steps(&r, s))
        goto report;
    if (!probe_blas_steps(&r, skip_cublas, skip_lt, in.gemm_dim))
        goto report;

    probe_begin(&r);
    probe_snap(&r, "end", "end (everything freed but context)", 0, 0);

report:
    if (s)
        cudaStreamDestroy(s);
    if (!in.device_name[0])
        probe_nvml_device_name(r.nvml, in.device_name, sizeof in.device_name);
    probe_report_table(&r, &in);
    probe_report_json(&r, &in);
    probe_nvml_close(r.nvml);
    return r.nerrors ? 1 : 0;
}
