/*
 * tok_hf_load.c - building a kvs_tokenizer from a Hugging Face
 * tokenizer.json (+ tokenizer_config.json, generation_config.json).
 *
 * The file is untrusted: every value is type-checked and range-checked
 * and an error names the file and the JSON path ("tokenizer.json:
 * model.merges[12]: ...").  Components kvserve does not run are rejected
 * by name rather than ignored.  The per-token decoder output is computed
 * here once, so decoding and streaming use the same code as GGUF
 * tokenizers.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_hf.h"
#include "tokenizer/unicode.h"

#define TJ "tokenizer.json"
#define TC "tokenizer_config.json"

static kvs_status bad(kvs_error *err, kvs_status st, const char *file, const char *path,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static kvs_status bad(kvs_error *err, kvs_status st, const char *file, const char *path,
                      const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return kvs_fail(err, st, "%s: %s: %s", file, path, msg);
}

static const char *jtype(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Optional boolean field (absent or null: def). */
static kvs_status get_bool(const json_t *o, const char *key, bool def, bool *out, const char *file,
                           const char *path, kvs_error *err)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_boolean(v))
        return bad(err, KVS_E_FORMAT, file, path, "'%s' is %s, expected a boolean", key,
                   jtype(v));
    *out = json_is_true(v);
    return KVS_OK;
}

/* Optional string field: *out NULL when absent or null. */
static kvs_status get_str(const json_t *o, const char *key, const char **out, size_t *len,
                          const char *file, const char *path, kvs_error *err)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_string(v))
        return bad(err, KVS_E_FORMAT, file, path, "'%s' is %s, expected a string", key,
                   jtype(v));
    *out = json_string_value(v);
    if (len)
        *len = json_string_length(v);
    return KVS_OK;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* ---- patterns --------------------------------------------------------------- */

static kvs_status get_pattern(const json_t *o, hf_pattern *p, const char *path, kvs_error *err)
{
    json_t *pat = json_object_get(o, "pattern");
    if (!json_is_object(pat))
        return bad(err, KVS_E_FORMAT, TJ, path, "'pattern' is %s, expected {\"String\": ..} or "
                   "{\"Regex\": ..}", pat ? jtype(pat) : "missing");
    json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
    if (json_is_string(s)) {
        p->len = json_string_length(s);
        p->str = dupn(json_string_value(s), p->len);
        if (!p->str)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory for a pattern");
        return KVS_OK;
    }
    if (json_is_string(r)) {
        kvs_status st = kvs_tok_rx_compile(&p->rx, json_string_value(r), json_string_length(r), err);
        if (st != KVS_OK)
            kvs_fail_wrap(err, "%s: %s.pattern.Regex", TJ, path);
        return st;
    }
    return bad(err, KVS_E_FORMAT, TJ, path, "'pattern' needs a string 'String' or 'Regex'");
}

static void free_pattern(hf_pattern *p)
{
    free(p->str);
    kvs_tok_rx_free(p->rx);
}

/* ---- normalizers ------------------------------------------------------------ */

typedef struct vec {
    void *v;
    size_t n, cap, elem;
} vec;

static void *vec_add(vec *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        void *p = realloc(v->v, cap * v->elem);
        if (!p)
            return NULL;
        v->v = p;
        v->cap = cap;
    }
    void *e = (char *)v->v + v->n++ * v->elem;
    memset(e, 0, v->elem);
    return e;
}

/* The shape every pipeline stage of tokenizer.json shares (normalizer, pre-tokenizer, decoder,
 * post-processor): null means absent; otherwise an object with a string "type"; a "Sequence"
 * holds an array `key` of stages, each parsed by `step(ctx, ...)` one level deeper (at most 16
 * levels; `what` names the stage in errors). On KVS_OK *type is the stage's type for the caller
 * to interpret, or NULL when nothing is left to do (absent, or a Sequence already parsed). */
typedef kvs_status (*hf_step_fn)(void *ctx, const json_t *j, const char *path, int depth,
                                 kvs_error *err);
static kvs_status typed_step(const json_t *j, const char *path, int depth, const char *what,
                             const char *key, hf_step_fn step, void *ctx, const char **type,
                             kvs_error *err)
{
    *type = NULL;
    if (!j || json_is_null(j))
        return KVS_OK;
    if (depth > 16)
        return bad(err, KVS_E_FORMAT, TJ, path, "%s nested too deeply", what);
    if (!json_is_object(j))
        return bad(err, KVS_E_FORMAT, TJ, path, "is %s, expected an object", jtype(j));
    const char *t;
    kvs_status st = get_str(j, "type", &t, NULL, TJ, path, err);
    if (st != KVS_OK)
        return st;
    if (!t)
        return bad(err, KVS_E_FORMAT, TJ, path, "no 'type'");
    if (strcmp(t, "Sequence") != 0) {
        *type = t;
        return KVS_OK;
    }
    json_t *a = json_object_get(j, key);
    if (!json_is_array(a))
        return bad(err, KVS_E_FORMAT, TJ, path, "Sequence without a '%s' array", key);
    for (size_t i = 0; st == KVS_OK && i < json_array_size(a); i++) {
        char sub[160];
        snprintf(sub, sizeof(sub), "%s.%s[%zu]", path, key, i);
        st = step(ctx, json_array_get(a, i), sub, depth + 1, err);
    }
    return st;
}

static kvs_status parse_normalizer(const json_t *j, vec *out, const char *path, int depth,
                                   kvs_error *err);
static kvs_status norm_step(void *ctx, const json_t *j, const char *path, int depth,
                             kvs_error *err)
{
    return parse_normalizer(j, ctx, path, depth, err);
}

static kvs_status parse_normalizer(const json_t *j, vec *out, const char *path, int depth,
                                   kvs_error *err)
{
    const char *type;
    kvs_status st =
        typed_step(j, path, depth, "normalizers", "normalizers", norm_step, out, &type, err);
    if (st != KVS_OK || !type)
        return st;
    static const struct { const char *name; enum hf_norm_kind kind; } SIMPLE[] = {
        {"NFC", HN_NFC}, {"NFD", HN_NFD}, {"NFKC", HN_NFKC}, {"NFKD", HN_NFKD},
        {"Lowercase", HN_LOWERCASE}, {"Prepend", HN_PREPEND}, {"Replace", HN_REPLACE},
    };
    size_t k = 0;
    while (k < sizeof(SIMPLE) / sizeof(SIMPLE[0]) && strcmp(SIMPLE[k].name, type) != 0)
        k++;
    if (k == sizeof(SIMPLE) / sizeof(SIMPLE[0]))
        return bad(err, KVS_E_UNSUPPORTED, TJ, path,
                   "normalizer '%s' is not supported (kvserve runs NFC, NFD, NFKC, NFKD, "
                   "Lowercase, Prepend, Replace and Sequence)", type);
    hf_norm *n = vec_add(out);
    if (!n)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for normalizers");
    n->kind = SIMPLE[k].kind;
    if (n->kind == HN_PREPEND || n->kind == HN_REPLACE) {
        const char *s;
        size_t len;
        const char *key = n->kind == HN_PREPEND ? "prepend" : "content";
        st = get_str(j, key, &s, &len, TJ, path, err);
        if (st == KVS_OK && !s)
            st = bad(err, KVS_E_FORMAT, TJ, path, "%s without a string '%s'", type, key);
        if (st != KVS_OK)
            return st;
        n->text = dupn(s, len);
        n->text_len = len;
        if (!n->text)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory for a normalizer");
    }
    if (n->kind == HN_REPLACE)
        st = get_pattern(j, &n->pat, path, err);
    return st;
}

/* ---- pre-tokenizers --------------------------------------------------------- */

static kvs_status parse_scheme(const json_t *j, enum hf_scheme *scheme, const char *path,
                               kvs_error *err)
{
    const char *s;
    kvs_status st = get_str(j, "prepend_scheme", &s, NULL, TJ, path, err);
    if (st != KVS_OK)
        return st;
    *scheme = HS_ALWAYS;
    if (!s) { /* older files: add_prefix_space */
        bool aps;
        st = get_bool(j, "add_prefix_space", true, &aps, TJ, path, err);
        *scheme = aps ? HS_ALWAYS : HS_NEVER;
        return st;
    }
    if (strcmp(s, "always") == 0)
        *scheme = HS_ALWAYS;
    else if (strcmp(s, "first") == 0)
        *scheme = HS_FIRST;
    else if (strcmp(s, "never") == 0)
        *scheme = HS_NEVER;
    else
        return bad(err, KVS_E_FORMAT, TJ, path, "prepend_scheme '%s' is not always/first/never",
                   s);
    return KVS_OK;
}

static kvs_status get_replacement(const json_t *j, char repl[8], size_t *repl_len,
                                  const char *path, kvs_error *err)
{
    const char *s;
    size_t len;
    kvs_status st = get_str(j, "replacement", &s, &len, TJ, path, err);
    if (st != KVS_OK)
        return st;
    if (!s) {
        s = "\xe2\x96\x81";
        len = 3;
    }
    if (len == 0 || len > 4 || kvs_utf8_check((const uint8_t *)s, len) != (int)len)
        return bad(err, KVS_E_FORMAT, TJ, path, "Metaspace 'replacement' must be one character");
    memcpy(repl, s, len);
    *repl_len = len;
    return KVS_OK;
}

static kvs_status parse_pretok(const json_t *j, vec *out, const char *path, int depth,
                               kvs_error *err);
static kvs_status pretok_step(void *ctx, const json_t *j, const char *path, int depth,
                             kvs_error *err)
{
    return parse_pretok(j, ctx, path, depth, err);
}

static kvs_status parse_pretok(const json_t *j, vec *out, const char *path, int depth,
                               kvs_error *err)
{
    const char *type;
    kvs_status st =
        typed_step(j, path, depth, "pre-tokenizers", "pretokenizers", pretok_step, out, &type, err);
    if (st != KVS_OK || !type)
        return st;
    hf_pre *p = vec_add(out);
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for pre-tokenizers");
    if (strcmp(type, "ByteLevel") == 0) {
        p->kind = HP_BYTELEVEL;
        st = get_bool(j, "add_prefix_space", true, &p->add_prefix_space, TJ, path, err);
        if (st == KVS_OK)
            st = get_bool(j, "use_regex", true, &p->use_regex, TJ, path, err);
        return st;
    }
    if (strcmp(type, "Split") == 0) {
        p->kind = HP_SPLIT;
        st = get_pattern(j, &p->pat, path, err);
        const char *b = NULL;
        if (st == KVS_OK)
            st = get_str(j, "behavior", &b, NULL, TJ, path, err);
        if (st == KVS_OK)
            st = get_bool(j, "invert", false, &p->invert, TJ, path, err);
        if (st != KVS_OK)
            return st;
        static const char *const NAMES[] = {"Removed", "Isolated", "MergedWithPrevious",
                                            "MergedWithNext", "Contiguous"};
        size_t k = 0;
        while (b && k < 5 && strcmp(NAMES[k], b) != 0)
            k++;
        if (!b || k == 5)
            return bad(err, KVS_E_FORMAT, TJ, path,
                       "Split 'behavior' %s%s%s is not Removed, Isolated, MergedWithPrevious, "
                       "MergedWithNext or Contiguous", b ? "'" : "", b ? b : "missing",
                       b ? "'" : "");
        p->behavior = (enum hf_behavior)k;
        return KVS_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        p->kind = HP_METASPACE;
        st = get_replacement(j, p->repl, &p->repl_len, path, err);
        if (st == KVS_OK)
            st = parse_scheme(j, &p->scheme, path, err);
        if (st == KVS_OK)
            st = get_bool(j, "split", true, &p->split, TJ, path, err);
        return st;
    }
    if (strcmp(type, "Digits") == 0) {
        p->kind = HP_DIGITS;
        return get_bool(j, "individual_digits", false, &p->individual, TJ, path, err);
    }
    if (strcmp(type, "WhitespaceSplit") == 0) {
        p->kind = HP_WSPLIT;
        return KVS_OK;
    }
    if (strcmp(type, "Whitespace") == 0) { /* the library's \w+|[^\w\s]+, kept */
        p->kind = HP_SPLIT;
        p->behavior = HB_REMOVED;
        p->invert = true;
        static const char RX[] = "\\w+|[^\\w\\s]+";
        return kvs_tok_rx_compile(&p->pat.rx, RX, sizeof(RX) - 1, err);
    }
    out->n--;
    return bad(err, KVS_E_UNSUPPORTED, TJ, path,
               "pre-tokenizer '%s' is not supported (kvserve runs ByteLevel, Split, Metaspace, "
               "Digits, Whitespace, WhitespaceSplit and Sequence)", type);
}

/* ---- decoders ---------------------------------------------------------------- */

enum hf_dec_kind { HD_BYTELEVEL, HD_METASPACE, HD_REPLACE, HD_BYTEFALLBACK, HD_FUSE, HD_STRIP };

typedef struct hf_dec {
    enum hf_dec_kind kind;
    const char *from, *to; /* Replace (into the JSON document) */
    size_t from_len, to_len;
    char repl[8]; /* Metaspace */
    size_t repl_len;
    enum hf_scheme scheme;
    uint32_t content; /* Strip */
    int64_t start, stop;
} hf_dec;

static kvs_status parse_decoder(const json_t *j, vec *out, const char *path, int depth,
                                kvs_error *err);
static kvs_status decoder_step(void *ctx, const json_t *j, const char *path, int depth,
                             kvs_error *err)
{
    return parse_decoder(j, ctx, path, depth, err);
}

static kvs_status parse_decoder(const json_t *j, vec *out, const char *path, int depth,
                                kvs_error *err)
{
    const char *type;
    kvs_status st =
        typed_step(j, path, depth, "decoders", "decoders", decoder_step, out, &type, err);
    if (st != KVS_OK || !type)
        return st;
    hf_dec *d = vec_add(out);
    if (!d)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for decoders");
    if (strcmp(type, "ByteLevel") == 0) {
        d->kind = HD_BYTELEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        d->kind = HD_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        d->kind = HD_FUSE;
    } else if (strcmp(type, "Metaspace") == 0) {
        d->kind = HD_METASPACE;
        st = get_replacement(j, d->repl, &d->repl_len, path, err);
        if (st == KVS_OK)
            st = parse_scheme(j, &d->scheme, path, err);
    } else if (strcmp(type, "Replace") == 0) {
        d->kind = HD_REPLACE;
        json_t *pat = json_object_get(j, "pattern");
        json_t *s = json_is_object(pat) ? json_object_get(pat, "String") : NULL;
        if (!json_is_string(s) || json_string_length(s) == 0)
            return bad(err, KVS_E_UNSUPPORTED, TJ, path,
                       "a Replace decoder needs a non-empty {\"String\": ..} pattern");
        d->from = json_string_value(s);
        d->from_len = json_string_length(s);
        st = get_str(j, "content", &d->to, &d->to_len, TJ, path, err);
        if (st == KVS_OK && !d->to)
            st = bad(err, KVS_E_FORMAT, TJ, path, "Replace decoder without 'content'");
    } else if (strcmp(type, "Strip") == 0) {
        d->kind = HD_STRIP;
        const char *c;
        size_t cl;
        st = get_str(j, "content", &c, &cl, TJ, path, err);
        json_t *a = json_object_get(j, "start"), *b = json_object_get(j, "stop");
        if (st == KVS_OK && (!c || kvs_utf8_check((const uint8_t *)c, cl) != (int)cl || cl == 0 ||
                             cl > 4 || !json_is_integer(a) || !json_is_integer(b) ||
                             json_integer_value(a) < 0 || json_integer_value(b) < 0))
            st = bad(err, KVS_E_FORMAT, TJ, path,
                     "Strip needs a one-character 'content' and integer 'start'/'stop' >= 0");
        if (st == KVS_OK) {
            size_t pos = 0;
            d->content = kvs_utf8_decode(c, cl, &pos);
            d->start = json_integer_value(a);
            d->stop = json_integer_value(b);
        }
    } else {
        out->n--;
        return bad(err, KVS_E_UNSUPPORTED, TJ, path,
                   "decoder '%s' is not supported (kvserve runs ByteLevel, Metaspace, Replace, "
                   "ByteFallback, Fuse, Strip and Sequence)", type);
    }
    return st;
}

/* ---- the vocabulary ---------------------------------------------------------- */

static int32_t token_id(const json_t *v)
{
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    return x >= 0 && x < INT32_MAX - 1 ? (int32_t)x : -1;
}

typedef struct loader {
    kvs_tokenizer *t;
    kvs_tok_hf *hf;
    json_t *root, *cfg;
    vec added; /* hf_added, content offsets into `text` */
    char *text;
    size_t n_text, cap_text;
    vec dec;   /* hf_dec */
} loader;

static kvs_status text_add(loader *L, const char *s, size_t n, uint32_t *off, kvs_error *err)
{
    if (L->n_text + n + 1 > UINT32_MAX)
        return kvs_fail(err, KVS_E_FORMAT, "%s: more than 4 GiB of token text", TJ);
    if (L->n_text + n + 1 > L->cap_text) {
        size_t cap = L->cap_text ? L->cap_text : 1 << 16;
        while (cap < L->n_text + n + 1)
            cap *= 2;
        char *p = realloc(L->text, cap);
        if (!p)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory for token text");
        L->text = p;
        L->cap_text = cap;
    }
    memcpy(L->text + L->n_text, s, n);
    L->text[L->n_text + n] = 0;
    *off = (uint32_t)L->n_text;
    L->n_text += n + 1;
    return KVS_OK;
}

/* One added token of id from its object o (content, special, lstrip, rstrip, single_word,
 * normalized: as in tokenizer.json's added_tokens and the config's added_tokens_decoder), appended
 * to L->added; `file` and `path` name o in errors. */
static kvs_status add_token(loader *L, const json_t *o, int32_t id, const char *file, const char *path,
                            kvs_error *err)
{
    hf_added x = {.id = id};
    const char *c;
    size_t cl;
    kvs_status st = get_str(o, "content", &c, &cl, file, path, err);
    if (st == KVS_OK && (!c || cl == 0))
        st = bad(err, KVS_E_FORMAT, file, path, "'content' must be a non-empty string");
    if (st == KVS_OK)
        st = get_bool(o, "special", false, &x.special, file, path, err);
    if (st == KVS_OK)
        st = get_bool(o, "lstrip", false, &x.lstrip, file, path, err);
    if (st == KVS_OK)
        st = get_bool(o, "rstrip", false, &x.rstrip, file, path, err);
    if (st == KVS_OK)
        st = get_bool(o, "single_word", false, &x.single_word, file, path, err);
    if (st == KVS_OK)
        st = get_bool(o, "normalized", !x.special, &x.normalized, file, path, err);
    if (st == KVS_OK)
        st = text_add(L, c, cl, &x.off, err);
    x.len = (uint32_t)cl;
    hf_added *slot = st == KVS_OK ? vec_add(&L->added) : NULL;
    if (st == KVS_OK && !slot)
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory for added tokens");
    if (slot)
        *slot = x;
    return st;
}

/* added_tokens of tokenizer.json, then added_tokens_decoder entries of the
 * config that name ids not yet added. */
static kvs_status parse_added(loader *L, kvs_error *err)
{
    json_t *a = json_object_get(L->root, "added_tokens");
    if (a && !json_is_null(a) && !json_is_array(a))
        return bad(err, KVS_E_FORMAT, TJ, "added_tokens", "is %s, expected an array", jtype(a));
    kvs_status st = KVS_OK;
    for (size_t i = 0; st == KVS_OK && i < json_array_size(a); i++) {
        char path[64];
        snprintf(path, sizeof(path), "added_tokens[%zu]", i);
        json_t *o = json_array_get(a, i);
        if (!json_is_object(o))
            return bad(err, KVS_E_FORMAT, TJ, path, "is %s, expected an object", jtype(o));
        int32_t id = token_id(json_object_get(o, "id"));
        if (id < 0)
            return bad(err, KVS_E_FORMAT, TJ, path, "'id' is not a token id (an integer >= 0)");
        st = add_token(L, o, id, TJ, path, err);
    }
    json_t *d = L->cfg ? json_object_get(L->cfg, "added_tokens_decoder") : NULL;
    if (d && !json_is_object(d))
        return bad(err, KVS_E_FORMAT, TC, "added_tokens_decoder", "is %s, expected an object",
                   jtype(d));
    const char *key;
    json_t *o;
    json_object_foreach(d, key, o)
    {
        if (st != KVS_OK)
            break;
        char *end;
        long id = strtol(key, &end, 10);
        char path[96];
        snprintf(path, sizeof(path), "added_tokens_decoder.%.40s", key);
        if (*key == 0 || *end || id < 0 || id >= INT32_MAX - 1 || !json_is_object(o))
            return bad(err, KVS_E_FORMAT, TC, path, "expected a token id mapped to an object");
        bool have = false;
        for (size_t i = 0; i < L->added.n && !have; i++)
            have = ((hf_added *)L->added.v)[i].id == id;
        if (have)
            continue;
        st = add_token(L, o, (int32_t)id, TC, path, err);
    }
    return st;
}

static kvs_status parse_vocab(loader *L, const json_t *model, kvs_error *err)
{
    kvs_tokenizer *t = L->t;
    kvs_tok_hf *hf = L->hf;
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return bad(err, KVS_E_FORMAT, TJ, "model.vocab", "is %s, expected an object",
                   vocab ? jtype(vocab) : "missing");
    size_t n_model = json_object_size(vocab);
    int64_t max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        int32_t id = token_id(v);
        if (id < 0)
            return bad(err, KVS_E_FORMAT, TJ, "model.vocab", "the id of '%.60s' is not an "
                       "integer >= 0", key);
        if (id > max_id)
            max_id = id;
    }
    hf_added *ad = L->added.v;
    for (size_t i = 0; i < L->added.n; i++)
        if (ad[i].id > max_id)
            max_id = ad[i].id;
    size_t n_entries = n_model + L->added.n;
    if (max_id < 0)
        return bad(err, KVS_E_FORMAT, TJ, "model.vocab", "the vocabulary is empty");
    if ((uint64_t)max_id >= 2 * (uint64_t)n_entries + 1024)
        return bad(err, KVS_E_FORMAT, TJ, "model.vocab",
                   "token id %lld is far past the %zu tokens defined (holes are not supported)",
                   (long long)max_id, n_entries);
    size_t n = (size_t)max_id + 1;
    t->n_vocab = (int32_t)n;
    hf->model_key = calloc(n, sizeof(*hf->model_key));
    t->piece = calloc(n, sizeof(*t->piece));
    t->score = calloc(n, sizeof(*t->score));
    t->type = malloc(n);
    t->eog = calloc(n, 1);
    if (!hf->model_key || !t->piece || !t->score || !t->type || !t->eog)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for a vocabulary of %zu tokens", n);
    memset(t->type, KVS_TT_UNUSED, n);
    kvs_status st = KVS_OK;
    uint32_t empty;
    st = text_add(L, "", 0, &empty, err);
    for (size_t i = 0; i < n; i++)
        t->piece[i] = hf->model_key[i] = (kvs_tok_span){empty, 0};
    json_object_foreach(vocab, key, v)
    {
        if (st != KVS_OK)
            break;
        int32_t id = token_id(v);
        size_t len = strlen(key);
        if (hf->model_key[id].len || t->type[id] != KVS_TT_UNUSED)
            return bad(err, KVS_E_FORMAT, TJ, "model.vocab", "id %d is given to two tokens "
                       "('%.40s' and '%.40s')", id, L->text + hf->model_key[id].off, key);
        uint32_t off;
        st = text_add(L, key, len, &off, err);
        hf->model_key[id] = t->piece[id] = (kvs_tok_span){off, (uint32_t)len};
        t->type[id] = KVS_TT_NORMAL;
    }
    if (st != KVS_OK)
        return st;
    /* added tokens: their content is the piece; their type control/user */
    for (size_t i = 0; i < L->added.n; i++) {
        t->piece[ad[i].id] = (kvs_tok_span){ad[i].off, ad[i].len};
        t->type[ad[i].id] = ad[i].special ? KVS_TT_CONTROL : KVS_TT_USER;
    }
    /* the pool moves now: keys below are offsets, so that is fine */
    t->pool = L->text;
    L->text = NULL;
    for (size_t i = 0; i < n; i++)
        if (t->piece[i].len > t->max_piece_len)
            t->max_piece_len = t->piece[i].len;
    st = kvs_tok_map_build(&hf->vocab, t->pool, hf->model_key, n, false, err);
    if (st == KVS_OK)
        st = kvs_tok_map_build(&t->piece_map, t->pool, t->piece, n, false, err);
    return st;
}

/* ---- merges ----------------------------------------------------------------- */

static uint64_t mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

int32_t kvs_tok_hf_merge_find(const hf_merges *m, int32_t a, int32_t b, uint32_t *rank)
{
    if (!m->key)
        return -1;
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint64_t i = mix(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == UINT64_MAX)
            return -1;
        if (m->key[i] == k) {
            *rank = m->rank[i];
            return m->id[i];
        }
    }
}

static kvs_status parse_merges(loader *L, const json_t *model, kvs_error *err)
{
    kvs_tokenizer *t = L->t;
    kvs_tok_hf *hf = L->hf;
    json_t *a = json_object_get(model, "merges");
    if (a && !json_is_null(a) && !json_is_array(a))
        return bad(err, KVS_E_FORMAT, TJ, "model.merges", "is %s, expected an array", jtype(a));
    size_t n = json_array_size(a);
    if (n > INT32_MAX)
        return bad(err, KVS_E_FORMAT, TJ, "model.merges", "too many merges");
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    hf_merges *m = &hf->merges;
    m->key = malloc(cap * sizeof(*m->key));
    m->rank = malloc(cap * sizeof(*m->rank));
    m->id = malloc(cap * sizeof(*m->id));
    hf->merge_left = malloc((n ? n : 1) * sizeof(int32_t));
    hf->merge_right = malloc((n ? n : 1) * sizeof(int32_t));
    if (!m->key || !m->rank || !m->id || !hf->merge_left || !hf->merge_right)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for %zu merges", n);
    memset(m->key, 0xff, cap * sizeof(*m->key));
    m->mask = (uint32_t)(cap - 1);
    char *buf = NULL;
    size_t cap_buf = 0;
    kvs_status st = KVS_OK;
    for (size_t r = 0; st == KVS_OK && r < n; r++) {
        char path[64];
        snprintf(path, sizeof(path), "model.merges[%zu]", r);
        json_t *e = json_array_get(a, r);
        const char *ls, *rs;
        size_t ll, rl;
        if (json_is_string(e)) {
            ls = json_string_value(e);
            size_t len = json_string_length(e);
            const char *sp = memchr(ls, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - ls))) {
                st = bad(err, KVS_E_FORMAT, TJ, path, "'%.60s' is not two tokens separated by "
                         "one space", ls);
                break;
            }
            ll = (size_t)(sp - ls);
            rs = sp + 1;
            rl = len - ll - 1;
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            ls = json_string_value(json_array_get(e, 0));
            ll = json_string_length(json_array_get(e, 0));
            rs = json_string_value(json_array_get(e, 1));
            rl = json_string_length(json_array_get(e, 1));
        } else {
            st = bad(err, KVS_E_FORMAT, TJ, path, "is %s, expected \"a b\" or [\"a\", \"b\"]",
                     jtype(e));
            break;
        }
        int32_t li = kvs_tok_map_find(&hf->vocab, ls, ll);
        int32_t ri = kvs_tok_map_find(&hf->vocab, rs, rl);
        if (li < 0 || ri < 0) {
            st = bad(err, KVS_E_FORMAT, TJ, path, "token '%.*s' is not in the vocabulary",
                     (int)(li < 0 ? (ll > 60 ? 60 : ll) : (rl > 60 ? 60 : rl)),
                     li < 0 ? ls : rs);
            break;
        }
        if (ll + rl + 1 > cap_buf) {
            cap_buf = 2 * (ll + rl + 1);
            char *b = realloc(buf, cap_buf);
            if (!b) {
                st = kvs_fail(err, KVS_E_NOMEM, "out of memory for merges");
                break;
            }
            buf = b;
        }
        memcpy(buf, ls, ll);
        memcpy(buf + ll, rs, rl);
        int32_t mi = kvs_tok_map_find(&hf->vocab, buf, ll + rl);
        if (mi < 0) {
            st = bad(err, KVS_E_FORMAT, TJ, path, "the merged token '%.*s' is not in the "
                     "vocabulary", (int)(ll + rl > 60 ? 60 : ll + rl), buf);
            break;
        }
        hf->merge_left[r] = li;
        hf->merge_right[r] = ri;
        /* a repeated pair keeps its later rank, as the library's map does */
        uint64_t k = (uint64_t)(uint32_t)li << 32 | (uint32_t)ri;
        uint64_t i = mix(k) & m->mask;
        while (m->key[i] != UINT64_MAX && m->key[i] != k)
            i = (i + 1) & m->mask;
        if (m->key[i] == UINT64_MAX)
            m->n++;
        m->key[i] = k;
        m->rank[i] = (uint32_t)r;
        m->id[i] = mi;
    }
    free(buf);
    hf->n_merges = n;
    /* SentencePiece-style scores for a GGUF "llama" export: a piece made by
     * merge r scores -r (the earliest merge wins), others rank after */
    for (int32_t i = 0; i < t->n_vocab; i++)
        t->score[i] = -(float)(n + (size_t)i);
    for (size_t r = n; st == KVS_OK && r-- > 0;) {
        uint32_t rank;
        int32_t id = kvs_tok_hf_merge_find(m, hf->merge_left[r], hf->merge_right[r], &rank);
        if (id >= 0)
            t->score[id] = -(float)r;
    }
    return st;
}

/* ---- post-processor --------------------------------------------------------- */

static kvs_status push_ids(int32_t **v, size_t *n, const int32_t *ids, size_t k, kvs_error *err)
{
    int32_t *p = realloc(*v, (*n + k + 1) * sizeof(*p));
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the post-processor");
    if (k)
        memcpy(p + *n, ids, k * sizeof(*p));
    *v = p;
    *n += k;
    return KVS_OK;
}

/* A [token, id] pair of RobertaProcessing / BertProcessing. */
static kvs_status pair_id(const json_t *j, const char *key, int32_t n_vocab, int32_t *id,
                          const char *path, kvs_error *err)
{
    json_t *p = json_object_get(j, key);
    *id = json_is_array(p) && json_array_size(p) == 2 ? token_id(json_array_get(p, 1)) : -1;
    if (*id < 0 || *id >= n_vocab)
        return bad(err, KVS_E_FORMAT, TJ, path, "'%s' must be [token, id] with an id in the "
                   "vocabulary", key);
    return KVS_OK;
}

static kvs_status parse_template(loader *L, const json_t *j, const char *path, kvs_error *err)
{
    kvs_tok_hf *hf = L->hf;
    json_t *single = json_object_get(j, "single"), *sp = json_object_get(j, "special_tokens");
    if (sp && !json_is_object(sp))
        return bad(err, KVS_E_FORMAT, TJ, path, "'special_tokens' is %s", jtype(sp));
    if (!json_is_array(single))
        return bad(err, KVS_E_UNSUPPORTED, TJ, path, "TemplateProcessing needs a 'single' array");
    bool seen_a = false;
    int32_t *pre = NULL, *suf = NULL;
    size_t n_pre = 0, n_suf = 0;
    kvs_status st = KVS_OK;
    for (size_t i = 0; st == KVS_OK && i < json_array_size(single); i++) {
        json_t *it = json_array_get(single, i);
        json_t *tok = json_object_get(it, "SpecialToken"), *seq = json_object_get(it, "Sequence");
        if (json_is_object(seq)) {
            const char *sid = json_string_value(json_object_get(seq, "id"));
            if (!sid || strcmp(sid, "A") != 0 || seen_a) {
                st = bad(err, KVS_E_UNSUPPORTED, TJ, path, "the single template must hold "
                         "sequence A once");
                break;
            }
            seen_a = true;
            continue;
        }
        const char *name = json_is_object(tok) ? json_string_value(json_object_get(tok, "id"))
                                               : NULL;
        json_t *def = name && sp ? json_object_get(sp, name) : NULL;
        json_t *ids = json_object_get(def, "ids");
        if (!json_is_array(ids)) {
            st = bad(err, KVS_E_FORMAT, TJ, path, "single[%zu] names no special token with "
                     "'ids' in special_tokens", i);
            break;
        }
        for (size_t k = 0; st == KVS_OK && k < json_array_size(ids); k++) {
            int32_t id = token_id(json_array_get(ids, k));
            if (id < 0 || id >= L->t->n_vocab)
                st = bad(err, KVS_E_FORMAT, TJ, path, "special token '%.40s' has an id outside "
                         "the vocabulary", name);
            else
                st = seen_a ? push_ids(&suf, &n_suf, &id, 1, err)
                            : push_ids(&pre, &n_pre, &id, 1, err);
        }
    }
    if (st == KVS_OK && !seen_a)
        st = bad(err, KVS_E_UNSUPPORTED, TJ, path, "the single template has no $A");
    /* an outer processor wraps an inner one */
    if (st == KVS_OK)
        st = push_ids(&pre, &n_pre, hf->prefix, hf->n_prefix, err);
    if (st == KVS_OK)
        st = push_ids(&hf->suffix, &hf->n_suffix, suf, n_suf, err);
    if (st == KVS_OK) {
        free(hf->prefix);
        hf->prefix = pre;
        hf->n_prefix = n_pre;
        pre = NULL;
    }
    free(pre);
    free(suf);
    return st;
}

static kvs_status parse_post(loader *L, const json_t *j, const char *path, int depth,
                             kvs_error *err);
static kvs_status post_step(void *ctx, const json_t *j, const char *path, int depth,
                             kvs_error *err)
{
    return parse_post(ctx, j, path, depth, err);
}

static kvs_status parse_post(loader *L, const json_t *j, const char *path, int depth,
                             kvs_error *err)
{
    const char *type;
    kvs_status st =
        typed_step(j, path, depth, "post-processors", "processors", post_step, L, &type, err);
    if (st != KVS_OK || !type)
        return st;
    if (strcmp(type, "ByteLevel") == 0)
        return KVS_OK; /* offsets only */
    if (strcmp(type, "TemplateProcessing") == 0)
        return parse_template(L, j, path, err);
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        int32_t cls, sep;
        st = pair_id(j, "cls", L->t->n_vocab, &cls, path, err);
        if (st == KVS_OK)
            st = pair_id(j, "sep", L->t->n_vocab, &sep, path, err);
        if (st == KVS_OK) {
            int32_t *pre = NULL;
            size_t n_pre = 0;
            st = push_ids(&pre, &n_pre, &cls, 1, err);
            if (st == KVS_OK)
                st = push_ids(&pre, &n_pre, L->hf->prefix, L->hf->n_prefix, err);
            if (st == KVS_OK) {
                free(L->hf->prefix);
                L->hf->prefix = pre;
                L->hf->n_prefix = n_pre;
                st = push_ids(&L->hf->suffix, &L->hf->n_suffix, &sep, 1, err);
            } else {
                free(pre);
            }
        }
        return st;
    }
    return bad(err, KVS_E_UNSUPPORTED, TJ, path,
               "post-processor '%s' is not supported (kvserve runs TemplateProcessing, "
               "RobertaProcessing, BertProcessing, ByteLevel and Sequence)", type);
}

/* ---- the decoder, token by token ---------------------------------------------- */

/* Replace every `from` in s[0, *n) by `to` (out has room for the worst case). */
static size_t replace_all(const char *s, size_t n, const char *from, size_t fl, const char *to,
                          size_t tl, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (fl && i + fl <= n && memcmp(s + i, from, fl) == 0) {
            memcpy(out + k, to, tl);
            k += tl;
            i += fl;
        } else {
            out[k++] = s[i++];
        }
    }
    return k;
}

static kvs_status build_decoder(loader *L, kvs_error *err)
{
    kvs_tokenizer *t = L->t;
    hf_dec *d = L->dec.v;
    size_t nd = L->dec.n, fuse = nd;
    for (size_t i = 0; i < nd; i++)
        if (d[i].kind == HD_FUSE && fuse == nd)
            fuse = i;
    /* after Fuse only a Strip of leading characters is supported */
    for (size_t i = fuse + 1; i < nd; i++) {
        if (d[i].kind == HD_FUSE)
            continue;
        if (d[i].kind != HD_STRIP || d[i].stop != 0 || d[i].content != ' ' || d[i].start > 1)
            return kvs_fail(err, KVS_E_UNSUPPORTED, "%s: decoder: after Fuse kvserve only runs "
                            "Strip(' ', start <= 1, stop 0)", TJ);
        if (d[i].start == 1)
            t->strip_space = true;
    }
    int16_t inv[324];
    for (int i = 0; i < 324; i++)
        inv[i] = -1;
    for (int b = 0; b < 256; b++)
        inv[t->byte_cpt[b]] = (int16_t)b;
    /* growth bound: each step multiplies the length by at most `grow` */
    size_t grow = 1;
    for (size_t i = 0; i < fuse; i++)
        if (d[i].kind == HD_REPLACE && d[i].to_len > d[i].from_len)
            grow *= (d[i].to_len + d[i].from_len - 1) / d[i].from_len;
    if (grow > 64)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "%s: decoder: Replace steps grow tokens %zux",
                        TJ, grow);
    size_t total = 1;
    for (int32_t i = 0; i < t->n_vocab; i++)
        total += (size_t)t->piece[i].len * grow;
    size_t cap_tmp = (size_t)t->max_piece_len * grow + 8;
    char *a = malloc(cap_tmp), *b = malloc(cap_tmp);
    t->dec_pool = malloc(total);
    t->dec = malloc((size_t)t->n_vocab * sizeof(*t->dec));
    if (!a || !b || !t->dec_pool || !t->dec) {
        free(a);
        free(b);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the token decoder");
    }
    size_t off = 0, maxlen = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->pool + t->piece[id].off;
        size_t n = t->piece[id].len;
        memcpy(a, s, n);
        uint8_t ty = t->type[id];
        /* unused ids are empty; added tokens go through the decoder too */
        if (ty == KVS_TT_UNUSED)
            n = 0;
        for (size_t k = 0; k < fuse && n; k++) {
            size_t m = 0;
            switch (d[k].kind) {
            case HD_BYTELEVEL: {
                bool all = true;
                for (size_t pos = 0; pos < n && all;) {
                    uint32_t cp = kvs_utf8_decode(a, n, &pos);
                    if (cp < 324 && inv[cp] >= 0)
                        b[m++] = (char)inv[cp];
                    else
                        all = false;
                }
                if (!all)
                    continue; /* the token's own bytes, as the library does */
                break;
            }
            case HD_BYTEFALLBACK: {
                int v = kvs_tok_byte_piece(a, n);
                if (v < 0)
                    continue;
                b[m++] = (char)v;
                break;
            }
            case HD_REPLACE:
                m = replace_all(a, n, d[k].from, d[k].from_len, d[k].to, d[k].to_len, b);
                break;
            case HD_METASPACE:
                m = replace_all(a, n, d[k].repl, d[k].repl_len, " ", 1, b);
                if (d[k].scheme != HS_NEVER)
                    t->strip_space = true;
                break;
            case HD_STRIP: { /* per token before Fuse */
                size_t st = 0, en = n;
                char c[4];
                size_t cl = kvs_utf8_encode(d[k].content, c);
                for (int64_t r = 0; r < d[k].start && st + cl <= en &&
                                    memcmp(a + st, c, cl) == 0; r++)
                    st += cl;
                for (int64_t r = 0; r < d[k].stop && en >= st + cl &&
                                    memcmp(a + en - cl, c, cl) == 0; r++)
                    en -= cl;
                m = en - st;
                memcpy(b, a + st, m);
                break;
            }
            case HD_FUSE: break;
            }
            memcpy(a, b, m);
            n = m;
        }
        memcpy(t->dec_pool + off, a, n);
        t->dec[id] = (kvs_tok_span){.off = (uint32_t)off, .len = (uint32_t)n};
        off += n;
        if (n > maxlen)
            maxlen = n;
    }
    free(a);
    free(b);
    if (maxlen > t->max_piece_len)
        t->max_piece_len = (uint32_t)maxlen;
    return KVS_OK;
}

/* ---- tokenizer_config.json / generation_config.json ---------------------------- */

/* bos_token etc.: a string or {"content": ...}; -1 when absent/null. */
static kvs_status config_token(loader *L, const char *key, int32_t *id, kvs_error *err)
{
    json_t *v = L->cfg ? json_object_get(L->cfg, key) : NULL;
    if (!v || json_is_null(v))
        return KVS_OK;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v))
        return bad(err, KVS_E_FORMAT, TC, key, "expected a string or {\"content\": string}");
    int32_t x = kvs_tok_find_piece(L->t, json_string_value(v));
    if (x < 0)
        return bad(err, KVS_E_FORMAT, TC, key, "'%.60s' is not a token of %s",
                   json_string_value(v), TJ);
    *id = x;
    return KVS_OK;
}

static void mark_generation_eos(kvs_tokenizer *t, const char *dir)
{
    if (!dir)
        return;
    char path[4096];
    snprintf(path, sizeof(path), "%s/generation_config.json", dir);
    json_t *g = json_load_file(path, 0, NULL);
    json_t *e = json_object_get(g, "eos_token_id");
    if (json_is_integer(e) && json_integer_value(e) >= 0 && json_integer_value(e) < t->n_vocab)
        t->eog[json_integer_value(e)] = 1;
    for (size_t i = 0; json_is_array(e) && i < json_array_size(e); i++) {
        json_t *x = json_array_get(e, i);
        if (json_is_integer(x) && json_integer_value(x) >= 0 && json_integer_value(x) < t->n_vocab)
            t->eog[json_integer_value(x)] = 1;
    }
    json_decref(g);
}

/* ---- added-token index and the pipeline's loose ends --------------------------- */

static int cmp_added(const void *x, const void *y)
{
    const hf_added *a = x, *b = y;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* llama.cpp's name for the pre-tokenizer: ByteLevel with GPT-2's regex, or
 * Split(Regex, Isolated) steps then ByteLevel without a regex whose
 * regexes are one of llama.cpp's lists (kvs_tok_hf_pre_regexes). */
static const char *known_pre(const kvs_tok_hf *hf, const json_t *pre_json)
{
    if (hf->n_pre == 1 && hf->pre[0].kind == HP_BYTELEVEL && hf->pre[0].use_regex &&
        !hf->pre[0].add_prefix_space)
        return "gpt-2";
    if (hf->n_pre < 2 || hf->pre[hf->n_pre - 1].kind != HP_BYTELEVEL ||
        hf->pre[hf->n_pre - 1].use_regex || hf->pre[hf->n_pre - 1].add_prefix_space)
        return NULL;
    json_t *steps = json_object_get(pre_json, "pretokenizers");
    if (json_array_size(steps) != hf->n_pre)
        return NULL; /* nested sequences: not a list llama.cpp knows */
    for (size_t i = 0; i + 1 < hf->n_pre; i++)
        if (hf->pre[i].kind != HP_SPLIT || !hf->pre[i].pat.rx || hf->pre[i].invert ||
            hf->pre[i].behavior != HB_ISOLATED)
            return NULL;
    for (int p = KVS_PRE_DEFAULT; p <= KVS_PRE_DEEPSEEK_CODER; p++) {
        const char *name;
        const char *const *rx = kvs_tok_hf_pre_regexes((enum kvs_tok_pre)p, &name);
        size_t k = 0;
        while (rx[k] && k + 1 < hf->n_pre) {
            json_t *r = json_object_get(json_object_get(json_array_get(steps, k), "pattern"),
                                        "Regex");
            if (!json_is_string(r) || strcmp(json_string_value(r), rx[k]) != 0)
                break;
            k++;
        }
        if (!rx[k] && k + 1 == hf->n_pre)
            return name;
    }
    return NULL;
}

static kvs_status finish(loader *L, const char *dir, kvs_error *err)
{
    kvs_tokenizer *t = L->t;
    kvs_tok_hf *hf = L->hf;
    /* byte-fallback pieces, unk */
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        hf->byte_id[b] = kvs_tok_map_find(&hf->vocab, hex, 6);
        t->byte_tok[b] = hf->byte_id[b];
        if (hf->byte_fallback && hf->byte_id[b] >= 0 && t->type[hf->byte_id[b]] == KVS_TT_NORMAL)
            t->type[hf->byte_id[b]] = KVS_TT_BYTE;
    }
    if (hf->unk >= 0 && t->type[hf->unk] == KVS_TT_NORMAL)
        t->type[hf->unk] = KVS_TT_UNKNOWN;
    t->unk = hf->unk;

    /* added tokens, longest first; the special-token list for accessors */
    hf_added *ad = L->added.v;
    for (size_t i = 0; i < L->added.n; i++)
        ad[i].first = (uint8_t)t->pool[ad[i].off];
    if (L->added.n)
        qsort(ad, L->added.n, sizeof(*ad), cmp_added);
    for (int b = 0, k = 0; b <= 256; b++) {
        while ((size_t)k < L->added.n && (uint8_t)t->pool[ad[k].off] < b)
            k++;
        hf->added_first[b] = (uint32_t)k;
    }
    hf->added = L->added.v;
    hf->n_added = L->added.n;
    L->added.v = NULL;
    t->special = malloc((hf->n_added ? hf->n_added : 1) * sizeof(*t->special));
    if (!t->special)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for added tokens");
    for (size_t i = 0; i < hf->n_added; i++)
        t->special[i] = hf->added[i].id;
    t->n_special = hf->n_added;

    /* special ids: the config names them, else the template's first token */
    kvs_status st = config_token(L, "bos_token", &t->bos, err);
    if (st == KVS_OK)
        st = config_token(L, "eos_token", &t->eos, err);
    if (st == KVS_OK)
        st = config_token(L, "pad_token", &t->pad, err);
    if (st != KVS_OK)
        return st;
    if (t->bos < 0 && hf->n_prefix > 0)
        t->bos = hf->prefix[0];
    if (t->eos < 0 && hf->n_suffix > 0)
        t->eos = hf->suffix[hf->n_suffix - 1];
    /* add_bos_token/add_eos_token rebuild the template as transformers'
     * Llama/Gemma/CodeLlama tokenizer classes do (update_post_processor:
     * [bos] $A [eos]); other classes keep tokenizer.json's post-processor */
    bool add_bos = hf->n_prefix > 0, add_eos = hf->n_suffix > 0, v;
    const char *cls = L->cfg ? json_string_value(json_object_get(L->cfg, "tokenizer_class")) : NULL;
    bool rebuild = cls && (strncmp(cls, "LlamaTokenizer", 14) == 0 ||
                           strncmp(cls, "GemmaTokenizer", 14) == 0 ||
                           strncmp(cls, "CodeLlamaTokenizer", 18) == 0);
    json_t *ab = rebuild ? json_object_get(L->cfg, "add_bos_token") : NULL;
    json_t *ae = rebuild ? json_object_get(L->cfg, "add_eos_token") : NULL;
    if (json_is_boolean(ab) && (v = json_is_true(ab)) != add_bos) {
        free(hf->prefix);
        hf->prefix = NULL;
        hf->n_prefix = 0;
        if (v && t->bos >= 0)
            st = push_ids(&hf->prefix, &hf->n_prefix, &t->bos, 1, err);
    }
    if (st == KVS_OK && json_is_boolean(ae) && (v = json_is_true(ae)) != add_eos) {
        free(hf->suffix);
        hf->suffix = NULL;
        hf->n_suffix = 0;
        if (v && t->eos >= 0)
            st = push_ids(&hf->suffix, &hf->n_suffix, &t->eos, 1, err);
    }
    if (st != KVS_OK)
        return st;
    /* encode(add_bos = true) adds the whole template, suffix included */
    t->add_bos = hf->n_prefix + hf->n_suffix > 0;
    if (t->add_bos && t->bos < 0)
        t->bos = hf->n_prefix ? hf->prefix[0] : hf->suffix[0];
    t->add_eos = false;
    t->add_space_prefix = false;
    for (size_t i = 0; i < hf->n_norm; i++)
        if (hf->norm[i].kind == HN_PREPEND)
            t->add_space_prefix = true;
    for (size_t i = 0; i < hf->n_pre; i++)
        if (hf->pre[i].kind == HP_METASPACE && hf->pre[i].scheme != HS_NEVER)
            t->add_space_prefix = true;

    kvs_tok_mark_eog(t);
    mark_generation_eos(t, dir);

    /* chat_template: a string, or a list of {"name", "template"} (the "default" one) */
    json_t *ct = L->cfg ? json_object_get(L->cfg, "chat_template") : NULL;
    if (json_is_array(ct)) {
        json_t *pick = NULL;
        for (size_t i = 0; i < json_array_size(ct); i++) {
            json_t *e = json_array_get(ct, i);
            const char *nm = json_string_value(json_object_get(e, "name"));
            if (nm && strcmp(nm, "default") == 0)
                pick = json_object_get(e, "template");
        }
        ct = pick;
    }
    if (ct && !json_is_null(ct) && !json_is_string(ct))
        return bad(err, KVS_E_FORMAT, TC, "chat_template",
                   "expected a string or a list of {\"name\", \"template\"} with a \"default\"");
    if (json_is_string(ct)) {
        hf->chat_template = dupn(json_string_value(ct), json_string_length(ct));
        if (!hf->chat_template)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory for the chat template");
    }

    bool bytelevel = false;
    for (size_t i = 0; i < hf->n_pre; i++)
        if (hf->pre[i].kind == HP_BYTELEVEL) {
            bytelevel = true;
            if (hf->pre[i].use_regex && !hf->bytelevel_rx)
                st = kvs_tok_rx_compile(&hf->bytelevel_rx, KVS_HF_GPT2_REGEX,
                                        sizeof(KVS_HF_GPT2_REGEX) - 1, err);
        }
    hf->spm_like = !bytelevel && hf->byte_fallback;
    hf->gguf_pre = bytelevel ? known_pre(hf, json_object_get(L->root, "pre_tokenizer")) : NULL;

    /* merges as "a b" strings (for the GGUF export and kvs_tok_piece users) */
    size_t total = 1;
    for (size_t r = 0; r < hf->n_merges; r++)
        total += (size_t)t->piece[hf->merge_left[r]].len + t->piece[hf->merge_right[r]].len + 2;
    if (st == KVS_OK && total > UINT32_MAX)
        st = kvs_fail(err, KVS_E_FORMAT, "%s: merges hold more than 4 GiB of text", TJ);
    if (st == KVS_OK) {
        t->merge_pool = malloc(total);
        t->merge = malloc((hf->n_merges ? hf->n_merges : 1) * sizeof(*t->merge));
        if (!t->merge_pool || !t->merge)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory for merges");
        size_t off = 0;
        for (size_t r = 0; r < hf->n_merges; r++) {
            kvs_tok_span l = hf->model_key[hf->merge_left[r]];
            kvs_tok_span rr = hf->model_key[hf->merge_right[r]];
            t->merge[r] = (kvs_tok_span){(uint32_t)off, l.len + 1 + rr.len};
            memcpy(t->merge_pool + off, t->pool + l.off, l.len);
            t->merge_pool[off + l.len] = ' ';
            memcpy(t->merge_pool + off + l.len + 1, t->pool + rr.off, rr.len);
            off += l.len + 1 + rr.len;
            t->merge_pool[off++] = 0;
        }
        t->n_merges = hf->n_merges;
    }
    return st;
}

static kvs_status parse_model(loader *L, kvs_error *err)
{
    kvs_tok_hf *hf = L->hf;
    json_t *model = json_object_get(L->root, "model");
    if (!json_is_object(model))
        return bad(err, KVS_E_FORMAT, TJ, "model", "is %s, expected an object",
                   model ? jtype(model) : "missing");
    const char *type;
    kvs_status st = get_str(model, "type", &type, NULL, TJ, "model", err);
    if (st != KVS_OK)
        return st;
    if (type && strcmp(type, "BPE") != 0)
        return bad(err, KVS_E_UNSUPPORTED, TJ, "model.type",
                   "model '%s' is not supported (kvserve runs BPE tokenizers)", type);
    if (!type && !json_object_get(model, "merges"))
        return bad(err, KVS_E_UNSUPPORTED, TJ, "model", "no 'type' and no 'merges': not BPE");
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return bad(err, KVS_E_UNSUPPORTED, TJ, "model.dropout",
                   "BPE dropout is random; kvserve's tokenizer is deterministic");
    st = get_bool(model, "byte_fallback", false, &hf->byte_fallback, TJ, "model", err);
    if (st == KVS_OK)
        st = get_bool(model, "fuse_unk", false, &hf->fuse_unk, TJ, "model", err);
    if (st == KVS_OK)
        st = get_bool(model, "ignore_merges", false, &hf->ignore_merges, TJ, "model", err);
    const char *s;
    size_t len;
    if (st == KVS_OK)
        st = get_str(model, "continuing_subword_prefix", &s, &len, TJ, "model", err);
    if (st == KVS_OK && s && len) {
        hf->cont_prefix = dupn(s, len);
        hf->cont_len = len;
    }
    if (st == KVS_OK)
        st = get_str(model, "end_of_word_suffix", &s, &len, TJ, "model", err);
    if (st == KVS_OK && s && len) {
        hf->eow_suffix = dupn(s, len);
        hf->eow_len = len;
    }
    if (st == KVS_OK)
        st = parse_added(L, err);
    if (st == KVS_OK)
        st = parse_vocab(L, model, err);
    if (st == KVS_OK)
        st = get_str(model, "unk_token", &s, &len, TJ, "model", err);
    hf->unk = -1;
    if (st == KVS_OK && s) {
        hf->unk = kvs_tok_map_find(&hf->vocab, s, len);
        if (hf->unk < 0)
            st = bad(err, KVS_E_FORMAT, TJ, "model.unk_token", "'%.60s' is not in the "
                     "vocabulary", s);
    }
    if (st == KVS_OK)
        st = parse_merges(L, model, err);
    return st;
}

static kvs_status load(kvs_tokenizer **out, json_t *root, json_t *cfg, const char *dir,
                       kvs_error *err)
{
    loader L = {.root = root, .cfg = cfg};
    L.added.elem = sizeof(hf_added);
    L.dec.elem = sizeof(hf_dec);
    vec norm = {.elem = sizeof(hf_norm)}, pre = {.elem = sizeof(hf_pre)};
    kvs_status st = KVS_OK;
    L.t = calloc(1, sizeof(*L.t));
    L.hf = calloc(1, sizeof(*L.hf));
    if (!L.t || !L.hf) {
        free(L.t);
        free(L.hf);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for a tokenizer");
    }
    kvs_tokenizer *t = L.t;
    t->kind = KVS_TOK_HF;
    t->pre = KVS_PRE_NONE;
    t->hf = L.hf;
    t->bos = t->eos = t->unk = t->eot = t->eom = t->pad = -1;
    kvs_tok_bpe_byte_map(t->byte_cpt);
    if (!json_is_object(root))
        st = kvs_fail(err, KVS_E_FORMAT, "%s: the document is not a JSON object", TJ);
    if (st == KVS_OK && cfg && !json_is_object(cfg))
        st = kvs_fail(err, KVS_E_FORMAT, "%s: the document is not a JSON object", TC);
    if (st == KVS_OK) {
        json_t *tr = json_object_get(root, "truncation"), *pd = json_object_get(root, "padding");
        (void)tr;
        (void)pd; /* batch options: nothing to do for serving */
        st = parse_model(&L, err);
    }
    if (st == KVS_OK)
        st = parse_normalizer(json_object_get(root, "normalizer"), &norm, "normalizer", 0, err);
    t->hf->norm = norm.v;
    t->hf->n_norm = norm.n;
    if (st == KVS_OK)
        st = parse_pretok(json_object_get(root, "pre_tokenizer"), &pre, "pre_tokenizer", 0, err);
    t->hf->pre = pre.v;
    t->hf->n_pre = pre.n;
    if (st == KVS_OK)
        st = parse_post(&L, json_object_get(root, "post_processor"), "post_processor", 0, err);
    if (st == KVS_OK)
        st = parse_decoder(json_object_get(root, "decoder"), &L.dec, "decoder", 0, err);
    if (st == KVS_OK)
        st = finish(&L, dir, err);
    if (st == KVS_OK)
        st = build_decoder(&L, err);
    free(L.text);
    free(L.added.v);
    free(L.dec.v);
    if (st != KVS_OK) {
        kvs_tok_free(t);
        return st;
    }
    *out = t;
    return KVS_OK;
}

kvs_status kvs_tok_load_hf_json(kvs_tokenizer **out, const char *json, size_t len,
                                const char *config, size_t config_len, kvs_error *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return kvs_fail(err, KVS_E_FORMAT, "%s: bad JSON at line %d column %d: %s", TJ, je.line,
                        je.column, je.text);
    json_t *cfg = NULL;
    if (config) {
        cfg = json_loadb(config, config_len, JSON_DECODE_INT_AS_REAL, &je);
        if (!cfg) {
            json_decref(root);
            return kvs_fail(err, KVS_E_FORMAT, "%s: bad JSON at line %d column %d: %s", TC,
                            je.line, je.column, je.text);
        }
    }
    kvs_status st = load(out, root, cfg, NULL, err);
    json_decref(root);
    json_decref(cfg);
    return st;
}

kvs_status kvs_tok_load_hf(kvs_tokenizer **out, const char *dir, kvs_error *err)
{
    *out = NULL;
    char path[4096];
    json_error_t je;
    snprintf(path, sizeof(path), "%s/%s", dir, TJ);
    FILE *f = fopen(path, "rb");
    if (!f)
        return kvs_fail(err, KVS_E_NOT_FOUND, "%s: cannot open (%s is not a Hugging Face "
                        "model directory with a tokenizer)", path, dir);
    fclose(f);
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return kvs_fail(err, KVS_E_FORMAT, "%s: bad JSON at line %d column %d: %s", path, je.line,
                        je.column, je.text);
    snprintf(path, sizeof(path), "%s/%s", dir, TC);
    json_t *cfg = NULL;
    f = fopen(path, "rb");
    if (f) {
        fclose(f);
        cfg = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je);
        if (!cfg) {
            json_decref(root);
            return kvs_fail(err, KVS_E_FORMAT, "%s: bad JSON at line %d column %d: %s", path,
                            je.line, je.column, je.text);
        }
    }
    kvs_status st = load(out, root, cfg, dir, err);
    json_decref(root);
    json_decref(cfg);
    if (st != KVS_OK)
        kvs_fail_wrap(err, "loading the tokenizer of '%s'", dir);
    return st;
}

void kvs_tok_hf_free(kvs_tok_hf *hf)
{
    if (!hf)
        return;
    for (size_t i = 0; i < hf->n_norm; i++) {
        free(hf->norm[i].text);
        free_pattern(&hf->norm[i].pat);
    }
    free(hf->norm);
    for (size_t i = 0; i < hf->n_pre; i++)
        free_pattern(&hf->pre[i].pat);
    free(hf->pre);
    kvs_tok_rx_free(hf->bytelevel_rx);
    free(hf->model_key);
    kvs_tok_map_free(&hf->vocab);
    free(hf->merges.key);
    free(hf->merges.rank);
    free(hf->merges.id);
    free(hf->merge_left);
    free(hf->merge_right);
    free(hf->cont_prefix);
    free(hf->eow_suffix);
    free(hf->added);
    free(hf->prefix);
    free(hf->suffix);
    free(hf->chat_template);
    free(hf);
}
