/*
 * test_engine_pool.c - the engine's request pool on stories260K: a fixed
 * number of slots (a request over it is refused, a finished request's
 * slot comes back), stop lists checked against the slot's room, the text
 * window (stop strings found far past the window's size, long outputs
 * the same with and without stop strings that never match), and paused
 * requests (not scheduled, keep their blocks, resume to the same output),
 * and a runner profiled smaller than the engine's limits (no step passes
 * the profile; outputs unchanged).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine_test_util.h"

#define MAX_LEN 480

static kvs_engine *pool_engine(et_fixture *f, int32_t max_requests)
{
    kvs_engine_config cfg = {
        .max_num_seqs = 4, .max_num_batched_tokens = 256, .max_model_len = MAX_LEN, .block_size = 16,
        .num_blocks = 512, .kv_dtype = KVS_DTYPE_F32, .prefix_caching = true, .max_requests = max_requests,
    };
    kvs_engine *e = NULL;
    kvs_error err = {0};
    if (kvs_engine_new(&e, f->model, f->tok, NULL, &cfg, &err) != KVS_OK)
        fail_msg("kvs_engine_new: %s", err.msg);
    return e;
}

static void t_slots(void **state)
{
    et_fixture *f = *state;
    kvs_engine *e = pool_engine(f, 3);
    int32_t prompt[8];
    int32_t n = et_encode(f, "Once upon a time", prompt, 8);
    kvs_request_params p = et_greedy(4);
    kvs_error err;
    assert_int_equal(kvs_engine_free_slots(e), 3);
    for (uint64_t i = 0; i < 3; i++)
        assert_int_equal(kvs_engine_add(e, i, prompt, (size_t)n, &p, &err), KVS_OK);
    assert_int_equal(kvs_engine_free_slots(e), 0);
    assert_int_equal(kvs_engine_add(e, 3, prompt, (size_t)n, &p, &err), KVS_E_BUDGET);
    assert_non_null(strstr(err.msg, "request slots"));
    et_result res[4] = {0};
    et_run(e, res, 4, 1000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(res[i].n_tokens, 4);
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.requests_cap, 3);
    assert_int_equal(st.requests_high_water, 3);
    /* reported finished: the slots come back at the next step */
    const kvs_output *outs;
    size_t n_outs;
    assert_int_equal(kvs_engine_step(e, &outs, &n_outs, &err), KVS_OK);
    assert_int_equal(kvs_engine_free_slots(e), 3);
    assert_int_equal(kvs_engine_add(e, 3, prompt, (size_t)n, &p, &err), KVS_OK);
    et_run(e, res, 4, 1000);
    assert_int_equal(res[3].n_tokens, 4);
    kvs_engine_free(e);
}

static void t_stop_limits(void **state)
{
    et_fixture *f = *state;
    kvs_engine *e = pool_engine(f, 4);
    int32_t prompt[8];
    int32_t n = et_encode(f, "Once upon a time", prompt, 8);
    kvs_error err;
    kvs_request_params p = et_greedy(4);
    const char *many[KVS_MAX_STOP_STRINGS + 1];
    for (int i = 0; i <= KVS_MAX_STOP_STRINGS; i++)
        many[i] = "zz";
    p.stop = many;
    p.n_stop = KVS_MAX_STOP_STRINGS + 1;
    assert_int_equal(kvs_engine_add(e, 0, prompt, (size_t)n, &p, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "stop strings"));
    static char big[KVS_MAX_STOP_BYTES + 2];
    memset(big, 'q', sizeof big - 1);
    const char *one[1] = {big};
    p.stop = one;
    p.n_stop = 1;
    assert_int_equal(kvs_engine_add(e, 0, prompt, (size_t)n, &p, &err), KVS_E_INVALID);
    big[KVS_MAX_STOP_BYTES] = '\0'; /* exactly the limit: accepted */
    assert_int_equal(kvs_engine_add(e, 0, prompt, (size_t)n, &p, &err), KVS_OK);
    int32_t ids[KVS_MAX_STOP_TOKEN_IDS + 1] = {0};
    kvs_request_params q = et_greedy(4);
    q.stop_token_ids = ids;
    q.n_stop_token_ids = KVS_MAX_STOP_TOKEN_IDS + 1;
    assert_int_equal(kvs_engine_add(e, 1, prompt, (size_t)n, &q, &err), KVS_E_INVALID);
    assert_int_equal(kvs_engine_free_slots(e), 3); /* refused requests took no slot */
    et_result res[2] = {0};
    et_run(e, res, 2, 1000);
    kvs_engine_free(e);
}

/* 470 tokens of text (over 1 KiB; the window keeps only the longest stop
 * string's length before what is unreported, 24 bytes here): a stop
 * string taken from near the end is found where the full text has it, and
 * stop strings that never match leave the text as it was. */
static void t_text_window(void **state)
{
    et_fixture *f = *state;
    kvs_engine *e = pool_engine(f, 4);
    int32_t prompt[8];
    int32_t n = et_encode(f, "Once upon a time", prompt, 8);
    kvs_request_params p = et_greedy(470);
    p.ignore_eos = true;
    static et_result ref, none, cut;
    et_add(e, 0, prompt, n, &p);
    et_run(e, &ref, 1, 10000);
    assert_int_equal(ref.n_tokens, 470);
    assert_true(ref.text_len > 1024);

    const char *never[2] = {"qqqq never there", "zzzzzzzzzzzzzz"};
    kvs_request_params q = p;
    q.stop = never;
    q.n_stop = 2;
    kvs_engine_free(e);
    e = pool_engine(f, 4);
    et_add(e, 0, prompt, n, &q);
    et_run(e, &none, 1, 10000);
    assert_int_equal(none.text_len, ref.text_len);
    assert_memory_equal(none.text, ref.text, ref.text_len);

    /* a 24-byte stop string from 90% into the text */
    size_t at = ref.text_len * 9 / 10;
    char stop[25];
    memcpy(stop, ref.text + at, 24);
    stop[24] = '\0';
    const char *first = strstr(ref.text, stop); /* its earliest occurrence */
    const char *one[1] = {stop};
    q.stop = one;
    q.n_stop = 1;
    kvs_engine_free(e);
    e = pool_engine(f, 4);
    et_add(e, 0, prompt, n, &q);
    et_run(e, &cut, 1, 10000);
    assert_int_equal(cut.reason, KVS_FINISH_STOP);
    assert_int_equal(cut.text_len, (size_t)(first - ref.text));
    assert_memory_equal(cut.text, ref.text, cut.text_len);
    kvs_engine_free(e);
}

static bool pause_id0(void *ctx, uint64_t id)
{
    return *(bool *)ctx && id == 0;
}

static void t_pause(void **state)
{
    et_fixture *f = *state;
    kvs_engine *e = pool_engine(f, 4);
    int32_t prompt[8];
    int32_t n = et_encode(f, "Once upon a time", prompt, 8);
    kvs_request_params p = et_greedy(40);
    static et_result alone, res[2];
    et_add(e, 0, prompt, n, &p);
    et_run(e, &alone, 1, 10000);
    kvs_engine_free(e);

    e = pool_engine(f, 4);
    et_add(e, 0, prompt, n, &p);
    et_add(e, 1, prompt, n, &p);
    bool on = false;
    for (int i = 0; i < 5; i++)
        et_step(e, res, 2);
    int32_t before = res[0].n_tokens;
    kvs_engine_stats st0, st1;
    kvs_engine_get_stats(e, &st0);
    on = true;
    kvs_engine_pause(e, pause_id0, &on);
    for (int i = 0; i < 10; i++)
        et_step(e, res, 2);
    assert_int_equal(res[0].n_tokens, before);       /* not scheduled while paused */
    assert_true(res[1].n_tokens > before);           /* the other one went on */
    kvs_engine_get_stats(e, &st1);
    assert_true(st1.kv_blocks_used > 0);
    on = false;
    kvs_engine_pause(e, pause_id0, &on);
    et_run(e, res, 2, 10000);
    assert_int_equal(res[0].n_tokens, 40);
    assert_memory_equal(res[0].tokens, alone.tokens, 40 * sizeof(int32_t));
    assert_memory_equal(res[1].tokens, alone.tokens, 40 * sizeof(int32_t));
    kvs_engine_free(e);
}

/* An engine over a runner profiled for a smaller step than the engine's
 * limits (16 tokens, 2 sequences): no step is larger than the profile,
 * and every request still gets exactly the tokens it gets alone. */
static void t_profiled_shape(void **state)
{
    et_fixture *f = *state;
    static et_result ref[4], got[4];
    int32_t prompts[4][64], n[4];
    for (int i = 0; i < 4; i++)
        n[i] = et_prompt(f, 3 + i * 8, prompts[i], 64);
    kvs_request_params p = et_greedy(12);
    kvs_engine *e = pool_engine(f, 8);
    for (int i = 0; i < 4; i++)
        et_add(e, (uint64_t)i, prompts[i], n[i], &p);
    et_run(e, ref, 4, 10000);
    kvs_engine_free(e);

    kvs_runner_limits lim = {.max_tokens = 16, .max_seqs = 2, .max_model_len = MAX_LEN, .block_size = 16};
    kvs_runner *r = NULL;
    kvs_error err;
    assert_int_equal(kvs_runner_new(&r, f->model, &lim, &err), KVS_OK);
    assert_int_equal(kvs_runner_profile(r, KVS_DTYPE_F32, &err), KVS_OK);
    kvs_engine_config cfg = {
        .max_num_seqs = 4, .max_num_batched_tokens = 256, .max_model_len = MAX_LEN, .block_size = 16,
        .num_blocks = 512, .kv_dtype = KVS_DTYPE_F32, .prefix_caching = true, .max_requests = 8,
    };
    assert_int_equal(kvs_engine_new(&e, f->model, f->tok, r, &cfg, &err), KVS_OK);
    for (int i = 0; i < 4; i++)
        et_add(e, (uint64_t)i, prompts[i], n[i], &p);
    int steps = 0;
    while (kvs_engine_has_work(e) && steps++ < 10000) {
        et_step(e, got, 4);
        kvs_engine_stats st;
        kvs_engine_get_stats(e, &st);
        assert_true(st.last_step_tokens <= 16);
        assert_true(r->arena.high_water <= r->profiled_peak);
    }
    for (int i = 0; i < 4; i++) {
        assert_true(got[i].finished);
        assert_int_equal(got[i].n_tokens, ref[i].n_tokens);
        assert_memory_equal(got[i].tokens, ref[i].tokens, (size_t)ref[i].n_tokens * sizeof(int32_t));
    }
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.n_failed_invariant, 0);
    kvs_engine_free(e);
    kvs_runner_free(r);
}

int main(void)
{
    (void)et_engine; /* the shared helper is not used here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_slots),
        cmocka_unit_test(t_stop_limits),
        cmocka_unit_test(t_text_window),
        cmocka_unit_test(t_pause),
        cmocka_unit_test(t_profiled_shape),
    };
    return cmocka_run_group_tests(tests, et_fixture_setup, et_fixture_teardown);
}
