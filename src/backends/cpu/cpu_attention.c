/*
 * cpu_attention.c - causal grouped-query attention over the paged KV cache.
 *
 * Work items are a token and a group of the query heads that read the same
 * KV head (up to ATTN_GROUP of them), dealt round-robin to a few tasks per
 * thread so that the long-context items of a prefill are spread evenly.
 * For one item: walk the sequence's block table; within a block the KV
 * head's keys are contiguous [block_size][head_dim], so each block is a
 * short dense stream, and every head of the group is run over the block
 * while it is in L1: the keys and values come from memory once per group,
 * not once per head (grouped-query models share a KV head between 4-8
 * query heads; at a 4096-token context decode was reading the KV cache 4
 * times).  For each head, scores (scaled dot products) go to its slice of
 * the thread's scratch, softmax subtracts the max and exponentiates in
 * f32, and the output accumulates exp-weighted V rows, divided by the sum
 * at the end.  Each head's float operations are those of the head alone,
 * in the same order, whatever its group, the batch or the thread count.
 *
 * Metadata comes from the engine and is trusted for sizes, but the kernel
 * stays in bounds regardless: a position past the scratch (pos >= max_ctx)
 * is clamped, a missing block (-1) contributes nothing, and a token with
 * nothing to attend to gets zeros.
 */
#include "backends/cpu/cpu_internal.h"
#include "backends/cpu/cpu_simd.h"

#include <math.h>
#include <string.h>

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* Query heads per work item at most (their scores live at once). */
#define ATTN_GROUP 4

/* Fetch bytes at p into the cache ahead of use: a KV block (a few KiB) is
 * a page of its own somewhere in the pool, where the hardware prefetchers,
 * which follow a stream within a page, would start cold at every block. */
static inline void prefetch_span(const void *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        __builtin_prefetch((const char *)p + o);
}

/* Scores of one pair: max_ctx floats rounded up to whole vectors (and to
 * 64 bytes, so that threads' slices do not share cache lines). */
static size_t score_bytes(int32_t max_ctx)
{
    size_t n = max_ctx > 0 ? (size_t)max_ctx : 1;
    return align64((n + KVS_VL - 1) / KVS_VL * KVS_VL * sizeof(float));
}

/* Heads per item for n_heads query heads sharing each of n_kv KV heads:
 * the group is split into pieces of at most ATTN_GROUP. */
static int32_t group_heads(int32_t n_heads, int32_t n_kv)
{
    const int32_t g = n_heads / n_kv;
    return g < ATTN_GROUP ? g : ATTN_GROUP;
}

#ifndef KVS_CPU_SCALAR
size_t kvs_cpu_attention_scratch_bytes(const kvs_cpu_ctx *c, int32_t n_heads, int32_t max_ctx)
{
    /* whatever the KV heads, an item has at most group_heads(n_heads, 1) heads */
    const size_t per_thread = (size_t)(n_heads > 0 ? group_heads(n_heads, 1) : ATTN_GROUP);
    return (size_t)c->n_threads * per_thread * score_bytes(max_ctx) + 64;
}
#endif

/* Element offset of KV head kvh's rows in cache block blk ([block][kv head][bs][hd]). */
static inline int64_t block_off(int32_t blk, int nkv, int64_t kvh, int bs, int hd)
{
    return (((int64_t)blk * nkv + kvh) * bs) * hd;
}

/* The block after the one at positions p0 .. p0 + bs - 1 of a sequence of
 * npos positions, or -1 when there is none (for prefetching it). */
static inline int32_t next_block(const int32_t *bt, int32_t max_blocks, int64_t p0, int bs, int64_t npos)
{
    const int64_t bi = p0 / bs + 1;
    return p0 + bs < npos && bi < max_blocks ? bt[bi] : -1;
}

/* Dot product of q with a key row, for each KV type. */
#define DEF_ROWOPS(T, LOADV, ELEM, ETYPE)                                        \
    KVS_SIMD_INLINE float dot_##T(const float *q, const ETYPE *k, int hd)       \
    {                                                                           \
        kvs_vf a0 = vf_zero(), a1 = vf_zero();                                  \
        int d = 0;                                                              \
        for (; d + 2 * KVS_VL <= hd; d += 2 * KVS_VL) {                         \
            a0 = vf_fma(vf_load(q + d), LOADV(k + d), a0);                      \
            a1 = vf_fma(vf_load(q + d + KVS_VL), LOADV(k + d + KVS_VL), a1);    \
        }                                                                       \
        for (; d + KVS_VL <= hd; d += KVS_VL)                                   \
            a0 = vf_fma(vf_load(q + d), LOADV(k + d), a0);                      \
        float s = vf_hsum(vf_add(a0, a1));                                      \
        for (; d < hd; d++)                                                     \
            s += q[d] * ELEM(k[d]);                                             \
        return s;                                                               \
    }

#define ELEM_F32(x) (x)
DEF_ROWOPS(f32, vf_load, ELEM_F32, float)
DEF_ROWOPS(f16, vf_load_f16, kvs_fp16_to_fp32, uint16_t)
DEF_ROWOPS(bf16, vf_load_bf16, kvs_bf16_to_fp32, uint16_t)

typedef struct attn_job {
    float *out;
    const float *q;
    const kvs_kv_view *kv;
    const kvs_attn_meta *meta;
    int32_t n_heads;
    float scale;
    uint8_t *scratch;        /* 64-byte aligned */
    size_t stride;           /* bytes of scratch per thread */
    size_t head_floats;      /* floats of a head's scores in it */
    int32_t per_kv;          /* query heads per KV head */
    int32_t gh, n_sub;       /* heads per item; items per KV head and token */
    int64_t n_items;
} attn_job;

/* o[0..NVG vectors) = sum over the cnt rows v_i (hd apart) of w[i] * v_i,
 * accumulated in registers (adding to o's previous value). */
#define DEF_PV(T, LOADV, ETYPE)                                                           \
    KVS_SIMD_INLINE void pv_##T(float *o, const float *w, const ETYPE *v, int64_t cnt,    \
                                int hd, const int NVG)                                    \
    {                                                                                     \
        kvs_vf acc[8];                                                                    \
        for (int u = 0; u < NVG; u++)                                                     \
            acc[u] = vf_load(o + u * KVS_VL);                                             \
        for (int64_t i = 0; i < cnt; i++) {                                               \
            const kvs_vf wv = vf_set1(w[i]);                                              \
            for (int u = 0; u < NVG; u++)                                                 \
                acc[u] = vf_fma(wv, LOADV(v + i * hd + u * KVS_VL), acc[u]);              \
        }                                                                                 \
        for (int u = 0; u < NVG; u++)                                                     \
            vf_store(o + u * KVS_VL, acc[u]);                                             \
    }                                                                                     \
    /* The whole of o (hd elements) from one block's cnt rows. */                         \
    static void pv_block_##T(float *o, const float *w, const ETYPE *v, int64_t cnt, int hd) \
    {                                                                                     \
        int d = 0;                                                                        \
        for (; d + 8 * KVS_VL <= hd; d += 8 * KVS_VL)                                     \
            pv_##T(o + d, w, v + d, cnt, hd, 8);                                          \
        switch ((hd - d) / KVS_VL) {                                                      \
        case 7: pv_##T(o + d, w, v + d, cnt, hd, 7); break;                               \
        case 6: pv_##T(o + d, w, v + d, cnt, hd, 6); break;                               \
        case 5: pv_##T(o + d, w, v + d, cnt, hd, 5); break;                               \
        case 4: pv_##T(o + d, w, v + d, cnt, hd, 4); break;                               \
        case 3: pv_##T(o + d, w, v + d, cnt, hd, 3); break;                               \
        case 2: pv_##T(o + d, w, v + d, cnt, hd, 2); break;                               \
        case 1: pv_##T(o + d, w, v + d, cnt, hd, 1); break;                               \
        default: break;                                                                   \
        }                                                                                 \
        for (d += (hd - d) / KVS_VL * KVS_VL; d < hd; d++)                                \
            for (int64_t i = 0; i < cnt; i++)                                             \
                o[d] += w[i] * ELEM_##T(v[i * hd + d]);                                   \
    }

#define ELEM_f32(x) (x)
#define ELEM_f16(x) kvs_fp16_to_fp32(x)
#define ELEM_bf16(x) kvs_bf16_to_fp32(x)
DEF_PV(f32, vf_load, float)
DEF_PV(f16, vf_load_f16, uint16_t)
DEF_PV(bf16, vf_load_bf16, uint16_t)

/* sc[0..n) = e^(sc - mx), returning their sum.  The scratch holds whole
 * vectors, so every score goes through the same vector code; lanes past n
 * are set to -inf (e^-inf = 0) first. */
static float exp_scores(float *sc, int64_t n, float mx)
{
    const int64_t nv = (n + KVS_VL - 1) / KVS_VL * KVS_VL;
    for (int64_t p = n; p < nv; p++)
        sc[p] = -INFINITY;
    const kvs_vf m = vf_set1(mx);
    kvs_vf sum = vf_zero();
    for (int64_t p = 0; p < nv; p += KVS_VL) {
        kvs_vf e = vf_exp(vf_add(vf_load(sc + p), vf_mul(m, vf_set1(-1.0f))));
        vf_store(sc + p, e);
        sum = vf_add(sum, e);
    }
    return vf_hsum(sum);
}

/* One item for KV elements of type ETYPE: the heads h0 .. h0 + ng - 1 of
 * token tok, which all read KV head kvh; head g's scores at sc + g
 * head_floats. */
#define DEF_ATTEND(T, ETYPE)                                                                  \
    static void attend_##T(const attn_job *j, int64_t tok, int h0, int ng, float *sc)        \
    {                                                                                         \
        const kvs_kv_view *kv = j->kv;                                                        \
        const kvs_attn_meta *me = j->meta;                                                    \
        const int hd = kv->head_dim, bs = kv->block_size, nkv = kv->n_kv_heads;               \
        const size_t hf = j->head_floats;                                                     \
        float *o = j->out + (tok * j->n_heads + h0) * (int64_t)hd;                            \
        const float *qv = j->q + (tok * j->n_heads + h0) * (int64_t)hd;                       \
        memset(o, 0, (size_t)ng * (size_t)hd * sizeof(float));                                \
        int64_t pos = me->tok_pos[tok];                                                       \
        if (pos < 0)                                                                          \
            return;                                                                           \
        if (pos >= me->max_ctx)                                                               \
            pos = (int64_t)me->max_ctx - 1;                                                   \
        const int64_t npos = pos + 1, kvh = h0 / j->per_kv;                                   \
        const int32_t *bt = me->block_tables + (int64_t)me->tok_seq[tok] * me->max_blocks;    \
        const ETYPE *K = kv->k, *V = kv->v;                                                   \
        /* sliding window: positions before lo are masked; whole blocks skipped */          \
        const int64_t lo = me->window > 0 && npos > me->window ? npos - me->window : 0;      \
        const int64_t first = lo / bs * bs;                                                   \
        const float cap = me->softcap;                                                        \
        float mx[ATTN_GROUP], sum[ATTN_GROUP];                                                \
        for (int g = 0; g < ng; g++) {                                                        \
            mx[g] = -INFINITY;                                                                \
            for (int64_t p = 0; p < first; p++)                                               \
                sc[g * hf + p] = -INFINITY;                                                   \
        }                                                                                     \
        for (int64_t p0 = first; p0 < npos; p0 += bs) {                                       \
            int64_t bi = p0 / bs, cnt = npos - p0 < bs ? npos - p0 : bs;                      \
            int32_t blk = bi < me->max_blocks ? bt[bi] : -1;                                  \
            const ETYPE *kb = blk < 0 ? NULL : K + block_off(blk, nkv, kvh, bs, hd);          \
            const int32_t nxt = next_block(bt, me->max_blocks, p0, bs, npos);                  \
            if (nxt >= 0) /* the next block's keys while this one is computed */              \
                prefetch_span(K + block_off(nxt, nkv, kvh, bs, hd), (size_t)bs * hd * sizeof(ETYPE)); \
            for (int g = 0; g < ng; g++) { /* the block's keys in L1 after the first head */ \
                float *s = sc + g * hf;                                                       \
                const float *qg = qv + (int64_t)g * hd;                                       \
                for (int64_t i = 0; i < cnt; i++) {                                           \
                    if (!kb || p0 + i < lo) {                                                 \
                        s[p0 + i] = -INFINITY;                                                \
                        continue;                                                             \
                    }                                                                         \
                    float d = dot_##T(qg, kb + i * hd, hd) * j->scale;                        \
                    if (cap > 0.0f)                                                           \
                        d = cap * tanhf(d / cap);                                             \
                    s[p0 + i] = d;                                                            \
                    mx[g] = d > mx[g] ? d : mx[g];                                            \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        for (int g = 0; g < ng; g++) /* a head with nothing to attend to keeps zeros */       \
            sum[g] = mx[g] == -INFINITY ? 0.0f : exp_scores(sc + g * hf, npos, mx[g]);       \
        for (int64_t p0 = first; p0 < npos; p0 += bs) {                                       \
            int64_t bi = p0 / bs, cnt = npos - p0 < bs ? npos - p0 : bs;                      \
            int32_t blk = bi < me->max_blocks ? bt[bi] : -1;                                  \
            if (blk < 0)                                                                      \
                continue;                                                                     \
            const ETYPE *vb = V + block_off(blk, nkv, kvh, bs, hd);                            \
            const int32_t nxt = next_block(bt, me->max_blocks, p0, bs, npos);                  \
            if (nxt >= 0) /* and the next block's values */                                    \
                prefetch_span(V + block_off(nxt, nkv, kvh, bs, hd), (size_t)bs * hd * sizeof(ETYPE)); \
            for (int g = 0; g < ng; g++) /* the block's values in L1 after the first head */ \
                if (mx[g] != -INFINITY)                                                       \
                    pv_block_##T(o + (int64_t)g * hd, sc + g * hf + p0, vb, cnt, hd);         \
        }                                                                                     \
        for (int g = 0; g < ng; g++) {                                                        \
            if (mx[g] == -INFINITY)                                                           \
                continue;                                                                     \
            const float inv = 1.0f / sum[g];                                                  \
            for (int d = 0; d < hd; d++)                                                      \
                o[(int64_t)g * hd + d] *= inv;                                                \
        }                                                                                     \
    }

DEF_ATTEND(f32, float)
DEF_ATTEND(f16, uint16_t)
DEF_ATTEND(bf16, uint16_t)

static void attn_task(void *arg, int task, int n_tasks, int thread)
{
    const attn_job *j = arg;
    float *sc = (float *)(j->scratch + (size_t)thread * j->stride);
    const int32_t per_kv = j->per_kv;
    for (int64_t p = task; p < j->n_items; p += n_tasks) {
        /* item p: token p / (n_kv n_sub), KV head, then its piece of the group */
        const int64_t tok = p / ((int64_t)j->kv->n_kv_heads * j->n_sub);
        const int32_t r = (int32_t)(p % ((int64_t)j->kv->n_kv_heads * j->n_sub));
        const int32_t g0 = r % j->n_sub * j->gh;
        const int h0 = r / j->n_sub * per_kv + g0, ng = per_kv - g0 < j->gh ? per_kv - g0 : j->gh;
        switch (j->kv->dtype) {
        case KVS_DTYPE_F16: attend_f16(j, tok, h0, ng, sc); break;
        case KVS_DTYPE_BF16: attend_bf16(j, tok, h0, ng, sc); break;
        default: attend_f32(j, tok, h0, ng, sc); break;
        }
    }
}

void KVS_CPU_FN(kvs_cpu_attention)(kvs_cpu_ctx *c, float *out, const float *q,
                                   const kvs_kv_view *kv, const kvs_attn_meta *meta,
                                   int32_t n_heads, float scale, void *scratch)
{
    const kvs_attn_meta *me = meta;
    if (me->n_tokens <= 0 || n_heads <= 0)
        return;
    const int64_t n_pairs = (int64_t)me->n_tokens * n_heads;
    if (kv->n_kv_heads <= 0 || n_heads % kv->n_kv_heads != 0 || kv->block_size <= 0 ||
        kv->head_dim <= 0 || me->max_ctx <= 0 ||
        (kv->dtype != KVS_DTYPE_F32 && kv->dtype != KVS_DTYPE_F16 && kv->dtype != KVS_DTYPE_BF16)) {
        if (kv->head_dim > 0)
            memset(out, 0, (size_t)n_pairs * (size_t)kv->head_dim * sizeof(float));
        return;
    }
    uintptr_t base = ((uintptr_t)scratch + 63) & ~(uintptr_t)63;
    const int32_t gh = group_heads(n_heads, kv->n_kv_heads), per_kv = n_heads / kv->n_kv_heads;
    const int32_t n_sub = (per_kv + gh - 1) / gh;
    attn_job j = {.out = out, .q = q, .kv = kv, .meta = meta, .n_heads = n_heads, .scale = scale,
                  .scratch = (uint8_t *)base, .stride = (size_t)gh * score_bytes(me->max_ctx), .per_kv = per_kv,
                  .head_floats = score_bytes(me->max_ctx) / sizeof(float), .gh = gh, .n_sub = n_sub,
                  .n_items = (int64_t)me->n_tokens * kv->n_kv_heads * n_sub};
    /* Work ~ pairs * context * head_dim; small steps run on the caller alone. */
    double work = (double)n_pairs * (double)me->max_ctx * (double)kv->head_dim;
    int64_t n_tasks = 1;
    if (c->n_threads > 1 && work >= 32768.0)
        n_tasks = j.n_items < (int64_t)c->n_threads * 8 ? j.n_items : (int64_t)c->n_threads * 8;
    kvs_pool_run(c->pool, attn_task, &j, (int)n_tasks);
}
