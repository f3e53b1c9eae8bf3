/*
 * test_cpu_kernels.c - the CPU matmul and paged attention against
 * straightforward double-precision references, for the fast path (the ops
 * table) and the portable scalar path (*_ref), and single- against
 * multi-threaded results (which must be bit-identical).
 */
#include "cpu_test_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---------------- matmul ---------------- */

static const kvs_dtype MM_TYPES[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16, KVS_DTYPE_Q8_0,
                                     KVS_DTYPE_Q4_0};

static void check_matmul(kvs_backend *b1, kvs_backend *b3, kvs_dtype t, int64_t n, int64_t k,
                         int64_t m, test_rng *rng)
{
    uint64_t rb;
    assert_true(kvs_dtype_row_bytes(t, (uint64_t)k, &rb));
    float *x = xmalloc((size_t)(n * k) * 4), *wf = xmalloc((size_t)(m * k) * 4);
    float *wd = xmalloc((size_t)(m * k) * 4);
    uint8_t *w = xmalloc((size_t)(rb * (uint64_t)m));
    float *y1 = xmalloc((size_t)(n * m) * 4), *y3 = xmalloc((size_t)(n * m) * 4);
    float *yr = xmalloc((size_t)(n * m) * 4);
    rng_fill(rng, x, (size_t)(n * k));
    rng_fill(rng, wf, (size_t)(m * k));
    for (int64_t j = 0; j < m; j++) {
        kvs_dtype_from_f32(t, wf + j * k, w + (uint64_t)j * rb, (size_t)k);
        kvs_dtype_to_f32(t, w + (uint64_t)j * rb, wd + j * k, (size_t)k);
    }
    b1->ops->matmul(b1, y1, x, w, t, n, k, m);
    b3->ops->matmul(b3, y3, x, w, t, n, k, m);
    kvs_cpu_matmul_ref(cpu_ctx(b3), yr, x, w, t, n, k, m);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < m; j++) {
            double s, sa;
            exact_dot(x + i * k, wd + j * k, k, &s, &sa);
            double tol = 1e-5 * sa + 1e-7;
            double e1 = fabs(y1[i * m + j] - s), er = fabs(yr[i * m + j] - s);
            if (e1 > tol || er > tol)
                fail_msg("matmul %s n=%lld k=%lld m=%lld y[%lld][%lld]: fast %.9g ref %.9g "
                         "exact %.9g (tol %.3g)",
                         kvs_dtype_name(t), (long long)n, (long long)k, (long long)m,
                         (long long)i, (long long)j, y1[i * m + j], yr[i * m + j], s, tol);
            worst = fmax(worst, fmax(e1, er) / (sa + 1e-30));
        }
    }
    if (memcmp(y1, y3, (size_t)(n * m) * 4) != 0)
        fail_msg("matmul %s n=%lld: 1 thread and 3 threads differ", kvs_dtype_name(t),
                 (long long)n);
    printf("  matmul %-5s n=%-3lld k=%-4lld m=%-3lld worst err / sum|xw| = %.2e\n",
           kvs_dtype_name(t), (long long)n, (long long)k, (long long)m, worst);
    free(x), free(wf), free(wd), free(w), free(y1), free(y3), free(yr);
}

static void test_matmul_all_types(void **state)
{
    kvs_backend *b1 = make_cpu(1), *b3 = make_cpu(3);
    test_rng rng = {0x1234567u};
    const int64_t ns[] = {1, 3, 8, 9, 17};
    for (size_t ti = 0; ti < sizeof MM_TYPES / sizeof MM_TYPES[0]; ti++) {
        kvs_dtype t = MM_TYPES[ti];
        bool quant = kvs_dtype_block_elems(t) > 1;
        /* k not a multiple of 64 (quantized: of 32 but not 64); one k past the KB block (1024). */
        const int64_t ks_q[] = {96, 160, 1056}, ks_f[] = {45, 100, 1061};
        const int64_t *ks = quant ? ks_q : ks_f;
        const int64_t ms[] = {13, 37, 1};
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t ki = 0; ki < 3; ki++)
                check_matmul(b1, b3, t, ns[ni], ks[ki], ms[(ni + ki) % 3], &rng);
    }
    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
}

/* Bigger shapes where the threaded split and the blocking kick in. */
static void test_matmul_large(void **state)
{
    kvs_backend *b1 = make_cpu(1), *b3 = make_cpu(3);
    test_rng rng = {0xabcdefu};
    check_matmul(b1, b3, KVS_DTYPE_Q4_0, 2, 1056, 301, &rng);
    check_matmul(b1, b3, KVS_DTYPE_Q8_0, 33, 1056, 131, &rng);
    check_matmul(b1, b3, KVS_DTYPE_F16, 21, 2100, 67, &rng);
    check_matmul(b1, b3, KVS_DTYPE_F32, 64, 257, 5, &rng);   /* few W rows: split over x rows */
    /* Prefill sliced in k (512 elements): f16 in place, 64-row panels and a remainder of 3, three
     * slices and a tail of 31; a dequantized q8_0 panel of 60 rows and a remainder of 10. */
    check_matmul(b1, b3, KVS_DTYPE_F16, 13, 1567, 131, &rng);
    check_matmul(b1, b3, KVS_DTYPE_Q8_0, 10, 2080, 70, &rng);
    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
}

/* ---------------- attention ---------------- */

typedef struct attn_case {
    int32_t n_heads, n_kv, head_dim, block_size;
    kvs_dtype dtype;
    float sharp;   /* scale = sharp / sqrt(head_dim) (0: 1) */
} attn_case;

static float round_to(kvs_dtype t, float v)
{
    if (t == KVS_DTYPE_F16)
        return kvs_fp16_to_fp32(kvs_fp32_to_fp16(v));
    if (t == KVS_DTYPE_BF16)
        return kvs_bf16_to_fp32(kvs_fp32_to_bf16(v));
    return v;
}

static void check_attention(const attn_case *ac, test_rng *rng)
{
    enum { N_SEQ = 3 };
    const int32_t seq_len[N_SEQ] = {5, 40, 150};
    const int32_t nh = ac->n_heads, nkv = ac->n_kv, hd = ac->head_dim, bs = ac->block_size;
    const size_t es = ac->dtype == KVS_DTYPE_F32 ? 4 : 2;
    int32_t max_blocks = (150 + bs - 1) / bs;
    int32_t n_blocks = N_SEQ * max_blocks + 3;   /* a few never used */

    /* Block tables: a shuffled permutation of the pool, -1 past each sequence's end. */
    int32_t *perm = xmalloc((size_t)n_blocks * 4);
    for (int32_t i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (int32_t i = n_blocks - 1; i > 0; i--) {
        int32_t r = (int32_t)((rng_uniform(rng) + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1);
        int32_t tmp = perm[i];
        perm[i] = perm[r];
        perm[r] = tmp;
    }
    int32_t *bt = xmalloc((size_t)(N_SEQ * max_blocks) * 4);
    int32_t used = 0;
    for (int s = 0; s < N_SEQ; s++)
        for (int32_t bi = 0; bi < max_blocks; bi++)
            bt[s * max_blocks + bi] = bi * bs < seq_len[s] ? perm[used++] : -1;

    /* Cache pools filled with NaN: reading a slot that was never stored poisons the result. */
    size_t pool_elems = (size_t)n_blocks * nkv * bs * hd;
    uint8_t *kc = xmalloc(pool_elems * es), *vc = xmalloc(pool_elems * es);
    float nan = NAN;
    for (size_t i = 0; i < pool_elems; i++) {
        kvs_dtype_from_f32(ac->dtype, &nan, kc + i * es, 1);
        kvs_dtype_from_f32(ac->dtype, &nan, vc + i * es, 1);
    }
    kvs_kv_view kv = {.k = kc, .v = vc, .dtype = ac->dtype, .block_size = bs, .n_kv_heads = nkv,
                      .head_dim = hd};

    /* Store every position of every sequence in one kv_store call. */
    int32_t n_all = 0;
    for (int s = 0; s < N_SEQ; s++)
        n_all += seq_len[s];
    float *ksrc = xmalloc((size_t)n_all * nkv * hd * 4), *vsrc = xmalloc((size_t)n_all * nkv * hd * 4);
    int32_t *slots = xmalloc((size_t)n_all * 4);
    rng_fill(rng, ksrc, (size_t)n_all * nkv * hd);
    rng_fill(rng, vsrc, (size_t)n_all * nkv * hd);
    int32_t *first = xmalloc(N_SEQ * 4);
    for (int s = 0, t = 0; s < N_SEQ; s++) {
        first[s] = t;
        for (int32_t p = 0; p < seq_len[s]; p++, t++)
            slots[t] = bt[s * max_blocks + p / bs] * bs + p % bs;
    }
    kvs_backend *b1 = make_cpu(1), *b3 = make_cpu(3);
    b1->ops->kv_store(b1, &kv, ksrc, vsrc, slots, n_all);

    /* kv_store put each value where the layout says. */
    for (int32_t t = 0; t < n_all; t++)
        for (int32_t h = 0; h < nkv; h++)
            for (int32_t d = 0; d < hd; d += 7) {
                size_t at = ((size_t)(slots[t] / bs) * nkv + h) * bs * hd +
                            (size_t)(slots[t] % bs) * hd + d;
                float got;
                kvs_dtype_to_f32(ac->dtype, kc + at * es, &got, 1);
                assert_float_equal(got, round_to(ac->dtype, ksrc[(t * nkv + h) * hd + d]), 0);
            }

    /* The step: seq 0 decodes at its last position, seq 1 a chunk of 10, seq 2 all 150. */
    int32_t n_tok = 1 + 10 + 150;
    int32_t *tok_seq = xmalloc((size_t)n_tok * 4), *tok_pos = xmalloc((size_t)n_tok * 4);
    int32_t nt = 0;
    tok_seq[nt] = 0, tok_pos[nt++] = seq_len[0] - 1;
    for (int32_t p = 30; p < 40; p++)
        tok_seq[nt] = 1, tok_pos[nt++] = p;
    for (int32_t p = 0; p < 150; p++)
        tok_seq[nt] = 2, tok_pos[nt++] = p;
    kvs_attn_meta meta = {.n_tokens = n_tok, .tok_seq = tok_seq, .tok_pos = tok_pos,
                          .slots = NULL, .block_tables = bt, .max_blocks = max_blocks,
                          .max_ctx = 150};
    size_t qn = (size_t)n_tok * nh * hd;
    float *q = xmalloc(qn * 4), *o1 = xmalloc(qn * 4), *o3 = xmalloc(qn * 4), *orf = xmalloc(qn * 4);
    rng_fill(rng, q, qn);
    float scale = (ac->sharp > 0 ? ac->sharp : 1.0f) / sqrtf((float)hd);
    size_t sb = b3->ops->attention_scratch_bytes(b3, nh, meta.max_ctx, n_tok);
    assert_true(sb >= 3 * 150 * sizeof(float));
    void *scratch = xmalloc(sb);
    b1->ops->attention(b1, o1, q, &kv, &meta, nh, scale, scratch);
    b3->ops->attention(b3, o3, q, &kv, &meta, nh, scale, scratch);
    kvs_cpu_attention_ref(cpu_ctx(b3), orf, q, &kv, &meta, nh, scale, scratch);

    /* Float rounding of the scores grows with their spread (sharp). */
    const double tol = 2e-6 * fmax(1.0, ac->sharp / 4.0);
    double worst = 0, *sc = xmalloc(150 * sizeof(double)), *acc = xmalloc((size_t)hd * 8);
    for (int32_t t = 0; t < n_tok; t++) {
        int32_t s = tok_seq[t], pos = tok_pos[t];
        for (int32_t h = 0; h < nh; h++) {
            int32_t g = h / (nh / nkv);
            const float *qv = q + ((size_t)t * nh + h) * hd;
            double mx = -INFINITY, sum = 0;
            for (int32_t p = 0; p <= pos; p++) {
                const float *kr = ksrc + ((size_t)(first[s] + p) * nkv + g) * hd;
                double d = 0;
                for (int32_t e = 0; e < hd; e++)
                    d += (double)qv[e] * round_to(ac->dtype, kr[e]);
                sc[p] = d * scale;
                mx = fmax(mx, sc[p]);
            }
            memset(acc, 0, (size_t)hd * 8);
            for (int32_t p = 0; p <= pos; p++) {
                double w = exp(sc[p] - mx);
                sum += w;
                const float *vr = vsrc + ((size_t)(first[s] + p) * nkv + g) * hd;
                for (int32_t e = 0; e < hd; e++)
                    acc[e] += w * round_to(ac->dtype, vr[e]);
            }
            for (int32_t e = 0; e < hd; e++) {
                size_t at = ((size_t)t * nh + h) * hd + e;
                double ex = acc[e] / sum, err = fmax(fabs(o1[at] - ex), fabs(orf[at] - ex));
                if (!(err <= tol))
                    fail_msg("attention %s hd=%d bs=%d tok %d (seq %d pos %d) head %d dim %d: "
                             "fast %.8g ref %.8g exact %.8g",
                             kvs_dtype_name(ac->dtype), hd, bs, t, s, pos, h, e, o1[at], orf[at], ex);
                worst = fmax(worst, err);
            }
        }
    }
    if (memcmp(o1, o3, qn * 4) != 0)
        fail_msg("attention: 1 thread and 3 threads differ");
    printf("  attention %-4s heads %d/%d hd %d bs %d: worst abs err %.2e\n",
           kvs_dtype_name(ac->dtype), nh, nkv, hd, bs, worst);

    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
    free(perm), free(bt), free(kc), free(vc), free(ksrc), free(vsrc), free(slots), free(first);
    free(tok_seq), free(tok_pos), free(q), free(o1), free(o3), free(orf), free(scratch);
    free(sc), free(acc);
}

static void test_attention_gqa_paged(void **state)
{
    test_rng rng = {0x5eed5eedu};
    const kvs_dtype types[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16};
    const int32_t hds[] = {48, 64}, bss[] = {16, 32};
    for (int ti = 0; ti < 3; ti++)
        for (int hi = 0; hi < 2; hi++)
            for (int bi = 0; bi < 2; bi++) {
                attn_case ac = {6, 2, hds[hi], bss[bi], types[ti], 0};
                check_attention(&ac, &rng);
            }
    attn_case mha = {4, 4, 40, 16, KVS_DTYPE_F16, 0};   /* no grouping, odd head_dim tail */
    check_attention(&mha, &rng);
    attn_case wide = {12, 2, 64, 16, KVS_DTYPE_F16, 0};   /* group 6: heads done 4 + 2 */
    check_attention(&wide, &rng);
    attn_case four = {8, 2, 32, 32, KVS_DTYPE_BF16, 0};   /* group 4 */
    check_attention(&four, &rng);
    attn_case mqa = {7, 1, 64, 16, KVS_DTYPE_F32, 0};   /* one KV head, group 7: heads done 4 + 3 */
    check_attention(&mqa, &rng);
    attn_case sharp = {6, 3, 64, 16, KVS_DTYPE_F32, 12};   /* peaked softmax: exps down to e^-80 */
    check_attention(&sharp, &rng);
}

/* A sequence whose block-table entry is missing (-1) inside its range
 * contributes nothing from that block, and stays in bounds. */
static void test_attention_missing_block(void **state)
{
    kvs_backend *b = make_cpu(2);
    const int32_t hd = 16, bs = 16;
    float kc[2 * 16 * 16], vc[2 * 16 * 16];
    for (int i = 0; i < 2 * 16 * 16; i++)
        kc[i] = 0.0f, vc[i] = (float)(i / (16 * 16)) + 1.0f;   /* block 0: V=1, block 1: V=2 */
    kvs_kv_view kv = {.k = kc, .v = vc, .dtype = KVS_DTYPE_F32, .block_size = bs, .n_kv_heads = 1,
                      .head_dim = hd};
    int32_t bt[3] = {1, -1, -1}, seq = 0, pos = 20;
    kvs_attn_meta meta = {.n_tokens = 1, .tok_seq = &seq, .tok_pos = &pos, .block_tables = bt,
                          .max_blocks = 3, .max_ctx = 21};
    float q[16] = {0}, out[16];
    void *scratch = xmalloc(b->ops->attention_scratch_bytes(b, 1, 21, 1));
    b->ops->attention(b, out, q, &kv, &meta, 1, 0.25f, scratch);
    for (int d = 0; d < hd; d++)
        assert_float_equal(out[d], 2.0f, 1e-6);   /* only block 1 (V = 2) is attended */
    free(scratch);
    kvs_backend_destroy(b);
}

int main(void)
{
    printf("cpu kernels: %s path\n", kvs_cpu_simd_name());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_all_types),
        cmocka_unit_test(test_matmul_large),
        cmocka_unit_test(test_attention_gqa_paged),
        cmocka_unit_test(test_attention_missing_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
