/*
 * cpu_internal.h - the CPU backend's state and its kernels, for the ops
 * table (cpu_backend.c) and the tests.
 *
 * Every kernel exists twice: kvs_cpu_X, the fast path (AVX-512 or AVX2
 * where compiled for), and kvs_cpu_X_ref, the same code compiled with
 * KVS_CPU_SCALAR (one float per "vector", see cpu_simd.h).  Both are
 * threaded the same way over the context's pool, so results of either do
 * not depend on the number of threads.  The tests check both against
 * double-precision references.
 *
 * Scratch: the matmul takes from the context a per-thread panel of
 * KVS_CPU_MM_SCRATCH floats (512 KiB, half the L2 of a 1 MiB-L2 core), malloc'ed
 * once when the backend is made; the int8 matmul uses the same panel.  It
 * is the backend's only memory outside the ledger and is reported by
 * kvs_cpu_backend_overhead_bytes().  Attention uses the caller's
 * scratch (attention_scratch_bytes), split per thread.
 */
#ifndef KVS_BACKENDS_CPU_CPU_INTERNAL_H
#define KVS_BACKENDS_CPU_CPU_INTERNAL_H

#include "backends/backend.h"
#include "core/threadpool.h"

/* Matmul blocking: prefill dequantizes panels of whole W rows into this
 * many floats per thread. */
#define KVS_CPU_MM_SCRATCH 131072
/* Up to this many x rows, the matmul streams W once with fused dequantization. */
#define KVS_CPU_MM_DECODE_N 8

typedef struct kvs_cpu_ctx {
    kvs_pool *pool;
    int n_threads;
    uint64_t device_memory;  /* 0: ask the OS */
    float *mm_scratch;       /* n_threads * KVS_CPU_MM_SCRATCH floats */
    bool int8_q8_0;          /* q8_0 in the int8 matmul too (kvs_cpu_options.int8_all, or VNNI) */
    bool int8_act;           /* quantized matmuls with 8-bit activations (cpu_matmul_i8.c): the default */
} kvs_cpu_ctx;

#ifdef KVS_CPU_SCALAR
#define KVS_CPU_FN(name) name##_ref
#else
#define KVS_CPU_FN(name) name
#endif

#define KVS_CPU_DECLARE(ret, name, ...) \
    ret name(__VA_ARGS__);              \
    ret name##_ref(__VA_ARGS__)

/* The name of the vector path compiled in ("avx512", "avx2", "scalar"). */
const char *kvs_cpu_simd_name(void);

/* y[n][m] = x[n][k] . W[m][k]^T (see backend.h). */
KVS_CPU_DECLARE(void, kvs_cpu_matmul, kvs_cpu_ctx *c, float *y, const float *x, const void *w,
                kvs_dtype wt, int64_t n, int64_t k, int64_t m);
/* The int8-activation matmul (cpu_matmul_i8.c), the default for the
 * k-quants; it takes the thread's mm_scratch for the quantized x rows and
 * unpacked weight panels.  False, having done nothing, for other types or
 * shapes. */
KVS_CPU_DECLARE(bool, kvs_cpu_matmul_i8, kvs_cpu_ctx *c, float *y, const float *x, const void *w,
                kvs_dtype wt, int64_t n, int64_t k, int64_t m);
KVS_CPU_DECLARE(bool, kvs_cpu_i8_supported, kvs_dtype t);
/* Dequantize `len` elements of a row of type t starting at element `start`
 * (start and len multiples of the block size, except a final partial
 * piece for f32/f16/bf16) into dst. */
KVS_CPU_DECLARE(void, kvs_cpu_dequant, float *dst, const void *row, kvs_dtype t, int64_t start,
                int64_t len);

/* Paged grouped-query attention (see backend.h). */
KVS_CPU_DECLARE(void, kvs_cpu_attention, kvs_cpu_ctx *c, float *out, const float *q,
                const kvs_kv_view *kv, const kvs_attn_meta *meta, int32_t n_heads, float scale,
                void *scratch);
/* Scratch for attention of n_heads query heads over contexts up to max_ctx positions. */
size_t kvs_cpu_attention_scratch_bytes(const kvs_cpu_ctx *c, int32_t n_heads, int32_t max_ctx);

KVS_CPU_DECLARE(void, kvs_cpu_rms_norm, kvs_cpu_ctx *c, float *y, const float *x, const float *w,
                int64_t n, int64_t dim, float eps);
KVS_CPU_DECLARE(void, kvs_cpu_rope, kvs_cpu_ctx *c, float *x, const int32_t *pos, int64_t n,
                int32_t n_heads, int32_t head_dim, int32_t rot_dim, float freq_base,
                float freq_scale, bool neox);
KVS_CPU_DECLARE(void, kvs_cpu_silu_mul, kvs_cpu_ctx *c, float *y, const float *gate,
                const float *up, int64_t n);
KVS_CPU_DECLARE(void, kvs_cpu_add, kvs_cpu_ctx *c, float *y, const float *a, const float *b,
                int64_t n);
KVS_CPU_DECLARE(void, kvs_cpu_get_rows, kvs_cpu_ctx *c, float *y, const void *table, kvs_dtype t,
                int64_t row_len, const int32_t *ids, int64_t n);
KVS_CPU_DECLARE(void, kvs_cpu_kv_store, kvs_cpu_ctx *c, const kvs_kv_view *kv, const float *k,
                const float *v, const int32_t *slots, int64_t n_tokens);

/* Memory as the OS reports it (see cpu_backend.h for the rules). */
kvs_status kvs_cpu_mem_info(uint64_t device_memory, kvs_mem_info *out, kvs_error *err);
/* Bytes of a "Key:  123 kB" line of /proc/meminfo or /proc/self/status
 * text; false if the key is missing or its value malformed. */
bool kvs_cpu_proc_field(const char *text, const char *key, uint64_t *bytes);
/* A cgroup memory limit file's value: a number, or "max" (UINT64_MAX). */
bool kvs_cpu_parse_limit(const char *text, uint64_t *out);
/* The tightest cgroup (v2, else v1) memory limit of this process, and its
 * current usage; UINT64_MAX when there is none or it cannot be read. */
void kvs_cpu_cgroup_memory(uint64_t *limit, uint64_t *usage);

#endif
