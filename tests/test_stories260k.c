/*
 * test_stories260k.c - kvserve's forward pass, greedy decoding and text
 * against llama2.c (karpathy/llama2.c run.c) on the same weights:
 * shared/expected/ holds llama2.c's greedy tokens, printed text and full
 * logits for stories260K.  Checked through the runner directly (one token
 * per step, a whole prompt per step, a step that mixes the sequence with
 * another one's prefill) and through kvs_launch + the engine.
 *
 * llama2.c prints, for every position, the piece of the next token
 * (without its leading space when the previous token is BOS), then "\n";
 * with -i the prompt's pieces are printed too.  So its text is
 * decode(BOS, next tokens...) + "\n".
 */
#include <math.h>

#include "engine/launch.h"
#include "model_test_util.h"

#define N_VOCAB 512

typedef struct expected_run {
    int32_t prompt[16];
    int32_t n_prompt;
    int32_t next[256];  /* next token at positions 0.. */
    int32_t n_next;
    char *text;
    size_t text_len;
} expected_run;

static void read_ids(const char *text, const char *label, int32_t *out, int32_t cap, int32_t *n)
{
    const char *p = strstr(text, label);
    assert_non_null(p);
    p = strchr(p, ':'); /* "label ...: 1 403 407" */
    assert_non_null(p);
    p++;
    *n = 0;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p < '0' || *p > '9')
            break;
        assert_true(*n < cap);
        out[(*n)++] = (int32_t)strtol(p, (char **)&p, 10);
    }
}

static void load_expected(const char *stem, expected_run *e)
{
    char path[1024];
    memset(e, 0, sizeof *e);
    snprintf(path, sizeof path, "%s/expected/%s.tokens", mt_shared_dir(), stem);
    char *t = mt_read_file(path, NULL);
    assert_non_null(t);
    read_ids(t, "\nprompt_tokens", e->prompt, 16, &e->n_prompt);
    read_ids(t, "\nnext_token_at_pos_0..", e->next, 256, &e->n_next);
    free(t);
    snprintf(path, sizeof path, "%s/expected/%s.txt", mt_shared_dir(), stem);
    e->text = mt_read_file(path, &e->text_len);
    assert_non_null(e->text);
}

static void model_path(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/models/stories260K.gguf", mt_shared_dir());
}

/* llama2.c's printed text for BOS followed by `ids`. */
static char *llama2c_text(const kvs_tokenizer *tok, const int32_t *ids, int32_t n)
{
    int32_t *all = malloc(((size_t)n + 1) * sizeof *all);
    assert_non_null(all);
    all[0] = kvs_tok_bos(tok);
    memcpy(all + 1, ids, (size_t)n * sizeof *ids);
    char *s = kvs_tok_decode(tok, all, (size_t)n + 1);
    assert_non_null(s);
    free(all);
    size_t len = strlen(s);
    char *out = malloc(len + 2);
    assert_non_null(out);
    memcpy(out, s, len);
    out[len] = '\n';
    out[len + 1] = 0;
    free(s);
    return out;
}

/* ---- logits at positions 0..3 ---- */

typedef struct err_stats { double max_abs, max_rel, max_row_rel; } err_stats;

static void compare_logits(const float *got, const double *want, err_stats *es)
{
    double row_scale = 0.0;
    for (int i = 0; i < N_VOCAB; i++)
        row_scale = fmax(row_scale, fabs(want[i]));
    for (int i = 0; i < N_VOCAB; i++) {
        double d = fabs((double)got[i] - want[i]);
        es->max_abs = fmax(es->max_abs, d);
        es->max_row_rel = fmax(es->max_row_rel, d / row_scale);
        /* relative to the value, with the row's scale as a floor for values near 0 */
        es->max_rel = fmax(es->max_rel, d / fmax(fabs(want[i]), 1e-2 * row_scale));
    }
}

static void test_logits_pos0_3(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/expected/stories260K_logits_pos0-3.txt", mt_shared_dir());
    char *text = mt_read_file(path, NULL);
    assert_non_null(text);
    static double want[4][N_VOCAB];
    int32_t inputs[4];
    char *p = text;
    for (int pos = 0; pos < 4; pos++) {
        char label[32];
        snprintf(label, sizeof label, "\npos %d input_token ", pos);
        p = strstr(p, label);
        assert_non_null(p);
        p += strlen(label);
        inputs[pos] = (int32_t)strtol(p, &p, 10);
        assert_true(strncmp(p, " logits", 7) == 0);
        p += 7;
        for (int i = 0; i < N_VOCAB; i++) {
            char *end;
            want[pos][i] = strtod(p, &end);
            assert_true(end != p);
            p = end;
        }
    }
    free(text);
    assert_int_equal(inputs[0], 1);

    model_path(path, sizeof path);
    mt_model mm;
    mt_model_load(&mm, path, 2);
    assert_int_equal(mm.m->hp.n_vocab, N_VOCAB);
    static const int32_t other[12] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};

    /* (a) one token per step (the decode path of the kernels) */
    err_stats ea = {0};
    mt_runner mr;
    mt_runner_new(&mr, mm.m, 16, 2, 64, 16, KVS_DTYPE_F32);
    for (int32_t pos = 0; pos < 4; pos++) {
        int32_t seq = 0, row = 0;
        mt_step(&mr, 1, &inputs[pos], &pos, &seq, 1, 1, &row);
        compare_logits(mr.r->logits, want[pos], &ea);
    }
    mt_runner_free(&mr);

    /* (b) the four positions in one step, next to another sequence's
     * 12-token prefill (16 tokens: the prefill path), block size 1 */
    err_stats eb = {0};
    mt_runner_new(&mr, mm.m, 16, 4, 64, 1, KVS_DTYPE_F32); /* 4 logit rows */
    int32_t tok[16], pos[16], seq[16], rows[4] = {1, 4, 7, 10};
    for (int32_t i = 0, a = 0, o = 0; i < 16; i++) {
        bool mine = i % 3 == 1 && a < 4; /* interleave the two sequences' tokens */
        tok[i] = mine ? inputs[a] : other[o];
        pos[i] = mine ? a : o;
        seq[i] = mine ? 1 : 0;
        if (mine)
            a++;
        else
            o++;
    }
    mt_step(&mr, 16, tok, pos, seq, 2, 4, rows);
    for (int32_t r = 0; r < 4; r++)
        compare_logits(mr.r->logits + (size_t)r * N_VOCAB, want[r], &eb);
    mt_runner_free(&mr);

    /* (c) f16 KV cache: looser */
    err_stats ec = {0};
    mt_runner_new(&mr, mm.m, 16, 4, 64, 16, KVS_DTYPE_F16);
    int32_t s0[4] = {0, 0, 0, 0}, p4[4] = {0, 1, 2, 3}, r4[4] = {0, 1, 2, 3};
    mt_step(&mr, 4, inputs, p4, s0, 1, 4, r4);
    for (int32_t r = 0; r < 4; r++)
        compare_logits(mr.r->logits + (size_t)r * N_VOCAB, want[r], &ec);
    mt_runner_free(&mr);
    mt_model_free(&mm);

    printf("logits vs llama2.c, positions 0..3 x 512:\n"
           "  one token per step   max abs %.3g  max rel %.3g  max abs / row max %.3g\n"
           "  mixed 16-token step  max abs %.3g  max rel %.3g  max abs / row max %.3g\n"
           "  f16 KV cache         max abs %.3g  max rel %.3g  max abs / row max %.3g\n",
           ea.max_abs, ea.max_rel, ea.max_row_rel, eb.max_abs, eb.max_rel, eb.max_row_rel, ec.max_abs,
           ec.max_rel, ec.max_row_rel);
    /* The reference prints %.6f: 5e-7 of rounding on values of magnitude ~1..10.
     * "rel" is relative to each value (floored at 1% of the row's largest). */
    assert_true(ea.max_rel < 1e-4);
    assert_true(eb.max_rel < 1e-4);
    /* f16 keys and values carry 2^-11 relative rounding */
    assert_true(ec.max_row_rel < 3e-3);
}

/* ---- greedy decoding through the runner ---- */

/* Greedy from `prompt` (prefilled in one step) until `n_next` next tokens
 * exist (positions 0 .. n_next - 1, the prompt's own included). */
static void greedy_runner(mt_model *mm, const int32_t *prompt, int32_t n_prompt, int32_t n_next,
                          int32_t block_size, int32_t *next)
{
    mt_runner mr;
    mt_runner_new(&mr, mm->m, 16, 1, 256, block_size, KVS_DTYPE_F32);
    int32_t tok[16], pos[16], seq[16] = {0}, rows[16];
    assert_true(n_prompt <= 16);
    for (int32_t i = 0; i < n_prompt; i++)
        tok[i] = prompt[i], pos[i] = i, rows[i] = i;
    /* logits of every prompt position, as llama2.c computes them */
    mt_step(&mr, n_prompt, tok, pos, seq, 1, 1, rows + n_prompt - 1);
    for (int32_t i = 0; i < n_prompt - 1; i++)
        next[i] = prompt[i + 1];
    next[n_prompt - 1] = mt_argmax(mr.r->logits, N_VOCAB);
    for (int32_t p = n_prompt; p < n_next; p++) {
        int32_t t = next[p - 1], s = 0, r = 0;
        mt_step(&mr, 1, &t, &p, &s, 1, 1, &r);
        next[p] = mt_argmax(mr.r->logits, N_VOCAB);
    }
    mt_runner_free(&mr);
}

static void check_stream_text(const kvs_tokenizer *tok, const int32_t *ids, int32_t n, const char *want,
                              size_t want_len)
{
    /* the engine's streaming detokenizer, first token without its space */
    kvs_tok_stream st;
    kvs_tok_stream_init(&st, kvs_tok_strip_leading_space(tok));
    size_t cap = want_len + 64, len = 0;
    char *buf = malloc(cap), piece[256];
    assert_non_null(buf);
    for (int32_t i = 0; i < n; i++) {
        size_t k = kvs_tok_stream_push(tok, &st, ids[i], piece, sizeof piece);
        assert_true(len + k < cap);
        memcpy(buf + len, piece, k);
        len += k;
    }
    len += kvs_tok_stream_flush(&st, buf + len, cap - len);
    buf[len++] = '\n';
    assert_int_equal(len, want_len);
    assert_memory_equal(buf, want, len);
    free(buf);
}

static void test_greedy_bos_200(void **state)
{
    (void)state;
    expected_run e;
    load_expected("stories260K_greedy_bos_n200", &e);
    assert_int_equal(e.n_prompt, 1);
    assert_int_equal(e.n_next, 200);
    char path[1024];
    model_path(path, sizeof path);
    mt_model mm;
    mt_model_load(&mm, path, 2);
    int32_t got[256];
    const int32_t block_sizes[] = {16, 1, 7};
    for (size_t b = 0; b < 3; b++) {
        greedy_runner(&mm, e.prompt, 1, 200, block_sizes[b], got);
        int32_t same = 0;
        while (same < 200 && got[same] == e.next[same])
            same++;
        printf("greedy from BOS, block size %d: %d/200 tokens equal llama2.c's\n", block_sizes[b], same);
        assert_int_equal(same, 200);
    }
    char *text = llama2c_text(mm.tok, got, 200);
    assert_int_equal(strlen(text), e.text_len);
    assert_memory_equal(text, e.text, e.text_len);
    check_stream_text(mm.tok, got, 200, e.text, e.text_len);
    free(text);
    free(e.text);
    mt_model_free(&mm);
}

static void test_greedy_prompt_64(void **state)
{
    (void)state;
    expected_run e;
    load_expected("stories260K_greedy_once_upon_a_time_n64", &e);
    assert_int_equal(e.n_prompt, 5);
    assert_int_equal(e.n_next, 64);
    char path[1024];
    model_path(path, sizeof path);
    mt_model mm;
    mt_model_load(&mm, path, 2);
    /* the prompt encodes as llama2.c encodes it */
    int32_t *ids;
    size_t n_ids;
    kvs_error err = {0};
    const char *prompt = "Once upon a time";
    assert_int_equal(kvs_tok_encode(mm.tok, prompt, strlen(prompt), true, false, &ids, &n_ids, &err), KVS_OK);
    assert_int_equal(n_ids, 5);
    assert_memory_equal(ids, e.prompt, 5 * sizeof *ids);
    free(ids);
    int32_t got[64];
    greedy_runner(&mm, e.prompt, 5, 64, 16, got);
    for (int32_t i = 0; i < 64; i++)
        if (got[i] != e.next[i])
            fail_msg("position %d: token %d, llama2.c %d", i, got[i], e.next[i]);
    char *text = llama2c_text(mm.tok, got, 64);
    assert_int_equal(strlen(text), e.text_len);
    assert_memory_equal(text, e.text, e.text_len);
    free(text);
    free(e.text);
    mt_model_free(&mm);
}

/* ---- the whole stack: kvs_launch, the engine, both runs at once ---- */

static void test_engine(void **state)
{
    (void)state;
    expected_run bos, once;
    load_expected("stories260K_greedy_bos_n200", &bos);
    load_expected("stories260K_greedy_once_upon_a_time_n64", &once);
    char path[1024];
    model_path(path, sizeof path);
    kvs_launch_opts o = kvs_launch_defaults();
    o.model_path = path;
    o.device_memory = 1ull << 30;
    o.n_threads = 2;
    o.max_num_batched_tokens = 8; /* chunked prefill next to decodes */
    o.max_num_seqs = 4;
    kvs_instance *in = NULL;
    kvs_error err = {0};
    if (kvs_launch(&in, &o, &err) != KVS_OK)
        fail_msg("launch: %s", err.msg);

    kvs_request_params p = kvs_request_defaults();
    p.sampling.temperature = 0.0f;
    p.max_tokens = 200;
    p.strip_leading_space = true;       /* a BOS-only prompt, as `generate` sets it */
    assert_int_equal(kvs_engine_add(in->engine, 1, bos.prompt, 1, &p, &err), KVS_OK);
    p.max_tokens = 60;                  /* positions 4..63 */
    p.strip_leading_space = false;
    assert_int_equal(kvs_engine_add(in->engine, 2, once.prompt, 5, &p, &err), KVS_OK);

    int32_t toks[2][256], n[2] = {0, 0};
    char *text[2] = {calloc(1, 4096), calloc(1, 4096)};
    size_t tl[2] = {0, 0};
    bool finished[2] = {false, false};
    assert_non_null(text[0]);
    assert_non_null(text[1]);
    while (kvs_engine_has_work(in->engine)) {
        const kvs_output *outs;
        size_t n_outs;
        if (kvs_engine_step(in->engine, &outs, &n_outs, &err) != KVS_OK)
            fail_msg("step: %s", err.msg);
        for (size_t i = 0; i < n_outs; i++) {
            int k = outs[i].id == 1 ? 0 : 1;
            assert_true(n[k] < 256 && tl[k] + outs[i].text_len < 4096);
            toks[k][n[k]++] = outs[i].token;
            memcpy(text[k] + tl[k], outs[i].text, outs[i].text_len);
            tl[k] += outs[i].text_len;
            if (outs[i].finished) {
                finished[k] = true;
                assert_int_equal(outs[i].reason, KVS_FINISH_LENGTH);
            }
        }
    }
    assert_true(finished[0] && finished[1]);
    assert_int_equal(n[0], 200);
    assert_memory_equal(toks[0], bos.next, 200 * sizeof(int32_t));
    assert_int_equal(n[1], 60);
    assert_memory_equal(toks[1], once.next + 4, 60 * sizeof(int32_t));
    /* texts: the engine prints only the output */
    assert_int_equal(tl[0] + 1, bos.text_len);
    assert_memory_equal(text[0], bos.text, tl[0]);
    const char *pre = "Once upon a time";
    assert_int_equal(strlen(pre) + tl[1] + 1, once.text_len);
    assert_memory_equal(once.text, pre, strlen(pre));
    assert_memory_equal(once.text + strlen(pre), text[1], tl[1]);
    kvs_engine_stats st;
    kvs_engine_get_stats(in->engine, &st);
    printf("engine: both runs together in %llu steps, tokens and text equal llama2.c's\n",
           (unsigned long long)st.n_steps);
    free(text[0]);
    free(text[1]);
    free(bos.text);
    free(once.text);
    kvs_instance_free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_pos0_3),
        cmocka_unit_test(test_greedy_bos_200),
        cmocka_unit_test(test_greedy_prompt_64),
        cmocka_unit_test(test_engine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
