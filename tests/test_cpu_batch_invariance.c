/*
 * test_cpu_batch_invariance.c - a row's result must not depend on the batch
 * it is computed in.
 *
 * The engine compares greedy generation of requests batched together with
 * the same requests run one at a time, and prefill (hundreds of rows per
 * matmul) with decode (one row): both only agree token for token if every
 * kernel computes a row of its output with the same float operations
 * whatever the other rows are.  Here: the matmul of n rows against each
 * row alone (the decode path) and against the same row among different
 * neighbours, for every weight type, for k below and above the blocking
 * sizes and for n on both sides of the decode/prefill switch; and the
 * attention of a batch of decode tokens and of a prefill chunk against
 * each token alone.  Comparisons are bit for bit, on the fast path and on
 * the scalar reference path, with one and with three threads.
 */
#include "cpu_test_util.h"

#include <stdio.h>
#include <string.h>

static const kvs_dtype TYPES[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16, KVS_DTYPE_Q8_0,
                                  KVS_DTYPE_Q4_0};

typedef void (*mm_fn)(kvs_cpu_ctx *c, float *y, const float *x, const void *w, kvs_dtype wt,
                      int64_t n, int64_t k, int64_t m);

static void check_rows(mm_fn mm, kvs_cpu_ctx *c, kvs_dtype t, int64_t n, int64_t k, int64_t m,
                       test_rng *rng)
{
    uint64_t rb;
    assert_true(kvs_dtype_row_bytes(t, (uint64_t)k, &rb));
    float *x = xmalloc((size_t)(n * k) * 4), *x2 = xmalloc((size_t)(n * k) * 4);
    float *wf = xmalloc((size_t)k * 4);
    uint8_t *w = xmalloc((size_t)(rb * (uint64_t)m));
    float *y = xmalloc((size_t)(n * m) * 4), *y2 = xmalloc((size_t)(n * m) * 4);
    float *y1 = xmalloc((size_t)m * 4);
    rng_fill(rng, x, (size_t)(n * k));
    for (int64_t j = 0; j < m; j++) {
        rng_fill(rng, wf, (size_t)k);
        kvs_dtype_from_f32(t, wf, w + (uint64_t)j * rb, (size_t)k);
    }
    mm(c, y, x, w, t, n, k, m);
    /* Each row alone. */
    for (int64_t i = 0; i < n; i++) {
        mm(c, y1, x + i * k, w, t, 1, k, m);
        if (memcmp(y1, y + i * m, (size_t)m * 4) != 0)
            fail_msg("matmul %s n=%lld k=%lld m=%lld: row %lld alone differs from the batch",
                     kvs_dtype_name(t), (long long)n, (long long)k, (long long)m, (long long)i);
    }
    /* The same rows in reverse order, with other rows between them. */
    if (n > 1) {
        int64_t half = n / 2;
        for (int64_t i = 0; i < half; i++)
            memcpy(x2 + (2 * i) * k, x + (half - 1 - i) * k, (size_t)k * 4);
        rng_fill(rng, x2 + k, 1);
        for (int64_t i = 0; i < half; i++)
            if (2 * i + 1 < n)
                rng_fill(rng, x2 + (2 * i + 1) * k, (size_t)k);
        for (int64_t i = 2 * half; i < n; i++)
            rng_fill(rng, x2 + i * k, (size_t)k);
        mm(c, y2, x2, w, t, n, k, m);
        for (int64_t i = 0; i < half; i++)
            if (memcmp(y2 + (2 * i) * m, y + (half - 1 - i) * m, (size_t)m * 4) != 0)
                fail_msg("matmul %s n=%lld k=%lld: row %lld depends on its neighbours",
                         kvs_dtype_name(t), (long long)n, (long long)k, (long long)(half - 1 - i));
    }
    free(x), free(x2), free(wf), free(w), free(y), free(y2), free(y1);
}

static void test_matmul_rows_independent(void **state)
{
    kvs_backend *b1 = make_cpu(1), *b3 = make_cpu(3);
    test_rng rng = {0x5eed};
    const int64_t ns[] = {2, 8, 9, 33, 130};
    for (size_t ti = 0; ti < sizeof TYPES / sizeof TYPES[0]; ti++) {
        kvs_dtype t = TYPES[ti];
        bool quant = kvs_dtype_block_elems(t) > 1;
        const int64_t ks_q[] = {64, 800, 2080}, ks_f[] = {45, 800, 2083};
        const int64_t *ks = quant ? ks_q : ks_f;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t ki = 0; ki < 3; ki++) {
                int64_t m = ki == 2 ? 21 : 70;
                check_rows(kvs_cpu_matmul, cpu_ctx(ni % 2 ? b1 : b3), t, ns[ni], ks[ki], m, &rng);
                check_rows(kvs_cpu_matmul_ref, cpu_ctx(b3), t, ns[ni], ks[ki], 13, &rng);
            }
    }
    /* Rows longer than a prefill panel holds (the decode path takes over). */
    check_rows(kvs_cpu_matmul, cpu_ctx(b3), KVS_DTYPE_Q8_0, 20, 70016, 5, &rng);
    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
}

static kvs_backend *make_cpu_default(int n_threads)
{
    kvs_backend *b = NULL;
    kvs_error err;
    kvs_cpu_options o = {.n_threads = n_threads, .int8_all = true}; /* quantized types: the int8 matmul */
    if (kvs_cpu_backend_new(&b, &o, &err) != KVS_OK)
        fail_msg("kvs_cpu_backend_new: %s", err.msg);
    return b;
}

/* The k-quants and the legacy quantized types, on both matmuls (int8 activations, the default, and f32):
 * rows of random blocks; n on both sides of the streaming/panel switch of
 * each, and rows spread over several chunks of quantized x (k = 256 * 40,
 * n = 200: with 3 threads the int8 matmul's shared chunk holds 28 such rows). */
static void check_kq(kvs_backend *bi8, kvs_backend *bf32, kvs_dtype t, int64_t n, int64_t k, int64_t m,
                     test_rng *rng)
{
    uint64_t rb;
    assert_true(kvs_dtype_row_bytes(t, (uint64_t)k, &rb));
    uint8_t *w = xmalloc((size_t)(rb * (uint64_t)m));
    random_blocks(rng, t, w, (size_t)(rb / kvs_dtype_block_bytes(t)) * (size_t)m);
    float *x = xmalloc((size_t)(n * k) * 4), *y = xmalloc((size_t)(n * m) * 4);
    float *y1 = xmalloc((size_t)m * 4), *yr = xmalloc((size_t)(n * m) * 4);
    rng_fill(rng, x, (size_t)(n * k));
    kvs_backend *bs[] = {bi8, bf32};
    for (int bi = 0; bi < 2; bi++) {
        kvs_cpu_ctx *c = cpu_ctx(bs[bi]);
        kvs_cpu_matmul(c, y, x, w, t, n, k, m);
        for (int64_t i = 0; i < n; i++) {
            kvs_cpu_matmul(c, y1, x + i * k, w, t, 1, k, m);
            if (memcmp(y1, y + i * m, (size_t)m * 4) != 0)
                fail_msg("matmul %s (%s) n=%lld k=%lld: row %lld alone differs from the batch", kvs_dtype_name(t),
                         bi ? "f32" : "int8", (long long)n, (long long)k, (long long)i);
        }
        if (bi == 0) { /* the int8 matmul: the scalar twin gives the same bits */
            kvs_cpu_matmul_ref(c, yr, x, w, t, n, k, m);
            if (memcmp(y, yr, (size_t)(n * m) * 4) != 0)
                fail_msg("int8 matmul %s n=%lld k=%lld: SIMD and scalar paths differ", kvs_dtype_name(t),
                         (long long)n, (long long)k);
        }
    }
    free(w), free(x), free(y), free(y1), free(yr);
}

static void test_matmul_rows_independent_kquants(void **state)
{
    (void)state;
    kvs_backend *i1 = make_cpu_default(1), *i3 = make_cpu_default(3), *f3 = make_cpu(3);
    test_rng rng = {0x6b71};
    const kvs_dtype kq[] = {KVS_DTYPE_Q2_K, KVS_DTYPE_Q3_K, KVS_DTYPE_Q4_K, KVS_DTYPE_Q5_K, KVS_DTYPE_Q6_K,
                            KVS_DTYPE_Q8_0, KVS_DTYPE_Q4_0, KVS_DTYPE_Q4_1, KVS_DTYPE_Q5_0, KVS_DTYPE_Q5_1};
    const int64_t ns[] = {2, 5, 9, 33, 130}, ks[] = {256, 1280, 2304};
    for (size_t ti = 0; ti < sizeof kq / sizeof kq[0]; ti++) {
        for (size_t ni = 0; ni < 5; ni++)
            for (size_t ki = 0; ki < 3; ki++)
                check_kq(ni % 2 ? i1 : i3, f3, kq[ti], ns[ni], ks[ki], ki == 2 ? 21 : 38, &rng);
        check_kq(i3, f3, kq[ti], 200, 256 * 40, 5, &rng);
    }
    kvs_backend_destroy(i1);
    kvs_backend_destroy(i3);
    kvs_backend_destroy(f3);
}

/* Attention of one sequence's tokens at positions [p0, p0 + n) over a
 * cache holding 0..p0+n-1: all at once, and each alone. */
typedef void (*attn_fn)(kvs_cpu_ctx *c, float *out, const float *q, const kvs_kv_view *kv,
                        const kvs_attn_meta *meta, int32_t n_heads, float scale, void *scratch);

static void check_attention(attn_fn at, kvs_cpu_ctx *c, kvs_dtype dt, int32_t nh, int32_t nkv,
                            int32_t hd, int32_t n_seq, int32_t p0, int32_t n, test_rng *rng)
{
    const int32_t bs = 16, ctx = p0 + n, max_blocks = (ctx + bs - 1) / bs;
    const int32_t n_blocks = n_seq * max_blocks;
    const size_t es = dt == KVS_DTYPE_F32 ? 4 : 2;
    const size_t pool = (size_t)n_blocks * nkv * bs * hd;
    uint8_t *kc = xmalloc(pool * es), *vc = xmalloc(pool * es);
    float *tmp = xmalloc(pool * 4);
    rng_fill(rng, tmp, pool);
    kvs_dtype_from_f32(dt, tmp, kc, pool);
    rng_fill(rng, tmp, pool);
    kvs_dtype_from_f32(dt, tmp, vc, pool);
    kvs_kv_view kv = {.k = kc, .v = vc, .dtype = dt, .block_size = bs, .n_kv_heads = nkv,
                      .head_dim = hd};
    int32_t *bt = xmalloc((size_t)n_blocks * 4);
    for (int32_t i = 0; i < n_blocks; i++)   /* interleave the sequences' blocks */
        bt[(i % n_seq) * max_blocks + i / n_seq] = i;
    /* Tokens: n per sequence, sequence-major. */
    const int32_t nt = n * n_seq;
    int32_t *seq = xmalloc((size_t)nt * 4), *pos = xmalloc((size_t)nt * 4);
    float *q = xmalloc((size_t)nt * nh * hd * 4), *out = xmalloc((size_t)nt * nh * hd * 4);
    float *out1 = xmalloc((size_t)nh * hd * 4);
    for (int32_t t = 0; t < nt; t++) {
        seq[t] = t / n;
        pos[t] = p0 + t % n;
    }
    rng_fill(rng, q, (size_t)nt * nh * hd);
    size_t sb = kvs_cpu_attention_scratch_bytes(c, nh, ctx);
    void *scratch = xmalloc(sb);
    kvs_attn_meta me = {.n_tokens = nt, .tok_seq = seq, .tok_pos = pos, .slots = NULL,
                        .block_tables = bt, .max_blocks = max_blocks, .max_ctx = ctx};
    at(c, out, q, &kv, &me, nh, 0.125f, scratch);
    for (int32_t t = 0; t < nt; t++) {
        kvs_attn_meta m1 = {.n_tokens = 1, .tok_seq = seq + t, .tok_pos = pos + t, .slots = NULL,
                            .block_tables = bt, .max_blocks = max_blocks, .max_ctx = pos[t] + 1};
        at(c, out1, q + (size_t)t * nh * hd, &kv, &m1, nh, 0.125f, scratch);
        if (memcmp(out1, out + (size_t)t * nh * hd, (size_t)nh * hd * 4) != 0)
            fail_msg("attention %s heads %d/%d hd %d: token %d (seq %d pos %d) alone differs "
                     "from the batch of %d", kvs_dtype_name(dt), nh, nkv, hd, t, seq[t], pos[t], nt);
    }
    free(kc), free(vc), free(tmp), free(bt), free(seq), free(pos), free(q), free(out);
    free(out1), free(scratch);
}

static void test_attention_tokens_independent(void **state)
{
    kvs_backend *b1 = make_cpu(1), *b3 = make_cpu(3);
    test_rng rng = {0xa77e};
    const kvs_dtype dts[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16};
    for (size_t i = 0; i < 3; i++) {
        kvs_cpu_ctx *c = cpu_ctx(i % 2 ? b1 : b3);
        /* Decode: 7 sequences, one token each, at position 150. */
        check_attention(kvs_cpu_attention, c, dts[i], 8, 2, 64, 7, 150, 1, &rng);
        /* A prefill chunk: 37 tokens of one sequence from position 20. */
        check_attention(kvs_cpu_attention, c, dts[i], 4, 4, 48, 1, 20, 37, &rng);
        /* A chunk from position 0 and head_dim not a multiple of the vector width. */
        check_attention(kvs_cpu_attention, c, dts[i], 6, 3, 40, 2, 0, 70, &rng);
        check_attention(kvs_cpu_attention_ref, c, dts[i], 8, 2, 64, 3, 30, 9, &rng);
    }
    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_rows_independent),
        cmocka_unit_test(test_matmul_rows_independent_kquants),
        cmocka_unit_test(test_attention_tokens_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
