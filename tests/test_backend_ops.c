/*
 * test_backend_ops.c - every kernel of a device backend against the CPU
 * backend, in the manner of llama.cpp's test-backend-ops.
 *
 * The device is KVS_TEST_DEVICE (default "cuda").  Where that backend is
 * not built into this binary, or its device is absent, the program prints
 * why and exits 77, which CTest reports as skipped.
 *
 * Each case fills inputs from a seeded generator, runs the op on both
 * backends and compares the outputs as max |dev - cpu| / max |cpu| (the
 * error relative to the output's scale).  Tolerances per op and dtype:
 *   exact ops (get_rows, add, add_rows, kv_store of f32)     0
 *   f32 reductions (rms_norm, matmul, attention)              2e-5 .. 1e-4
 *   rope (cos/sin in double on both sides, rotation in f32)   1e-6
 *   kv_store of f16/bf16 (the same round-to-nearest-even)     0
 *   gelu_mul, softcap (tanh in double on both sides)          1e-7
 * Shapes cover odd sizes, GQA ratios 1/4/8, head_dim 64/80/128/256, block
 * sizes 1/16/32, long contexts and mixed prefill + decode batches with
 * shuffled block tables and padding slots (-1).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/registry.h"
#include "core/dtype.h"

typedef struct { uint64_t s; } rng;

static float urand(rng *r) /* [-1, 1) */
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (float)((r->s >> 40) * (1.0 / (1 << 23)) - 1.0);
}

static void fill(rng *r, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = urand(r) * scale;
}

typedef struct pair {
    kvs_backend *cpu, *dev;
} pair;

static pair P;

static void *xcalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    assert_non_null(p);
    return p;
}

/* A buffer on each backend holding the same bytes. */
typedef struct twin {
    kvs_dbuf c, d;
    size_t bytes;
} twin;

static twin twin_new(const void *host, size_t bytes)
{
    twin t = {.bytes = bytes};
    kvs_error err;
    if (kvs_backend_alloc(P.cpu, KVS_MEM_OTHER, bytes ? bytes : 4, &t.c, &err) != KVS_OK ||
        kvs_backend_alloc(P.dev, KVS_MEM_OTHER, bytes ? bytes : 4, &t.d, &err) != KVS_OK)
        fail_msg("alloc %zu: %s", bytes, err.msg);
    if (host && bytes) {
        P.cpu->ops->to_device(P.cpu, t.c.ptr, host, bytes);
        P.dev->ops->to_device(P.dev, t.d.ptr, host, bytes);
    }
    return t;
}

static void twin_free(twin *t)
{
    kvs_backend_release(P.cpu, &t->c);
    kvs_backend_release(P.dev, &t->d);
}

static void sync_dev(void)
{
    kvs_error err;
    if (P.dev->ops->synchronize && P.dev->ops->synchronize(P.dev, &err) != KVS_OK)
        fail_msg("synchronize: %s", err.msg);
}

/* Copy both sides of t back and return max|dev - cpu| / max|cpu| (f32 data). */
static double twin_err(const twin *t, const char *what)
{
    size_t n = t->bytes / 4;
    float *a = xcalloc(t->bytes), *b = xcalloc(t->bytes);
    P.cpu->ops->to_host(P.cpu, a, t->c.ptr, t->bytes);
    P.dev->ops->to_host(P.dev, b, t->d.ptr, t->bytes);
    sync_dev();
    double mx = 0.0, md = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(b[i]) != isnan(a[i]))
            fail_msg("%s: NaN mismatch at %zu", what, i);
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > md)
            md = d;
        if (fabs(a[i]) > mx)
            mx = fabs(a[i]);
    }
    free(a);
    free(b);
    return mx > 0.0 ? md / mx : md;
}

/* Raw byte equality of both sides (quantized / half data). */
static void twin_same_bytes(const twin *t, const char *what)
{
    uint8_t *a = xcalloc(t->bytes), *b = xcalloc(t->bytes);
    P.cpu->ops->to_host(P.cpu, a, t->c.ptr, t->bytes);
    P.dev->ops->to_host(P.dev, b, t->d.ptr, t->bytes);
    sync_dev();
    if (memcmp(a, b, t->bytes) != 0)
        fail_msg("%s: bytes differ", what);
    free(a);
    free(b);
}

#define CHECK(t, tol, ...)                                                                   \
    do {                                                                                     \
        char what_[160];                                                                     \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                          \
        double e_ = twin_err(&(t), what_);                                                   \
        if (!(e_ <= (tol)))                                                                  \
            fail_msg("%s: relative error %.3g > %.3g", what_, e_, (double)(tol));            \
    } while (0)

static const kvs_dtype WTYPES[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16, KVS_DTYPE_Q8_0, KVS_DTYPE_Q4_0};

/* A [rows][k] weight matrix of type t, quantized from uniform values. */
static void *make_weights(rng *r, kvs_dtype t, int64_t rows, int64_t k, size_t *bytes)
{
    uint64_t rb;
    assert_true(kvs_dtype_row_bytes(t, (uint64_t)k, &rb));
    *bytes = (size_t)(rb * (uint64_t)rows);
    uint8_t *w = xcalloc(*bytes);
    float *row = xcalloc((size_t)k * 4);
    for (int64_t i = 0; i < rows; i++) {
        fill(r, row, (size_t)k, 1.0f);
        if (i % 7 == 3)
            row[0] = 40.0f; /* an outlier that sets a block's scale */
        kvs_dtype_from_f32(t, row, w + i * rb, (size_t)k);
    }
    free(row);
    return w;
}

static void test_get_rows(void **state)
{
    rng r = {0x1234};
    static const int64_t lens[] = {32, 96, 4096, 4128};
    for (size_t ti = 0; ti < sizeof WTYPES / sizeof *WTYPES; ti++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            const int64_t rows = 37, len = lens[li], n = 11;
            size_t wb;
            void *w = make_weights(&r, WTYPES[ti], rows, len, &wb);
            int32_t ids[11];
            for (int i = 0; i < n; i++)
                ids[i] = (int32_t)((i * 17 + 5) % rows);
            twin tw = twin_new(w, wb), ti_ = twin_new(ids, sizeof ids), y = twin_new(NULL, (size_t)(n * len * 4));
            P.cpu->ops->get_rows(P.cpu, y.c.ptr, tw.c.ptr, WTYPES[ti], len, ti_.c.ptr, n);
            P.dev->ops->get_rows(P.dev, y.d.ptr, tw.d.ptr, WTYPES[ti], len, ti_.d.ptr, n);
            CHECK(y, 0.0, "get_rows %s len %lld", kvs_dtype_name(WTYPES[ti]), (long long)len);
            twin_free(&tw);
            twin_free(&ti_);
            twin_free(&y);
            free(w);
        }
}

static void test_rms_norm(void **state)
{
    rng r = {0x55};
    static const int64_t dims[] = {1, 7, 64, 1000, 4096, 5120};
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        const int64_t n = 9, dim = dims[di];
        float *x = xcalloc((size_t)(n * dim * 4)), *w = xcalloc((size_t)dim * 4);
        fill(&r, x, (size_t)(n * dim), 3.0f);
        fill(&r, w, (size_t)dim, 1.0f);
        twin tx = twin_new(x, (size_t)(n * dim * 4)), tw = twin_new(w, (size_t)dim * 4),
             ty = twin_new(NULL, (size_t)(n * dim * 4));
        P.cpu->ops->rms_norm(P.cpu, ty.c.ptr, tx.c.ptr, tw.c.ptr, n, dim, 1e-5f);
        P.dev->ops->rms_norm(P.dev, ty.d.ptr, tx.d.ptr, tw.d.ptr, n, dim, 1e-5f);
        CHECK(ty, 2e-6, "rms_norm dim %lld", (long long)dim);
        /* in place */
        P.cpu->ops->rms_norm(P.cpu, tx.c.ptr, tx.c.ptr, tw.c.ptr, n, dim, 1e-5f);
        P.dev->ops->rms_norm(P.dev, tx.d.ptr, tx.d.ptr, tw.d.ptr, n, dim, 1e-5f);
        CHECK(tx, 2e-6, "rms_norm in place dim %lld", (long long)dim);
        twin_free(&tx);
        twin_free(&tw);
        twin_free(&ty);
        free(x);
        free(w);
    }
}

static void test_matmul(void **state)
{
    rng r = {0x9e37};
    static const int64_t ns[] = {1, 2, 3, 7, 8, 9, 17, 64, 100};
    static const int64_t ks[] = {32, 96, 2080};
    static const int64_t ms[] = {1, 5, 64, 1000, 4097};
    for (size_t ti = 0; ti < sizeof WTYPES / sizeof *WTYPES; ti++)
        for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++)
            for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++) {
                const int64_t k = ks[ki], m = ms[mi];
                size_t wb;
                void *w = make_weights(&r, WTYPES[ti], m, k, &wb);
                twin tw = twin_new(w, wb);
                for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
                    const int64_t n = ns[ni];
                    if (n * m * k > (int64_t)64 << 20)
                        continue; /* keep the CPU side of the test short */
                    float *x = xcalloc((size_t)(n * k * 4));
                    fill(&r, x, (size_t)(n * k), 1.0f);
                    twin tx = twin_new(x, (size_t)(n * k * 4)), ty = twin_new(NULL, (size_t)(n * m * 4));
                    P.cpu->ops->matmul(P.cpu, ty.c.ptr, tx.c.ptr, tw.c.ptr, WTYPES[ti], n, k, m);
                    P.dev->ops->matmul(P.dev, ty.d.ptr, tx.d.ptr, tw.d.ptr, WTYPES[ti], n, k, m);
                    CHECK(ty, 5e-5, "matmul %s n %lld k %lld m %lld", kvs_dtype_name(WTYPES[ti]), (long long)n,
                          (long long)k, (long long)m);
                    twin_free(&tx);
                    twin_free(&ty);
                    free(x);
                }
                twin_free(&tw);
                free(w);
            }
}

static void test_rope(void **state)
{
    rng r = {0x77};
    static const int32_t hds[] = {64, 80, 128};
    for (int neox = 0; neox < 2; neox++)
        for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++)
            for (int partial = 0; partial < 2; partial++) {
                const int32_t hd = hds[hi], rot = partial ? hd / 2 : hd, nh = 6;
                const int64_t n = 13;
                int32_t pos[13];
                for (int i = 0; i < n; i++)
                    pos[i] = i < 4 ? i : (int32_t)(i * 7919 % 131072);
                float *x = xcalloc((size_t)(n * nh * hd * 4));
                fill(&r, x, (size_t)(n * nh * hd), 2.0f);
                twin tx = twin_new(x, (size_t)(n * nh * hd * 4)), tp = twin_new(pos, sizeof pos);
                const float scale = partial ? 0.25f : 1.0f, base = partial ? 500000.0f : 10000.0f;
                P.cpu->ops->rope(P.cpu, tx.c.ptr, tp.c.ptr, n, nh, hd, rot, base, scale, neox);
                P.dev->ops->rope(P.dev, tx.d.ptr, tp.d.ptr, n, nh, hd, rot, base, scale, neox);
                CHECK(tx, 1e-6, "rope neox %d hd %d rot %d", neox, hd, rot);
                twin_free(&tx);
                twin_free(&tp);
                free(x);
            }
}

static void test_elementwise(void **state)
{
    rng r = {0x31};
    static const int64_t ns[] = {1, 31, 1000, 65537, 300001};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
        const int64_t n = ns[i];
        float *a = xcalloc((size_t)n * 4), *c = xcalloc((size_t)n * 4);
        fill(&r, a, (size_t)n, 8.0f);
        fill(&r, c, (size_t)n, 8.0f);
        twin ta = twin_new(a, (size_t)n * 4), tc = twin_new(c, (size_t)n * 4), ty = twin_new(NULL, (size_t)n * 4);
        P.cpu->ops->add(P.cpu, ty.c.ptr, ta.c.ptr, tc.c.ptr, n);
        P.dev->ops->add(P.dev, ty.d.ptr, ta.d.ptr, tc.d.ptr, n);
        CHECK(ty, 0.0, "add n %lld", (long long)n);
        P.cpu->ops->silu_mul(P.cpu, ty.c.ptr, ta.c.ptr, tc.c.ptr, n);
        P.dev->ops->silu_mul(P.dev, ty.d.ptr, ta.d.ptr, tc.d.ptr, n);
        CHECK(ty, 1e-6, "silu_mul n %lld", (long long)n);
        const int64_t dim = n % 2 ? 1 : 2, rows = n / dim;
        P.cpu->ops->add_rows(P.cpu, ta.c.ptr, tc.c.ptr, rows, dim);
        P.dev->ops->add_rows(P.dev, ta.d.ptr, tc.d.ptr, rows, dim);
        CHECK(ta, 0.0, "add_rows n %lld", (long long)n);
        twin_free(&ta);
        twin_free(&tc);
        twin_free(&ty);
        free(a);
        free(c);
    }
}

/* One attention case: sequences of the given context lengths; the last
 * `q_last[s]` positions of sequence s are this step's tokens (a prefill
 * chunk when > 1, a decode when 1); the rest are already cached. */
typedef struct attn_case {
    kvs_dtype kv;
    int32_t n_heads, n_kv_heads, head_dim, block_size;
    int n_seqs;
    int32_t ctx[4], q_last[4];
    int32_t window;      /* > 0: sliding window */
    float softcap;       /* > 0: score soft-capping */
} attn_case;

static void run_attention(const attn_case *ac, rng *r)
{
    const int32_t nh = ac->n_heads, nkv = ac->n_kv_heads, hd = ac->head_dim, bs = ac->block_size;
    int32_t max_ctx = 0, total_blocks = 0, max_blocks = 0;
    int64_t n_tok = 0, n_cached = 0;
    for (int s = 0; s < ac->n_seqs; s++) {
        int32_t nb = (ac->ctx[s] + bs - 1) / bs;
        total_blocks += nb;
        if (nb > max_blocks)
            max_blocks = nb;
        if (ac->ctx[s] > max_ctx)
            max_ctx = ac->ctx[s];
        n_tok += ac->q_last[s];
        n_cached += ac->ctx[s];
    }
    const int32_t n_blocks = total_blocks + 3;
    /* Block ids dealt out in a shuffled order. */
    int32_t *perm = xcalloc((size_t)n_blocks * 4);
    for (int32_t i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (int32_t i = n_blocks - 1; i > 0; i--) {
        int32_t j = (int32_t)((r->s >> 7) % (uint64_t)(i + 1));
        urand(r);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int32_t *tables = xcalloc((size_t)ac->n_seqs * max_blocks * 4);
    int32_t used = 0;
    for (int s = 0; s < ac->n_seqs; s++)
        for (int32_t b = 0; b < max_blocks; b++)
            tables[s * max_blocks + b] = b < (ac->ctx[s] + bs - 1) / bs ? perm[used++] : -1;
    /* Every cached position's k/v (all positions of each sequence), one padding slot. */
    const int64_t kv_dim = (int64_t)nkv * hd;
    const int64_t n_all = n_cached + 1;
    float *k = xcalloc((size_t)(n_all * kv_dim * 4)), *v = xcalloc((size_t)(n_all * kv_dim * 4));
    fill(r, k, (size_t)(n_all * kv_dim), 1.0f);
    fill(r, v, (size_t)(n_all * kv_dim), 1.0f);
    int32_t *slots = xcalloc((size_t)n_all * 4);
    int32_t *seq = xcalloc((size_t)n_tok * 4), *pos = xcalloc((size_t)n_tok * 4);
    int64_t a = 0, t = 0;
    for (int s = 0; s < ac->n_seqs; s++)
        for (int32_t p = 0; p < ac->ctx[s]; p++) {
            slots[a++] = tables[s * max_blocks + p / bs] * bs + p % bs;
            if (p >= ac->ctx[s] - ac->q_last[s]) {
                seq[t] = s;
                pos[t] = p;
                t++;
            }
        }
    slots[a] = -1; /* padding: writes nothing */
    const size_t elem = kvs_dtype_block_bytes(ac->kv);
    const size_t cache_bytes = (size_t)n_blocks * nkv * bs * hd * elem;
    uint8_t *zeros = xcalloc(cache_bytes);
    twin kc = twin_new(zeros, cache_bytes), vc = twin_new(zeros, cache_bytes);
    twin tk = twin_new(k, (size_t)(n_all * kv_dim * 4)), tv = twin_new(v, (size_t)(n_all * kv_dim * 4));
    twin ts = twin_new(slots, (size_t)n_all * 4);
    kvs_kv_view vcpu = {kc.c.ptr, vc.c.ptr, ac->kv, bs, nkv, hd}, vdev = {kc.d.ptr, vc.d.ptr, ac->kv, bs, nkv, hd};
    P.cpu->ops->kv_store(P.cpu, &vcpu, tk.c.ptr, tv.c.ptr, ts.c.ptr, n_all);
    P.dev->ops->kv_store(P.dev, &vdev, tk.d.ptr, tv.d.ptr, ts.d.ptr, n_all);
    char what[160];
    snprintf(what, sizeof what, "kv_store %s hd %d bs %d", kvs_dtype_name(ac->kv), hd, bs);
    twin_same_bytes(&kc, what);
    twin_same_bytes(&vc, what);

    float *q = xcalloc((size_t)(n_tok * nh * hd * 4));
    fill(r, q, (size_t)(n_tok * nh * hd), 2.0f);
    twin tq = twin_new(q, (size_t)(n_tok * nh * hd * 4)), to = twin_new(NULL, (size_t)(n_tok * nh * hd * 4));
    twin tseq = twin_new(seq, (size_t)n_tok * 4), tpos = twin_new(pos, (size_t)n_tok * 4);
    twin ttab = twin_new(tables, (size_t)ac->n_seqs * max_blocks * 4);
    size_t sc_c = P.cpu->ops->attention_scratch_bytes(P.cpu, nh, max_ctx, n_tok);
    size_t sc_d = P.dev->ops->attention_scratch_bytes(P.dev, nh, max_ctx, n_tok);
    twin scr = twin_new(NULL, sc_c > sc_d ? sc_c : sc_d);
    kvs_attn_meta mc = {(int32_t)n_tok, tseq.c.ptr, tpos.c.ptr, NULL, ttab.c.ptr, max_blocks, max_ctx,
                        ac->window, ac->softcap};
    kvs_attn_meta md = {(int32_t)n_tok, tseq.d.ptr, tpos.d.ptr, NULL, ttab.d.ptr, max_blocks, max_ctx,
                        ac->window, ac->softcap};
    const float scale = 1.0f / sqrtf((float)hd);
    P.cpu->ops->attention(P.cpu, to.c.ptr, tq.c.ptr, &vcpu, &mc, nh, scale, scr.c.ptr);
    P.dev->ops->attention(P.dev, to.d.ptr, tq.d.ptr, &vdev, &md, nh, scale, scr.d.ptr);
    CHECK(to, 2e-5, "attention %s heads %d/%d hd %d bs %d ctx %d window %d softcap %g", kvs_dtype_name(ac->kv), nh,
          nkv, hd, bs, max_ctx, ac->window, (double)ac->softcap);
    twin *all[] = {&kc, &vc, &tk, &tv, &ts, &tq, &to, &tseq, &tpos, &ttab, &scr};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        twin_free(all[i]);
    free(perm);
    free(tables);
    free(k);
    free(v);
    free(slots);
    free(seq);
    free(pos);
    free(zeros);
    free(q);
}

static void test_attention(void **state)
{
    rng r = {0xabcdef};
    static const kvs_dtype kvt[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16};
    static const int32_t hds[] = {64, 80, 128, 256};
    static const int32_t bss[] = {1, 16, 32};
    static const int32_t gqa[][2] = {{8, 8}, {32, 8}, {16, 2}};
    for (size_t ki = 0; ki < 3; ki++)
        for (size_t hi = 0; hi < 4; hi++)
            for (size_t bi = 0; bi < 3; bi++)
                for (size_t gi = 0; gi < 3; gi++) {
                    attn_case ac = {kvt[ki], gqa[gi][0], gqa[gi][1], hds[hi], bss[bi], 4,
                                    /* a fresh prefill, a chunk after a prefix, two decodes */
                                    {19, 300, 1, 2000}, {19, 64, 1, 1}};
                    if (bss[bi] == 1 && hds[hi] > 80)
                        ac.ctx[3] = 700; /* keep the block-size-1 tables small */
                    run_attention(&ac, &r);
                }
    /* Gemma 2 / Mistral: a sliding window (inside a block and across
     * blocks) and attention soft-capping, where the backend declares them. */
    if (!P.dev->ops->caps.attn_window)
        return;
    static const int32_t windows[] = {1, 7, 16, 100, 4096};
    for (size_t wi = 0; wi < sizeof windows / sizeof *windows; wi++)
        for (int cap = 0; cap < 2; cap++) {
            attn_case ac = {KVS_DTYPE_F16, 16, 8, 128, 16, 4, {19, 300, 1, 2000}, {19, 64, 1, 1},
                            windows[wi], cap ? 50.0f : 0.0f};
            run_attention(&ac, &r);
        }
}

/* The kernels of the families beyond Llama, where both backends have them. */
static void test_ext_ops(void **state)
{
    rng r = {0x4242};
    const kvs_backend_ops *c = P.cpu->ops, *d = P.dev->ops;
    if (!c->scale || !d->scale || !c->gelu_mul || !d->gelu_mul || !c->softcap || !d->softcap || !c->rope_freqs ||
        !d->rope_freqs) {
        printf("ext ops: the device backend lacks one; skipping\n");
        return;
    }
    static const int64_t ns[] = {1, 1000, 300001};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
        const int64_t n = ns[i];
        float *a = xcalloc((size_t)n * 4), *u = xcalloc((size_t)n * 4);
        fill(&r, a, (size_t)n, 60.0f);
        fill(&r, u, (size_t)n, 2.0f);
        twin ta = twin_new(a, (size_t)n * 4), tu = twin_new(u, (size_t)n * 4), ty = twin_new(NULL, (size_t)n * 4);
        c->gelu_mul(P.cpu, ty.c.ptr, ta.c.ptr, tu.c.ptr, n);
        d->gelu_mul(P.dev, ty.d.ptr, ta.d.ptr, tu.d.ptr, n);
        CHECK(ty, 1e-7, "gelu_mul n %lld", (long long)n);
        c->softcap(P.cpu, ta.c.ptr, n, 30.0f);
        d->softcap(P.dev, ta.d.ptr, n, 30.0f);
        CHECK(ta, 1e-7, "softcap n %lld", (long long)n);
        c->scale(P.cpu, ta.c.ptr, n, 0.37f);
        d->scale(P.dev, ta.d.ptr, n, 0.37f);
        CHECK(ta, 0.0, "scale n %lld", (long long)n);
        twin_free(&ta);
        twin_free(&tu);
        twin_free(&ty);
        free(a);
        free(u);
    }
    for (int neox = 0; neox < 2; neox++) {
        const int32_t hd = 128, rot = 96, nh = 4;
        const int64_t n = 9;
        int32_t pos[9];
        for (int i = 0; i < n; i++)
            pos[i] = (int32_t)(i * 13007 % 131072);
        double inv[64];
        for (int i = 0; i < rot / 2; i++)
            inv[i] = pow(500000.0, -2.0 * i / rot) / (i < rot / 4 ? 8.0 : 1.0);
        float *x = xcalloc((size_t)(n * nh * hd * 4));
        fill(&r, x, (size_t)(n * nh * hd), 1.0f);
        twin tx = twin_new(x, (size_t)(n * nh * hd * 4)), tp = twin_new(pos, sizeof pos),
             tf = twin_new(inv, (size_t)(rot / 2) * sizeof(double));
        c->rope_freqs(P.cpu, tx.c.ptr, tp.c.ptr, n, nh, hd, rot, tf.c.ptr, 1.1f, neox);
        d->rope_freqs(P.dev, tx.d.ptr, tp.d.ptr, n, nh, hd, rot, tf.d.ptr, 1.1f, neox);
        CHECK(tx, 1e-6, "rope_freqs neox %d", neox);
        twin_free(&tx);
        twin_free(&tp);
        twin_free(&tf);
        free(x);
    }
}

static int setup(void **state)
{
    kvs_error err;
    kvs_backend_opts co = {.device = "cpu", .n_threads = 2};
    if (kvs_backend_open(&P.cpu, &co, &err) != KVS_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return -1;
    }
    return 0;
}

int main(void)
{
    const char *dev = getenv("KVS_TEST_DEVICE");
    if (!dev || !*dev)
        dev = "cuda";
    kvs_error err;
    kvs_backend_opts o = {.device = dev};
    if (kvs_backend_open(&P.dev, &o, &err) != KVS_OK) {
        printf("SKIP: device backend '%s' is not usable here: %s\n", dev, err.msg);
        return 77;
    }
    printf("comparing backend '%s' with the CPU backend\n", P.dev->ops->name);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_rows),  cmocka_unit_test(test_rms_norm),    cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_rope),      cmocka_unit_test(test_elementwise), cmocka_unit_test(test_attention),
        cmocka_unit_test(test_ext_ops),
    };
    int rc = cmocka_run_group_tests(tests, setup, NULL);
    kvs_backend_destroy(P.dev);
    kvs_backend_destroy(P.cpu);
    return rc;
}
