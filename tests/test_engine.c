/*
 * test_engine.c - the engine on stories260K: continuous batching, chunked
 * prefill, preemption, prefix caching and abort must never change what a
 * greedy request produces; every request that fits the cache alone
 * completes; blocks are all returned.  The anchor is llama2.c's own greedy
 * output for the same model (shared/expected).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/launch.h"
#include "engine_test_util.h"

#define N_PROMPTS 32
#define SOLO_TOKENS 24
#define MAX_LEN 128

typedef struct suite {
    et_fixture *f;
    int32_t prompts[N_PROMPTS][64];
    int32_t n_prompt[N_PROMPTS];
    et_result *solo;               /* [N_PROMPTS]: each request run alone */
} suite;

static int suite_setup(void **state)
{
    if (et_fixture_setup(state) != 0)
        return -1;
    suite *s = calloc(1, sizeof *s);
    s->f = *state;
    s->solo = calloc(N_PROMPTS, sizeof *s->solo);
    for (int i = 0; i < N_PROMPTS; i++)
        s->n_prompt[i] = et_prompt(s->f, i, s->prompts[i], 64);
    /* the references: one request at a time, no prefix cache, whole prompts */
    kvs_engine *e = et_engine(s->f, 1, 256, MAX_LEN, 16, 64, false);
    kvs_request_params p = et_greedy(SOLO_TOKENS);
    for (int i = 0; i < N_PROMPTS; i++) {
        et_add(e, (uint64_t)i, s->prompts[i], s->n_prompt[i], &p);
        et_run(e, s->solo, N_PROMPTS, 1000);
        assert_true(s->solo[i].finished);
    }
    kvs_engine_free(e);
    *state = s;
    return 0;
}

static int suite_teardown(void **state)
{
    suite *s = *state;
    void *f = s->f;
    free(s->solo);
    free(s);
    return et_fixture_teardown(&f);
}

/* Greedy from BOS + "Once upon a time" gives llama2.c's tokens and text. */
static void test_matches_llama2c(void **state)
{
    suite *s = *state;
    const char *dir = getenv("KVS_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/expected/stories260K_greedy_once_upon_a_time_n64.tokens", dir ? dir : "../shared");
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[8192];
    int32_t next[64];
    int n_next = 0;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "next_token_at_pos_0..63:", 24) != 0)
            continue;
        char *q = line + 24;
        for (char *end; n_next < 64; q = end) {
            long v = strtol(q, &end, 10);
            if (end == q)
                break;
            next[n_next++] = (int32_t)v;
        }
    }
    fclose(fp);
    assert_int_equal(n_next, 64);
    snprintf(path, sizeof path, "%s/expected/stories260K_greedy_once_upon_a_time_n64.txt", dir ? dir : "../shared");
    fp = fopen(path, "r");
    assert_non_null(fp);
    char want_text[4096];
    size_t n_text = fread(want_text, 1, sizeof want_text - 1, fp);
    fclose(fp);
    want_text[n_text] = '\0';

    int32_t prompt[] = {1, 403, 407, 261, 378};
    kvs_engine *e = et_engine(s->f, 4, 64, MAX_LEN, 16, 32, true);
    kvs_request_params p = et_greedy(60);
    p.strip_leading_space = false;
    et_result *r = calloc(1, sizeof *r);
    et_add(e, 0, prompt, 5, &p);
    et_run(e, r, 1, 1000);
    assert_int_equal(r->n_tokens, 60);
    assert_memory_equal(r->tokens, next + 4, 60 * sizeof next[0]);
    assert_int_equal(r->reason, KVS_FINISH_LENGTH);
    /* llama2.c prints the prompt, then the samples; its run stops after
     * position 63 too */
    const char *prefix = "Once upon a time";
    assert_memory_equal(want_text, prefix, strlen(prefix));
    assert_true(strncmp(want_text + strlen(prefix), r->text, r->text_len) == 0);
    assert_true(n_text - strlen(prefix) - r->text_len <= 1); /* its trailing newline */
    kvs_engine_free(e);
    free(r);
}

/* Run all prompts at once in an engine of the given shape; compare with
 * the solo runs.  Returns the engine's stats. */
static kvs_engine_stats run_all(suite *s, int32_t seqs, int32_t budget, int32_t bs, int32_t num_blocks, bool caching)
{
    kvs_engine *e = et_engine(s->f, seqs, budget, MAX_LEN, bs, num_blocks, caching);
    et_result *res = calloc(N_PROMPTS, sizeof *res);
    kvs_request_params p = et_greedy(SOLO_TOKENS);
    for (int i = 0; i < N_PROMPTS; i++)
        et_add(e, (uint64_t)i, s->prompts[i], s->n_prompt[i], &p);
    et_run(e, res, N_PROMPTS, 100000);
    for (int i = 0; i < N_PROMPTS; i++) {
        assert_true(res[i].finished);
        assert_int_equal(res[i].n_reports, res[i].n_tokens);
        et_assert_same(&res[i], &s->solo[i], i);
    }
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.generation_tokens, (uint64_t)N_PROMPTS * SOLO_TOKENS);
    kvs_engine_free(e);
    free(res);
    return st;
}

static void test_concurrent_equals_solo(void **state)
{
    kvs_engine_stats st = run_all(*state, 256, 2048, 16, 512, true);
    assert_int_equal(st.n_preemptions, 0);
    /* the first step admits everything at once */
    assert_true(st.n_steps <= SOLO_TOKENS + 1);
}

static void test_chunked_prefill_budget_8(void **state)
{
    kvs_engine_stats st = run_all(*state, 32, 8, 16, 512, true);
    assert_int_equal(st.n_preemptions, 0);
    run_all(*state, 5, 8, 4, 512, false);
    run_all(*state, 3, 1, 16, 512, true); /* one token a step */
}

/* A cache for about two requests: preemptions happen, nothing changes. */
static void test_preemption_same_outputs(void **state)
{
    suite *s = *state;
    int32_t longest = 0;
    for (int i = 0; i < N_PROMPTS; i++)
        longest = s->n_prompt[i] > longest ? s->n_prompt[i] : longest;
    int32_t per_req = (longest + SOLO_TOKENS + 15) / 16;
    kvs_engine_stats st = run_all(s, 32, 256, 16, 2 * per_req, true);
    assert_true(st.n_preemptions > 0);
    st = run_all(s, 32, 256, 16, 2 * per_req, false);
    assert_true(st.n_preemptions > 0);
    st = run_all(s, 32, 16, 4, (longest + SOLO_TOKENS + 3) / 4 + 3, true); /* chunks and preemption */
    assert_true(st.n_preemptions > 0);
}

static void test_no_prefix_caching_same_outputs(void **state)
{
    kvs_engine_stats st = run_all(*state, 256, 2048, 16, 512, false);
    assert_int_equal(st.prefix_hits, 0);
}

/* A 64-token prefix computed once: the second request finds it and the
 * step computes only its new tokens. */
static void test_prefix_cache_reuse(void **state)
{
    suite *s = *state;
    int32_t a[MAX_LEN], b[MAX_LEN];
    int32_t na = et_encode(s->f,
                           "Once upon a time, there was a little girl named Lily. She loved to play outside in "
                           "the park with her friends. One day, she saw a big red ball near a tree and she "
                           "wanted to play with it, but her mom said it was time to go home for dinner.",
                           a, MAX_LEN);
    assert_true(na > 64 && na + 8 <= MAX_LEN);
    memcpy(b, a, 64 * sizeof *a);
    int32_t tail[40];
    int32_t nt = et_encode(s->f, "The dog barked at the cat.", tail, 40);
    memcpy(b + 64, tail + 1, (size_t)(nt - 1) * sizeof *tail); /* without its BOS */
    int32_t nb = 64 + nt - 1;
    for (int caching = 1; caching >= 0; caching--) {
        kvs_engine *e = et_engine(s->f, 8, 256, MAX_LEN, 16, 64, caching);
        et_result *res = calloc(2, sizeof *res);
        kvs_request_params p = et_greedy(8);
        et_add(e, 0, a, na, &p);
        et_run(e, res, 2, 100);
        kvs_engine_stats st0;
        kvs_engine_get_stats(e, &st0);
        assert_int_equal(st0.prompt_tokens_computed, (uint64_t)na);
        et_add(e, 1, b, nb, &p);
        et_step(e, res, 2);
        kvs_engine_stats st1;
        kvs_engine_get_stats(e, &st1);
        int32_t want_cached = caching ? 64 : 0;
        assert_int_equal(res[1].n_cached, want_cached);
        assert_int_equal(st1.last_step_tokens, nb - want_cached);
        assert_int_equal(st1.prompt_tokens_computed - st0.prompt_tokens_computed, (uint64_t)(nb - want_cached));
        assert_int_equal(st1.prefix_queries - st0.prefix_queries, (uint64_t)nb);
        assert_int_equal(st1.prefix_hits - st0.prefix_hits, (uint64_t)want_cached);
        et_run(e, res, 2, 100);
        assert_int_equal(res[1].n_tokens, 8);
        /* the same tokens as computing the whole prompt */
        static int32_t ref_tokens[8];
        if (caching)
            memcpy(ref_tokens, res[1].tokens, sizeof ref_tokens);
        else
            assert_memory_equal(ref_tokens, res[1].tokens, sizeof ref_tokens);
        kvs_engine_free(e);
        free(res);
    }
}

static void assert_blocks_used(kvs_engine *e, int32_t want)
{
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, want);
}

static int32_t blocks_used(kvs_engine *e)
{
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    return st.kv_blocks_used;
}

/* Aborting frees the blocks at once and is reported once, in the next
 * step; the others go on unchanged (also one sharing the aborted one's
 * prefix-cached blocks). */
static void test_abort(void **state)
{
    suite *s = *state;
    kvs_engine *e = et_engine(s->f, 2, 256, MAX_LEN, 4, 128, true);
    et_result *res = calloc(5, sizeof *res);
    kvs_request_params p = et_greedy(SOLO_TOKENS);
    /* prompts 0 and 8 share their first sentence: 1 finds 0's first block */
    et_add(e, 0, s->prompts[0], s->n_prompt[0], &p);
    et_step(e, res, 5);
    et_add(e, 1, s->prompts[8], s->n_prompt[8], &p);
    et_add(e, 2, s->prompts[1], s->n_prompt[1], &p);
    et_add(e, 3, s->prompts[2], s->n_prompt[2], &p);
    et_add(e, 4, s->prompts[3], s->n_prompt[3], &p);
    kvs_engine_abort(e, 4); /* before any step */
    for (int i = 0; i < 2; i++)
        et_step(e, res, 5);
    assert_int_equal(res[1].n_cached, 4);
    assert_true(res[4].finished);
    assert_int_equal(res[4].reason, KVS_FINISH_ABORT);
    assert_int_equal(res[4].n_tokens, 0);
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.n_running, 2);
    assert_int_equal(st.n_waiting, 2);
    int32_t used = blocks_used(e);
    assert_true(used > 0);
    /* 1 is running and shares blocks with 0: some of its blocks stay */
    kvs_engine_abort(e, 1);
    int32_t after = blocks_used(e);
    assert_true(after < used && after > 0);
    kvs_engine_abort(e, 3); /* waiting: holds nothing */
    assert_blocks_used(e, after);
    kvs_engine_abort(e, 1);  /* twice */
    kvs_engine_abort(e, 99); /* unknown */
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.n_running, 1);
    assert_int_equal(st.n_waiting, 1);
    assert_true(kvs_engine_has_work(e));
    int32_t n1 = res[1].n_tokens;
    et_step(e, res, 5); /* reports both aborts */
    assert_true(res[1].finished && res[3].finished);
    assert_int_equal(res[1].reason, KVS_FINISH_ABORT);
    assert_int_equal(res[3].reason, KVS_FINISH_ABORT);
    assert_int_equal(res[1].n_tokens, n1);
    assert_int_equal(res[3].n_tokens, 0);
    et_run(e, res, 5, 1000); /* et_collect fails on any report after a finish */
    et_assert_same(&res[0], &s->solo[0], 0);
    et_assert_same(&res[2], &s->solo[1], 2);
    /* everything is free; aborting finished requests is a no-op */
    kvs_engine_abort(e, 0);
    assert_false(kvs_engine_has_work(e));
    kvs_engine_free(e);
    free(res);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random request mixes on a small cache: each request fits the cache
 * alone, arrives at a random step, has a random length limit; all complete
 * with exactly the tokens they produce alone (greedy: the solo tokens cut
 * at their max_tokens). */
static void test_random_mixes_complete(void **state)
{
    suite *s = *state;
    uint64_t preemptions = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        uint64_t x = seed * 0x2545f4914f6cdd1dull;
        const int32_t bss[3] = {4, 8, 16};
        int32_t bs = bss[rng_next(&x) % 3];
        int32_t fit = (64 + SOLO_TOKENS + bs - 1) / bs;  /* the largest request */
        int32_t num_blocks = fit + (int32_t)(rng_next(&x) % (uint64_t)fit);
        int32_t budget = 4 + (int32_t)(rng_next(&x) % 60);
        int32_t seqs = 1 + (int32_t)(rng_next(&x) % 12);
        bool caching = rng_next(&x) % 3 != 0;
        kvs_engine *e = et_engine(s->f, seqs, budget, MAX_LEN, bs, num_blocks, caching);
        enum { N = 20 };
        et_result *res = calloc(N, sizeof *res);
        int which[N], max_tok[N], added = 0, steps = 0;
        while (added < N || kvs_engine_has_work(e)) {
            while (added < N && rng_next(&x) % 2 == 0) {
                which[added] = (int)(rng_next(&x) % N_PROMPTS);
                max_tok[added] = 1 + (int)(rng_next(&x) % SOLO_TOKENS);
                kvs_request_params p = et_greedy(max_tok[added]);
                et_add(e, (uint64_t)added, s->prompts[which[added]], s->n_prompt[which[added]], &p);
                added++;
            }
            if (kvs_engine_has_work(e))
                et_step(e, res, N);
            assert_true(++steps < 20000);
        }
        for (int i = 0; i < N; i++) {
            const et_result *solo = &s->solo[which[i]];
            assert_true(res[i].finished);
            assert_int_equal(res[i].reason, KVS_FINISH_LENGTH);
            assert_int_equal(res[i].n_tokens, max_tok[i]);
            assert_memory_equal(res[i].tokens, solo->tokens, (size_t)max_tok[i] * sizeof solo->tokens[0]);
            /* the text is the solo text's prefix (all of it at the full length) */
            assert_true(res[i].text_len <= solo->text_len);
            assert_memory_equal(res[i].text, solo->text, res[i].text_len);
        }
        kvs_engine_stats st;
        kvs_engine_get_stats(e, &st);
        assert_int_equal(st.kv_blocks_used, 0);
        preemptions += st.n_preemptions;
        kvs_engine_free(e);
        free(res);
    }
    assert_true(preemptions > 0);
}

/* The start-up path: kvs_launch builds the engine, then gives it its
 * cache; before the cache, steps fail cleanly and stats are empty. */
static void test_launch_and_two_phase(void **state)
{
    suite *s = *state;
    const char *dir = getenv("KVS_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", dir ? dir : "../shared");
    kvs_launch_opts o = kvs_launch_defaults();
    o.model_path = path;
    o.n_threads = 1;
    o.device_memory = 2ull << 30;
    o.kv_cache_memory = 4ull << 20;
    o.max_model_len = MAX_LEN;
    o.max_num_seqs = 8;
    o.max_num_batched_tokens = 64;
    kvs_instance *in = NULL;
    kvs_error err = {0};
    if (kvs_launch(&in, &o, &err) != KVS_OK)
        fail_msg("kvs_launch: %s", err.msg);
    const kvs_engine_config *cfg = kvs_engine_get_config(in->engine);
    assert_true(cfg->num_blocks > 4 * ((64 + SOLO_TOKENS) / 16 + 1));
    assert_int_equal(cfg->max_model_len, MAX_LEN);
    assert_true(cfg->prefix_caching);
    et_result *res = calloc(8, sizeof *res);
    kvs_request_params p = et_greedy(SOLO_TOKENS);
    for (int i = 0; i < 8; i++)
        et_add(in->engine, (uint64_t)i, s->prompts[i * 3], s->n_prompt[i * 3], &p);
    et_run(in->engine, res, 8, 1000);
    for (int i = 0; i < 8; i++)
        et_assert_same(&res[i], &s->solo[i * 3], i);
    kvs_instance_free(in);
    free(res);

    /* an engine without its cache yet */
    kvs_engine_config c0 = {.max_num_seqs = 4, .max_num_batched_tokens = 32, .max_model_len = 64,
                            .block_size = 16, .num_blocks = 0, .kv_dtype = KVS_DTYPE_F32, .prefix_caching = true};
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_new(&e, s->f->model, s->f->tok, NULL, &c0, &err), KVS_OK);
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_total, 0);
    const kvs_output *outs;
    size_t n_outs = 99;
    assert_int_equal(kvs_engine_step(e, &outs, &n_outs, &err), KVS_E_INVALID);
    assert_int_equal(n_outs, 0);
    assert_int_equal(kvs_engine_add(e, 0, s->prompts[0], s->n_prompt[0], &p, &err), KVS_E_INVALID);
    assert_int_equal(kvs_engine_set_cache(e, 8, 128, &err), KVS_E_INVALID); /* longer than profiled */
    assert_int_equal(kvs_engine_set_cache(e, 8, 64, &err), KVS_OK);
    assert_int_equal(kvs_engine_set_cache(e, 8, 64, &err), KVS_E_INVALID); /* twice */
    et_add(e, 0, s->prompts[0], s->n_prompt[0], &p);
    res = calloc(1, sizeof *res);
    et_run(e, res, 1, 100);
    et_assert_same(res, &s->solo[0], 0);
    free(res);
    kvs_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_llama2c),
        cmocka_unit_test(test_concurrent_equals_solo),
        cmocka_unit_test(test_chunked_prefill_budget_8),
        cmocka_unit_test(test_preemption_same_outputs),
        cmocka_unit_test(test_no_prefix_caching_same_outputs),
        cmocka_unit_test(test_prefix_cache_reuse),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_random_mixes_complete),
        cmocka_unit_test(test_launch_and_two_phase),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
