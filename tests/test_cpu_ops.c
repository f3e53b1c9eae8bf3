/*
 * test_cpu_ops.c - the CPU backend's small kernels (rope, rms_norm,
 * silu_mul, add, get_rows) against double-precision references, fast and
 * scalar paths, plus the backend's memory: mem_info and its /proc and
 * cgroup parsers, and allocation through the ledger.
 */
#include "cpu_test_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef void (*rope_fn)(kvs_cpu_ctx *, float *, const int32_t *, int64_t, int32_t, int32_t,
                        int32_t, float, float, bool);

static void check_rope(kvs_backend *b, int32_t nh, int32_t hd, int32_t rot, float base,
                       float fscale, bool neox, test_rng *rng)
{
    const int32_t pos[] = {0, 1, 7, 100, 1000, 4095, 32767};
    const int64_t n = sizeof pos / sizeof pos[0];
    const size_t cnt = (size_t)n * nh * hd;
    float *x = xmalloc(cnt * 4), *y = xmalloc(cnt * 4), *yr = xmalloc(cnt * 4);
    rng_fill(rng, x, cnt);
    memcpy(y, x, cnt * 4);
    memcpy(yr, x, cnt * 4);
    b->ops->rope(b, y, pos, n, nh, hd, rot, base, fscale, neox);
    kvs_cpu_rope_ref(cpu_ctx(b), yr, pos, n, nh, hd, rot, base, fscale, neox);
    double worst = 0;
    for (int64_t t = 0; t < n; t++)
        for (int32_t h = 0; h < nh; h++) {
            const float *xi = x + (t * nh + h) * hd;
            const float *yi = y + (t * nh + h) * hd, *ri = yr + (t * nh + h) * hd;
            double ex[512];
            for (int32_t d = 0; d < hd; d++)
                ex[d] = xi[d];
            for (int32_t i = 0; i < rot / 2; i++) {
                double th = (double)pos[t] * fscale * pow(base, -2.0 * i / rot);
                int a = neox ? i : 2 * i, c = neox ? i + rot / 2 : 2 * i + 1;
                ex[a] = xi[a] * cos(th) - xi[c] * sin(th);
                ex[c] = xi[a] * sin(th) + xi[c] * cos(th);
            }
            for (int32_t d = 0; d < hd; d++) {
                double e = fmax(fabs(yi[d] - ex[d]), fabs(ri[d] - ex[d]));
                if (!(e <= 1e-6))
                    fail_msg("rope neox=%d hd=%d rot=%d pos %d head %d dim %d: got %.9g exact %.9g",
                             neox, hd, rot, pos[t], h, d, yi[d], ex[d]);
                if (d >= rot)
                    assert_true(yi[d] == xi[d]);   /* past rot_dim: untouched */
                worst = fmax(worst, e);
            }
        }
    printf("  rope neox=%d heads %d hd %d rot %d base %g scale %g: worst abs err %.2e\n", neox,
           nh, hd, rot, base, fscale, worst);
    free(x), free(y), free(yr);
}

static void test_rope(void **state)
{
    kvs_backend *b = make_cpu(2);
    test_rng rng = {77};
    for (int neox = 0; neox < 2; neox++) {
        check_rope(b, 4, 64, 64, 10000.0f, 1.0f, neox, &rng);
        check_rope(b, 3, 64, 32, 10000.0f, 1.0f, neox, &rng);    /* partial rotation */
        check_rope(b, 2, 128, 128, 500000.0f, 0.25f, neox, &rng);
        check_rope(b, 5, 80, 20, 10000.0f, 1.0f, neox, &rng);
    }
    kvs_backend_destroy(b);
}

/* The two layouts differ: neox pairs (i, i + rot/2), normal pairs (2i, 2i+1). */
static void test_rope_layouts_known_values(void **state)
{
    kvs_backend *b = make_cpu(1);
    /* head_dim 4, rot 4, base 1 (theta = pos for every pair), pos = pi/2: (a, b) -> (-b, a). */
    float x[4] = {1, 2, 3, 4}, y[4];
    int32_t pos = 0;
    memcpy(y, x, sizeof y);
    b->ops->rope(b, y, &pos, 1, 1, 4, 4, 1.0f, 1.0f, false);
    for (int i = 0; i < 4; i++)
        assert_float_equal(y[i], x[i], 0);   /* position 0 is the identity */
    pos = 1;
    const float q = (float)(M_PI / 2);   /* freq_scale pi/2 turns position 1 into pi/2 */
    memcpy(y, x, sizeof y);
    b->ops->rope(b, y, &pos, 1, 1, 4, 4, 1.0f, q, false);
    const float want_norm[4] = {-2, 1, -4, 3};
    for (int i = 0; i < 4; i++)
        assert_float_equal(y[i], want_norm[i], 1e-6);
    memcpy(y, x, sizeof y);
    b->ops->rope(b, y, &pos, 1, 1, 4, 4, 1.0f, q, true);
    const float want_neox[4] = {-3, -4, 1, 2};
    for (int i = 0; i < 4; i++)
        assert_float_equal(y[i], want_neox[i], 1e-6);
    kvs_backend_destroy(b);
}

static void test_rms_norm(void **state)
{
    kvs_backend *b1 = make_cpu(1), *b3 = make_cpu(3);
    test_rng rng = {99};
    const int64_t n = 17, dim = 4103;
    float *x = xmalloc(n * dim * 4), *w = xmalloc(dim * 4), *y1 = xmalloc(n * dim * 4);
    float *y3 = xmalloc(n * dim * 4), *yr = xmalloc(n * dim * 4);
    rng_fill(&rng, x, (size_t)(n * dim));
    rng_fill(&rng, w, (size_t)dim);
    b1->ops->rms_norm(b1, y1, x, w, n, dim, 1e-5f);
    memcpy(y3, x, n * dim * 4);
    b3->ops->rms_norm(b3, y3, y3, w, n, dim, 1e-5f);   /* in place */
    kvs_cpu_rms_norm_ref(cpu_ctx(b1), yr, x, w, n, dim, 1e-5f);
    for (int64_t i = 0; i < n; i++) {
        double ss = 0;
        for (int64_t d = 0; d < dim; d++)
            ss += (double)x[i * dim + d] * x[i * dim + d];
        double sc = 1.0 / sqrt(ss / dim + 1e-5);
        for (int64_t d = 0; d < dim; d++) {
            double ex = x[i * dim + d] * sc * w[d];
            assert_float_equal(y1[i * dim + d], ex, 1e-5 * fabs(ex) + 1e-7);
            assert_float_equal(yr[i * dim + d], ex, 1e-5 * fabs(ex) + 1e-7);
        }
    }
    assert_memory_equal(y1, y3, n * dim * 4);
    free(x), free(w), free(y1), free(y3), free(yr);
    kvs_backend_destroy(b1);
    kvs_backend_destroy(b3);
}

static void test_silu_mul_add(void **state)
{
    kvs_backend *b = make_cpu(3);
    test_rng rng = {5};
    const int64_t n = 100003;
    float *g = xmalloc(n * 4), *u = xmalloc(n * 4), *y = xmalloc(n * 4), *yr = xmalloc(n * 4);
    rng_fill(&rng, g, n);
    rng_fill(&rng, u, n);
    for (int64_t i = 0; i < n; i++)
        g[i] *= 12.0f;   /* reach the saturating ends of the sigmoid */
    g[17] = 100.0f, g[18] = -100.0f, g[19] = -87.9f, g[20] = 0.0f;
    b->ops->silu_mul(b, y, g, u, n);
    kvs_cpu_silu_mul_ref(cpu_ctx(b), yr, g, u, n);
    for (int64_t i = 0; i < n; i++) {
        double ex = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        assert_float_equal(y[i], ex, 1e-6 * fabs(ex) + 1e-7);
        assert_float_equal(yr[i], ex, 1e-6 * fabs(ex) + 1e-7);
    }
    memcpy(y, g, n * 4);
    b->ops->silu_mul(b, y, y, u, n);   /* y aliases gate */
    for (int64_t i = 0; i < n; i++)
        assert_float_equal(y[i], g[i] / (1.0 + exp(-(double)g[i])) * u[i], 1e-6 * fabs(y[i]) + 1e-7);
    memcpy(y, g, n * 4);
    b->ops->add(b, y, y, u, n);        /* y aliases a */
    kvs_cpu_add_ref(cpu_ctx(b), yr, g, u, n);
    for (int64_t i = 0; i < n; i++) {
        assert_true(y[i] == g[i] + u[i]);
        assert_true(yr[i] == g[i] + u[i]);
    }
    free(g), free(u), free(y), free(yr);
    kvs_backend_destroy(b);
}

static void test_get_rows(void **state)
{
    kvs_backend *b = make_cpu(2);
    test_rng rng = {11};
    const kvs_dtype types[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16, KVS_DTYPE_Q8_0,
                               KVS_DTYPE_Q4_0};
    const int32_t ids[] = {5, 0, 5, 12, 3};
    for (int ti = 0; ti < 5; ti++) {
        kvs_dtype t = types[ti];
        int64_t len = kvs_dtype_block_elems(t) > 1 ? 96 : 75, rows = 13;
        uint64_t rb;
        assert_true(kvs_dtype_row_bytes(t, (uint64_t)len, &rb));
        float *src = xmalloc(rows * len * 4), *y = xmalloc(5 * len * 4), *yr = xmalloc(5 * len * 4);
        float *want = xmalloc(len * 4);
        uint8_t *table = xmalloc(rb * rows);
        rng_fill(&rng, src, (size_t)(rows * len));
        for (int64_t r = 0; r < rows; r++)
            kvs_dtype_from_f32(t, src + r * len, table + r * rb, (size_t)len);
        b->ops->get_rows(b, y, table, t, len, ids, 5);
        kvs_cpu_get_rows_ref(cpu_ctx(b), yr, table, t, len, ids, 5);
        for (int i = 0; i < 5; i++) {
            kvs_dtype_to_f32(t, table + ids[i] * rb, want, (size_t)len);
            assert_memory_equal(y + i * len, want, len * 4);    /* conversions are exact */
            assert_memory_equal(yr + i * len, want, len * 4);
        }
        free(src), free(y), free(yr), free(want), free(table);
    }
    kvs_backend_destroy(b);
}

/* ---------------- memory ---------------- */

static void test_mem_info(void **state)
{
    kvs_backend *b = NULL;
    kvs_error err;
    kvs_cpu_options o = {.n_threads = 2, .device_memory = 3ull << 30};
    assert_int_equal(kvs_cpu_backend_new(&b, &o, &err), KVS_OK);
    assert_int_equal(kvs_cpu_backend_threads(b), 2);
    assert_true(kvs_cpu_backend_overhead_bytes(b) >= 2 * KVS_CPU_MM_SCRATCH * sizeof(float));
    kvs_mem_info mi;
    assert_int_equal(b->ops->mem_info(b, &mi, &err), KVS_OK);
    assert_true(mi.total == 3ull << 30);
    assert_true(mi.process_used > 0);
    assert_true(mi.free == mi.total - mi.process_used);

    /* Allocation goes through the ledger, 64-byte aligned; touching it raises the RSS. */
    kvs_dbuf buf;
    assert_int_equal(kvs_backend_alloc(b, KVS_MEM_KV_CACHE, 64ull << 20, &buf, &err), KVS_OK);
    assert_true(((uintptr_t)buf.ptr & 63) == 0);
    assert_true(b->ledger.cur[KVS_MEM_KV_CACHE] == 64ull << 20);
    memset(buf.ptr, 1, buf.bytes);
    kvs_mem_info mi2;
    assert_int_equal(b->ops->mem_info(b, &mi2, &err), KVS_OK);
    assert_true(mi2.process_used >= mi.process_used + (48ull << 20));
    assert_true(mi2.free < mi.free);
    kvs_backend_release(b, &buf);
    assert_true(b->ledger.cur[KVS_MEM_KV_CACHE] == 0);
    kvs_backend_destroy(b);

    b = make_cpu(0);   /* one thread per available core */
    assert_true(kvs_cpu_backend_threads(b) >= 1);
    assert_int_equal(b->ops->mem_info(b, &mi, &err), KVS_OK);
    assert_true(mi.total > 0 && mi.free <= mi.total && mi.process_used > 0);
    char text[4096] = {0};
    FILE *f = fopen("/proc/meminfo", "r");
    assert_non_null(f);
    size_t got = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    assert_true(got > 0);
    uint64_t mem_total = 0;
    assert_true(sscanf(strstr(text, "MemTotal:"), "MemTotal: %" SCNu64 " kB", &mem_total) == 1);
    assert_true(mi.total <= mem_total * 1024);
    printf("  host: total %.1f GiB, free %.1f GiB, ours %.1f MiB\n", mi.total / 1073741824.0,
           mi.free / 1073741824.0, mi.process_used / 1048576.0);
    kvs_backend_destroy(b);

    kvs_cpu_options bad = {.n_threads = -1};
    assert_int_equal(kvs_cpu_backend_new(&b, &bad, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "threads"));
}

static void test_proc_parsers(void **state)
{
    uint64_t v = 0;
    const char *meminfo = "MemTotal:       24684096 kB\nMemFree:  100 kB\nMemAvailable:   7 kB\n"
                          "Hugepagesize:    2048 kB\nHugePages_Total:       0\n";
    assert_true(kvs_cpu_proc_field(meminfo, "MemTotal", &v) && v == 24684096ull * 1024);
    assert_true(kvs_cpu_proc_field(meminfo, "MemAvailable", &v) && v == 7 * 1024);
    assert_true(kvs_cpu_proc_field(meminfo, "HugePages_Total", &v) && v == 0);
    assert_false(kvs_cpu_proc_field(meminfo, "Mem", &v));            /* prefix only */
    assert_false(kvs_cpu_proc_field(meminfo, "VmRSS", &v));          /* missing */
    assert_false(kvs_cpu_proc_field("VmRSS:\tkB\n", "VmRSS", &v));    /* no number */
    assert_false(kvs_cpu_proc_field("VmRSS: 12x kB\n", "VmRSS", &v)); /* junk */
    assert_false(kvs_cpu_proc_field("VmRSS: 99999999999999999999 kB", "VmRSS", &v));
    assert_false(kvs_cpu_proc_field("VmRSS: 18014398509481984 kB", "VmRSS", &v)); /* *1024 overflows */
    assert_true(kvs_cpu_proc_field("Name:\tx\nVmRSS:\t   1704 kB", "VmRSS", &v) && v == 1704 * 1024);
    assert_false(kvs_cpu_proc_field("", "VmRSS", &v));

    assert_true(kvs_cpu_parse_limit("max\n", &v) && v == UINT64_MAX);
    assert_true(kvs_cpu_parse_limit("1073741824\n", &v) && v == 1073741824ull);
    assert_true(kvs_cpu_parse_limit("9223372036854771712", &v) && v == 9223372036854771712ull);
    assert_false(kvs_cpu_parse_limit("maximum", &v));
    assert_false(kvs_cpu_parse_limit("-1", &v));
    assert_false(kvs_cpu_parse_limit("12 34", &v));
    assert_false(kvs_cpu_parse_limit("", &v));

    uint64_t lim, use;
    kvs_cpu_cgroup_memory(&lim, &use);   /* whatever this machine has, it must not crash */
    assert_true(lim > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_rope_layouts_known_values),
        cmocka_unit_test(test_rms_norm),
        cmocka_unit_test(test_silu_mul_add),
        cmocka_unit_test(test_get_rows),
        cmocka_unit_test(test_mem_info),
        cmocka_unit_test(test_proc_parsers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
