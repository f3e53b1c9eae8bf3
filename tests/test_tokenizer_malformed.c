/*
 * test_tokenizer_malformed.c - tokenizer metadata that is wrong in one way
 * (written with the GGUF writer) fails to load with an error that names
 * the problem, never a crash.
 */
#include "tok_testlib.h"

/* A tiny vocabulary written with the GGUF writer, with one thing changed. */
typedef struct spec {
    const char *model;      /* NULL: no tokenizer.ggml.model */
    const char *pre;        /* NULL: none */
    bool tokens_as_floats;  /* tokens stored as a float array */
    size_t n_tokens;        /* how many of TOKENS (0 writes an empty array) */
    long n_scores;          /* -1: no scores */
    long n_types;           /* -1: no token types */
    int32_t bad_type;       /* if non-zero, the type of token 3 */
    bool merges;
    const char *id_key;     /* a special id key to set ... */
    int64_t id_value;       /* ... to this value (u32 unless negative) */
    const char *text;       /* what to encode once loaded (NULL: "ab a") */
} spec;

static const char *const TOKENS[] = {"<unk>", "<s>", "</s>", "a", "b", "ab", "\xe2\x96\x81",
                                     ("\xe2\x96\x81" "a")};
#define N_TOK (sizeof(TOKENS) / sizeof(TOKENS[0]))

static kvs_status load_spec(const spec *s, kvs_error *err)
{
    char path[1024];
    const char *dir = getenv("KVS_BUILD_DIR");
    snprintf(path, sizeof(path), "%s/test_tokenizer_bad.gguf", dir ? dir : ".");
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    assert_non_null(w);
    float scores[N_TOK] = {0, 0, 0, -1, -2, -0.5f, -3, -0.25f};
    int32_t types[N_TOK] = {2, 3, 3, 1, 1, 1, 1, 1};
    if (s->bad_type)
        types[3] = s->bad_type;
    const char *merges[] = {"a b", "\xe2\x96\x81 a"};
    if (s->model)
        assert_int_equal(kvs_gguf_writer_set_str(w, "tokenizer.ggml.model", s->model, NULL), KVS_OK);
    if (s->pre)
        assert_int_equal(kvs_gguf_writer_set_str(w, "tokenizer.ggml.pre", s->pre, NULL), KVS_OK);
    if (s->tokens_as_floats)
        assert_int_equal(kvs_gguf_writer_set_arr_f32(w, "tokenizer.ggml.tokens", scores, N_TOK,
                                                     NULL), KVS_OK);
    else
        assert_int_equal(kvs_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", TOKENS,
                                                     s->n_tokens, NULL), KVS_OK);
    if (s->n_scores >= 0)
        assert_int_equal(kvs_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores,
                                                     (size_t)s->n_scores, NULL), KVS_OK);
    if (s->n_types >= 0)
        assert_int_equal(kvs_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types,
                                                     (size_t)s->n_types, NULL), KVS_OK);
    if (s->merges)
        assert_int_equal(kvs_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 2, NULL),
                         KVS_OK);
    if (s->id_key && s->id_value < 0)
        assert_int_equal(kvs_gguf_writer_set_i32(w, s->id_key, (int32_t)s->id_value, NULL), KVS_OK);
    else if (s->id_key)
        assert_int_equal(kvs_gguf_writer_set_u32(w, s->id_key, (uint32_t)s->id_value, NULL), KVS_OK);
    assert_int_equal(kvs_gguf_writer_write(w, path, NULL), KVS_OK);
    kvs_gguf_writer_free(w);

    kvs_gguf *g = NULL;
    assert_int_equal(kvs_gguf_open(&g, path, NULL), KVS_OK);
    kvs_tokenizer *t = NULL;
    kvs_status st = kvs_tok_load(&t, g, err);
    kvs_gguf_close(g);
    remove(path);
    if (st == KVS_OK) {
        /* a vocabulary that loads must also encode without trouble */
        int32_t *ids;
        size_t n;
        const char *text = s->text ? s->text : "ab a";
        st = kvs_tok_encode(t, text, strlen(text), true, true, &ids, &n, err);
        if (st == KVS_OK)
            free(ids);
        kvs_tok_free(t);
    } else {
        assert_null(t);
    }
    return st;
}

#define GOOD_SPM {.model = "llama", .n_tokens = N_TOK, .n_scores = N_TOK, .n_types = N_TOK}
#define GOOD_BPE {.model = "gpt2", .pre = "gpt-2", .n_tokens = N_TOK, .n_scores = -1, \
                  .n_types = N_TOK, .merges = true}

static void expect_error(spec s, kvs_status want, const char *needle)
{
    kvs_error err = {0};
    kvs_status st = load_spec(&s, &err);
    if (st != want || !strstr(err.msg, needle))
        print_error("got %s '%s', want %s with '%s'\n", kvs_status_name(st), err.msg,
                    kvs_status_name(want), needle);
    assert_int_equal(st, want);
    assert_non_null(strstr(err.msg, needle));
}

static void test_malformed(void **state)
{
    kvs_error err = {0};
    spec good_spm = GOOD_SPM, good_bpe = GOOD_BPE;
    assert_int_equal(load_spec(&good_spm, &err), KVS_OK);
    assert_int_equal(load_spec(&good_bpe, &err), KVS_OK);

    spec s = GOOD_SPM;
    s.model = NULL;
    expect_error(s, KVS_E_NOT_FOUND, "tokenizer.ggml.model");
    s = (spec)GOOD_SPM;
    s.model = "t5";
    expect_error(s, KVS_E_UNSUPPORTED, "'t5'");
    s = (spec)GOOD_SPM;
    s.tokens_as_floats = true;
    expect_error(s, KVS_E_FORMAT, "tokenizer.ggml.tokens");
    s = (spec)GOOD_SPM;
    s.n_tokens = 0, s.n_scores = 0, s.n_types = 0;
    expect_error(s, KVS_E_FORMAT, "empty");
    s = (spec)GOOD_SPM;
    s.n_scores = N_TOK - 1;
    expect_error(s, KVS_E_FORMAT, "tokenizer.ggml.scores");
    s = (spec)GOOD_SPM;
    s.n_types = N_TOK + 0 - 2;
    expect_error(s, KVS_E_FORMAT, "tokenizer.ggml.token_type");
    s = (spec)GOOD_SPM;
    s.bad_type = 9;
    expect_error(s, KVS_E_FORMAT, "token_type'[3]");
    s = (spec)GOOD_SPM;
    s.id_key = "tokenizer.ggml.bos_token_id", s.id_value = 1000;
    expect_error(s, KVS_E_FORMAT, "bos_token_id");
    s = (spec)GOOD_SPM;
    s.id_key = "tokenizer.ggml.eos_token_id", s.id_value = -7;
    expect_error(s, KVS_E_FORMAT, "eos_token_id");
    s = (spec)GOOD_BPE;
    s.merges = false;
    expect_error(s, KVS_E_FORMAT, "tokenizer.ggml.merges");
    s = (spec)GOOD_BPE;
    s.pre = "no-such-pre";
    expect_error(s, KVS_E_UNSUPPORTED, "'no-such-pre'");
    /* no byte tokens and no unknown token (0xFFFFFFFF means none): text
     * made of pieces encodes, a character without one is an error */
    s = (spec)GOOD_SPM;
    s.id_key = "tokenizer.ggml.unknown_token_id", s.id_value = 0xffffffffll;
    assert_int_equal(load_spec(&s, &err), KVS_OK);
    s.text = "abz";
    expect_error(s, KVS_E_UNSUPPORTED, "0x7A");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
