/*
 * test_loop_submit.c - the engine thread (server/engine_loop.h) as the
 * completions endpoint uses it for a list of prompts: several submissions
 * on one channel, their choices numbered from each one's index_base; the
 * prompt logprobs of a choice arrive as events of their own before its
 * first token, each prompt position once; a submission the engine refuses
 * as too long names the length field the client sent (length_param).
 * On stories260K.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine_test_util.h"
#include "server/engine_loop.h"

static kvs_srv_event *pop(kvs_chan *c)
{
    for (int i = 0; i < 400; i++) {
        kvs_srv_event *ev = kvs_chan_pop(c, 50);
        if (ev)
            return ev;
    }
    fail_msg("no event within 20 s");
    return NULL;
}

static void test_two_submissions_one_channel(void **state)
{
    et_fixture *f = *state;
    kvs_engine *e = et_engine(f, 8, 64, 128, 16, 64, true);
    kvs_metrics m;
    kvs_metrics_init(&m, "t", NULL);
    kvs_loop *l;
    kvs_error err;
    assert_int_equal(kvs_loop_start(&l, e, &m, NULL, &err), KVS_OK);
    kvs_chan *c = kvs_chan_new();
    int32_t p0[] = {1, 403, 407, 261, 378}, p1[] = {1, 403, 407};
    kvs_submit subs[2];
    for (int k = 0; k < 2; k++) {
        kvs_request_params p = et_greedy(4);
        p.prompt_logprobs = true;
        p.prompt_top_logprobs = 2;
        subs[k] = (kvs_submit){.chan = c, .n = 2, .index_base = 2 * k, .prompt = k ? p1 : p0, .n_prompt = k ? 3 : 5,
                               .params = p, .t_arrival = kvs_now(),
                               .reply = kvs_event_new(KVS_EV_ACCEPTED, NULL, KVS_SUBMIT_REPLY_ROOM)};
        assert_true(kvs_loop_submit(l, &subs[k]));
    }
    int replies = 0, finished = 0;
    int seen[4][5] = {{0}};
    int n_tok[4] = {0};
    while (finished < 4) {
        kvs_srv_event *ev = pop(c);
        if (ev->kind == KVS_EV_ACCEPTED) {
            assert_true(ev->reply);
            replies++;
        } else {
            assert_int_equal(ev->kind, KVS_EV_TOKEN);
            assert_true(ev->index >= 0 && ev->index < 4);
            int n_prompt = ev->index < 2 ? 5 : 3;
            if (ev->prompt_index > 0) {
                assert_true(ev->prompt_index < n_prompt);
                assert_int_equal(n_tok[ev->index], 0); /* before the first token */
                assert_int_equal(ev->token, (ev->index < 2 ? p0 : p1)[ev->prompt_index]);
                assert_true(ev->logprob <= 0.0f && ev->n_top == 2);
                seen[ev->index][ev->prompt_index]++;
            } else {
                n_tok[ev->index]++;
                assert_int_equal(ev->n_prompt, n_prompt);
                if (ev->finished) {
                    finished++;
                    assert_int_equal(ev->n_output, 4);
                    assert_int_equal(ev->stop_string, -1);
                    assert_int_equal(ev->stop_token, -1);
                }
            }
        }
        kvs_event_free(ev);
    }
    assert_int_equal(replies, 2);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(n_tok[i], 4);
        for (int k = 1; k < (i < 2 ? 5 : 3); k++)
            assert_int_equal(seen[i][k], 1);
    }
    kvs_chan_unref(c);
    kvs_loop_stop(l);
    kvs_loop_free(l);
    kvs_metrics_destroy(&m);
    kvs_engine_free(e);
}

/* An engine whose cache (2 blocks of 16) is smaller than max_model_len:
 * the engine thread refuses what cannot fit, naming the client's field. */
static void test_length_error_names_the_field(void **state)
{
    et_fixture *f = *state;
    kvs_engine *e = et_engine(f, 8, 64, 128, 16, 2, true);
    kvs_metrics m;
    kvs_metrics_init(&m, "t", NULL);
    kvs_loop *l;
    kvs_error err;
    assert_int_equal(kvs_loop_start(&l, e, &m, NULL, &err), KVS_OK);
    int32_t prompt[] = {1, 403, 407, 261, 378};
    const char *fields[] = {"max_completion_tokens", "max_tokens", NULL};
    for (int k = 0; k < 3; k++) {
        kvs_chan *c = kvs_chan_new();
        kvs_submit sub = {.chan = c, .n = 1, .prompt = prompt, .n_prompt = 5, .params = et_greedy(100),
                          .t_arrival = kvs_now(), .length_param = fields[k],
                          .reply = kvs_event_new(KVS_EV_ACCEPTED, NULL, KVS_SUBMIT_REPLY_ROOM)};
        assert_true(kvs_loop_submit(l, &sub));
        kvs_srv_event *ev = pop(c);
        assert_int_equal(ev->kind, KVS_EV_ERROR);
        assert_true(ev->reply);
        assert_int_equal(ev->status, 400);
        assert_string_equal(ev->param, fields[k] ? fields[k] : "max_tokens");
        kvs_event_free(ev);
        kvs_chan_unref(c);
    }
    kvs_loop_stop(l);
    kvs_loop_free(l);
    kvs_metrics_destroy(&m);
    kvs_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_submissions_one_channel),
        cmocka_unit_test(test_length_error_names_the_field),
    };
    return cmocka_run_group_tests(tests, et_fixture_setup, et_fixture_teardown);
}
