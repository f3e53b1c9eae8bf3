/*
 * test_tokenizer_decode.c - prompts and decoding against llama2.c's runs on
 * stories260K (shared/expected), streaming decode of multi-byte text,
 * and special-token parsing.
 */
#include "tok_testlib.h"

/* llama2.c's run.c: "Once upon a time" with BOS is 1 403 407 261 378. */
static void test_stories260k_prompt(void **state)
{
    kvs_tokenizer *t = load_shared("models/stories260K.gguf");
    int32_t want[16];
    size_t n_want = read_expected_ids("stories260K_greedy_once_upon_a_time_n64.tokens",
                                      "prompt_tokens (BOS + encoded prompt):", want, 16);
    assert_int_equal(n_want, 5);
    assert_true(kvs_tok_add_bos(t));
    int32_t *ids;
    size_t n;
    const char *prompt = "Once upon a time";
    assert_int_equal(kvs_tok_encode(t, prompt, strlen(prompt), true, false, &ids, &n, NULL),
                     KVS_OK);
    assert_int_equal(n, n_want);
    assert_memory_equal(ids, want, n * sizeof(int32_t));
    free(ids);
    kvs_tok_free(t);
}

/* Strict UTF-8 validity (the stream must never emit a partial character). */
static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t need = p[i] < 0x80 ? 1 : p[i] >= 0xc2 && p[i] <= 0xdf ? 2
                                      : p[i] >= 0xe0 && p[i] <= 0xef ? 3
                                      : p[i] >= 0xf0 && p[i] <= 0xf4 ? 4
                                                                     : 0;
        if (need == 0 || i + need > n)
            return false;
        for (size_t j = 1; j < need; j++)
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
        i += need;
    }
    return true;
}

/* Decode ids one by one through a stream; check each piece, return the whole. */
static char *stream_all(const kvs_tokenizer *t, const int32_t *ids, size_t n)
{
    kvs_tok_stream s;
    kvs_tok_stream_init(&s, kvs_tok_strip_leading_space(t));
    size_t cap = kvs_tok_max_token_bytes(t) + 8, total = 0;
    char *acc = calloc(1, 1), *piece = malloc(cap);
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? kvs_tok_stream_push(t, &s, ids[i], piece, cap)
                         : kvs_tok_stream_flush(&s, piece, cap);
        assert_int_equal(strlen(piece), k);
        assert_true(valid_utf8(piece, k));
        acc = realloc(acc, total + k + 1);
        memcpy(acc + total, piece, k + 1);
        total += k;
    }
    free(piece);
    return acc;
}

static void test_stream_multibyte(void **state)
{
    kvs_tokenizer *t = load_shared("vocab/ggml-vocab-llama-spm.gguf");
    const char *text = "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8e\x89"; /* héllo 世界 🎉 */
    int32_t *ids;
    size_t n;
    assert_int_equal(kvs_tok_encode(t, text, strlen(text), true, false, &ids, &n, NULL), KVS_OK);
    /* the emoji has no piece: byte fallback splits it over four tokens */
    int32_t f0 = kvs_tok_find_piece(t, "<0xF0>");
    assert_true(f0 >= 0);
    bool split = false;
    for (size_t i = 0; i + 3 < n; i++)
        split |= ids[i] == f0 && ids[i + 1] == kvs_tok_find_piece(t, "<0x9F>");
    assert_true(split);

    char *whole = kvs_tok_decode(t, ids, n);
    assert_string_equal(whole, text);
    char *streamed = stream_all(t, ids, n);
    assert_string_equal(streamed, whole);
    free(streamed);
    free(whole);

    /* a sequence cut short is held back, and flushed as U+FFFD */
    kvs_tok_stream s;
    kvs_tok_stream_init(&s, false);
    char out[64];
    assert_int_equal(kvs_tok_stream_push(t, &s, f0, out, sizeof(out)), 0);
    assert_int_equal(kvs_tok_stream_flush(&s, out, sizeof(out)), 3);
    assert_string_equal(out, "\xef\xbf\xbd");
    free(ids);
    kvs_tok_free(t);
}

/* llama2.c's greedy runs print decode(tokens) + "\n": decode and stream agree. */
static void test_stories260k_decode(void **state)
{
    kvs_tokenizer *t = load_shared("models/stories260K.gguf");
    const char *runs[][3] = {
        {"stories260K_greedy_bos_n200.tokens", "stories260K_greedy_bos_n200.txt",
         "next_token_at_pos_0..199:"},
        {"stories260K_greedy_once_upon_a_time_n64.tokens",
         "stories260K_greedy_once_upon_a_time_n64.txt", "next_token_at_pos_0..63:"},
    };
    for (size_t r = 0; r < 2; r++) {
        int32_t ids[256] = {1}; /* BOS, then what the model produced */
        size_t n = 1 + read_expected_ids(runs[r][0], runs[r][2], ids + 1, 255);
        char path[1024];
        size_t len;
        snprintf(path, sizeof(path), "%s/expected/%s", shared_dir(), runs[r][1]);
        char *want = read_all(path, &len);
        assert_non_null(want);
        assert_true(len > 0 && want[len - 1] == '\n');
        want[len - 1] = 0;
        char *got = kvs_tok_decode(t, ids, n);
        assert_string_equal(got, want);
        char *streamed = stream_all(t, ids, n);
        assert_string_equal(streamed, want);
        free(streamed);
        free(got);
        free(want);
    }
    kvs_tok_free(t);
}

static void expect_split(const kvs_tokenizer *t, const char *text, const int32_t *parts[],
                         const size_t *n_parts, size_t n_segments)
{
    int32_t *ids;
    size_t n;
    assert_int_equal(kvs_tok_encode(t, text, strlen(text), false, true, &ids, &n, NULL), KVS_OK);
    size_t k = 0;
    for (size_t s = 0; s < n_segments; s++) {
        assert_true(k + n_parts[s] <= n);
        assert_memory_equal(ids + k, parts[s], n_parts[s] * sizeof(int32_t));
        k += n_parts[s];
    }
    assert_int_equal(k, n);
    free(ids);
}

/* parse_special: control-token text becomes the token, and the rest is
 * encoded as separate texts (SentencePiece: each after a special gets the
 * space prefix); without it the text is plain text. */
static void test_parse_special(void **state)
{
    kvs_tokenizer *t = load_shared("vocab/ggml-vocab-llama-spm.gguf");
    int32_t *hello, *world, *plain;
    size_t n_hello, n_world, n_plain;
    assert_int_equal(kvs_tok_encode(t, "Hello", 5, false, false, &hello, &n_hello, NULL), KVS_OK);
    assert_int_equal(kvs_tok_encode(t, " world", 6, false, false, &world, &n_world, NULL), KVS_OK);
    int32_t bos = 1, eos = 2;
    const int32_t *parts[] = {&bos, hello, &eos, world};
    size_t n_parts[] = {1, n_hello, 1, n_world};
    expect_split(t, "<s>Hello</s> world", parts, n_parts, 4);
    const char *text = "<s>Hello</s>";
    assert_int_equal(kvs_tok_encode(t, text, strlen(text), false, false, &plain, &n_plain, NULL),
                     KVS_OK);
    for (size_t i = 0; i < n_plain; i++)
        assert_true(plain[i] != 1 && plain[i] != 2);
    char *back = kvs_tok_decode(t, plain, n_plain);
    assert_string_equal(back, text);
    assert_true(kvs_tok_is_eog(t, 2));
    assert_false(kvs_tok_is_eog(t, 1));
    free(back);
    free(hello);
    free(world);
    free(plain);
    kvs_tok_free(t);

    t = load_shared("vocab/ggml-vocab-gpt-2.gguf");
    int32_t eot = kvs_tok_find_piece(t, "<|endoftext|>");
    assert_int_equal(eot, 50256);
    assert_true(kvs_tok_is_eog(t, eot));
    int32_t *a;
    size_t n_a;
    assert_int_equal(kvs_tok_encode(t, "a", 1, false, false, &a, &n_a, NULL), KVS_OK);
    const int32_t *parts2[] = {a, &eot, a};
    size_t n_parts2[] = {n_a, 1, n_a};
    expect_split(t, "a<|endoftext|>a", parts2, n_parts2, 3);
    char buf[32];
    assert_int_equal(kvs_tok_decode_token(t, eot, false, buf, sizeof(buf)), 0);
    assert_int_equal(kvs_tok_decode_token(t, eot, true, buf, sizeof(buf)), 13);
    assert_memory_equal(buf, "<|endoftext|>", 13);
    free(a);
    kvs_tok_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_prompt),
        cmocka_unit_test(test_stream_multibyte),
        cmocka_unit_test(test_stories260k_decode),
        cmocka_unit_test(test_parse_special),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
