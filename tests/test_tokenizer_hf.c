/*
 * test_tokenizer_hf.c - tokenizer.json export, import and validation.
 *
 *  - GGUF -> tokenizer.json -> kvs_tok_load_hf: for stories260K and every
 *    llama.cpp vocabulary with vectors (SentencePiece and byte-level BPE),
 *    the reloaded tokenizer reproduces llama.cpp's reference ids
 *    (shared/vocab/NAME.out) and the GGUF tokenizer's own ids with BOS and
 *    special-token text parsed.
 *  - tokenizer.json -> kvs_tok_write_gguf_meta -> GGUF -> kvs_tok_load:
 *    the same reference ids again.
 *  - malformed tokenizer.json: each case fails with an error naming the
 *    JSON path and the problem, and nothing crashes.
 * (Parity with the `tokenizers` library on real tokenizer.json files is
 * tests/node_tok, driven by the npm oracle.)
 */
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tok_testlib.h"

static const char *build_dir(void)
{
    const char *d = getenv("KVS_BUILD_DIR");
    return d ? d : ".";
}

typedef struct vocab_case {
    const char *gguf, *vectors; /* under KVS_SHARED */
} vocab_case;

static const vocab_case CASES[] = {
    {"models/stories260K.gguf", "vocab/stories260K.gguf"},
    {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-llama-spm.gguf"},
    {"vocab/ggml-vocab-gpt-2.gguf", "vocab/ggml-vocab-gpt-2.gguf"},
    {"vocab/ggml-vocab-starcoder.gguf", "vocab/ggml-vocab-starcoder.gguf"},
    {"vocab/ggml-vocab-falcon.gguf", "vocab/ggml-vocab-falcon.gguf"},
    {"vocab/ggml-vocab-mpt.gguf", "vocab/ggml-vocab-mpt.gguf"},
    {"vocab/ggml-vocab-refact.gguf", "vocab/ggml-vocab-refact.gguf"},
    {"vocab/ggml-vocab-deepseek-coder.gguf", "vocab/ggml-vocab-deepseek-coder.gguf"},
};

static bool same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(*a)) == 0);
}

/* Encode every vector with t (no BOS, special text not parsed) and count matches. */
static size_t count_vectors(const char *what, kvs_tokenizer *t, const vectors *v)
{
    size_t ok = 0;
    for (size_t i = 0; i < v->n; i++) {
        int32_t *ids;
        size_t n;
        kvs_error err = {0};
        assert_int_equal(kvs_tok_encode(t, v->text[i], v->len[i], false, false, &ids, &n, &err),
                         KVS_OK);
        if (same_ids(ids, n, v->ids[i], v->n_ids[i]))
            ok++;
        else
            printf("  %s #%zu '%.*s' differs\n", what, i, (int)v->len[i], v->text[i]);
        free(ids);
    }
    return ok;
}

static void make_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/hftok-%s-%d", build_dir(), name, (int)getpid());
    for (char *p = out + strlen(build_dir()) + 1; *p; p++)
        if (*p == '/')
            *p = '_';
    mkdir(out, 0755);
}

static void rm_dir(const char *dir)
{
    char p[1200];
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "tok.gguf"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void test_gguf_hf_round_trip(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof(CASES) / sizeof(CASES[0]); c++) {
        char base[1024], dir[1100], gpath[1200];
        snprintf(base, sizeof(base), "%s/%s", shared_dir(), CASES[c].vectors);
        vectors v;
        read_vectors(base, &v);
        kvs_tokenizer *g = load_shared(CASES[c].gguf);
        make_dir(dir, sizeof(dir), CASES[c].gguf);
        kvs_error err = {0};
        assert_int_equal(kvs_tok_write_hf(g, dir, &err), KVS_OK);
        kvs_tokenizer *h = NULL;
        if (kvs_tok_load_hf(&h, dir, &err) != KVS_OK)
            fail_msg("%s: %s", CASES[c].gguf, err.msg);
        assert_int_equal(kvs_tok_n_vocab(h), kvs_tok_n_vocab(g));
        assert_int_equal(kvs_tok_bos(h), kvs_tok_bos(g));
        assert_int_equal(kvs_tok_eos(h), kvs_tok_eos(g));
        assert_int_equal(kvs_tok_add_bos(h), kvs_tok_add_bos(g));
        size_t ok_hf = count_vectors("tokenizer.json", h, &v);

        /* the GGUF tokenizer's ids with BOS (when the vocabulary adds it) and
         * special text parsed, too */
        size_t ok_special = 0;
        bool bos = kvs_tok_add_bos(g);
        for (size_t i = 0; i < v.n; i++) {
            int32_t *a, *b;
            size_t na, nb;
            assert_int_equal(kvs_tok_encode(g, v.text[i], v.len[i], bos, true, &a, &na, &err),
                             KVS_OK);
            assert_int_equal(kvs_tok_encode(h, v.text[i], v.len[i], bos, true, &b, &nb, &err),
                             KVS_OK);
            ok_special += same_ids(a, na, b, nb);
            free(a);
            free(b);
        }

        /* back to GGUF metadata */
        kvs_gguf_writer *w = kvs_gguf_writer_new();
        assert_non_null(w);
        if (kvs_tok_write_gguf_meta(h, w, &err) != KVS_OK)
            fail_msg("%s: write_gguf_meta: %s", CASES[c].gguf, err.msg);
        snprintf(gpath, sizeof(gpath), "%s/tok.gguf", dir);
        assert_int_equal(kvs_gguf_writer_write(w, gpath, &err), KVS_OK);
        kvs_gguf_writer_free(w);
        kvs_tokenizer *g2 = load_tok(gpath);
        assert_non_null(g2);
        size_t ok_gguf = count_vectors("GGUF from tokenizer.json", g2, &v);

        printf("%-40s tokenizer.json %zu/%zu, with BOS+specials %zu/%zu, back to GGUF %zu/%zu\n",
               CASES[c].gguf, ok_hf, v.n, ok_special, v.n, ok_gguf, v.n);
        assert_int_equal(ok_hf, v.n);
        assert_int_equal(ok_special, v.n);
        assert_int_equal(ok_gguf, v.n);
        kvs_tok_free(g2);
        kvs_tok_free(h);
        kvs_tok_free(g);
        vectors_free(&v);
        rm_dir(dir);
    }
}

/* ---- malformed input ---------------------------------------------------------- */

#define VOCAB "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}"

typedef struct bad_case {
    const char *json, *config, *want; /* want: a substring of the error */
} bad_case;

static const bad_case BAD[] = {
    {"", NULL, "bad JSON"},
    {"[1, 2]", NULL, "not a JSON object"},
    {"{\"model\": 5}", NULL, "model: is an integer"},
    {"{\"model\": {\"type\": \"WordPiece\", " VOCAB "}}", NULL, "'WordPiece' is not supported"},
    {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", NULL, "'Unigram' is not supported"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}", NULL,
     "model.vocab: is an array"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", NULL,
     "the id of 'a' is not an integer >= 0"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", NULL,
     "id 0 is given to two tokens"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 99999999}, \"merges\": []}}",
     NULL, "far past"},
    {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", NULL, "empty"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [\"a c\"]}}", NULL,
     "model.merges[0]: token 'c' is not in the vocabulary"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [\"ab\"]}}", NULL,
     "model.merges[0]: 'ab' is not two tokens"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [\"a b c\"]}}", NULL,
     "not two tokens separated by one space"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [[\"a\"]]}}", NULL,
     "model.merges[0]: is an array"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [\"b a\"]}}", NULL,
     "the merged token 'ba' is not in the vocabulary"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [], \"unk_token\": \"<unk>\"}}",
     NULL, "model.unk_token: '<unk>' is not in the vocabulary"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [], \"dropout\": 0.1}}", NULL,
     "dropout"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": [], \"byte_fallback\": 1}}", NULL,
     "'byte_fallback' is an integer, expected a boolean"},
    {"{\"added_tokens\": [{\"id\": 3}], \"model\": {\"type\": \"BPE\", " VOCAB
     ", \"merges\": []}}", NULL, "added_tokens[0]: 'content' must be a non-empty string"},
    {"{\"added_tokens\": [{\"id\": \"x\", \"content\": \"<s>\"}], \"model\": {\"type\": \"BPE\", "
     VOCAB ", \"merges\": []}}", NULL, "added_tokens[0]: 'id' is not a token id"},
    {"{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"model\": {\"type\": \"BPE\", " VOCAB
     ", \"merges\": []}}", NULL, "normalizer 'BertNormalizer' is not supported"},
    {"{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Replace\", "
     "\"pattern\": {\"Regex\": \"(\"}, \"content\": \"x\"}]}, \"model\": {\"type\": \"BPE\", " VOCAB
     ", \"merges\": []}}", NULL, "normalizer.normalizers[0].pattern.Regex: regex '(' does not "
     "compile"},
    {"{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": \"BPE\", " VOCAB
     ", \"merges\": []}}", NULL, "pre-tokenizer 'BertPreTokenizer' is not supported"},
    {"{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": "
     "\"Sideways\"}, \"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", NULL,
     "Split 'behavior' 'Sideways' is not"},
    {"{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": \"a\", \"behavior\": \"Isolated\"}, "
     "\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", NULL,
     "pre_tokenizer: 'pattern' is a string"},
    {"{\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"ab\"}, \"model\": "
     "{\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", NULL, "one character"},
    {"{\"pre_tokenizer\": {\"type\": \"Metaspace\", \"prepend_scheme\": \"sometimes\"}, "
     "\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", NULL,
     "prepend_scheme 'sometimes'"},
    {"{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
     "{\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {}}, \"model\": "
     "{\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", NULL, "names no special token"},
    {"{\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
     "{\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": "
     "{\"ids\": [7]}}}, \"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", NULL,
     "has an id outside the vocabulary"},
    {"{\"post_processor\": {\"type\": \"Fancy\"}, \"model\": {\"type\": \"BPE\", " VOCAB
     ", \"merges\": []}}", NULL, "post-processor 'Fancy' is not supported"},
    {"{\"decoder\": {\"type\": \"WordPiece\"}, \"model\": {\"type\": \"BPE\", " VOCAB
     ", \"merges\": []}}", NULL, "decoder 'WordPiece' is not supported"},
    {"{\"decoder\": {\"type\": \"Strip\", \"content\": \" \", \"start\": -1, \"stop\": 0}, "
     "\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", NULL, "Strip needs"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", "{\"bos_token\": \"<s>\"}",
     "tokenizer_config.json: bos_token: '<s>' is not a token"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", "{\"eos_token\": 5}",
     "tokenizer_config.json: eos_token: expected a string"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", "[",
     "tokenizer_config.json: bad JSON"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}}", "{\"chat_template\": 3}",
     "tokenizer_config.json: chat_template: expected a string"},
    {"{\"model\": {\"type\": \"BPE\", " VOCAB ", \"merges\": []}, \"model\": {}}", NULL,
     "duplicate"},
};

static void test_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(BAD) / sizeof(BAD[0]); i++) {
        kvs_tokenizer *t = (kvs_tokenizer *)1;
        kvs_error err = {0};
        kvs_status st = kvs_tok_load_hf_json(&t, BAD[i].json, strlen(BAD[i].json), BAD[i].config,
                                             BAD[i].config ? strlen(BAD[i].config) : 0, &err);
        if (st == KVS_OK || !strstr(err.msg, BAD[i].want))
            fail_msg("case %zu (%s): status %d, error '%s', wanted '%s'", i, BAD[i].json, st,
                     err.msg, BAD[i].want);
        assert_null(t);
    }
    /* a missing directory names the file */
    kvs_tokenizer *t = NULL;
    kvs_error err = {0};
    assert_int_equal(kvs_tok_load_hf(&t, "/nonexistent-kvs-dir", &err), KVS_E_NOT_FOUND);
    assert_non_null(strstr(err.msg, "/nonexistent-kvs-dir/tokenizer.json"));
}

/* A minimal valid file: merges in both formats, an added token, a template. */
static void test_minimal(void **state)
{
    (void)state;
    static const char J[] =
        "{\"added_tokens\": [{\"id\": 3, \"content\": \"<s>\", \"special\": true}],"
        " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
        "{\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": "
        "{\"ids\": [3]}}},"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"abab\": 4},"
        " \"merges\": [\"a b\", [\"ab\", \"ab\"]]}}";
    kvs_tokenizer *t = NULL;
    kvs_error err = {0};
    assert_int_equal(kvs_tok_load_hf_json(&t, J, strlen(J), NULL, 0, &err), KVS_OK);
    int32_t *ids;
    size_t n;
    assert_int_equal(kvs_tok_encode(t, "ababa<s>b", 9, true, true, &ids, &n, &err), KVS_OK);
    int32_t want[] = {3, 4, 0, 3, 1};
    assert_true(same_ids(ids, n, want, 5));
    free(ids);
    /* without parse_special the text "<s>" is not the token: no piece for '<', dropped */
    assert_int_equal(kvs_tok_encode(t, "a<s>", 4, false, false, &ids, &n, &err), KVS_OK);
    int32_t want2[] = {0};
    assert_true(same_ids(ids, n, want2, 1));
    free(ids);
    char *d = kvs_tok_decode(t, want, 5);
    assert_string_equal(d, "ababab");
    free(d);
    assert_null(kvs_tok_chat_template(t));
    kvs_tok_free(t);

    /* tokenizer_config.json: special ids, the chat template (a string or the "default" of a list) */
    static const char C1[] = "{\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"abab\", "
                             "\"chat_template\": \"{{ messages }}\"}";
    static const char C2[] = "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
                             "{\"name\": \"default\", \"template\": \"D\"}]}";
    assert_int_equal(kvs_tok_load_hf_json(&t, J, strlen(J), C1, strlen(C1), &err), KVS_OK);
    assert_int_equal(kvs_tok_bos(t), 3);
    assert_int_equal(kvs_tok_eos(t), 4);
    assert_true(kvs_tok_is_eog(t, 4));
    assert_string_equal(kvs_tok_chat_template(t), "{{ messages }}");
    kvs_tok_free(t);
    assert_int_equal(kvs_tok_load_hf_json(&t, J, strlen(J), C2, strlen(C2), &err), KVS_OK);
    assert_string_equal(kvs_tok_chat_template(t), "D");
    kvs_tok_free(t);
}

/* ---- pre-tokenizer and added-token semantics of the Rust library ------------ */
/*
 * Expectations from the `tokenizers` library's own unit tests
 * (normalizer.rs `split`, pre_tokenizers/split.rs, metaspace.rs,
 * digits.rs, whitespace.rs, added_vocabulary.rs `single_word_tokens`),
 * for the parts tokenizers.js (the parity oracle) does not implement.  The
 * split is observed through a vocabulary holding the expected pieces with
 * ignore_merges (a piece that is a token comes out whole; any other piece
 * falls apart into its characters, which shows as a different split).
 */
static char *pieces_of(const char *pre_json, const char *added_json, const char *const *pieces,
                       const char *text)
{
    json_t *vocab = json_object();
    size_t id = 0;
    for (size_t i = 0; pieces[i]; i++)
        if (!json_object_get(vocab, pieces[i]))
            json_object_set_new(vocab, pieces[i], json_integer((json_int_t)id++));
    for (const char *c = text; *c;) { /* every character of the text */
        size_t n = 1;
        while (((unsigned char)c[n] & 0xc0) == 0x80)
            n++;
        char ch[8] = {0};
        memcpy(ch, c, n);
        if (!json_object_get(vocab, ch))
            json_object_set_new(vocab, ch, json_integer((json_int_t)id++));
        c += n;
    }
    char *vs = json_dumps(vocab, JSON_COMPACT);
    char *doc = malloc(strlen(vs) + strlen(pre_json) + 512);
    sprintf(doc, "{\"added_tokens\": [%s], \"pre_tokenizer\": %s, \"model\": {\"type\": \"BPE\", "
            "\"ignore_merges\": true, \"vocab\": %s, \"merges\": []}}",
            added_json ? added_json : "", pre_json, vs);
    if (added_json) { /* the added token takes the next id */
        char *at = strstr(doc, "\"id\": ID");
        if (at) {
            char num[16];
            int k = snprintf(num, sizeof(num), "%zu", id);
            memmove(at + 6 + k, at + 8, strlen(at + 8) + 1);
            memcpy(at + 6, num, (size_t)k);
        }
    }
    kvs_tokenizer *t = NULL;
    kvs_error err = {0};
    if (kvs_tok_load_hf_json(&t, doc, strlen(doc), NULL, 0, &err) != KVS_OK)
        fail_msg("%s: %s", doc, err.msg);
    int32_t *ids;
    size_t n;
    assert_int_equal(kvs_tok_encode(t, text, strlen(text), false, true, &ids, &n, &err), KVS_OK);
    char *out = calloc(1, strlen(text) * 8 + 16);
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, "|");
        strcat(out, kvs_tok_piece(t, ids[i]));
    }
    free(ids);
    kvs_tok_free(t);
    free(doc);
    free(vs);
    json_decref(vocab);
    return out;
}

static void expect_pieces(const char *pre, const char *added, const char *text, const char *want)
{
    /* the wanted pieces form the vocabulary */
    char *copy = strdup(want);
    const char *pieces[64];
    size_t n = 0;
    for (char *tok = strtok(copy, "|"); tok && n < 63; tok = strtok(NULL, "|"))
        pieces[n++] = tok;
    pieces[n] = NULL;
    char *got = pieces_of(pre, added, pieces, text);
    if (strcmp(got, want) != 0)
        fail_msg("%s on '%s': got '%s', want '%s'", pre, text, got, want);
    free(got);
    free(copy);
}

#define MS "\xe2\x96\x81" /* U+2581 */
#define SPLIT(b) "{\"type\": \"Split\", \"pattern\": {\"String\": \"-\"}, \"behavior\": \"" b "\"}"

static void test_rust_semantics(void **state)
{
    (void)state;
    const char *s = "The-final--countdown";
    expect_pieces(SPLIT("Removed"), NULL, s, "The|final|countdown");
    expect_pieces(SPLIT("Isolated"), NULL, s, "The|-|final|-|-|countdown");
    expect_pieces(SPLIT("MergedWithPrevious"), NULL, s, "The-|final-|-|countdown");
    expect_pieces(SPLIT("MergedWithNext"), NULL, s, "The|-final|-|-countdown");
    expect_pieces(SPLIT("Contiguous"), NULL, s, "The|-|final|--|countdown");
    expect_pieces("{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+|[^\\\\w\\\\s]+\"}, "
                  "\"behavior\": \"Removed\", \"invert\": true}",
                  NULL, "How are you doing?", "How|are|you|doing|?");
    expect_pieces("{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": "
                  "\"always\", \"split\": true}",
                  NULL, "Hey   friend!", MS "Hey|" MS "|" MS "|" MS "friend!");
    expect_pieces("{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": "
                  "\"always\", \"split\": false}",
                  NULL, "Hey friend!", MS "Hey" MS "friend!");
    expect_pieces("{\"type\": \"Digits\", \"individual_digits\": true}", NULL, "Hey 123 friend!",
                  "Hey |1|2|3| friend!");
    expect_pieces("{\"type\": \"Digits\", \"individual_digits\": false}", NULL, "Hey 123 friend!",
                  "Hey |123| friend!");
    expect_pieces("{\"type\": \"WhitespaceSplit\"}", NULL, "How are you doing?",
                  "How|are|you|doing?");
    expect_pieces("{\"type\": \"Whitespace\"}", NULL, "How are you doing?", "How|are|you|doing|?");
    expect_pieces("{\"type\": \"Whitespace\"}", NULL, "Hey man!", "Hey|man|!");
    /* single_word: "ing" inside "dancing" is no match, a word "ing" is */
    const char *sw = "{\"id\": ID, \"content\": \"ing\", \"single_word\": true, \"special\": false, "
                     "\"normalized\": false}";
    const char *nsw = "{\"id\": ID, \"content\": \"ing\", \"single_word\": false, \"special\": false, "
                      "\"normalized\": false}";
    expect_pieces("null", sw, "I like dancing", "I like dancing");
    expect_pieces("null", nsw, "I like dancing", "I like danc|ing");
    expect_pieces("null", sw, "I like ing", "I like |ing");
    /* lstrip/rstrip take the whitespace around the token with it */
    const char *lr = "{\"id\": ID, \"content\": \"<m>\", \"lstrip\": true, \"rstrip\": true, "
                     "\"special\": true, \"normalized\": false}";
    expect_pieces("null", lr, "a  <m>  b", "a|<m>|b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_rust_semantics),
        cmocka_unit_test(test_gguf_hf_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
