/*
 * test_quant_kernels.c - the CPU matmul on the block types Q4_1, Q5_0,
 * Q5_1, Q2_K .. Q6_K: the SIMD path and the scalar twin against a
 * double-precision product of the dequantized weights (kvs_dtype_to_f32,
 * itself checked bit for bit against NumPy in tests/py/test_quant_types.py),
 * on weights of random bytes (every bit pattern of quants and packed
 * scales) at odd n and m; 1 and 3 threads bit-identical; every row of a
 * batch bit-identical to the same row computed alone (decode and prefill
 * paths alike).  Also: rows the format cannot hold are refused.
 */
#include "cpu_test_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const kvs_dtype TYPES[] = {KVS_DTYPE_Q4_1, KVS_DTYPE_Q5_0, KVS_DTYPE_Q5_1, KVS_DTYPE_Q2_K,
                                  KVS_DTYPE_Q3_K, KVS_DTYPE_Q4_K, KVS_DTYPE_Q5_K, KVS_DTYPE_Q6_K};

static void check(kvs_backend *b1, kvs_backend *b3, kvs_dtype t, int64_t n, int64_t k, int64_t m,
                  test_rng *rng)
{
    uint64_t rb;
    assert_true(kvs_dtype_row_bytes(t, (uint64_t)k, &rb));
    const size_t nblk = (size_t)(rb / kvs_dtype_block_bytes(t)) * (size_t)m;
    uint8_t *w = xmalloc(rb * (size_t)m);
    float *x = xmalloc((size_t)(n * k) * 4), *wd = xmalloc((size_t)(m * k) * 4);
    float *y1 = xmalloc((size_t)(n * m) * 4), *y3 = xmalloc((size_t)(n * m) * 4);
    float *yr = xmalloc((size_t)(n * m) * 4), *y_one = xmalloc((size_t)m * 4);
    random_blocks(rng, t, w, nblk);
    rng_fill(rng, x, (size_t)(n * k));
    for (int64_t j = 0; j < m; j++)
        kvs_dtype_to_f32(t, w + (size_t)j * rb, wd + j * k, (size_t)k);
    b1->ops->matmul(b1, y1, x, w, t, n, k, m);
    b3->ops->matmul(b3, y3, x, w, t, n, k, m);
    kvs_cpu_matmul_ref(cpu_ctx(b3), yr, x, w, t, n, k, m);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < m; j++) {
            double s, sa;
            exact_dot(x + i * k, wd + j * k, k, &s, &sa);
            double tol = 1e-5 * sa + 1e-9, e1 = fabs(y1[i * m + j] - s), er = fabs(yr[i * m + j] - s);
            if (e1 > tol || er > tol)
                fail_msg("matmul %s n=%lld k=%lld m=%lld y[%lld][%lld]: simd %.9g scalar %.9g exact %.9g",
                         kvs_dtype_name(t), (long long)n, (long long)k, (long long)m, (long long)i,
                         (long long)j, y1[i * m + j], yr[i * m + j], s);
            worst = fmax(worst, fmax(e1, er) / (sa + 1e-30));
        }
    }
    if (memcmp(y1, y3, (size_t)(n * m) * 4) != 0)
        fail_msg("matmul %s n=%lld: 1 and 3 threads differ", kvs_dtype_name(t), (long long)n);
    /* batch invariance: rows 0 and n-1 alone */
    const int64_t rows[] = {0, n - 1};
    for (int r = 0; r < 2; r++) {
        b3->ops->matmul(b3, y_one, x + rows[r] * k, w, t, 1, k, m);
        if (memcmp(y_one, y1 + rows[r] * m, (size_t)m * 4) != 0)
            fail_msg("matmul %s n=%lld: row %lld alone differs from the batch", kvs_dtype_name(t),
                     (long long)n, (long long)rows[r]);
    }
    printf("  matmul %-5s n=%-3lld k=%-4lld m=%-3lld worst err / sum|xw| = %.2e\n", kvs_dtype_name(t),
           (long long)n, (long long)k, (long long)m, worst);
    free(w), free(x), free(wd), free(y1), free(y3), free(yr), free(y_one);
}

static void test_matmul_quant_types(void **state)
{
    (void)state;
    kvs_backend *b1 = make_cpu(1), *b3 = make_cpu(3);
    test_rng rng = {0x9e3779b9u};
    const int64_t ns[] = {1, 3, 8, 9, 23}, ms[] = {13, 37, 1, 5, 70};
    for (size_t ti = 0; ti < sizeof TYPES / sizeof TYPES[0]; ti++) {
        const kvs_dtype t = TYPES[ti];
        const int64_t be = (int64_t)kvs_dtype_block_elems(t);
        /* k: one block, an odd number of blocks, and rows longer than a prefill panel holds */
        const int64_t ks[] = {be, be * 3, be == 256 ? 256 * 5 : 32 * 41};
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t ki = 0; ki < 3; ki++)
                check(b1, b3, t, ns[ni], ks[ki], ms[(ni + ki) % 5], &rng);
    }
    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
}

static void test_rows_the_format_cannot_hold(void **state)
{
    (void)state;
    uint64_t rb;
    for (size_t ti = 0; ti < sizeof TYPES / sizeof TYPES[0]; ti++) {
        const kvs_dtype t = TYPES[ti];
        const uint64_t be = kvs_dtype_block_elems(t);
        assert_true(kvs_dtype_computable(t));
        assert_false(kvs_dtype_row_bytes(t, be + 16, &rb));
        assert_false(kvs_dtype_row_bytes(t, be / 2, &rb));
        assert_true(kvs_dtype_row_bytes(t, be * 2, &rb));
        assert_int_equal(rb, 2 * kvs_dtype_block_bytes(t));
    }
    assert_false(kvs_dtype_row_bytes(KVS_DTYPE_Q4_K, 96, &rb));
    assert_false(kvs_dtype_row_bytes(KVS_DTYPE_Q6_K, 2048 + 32, &rb));
    /* a malformed matmul call gives zeros, never reads past the weights */
    kvs_backend *b = make_cpu(2);
    float x[96] = {1}, y[2] = {5, 5};
    uint8_t w[2 * 144] = {0};
    b->ops->matmul(b, y, x, w, KVS_DTYPE_Q4_K, 1, 96, 2);
    assert_true(y[0] == 0.0f && y[1] == 0.0f);
    kvs_backend_destroy(b);
}

static kvs_backend *make_cpu_i8(int n_threads)
{
    kvs_backend *b = NULL;
    kvs_error err;
    kvs_cpu_options o = {.n_threads = n_threads, .int8_all = true}; /* int8 for every type it takes */
    if (kvs_cpu_backend_new(&b, &o, &err) != KVS_OK)
        fail_msg("kvs_cpu_backend_new: %s", err.msg);
    return b;
}

/* The int8-activation matmul (k-quants and the legacy Q8_0..Q5_1 at k % 256 == 0): SIMD and scalar paths, 1 and 3
 * threads, and every row alone against the batch, all bit-identical; the
 * error against the exact product within the bound that rounding x to 8
 * bits per 256-block allows: sum over blocks of (max|x| / 254) sum |w|. */
static void check_i8(kvs_backend *b1, kvs_backend *b3, kvs_dtype t, int64_t n, int64_t k, int64_t m,
                     test_rng *rng)
{
    uint64_t rb;
    assert_true(kvs_dtype_row_bytes(t, (uint64_t)k, &rb));
    uint8_t *w = xmalloc(rb * (size_t)m);
    float *x = xmalloc((size_t)(n * k) * 4), *wd = xmalloc((size_t)(m * k) * 4);
    float *y1 = xmalloc((size_t)(n * m) * 4), *y3 = xmalloc((size_t)(n * m) * 4);
    float *yr = xmalloc((size_t)(n * m) * 4), *y_one = xmalloc((size_t)m * 4);
    random_blocks(rng, t, w, (size_t)(rb / kvs_dtype_block_bytes(t)) * (size_t)m);
    rng_fill(rng, x, (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i += 97)
        x[i] *= 8.0f; /* outliers: blocks whose scale is set by one value */
    for (int64_t j = 0; j < m; j++)
        kvs_dtype_to_f32(t, w + (size_t)j * rb, wd + j * k, (size_t)k);
    b1->ops->matmul(b1, y1, x, w, t, n, k, m);
    b3->ops->matmul(b3, y3, x, w, t, n, k, m);
    kvs_cpu_matmul_ref(cpu_ctx(b3), yr, x, w, t, n, k, m);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < m; j++) {
            double s = 0, sa = 0, bound = 0;
            for (int64_t b0 = 0; b0 < k; b0 += 256) {
                double amax = 0, sw = 0;
                for (int64_t e = b0; e < b0 + 256; e++) {
                    amax = fmax(amax, fabs(x[i * k + e]));
                    sw += fabs(wd[j * k + e]);
                    s += (double)x[i * k + e] * wd[j * k + e];
                    sa += fabs((double)x[i * k + e] * wd[j * k + e]);
                }
                bound += amax / 254.0 * sw;
            }
            const double tol = 1.001 * bound + 1e-5 * sa + 1e-9, e1 = fabs(y1[i * m + j] - s);
            if (e1 > tol)
                fail_msg("int8 matmul %s n=%lld k=%lld m=%lld y[%lld][%lld]: %.9g exact %.9g (bound %.3g)",
                         kvs_dtype_name(t), (long long)n, (long long)k, (long long)m, (long long)i,
                         (long long)j, y1[i * m + j], s, tol);
            worst = fmax(worst, e1 / (bound + 1e-30));
        }
    }
    if (memcmp(y1, yr, (size_t)(n * m) * 4) != 0)
        fail_msg("int8 matmul %s n=%lld: SIMD and scalar paths differ", kvs_dtype_name(t), (long long)n);
    if (memcmp(y1, y3, (size_t)(n * m) * 4) != 0)
        fail_msg("int8 matmul %s n=%lld: 1 and 3 threads differ", kvs_dtype_name(t), (long long)n);
    for (int64_t r = 0; r < n; r += n > 4 ? n / 4 : 1) {
        b3->ops->matmul(b3, y_one, x + r * k, w, t, 1, k, m);
        if (memcmp(y_one, y1 + r * m, (size_t)m * 4) != 0)
            fail_msg("int8 matmul %s n=%lld: row %lld alone differs from the batch", kvs_dtype_name(t),
                     (long long)n, (long long)r);
    }
    printf("  int8 matmul %-5s n=%-3lld k=%-4lld m=%-3lld worst err / bound = %.3f\n", kvs_dtype_name(t),
           (long long)n, (long long)k, (long long)m, worst);
    free(w), free(x), free(wd), free(y1), free(y3), free(yr), free(y_one);
}

static void test_matmul_int8_activations(void **state)
{
    (void)state;
    kvs_backend *b1 = make_cpu_i8(1), *b3 = make_cpu_i8(3);
    test_rng rng = {0x51ed27u};
    const kvs_dtype kq[] = {KVS_DTYPE_Q2_K, KVS_DTYPE_Q3_K, KVS_DTYPE_Q4_K, KVS_DTYPE_Q5_K, KVS_DTYPE_Q6_K,
                            KVS_DTYPE_Q8_0, KVS_DTYPE_Q4_0, KVS_DTYPE_Q4_1, KVS_DTYPE_Q5_0, KVS_DTYPE_Q5_1};
    const int64_t ns[] = {1, 2, 3, 4, 5, 9, 31}, ms[] = {1, 7, 13, 38}, ks[] = {256, 768, 2304};
    for (size_t ti = 0; ti < sizeof kq / sizeof kq[0]; ti++)
        for (size_t ni = 0; ni < 7; ni++)
            for (size_t ki = 0; ki < 3; ki++)
                check_i8(b1, b3, kq[ti], ns[ni], ks[ki], ms[(ni + ki) % 4], &rng);
    /* rows longer than the thread's scratch holds at once (chunks of x rows) */
    check_i8(b1, b3, KVS_DTYPE_Q4_K, 150, 256 * 40, 9, &rng);
    check_i8(b1, b3, KVS_DTYPE_Q8_0, 150, 256 * 40, 9, &rng);
    /* the prefill path in passes over the super-blocks (AVX2: 8 at a time), every type, with
     * edge tiles of rows and weight rows (n odd, m not a multiple of the panel) */
    for (size_t ti = 0; ti < sizeof kq / sizeof kq[0]; ti++)
        check_i8(b1, b3, kq[ti], 7 + 2 * (int64_t)ti, 8192, 13 + (int64_t)ti, &rng);
    check_i8(b1, b3, KVS_DTYPE_Q6_K, 37, 256 * 17, 25, &rng);
    /* k not a multiple of 256 (x is quantized per 256): the f32 path, the same bits as without the flag */
    kvs_backend *plain = make_cpu(1);
    float x[64], y_a[3], y_b[3];
    uint8_t w8[3 * 68];
    rng_fill(&rng, x, 64);
    random_blocks(&rng, KVS_DTYPE_Q4_1, w8, 6);
    b1->ops->matmul(b1, y_a, x, w8, KVS_DTYPE_Q4_1, 1, 64, 2);
    plain->ops->matmul(plain, y_b, x, w8, KVS_DTYPE_Q4_1, 1, 64, 2);
    assert_memory_equal(y_a, y_b, 2 * sizeof(float));
    kvs_backend_destroy(plain);
    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
}

/* The activation rounding, isolated: q6_K rows with d = 1, every scale 1
 * and quants 32 (weight 0) except 33 (weight 1) at element j, so that
 * y[j] = dx * qx_j exactly.  With max|x| = 127 the step dx is 1 and qx_j
 * must be x_j rounded half away from zero: C's roundf, the reference. */
static void test_int8_rounding(void **state)
{
    (void)state;
    enum { K = 256, M = 256 };
    kvs_backend *b = make_cpu_i8(2);
    kvs_block_q6_K *w = xmalloc(sizeof(kvs_block_q6_K) * M);
    for (int j = 0; j < M; j++) {
        kvs_block_q6_K *q = &w[j];
        memset(q, 0, sizeof *q);
        q->d = kvs_fp32_to_fp16(1.0f);
        memset(q->scales, 1, sizeof q->scales);
        /* element 128 h + 32 c + l: low bits in ql[64 h + 32 (c & 1) + l] (nibble c >> 1), high bits
         * in qh[32 h + l] (bits 2 c); 32 is high bits 2, low 0 */
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++)
                q->qh[32 * h + l] = 0xaa;
        const int h = j / 128, c = (j % 128) / 32, l = j % 32;
        q->ql[64 * h + 32 * (c & 1) + l] |= (uint8_t)(1 << (4 * (c >> 1)));
    }
    float x[K], y[M], yr[M];
    test_rng rng = {0x70e5};
    for (int sign = 0; sign < 2; sign++) {
        for (int e = 0; e < K; e++) {
            const float f = e % 3 == 0 ? 0.5f : e % 3 == 1 ? 0.49999997f : 0.50000006f;
            x[e] = (float)(e % 120) + f * (rng_uniform(&rng) < 0 ? -1.0f : 1.0f);
            if (e % 2)
                x[e] = -x[e];
        }
        x[7] = sign ? -127.0f : 127.0f; /* the block's max |x| */
        x[8] = 126.5f, x[9] = -126.5f, x[10] = 0.0f, x[11] = -0.5f;
        b->ops->matmul(b, y, x, w, KVS_DTYPE_Q6_K, 1, K, M);
        kvs_cpu_matmul_ref(cpu_ctx(b), yr, x, w, KVS_DTYPE_Q6_K, 1, K, M);
        for (int j = 0; j < M; j++) {
            if (y[j] != roundf(x[j]) || yr[j] != y[j])
                fail_msg("x[%d] = %.9g: int8 matmul gives %.9g (scalar %.9g), roundf %.9g", j, x[j], y[j], yr[j],
                         roundf(x[j]));
        }
    }
    /* a block of zeros: scale 0, every product 0 */
    memset(x, 0, sizeof x);
    b->ops->matmul(b, y, x, w, KVS_DTYPE_Q6_K, 1, K, M);
    for (int j = 0; j < M; j++)
        assert_true(y[j] == 0.0f);
    free(w);
    kvs_backend_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_quant_types),
        cmocka_unit_test(test_matmul_int8_activations),
        cmocka_unit_test(test_int8_rounding),
        cmocka_unit_test(test_rows_the_format_cannot_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
