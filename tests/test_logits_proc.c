/*
 * test_logits_proc.c - the request-level logits processors and prompt
 * logprobs (engine/logits_proc.h) on stories260K: prompt logprobs against
 * llama2.c's float32 logits; the same values when the logits buffer has
 * only 2 rows a step, when the prompt is prefilled in small chunks, next
 * to other requests, and across preemptions (each prompt position reported
 * exactly once); min_tokens with EOS and stop tokens; logit_bias; which
 * stop string / stop token ended a request; what kvs_engine_add refuses.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/logits_proc.h"
#include "engine_test_util.h"

#define N_REQ 6
#define MAX_PROMPT 96

/* What one request reported, prompt logprobs included. */
typedef struct lp_result {
    int32_t n_prompt;
    int32_t seen[MAX_PROMPT];          /* times each prompt index was reported */
    float lp[MAX_PROMPT];
    int32_t top_ids[MAX_PROMPT][3];
    int32_t tokens[64];
    int32_t n_tokens;
    bool finished;
    kvs_finish_reason reason;
    int32_t stop_string, stop_token;
} lp_result;

static int64_t run_all(kvs_engine *e, lp_result *res, int n_res, int32_t max_rows)
{
    int steps = 0;
    while (kvs_engine_has_work(e)) {
        const kvs_output *outs;
        size_t n_outs;
        kvs_error err = {0};
        if (kvs_engine_step(e, &outs, &n_outs, &err) != KVS_OK)
            fail_msg("kvs_engine_step: %s", err.msg);
        int32_t rows = 0;
        for (size_t i = 0; i < n_outs; i++) {
            const kvs_output *o = &outs[i];
            assert_true(o->id < (uint64_t)n_res);
            lp_result *r = &res[o->id];
            assert_false(r->finished);
            rows += o->n_prompt_lp + (o->token >= 0 ? 1 : 0);
            for (int32_t k = 0; k < o->n_prompt_lp; k++) {
                const kvs_prompt_logprob *p = &o->prompt_lp[k];
                assert_true(p->index >= 1 && p->index < r->n_prompt);
                if (k > 0)
                    assert_int_equal(p->index, o->prompt_lp[k - 1].index + 1);
                r->seen[p->index]++;
                r->lp[p->index] = p->logprob;
                for (int32_t t = 0; t < 3 && t < p->n_top; t++)
                    r->top_ids[p->index][t] = p->top_ids[t];
            }
            if (o->token >= 0) {
                assert_true(r->n_tokens < 64);
                r->tokens[r->n_tokens++] = o->token;
            } else if (!o->finished) {
                assert_true(o->n_prompt_lp > 0); /* token -1 unfinished: a prompt-logprob report */
            }
            if (o->finished) {
                r->finished = true;
                r->reason = o->reason;
                r->stop_string = o->stop_string;
                r->stop_token = o->stop_token;
            }
        }
        assert_true(rows <= max_rows);
        if (++steps > 5000)
            fail_msg("the engine did not finish");
    }
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    return (int64_t)st.n_preemptions;
}

static kvs_request_params plp_params(int32_t max_tokens)
{
    kvs_request_params p = et_greedy(max_tokens);
    p.prompt_logprobs = true;
    p.prompt_top_logprobs = 3;
    return p;
}

/* llama2.c's logits at pos (0..3), as log-softmax. */
static void llama2c_row(int pos, double *ls)
{
    et_llama2c_logits(pos, ls);
    double lse = et_logsumexp(ls);
    for (int i = 0; i < 512; i++)
        ls[i] -= lse;
}

static void test_prompt_logprobs_llama2c(void **state)
{
    et_fixture *f = *state;
    int32_t prompt[] = {1, 403, 407, 261, 378};
    for (int shape = 0; shape < 2; shape++) { /* a roomy engine, and one with 1 logit row a step */
        kvs_engine *e = shape == 0 ? et_engine(f, 8, 64, 128, 16, 64, true) : et_engine(f, 1, 64, 128, 16, 64, true);
        lp_result res[1] = {{.n_prompt = 5}};
        kvs_request_params p = plp_params(1);
        et_add(e, 0, prompt, 5, &p);
        run_all(e, res, 1, shape == 0 ? 8 : 1);
        for (int i = 1; i < 5; i++) {
            double ls[512];
            llama2c_row(i - 1, ls);
            assert_int_equal(res[0].seen[i], 1);
            assert_true(fabs(res[0].lp[i] - ls[prompt[i]]) < 2e-3);
            int best = 0;
            for (int t = 1; t < 512; t++)
                best = ls[t] > ls[best] ? t : best;
            assert_int_equal(res[0].top_ids[i][0], best);
        }
        assert_int_equal(res[0].n_tokens, 1);
        kvs_engine_free(e);
    }
}

/* Six long prompts with prompt logprobs: the same values whatever the
 * engine's shape, each position once. */
static void test_prompt_logprobs_chunked_preempted(void **state)
{
    et_fixture *f = *state;
    static int32_t prompts[N_REQ][MAX_PROMPT];
    int32_t n[N_REQ];
    for (int i = 0; i < N_REQ; i++) {
        int32_t a[64], b[64], m = 0;
        int32_t na = et_prompt(f, i, a, 64), nb = et_prompt(f, i + 3, b, 64);
        memcpy(prompts[i], a, (size_t)na * 4);
        m = na;
        memcpy(prompts[i] + m, b + 1, (size_t)(nb - 1) * 4); /* without its BOS */
        m += nb - 1;
        n[i] = m;
    }
    static lp_result ref[N_REQ], got[N_REQ];
    memset(ref, 0, sizeof ref);
    kvs_engine *e = et_engine(f, 16, 512, 128, 16, 256, true);
    for (int i = 0; i < N_REQ; i++) {
        ref[i].n_prompt = n[i];
        kvs_request_params p = plp_params(6);
        et_add(e, (uint64_t)i, prompts[i], n[i], &p);
    }
    run_all(e, ref, N_REQ, 16);
    kvs_engine_free(e);
    /* 2 logit rows and 8 tokens a step; then a cache so small that requests preempt each other */
    struct { int32_t seqs, budget, blocks; bool want_preempt; } shapes[] = {{2, 8, 256, false}, {4, 24, 5, true}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        memset(got, 0, sizeof got);
        e = et_engine(f, shapes[sh].seqs, shapes[sh].budget, 128, 16, shapes[sh].blocks, true);
        for (int i = 0; i < N_REQ; i++) {
            got[i].n_prompt = n[i];
            kvs_request_params p = plp_params(6);
            et_add(e, (uint64_t)i, prompts[i], n[i], &p);
        }
        int64_t preemptions = run_all(e, got, N_REQ, shapes[sh].seqs < shapes[sh].budget ? shapes[sh].seqs
                                                                                          : shapes[sh].budget);
        if (shapes[sh].want_preempt)
            assert_true(preemptions > 0);
        for (int i = 0; i < N_REQ; i++) {
            for (int k = 1; k < n[i]; k++) {
                assert_int_equal(got[i].seen[k], 1);
                assert_true(fabsf(got[i].lp[k] - ref[i].lp[k]) < 1e-4f);
                assert_memory_equal(got[i].top_ids[k], ref[i].top_ids[k], sizeof got[i].top_ids[k]);
            }
            assert_int_equal(got[i].n_tokens, ref[i].n_tokens);
            assert_memory_equal(got[i].tokens, ref[i].tokens, (size_t)ref[i].n_tokens * 4);
        }
        kvs_engine_free(e);
    }
}

static void test_min_tokens_bias_stop(void **state)
{
    et_fixture *f = *state;
    kvs_engine *e = et_engine(f, 8, 64, 128, 16, 64, true);
    int32_t prompt[] = {1, 403, 407, 261, 378};
    const int32_t eos = kvs_tok_eos(f->tok);
    kvs_logit_bias to_eos = {eos, 100.0f};
    for (int32_t m = 0; m <= 6; m += 3) {
        lp_result res[1] = {{.n_prompt = 5}};
        kvs_request_params p = et_greedy(30);
        p.logit_bias = &to_eos;
        p.n_logit_bias = 1;
        p.min_tokens = m;
        et_add(e, 0, prompt, 5, &p);
        run_all(e, res, 1, 8);
        assert_int_equal(res[0].n_tokens, m + 1); /* EOS masked until m outputs, then it comes at once */
        assert_int_equal(res[0].tokens[m], eos);
        assert_int_equal(res[0].reason, KVS_FINISH_STOP);
        assert_int_equal(res[0].stop_token, -1); /* EOS: vLLM's stop_reason is null */
        assert_int_equal(res[0].stop_string, -1);
    }
    /* a bias on a stop token id: stop_token names it; min_tokens masks it too */
    int32_t stop_id = 261;
    kvs_logit_bias to_stop = {stop_id, 100.0f};
    for (int32_t m = 0; m <= 4; m += 4) {
        lp_result res[1] = {{.n_prompt = 5}};
        kvs_request_params p = et_greedy(30);
        p.logit_bias = &to_stop;
        p.n_logit_bias = 1;
        p.stop_token_ids = &stop_id;
        p.n_stop_token_ids = 1;
        p.min_tokens = m;
        et_add(e, 0, prompt, 5, &p);
        run_all(e, res, 1, 8);
        assert_int_equal(res[0].n_tokens, m + 1);
        for (int32_t k = 0; k < m; k++)
            assert_int_not_equal(res[0].tokens[k], stop_id);
        assert_int_equal(res[0].stop_token, stop_id);
    }
    /* the second of two stop strings, one of them holding a NUL byte */
    const char *stops[] = {"zz\0q", "Lily"};
    size_t lens[] = {4, 4};
    lp_result res[1] = {{.n_prompt = 5}};
    kvs_request_params p = et_greedy(40);
    p.stop = stops;
    p.stop_len = lens;
    p.n_stop = 2;
    et_add(e, 0, prompt, 5, &p);
    run_all(e, res, 1, 8);
    assert_int_equal(res[0].reason, KVS_FINISH_STOP);
    assert_int_equal(res[0].stop_string, 1);
    assert_int_equal(res[0].stop_token, -1);
    /* refused */
    kvs_error err;
    kvs_logit_bias bad = {512, 1.0f};
    p = et_greedy(4);
    p.logit_bias = &bad;
    p.n_logit_bias = 1;
    assert_int_equal(kvs_engine_add(e, 1, prompt, 5, &p, &err), KVS_E_INVALID);
    bad = (kvs_logit_bias){3, NAN};
    assert_int_equal(kvs_engine_add(e, 1, prompt, 5, &p, &err), KVS_E_INVALID);
    p = et_greedy(4);
    p.min_tokens = 5;
    assert_int_equal(kvs_engine_add(e, 1, prompt, 5, &p, &err), KVS_E_INVALID);
    p = plp_params(4);
    p.prompt_top_logprobs = KVS_MAX_LOGPROBS + 1;
    assert_int_equal(kvs_engine_add(e, 1, prompt, 5, &p, &err), KVS_E_INVALID);
    assert_false(kvs_engine_has_work(e));
    kvs_engine_free(e);
}

/* kvs_plp_fit_plan alone, on hand-made plans: every step's rows fit, each
 * request keeps at least one token, a shortened chunk does not sample. */
static void test_fit_plan(void **state)
{
    (void)state;
    kvs_request reqs[4];
    kvs_sched_entry plan[4];
    kvs_scheduler s = {.plan = plan};
    for (int32_t max_rows = 1; max_rows <= 12; max_rows++) {
        for (int32_t cap = 1; cap <= 5; cap += 4) {
            memset(reqs, 0, sizeof reqs);
            /* 0: prompt logprobs, prefilling 40 of 50 from 0; 1: decoding; 2: prompt logprobs, last chunk;
             * 3: prompt logprobs with positions reported before a preemption (plp_next 30) */
            int32_t n_tokens[4] = {50, 21, 12, 40}, computed[4] = {0, 20, 4, 10}, n_new[4] = {40, 1, 8, 30};
            int32_t plp_next[4] = {1, 1, 1, 30};
            bool plp[4] = {true, false, true, true};
            s.n_plan = max_rows < 4 ? max_rows : 4;
            for (int i = 0; i < 4; i++) {
                reqs[i].n_prompt = reqs[i].n_tokens = n_tokens[i];
                if (i == 1)
                    reqs[i].n_prompt = 10;
                reqs[i].n_computed = computed[i];
                reqs[i].plp_next = plp_next[i];
                reqs[i].params.prompt_logprobs = plp[i];
                plan[i] = (kvs_sched_entry){&reqs[i], n_new[i], computed[i] + n_new[i] == n_tokens[i]};
            }
            kvs_plp_fit_plan(&s, max_rows, cap);
            int32_t rows = 0;
            for (int i = 0; i < s.n_plan; i++) {
                int32_t first, r = kvs_plp_rows(&reqs[i], computed[i], plan[i].n_new, &first);
                assert_true(plan[i].n_new >= 1 && plan[i].n_new <= n_new[i]);
                assert_true(r <= cap);
                if (plan[i].n_new < n_new[i])
                    assert_false(plan[i].sample);
                if (plan[i].sample)
                    assert_int_equal(computed[i] + plan[i].n_new, n_tokens[i]);
                rows += r + (plan[i].sample ? 1 : 0);
                if (i == 3) /* positions 10..28 were reported: recomputing them needs no rows */
                    assert_true(r == 0 || first == 29);
            }
            assert_true(rows <= max_rows);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_logprobs_llama2c),
        cmocka_unit_test(test_prompt_logprobs_chunked_preempted),
        cmocka_unit_test(test_min_tokens_bias_stop),
        cmocka_unit_test(test_fit_plan),
    };
    return cmocka_run_group_tests(tests, et_fixture_setup, et_fixture_teardown);
}
