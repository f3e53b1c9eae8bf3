/*
 * engine_test_util.h - shared set-up for the engine tests: the stories260K
 * model from the shared data, engines of any shape over it, prompts, and a
 * loop that runs an engine dry while checking what it reports.
 *
 * Include after <cmocka.h>.  Everything is static: each test program gets
 * its own copy.
 */
#ifndef KVS_TESTS_ENGINE_TEST_UTIL_H
#define KVS_TESTS_ENGINE_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "formats/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef struct et_fixture {
    kvs_tokenizer *tok;
    kvs_backend *backend;
    kvs_model_model *model;
} et_fixture;

static inline int et_fixture_setup(void **state)
{
    const char *dir = getenv("KVS_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", dir ? dir : "../shared");
    et_fixture *f = calloc(1, sizeof *f);
    kvs_gguf *g = NULL;
    kvs_error err;
    if (!f || kvs_gguf_open(&g, path, &err) != KVS_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, f ? err.msg : "out of memory");
        free(f);
        return -1;
    }
    kvs_cpu_options co = {.n_threads = 1};
    if (kvs_tok_load(&f->tok, g, &err) != KVS_OK || kvs_cpu_backend_new(&f->backend, &co, &err) != KVS_OK ||
        kvs_model_load(&f->model, g, f->backend, &(kvs_model_load_opts){0}, &err) != KVS_OK) {
        fprintf(stderr, "loading %s: %s\n", path, err.msg);
        kvs_gguf_close(g);
        return -1;
    }
    kvs_gguf_close(g);
    *state = f;
    return 0;
}

static inline int et_fixture_teardown(void **state)
{
    et_fixture *f = *state;
    if (!f)
        return 0;
    kvs_model_free(f->model);
    kvs_backend_destroy(f->backend);
    kvs_tok_free(f->tok);
    free(f);
    return 0;
}

static kvs_engine *et_engine(et_fixture *f, int32_t max_seqs, int32_t budget, int32_t max_len, int32_t block_size,
                             int32_t num_blocks, bool prefix_caching)
{
    kvs_engine_config cfg = {
        .max_num_seqs = max_seqs, .max_num_batched_tokens = budget, .max_model_len = max_len,
        .block_size = block_size, .num_blocks = num_blocks, .kv_dtype = KVS_DTYPE_F32,
        .prefix_caching = prefix_caching,
    };
    kvs_engine *e = NULL;
    kvs_error err = {0};
    kvs_status st = kvs_engine_new(&e, f->model, f->tok, NULL, &cfg, &err);
    if (st != KVS_OK)
        fail_msg("kvs_engine_new: %s", err.msg);
    return e;
}

static inline kvs_request_params et_greedy(int32_t max_tokens)
{
    kvs_request_params p = kvs_request_defaults();
    p.sampling.temperature = 0.0f;
    p.max_tokens = max_tokens;
    return p;
}

/* BOS + the text's tokens; returns the count (cap: the array's size). */
static inline int32_t et_encode(const et_fixture *f, const char *text, int32_t *out, int32_t cap)
{
    int32_t *ids = NULL;
    size_t n = 0;
    kvs_error err;
    assert_int_equal(kvs_tok_encode(f->tok, text, strlen(text), true, false, &ids, &n, &err), KVS_OK);
    assert_true(n <= (size_t)cap);
    memcpy(out, ids, n * sizeof *ids);
    free(ids);
    return (int32_t)n;
}

/* The i-th of a family of distinct story prompts (several share their
 * first sentence, so prefix caching has something to find). */
static inline int32_t et_prompt(const et_fixture *f, int i, int32_t *out, int32_t cap)
{
    static const char *const first[] = {
        "Once upon a time", "Tom and Lily went to the park.", "The little dog was sad.",
        "One day, a girl named Sue found a big red ball in the garden.", "Ben had a toy car.",
        "The sun was hot and the sky was blue.", "Mom said,", "There was a tiny bird in a tree.",
    };
    static const char *const second[] = {
        " She", " He wanted to play.", " They were happy.", " The cat ran away and hid under the bed.",
        " It was a fun day.", " Lily smiled.", " \"Look!\" said Tom.", " The end of the story was near, and",
        " A big bear came.", " Sam",
    };
    char text[512];
    snprintf(text, sizeof text, "%s%s", first[i % 8], second[(i / 8 + i * 3) % 10]);
    return et_encode(f, text, out, cap);
}

#define ET_MAX_OUT 512

typedef struct et_result {
    int32_t tokens[ET_MAX_OUT];
    int32_t n_tokens;
    size_t text_at[ET_MAX_OUT];   /* text received when token i came */
    char text[8 * ET_MAX_OUT + 64];
    size_t text_len;
    bool finished;
    kvs_finish_reason reason;
    int32_t n_cached;
    int32_t n_reports;        /* outputs seen */
} et_result;

/* Fold one step's outputs into results[id]: nothing after a finish, ids
 * in range, counts consistent. */
static inline void et_collect(et_result *res, size_t n_res, const kvs_output *outs, size_t n_outs)
{
    for (size_t i = 0; i < n_outs; i++) {
        const kvs_output *o = &outs[i];
        assert_true(o->id < n_res);
        et_result *r = &res[o->id];
        if (r->finished)
            fail_msg("request %llu reported after it finished", (unsigned long long)o->id);
        for (size_t j = 0; j < i; j++)
            assert_true(outs[j].id != o->id);
        r->n_reports++;
        if (o->token >= 0) {
            assert_true(r->n_tokens < ET_MAX_OUT);
            r->tokens[r->n_tokens++] = o->token;
            assert_int_equal(o->n_output_tokens, r->n_tokens);
        } else {
            assert_true(o->finished);
            assert_int_equal(o->reason, KVS_FINISH_ABORT);
            assert_int_equal(o->n_top, 0);
        }
        assert_true(r->text_len + o->text_len < sizeof r->text);
        memcpy(r->text + r->text_len, o->text, o->text_len);
        r->text_len += o->text_len;
        r->text[r->text_len] = '\0';
        if (o->token >= 0)
            r->text_at[r->n_tokens - 1] = r->text_len;
        r->n_cached = o->n_cached_tokens;
        assert_true(o->n_cached_tokens >= 0 && o->n_cached_tokens <= o->n_prompt_tokens);
        if (o->finished) {
            assert_int_not_equal(o->reason, KVS_FINISH_NONE);
            r->finished = true;
            r->reason = o->reason;
        } else {
            assert_int_equal(o->reason, KVS_FINISH_NONE);
        }
    }
}

/* One step, folded in, with the stats checked. */
static inline void et_step(kvs_engine *e, et_result *res, size_t n_res)
{
    const kvs_output *outs;
    size_t n_outs;
    kvs_error err = {0};
    if (kvs_engine_step(e, &outs, &n_outs, &err) != KVS_OK)
        fail_msg("kvs_engine_step: %s", err.msg);
    et_collect(res, n_res, outs, n_outs);
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    const kvs_engine_config *cfg = kvs_engine_get_config(e);
    assert_true(st.last_step_tokens <= cfg->max_num_batched_tokens);
    assert_true(st.kv_blocks_used >= 0 && st.kv_blocks_used <= st.kv_blocks_total);
    assert_true(st.n_running <= cfg->max_num_seqs);
}

/* Step until the engine has no work; all requests must have finished. */
static inline void et_run(kvs_engine *e, et_result *res, size_t n_res, int max_steps)
{
    int steps = 0;
    while (kvs_engine_has_work(e)) {
        et_step(e, res, n_res);
        if (++steps > max_steps)
            fail_msg("the engine did not finish in %d steps", max_steps);
    }
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.n_running, 0);
    assert_int_equal(st.n_waiting, 0);
}

static inline void et_add(kvs_engine *e, uint64_t id, const int32_t *prompt, int32_t n, const kvs_request_params *p)
{
    kvs_error err = {0};
    if (kvs_engine_add(e, id, prompt, (size_t)n, p, &err) != KVS_OK)
        fail_msg("kvs_engine_add %llu: %s", (unsigned long long)id, err.msg);
}

static inline void et_assert_same(const et_result *a, const et_result *b, int id)
{
    if (a->n_tokens != b->n_tokens || memcmp(a->tokens, b->tokens, (size_t)a->n_tokens * sizeof a->tokens[0]) != 0) {
        int k = 0;
        while (k < a->n_tokens && k < b->n_tokens && a->tokens[k] == b->tokens[k])
            k++;
        fail_msg("request %d: %d vs %d tokens, first difference at %d", id, a->n_tokens, b->n_tokens, k);
    }
    assert_int_equal(a->reason, b->reason);
    assert_int_equal(a->text_len, b->text_len);
    assert_memory_equal(a->text, b->text, a->text_len);
}

/* llama2.c's 512 logits of stories260K at position pos (0..3, inputs 1 403 407 261), read from
 * the shared expected/stories260K_logits_pos0-3.txt into logits. */
static inline void et_llama2c_logits(int pos, double logits[512])
{
    const char *dir = getenv("KVS_SHARED");
    char path[4096], want[16];
    snprintf(path, sizeof path, "%s/expected/stories260K_logits_pos0-3.txt", dir ? dir : "../shared");
    snprintf(want, sizeof want, "pos %d ", pos);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    static char line[1 << 16];
    int n = 0;
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, want, strlen(want)) != 0)
            continue;
        char *q = strstr(line, "logits");
        assert_non_null(q);
        q += 6;
        for (char *end; n < 512; q = end) {
            double v = strtod(q, &end);
            if (end == q)
                break;
            logits[n++] = v;
        }
    }
    fclose(fp);
    assert_int_equal(n, 512);
}

/* log(sum_i exp(logits[i])) over the 512 logits, shifted by their max: the log-softmax of
 * logits[i] is logits[i] - this. */
static inline double et_logsumexp(const double logits[512])
{
    double mx = logits[0], sum = 0;
    for (int i = 0; i < 512; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < 512; i++)
        sum += exp(logits[i] - mx);
    return mx + log(sum);
}

#endif
