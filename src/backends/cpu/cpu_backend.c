/*
 * cpu_backend.c - the CPU backend's ops table: host memory as device
 * memory, and thin wrappers that hand each kernel the backend's context.
 */
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_internal.h"
#include "backends/cpu/cpu_ops_ext.h"
#include "backends/cpu/cpu_simd.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static kvs_cpu_ctx *ctx_of(kvs_backend *b) { return b->ctx; }

static void cpu_destroy(kvs_backend *b)
{
    kvs_cpu_ctx *c = ctx_of(b);
    if (c) {
        kvs_pool_free(c->pool);
        free(c->mm_scratch);
        free(c);
    }
    kvs_ledger_destroy(&b->ledger);
    free(b);
}

static kvs_status cpu_mem_info(kvs_backend *b, kvs_mem_info *out, kvs_error *err)
{
    return kvs_cpu_mem_info(ctx_of(b)->device_memory, out, err);
}

/* Device buffers are private anonymous mappings: page-aligned, committed
 * lazily (a page counts as resident once written) and returned to the OS
 * whole on free, so the process's resident memory tracks the ledger
 * exactly (a heap allocator would keep freed memory). */
static void *cpu_raw_alloc(kvs_backend *b, size_t bytes)
{
    if (bytes == 0 || bytes > SIZE_MAX / 2)
        return NULL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void cpu_raw_free(kvs_backend *b, void *p, size_t bytes) { munmap(p, bytes); }

/* Commit every page now (writing zeros, which the mapping already holds). */
static void cpu_touch(kvs_backend *b, void *p, size_t bytes)
{
    if (p && bytes)
        memset(p, 0, bytes);
}

static void cpu_add_rows(kvs_backend *b, float *y, const float *bias, int64_t n, int64_t dim)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++)
            y[i * dim + j] += bias[j];
}

static void cpu_copy(kvs_backend *b, void *dst, const void *src, size_t n)
{
    if (n)
        memcpy(dst, src, n);
}

static void cpu_get_rows(kvs_backend *b, float *y, const void *table, kvs_dtype t,
                         int64_t row_len, const int32_t *ids, int64_t n)
{
    kvs_cpu_get_rows(ctx_of(b), y, table, t, row_len, ids, n);
}

static void cpu_rms_norm(kvs_backend *b, float *y, const float *x, const float *w, int64_t n,
                         int64_t dim, float eps)
{
    kvs_cpu_rms_norm(ctx_of(b), y, x, w, n, dim, eps);
}

static void cpu_matmul(kvs_backend *b, float *y, const float *x, const void *w, kvs_dtype wt,
                       int64_t n, int64_t k, int64_t m)
{
    kvs_cpu_matmul(ctx_of(b), y, x, w, wt, n, k, m);
}

static void cpu_rope(kvs_backend *b, float *x, const int32_t *pos, int64_t n, int32_t n_heads,
                     int32_t head_dim, int32_t rot_dim, float freq_base, float freq_scale,
                     bool neox)
{
    kvs_cpu_rope(ctx_of(b), x, pos, n, n_heads, head_dim, rot_dim, freq_base, freq_scale, neox);
}

static void cpu_silu_mul(kvs_backend *b, float *y, const float *gate, const float *up, int64_t n)
{
    kvs_cpu_silu_mul(ctx_of(b), y, gate, up, n);
}

static void cpu_add(kvs_backend *b, float *y, const float *a, const float *c, int64_t n)
{
    kvs_cpu_add(ctx_of(b), y, a, c, n);
}

static void cpu_kv_store(kvs_backend *b, const kvs_kv_view *kv, const float *k, const float *v,
                         const int32_t *slots, int64_t n_tokens)
{
    kvs_cpu_kv_store(ctx_of(b), kv, k, v, slots, n_tokens);
}

static void cpu_attention(kvs_backend *b, float *out, const float *q, const kvs_kv_view *kv,
                          const kvs_attn_meta *meta, int32_t n_heads, float scale, void *scratch)
{
    kvs_cpu_attention(ctx_of(b), out, q, kv, meta, n_heads, scale, scratch);
}

static size_t cpu_attention_scratch_bytes(kvs_backend *b, int32_t n_heads, int32_t max_ctx,
                                          int64_t n_tokens)
{
    return kvs_cpu_attention_scratch_bytes(ctx_of(b), n_heads, max_ctx);
}

static void cpu_scale(kvs_backend *b, float *x, int64_t n, float s) { kvs_cpu_scale(ctx_of(b), x, n, s); }

static void cpu_gelu_mul(kvs_backend *b, float *y, const float *gate, const float *up, int64_t n)
{
    kvs_cpu_gelu_mul(ctx_of(b), y, gate, up, n);
}

static void cpu_softcap(kvs_backend *b, float *x, int64_t n, float cap) { kvs_cpu_softcap(ctx_of(b), x, n, cap); }

static void cpu_rope_freqs(kvs_backend *b, float *x, const int32_t *pos, int64_t n, int32_t n_heads,
                           int32_t head_dim, int32_t rot_dim, const double *inv_freq, float mscale, bool neox)
{
    kvs_cpu_rope_freqs(ctx_of(b), x, pos, n, n_heads, head_dim, rot_dim, inv_freq, mscale, neox);
}

static const kvs_backend_ops CPU_OPS = {
    .name = "cpu",
    .caps = {
        .host_memory = true,
        .graphs = false,
        .act_dtype = KVS_DTYPE_F32,
        .kv_dtypes = KVS_DTYPE_BIT(KVS_DTYPE_F32) | KVS_DTYPE_BIT(KVS_DTYPE_F16) |
                     KVS_DTYPE_BIT(KVS_DTYPE_BF16),
        .weight_dtypes = 0, /* every type kvs_dtype_computable() names */
        .meter = "resident set (/proc/self/status)",
        .attn_window = true,
    },
    .destroy = cpu_destroy,
    .mem_info = cpu_mem_info,
    .raw_alloc = cpu_raw_alloc,
    .raw_free = cpu_raw_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .synchronize = NULL,
    .get_rows = cpu_get_rows,
    .rms_norm = cpu_rms_norm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .attention_scratch_bytes = cpu_attention_scratch_bytes,
    .add_rows = cpu_add_rows,
    .scale = cpu_scale,
    .gelu_mul = cpu_gelu_mul,
    .softcap = cpu_softcap,
    .rope_freqs = cpu_rope_freqs,
    .touch = cpu_touch,
    .graph_bytes = NULL,
};

static int available_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    return 1;
}

kvs_status kvs_cpu_backend_new(kvs_backend **out, const kvs_cpu_options *opt, kvs_error *err)
{
    *out = NULL;
    kvs_cpu_options o = {0};
    if (opt)
        o = *opt;
    if (o.n_threads < 0 || o.n_threads > KVS_POOL_MAX_THREADS)
        return kvs_fail(err, KVS_E_INVALID, "cpu: %d threads (expected 0..%d, 0 = one per core)",
                        o.n_threads, KVS_POOL_MAX_THREADS);
    int n_threads = o.n_threads ? o.n_threads : available_cpus();
    if (n_threads > KVS_POOL_MAX_THREADS)
        n_threads = KVS_POOL_MAX_THREADS;

    kvs_backend *b = calloc(1, sizeof *b);
    kvs_cpu_ctx *c = calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return kvs_fail(err, KVS_E_NOMEM, "cpu: out of memory");
    }
    b->ops = &CPU_OPS;
    b->ctx = c;
    kvs_ledger_init(&b->ledger);
    c->n_threads = n_threads;
    c->device_memory = o.device_memory;
    c->int8_act = !o.f32_matmul;
#if defined(__AVX512VNNI__) || defined(__AVXVNNI__) || defined(KVS_SIMD_AVX2)
    /* VNNI multiplies q8_0's u8 quants in one instruction; AVX2 takes two (dot8w) but since its
     * decode tile stopped waiting on the shuffle pipes it beats the f32 kernel there too (Zen 3:
     * 1.1-1.4x decode, 1.05-1.4x prefill); AVX-512 without VNNI leaves q8_0 to the f32 path */
    c->int8_q8_0 = true;
#else
    c->int8_q8_0 = o.int8_all;
#endif
    kvs_status st;
    c->mm_scratch = aligned_alloc(64, (size_t)n_threads * KVS_CPU_MM_SCRATCH * sizeof(float));
    if (!c->mm_scratch) {
        st = kvs_fail(err, KVS_E_NOMEM, "cpu: out of memory for matmul scratch");
        goto fail;
    }
    if ((st = kvs_pool_new(&c->pool, n_threads, err)) != KVS_OK) {
        kvs_fail_wrap(err, "cpu");
        goto fail;
    }
    *out = b;
    return KVS_OK;
fail:
    cpu_destroy(b);
    return st;
}

int kvs_cpu_backend_threads(const kvs_backend *b)
{
    return ((const kvs_cpu_ctx *)b->ctx)->n_threads;
}

uint64_t kvs_cpu_backend_overhead_bytes(const kvs_backend *b)
{
    const kvs_cpu_ctx *c = b->ctx;
    return sizeof(kvs_backend) + sizeof *c +
           (uint64_t)c->n_threads * KVS_CPU_MM_SCRATCH * sizeof(float);
}
