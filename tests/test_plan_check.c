/*
 * test_plan_check.c - a plan past its limits is harmless (issue 7, "arena
 * overflow is impossible or harmless").
 *
 * The scheduler is built never to plan a step larger than the runner's
 * profiled shape or a request past its buffers, so the check that guards
 * the forward (kvs_sched_check_plan) is driven here with plans written by
 * hand: an entry past max_model_len, past its KV blocks, past its tokens
 * or its block table fails; one past the step's tokens is cut to what is
 * left (and does not sample); one past the step's sequences waits; a good
 * entry beside a bad one runs as if the bad one had not been planned.
 *
 * Then the engine over stories260K with a runner profiled for a smaller
 * step (8 tokens, 2 sequences) than its scheduler plans (64 tokens, 4
 * sequences), which is the public way to make every step's plan pass the
 * profiled shape: the check cuts and defers entries, the activation arena
 * never goes past its profiled high-water mark, no request fails, and
 * every request gets the same greedy tokens as on an engine whose runner
 * fits its plans.  A runner profiled for another block size is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine_test_util.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "model/runner.h"

/* ---- crafted plans ---- */

#define BS 4

static const kvs_plan_limits LIM = {.max_seqs = 3, .max_tokens = 16, .max_model_len = 32, .max_blocks = 8,
                                    .block_size = BS};

/* A request with n_tokens tokens of which n_computed are in its n_blocks
 * blocks (a token buffer of cap). */
static kvs_request req(int32_t n_tokens, int32_t n_computed, int32_t n_blocks, int32_t cap)
{
    return (kvs_request){.n_tokens = n_tokens, .n_prompt = n_tokens, .n_computed = n_computed,
                         .n_blocks = n_blocks, .cap = cap};
}

static kvs_sched_entry entry(kvs_request *r, int32_t n_new)
{
    return (kvs_sched_entry){r, n_new, r->n_computed + n_new == r->n_tokens};
}

static void assert_verdict(const kvs_plan_verdict *v, kvs_request *r, kvs_plan_action a, kvs_plan_limit l,
                           int32_t value, int32_t bound)
{
    assert_ptr_equal(v->req, r);
    assert_int_equal(v->action, a);
    assert_int_equal(v->limit, l);
    if (a != KVS_PLAN_RUN) {
        assert_int_equal(v->value, value);
        assert_int_equal(v->bound, bound);
    }
}

static void test_good_plan_runs_whole(void **state)
{
    (void)state;
    kvs_request a = req(10, 0, 3, 32), b = req(21, 20, 6, 32), c = req(30, 24, 8, 32);
    kvs_sched_entry plan[3] = {entry(&a, 10), entry(&b, 1), entry(&c, 5)};
    plan[1].sample = false; /* a wrong flag is put right: b's token completes it */
    kvs_plan_verdict v[3];
    assert_int_equal(kvs_sched_check_plan(plan, 3, &LIM, v), 3);
    for (int i = 0; i < 3; i++)
        assert_verdict(&v[i], plan[i].req, KVS_PLAN_RUN, KVS_LIMIT_NONE, 0, 0);
    assert_int_equal(plan[0].n_new, 10);
    assert_true(plan[0].sample);
    assert_true(plan[1].sample);
    assert_false(plan[2].sample); /* 29 of 30 */
}

static void test_past_model_len_fails_beside_a_good_one(void **state)
{
    (void)state;
    /* bad: positions 30..33 of a 34-token request whose buffer and blocks hold them, max_model_len 32 */
    kvs_request bad = req(34, 30, 9, 40), good = req(16, 0, 4, 32);
    kvs_plan_limits lim = LIM;
    lim.max_blocks = 9;
    kvs_sched_entry plan[2] = {entry(&bad, 4), entry(&good, 16)};
    kvs_plan_verdict v[2];
    assert_int_equal(kvs_sched_check_plan(plan, 2, &lim, v), 1);
    assert_verdict(&v[0], &bad, KVS_PLAN_FAIL, KVS_LIMIT_MODEL_LEN, 34, 32);
    /* the good one gets the whole step (16 tokens): the failed entry took none of it */
    assert_verdict(&v[1], &good, KVS_PLAN_RUN, KVS_LIMIT_NONE, 0, 0);
    assert_ptr_equal(plan[0].req, &good);
    assert_int_equal(plan[0].n_new, 16);
    assert_true(plan[0].sample);
    /* the requests themselves are untouched */
    assert_int_equal(bad.n_computed, 30);
    assert_int_equal(bad.n_blocks, 9);
}

static void test_request_limits_fail(void **state)
{
    (void)state;
    kvs_request past_blocks = req(12, 4, 2, 32);  /* positions up to 12 in 2 blocks of 4 */
    kvs_request past_tokens = req(8, 4, 3, 32);   /* 6 new of 4 left */
    kvs_request no_tokens = req(8, 8, 2, 32);     /* nothing to compute */
    kvs_request past_buffer = req(20, 16, 5, 18); /* holds 20 tokens in a buffer of 18 */
    kvs_request past_table = req(16, 12, 9, 32);  /* 9 blocks, the table has 8 */
    kvs_request good = req(5, 4, 2, 32);
    kvs_sched_entry plan[6] = {entry(&past_blocks, 8), entry(&past_tokens, 6), entry(&no_tokens, 0),
                               entry(&past_buffer, 4), entry(&past_table, 4), entry(&good, 1)};
    kvs_plan_limits lim = LIM;
    lim.max_seqs = 1; /* the failed ones take no sequence either */
    kvs_plan_verdict v[6];
    assert_int_equal(kvs_sched_check_plan(plan, 6, &lim, v), 1);
    assert_verdict(&v[0], &past_blocks, KVS_PLAN_FAIL, KVS_LIMIT_OWN_BLOCKS, 12, 8);
    assert_verdict(&v[1], &past_tokens, KVS_PLAN_FAIL, KVS_LIMIT_OWN_TOKENS, 10, 8);
    assert_verdict(&v[2], &no_tokens, KVS_PLAN_FAIL, KVS_LIMIT_NO_TOKENS, 0, 1);
    assert_verdict(&v[3], &past_buffer, KVS_PLAN_FAIL, KVS_LIMIT_TOKEN_BUFFER, 20, 18);
    assert_verdict(&v[4], &past_table, KVS_PLAN_FAIL, KVS_LIMIT_BLOCK_TABLE, 9, 8);
    assert_verdict(&v[5], &good, KVS_PLAN_RUN, KVS_LIMIT_NONE, 0, 0);
    assert_ptr_equal(plan[0].req, &good);
    assert_true(plan[0].sample);
}

static void test_past_step_tokens_clips_then_waits(void **state)
{
    (void)state;
    kvs_request a = req(12, 0, 3, 32);   /* a 12-token prefill: runs whole */
    kvs_request b = req(10, 4, 3, 32);   /* its last chunk of 6: 4 fit, so it must not sample */
    kvs_request c = req(9, 8, 3, 32);    /* a decode token: the step is full, it waits */
    kvs_request d = req(6, 5, 2, 32);    /* likewise */
    kvs_sched_entry plan[4] = {entry(&a, 12), entry(&b, 6), entry(&c, 1), entry(&d, 1)};
    assert_true(plan[1].sample);
    kvs_plan_limits lim = LIM;
    lim.max_seqs = 4;
    kvs_plan_verdict v[4];
    assert_int_equal(kvs_sched_check_plan(plan, 4, &lim, v), 2);
    assert_verdict(&v[0], &a, KVS_PLAN_RUN, KVS_LIMIT_NONE, 0, 0);
    assert_verdict(&v[1], &b, KVS_PLAN_CLIP, KVS_LIMIT_STEP_TOKENS, 18, 16);
    assert_verdict(&v[2], &c, KVS_PLAN_WAIT, KVS_LIMIT_STEP_TOKENS, 17, 16);
    assert_verdict(&v[3], &d, KVS_PLAN_WAIT, KVS_LIMIT_STEP_TOKENS, 17, 16);
    assert_int_equal(plan[0].n_new, 12);
    assert_true(plan[0].sample);
    assert_ptr_equal(plan[1].req, &b);
    assert_int_equal(plan[1].n_new, 4);
    assert_false(plan[1].sample);
    /* an entry that fills the step exactly runs whole, and samples */
    kvs_request e = req(13, 0, 4, 32), g = req(7, 4, 2, 32);
    kvs_sched_entry plan2[2] = {entry(&e, 13), entry(&g, 3)};
    assert_int_equal(kvs_sched_check_plan(plan2, 2, &lim, v), 2);
    assert_verdict(&v[1], &g, KVS_PLAN_RUN, KVS_LIMIT_NONE, 0, 0);
    assert_int_equal(plan2[1].n_new, 3);
    assert_true(plan2[1].sample);
}

static void test_past_step_seqs_waits(void **state)
{
    (void)state;
    kvs_request r[5] = {req(2, 1, 1, 32), req(2, 1, 1, 32), req(2, 1, 1, 32), req(2, 1, 1, 32), req(2, 1, 1, 32)};
    kvs_sched_entry plan[5];
    for (int i = 0; i < 5; i++)
        plan[i] = entry(&r[i], 1);
    kvs_plan_verdict v[5];
    assert_int_equal(kvs_sched_check_plan(plan, 5, &LIM, v), 3);
    for (int i = 0; i < 3; i++) {
        assert_verdict(&v[i], &r[i], KVS_PLAN_RUN, KVS_LIMIT_NONE, 0, 0);
        assert_ptr_equal(plan[i].req, &r[i]);
    }
    assert_verdict(&v[3], &r[3], KVS_PLAN_WAIT, KVS_LIMIT_STEP_SEQS, 4, 3);
    assert_verdict(&v[4], &r[4], KVS_PLAN_WAIT, KVS_LIMIT_STEP_SEQS, 4, 3);
}

static void test_messages_name_the_limit(void **state)
{
    (void)state;
    char buf[KVS_OUTPUT_ERROR_BYTES];
    kvs_plan_verdict v = {NULL, KVS_PLAN_FAIL, KVS_LIMIT_MODEL_LEN, 34, 32};
    kvs_plan_verdict_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "the scheduler planned positions up to 34, past max_model_len (32)");
    v = (kvs_plan_verdict){NULL, KVS_PLAN_FAIL, KVS_LIMIT_OWN_BLOCKS, 12, 8};
    kvs_plan_verdict_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "the scheduler planned positions up to 12, past the request's KV blocks (8)");
    v = (kvs_plan_verdict){NULL, KVS_PLAN_FAIL, KVS_LIMIT_BLOCK_TABLE, 9, 8};
    kvs_plan_verdict_format(&v, buf, sizeof buf);
    assert_string_equal(buf, "the request holds 9 KV blocks, past the block table of 8");
    /* every message fits an output's error (with the engine's "internal error: ") at the largest figures */
    for (int l = KVS_LIMIT_NO_TOKENS; l <= KVS_LIMIT_STEP_TOKENS; l++) {
        v = (kvs_plan_verdict){NULL, KVS_PLAN_FAIL, (kvs_plan_limit)l, INT32_MAX, INT32_MAX};
        int n = kvs_plan_verdict_format(&v, buf, sizeof buf);
        assert_true(n > 0 && (size_t)n + strlen("internal error: ") < sizeof buf);
        assert_non_null(strstr(buf, kvs_plan_limit_name((kvs_plan_limit)l)));
    }
}

/* ---- the engine, with a runner smaller than its plans ---- */

#define N_REQ 4
#define N_OUT 24

static void run_four(et_fixture *f, kvs_engine *e, et_result *res)
{
    kvs_request_params p = et_greedy(N_OUT);
    p.ignore_eos = true;
    for (int i = 0; i < N_REQ; i++) {
        int32_t prompt[64];
        int32_t n = et_prompt(f, i * 3 + 1, prompt, 64);
        et_add(e, (uint64_t)i, prompt, n, &p);
    }
    et_run(e, res, N_REQ, 2000);
}

static void test_engine_small_runner_same_tokens(void **state)
{
    et_fixture *f = *state;
    const int32_t L = 128, bs = 8, blocks = 64;
    /* the reference: a runner profiled for the engine's own plans */
    static et_result want[N_REQ], got[N_REQ];
    memset(want, 0, sizeof want);
    memset(got, 0, sizeof got);
    kvs_engine *ref = et_engine(f, 4, 64, L, bs, blocks, false);
    run_four(f, ref, want);
    kvs_engine_free(ref);

    kvs_runner *rn = NULL;
    kvs_error err = {0};
    kvs_runner_limits small = {.max_tokens = 8, .max_seqs = 2, .max_model_len = L, .block_size = bs};
    assert_int_equal(kvs_runner_new(&rn, f->model, &small, &err), KVS_OK);
    assert_int_equal(kvs_runner_profile(rn, KVS_DTYPE_F32, &err), KVS_OK);
    kvs_engine_config cfg = {.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = L,
                             .block_size = bs, .num_blocks = blocks, .kv_dtype = KVS_DTYPE_F32};
    kvs_engine *e = NULL;
    if (kvs_engine_new(&e, f->model, f->tok, rn, &cfg, &err) != KVS_OK)
        fail_msg("kvs_engine_new: %s", err.msg);
    int steps = 0;
    kvs_request_params p = et_greedy(N_OUT);
    p.ignore_eos = true;
    for (int i = 0; i < N_REQ; i++) {
        int32_t prompt[64];
        int32_t n = et_prompt(f, i * 3 + 1, prompt, 64);
        et_add(e, (uint64_t)i, prompt, n, &p);
    }
    while (kvs_engine_has_work(e)) {
        et_step(e, got, N_REQ);
        kvs_engine_stats st;
        kvs_engine_get_stats(e, &st);
        assert_true(st.last_step_tokens <= small.max_tokens);
        assert_true(st.arena_high_water <= rn->profile_high_water);
        assert_true(++steps < 2000);
    }
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.n_failed_invariant, 0);
    assert_true(st.n_plan_trimmed > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    for (int i = 0; i < N_REQ; i++) {
        assert_true(got[i].finished);
        assert_int_equal(got[i].n_tokens, N_OUT);
        et_assert_same(&want[i], &got[i], i);
    }
    kvs_engine_free(e);
    kvs_runner_free(rn);
}

static void test_engine_refuses_other_block_size(void **state)
{
    et_fixture *f = *state;
    kvs_runner *rn = NULL;
    kvs_error err = {0};
    kvs_runner_limits lim = {.max_tokens = 16, .max_seqs = 2, .max_model_len = 64, .block_size = 16};
    assert_int_equal(kvs_runner_new(&rn, f->model, &lim, &err), KVS_OK);
    assert_int_equal(kvs_runner_profile(rn, KVS_DTYPE_F32, &err), KVS_OK);
    /* blocks of 8 would need 8 table entries a request where the runner's tables have 4 */
    kvs_engine_config cfg = {.max_num_seqs = 2, .max_num_batched_tokens = 16, .max_model_len = 64,
                             .block_size = 8, .num_blocks = 16, .kv_dtype = KVS_DTYPE_F32};
    kvs_engine *e = NULL;
    assert_int_equal(kvs_engine_new(&e, f->model, f->tok, rn, &cfg, &err), KVS_E_INVALID);
    assert_null(e);
    assert_non_null(strstr(err.msg, "blocks of 16 tokens"));
    kvs_runner_free(rn);
}

int main(void)
{
    const struct CMUnitTest plan_tests[] = {
        cmocka_unit_test(test_good_plan_runs_whole),
        cmocka_unit_test(test_past_model_len_fails_beside_a_good_one),
        cmocka_unit_test(test_request_limits_fail),
        cmocka_unit_test(test_past_step_tokens_clips_then_waits),
        cmocka_unit_test(test_past_step_seqs_waits),
        cmocka_unit_test(test_messages_name_the_limit),
    };
    const struct CMUnitTest engine_tests[] = {
        cmocka_unit_test(test_engine_small_runner_same_tokens),
        cmocka_unit_test(test_engine_refuses_other_block_size),
    };
    int rc = cmocka_run_group_tests_name("plan check", plan_tests, NULL, NULL);
    return rc | cmocka_run_group_tests_name("engine with a smaller runner", engine_tests, et_fixture_setup,
                                            et_fixture_teardown);
}
