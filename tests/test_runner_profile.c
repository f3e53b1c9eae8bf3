/*
 * test_runner_profile.c - the cheap start-up profile (an allocation walk of
 * the largest step, runner.h) gives the same figures as the computed one.
 *
 * For every model (stories260K, and synth models of other families, shapes
 * and weight types: GQA, odd widths, qwen2 biases, qwen3 q/k norms and a
 * head_dim that is not dim / heads, f16 / q8_0 / Q4_K_M weights, tied and
 * untied heads) and every set of limits (tokens and sequences per step,
 * max-model-len below, at and above a block, block sizes 1 to 128, KV in
 * f32, f16 and bf16), two runners are profiled on the same backend, one
 * with KVS_PROFILE_FULL and one with the default walk, and:
 *   - the measured peak, the number of arena allocations, the hash of their
 *     sizes in order, the arena's high-water mark and the ledger's peaks of
 *     every tag are equal: a walk that skipped (or added) an allocation
 *     fails here even where the peak would not move;
 *   - both equal the peak computed from the shapes (kvs_runner_activation_bytes);
 *   - the walk calls the matmul kernel for one layer only (its small real
 *     step) where the full profile calls it for every layer and the head, so
 *     the walk really skips the arithmetic;
 *   - after the walk, a computed step of the largest shape runs inside the
 *     fixed arena and fills it exactly (high-water == the walked peak), and
 *     its logits equal those of the same step after a full profile.
 */
#include "model_test_util.h"

#include <math.h>

#include "model/synth.h"

/* ---- a backend whose matmul counts its calls ---------------------------- */

static int g_matmuls;
static void (*g_matmul)(kvs_backend *, float *, const float *, const void *, kvs_dtype, int64_t, int64_t, int64_t);

static void counting_matmul(kvs_backend *b, float *y, const float *x, const void *w, kvs_dtype wt, int64_t n,
                            int64_t k, int64_t m)
{
    g_matmuls++;
    g_matmul(b, y, x, w, wt, n, k, m);
}

typedef struct profiled {
    uint64_t peak, allocs, trace, high_water, arena_bytes;
    uint64_t ledger_peak[KVS_MEM_TAG_COUNT];
    int matmuls;
} profiled;

static kvs_runner *profile(kvs_model_model *m, const kvs_runner_limits *lim, kvs_dtype kvd, kvs_profile_mode mode,
                           profiled *out)
{
    kvs_error err = {0};
    kvs_runner *r;
    if (kvs_runner_new(&r, m, lim, &err) != KVS_OK)
        fail_msg("runner: %s", err.msg);
    r->profile_mode = mode;
    kvs_ledger before;
    kvs_ledger_snapshot(&m->backend->ledger, &before);
    g_matmuls = 0;
    if (kvs_runner_profile(r, kvd, &err) != KVS_OK)
        fail_msg("profile (mode %d): %s", mode, err.msg);
    kvs_ledger led;
    kvs_ledger_snapshot(&m->backend->ledger, &led);
    *out = (profiled){r->profiled_peak, r->profile_allocs, r->profile_trace, r->profile_high_water,
                      r->arena.fixed.bytes, {0}, g_matmuls};
    for (int t = 0; t < KVS_MEM_TAG_COUNT; t++)   /* the profile's own: its peak over what was held before */
        out->ledger_peak[t] = led.peak[t] - before.cur[t];
    return r;
}

/* The largest step (as kvs_runner_profile builds it) over a real cache of
 * one block per (sequence, block index), computed; logits into out. */
static void largest_step(kvs_runner *r, kvs_dtype kvd, float *out)
{
    kvs_error err = {0};
    const int32_t n = r->lim.max_tokens, s = r->max_logits, mb = r->max_blocks;
    const kvs_model_model *m = r->model;
    kvs_kv_cache *kv;
    if (kvs_kv_cache_new(&kv, m->backend, &m->hp, s * mb, r->lim.block_size, kvd, &err) != KVS_OK)
        fail_msg("kv cache: %s", err.msg);
    int32_t *tokens = calloc((size_t)n, 4), *pos = calloc((size_t)n, 4), *seq = calloc((size_t)n, 4);
    int32_t *tables = calloc((size_t)s * mb, 4), *rows = calloc((size_t)s, 4);
    assert_true(tokens && pos && seq && tables && rows);
    for (int32_t i = 0; i < s * mb; i++)
        tables[i] = i;
    for (int32_t t = 0; t < n; t++) {
        tokens[t] = (t * 37 + 5) % m->hp.n_vocab;
        seq[t] = t % s;
        pos[t] = (t / s) % r->lim.max_model_len;
    }
    pos[0] = r->lim.max_model_len - 1;
    for (int32_t i = 0; i < s; i++)
        rows[i] = i;
    kvs_batch bt = {n, s, tokens, pos, seq, tables, s, rows};
    r->arena.high_water = 0;
    if (kvs_runner_forward(r, &bt, kv->views, &err) != KVS_OK)
        fail_msg("largest step: %s", err.msg);
    memcpy(out, r->logits, (size_t)s * m->hp.n_vocab * sizeof *out);
    free(tokens);
    free(pos);
    free(seq);
    free(tables);
    free(rows);
    kvs_kv_cache_free(kv);
}

typedef struct limits {
    int32_t tokens, seqs, mml, bs;
    kvs_dtype kvd;
} limits;

static const limits LIMITS[] = {
    {1, 1, 8, 16, KVS_DTYPE_F32},        /* one token; max-model-len under a block */
    {7, 3, 33, 8, KVS_DTYPE_F16},
    {64, 64, 256, 16, KVS_DTYPE_BF16},   /* as many sequences as tokens */
    {17, 256, 100, 1, KVS_DTYPE_F16},    /* more sequences than tokens; one-token blocks */
    {96, 5, 512, 128, KVS_DTYPE_F32},
    {256, 16, 2048, 32, KVS_DTYPE_BF16},
};

static void check_model(const char *path)
{
    mt_model mm;
    mt_model_load(&mm, path, 2);
    const kvs_backend_ops *orig = mm.b->ops;
    kvs_backend_ops ops = *orig;       /* the same backend, its matmul counted */
    g_matmul = ops.matmul;
    ops.matmul = counting_matmul;
    mm.b->ops = &ops;
    const kvs_model_hparams *hp = &mm.m->hp;
    for (size_t i = 0; i < sizeof LIMITS / sizeof LIMITS[0]; i++) {
        const limits *c = &LIMITS[i];
        int32_t mml = c->mml < hp->n_ctx_train ? c->mml : hp->n_ctx_train;
        kvs_runner_limits lim = {c->tokens, c->seqs, mml, c->bs};
        profiled f, w;
        kvs_runner *rf = profile(mm.m, &lim, c->kvd, KVS_PROFILE_FULL, &f);
        kvs_runner *rw = profile(mm.m, &lim, c->kvd, KVS_PROFILE_WALK, &w);
        char what[256];
        snprintf(what, sizeof what, "%s, limits %d tokens, %d seqs, len %d, block %d, kv %s", path, lim.max_tokens,
                 lim.max_seqs, lim.max_model_len, lim.block_size, kvs_dtype_name(c->kvd));
        if (f.peak != w.peak || f.allocs != w.allocs || f.trace != w.trace || f.high_water != w.high_water ||
            f.arena_bytes != w.arena_bytes)
            fail_msg("%s: full profile peak %llu, %llu allocations (hash %llx), high-water %llu, arena %llu; walk "
                     "%llu, %llu (%llx), %llu, %llu",
                     what, (unsigned long long)f.peak, (unsigned long long)f.allocs, (unsigned long long)f.trace,
                     (unsigned long long)f.high_water, (unsigned long long)f.arena_bytes,
                     (unsigned long long)w.peak, (unsigned long long)w.allocs, (unsigned long long)w.trace,
                     (unsigned long long)w.high_water, (unsigned long long)w.arena_bytes);
        for (int t = 0; t < KVS_MEM_TAG_COUNT; t++)
            if (f.ledger_peak[t] != w.ledger_peak[t])
                fail_msg("%s: ledger peak of tag %d: full %llu, walk %llu", what, t,
                         (unsigned long long)f.ledger_peak[t], (unsigned long long)w.ledger_peak[t]);
        uint64_t formula = kvs_runner_activation_bytes(hp, &lim, mm.b);
        if (w.peak != formula)
            fail_msg("%s: profiled peak %llu, from the shapes %llu", what, (unsigned long long)w.peak,
                     (unsigned long long)formula);
        (void)i;
        /* 7 matmuls a layer (q, k, v, o, gate, up, down) and the head's. */
        if (f.matmuls != 7 * hp->n_layers + 1 || w.matmuls != 7)
            fail_msg("%s: matmul calls: full profile %d (want %d), walk %d (want 7)", what, f.matmuls,
                     7 * hp->n_layers + 1, w.matmuls);
        /* The walked arena holds the computed largest step exactly, and gives
         * the same logits as the arena of the full profile. */
        size_t nl = (size_t)rw->max_logits * (size_t)hp->n_vocab;
        float *lf = malloc(nl * sizeof *lf), *lw = malloc(nl * sizeof *lw);
        assert_true(lf && lw);
        largest_step(rf, c->kvd, lf);
        largest_step(rw, c->kvd, lw);
        if (rw->arena.high_water != w.peak || rf->arena.high_water != f.peak)
            fail_msg("%s: the largest step used %llu (walked arena) / %llu (full) of %llu", what,
                     (unsigned long long)rw->arena.high_water, (unsigned long long)rf->arena.high_water,
                     (unsigned long long)w.peak);
        for (size_t j = 0; j < nl; j++)
            if (!(lw[j] == lf[j]) || !isfinite(lw[j]))
                fail_msg("%s: logit %zu: %g after the walk, %g after the full profile", what, j, lw[j], lf[j]);
        free(lf);
        free(lw);
        kvs_runner_free(rf);
        kvs_runner_free(rw);
    }
    mm.b->ops = orig;
    mt_model_free(&mm);
}

static void synth(const char *name, kvs_synth_opts o, char *path, size_t cap)
{
    kvs_error err = {0};
    snprintf(path, cap, "%s/test_runner_profile_%s.gguf", mt_build_dir(), name);
    if (kvs_synth_write(&o, path, &err) != KVS_OK)
        fail_msg("synth %s: %s", name, err.msg);
}

static void test_stories260k(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", mt_shared_dir());
    check_model(path);
}

static void test_synth_shapes(void **state)
{
    (void)state;
    char path[512];
    kvs_synth_opts o = kvs_synth_defaults();   /* llama, GQA 6:2, odd widths, f16, untied */
    o.dim = 96, o.n_layers = 3, o.n_heads = 6, o.n_kv_heads = 2, o.hidden_dim = 200, o.n_vocab = 700;
    o.wtype = o.embd_type = KVS_DTYPE_F16;
    synth("llama_gqa_f16", o, path, sizeof path);
    check_model(path);

    o = kvs_synth_defaults();                  /* qwen2: q/k/v biases, q8_0 */
    o.arch = "qwen2", o.dim = 128, o.n_heads = 4, o.n_kv_heads = 4, o.hidden_dim = 256, o.n_vocab = 600;
    o.wtype = KVS_DTYPE_Q8_0, o.tied = true;
    synth("qwen2_q8", o, path, sizeof path);
    check_model(path);

    o = kvs_synth_defaults();                  /* qwen3: q/k norms, head_dim 64 != 256 / 8, Q4_K_M */
    o.arch = "qwen3", o.dim = 256, o.n_layers = 2, o.n_heads = 8, o.n_kv_heads = 2, o.head_dim = 64;
    o.hidden_dim = 512, o.n_vocab = 1000, o.mix = KVS_MIX_Q4_K_M;
    synth("qwen3_q4km", o, path, sizeof path);
    check_model(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_synth_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
