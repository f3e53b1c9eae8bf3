/*
 * test_engine_stop.c - how requests end and what text they return, on
 * stories260K: stop strings (across tokens, at the very start, several at
 * once, a prefix that never completes), stop token ids, EOS and
 * ignore_eos, max_tokens, max_model_len and vLLM's order among them;
 * streamed text (never a split character, never a held-back stop string,
 * the same as the tokenizer's own streaming decoder); log-probabilities
 * against llama2.c's logits; what kvs_engine_add refuses.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine_test_util.h"

#define MAX_LEN 160

typedef struct suite {
    et_fixture *f;
    kvs_engine *e;
    int32_t prompt[8];
    int32_t n_prompt;
    et_result *ref;       /* greedy, 60 tokens, no stop conditions */
} suite;

/* Run one request alone through the suite's engine. */
static et_result *run_one(suite *s, const int32_t *prompt, int32_t n, const kvs_request_params *p)
{
    et_result *r = calloc(1, sizeof *r);
    et_add(s->e, 0, prompt, n, p);
    et_run(s->e, r, 1, 10000);
    assert_true(r->finished);
    return r;
}

static int suite_setup(void **state)
{
    if (et_fixture_setup(state) != 0)
        return -1;
    suite *s = calloc(1, sizeof *s);
    s->f = *state;
    s->e = et_engine(s->f, 64, 512, MAX_LEN, 16, 1024, true);
    s->n_prompt = et_encode(s->f, "Once upon a time", s->prompt, 8);
    kvs_request_params p = et_greedy(60);
    s->ref = run_one(s, s->prompt, s->n_prompt, &p);
    assert_int_equal(s->ref->n_tokens, 60);
    assert_int_equal(s->ref->reason, KVS_FINISH_LENGTH);
    *state = s;
    return 0;
}

/* Each test gets a fresh engine: a failed test leaves nothing behind. */
static int fresh_engine(void **state)
{
    suite *s = *state;
    kvs_engine_free(s->e);
    s->e = et_engine(s->f, 64, 512, MAX_LEN, 16, 1024, true);
    return 0;
}

static int suite_teardown(void **state)
{
    suite *s = *state;
    void *f = s->f;
    kvs_engine_free(s->e);
    free(s->ref);
    free(s);
    return et_fixture_teardown(&f);
}

static const char *find(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle));
}

/* Index of the token whose text completes byte `end` of the reference. */
static int32_t token_completing(const et_result *ref, size_t end)
{
    for (int32_t i = 0; i < ref->n_tokens; i++)
        if (ref->text_at[i] >= end)
            return i;
    fail_msg("no token completes byte %zu", end);
    return -1;
}

static void assert_prefix_run(const et_result *r, const et_result *ref, int32_t n_tokens, size_t text_len,
                              kvs_finish_reason reason)
{
    assert_int_equal(r->reason, reason);
    assert_int_equal(r->n_tokens, n_tokens);
    assert_memory_equal(r->tokens, ref->tokens, (size_t)n_tokens * sizeof r->tokens[0]);
    assert_int_equal(r->text_len, text_len);
    assert_memory_equal(r->text, ref->text, text_len);
}

/* A stop string that begins in one token and ends in the next: the text
 * ends where it starts, and the request ends at the token completing it. */
static void test_stop_string_spanning_tokens(void **state)
{
    suite *s = *state;
    const et_result *ref = s->ref;
    int found = 0;
    for (int32_t k = 4; k + 1 < ref->n_tokens && found < 3; k++) {
        size_t a0 = ref->text_at[k - 1], a1 = ref->text_at[k], a2 = ref->text_at[k + 1];
        if (a1 - a0 < 2 || a2 - a1 < 2)
            continue;
        char stop[8];
        memcpy(stop, ref->text + a1 - 2, 4); /* two bytes of each token */
        stop[4] = '\0';
        const char *at = find(ref->text, ref->text_len, stop);
        assert_non_null(at);
        size_t q = (size_t)(at - ref->text);
        int32_t last = token_completing(ref, q + 4);
        kvs_request_params p = et_greedy(60);
        const char *stops[] = {stop};
        p.stop = stops;
        p.n_stop = 1;
        et_result *r = run_one(s, s->prompt, s->n_prompt, &p);
        assert_prefix_run(r, ref, last + 1, q, KVS_FINISH_STOP);
        free(r);
        found++;
    }
    assert_int_equal(found, 3);
}

/* A stop string at the very start of the output: empty text. */
static void test_stop_string_at_start(void **state)
{
    suite *s = *state;
    const et_result *ref = s->ref;
    char stop[3] = {ref->text[0], ref->text[1], 0};
    kvs_request_params p = et_greedy(60);
    const char *stops[] = {"no such text", stop};
    p.stop = stops;
    p.n_stop = 2;
    et_result *r = run_one(s, s->prompt, s->n_prompt, &p);
    assert_prefix_run(r, ref, token_completing(ref, 2) + 1, 0, KVS_FINISH_STOP);
    assert_int_equal(r->n_reports, r->n_tokens);
    free(r);
}

/* Two stop strings completing with the same token: the text is cut at the
 * one that starts first, whatever their order in the list. */
static void test_stop_strings_earliest_wins(void **state)
{
    suite *s = *state;
    const et_result *ref = s->ref;
    for (size_t p0 = 10; p0 + 6 < ref->text_len; p0++) {
        char s1[8], s2[8];
        memcpy(s1, ref->text + p0, 6);
        s1[6] = '\0';
        memcpy(s2, ref->text + p0 + 2, 4);
        s2[4] = '\0';
        if (find(ref->text, ref->text_len, s1) != ref->text + p0 ||
            find(ref->text, ref->text_len, s2) != ref->text + p0 + 2)
            continue;
        if (token_completing(ref, p0 + 6) == token_completing(ref, p0 + 5))
            continue; /* want the last byte to be what completes both */
        kvs_request_params p = et_greedy(60);
        const char *stops[] = {s2, s1};
        p.stop = stops;
        p.n_stop = 2;
        et_result *r = run_one(s, s->prompt, s->n_prompt, &p);
        assert_prefix_run(r, ref, token_completing(ref, p0 + 6) + 1, p0, KVS_FINISH_STOP);
        free(r);
        return;
    }
    fail_msg("no suitable place in the reference text");
}

/* Text that could start a stop string is held back until it cannot, and
 * then sent; nothing is lost when the stop string never completes. */
static void test_stop_prefix_held_back(void **state)
{
    suite *s = *state;
    const et_result *ref = s->ref;
    char stop[16];
    memcpy(stop, ref->text + 20, 5);
    memcpy(stop + 5, "\x01~", 3); /* never in the text */
    kvs_request_params p = et_greedy(60);
    const char *stops[] = {stop};
    p.stop = stops;
    p.n_stop = 1;
    et_result *r = calloc(1, sizeof *r);
    et_add(s->e, 0, s->prompt, s->n_prompt, &p);
    bool held = false;
    while (kvs_engine_has_work(s->e)) {
        et_step(s->e, r, 1);
        assert_true(r->text_len <= ref->text_len);
        assert_memory_equal(r->text, ref->text, r->text_len); /* only ever a prefix */
        if (r->finished || r->n_tokens == 0)
            continue;
        size_t produced = ref->text_at[r->n_tokens - 1];
        assert_true(produced - r->text_len <= strlen(stop) - 1); /* at most a proper prefix waits */
        /* exactly the longest suffix that starts the stop string waits */
        size_t hold = 0;
        for (size_t k = 1; k < strlen(stop) && k <= produced; k++)
            if (memcmp(ref->text + produced - k, stop, k) == 0)
                hold = k;
        assert_int_equal(produced - r->text_len, hold);
        held = held || hold > 0;
    }
    assert_true(held);
    assert_prefix_run(r, ref, 60, ref->text_len, KVS_FINISH_LENGTH);
    free(r);
}

/* A stop token ends the request with that token, whose text is not output;
 * at the max_tokens token the length limit wins (vLLM's order), while a
 * stop string completing at that token still wins over the length. */
static void test_stop_token_ids_and_order(void **state)
{
    suite *s = *state;
    const et_result *ref = s->ref;
    int32_t x = ref->tokens[7], j = 0;
    while (ref->tokens[j] != x)
        j++;
    assert_true(j > 0);
    int32_t ids[] = {5, x};
    kvs_request_params p = et_greedy(60);
    p.stop_token_ids = ids;
    p.n_stop_token_ids = 2;
    et_result *r = run_one(s, s->prompt, s->n_prompt, &p);
    assert_prefix_run(r, ref, j + 1, ref->text_at[j - 1], KVS_FINISH_STOP);
    free(r);

    p.max_tokens = j + 1;
    r = run_one(s, s->prompt, s->n_prompt, &p);
    assert_prefix_run(r, ref, j + 1, ref->text_at[j], KVS_FINISH_LENGTH);
    free(r);

    /* a stop string completed by token k, with max_tokens = k + 1 */
    for (int32_t k = 10; k < ref->n_tokens; k++) {
        size_t end = ref->text_at[k];
        if (end == ref->text_at[k - 1])
            continue;
        char stop[4];
        memcpy(stop, ref->text + end - 3, 3);
        stop[3] = '\0';
        if (find(ref->text, ref->text_len, stop) != ref->text + end - 3)
            continue;
        kvs_request_params q = et_greedy(k + 1);
        const char *stops[] = {stop};
        q.stop = stops;
        q.n_stop = 1;
        r = run_one(s, s->prompt, s->n_prompt, &q);
        assert_prefix_run(r, ref, k + 1, end - 3, KVS_FINISH_STOP);
        free(r);
        return;
    }
    fail_msg("no suitable place in the reference text");
}

static void test_max_tokens_and_max_model_len(void **state)
{
    suite *s = *state;
    const et_result *ref = s->ref;
    kvs_request_params p = et_greedy(5);
    et_result *r = run_one(s, s->prompt, s->n_prompt, &p);
    assert_prefix_run(r, ref, 5, ref->text_at[4], KVS_FINISH_LENGTH);
    free(r);

    /* a short max_model_len: prompt + output stop there */
    kvs_engine *e = et_engine(s->f, 4, 64, 32, 16, 8, true);
    int32_t long_prompt[40];
    for (int i = 0; i < 40; i++)
        long_prompt[i] = i < s->n_prompt ? s->prompt[i] : ref->tokens[i - s->n_prompt];
    int32_t max_toks[] = {0, 100, -1};
    for (int t = 0; t < 3; t++) {
        p = et_greedy(max_toks[t]);
        et_result *q = calloc(1, sizeof *q);
        et_add(e, 0, s->prompt, s->n_prompt, &p);
        et_run(e, q, 1, 1000);
        assert_prefix_run(q, ref, 32 - s->n_prompt, ref->text_at[32 - s->n_prompt - 1], KVS_FINISH_LENGTH);
        free(q);
    }
    /* a prompt of max_model_len - 1 gets one token; one of max_model_len is refused */
    p = et_greedy(16);
    et_result *q = calloc(1, sizeof *q);
    et_add(e, 0, long_prompt, 31, &p);
    et_run(e, q, 1, 100);
    assert_int_equal(q->n_tokens, 1);
    assert_int_equal(q->tokens[0], ref->tokens[31 - s->n_prompt]);
    assert_int_equal(q->reason, KVS_FINISH_LENGTH);
    free(q);
    kvs_error err = {0};
    assert_int_equal(kvs_engine_add(e, 0, long_prompt, 32, &p, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "max_model_len"));
    kvs_engine_free(e);
}

/* A sampled request that ends with EOS (the model rarely says it; a high
 * temperature and fixed seeds find one): EOS is the last token, its text
 * is nothing; with ignore_eos the same seed gives the same tokens up to
 * there and goes on to max_tokens. */
static void test_eos_and_ignore_eos(void **state)
{
    suite *s = *state;
    enum { N = 64, MAXT = 100 };
    et_result *res = calloc(N, sizeof *res);
    kvs_request_params p = kvs_request_defaults();
    p.sampling.temperature = 8.0f;
    p.sampling.has_seed = true;
    p.max_tokens = MAXT;
    for (int i = 0; i < N; i++) {
        p.sampling.seed = (uint64_t)i + 1;
        et_add(s->e, (uint64_t)i, s->prompt, s->n_prompt, &p);
    }
    et_run(s->e, res, N, 10000);
    int hit = -1;
    for (int i = 0; i < N && hit < 0; i++) {
        if (res[i].reason == KVS_FINISH_STOP)
            hit = i;
        else
            assert_int_equal(res[i].n_tokens, MAXT);
    }
    if (hit < 0)
        fail_msg("no request of %d ended with EOS", N);
    const et_result *a = &res[hit];
    int32_t k = a->n_tokens - 1;
    assert_true(kvs_tok_is_eog(s->f->tok, a->tokens[k]));
    assert_true(k == 0 || a->text_at[k] == a->text_at[k - 1]); /* EOS adds no text */

    p.sampling.seed = (uint64_t)hit + 1;
    p.ignore_eos = true;
    et_result *b = run_one(s, s->prompt, s->n_prompt, &p);
    assert_int_equal(b->reason, KVS_FINISH_LENGTH);
    assert_int_equal(b->n_tokens, MAXT);
    assert_memory_equal(b->tokens, a->tokens, (size_t)a->n_tokens * sizeof a->tokens[0]);
    assert_true(b->text_len >= a->text_len);
    assert_memory_equal(b->text, a->text, a->text_len);
    /* EOS among stop_token_ids is still a stop with ignore_eos */
    int32_t eos = a->tokens[k];
    p.stop_token_ids = &eos;
    p.n_stop_token_ids = 1;
    et_result *c = run_one(s, s->prompt, s->n_prompt, &p);
    assert_int_equal(c->reason, KVS_FINISH_STOP);
    assert_int_equal(c->n_tokens, a->n_tokens);
    free(b);
    free(c);
    free(res);
}

static bool valid_utf8(const char *t, size_t n)
{
    const unsigned char *s = (const unsigned char *)t;
    for (size_t i = 0; i < n;) {
        size_t len = s[i] < 0x80 ? 1 : (s[i] & 0xE0) == 0xC0 ? 2 : (s[i] & 0xF0) == 0xE0 ? 3 : (s[i] & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n || (len == 2 && s[i] < 0xC2))
            return false;
        for (size_t j = 1; j < len; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* The tokenizer's streaming decoder over the whole output, flushed: what
 * the engine's text must add up to (EOS/stop tokens excepted). */
static size_t stream_decode(const kvs_tokenizer *tok, const int32_t *ids, int32_t n, char *out, bool *pending)
{
    kvs_tok_stream st;
    kvs_tok_stream_init(&st, false);
    char piece[1024];
    size_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t np = kvs_tok_stream_push(tok, &st, ids[i], piece, sizeof piece);
        memcpy(out + k, piece, np);
        k += np;
    }
    *pending = st.n_pending > 0;
    k += kvs_tok_stream_flush(&st, out + k, 16);
    return k;
}

/* Sampled outputs full of byte tokens: every output's text is whole
 * characters, the sum is the streaming decoder's text, an incomplete
 * character at the end becomes U+FFFD; the same seed with a stop string
 * from that text stops exactly there. */
static void test_streamed_text(void **state)
{
    suite *s = *state;
    enum { N = 48 };
    et_result *res = calloc(N, sizeof *res);
    kvs_request_params p = kvs_request_defaults();
    p.sampling.temperature = 6.0f;
    p.sampling.has_seed = true;
    p.ignore_eos = true;
    int32_t max_t[N];
    for (int i = 0; i < N; i++) {
        p.sampling.seed = 1000 + (uint64_t)i;
        p.max_tokens = max_t[i] = 8 + i % 33;
        et_add(s->e, (uint64_t)i, s->prompt, s->n_prompt, &p);
    }
    /* check each output chunk as it comes */
    int steps = 0;
    while (kvs_engine_has_work(s->e)) {
        const kvs_output *outs;
        size_t n_outs;
        kvs_error err;
        assert_int_equal(kvs_engine_step(s->e, &outs, &n_outs, &err), KVS_OK);
        for (size_t i = 0; i < n_outs; i++)
            assert_true(valid_utf8(outs[i].text, outs[i].text_len));
        et_collect(res, N, outs, n_outs);
        assert_true(++steps < 1000);
    }
    int n_pending_end = 0, n_stop_checked = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(res[i].n_tokens, max_t[i]);
        char want[8 * ET_MAX_OUT];
        bool pending;
        size_t n = stream_decode(s->f->tok, res[i].tokens, res[i].n_tokens, want, &pending);
        assert_int_equal(res[i].text_len, n);
        assert_memory_equal(res[i].text, want, n);
        /* the same seed cut right after a UTF-8 lead byte: U+FFFD ends the text */
        for (int32_t k = 0; k < res[i].n_tokens && !pending; k++) {
            unsigned char b[8];
            if (kvs_tok_decode_token(s->f->tok, res[i].tokens[k], false, (char *)b, sizeof b) != 1 ||
                b[0] < 0xC2 || b[0] > 0xF4)
                continue;
            kvs_request_params pc = p;
            pc.sampling.seed = 1000 + (uint64_t)i;
            pc.max_tokens = k + 1;
            et_result *r = run_one(s, s->prompt, s->n_prompt, &pc);
            bool pend;
            size_t nc = stream_decode(s->f->tok, r->tokens, r->n_tokens, want, &pend);
            assert_true(pend);
            assert_int_equal(r->n_tokens, k + 1);
            assert_int_equal(r->text_len, nc);
            assert_memory_equal(r->text, want, nc);
            assert_true(nc >= 3 && memcmp(r->text + nc - 3, "\xef\xbf\xbd", 3) == 0);
            assert_memory_equal(r->text, res[i].text, nc - 3); /* the same text before it */
            n_pending_end++;
            free(r);
            break;
        }
        /* a stop string from the middle of the text (whole characters) */
        size_t at = res[i].text_len / 2, len = 3;
        while (at > 0 && ((unsigned char)res[i].text[at] & 0xC0) == 0x80)
            at--;
        if (at + len > res[i].text_len || !valid_utf8(res[i].text + at, len) || pending)
            continue;
        char stop[8];
        memcpy(stop, res[i].text + at, len);
        stop[len] = '\0';
        size_t q = (size_t)(find(res[i].text, res[i].text_len, stop) - res[i].text);
        kvs_request_params ps = p;
        ps.sampling.seed = 1000 + (uint64_t)i;
        ps.max_tokens = max_t[i];
        const char *stops[] = {stop};
        ps.stop = stops;
        ps.n_stop = 1;
        et_result *r = run_one(s, s->prompt, s->n_prompt, &ps);
        assert_int_equal(r->reason, KVS_FINISH_STOP);
        assert_int_equal(r->text_len, q);
        assert_memory_equal(r->text, res[i].text, q);
        assert_true(r->n_tokens <= res[i].n_tokens);
        assert_memory_equal(r->tokens, res[i].tokens, (size_t)r->n_tokens * sizeof r->tokens[0]);
        n_stop_checked++;
        free(r);
    }
    assert_true(n_pending_end > 0);
    assert_true(n_stop_checked > N / 4);
    free(res);
}

/* llama2.c's logits at position 3 (inputs 1 403 407 261): logprobs are
 * their log-softmax, whatever the sampling does to its own copy. */
static void test_logprobs_against_llama2c(void **state)
{
    suite *s = *state;
    double logits[512];
    et_llama2c_logits(3, logits);
    double lse = et_logsumexp(logits);

    int32_t prompt[] = {1, 403, 407, 261};
    kvs_request_params p = et_greedy(1);
    p.logprobs = 5;
    for (int variant = 0; variant < 3; variant++) {
        if (variant == 1) { /* sampled with penalties: still the raw distribution */
            p.sampling.temperature = 0.7f;
            p.sampling.repetition_penalty = 1.5f;
            p.sampling.has_seed = true;
            p.sampling.seed = 7;
        }
        if (variant == 2)
            p.logprobs = 0;
        et_add(s->e, 0, prompt, 4, &p);
        const kvs_output *outs;
        size_t n_outs;
        kvs_error err;
        assert_int_equal(kvs_engine_step(s->e, &outs, &n_outs, &err), KVS_OK);
        assert_int_equal(n_outs, 1);
        const kvs_output *o = &outs[0];
        if (variant == 0)
            assert_int_equal(o->token, 378); /* llama2.c's greedy choice */
        assert_true(fabs(o->logprob - (logits[o->token] - lse)) < 2e-3);
        assert_int_equal(o->n_top, variant == 2 ? 0 : 5);
        bool taken[512] = {false};
        for (int k = 0; k < o->n_top; k++) {
            int best = -1;
            for (int i = 0; i < 512; i++)
                if (!taken[i] && (best < 0 || logits[i] > logits[best]))
                    best = i;
            taken[best] = true;
            assert_int_equal(o->top_ids[k], best);
            assert_true(fabs(o->top_logprobs[k] - (logits[best] - lse)) < 2e-3);
        }
        assert_true(o->finished);
        assert_false(kvs_engine_has_work(s->e));
    }
}

static void test_add_rejects(void **state)
{
    suite *s = *state;
    kvs_engine *e = et_engine(s->f, 4, 64, 64, 16, 2, true);
    kvs_request_params p = et_greedy(8);
    kvs_error err;
    int32_t bad[] = {1, 512}, neg[] = {-1}, ok[] = {1, 403};
    assert_int_equal(kvs_engine_add(e, 0, ok, 0, &p, &err), KVS_E_INVALID);
    assert_int_equal(kvs_engine_add(e, 0, bad, 2, &p, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "vocabulary"));
    assert_int_equal(kvs_engine_add(e, 0, neg, 1, &p, &err), KVS_E_INVALID);
    p.max_tokens = 40; /* 42 tokens: three blocks, the cache has two */
    assert_int_equal(kvs_engine_add(e, 0, ok, 2, &p, &err), KVS_E_BUDGET);
    p = et_greedy(8);
    p.logprobs = KVS_MAX_LOGPROBS + 1;
    assert_int_equal(kvs_engine_add(e, 0, ok, 2, &p, &err), KVS_E_INVALID);
    p = et_greedy(8);
    const char *empty[] = {"x", ""};
    p.stop = empty;
    p.n_stop = 2;
    assert_int_equal(kvs_engine_add(e, 0, ok, 2, &p, &err), KVS_E_INVALID);
    p.stop = NULL;
    assert_int_equal(kvs_engine_add(e, 0, ok, 2, &p, &err), KVS_E_INVALID);
    p = et_greedy(8);
    p.n_stop_token_ids = 3;
    assert_int_equal(kvs_engine_add(e, 0, ok, 2, &p, &err), KVS_E_INVALID);
    p = et_greedy(8);
    p.sampling.temperature = -1.0f;
    assert_int_equal(kvs_engine_add(e, 0, ok, 2, &p, &err), KVS_E_INVALID);
    assert_false(kvs_engine_has_work(e));
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    assert_int_equal(st.n_waiting, 0);
    kvs_engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_stop_string_spanning_tokens, fresh_engine),
        cmocka_unit_test_setup(test_stop_string_at_start, fresh_engine),
        cmocka_unit_test_setup(test_stop_strings_earliest_wins, fresh_engine),
        cmocka_unit_test_setup(test_stop_prefix_held_back, fresh_engine),
        cmocka_unit_test_setup(test_stop_token_ids_and_order, fresh_engine),
        cmocka_unit_test_setup(test_max_tokens_and_max_model_len, fresh_engine),
        cmocka_unit_test_setup(test_eos_and_ignore_eos, fresh_engine),
        cmocka_unit_test_setup(test_streamed_text, fresh_engine),
        cmocka_unit_test_setup(test_logprobs_against_llama2c, fresh_engine),
        cmocka_unit_test_setup(test_add_rejects, fresh_engine),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
