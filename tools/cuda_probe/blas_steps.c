/*
 * blas_steps.c: the cuBLAS and cuBLASLt part of the probe.
 *
 * Operand buffers are allocated first, in their own step (counted as "ours"),
 * so the later deltas hold only what the libraries take: the handle, the
 * default workspace cuBLAS allocates on first use, lazily loaded kernel
 * modules, and for cuBLASLt whatever it takes beyond the 32 MiB workspace we
 * pass in (which is itself a separate "ours" step).
 */
#include "probe.h"
#include "probe_kernels.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <stdio.h>

#define MIB (1024ull * 1024ull)
#define LT_WORKSPACE (32ull * MIB)

static int blas_ok(probe_rec *r, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 1;
    char d[64];
    snprintf(d, sizeof d, "cublas status %d", (int)s);
    return probe_fail(r, what, d);
}

int probe_cublas_version(void)
{
    int v = 0;
    if (cublasGetProperty(MAJOR_VERSION, &v) != CUBLAS_STATUS_SUCCESS)
        return 0;
    int mi = 0, pa = 0;
    cublasGetProperty(MINOR_VERSION, &mi);
    cublasGetProperty(PATCH_LEVEL, &pa);
    return v * 10000 + mi * 100 + pa;
}

size_t probe_cublaslt_version(void)
{
    return cublasLtGetVersion();
}

static int run_lt(probe_rec *r, cublasLtHandle_t lt, void *a, void *b, void *c, int dim, void *ws)
{
    int ok = 0;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int nres = 0;
    size_t wsz = LT_WORKSPACE;
    float alpha = 1.0f, beta = 0.0f;

    if (!blas_ok(r, cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate") ||
        !blas_ok(r, cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, dim, dim, dim), "cublasLtMatrixLayoutCreate A") ||
        !blas_ok(r, cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, dim, dim, dim), "cublasLtMatrixLayoutCreate B") ||
        !blas_ok(r, cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, dim, dim, dim), "cublasLtMatrixLayoutCreate C") ||
        !blas_ok(r, cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate") ||
        !blas_ok(r, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz),
                 "set MAX_WORKSPACE_BYTES") ||
        !blas_ok(r, cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &heur, &nres),
                 "cublasLtMatmulAlgoGetHeuristic"))
        goto done;
    if (nres < 1) {
        probe_fail(r, "cublasLtMatmulAlgoGetHeuristic", "no algorithm");
        goto done;
    }
    if (!blas_ok(r, cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, c, lc, c, lc, &heur.algo, ws, wsz, 0),
                 "cublasLtMatmul"))
        goto done;
    ok = probe_cuda_ok(r, cudaDeviceSynchronize(), "sync after cublasLtMatmul");
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (lc)
        cublasLtMatrixLayoutDestroy(lc);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (desc)
        cublasLtMatmulDescDestroy(desc);
    return ok;
}

int probe_blas_steps(probe_rec *r, int skip_cublas, int skip_lt, int dim)
{
    int ok = 0;
    size_t n = (size_t)dim * (size_t)dim;
    float *fa = NULL, *fb = NULL, *fc = NULL;
    void *ha = NULL, *hb = NULL, *hc = NULL, *ws = NULL;
    cublasHandle_t h = NULL;
    cublasLtHandle_t lt = NULL;
    const float alpha = 1.0f, beta = 0.0f;

    probe_begin(r);
    if (!probe_cuda_ok(r, cudaMalloc((void **)&fa, n * 4), "cudaMalloc fp32 A") ||
        !probe_cuda_ok(r, cudaMalloc((void **)&fb, n * 4), "cudaMalloc fp32 B") ||
        !probe_cuda_ok(r, cudaMalloc((void **)&fc, n * 4), "cudaMalloc fp32 C") ||
        !probe_cuda_ok(r, cudaMalloc(&ha, n * 2), "cudaMalloc bf16 A") ||
        !probe_cuda_ok(r, cudaMalloc(&hb, n * 2), "cudaMalloc bf16 B") ||
        !probe_cuda_ok(r, cudaMalloc(&hc, n * 2), "cudaMalloc bf16 C"))
        goto done;
    /* Non-zero operands (values do not matter for memory, but never time on zeros). */
    if (!probe_cuda_ok(r, probe_launch_fill(fa, n, 0.01f, 0, 0), "fill") ||
        !probe_cuda_ok(r, probe_launch_fill(fb, n, 0.02f, 0, 0), "fill") ||
        !probe_cuda_ok(r, probe_launch_fill(fc, n, 1.0f, 0, 0), "fill") ||
        !probe_cuda_ok(r, probe_launch_fill(ha, n, 0.01f, 1, 0), "fill") ||
        !probe_cuda_ok(r, probe_launch_fill(hb, n, 0.02f, 1, 0), "fill") ||
        !probe_cuda_ok(r, probe_launch_fill(hc, n, 1.0f, 1, 0), "fill"))
        goto done;
    probe_snap(r, "gemm_operands", "GEMM operands (3x fp32 + 3x bf16, ours)", (unsigned long long)(n * 4 * 3 + n * 2 * 3), 0);

    if (!skip_cublas) {
        probe_begin(r);
        if (!blas_ok(r, cublasCreate(&h), "cublasCreate"))
            goto done;
        probe_snap(r, "cublas_create", "cublasCreate", 0, 0);

        probe_begin(r);
        if (!blas_ok(r, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, dim, dim, dim, &alpha, fa, dim, fb, dim, &beta, fc, dim),
                     "cublasSgemm") ||
            !probe_cuda_ok(r, cudaDeviceSynchronize(), "sync after Sgemm"))
            goto done;
        probe_snap(r, "sgemm_first", "first cublasSgemm (fp32)", 0, 0);

        probe_begin(r);
        if (!blas_ok(r, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, dim, dim, dim, &alpha, fa, dim, fb, dim, &beta, fc, dim),
                     "cublasSgemm 2"))
            goto done;
        probe_snap(r, "sgemm_second", "second cublasSgemm", 0, 0);

        probe_begin(r);
        if (!blas_ok(r, cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, dim, dim, dim, &alpha, ha, CUDA_R_16BF, dim, hb,
                                     CUDA_R_16BF, dim, &beta, hc, CUDA_R_16BF, dim, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmEx bf16") ||
            !probe_cuda_ok(r, cudaDeviceSynchronize(), "sync after GemmEx"))
            goto done;
        probe_snap(r, "gemmex_bf16_first", "first cublasGemmEx (bf16, fp32 acc)", 0, 0);
    }

    if (!skip_lt) {
        probe_begin(r);
        if (!blas_ok(r, cublasLtCreate(&lt), "cublasLtCreate"))
            goto done;
        probe_snap(r, "cublaslt_create", "cublasLtCreate", 0, 0);

        probe_begin(r);
        if (!probe_cuda_ok(r, cudaMalloc(&ws, LT_WORKSPACE), "cudaMalloc Lt workspace"))
            goto done;
        probe_snap(r, "cublaslt_workspace", "Lt workspace 32 MiB (ours)", LT_WORKSPACE, (unsigned long long)(size_t)ws);

        probe_begin(r);
        if (!run_lt(r, lt, ha, hb, hc, dim, ws))
            goto done;
        probe_snap(r, "cublaslt_matmul_first", "first cublasLtMatmul (bf16, our ws)", 0, 0);

        probe_begin(r);
        if (!run_lt(r, lt, ha, hb, hc, dim, ws))
            goto done;
        probe_snap(r, "cublaslt_matmul_second", "second cublasLtMatmul", 0, 0);
    }

    probe_begin(r);
    if (h) {
        cublasDestroy(h);
        h = NULL;
    }
    if (lt) {
        cublasLtDestroy(lt);
        lt = NULL;
    }
    probe_snap(r, "blas_destroy", "cublasDestroy + cublasLtDestroy", 0, 0);
    ok = 1;
done:
    if (h)
        cublasDestroy(h);
    if (lt)
        cublasLtDestroy(lt);
    cudaFree(ws);
    cudaFree(hc);
    cudaFree(hb);
    cudaFree(ha);
    cudaFree(fc);
    cudaFree(fb);
    cudaFree(fa);
    return ok;
}
