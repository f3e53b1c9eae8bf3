/*
 * test_grammar.c - the grammar subsystem (src/grammar):
 *   - GBNF: what parses, what is refused and how the error reads; which
 *     byte strings a grammar accepts (llama.cpp's GBNF semantics, UTF-8
 *     classes as characters);
 *   - regex -> grammar against glibc's POSIX regex engine as the oracle:
 *     random strings are accepted by the matcher exactly when regexec
 *     matches them whole, and random walks of the matcher produce strings
 *     regexec matches;
 *   - choice lists, JSON schema errors naming the keyword, and random
 *     walks of JSON-schema grammars parsing as JSON with jansson (the
 *     schema validation itself is tests/py/test_structured_output.py,
 *     against Python's jsonschema);
 *   - the token mask from the trie walk equals the brute-force answer
 *     (every token tried on a copy of the state) on the 32k SentencePiece
 *     and the 50k GPT-2 vocabularies, cached or not;
 *   - the compile arena: a constraint compiled in it is the same grammar
 *     as with malloc, and one that does not fit fails (arena full), never
 *     past its bytes; the structured-output pool (gpool.h): leases and
 *     matchers are counted exactly, refused when spent, given back when
 *     the grammar goes, and a reused matcher masks like a fresh one.
 */
#include <dlfcn.h>
#include <jansson.h>
#include <regex.h>

#include "grammar/gpool.h"
#include "grammar/matcher.h"
#include "model_test_util.h"

static kvs_grammar *parse_ok(const char *gbnf)
{
    kvs_grammar *g = NULL;
    kvs_error err = {0};
    kvs_status st = kvs_grammar_parse(&g, gbnf, strlen(gbnf), &err);
    if (st != KVS_OK)
        fail_msg("grammar did not parse: %s\n%s", err.msg, gbnf);
    return g;
}

/* Whether the byte-level matcher of g accepts s whole. */
static bool accepts(kvs_grammar *g, const char *s, size_t n)
{
    kvs_gmatcher *m;
    kvs_error err;
    kvs_gmatcher_limits lim = {.max_frames = 8192, .max_tops = 2048, .cache_entries = 0}; /* byte-only: small */
    assert_int_equal(kvs_gmatcher_new(&m, g, NULL, false, &lim, &err), KVS_OK);
    bool ok = kvs_gmatcher_accept_bytes(m, s, n) && kvs_gmatcher_can_end(m);
    kvs_gmatcher_free(m);
    return ok;
}

static void expect(kvs_grammar *g, const char *s, bool want)
{
    if (accepts(g, s, strlen(s)) != want)
        fail_msg("'%s' should %sbe accepted", s, want ? "" : "not ");
}

static void test_gbnf_accepts(void **state)
{
    (void)state;
    kvs_grammar *g = parse_ok("# arithmetic, llama.cpp's example shape\n"
                              "root  ::= expr\n"
                              "expr  ::= term ([-+*/] term)*\n"
                              "term  ::= num | \"(\" ws expr \")\" ws\n"
                              "num   ::= [0-9]+ ws\n"
                              "ws    ::= [ \\t\\n]*\n");
    expect(g, "1+2", true);
    expect(g, "(1+2)*3", true);
    expect(g, "(1 +2) *34 ", true);
    expect(g, "(1 + 2)", false); /* no space may start a term */
    expect(g, "1+", false);
    expect(g, "", false);
    expect(g, "a", false);
    kvs_grammar_unref(g);

    g = parse_ok("root ::= \"ab\"{2,3} | [^a-z\\x00] \".\" | x?\n"
                 "x ::= \"\\u00e9\" | [\\u4e00-\\u9fff]\n");
    expect(g, "abab", true);
    expect(g, "ababab", true);
    expect(g, "ab", false);
    expect(g, "abababab", false);
    expect(g, "Q.", true);
    expect(g, "q.", false);
    expect(g, "\xc3\xa9.", true);       /* é is not in [a-z] */
    expect(g, "\xc3\xa9", true);        /* x */
    expect(g, "\xe4\xb8\x80", true);    /* U+4E00 */
    expect(g, "\xe9\xbf\xbf", true);    /* U+9FFF */
    expect(g, "\xe4\xb7\xbf", false);   /* U+4DFF */
    expect(g, "", true);                /* x? */
    expect(g, "\xed\xa0\x80.", false);  /* a UTF-8 encoded surrogate is no character */
    expect(g, "\xf4\x8f\xbf\xbf.", true); /* U+10FFFF is */
    kvs_grammar_unref(g);

    /* alternatives may continue after "|" on the next line; rules after rules */
    g = parse_ok("root ::= a |\n  b\na ::= \"x\" (\n \"y\"\n | \"z\" )\nb ::= .{3}\n");
    expect(g, "xy", true);
    expect(g, "xz", true);
    expect(g, "\xe2\x82\xac" "ab", true);
    expect(g, "ab", false);
    kvs_grammar_unref(g);
}

static void expect_error(const char *gbnf, const char *needle)
{
    kvs_grammar *g = NULL;
    kvs_error err = {0};
    kvs_status st = kvs_grammar_parse(&g, gbnf, strlen(gbnf), &err);
    if (st == KVS_OK) {
        kvs_grammar_unref(g);
        fail_msg("'%s' parsed", gbnf);
    }
    if (!strstr(err.msg, needle))
        fail_msg("error for '%s' is '%s', not about '%s'", gbnf, err.msg, needle);
}

static void test_gbnf_errors(void **state)
{
    (void)state;
    expect_error("root ::= vaule\n", "undefined rule 'vaule'");
    expect_error("start ::= \"a\"\n", "no 'root' rule");
    expect_error("root ::= root \"a\" | \"b\"\n", "left recursion in rule 'root'");
    expect_error("root ::= a\na ::= b? root\nb ::= \"x\"\n", "left recursion");
    expect_error("root ::= (\"a\"?)*\n", "can match the empty string");
    expect_error("root ::= \"abc\n", "unterminated literal");
    expect_error("root ::= [ab", "unterminated character class");
    expect_error("root ::= \"\\q\"\n", "unknown escape");
    expect_error("root ::= \"a\"{3,1}\n", "below the minimum");
    expect_error("root ::= \"a\"{99999}\n", "limited to");
    expect_error("root ::= \"a\"\nroot ::= \"b\"\n", "defined twice");
    expect_error("root ::= (\"a\"\n", "without its ')'");
    expect_error("root ::= * \"a\"\n", "nothing before it");
    expect_error("root \"a\"\n", "expected '::='");
    expect_error("root ::= [z-a]\n", "backwards");
    expect_error("root ::= \"\\xff\xff\"\n", "UTF-8");
}

/* ---- regex against POSIX ERE ---- */

typedef struct rx_case {
    const char *ours;    /* our syntax */
    const char *posix;   /* the same language for regcomp(REG_EXTENDED) */
    const char *alphabet;
} rx_case;

static const rx_case RX[] = {
    {"[a-c]+x?", "[a-c]+x?", "abcxy"},
    {"(ab|cd)*e", "(ab|cd)*e", "abcde"},
    {"\\d{3}-\\d{4}", "[0-9]{3}-[0-9]{4}", "0129-"},
    {"^(yes|no|maybe)$", "(yes|no|maybe)", "yesnomabe"},
    {"a{2,}b{0,2}", "a{2,}b{0,2}", "ab"},
    {"[^abc]d", "[^abc]d", "abcdx"},
    {"x(?:y|z)+?w", "x(y|z)+w", "xyzw"},
    {"\\w+@\\w+\\.com", "[A-Za-z0-9_]+@[A-Za-z0-9_]+\\.com", "ab@.com"},
    {"(a|b)?(c|d)?", "(a|b)?(c|d)?", "abcd"},
    {"\\s*\\S+", "[ \t\n\r\f\v]*[^ \t\n\r\f\v]+", " ab\t"},
    {"(?P<year>[0-9]{2})-(?<m>[0-9])", "([0-9]{2})-([0-9])", "0123-"},
    {"a.c", "a[^\n]c", "abc\n"},
    {"[\\d.]+", "[0-9.]+", "1.2a"},
    {"(((a)))b|c{1}", "(((a)))b|c{1}", "abc"},
};

static uint64_t rng_state = 0x1234567;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static kvs_grammar *regex_grammar(const char *re)
{
    char *gbnf;
    kvs_error err = {0};
    if (kvs_regex_to_gbnf(re, &gbnf, &err) != KVS_OK)
        fail_msg("regex '%s': %s", re, err.msg);
    kvs_grammar *g = parse_ok(gbnf);
    free(gbnf);
    return g;
}

/* A random sentence of g: pick a random byte among those that continue
 * (trying them in a random order), stop at random where it may end. */
static size_t random_walk(kvs_grammar *g, char *out, size_t cap, bool *ended)
{
    kvs_gmatcher *m;
    kvs_error err;
    kvs_gmatcher_limits lim = {.max_frames = 8192, .max_tops = 2048, .cache_entries = 0};
    assert_int_equal(kvs_gmatcher_new(&m, g, NULL, false, &lim, &err), KVS_OK);
    size_t n = 0;
    *ended = false;
    while (n + 1 < cap) {
        if (kvs_gmatcher_can_end(m) && (kvs_gmatcher_done(m) || rnd() % 4 == 0)) {
            *ended = true;
            break;
        }
        /* prefer printable ASCII so walks stay readable, any byte otherwise */
        unsigned start = rnd() % 256;
        bool moved = false;
        for (int pass = 0; pass < 2 && !moved; pass++)
            for (unsigned k = 0; k < 256; k++) {
                unsigned char c = (unsigned char)((start + k) % 256);
                if (pass == 0 && (c < 0x20 || c >= 0x7F))
                    continue;
                if (kvs_gmatcher_accept_bytes(m, (const char *)&c, 1)) {
                    out[n++] = (char)c;
                    moved = true;
                    break;
                }
            }
        if (!moved)
            break;
    }
    out[n] = '\0';
    kvs_gmatcher_free(m);
    return n;
}

/* glibc's POSIX regex functions, looked up in libc itself: the library
 * links Oniguruma, which exports regcomp/regexec of its own (another
 * regex_t) that would otherwise take their place. */
typedef int (*regcomp_fn)(regex_t *, const char *, int);
typedef int (*regexec_fn)(const regex_t *, const char *, size_t, regmatch_t *, int);
typedef void (*regfree_fn)(regex_t *);

static void test_regex_vs_posix(void **state)
{
    (void)state;
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(libc);
    regcomp_fn regcomp_ = (regcomp_fn)dlsym(libc, "regcomp");
    regexec_fn regexec_ = (regexec_fn)dlsym(libc, "regexec");
    regfree_fn regfree_ = (regfree_fn)dlsym(libc, "regfree");
    assert_true(regcomp_ && regexec_ && regfree_);
    int total_match = 0;
    for (size_t c = 0; c < sizeof RX / sizeof RX[0]; c++) {
        kvs_grammar *g = regex_grammar(RX[c].ours);
        char anchored[256];
        snprintf(anchored, sizeof anchored, "^(%s)$", RX[c].posix);
        regex_t re;
        assert_int_equal(regcomp_(&re, anchored, REG_EXTENDED | REG_NOSUB), 0);
        size_t na = strlen(RX[c].alphabet);
        int n_match = 0;
        for (int t = 0; t < 3000; t++) {
            char s[16];
            size_t len = rnd() % 10;
            for (size_t i = 0; i < len; i++)
                s[i] = RX[c].alphabet[rnd() % na];
            s[len] = '\0';
            bool want = regexec_(&re, s, 0, NULL, 0) == 0;
            n_match += want;
            if (accepts(g, s, len) != want)
                fail_msg("regex '%s' on '%s': matcher %d, POSIX %d", RX[c].ours, s, !want, want);
        }
        for (int t = 0; t < 200; t++) {
            char s[128];
            bool ended;
            random_walk(g, s, sizeof s, &ended);
            if (ended && regexec_(&re, s, 0, NULL, 0) != 0)
                fail_msg("regex '%s': the walk gave '%s', which POSIX does not match", RX[c].ours, s);
        }
        regfree_(&re);
        kvs_grammar_unref(g);
        total_match += n_match;
    }
    assert_true(total_match > 3000); /* the oracle does match things (it is glibc's) */
    dlclose(libc);
}

static void test_regex_errors(void **state)
{
    (void)state;
    static const struct {
        const char *re, *needle;
    } bad[] = {
        {"(a)\\1", "backreferences"},   {"a(?=b)", "lookaround"},     {"a(?<!b)", "lookaround"},
        {"\\bword", "word boundary"},    {"(?i)abc", "inline flags"},  {"a^b", "'^' inside"},
        {"a$b", "'$' inside"},          {"(ab", "without its ')'"},   {"ab)", "without its '('"},
        {"*a", "nothing to repeat"},    {"[abc", "without its ']'"},  {"\\p{L}", "Unicode property"},
        {"a**", "quantifier after a quantifier"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *gbnf = NULL;
        kvs_error err = {0};
        if (kvs_regex_to_gbnf(bad[i].re, &gbnf, &err) == KVS_OK) {
            free(gbnf);
            fail_msg("regex '%s' compiled", bad[i].re);
        }
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("regex '%s': '%s' does not name '%s'", bad[i].re, err.msg, bad[i].needle);
    }
}

static void test_choice(void **state)
{
    (void)state;
    const char *ch[] = {"red", "green", "blue \"sky\"", "r\u00e9d", ""};
    char *gbnf;
    kvs_error err;
    assert_int_equal(kvs_choice_to_gbnf(ch, 5, &gbnf, &err), KVS_OK);
    kvs_grammar *g = parse_ok(gbnf);
    free(gbnf);
    for (int i = 0; i < 5; i++)
        expect(g, ch[i], true);
    expect(g, "gree", false);
    expect(g, "redd", false);
    kvs_grammar_unref(g);
    assert_int_not_equal(kvs_choice_to_gbnf(ch, 0, &gbnf, &err), KVS_OK);
}

/* ---- JSON schema ---- */

static kvs_grammar *schema_grammar(const char *schema)
{
    char *gbnf;
    kvs_error err = {0};
    if (kvs_json_schema_to_gbnf(schema, strlen(schema), &gbnf, &err) != KVS_OK)
        fail_msg("schema %s: %s", schema, err.msg);
    kvs_grammar *g = parse_ok(gbnf);
    free(gbnf);
    return g;
}

/* Every number the grammar allows is a finite double (JSON allows 1e999,
 * which JavaScript parses as Infinity and zod rejects). */
static void test_json_numbers_finite(void **state)
{
    (void)state;
    kvs_grammar *g = schema_grammar("{\"type\":\"number\"}");
    expect(g, "1e99", true);
    expect(g, "-1.5E-12", true);
    expect(g, "9999999999999999.9999999999999999e+99", true);
    expect(g, "1e999", false);
    expect(g, "1e308", false);
    kvs_grammar_unref(g);
}

static void test_json_schema_accepts(void **state)
{
    (void)state;
    kvs_grammar *g = schema_grammar(
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":5},"
        "\"age\":{\"type\":\"integer\",\"minimum\":0},\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\"]},"
        "\"minItems\":1,\"maxItems\":2}},\"required\":[\"name\",\"tags\"],\"additionalProperties\":false}");
    expect(g, "{\"name\":\"bob\",\"tags\":[\"a\"]}", true);
    expect(g, "{ \"name\": \"bob\", \"age\": 42, \"tags\": [\"a\", \"b\"]}", true);
    expect(g, "{\"name\":\"bob\",\"age\":-1,\"tags\":[\"a\"]}", false);
    expect(g, "{\"name\":\"bobbie\",\"tags\":[\"a\"]}", false);
    expect(g, "{\"name\":\"bob\",\"tags\":[]}", false);
    expect(g, "{\"name\":\"bob\",\"tags\":[\"a\",\"b\",\"a\"]}", false);
    expect(g, "{\"tags\":[\"a\"]}", false);
    expect(g, "{\"name\":\"b\\u00e9\\\"\",\"tags\":[\"b\"]}", true);
    expect(g, "{\"name\":\"\\ud800\",\"tags\":[\"b\"]}", false); /* no lone surrogates */
    kvs_grammar_unref(g);

    g = schema_grammar("{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"boolean\"},"
                       "\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},"
                       "\"required\":[\"v\",\"next\"]}},\"$ref\":\"#/$defs/node\"}");
    expect(g, "{\"v\":true,\"next\":{\"v\":false,\"next\":null}}", true);
    expect(g, "{\"v\":true,\"next\":{\"v\":false}}", false);
    kvs_grammar_unref(g);

    g = schema_grammar("{\"type\":\"string\",\"format\":\"date\"}");
    expect(g, "\"2024-02-28\"", true);
    expect(g, "\"2024-02-30\"", false);
    expect(g, "\"2024-13-01\"", false);
    kvs_grammar_unref(g);
    g = schema_grammar("{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d+$\"}");
    expect(g, "\"AB-12\"", true);
    expect(g, "\"AB-\"", false);
    kvs_grammar_unref(g);
}

/* Integer bounds: every n in -1200..1200 (and some far ones) is accepted
 * exactly when it lies inside. */
static void test_json_integer_ranges(void **state)
{
    (void)state;
    static const struct {
        const char *bounds;
        long long lo, hi; /* inclusive; LLONG_MIN / LLONG_MAX: none */
    } cases[] = {
        {"\"minimum\":18,\"maximum\":99", 18, 99},
        {"\"minimum\":-5,\"maximum\":5", -5, 5},
        {"\"minimum\":100,\"exclusiveMaximum\":1000", 100, 999},
        {"\"exclusiveMinimum\":-101,\"maximum\":-7", -100, -7},
        {"\"minimum\":37", 37, INT64_MAX},
        {"\"maximum\":-3", INT64_MIN, -3},
        {"\"maximum\":250", INT64_MIN, 250},
        {"\"minimum\":0,\"maximum\":0", 0, 0},
        {"\"minimum\":1.5,\"maximum\":1109.9", 2, 1109},
        {"\"minimum\":999,\"maximum\":1001", 999, 1001},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char schema[200];
        snprintf(schema, sizeof schema, "{\"type\":\"integer\",%s}", cases[c].bounds);
        kvs_grammar *g = schema_grammar(schema);
        for (long long n = -1200; n <= 1200; n++) {
            char s[32];
            snprintf(s, sizeof s, "%lld", n);
            bool want = n >= cases[c].lo && n <= cases[c].hi;
            if (accepts(g, s, strlen(s)) != want)
                fail_msg("%s: %lld accepted %d", schema, n, !want);
        }
        const char *far[] = {"123456789012345", "-123456789012345", "0012", "-0"};
        for (int i = 0; i < 4; i++) {
            bool want = i < 2 && ((i == 0 && cases[c].hi == INT64_MAX) || (i == 1 && cases[c].lo == INT64_MIN));
            if (accepts(g, far[i], strlen(far[i])) != want)
                fail_msg("%s: '%s' accepted %d", schema, far[i], !want);
        }
        kvs_grammar_unref(g);
    }
}

static void test_json_schema_errors(void **state)
{
    (void)state;
    static const struct {
        const char *schema, *needle;
    } bad[] = {
        {"{\"type\":\"object\",\"patternProperties\":{}}", "'patternProperties'"},
        {"{\"type\":\"array\",\"uniqueItems\":true}", "'uniqueItems'"},
        {"{\"type\":\"string\",\"format\":\"email\"}", "format 'email'"},
        {"{\"type\":\"number\",\"maximum\":10}", "'maximum'"},
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no integer lies"},
        {"{\"type\":\"number\",\"multipleOf\":2}", "'multipleOf'"},
        {"{\"$ref\":\"http://x/y.json\"}", "only local $ref"},
        {"{\"$ref\":\"#/$defs/missing\"}", "points at nothing"},
        {"{\"properties\":{\"a\":{\"not\":{}}}}", "'not' at #/properties/a"},
        {"{\"allOf\":[{\"type\":\"string\"},{\"maxLength\":3}]}", "allOf"},
        {"{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", "backreferences"},
        {"{\"type\":\"object\",\"properties\":{},\"required\":[\"x\"],\"additionalProperties\":false}", "required"},
        {"{\"type\":\"strin\"}", "unknown type 'strin'"},
        {"[1,2", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *gbnf = NULL;
        kvs_error err = {0};
        if (kvs_json_schema_to_gbnf(bad[i].schema, strlen(bad[i].schema), &gbnf, &err) == KVS_OK) {
            free(gbnf);
            fail_msg("schema %s compiled", bad[i].schema);
        }
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("schema %s: '%s' does not name %s", bad[i].schema, err.msg, bad[i].needle);
    }
}

static void test_json_walks_parse(void **state)
{
    (void)state;
    const char *schemas[] = {
        NULL, /* any object */
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{\"type\":[\"string\",\"null\"],"
        "\"maxLength\":3}},\"required\":[\"a\"]}",
        "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}},"
        "\"maxItems\":3}",
        "{\"type\":\"string\",\"format\":\"date-time\"}",
    };
    for (size_t i = 0; i < sizeof schemas / sizeof schemas[0]; i++) {
        char *gbnf;
        kvs_error err;
        assert_int_equal(kvs_json_schema_to_gbnf(schemas[i], schemas[i] ? strlen(schemas[i]) : 0, &gbnf, &err),
                         KVS_OK);
        kvs_grammar *g = parse_ok(gbnf);
        free(gbnf);
        int n_ended = 0;
        for (int t = 0; t < 300; t++) {
            char s[4096];
            bool ended;
            size_t n = random_walk(g, s, sizeof s, &ended);
            if (!ended)
                continue;
            n_ended++;
            json_error_t jerr;
            json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
            if (!v && strstr(jerr.text, "NUL byte in object key")) /* valid JSON, a jansson limit */
                continue;
            if (!v)
                fail_msg("schema %zu: not JSON (%s at %d) from the walk: '%s'", i, jerr.text, jerr.position, s);
            json_decref(v);
        }
        assert_true(n_ended > 30);
        kvs_grammar_unref(g);
    }
}

/* ---- the token mask ---- */

static void check_masks(const char *vocab_file, const char *schema, int steps)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/%s", mt_shared_dir(), vocab_file);
    kvs_gguf *gg;
    kvs_tokenizer *tok;
    kvs_error err;
    assert_int_equal(kvs_gguf_open(&gg, path, &err), KVS_OK);
    assert_int_equal(kvs_tok_load(&tok, gg, &err), KVS_OK);
    kvs_gguf_close(gg);
    kvs_gvocab *v;
    assert_int_equal(kvs_gvocab_new(&v, tok, &err), KVS_OK);
    kvs_grammar *g = schema_grammar(schema);
    for (int strip = 0; strip < 2; strip++) {
        kvs_gmatcher *m, *tmp;
        assert_int_equal(kvs_gmatcher_new(&m, g, v, strip, NULL, &err), KVS_OK);
        assert_int_equal(kvs_gmatcher_new(&tmp, g, v, strip, NULL, &err), KVS_OK);
        const int32_t V = kvs_tok_n_vocab(tok);
        for (int s = 0; s < steps; s++) {
            int32_t n_allowed;
            const uint32_t *mask = kvs_gmatcher_mask(m, &n_allowed);
            int32_t count = 0, pick = -1, n_seen = 0;
            for (int32_t t = 0; t < V; t++) {
                assert_int_equal(kvs_gmatcher_copy_state(tmp, m, &err), KVS_OK);
                bool ok = kvs_gmatcher_accept_token(tmp, t);
                bool bit = (mask[t >> 5] >> (t & 31)) & 1u;
                if (ok != bit)
                    fail_msg("%s step %d token %d '%s': trie %d, brute force %d", vocab_file, s, t,
                             kvs_tok_piece(tok, t), bit, ok);
                if (ok && !kvs_tok_is_eog(tok, t) && rnd() % (uint32_t)(++n_seen) == 0)
                    pick = t; /* reservoir sampling among the allowed text tokens */
                count += ok;
            }
            assert_int_equal(count, n_allowed);
            if (pick < 0)
                break;
            assert_true(kvs_gmatcher_accept_token(m, pick));
            if (kvs_gmatcher_done(m))
                break;
        }
        kvs_gmatcher_stats st;
        kvs_gmatcher_get_stats(m, &st);
        assert_true(st.masks > 0);
        kvs_gmatcher_free(tmp);
        kvs_gmatcher_free(m);
    }
    kvs_grammar_unref(g);
    kvs_gvocab_free(v);
    kvs_tok_free(tok);
}

static void test_mask_spm(void **state)
{
    (void)state;
    check_masks("ggml-vocab-llama-spm.gguf",
                "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"n\":{\"type\":\"integer\"}},"
                "\"required\":[\"city\",\"n\"]}",
                8);
}

static void test_mask_gpt2(void **state)
{
    (void)state;
    check_masks("ggml-vocab-gpt-2.gguf", "{\"type\":\"array\",\"items\":{\"enum\":[\"yes\",\"no\",1.5]}}", 6);
}

static kvs_tokenizer *stories_tok(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", mt_shared_dir());
    kvs_gguf *gg;
    kvs_tokenizer *tok;
    kvs_error err;
    assert_int_equal(kvs_gguf_open(&gg, path, &err), KVS_OK);
    assert_int_equal(kvs_tok_load(&tok, gg, &err), KVS_OK);
    kvs_gguf_close(gg);
    return tok;
}

/* The cache answers a state it has seen with the same mask. */
static void test_mask_cache(void **state)
{
    (void)state;
    kvs_tokenizer *tok = stories_tok();
    kvs_error err;
    kvs_gvocab *v;
    assert_int_equal(kvs_gvocab_new(&v, tok, &err), KVS_OK);
    kvs_grammar *g = parse_ok("root ::= \"\\\"\" [a-z ]* \"\\\"\"\n");
    kvs_gmatcher *m;
    assert_int_equal(kvs_gmatcher_new(&m, g, v, false, NULL, &err), KVS_OK);
    assert_true(kvs_gmatcher_accept_bytes(m, "\"", 1));
    int32_t n1, n2;
    const uint32_t *a = kvs_gmatcher_mask(m, &n1);
    size_t words = ((size_t)kvs_tok_n_vocab(tok) + 31) / 32;
    uint32_t *copy = malloc(words * 4);
    memcpy(copy, a, words * 4);
    assert_true(kvs_gmatcher_accept_bytes(m, "ab c", 4)); /* back in the same state */
    const uint32_t *b = kvs_gmatcher_mask(m, &n2);
    kvs_gmatcher_stats st;
    kvs_gmatcher_get_stats(m, &st);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(n1, n2);
    assert_memory_equal(copy, b, words * 4);
    assert_true(n1 > 10);
    free(copy);
    kvs_gmatcher_free(m);
    kvs_grammar_unref(g);
    kvs_gvocab_free(v);
    kvs_tok_free(tok);
}


/* ---- the compile arena and the structured-output pool ---- */

static const char *ARENA_SCHEMA =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\",\"minimum\":0},"
    "\"role\":{\"enum\":[\"admin\",\"user\"]},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":12},"
    "\"maxItems\":4},\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"},\"when\":{\"type\":\"string\",\"format\":"
    "\"date-time\"}},\"required\":[\"name\",\"age\"]}";

static bool expect_accepts_arena(kvs_grammar *g, const char *s) { return accepts(g, s, strlen(s)); }

static void same_grammar(const kvs_grammar *a, const kvs_grammar *b)
{
    assert_int_equal(a->n_rules, b->n_rules);
    assert_int_equal(a->n_alts, b->n_alts);
    assert_int_equal(a->n_elems, b->n_elems);
    assert_int_equal(a->n_sets, b->n_sets);
    assert_int_equal(a->root, b->root);
    assert_memory_equal(a->alt_begin, b->alt_begin, ((size_t)a->n_rules + 1) * sizeof *a->alt_begin);
    assert_memory_equal(a->alts, b->alts, (size_t)a->n_alts * sizeof *a->alts);
    assert_memory_equal(a->elems, b->elems, (size_t)a->n_elems * sizeof *a->elems);
    assert_memory_equal(a->sets, b->sets, (size_t)a->n_sets * sizeof *a->sets);
    for (int32_t i = 0; i < a->n_rules; i++)
        assert_string_equal(a->rule_names[i], b->rule_names[i]);
}

static void test_arena_compile(void **state)
{
    (void)state;
    kvs_grammar *ref = schema_grammar(ARENA_SCHEMA);
    size_t cap = 1 << 20;
    unsigned char *mem = malloc(cap + 64);
    assert_non_null(mem);
    memset(mem + cap, 0xA5, 64); /* a fence past the arena */
    kvs_garena ar;
    kvs_garena_init(&ar, mem, cap);
    char *gbnf;
    kvs_error err;
    assert_int_equal(kvs_json_schema_to_gbnf_in(&ar, ARENA_SCHEMA, strlen(ARENA_SCHEMA), &gbnf, &err), KVS_OK);
    kvs_grammar *g;
    assert_int_equal(kvs_grammar_parse_in(&ar, &g, gbnf, strlen(gbnf), &err), KVS_OK);
    assert_ptr_equal(g->arena, &ar);
    same_grammar(ref, g);
    assert_true(expect_accepts_arena(g, "{\"name\":\"x\",\"age\":3}"));
    size_t need = ar.hwm;
    assert_true(need > 0 && need <= cap && !ar.full);
    kvs_grammar_unref(g); /* lives in the arena: nothing freed, no release set */
    /* every size below what it needed fails cleanly, as out of memory with the arena full */
    for (size_t small = 4096; small < need; small += need / 7 + 1) {
        kvs_garena_init(&ar, mem, small);
        memset(mem, 0, cap);
        kvs_status st = kvs_json_schema_to_gbnf_in(&ar, ARENA_SCHEMA, strlen(ARENA_SCHEMA), &gbnf, &err);
        if (st == KVS_OK)
            st = kvs_grammar_parse_in(&ar, &g, gbnf, strlen(gbnf), &err);
        assert_int_equal(st, KVS_E_NOMEM);
        assert_true(ar.full);
        assert_true(ar.hwm <= small);
    }
    for (int i = 0; i < 64; i++)
        assert_int_equal(mem[cap + i], 0xA5);
    /* the allocator: the newest block grows in place and pops on free */
    kvs_garena_init(&ar, mem, cap);
    char *a = kvs_galloc(&ar, 10), *b = kvs_galloc(&ar, 10);
    size_t used = ar.used;
    assert_ptr_equal(kvs_grealloc(&ar, b, 100), b);
    kvs_gfree(&ar, b);
    assert_true(ar.used < used);
    memcpy(a, "abcdefghi", 10);
    char *c = kvs_grealloc(&ar, a, 50); /* an older block moves, its bytes with it */
    assert_non_null(c);
    assert_string_equal(c, "abcdefghi");
    assert_null(kvs_galloc(&ar, cap));
    assert_true(ar.full);
    free(mem);
    kvs_grammar_unref(ref);
}


/* A constraint compiled in a lease of p, bound to it. */
static kvs_grammar *lease_grammar(kvs_gpool *p, int32_t seqs, const char *schema)
{
    kvs_glease *l;
    kvs_error err;
    assert_int_equal(kvs_gpool_take(p, seqs, &l, &err), KVS_OK);
    char *gbnf;
    kvs_grammar *g;
    assert_int_equal(kvs_json_schema_to_gbnf_in(kvs_glease_arena(l), schema, strlen(schema), &gbnf, &err), KVS_OK);
    assert_int_equal(kvs_grammar_parse_in(kvs_glease_arena(l), &g, gbnf, strlen(gbnf), &err), KVS_OK);
    kvs_glease_bind(l, g);
    assert_true(kvs_gpool_owns(g));
    return g;
}

/* Walk m and a fresh matcher of g side by side: the same masks. */
static void same_masks(kvs_gmatcher *m, kvs_grammar *g, const kvs_gvocab *v, int32_t V, int steps)
{
    kvs_gmatcher *f;
    kvs_error err;
    assert_int_equal(kvs_gmatcher_new(&f, g, v, false, NULL, &err), KVS_OK);
    for (int s = 0; s < steps; s++) {
        int32_t na, nb;
        const uint32_t *a = kvs_gmatcher_mask(m, &na), *b = kvs_gmatcher_mask(f, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, ((size_t)V + 31) / 32 * 4);
        int32_t pick = -1;
        for (int32_t t = 0; t < V && pick < 0; t++)
            if ((a[t >> 5] >> (t & 31)) & 1u && (int32_t)(rnd() % 3) == 0)
                pick = t;
        if (pick < 0)
            break;
        bool ok = kvs_gmatcher_accept_token(m, pick);
        assert_true(ok == kvs_gmatcher_accept_token(f, pick));
        if (!ok || kvs_gmatcher_done(m))
            break;
    }
    kvs_gmatcher_free(f);
}

static void test_gpool(void **state)
{
    (void)state;
    kvs_tokenizer *tok = stories_tok();
    const int32_t V = kvs_tok_n_vocab(tok);
    kvs_gpool_limits l = {.slots = 2, .arena_bytes = 256 << 10, .matcher = kvs_gmatcher_default_limits()};
    kvs_gpool *p;
    kvs_error err;
    assert_int_equal(kvs_gpool_new(&p, tok, &l, &err), KVS_OK);
    assert_true(kvs_gpool_bytes(&l, tok) == kvs_gpool_bytes(&l, tok));
    kvs_gvocab *v;
    assert_int_equal(kvs_gvocab_new(&v, tok, &err), KVS_OK);
    size_t max_tok = 0;
    assert_true(kvs_gvocab_reserve_bytes(tok, &max_tok) >= kvs_gvocab_bytes(v));
    assert_true(max_tok > 0 && max_tok <= kvs_tok_max_token_bytes(tok));
    kvs_glease *ls;
    assert_int_equal(kvs_gpool_take(p, 3, &ls, &err), KVS_E_INVALID); /* more than the pool holds */
    kvs_grammar *g = lease_grammar(p, 2, ARENA_SCHEMA);
    kvs_gpool_stats st;
    kvs_gpool_get_stats(p, &st);
    assert_int_equal(st.matchers_in_use, 2);
    assert_int_equal(st.leases_in_use, 1);
    assert_int_equal(kvs_gpool_take(p, 1, &ls, &err), KVS_E_BUDGET); /* both matchers reserved */
    assert_non_null(strstr(err.msg, "--max-structured-seqs"));
    kvs_gmatcher *m1, *m2, *m3;
    assert_int_equal(kvs_gpool_matcher(g, false, &m1, &err), KVS_OK);
    assert_int_equal(kvs_gpool_matcher(g, false, &m2, &err), KVS_OK);
    assert_int_equal(kvs_gpool_matcher(g, false, &m3, &err), KVS_E_BUDGET); /* the lease had two */
    same_masks(m1, g, v, V, 40);
    kvs_gmatcher_free(m1); /* back to the pool */
    kvs_gpool_get_stats(p, &st);
    assert_int_equal(st.matchers_in_use, 1);
    kvs_grammar_unref(g); /* m2 still holds the grammar: the lease stays */
    kvs_gpool_get_stats(p, &st);
    assert_int_equal(st.leases_in_use, 1);
    kvs_gmatcher_free(m2); /* the last reference: the lease and the arena go back */
    kvs_gpool_get_stats(p, &st);
    assert_int_equal(st.matchers_in_use, 0);
    assert_int_equal(st.leases_in_use, 0);
    assert_int_equal(st.high_water, 2);
    assert_true(st.arena_high_water > 0 && st.arena_high_water <= l.arena_bytes);
    assert_int_equal(st.refused_busy, 1);
    /* a lease not used by its request goes back with its grammar; reused matchers mask like fresh ones */
    for (int round = 0; round < 3; round++) {
        const char *schema = round == 1 ? "{\"enum\":[\"yes\",\"no\",\"maybe\"]}" : ARENA_SCHEMA;
        g = lease_grammar(p, 1, schema);
        assert_int_equal(kvs_gpool_matcher(g, false, &m1, &err), KVS_OK);
        same_masks(m1, g, v, V, 30);
        kvs_gmatcher_free(m1);
        kvs_grammar_unref(g);
    }
    g = lease_grammar(p, 2, ARENA_SCHEMA);
    kvs_grammar_unref(g); /* no matcher ever taken */
    kvs_gpool_get_stats(p, &st);
    assert_int_equal(st.matchers_in_use, 0);
    assert_int_equal(st.leases_in_use, 0);
    /* a cancelled lease (the compile failed) goes back too */
    assert_int_equal(kvs_gpool_take(p, 2, &ls, &err), KVS_OK);
    kvs_glease_cancel(ls);
    kvs_gpool_get_stats(p, &st);
    assert_int_equal(st.matchers_in_use, 0);
    kvs_gvocab_free(v);
    kvs_gpool_free(p);
    kvs_tok_free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gbnf_accepts),      cmocka_unit_test(test_gbnf_errors),
        cmocka_unit_test(test_regex_vs_posix),    cmocka_unit_test(test_regex_errors),
        cmocka_unit_test(test_choice),            cmocka_unit_test(test_json_schema_accepts),
        cmocka_unit_test(test_json_schema_errors), cmocka_unit_test(test_json_walks_parse),
        cmocka_unit_test(test_json_integer_ranges),
        cmocka_unit_test(test_mask_spm),          cmocka_unit_test(test_mask_gpt2),
        cmocka_unit_test(test_mask_cache),        cmocka_unit_test(test_arena_compile),
        cmocka_unit_test(test_gpool),             cmocka_unit_test(test_json_numbers_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
