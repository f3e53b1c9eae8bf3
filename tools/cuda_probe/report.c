/* report.c: see report.h. */
#include "report.h"

#include <stdio.h>
#include <string.h>

#define MIB 1048576.0

static const probe_step *prev_cuda(const probe_rec *r, int i)
{
    for (int j = i - 1; j >= 0; j--)
        if (r->steps[j].have_cuda)
            return &r->steps[j];
    return NULL;
}

static double mib(long long b)
{
    return (double)b / MIB;
}

void probe_report_table(const probe_rec *r, const probe_info *in)
{
    printf("\n=== cuda_probe: variant %s (binary %s) ===\n", in->variant, in->binary);
    printf("device          : %s (sm_%d%d, %d SMs, L2 %.1f MiB)\n", in->device_name, in->cc_major,
           in->cc_minor, in->sm_count, mib((long long)in->l2_bytes));
    printf("total memory    : %llu bytes (%.2f MiB)\n", in->total_mem, mib((long long)in->total_mem));
    printf("driver          : %s (CUDA driver API %d), runtime %d\n",
           in->driver_version[0] ? in->driver_version : "?", in->cuda_driver_api, in->cuda_runtime);
    printf("cuBLAS          : %d, cuBLASLt %zu\n", in->cublas_version, in->cublaslt_version);
    printf("CUDA_MODULE_LOADING=%s  CUBLAS_WORKSPACE_CONFIG=%s\n",
           in->module_loading ? in->module_loading : "(unset: default LAZY)",
           in->cublas_ws_config ? in->cublas_ws_config : "(unset)");
    if (in->nvml_note[0])
        printf("NVML            : unavailable (%s)\n", in->nvml_note);
    printf("\n%-40s %11s %10s %10s %10s %10s %9s %10s %8s\n", "step", "used MiB", "d MiB", "d NVML",
           "proc MiB", "d proc", "ours MiB", "d-ours", "ms");
    for (int i = 0; i < r->nsteps; i++) {
        const probe_step *s = &r->steps[i];
        const probe_step *p = i > 0 ? &r->steps[i - 1] : NULL;
        const probe_step *pc = prev_cuda(r, i);
        char used[32] = "-", d[32] = "-", dn[32] = "-", pu[32] = "-", dp[32] = "-", net[32] = "-";
        if (s->have_cuda)
            snprintf(used, sizeof used, "%.2f", mib((long long)s->cuda_used));
        else if (s->nv.have_v1)
            snprintf(used, sizeof used, "%.2f*", mib((long long)s->nv.v1_used));
        if (s->have_cuda && pc) {
            long long dd = (long long)s->cuda_used - (long long)pc->cuda_used;
            snprintf(d, sizeof d, "%.2f", mib(dd));
            snprintf(net, sizeof net, "%.2f", mib(dd - (long long)s->ours));
        }
        if (p && s->nv.have_v1 && p->nv.have_v1)
            snprintf(dn, sizeof dn, "%.2f", mib((long long)s->nv.v1_used - (long long)p->nv.v1_used));
        if (s->nv.have_proc)
            snprintf(pu, sizeof pu, "%.2f", mib((long long)s->nv.proc_used));
        if (p && s->nv.have_proc)
            snprintf(dp, sizeof dp, "%.2f",
                     mib((long long)s->nv.proc_used - (long long)(p->nv.have_proc ? p->nv.proc_used : 0)));
        printf("%-40s %11s %10s %10s %10s %10s %9.2f %10s %8.1f\n", s->label, used, d, dn, pu, dp,
               mib((long long)s->ours), net, s->ms);
    }
    printf("(used: cudaMemGetInfo total-free; '*' = NVML device used, before any context. "
           "d = change vs previous row. proc = NVML per-process used.)\n");
    const probe_step *pre = probe_find(r, "pre_context"), *ctx = probe_find(r, "context");
    if (pre && ctx && pre->nv.have_v1 && ctx->nv.have_v1)
        printf("context creation: NVML device used +%.2f MiB", mib((long long)ctx->nv.v1_used - (long long)pre->nv.v1_used));
    if (ctx && ctx->nv.have_proc)
        printf(", NVML per-process %.2f MiB", mib((long long)ctx->nv.proc_used));
    if (pre && ctx && pre->nv.have_v1 && ctx->have_cuda)
        printf(", cudart used - NVML pre-context used = %.2f MiB",
               mib((long long)ctx->cuda_used - (long long)pre->nv.v1_used));
    printf("\n");
    for (int i = 0; i < r->nerrors; i++)
        printf("ERROR: %s\n", r->errors[i]);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_opt_str(const char *s)
{
    if (s)
        json_str(s);
    else
        printf("null");
}

static void json_ull_or_null(int have, unsigned long long v)
{
    if (have)
        printf("%llu", v);
    else
        printf("null");
}

static void json_ll_or_null(int have, long long v)
{
    if (have)
        printf("%lld", v);
    else
        printf("null");
}

void probe_report_json(const probe_rec *r, const probe_info *in)
{
    printf("JSON:{\"probe\":\"kvserve-cuda-probe\",\"schema\":1,\"variant\":");
    json_str(in->variant);
    printf(",\"binary\":");
    json_str(in->binary);
    printf(",\"device\":{\"name\":");
    json_str(in->device_name);
    printf(",\"cc\":\"%d.%d\",\"sm_count\":%d,\"total_bytes\":%llu,\"l2_bytes\":%llu}", in->cc_major, in->cc_minor,
           in->sm_count, in->total_mem, in->l2_bytes);
    printf(",\"driver_version\":");
    json_str(in->driver_version);
    printf(",\"cuda_driver_api\":%d,\"cuda_runtime\":%d,\"cublas\":%d,\"cublaslt\":%zu", in->cuda_driver_api,
           in->cuda_runtime, in->cublas_version, in->cublaslt_version);
    printf(",\"cuda_module_loading\":");
    json_opt_str(in->module_loading);
    printf(",\"cublas_workspace_config\":");
    json_opt_str(in->cublas_ws_config);
    printf(",\"nvml_note\":");
    json_str(in->nvml_note);
    printf(",\"gemm_dim\":%d,\"steps\":[", in->gemm_dim);
    for (int i = 0; i < r->nsteps; i++) {
        const probe_step *s = &r->steps[i];
        const probe_step *pc = prev_cuda(r, i);
        printf("%s{\"key\":", i ? "," : "");
        json_str(s->key);
        printf(",\"cuda_used\":");
        json_ull_or_null(s->have_cuda, s->cuda_used);
        printf(",\"delta\":");
        if (s->have_cuda && pc)
            printf("%lld", (long long)s->cuda_used - (long long)pc->cuda_used);
        else
            printf("null");
        printf(",\"ours\":%llu,\"nvml_used\":", s->ours);
        json_ull_or_null(s->nv.have_v1, s->nv.v1_used);
        printf(",\"nvml_v2_used\":");
        json_ull_or_null(s->nv.have_v2, s->nv.v2_used);
        printf(",\"nvml_v2_reserved\":");
        json_ull_or_null(s->nv.have_v2, s->nv.v2_reserved);
        printf(",\"proc_used\":");
        json_ull_or_null(s->nv.have_proc, s->nv.proc_used);
        printf(",\"ptr_mod_2mib\":");
        json_ull_or_null(s->ptr != 0, s->ptr % (2ull << 20));
        printf(",\"ptr\":");
        json_ull_or_null(s->ptr != 0, s->ptr);
        printf(",\"ms\":%.3f}", s->ms);
    }
    printf("],\"summary\":{");
    const probe_step *pre = probe_find(r, "pre_context"), *ctx = probe_find(r, "context");
    const probe_step *end = probe_find(r, "end");
    printf("\"context_nvml_delta\":");
    json_ll_or_null(pre && ctx && pre->nv.have_v1 && ctx->nv.have_v1,
                    pre && ctx ? (long long)ctx->nv.v1_used - (long long)pre->nv.v1_used : 0);
    printf(",\"context_nvml_v2_delta\":");
    json_ll_or_null(pre && ctx && pre->nv.have_v2 && ctx->nv.have_v2,
                    pre && ctx ? (long long)ctx->nv.v2_used - (long long)pre->nv.v2_used : 0);
    printf(",\"context_proc_used\":");
    json_ull_or_null(ctx && ctx->nv.have_proc, ctx ? ctx->nv.proc_used : 0);
    printf(",\"context_cudart_minus_nvml_pre\":");
    json_ll_or_null(pre && ctx && pre->nv.have_v1 && ctx->have_cuda,
                    pre && ctx ? (long long)ctx->cuda_used - (long long)pre->nv.v1_used : 0);
    printf(",\"end_proc_used\":");
    json_ull_or_null(end && end->nv.have_proc, end ? end->nv.proc_used : 0);
    printf("},\"errors\":[");
    for (int i = 0; i < r->nerrors; i++) {
        if (i)
            putchar(',');
        json_str(r->errors[i]);
    }
    printf("]}\n");
    fflush(stdout);
}
