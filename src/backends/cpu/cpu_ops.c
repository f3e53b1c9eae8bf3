/*
 * cpu_ops.c - the small kernels: rms_norm, rope, silu_mul, add, get_rows
 * and kv_store.
 *
 * Each splits its rows (or, for element-wise ops, equal chunks) over the
 * pool when the op is big enough to pay for the wake-up, and runs on the
 * caller otherwise.  Per-row arithmetic never depends on the split.
 *
 * RoPE angles: theta_i = pos * freq_scale * freq_base^(-2i/rot_dim) is
 * computed in double, and so are its cosine and sine, which are then
 * rounded to float; the rotation itself is done in float.  llama.cpp
 * instead builds theta in float by repeated multiplication, which loses
 * up to ~1e-4 rad at positions in the thousands; doing the angle in double
 * keeps every rotated value within float rounding of the exact result.
 */
#include "backends/cpu/cpu_internal.h"
#include "backends/cpu/cpu_simd.h"

#include <math.h>
#include <string.h>

#define PAR_MIN_ELEMS 65536   /* below this many elements an op runs on the caller */
#define ROPE_MAX_PAIRS 512    /* angle cache on the stack (rot_dim <= 1024) */

typedef struct rows_job {
    void (*rows)(const struct rows_job *j, int64_t i0, int64_t i1);
    int64_t n;               /* rows (or elements) to split */
    float *y;
    const float *a, *b;
    const void *table;
    kvs_dtype t;
    int64_t dim;
    const int32_t *ids;
    float eps, freq_base, freq_scale;
    int32_t n_heads, head_dim, rot_dim;
    bool neox;
} rows_job;

static void rows_task(void *arg, int task, int n_tasks, int thread)
{
    const rows_job *j = arg;
    int64_t i0 = j->n * task / n_tasks, i1 = j->n * (task + 1) / n_tasks;
    if (i0 < i1)
        j->rows(j, i0, i1);
}

/* Run j->rows over [0, j->n), split over the pool if elems is large. */
static void run_rows(kvs_cpu_ctx *c, rows_job *j, double elems)
{
    if (j->n <= 0)
        return;
    int64_t tasks = 1;
    if (c->n_threads > 1 && elems >= PAR_MIN_ELEMS)
        tasks = j->n < c->n_threads ? j->n : c->n_threads;
    kvs_pool_run(c->pool, rows_task, j, (int)tasks);
}

/* --- rms_norm --- */

static void rms_rows(const rows_job *j, int64_t i0, int64_t i1)
{
    const int64_t dim = j->dim;
    for (int64_t i = i0; i < i1; i++) {
        const float *x = j->a + i * dim;
        float *y = j->y + i * dim;
        kvs_vf s0 = vf_zero(), s1 = vf_zero();
        int64_t d = 0;
        for (; d + 2 * KVS_VL <= dim; d += 2 * KVS_VL) {
            kvs_vf v0 = vf_load(x + d), v1 = vf_load(x + d + KVS_VL);
            s0 = vf_fma(v0, v0, s0);
            s1 = vf_fma(v1, v1, s1);
        }
        double sum = vf_hsum(vf_add(s0, s1));
        for (; d < dim; d++)
            sum += (double)x[d] * x[d];
        const float scale = 1.0f / sqrtf((float)(sum / (double)dim) + j->eps);
        const kvs_vf sv = vf_set1(scale);
        for (d = 0; d + KVS_VL <= dim; d += KVS_VL)
            vf_store(y + d, vf_mul(vf_mul(vf_load(x + d), sv), vf_load(j->b + d)));
        for (; d < dim; d++)
            y[d] = x[d] * scale * j->b[d];
    }
}

void KVS_CPU_FN(kvs_cpu_rms_norm)(kvs_cpu_ctx *c, float *y, const float *x, const float *w,
                                  int64_t n, int64_t dim, float eps)
{
    if (dim <= 0)
        return;
    rows_job j = {.rows = rms_rows, .n = n, .y = y, .a = x, .b = w, .dim = dim, .eps = eps};
    run_rows(c, &j, (double)n * (double)dim);
}

/* --- rope --- */

static void rope_rows(const rows_job *j, int64_t i0, int64_t i1)
{
    const int hd = j->head_dim, half = j->rot_dim / 2, nh = j->n_heads;
    double inv_freq[ROPE_MAX_PAIRS];
    float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
    const int cached = half <= ROPE_MAX_PAIRS ? half : 0;
    for (int i = 0; i < cached; i++)
        inv_freq[i] = pow((double)j->freq_base, -2.0 * i / j->rot_dim);
    for (int64_t t = i0; t < i1; t++) {
        const double p = (double)j->ids[t] * (double)j->freq_scale;
        for (int i = 0; i < cached; i++) {
            double th = p * inv_freq[i];
            cs[i] = (float)cos(th);
            sn[i] = (float)sin(th);
        }
        for (int h = 0; h < nh; h++) {
            float *x = j->y + (t * nh + h) * (int64_t)hd;
            for (int i = 0; i < half; i++) {
                float c, s;
                if (i < cached) {
                    c = cs[i];
                    s = sn[i];
                } else {
                    double th = p * pow((double)j->freq_base, -2.0 * i / j->rot_dim);
                    c = (float)cos(th);
                    s = (float)sin(th);
                }
                int a = j->neox ? i : 2 * i, b = j->neox ? i + half : 2 * i + 1;
                float x0 = x[a], x1 = x[b];
                x[a] = x0 * c - x1 * s;
                x[b] = x0 * s + x1 * c;
            }
        }
    }
}

void KVS_CPU_FN(kvs_cpu_rope)(kvs_cpu_ctx *c, float *x, const int32_t *pos, int64_t n,
                              int32_t n_heads, int32_t head_dim, int32_t rot_dim,
                              float freq_base, float freq_scale, bool neox)
{
    if (n_heads <= 0 || head_dim <= 0 || rot_dim < 2)
        return;
    if (rot_dim > head_dim)
        rot_dim = head_dim;
    rows_job j = {.rows = rope_rows, .n = n, .y = x, .ids = pos, .n_heads = n_heads,
                  .head_dim = head_dim, .rot_dim = rot_dim, .freq_base = freq_base,
                  .freq_scale = freq_scale, .neox = neox};
    run_rows(c, &j, (double)n * n_heads * rot_dim * 8.0);
}

/* --- element-wise --- */

KVS_SIMD_INLINE kvs_vf silu_mul_v(kvs_vf g, kvs_vf u)
{
    kvs_vf e = vf_exp(vf_mul(g, vf_set1(-1.0f)));
    return vf_mul(vf_div(g, vf_add(vf_set1(1.0f), e)), u);
}

/* Every element goes through the vector code (the tail through a padded
 * copy), so its value does not depend on where a thread's chunk starts. */
static void silu_rows(const rows_job *j, int64_t i0, int64_t i1)
{
    int64_t i = i0;
    for (; i + KVS_VL <= i1; i += KVS_VL)
        vf_store(j->y + i, silu_mul_v(vf_load(j->a + i), vf_load(j->b + i)));
    if (i < i1) {
        float g[KVS_VL] = {0}, u[KVS_VL] = {0}, y[KVS_VL];
        memcpy(g, j->a + i, (size_t)(i1 - i) * sizeof(float));
        memcpy(u, j->b + i, (size_t)(i1 - i) * sizeof(float));
        vf_store(y, silu_mul_v(vf_load(g), vf_load(u)));
        memcpy(j->y + i, y, (size_t)(i1 - i) * sizeof(float));
    }
}

void KVS_CPU_FN(kvs_cpu_silu_mul)(kvs_cpu_ctx *c, float *y, const float *gate, const float *up,
                                  int64_t n)
{
    rows_job j = {.rows = silu_rows, .n = n, .y = y, .a = gate, .b = up};
    run_rows(c, &j, (double)n * 8.0);
}

static void add_rows(const rows_job *j, int64_t i0, int64_t i1)
{
    int64_t i = i0;
    for (; i + KVS_VL <= i1; i += KVS_VL)
        vf_store(j->y + i, vf_add(vf_load(j->a + i), vf_load(j->b + i)));
    for (; i < i1; i++)
        j->y[i] = j->a[i] + j->b[i];
}

void KVS_CPU_FN(kvs_cpu_add)(kvs_cpu_ctx *c, float *y, const float *a, const float *b, int64_t n)
{
    rows_job j = {.rows = add_rows, .n = n, .y = y, .a = a, .b = b};
    run_rows(c, &j, (double)n / 4.0);
}

/* --- get_rows --- */

static void get_rows_rows(const rows_job *j, int64_t i0, int64_t i1)
{
    uint64_t rb = 0;
    kvs_dtype_row_bytes(j->t, (uint64_t)j->dim, &rb);
    for (int64_t i = i0; i < i1; i++)
        KVS_CPU_FN(kvs_cpu_dequant)(j->y + i * j->dim,
                                    (const uint8_t *)j->table + (uint64_t)j->ids[i] * rb, j->t, 0,
                                    j->dim);
}

void KVS_CPU_FN(kvs_cpu_get_rows)(kvs_cpu_ctx *c, float *y, const void *table, kvs_dtype t,
                                  int64_t row_len, const int32_t *ids, int64_t n)
{
    uint64_t rb;
    if (row_len <= 0 || !kvs_dtype_computable(t) || !kvs_dtype_row_bytes(t, (uint64_t)row_len, &rb))
        return;
    rows_job j = {.rows = get_rows_rows, .n = n, .y = y, .table = table, .t = t, .dim = row_len,
                  .ids = ids};
    run_rows(c, &j, (double)n * (double)row_len);
}

/* --- kv_store --- */

void KVS_CPU_FN(kvs_cpu_kv_store)(kvs_cpu_ctx *c, const kvs_kv_view *kv, const float *k,
                                  const float *v, const int32_t *slots, int64_t n_tokens)
{
    const int64_t hd = kv->head_dim, bs = kv->block_size, nkv = kv->n_kv_heads;
    if (hd <= 0 || bs <= 0 || nkv <= 0 ||
        (kv->dtype != KVS_DTYPE_F32 && kv->dtype != KVS_DTYPE_F16 && kv->dtype != KVS_DTYPE_BF16))
        return;
    const size_t es = kv->dtype == KVS_DTYPE_F32 ? 4 : 2;
    for (int64_t t = 0; t < n_tokens; t++) {
        if (slots[t] < 0)
            continue;   /* padding */
        const int64_t blk = slots[t] / bs, off = slots[t] % bs;
        for (int64_t h = 0; h < nkv; h++) {
            const size_t dst = (size_t)(((blk * nkv + h) * bs + off) * hd) * es;
            const int64_t src = (t * nkv + h) * hd;
            kvs_dtype_from_f32(kv->dtype, k + src, (uint8_t *)kv->k + dst, (size_t)hd);
            kvs_dtype_from_f32(kv->dtype, v + src, (uint8_t *)kv->v + dst, (size_t)hd);
        }
    }
}
