/*
 * tokenizer.c - building a kvs_tokenizer from `tokenizer.ggml.*` metadata
 * (validated: array types and lengths, token types, special ids), and the
 * simple accessors.  Defaults follow llama.cpp's llama_vocab::load.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_hf.h"
#include "tokenizer/tok_internal.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"

/* Pre-tokenizer names (tokenizer.ggml.pre) and the regex set each uses. */
static const struct {
    const char *name;
    enum kvs_tok_pre pre;
    bool ignore_merges, add_bos;
} PRE_NAMES[] = {
    {"default", KVS_PRE_DEFAULT, false, false},
    {"llama3", KVS_PRE_LLAMA3, true, true},
    {"llama-v3", KVS_PRE_LLAMA3, true, true},
    {"llama-bpe", KVS_PRE_LLAMA3, true, true},
    {"falcon3", KVS_PRE_LLAMA3, true, true},
    {"pixtral", KVS_PRE_LLAMA3, true, true},
    {"dbrx", KVS_PRE_LLAMA3, false, false},
    {"smaug-bpe", KVS_PRE_LLAMA3, false, false},
    {"deepseek-coder", KVS_PRE_DEEPSEEK_CODER, false, false},
    {"falcon", KVS_PRE_FALCON, false, false},
    {"gpt-2", KVS_PRE_GPT2, false, false},
    {"mpt", KVS_PRE_GPT2, false, false},
    {"olmo", KVS_PRE_GPT2, false, false},
    {"jais", KVS_PRE_GPT2, false, false},
    {"phi-2", KVS_PRE_GPT2, false, false},
    {"roberta-bpe", KVS_PRE_GPT2, false, false},
    {"starcoder", KVS_PRE_STARCODER, false, false},
    {"refact", KVS_PRE_STARCODER, false, false},
    {"command-r", KVS_PRE_STARCODER, false, false},
    {"smollm", KVS_PRE_STARCODER, false, false},
    {"codeshell", KVS_PRE_STARCODER, false, false},
    {"exaone", KVS_PRE_STARCODER, false, false},
    {"minerva-7b", KVS_PRE_STARCODER, false, false},
    {"qwen2", KVS_PRE_QWEN2, false, false},
    {"deepseek-r1-qwen", KVS_PRE_QWEN2, false, false},
    {"stablelm2", KVS_PRE_QWEN2, false, false},
    {"megrez", KVS_PRE_QWEN2, false, false},
};

/* Token texts that end generation (llama.cpp's lists): the first found of
 * the 't' ones is EOT and of the 'm' ones EOM unless the metadata names
 * them. */
static const struct {
    const char *text;
    char role;
} EOG_TEXTS[] = {
    {"<|eot_id|>", 't'}, {"<|im_end|>", 't'}, {"<|end|>", 't'}, {"<end_of_turn>", 't'},
    {"<|endoftext|>", 't'}, {"<|end_of_text|>", 't'}, {"<EOT>", 't'}, {"_<EOT>", 't'},
    {"<end_of_utterance>", 't'},
    {("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"), 't'},
    {"<|eom_id|>", 'm'}, {"<|return|>", 0}, {"<|call|>", 0},
};

void kvs_tok_free(kvs_tokenizer *t)
{
    if (!t)
        return;
    kvs_tok_hf_free(t->hf);
    kvs_tok_map_free(&t->piece_map);
    kvs_tok_map_free(&t->merge_map);
    free(t->pool);
    free(t->piece);
    free(t->score);
    free(t->type);
    free(t->eog);
    free(t->dec_pool);
    free(t->dec);
    free(t->merge_pool);
    free(t->merge);
    free(t->special);
    free(t);
}

/* Copy the STRING array `key` into a pool: spans[i] indexes string i. */
static kvs_status load_strings(const kvs_gguf *g, const char *key, char **pool,
                               kvs_tok_span **spans, size_t *n_out, kvs_error *err)
{
    kvs_gguf_type et;
    uint64_t n;
    kvs_status st = kvs_gguf_get_arr(g, key, &et, &n, err);
    if (st != KVS_OK)
        return st;
    if (et != KVS_GGUF_STRING)
        return kvs_fail(err, KVS_E_FORMAT, "'%s' is an array of %s, expected strings", key,
                        kvs_gguf_type_name(et));
    if (n > INT32_MAX - 1)
        return kvs_fail(err, KVS_E_FORMAT, "'%s' has %llu entries (at most %d supported)", key,
                        (unsigned long long)n, INT32_MAX - 1);
    size_t ki = (size_t)kvs_gguf_find_key(g, key);
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = 0;
        if (!kvs_gguf_arr_str(g, ki, i, &len))
            return kvs_fail(err, KVS_E_FORMAT, "'%s'[%llu] is missing", key,
                            (unsigned long long)i);
        total += (uint64_t)len + 1;
        if (total > UINT32_MAX)
            return kvs_fail(err, KVS_E_FORMAT, "'%s' holds more than 4 GiB of text", key);
    }
    *spans = malloc((n ? n : 1) * sizeof(**spans));
    *pool = malloc(total ? total : 1);
    if (!*spans || !*pool)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for '%s' (%llu strings)", key,
                        (unsigned long long)n);
    uint32_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *s = kvs_gguf_arr_str(g, ki, i, &len);
        memcpy(*pool + off, s, len);
        (*pool)[off + len] = 0;
        (*spans)[i] = (kvs_tok_span){.off = off, .len = (uint32_t)len};
        off += (uint32_t)len + 1;
    }
    *n_out = (size_t)n;
    return KVS_OK;
}

/* A numeric array parallel to the tokens: absent is fine (*present = false). */
static kvs_status find_parallel(const kvs_gguf *g, const char *key, int32_t n_vocab,
                                bool want_int, size_t *index, bool *present, kvs_error *err)
{
    *present = false;
    int64_t ki = kvs_gguf_find_key(g, key);
    if (ki < 0)
        return KVS_OK;
    kvs_gguf_type et;
    uint64_t n;
    kvs_status st = kvs_gguf_get_arr(g, key, &et, &n, err);
    if (st != KVS_OK)
        return st;
    bool is_int = et == KVS_GGUF_INT8 || et == KVS_GGUF_UINT8 || et == KVS_GGUF_INT16 ||
                  et == KVS_GGUF_UINT16 || et == KVS_GGUF_INT32 || et == KVS_GGUF_UINT32 ||
                  et == KVS_GGUF_INT64 || et == KVS_GGUF_UINT64;
    bool is_float = et == KVS_GGUF_FLOAT32 || et == KVS_GGUF_FLOAT64;
    if (want_int ? !is_int : !(is_float || is_int))
        return kvs_fail(err, KVS_E_FORMAT, "'%s' is an array of %s, expected %s", key,
                        kvs_gguf_type_name(et), want_int ? "integers" : "numbers");
    if (n != (uint64_t)n_vocab)
        return kvs_fail(err, KVS_E_FORMAT, "'%s' has %llu entries but '%s' has %d", key,
                        (unsigned long long)n, KEY_TOKENS, n_vocab);
    *index = (size_t)ki;
    *present = true;
    return KVS_OK;
}

static kvs_status load_vocab(kvs_tokenizer *t, const kvs_gguf *g, kvs_error *err)
{
    size_t n = 0;
    kvs_status st = load_strings(g, KEY_TOKENS, &t->pool, &t->piece, &n, err);
    if (st != KVS_OK)
        return st;
    if (n == 0)
        return kvs_fail(err, KVS_E_FORMAT, "'%s' is empty", KEY_TOKENS);
    t->n_vocab = (int32_t)n;
    t->score = calloc(n, sizeof(*t->score));
    t->type = malloc(n);
    t->eog = calloc(n, 1);
    if (!t->score || !t->type || !t->eog)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for a vocabulary of %zu tokens", n);
    memset(t->type, KVS_TT_NORMAL, n);

    size_t ki;
    bool present;
    st = find_parallel(g, KEY_SCORES, t->n_vocab, false, &ki, &present, err);
    for (size_t i = 0; st == KVS_OK && present && i < n; i++) {
        double s = kvs_gguf_arr_num(g, ki, i);
        t->score[i] = isnan(s) ? -INFINITY : (float)s;
    }
    if (st == KVS_OK)
        st = find_parallel(g, KEY_TYPES, t->n_vocab, true, &ki, &present, err);
    for (size_t i = 0; st == KVS_OK && present && i < n; i++) {
        double y = kvs_gguf_arr_num(g, ki, i);
        if (!(y >= KVS_TT_UNDEFINED && y <= KVS_TT_BYTE))
            return kvs_fail(err, KVS_E_FORMAT,
                            "'%s'[%zu] = %g is not a token type (0..6)", KEY_TYPES, i, y);
        t->type[i] = (uint8_t)y;
    }
    for (size_t i = 0; i < n; i++)
        if (t->piece[i].len > t->max_piece_len)
            t->max_piece_len = t->piece[i].len;
    if (st == KVS_OK)
        st = kvs_tok_map_build(&t->piece_map, t->pool, t->piece, n, false, err);
    return st;
}

static kvs_status load_merges(kvs_tokenizer *t, const kvs_gguf *g, kvs_error *err)
{
    if (kvs_gguf_find_key(g, KEY_MERGES) < 0)
        return kvs_fail(err, KVS_E_FORMAT, "byte-level BPE vocabulary without '%s'", KEY_MERGES);
    kvs_status st = load_strings(g, KEY_MERGES, &t->merge_pool, &t->merge, &t->n_merges, err);
    if (st != KVS_OK)
        return st;
    /* the key is "first second" split at the first space after byte 0; a
     * merge without one can never match, so it is left out of the map */
    for (size_t i = 0; i < t->n_merges; i++) {
        const char *s = t->merge_pool + t->merge[i].off;
        if (t->merge[i].len < 2 || !memchr(s + 1, ' ', t->merge[i].len - 1))
            t->merge[i].len = 0;
    }
    return kvs_tok_map_build(&t->merge_map, t->merge_pool, t->merge, t->n_merges, true, err);
}

/* A special id key: absent keeps *id; -1 / 0xFFFFFFFF mean "none". */
static kvs_status load_id(const kvs_tokenizer *t, const kvs_gguf *g, const char *name,
                          int32_t *id, kvs_error *err)
{
    char key[96];
    snprintf(key, sizeof(key), "tokenizer.ggml.%s_token_id", name);
    if (kvs_gguf_find_key(g, key) < 0)
        return KVS_OK;
    int64_t v;
    kvs_status st = kvs_gguf_get_i64(g, key, &v, err);
    if (st != KVS_OK)
        return st;
    if (v == -1 || v == UINT32_MAX) {
        *id = -1;
        return KVS_OK;
    }
    if (v < 0 || v >= t->n_vocab)
        return kvs_fail(err, KVS_E_FORMAT, "'%s' = %lld is not a token id (vocabulary of %d)",
                        key, (long long)v, t->n_vocab);
    *id = (int32_t)v;
    return KVS_OK;
}

static kvs_status load_bool(const kvs_gguf *g, const char *name, bool *out, kvs_error *err)
{
    char key[96];
    snprintf(key, sizeof(key), "tokenizer.ggml.%s", name);
    if (kvs_gguf_find_key(g, key) < 0)
        return KVS_OK;
    return kvs_gguf_get_bool(g, key, out, err);
}

static kvs_status load_specials(kvs_tokenizer *t, const kvs_gguf *g, kvs_error *err)
{
    int32_t sep = -1, mask = -1, cls = -1;
    static const char *const names[] = {"bos", "eos", "unknown", "eot", "eom", "padding",
                                        "seperator", "mask", "cls"};
    int32_t *ids[] = {&t->bos, &t->eos, &t->unk, &t->eot, &t->eom, &t->pad, &sep, &mask, &cls};
    kvs_status st = KVS_OK;
    for (size_t i = 0; st == KVS_OK && i < sizeof(names) / sizeof(names[0]); i++)
        st = load_id(t, g, names[i], ids[i], err);
    if (st == KVS_OK)
        st = load_bool(g, "add_bos_token", &t->add_bos, err);
    if (st == KVS_OK)
        st = load_bool(g, "add_eos_token", &t->add_eos, err);
    if (st == KVS_OK)
        st = load_bool(g, "add_space_prefix", &t->add_space_prefix, err);
    if (st != KVS_OK)
        return st;
    kvs_tok_mark_eog(t);
    return KVS_OK;
}

void kvs_tok_mark_eog(kvs_tokenizer *t)
{
    /* end-of-generation tokens: EOS/EOT/EOM and llama.cpp's known texts,
     * which become control tokens */
    for (size_t i = 0; i < sizeof(EOG_TEXTS) / sizeof(EOG_TEXTS[0]); i++) {
        int32_t id = kvs_tok_find_piece(t, EOG_TEXTS[i].text);
        if (id < 0)
            continue;
        if (EOG_TEXTS[i].role == 't' && t->eot < 0)
            t->eot = id;
        if (EOG_TEXTS[i].role == 'm' && t->eom < 0)
            t->eom = id;
        t->eog[id] = 1;
        t->type[id] = KVS_TT_CONTROL;
    }
    int32_t ends[] = {t->eos, t->eot, t->eom};
    for (size_t i = 0; i < 3; i++)
        if (ends[i] >= 0)
            t->eog[ends[i]] = 1;
}

typedef struct { uint32_t len; int32_t id; } by_len;

static int cmp_by_len(const void *a, const void *b)
{
    const by_len *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Tokens whose text is split out of the input before encoding. */
static bool splits_text(const kvs_tokenizer *t, int32_t id)
{
    uint8_t y = t->type[id];
    return t->piece[id].len > 0 && (y == KVS_TT_CONTROL || y == KVS_TT_USER || y == KVS_TT_UNKNOWN);
}

/* The partition candidates, longest first; the SPM byte-fallback table. */
static kvs_status index_tokens(kvs_tokenizer *t, kvs_error *err)
{
    size_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        n += splits_text(t, i);
    by_len *tmp = malloc((n ? n : 1) * sizeof(*tmp));
    t->special = malloc((n ? n : 1) * sizeof(*t->special));
    if (!tmp || !t->special) {
        free(tmp);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for %zu special tokens", n);
    }
    size_t k = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (splits_text(t, i))
            tmp[k++] = (by_len){t->piece[i].len, i};
    qsort(tmp, n, sizeof(*tmp), cmp_by_len);
    for (size_t i = 0; i < n; i++)
        t->special[i] = tmp[i].id;
    t->n_special = n;
    free(tmp);

    for (int b = 0; b < 256; b++) {
        char hex[8], raw[2] = {(char)b, 0};
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        t->byte_tok[b] = kvs_tok_find_piece(t, hex);
        if (t->byte_tok[b] < 0)
            t->byte_tok[b] = kvs_tok_map_find(&t->piece_map, raw, 1);
    }
    return KVS_OK;
}

kvs_status kvs_tok_load(kvs_tokenizer **out, const kvs_gguf *g, kvs_error *err)
{
    *out = NULL;
    const char *model = NULL;
    if (kvs_gguf_find_key(g, KEY_MODEL) < 0)
        return kvs_fail(err, KVS_E_NOT_FOUND, "no '%s': the file has no tokenizer", KEY_MODEL);
    kvs_status st = kvs_gguf_get_str(g, KEY_MODEL, &model, NULL, err);
    if (st != KVS_OK)
        return st;

    kvs_tokenizer *t = calloc(1, sizeof(*t));
    if (!t)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for a tokenizer");
    t->bos = t->eos = t->unk = t->eot = t->eom = t->pad = -1;
    if (strcmp(model, "llama") == 0) {
        t->kind = KVS_TOK_SPM;
        t->pre = KVS_PRE_NONE;
        t->bos = 1, t->eos = 2, t->unk = 0;
        t->add_bos = true;
        t->add_space_prefix = true;
    } else if (strcmp(model, "gpt2") == 0) {
        t->kind = KVS_TOK_BPE;
        t->pre = KVS_PRE_DEFAULT;
        const char *pre = "default";
        if (kvs_gguf_find_key(g, KEY_PRE) >= 0)
            st = kvs_gguf_get_str(g, KEY_PRE, &pre, NULL, err);
        size_t i = 0, n_names = sizeof(PRE_NAMES) / sizeof(PRE_NAMES[0]);
        while (st == KVS_OK && i < n_names && strcmp(PRE_NAMES[i].name, pre) != 0)
            i++;
        if (st == KVS_OK && i == n_names)
            st = kvs_fail(err, KVS_E_UNSUPPORTED,
                          "pre-tokenizer '%s' (%s) is not supported; known: default, gpt-2, "
                          "llama3, qwen2, falcon, mpt, starcoder, refact, deepseek-coder, ...",
                          pre, KEY_PRE);
        if (st == KVS_OK) {
            t->pre = PRE_NAMES[i].pre;
            t->ignore_merges = PRE_NAMES[i].ignore_merges;
            t->add_bos = PRE_NAMES[i].add_bos;
        }
    } else {
        st = kvs_fail(err, KVS_E_UNSUPPORTED,
                      "model '%s' (%s) is not supported: kvserve handles 'llama' "
                      "(SentencePiece) and 'gpt2' (byte-level BPE)",
                      model, KEY_MODEL);
    }
    if (st == KVS_OK)
        st = load_vocab(t, g, err);
    if (st == KVS_OK && t->kind == KVS_TOK_BPE)
        st = load_merges(t, g, err);
    if (st == KVS_OK) { /* defaults that do not fit a small vocabulary mean "none" */
        int32_t *ids[] = {&t->bos, &t->eos, &t->unk};
        for (size_t i = 0; i < 3; i++)
            if (*ids[i] >= t->n_vocab)
                *ids[i] = -1;
        st = load_specials(t, g, err);
    }
    if (st == KVS_OK)
        st = index_tokens(t, err);
    if (st == KVS_OK) {
        kvs_tok_bpe_byte_map(t->byte_cpt);
        st = kvs_tok_build_decoder(t, err);
    }
    if (st != KVS_OK) {
        kvs_tok_free(t);
        kvs_fail_wrap(err, "tokenizer");
        return st;
    }
    *out = t;
    return KVS_OK;
}

int32_t kvs_tok_n_vocab(const kvs_tokenizer *t) { return t->n_vocab; }

const char *kvs_tok_chat_template(const kvs_tokenizer *t)
{
    return t->kind == KVS_TOK_HF ? t->hf->chat_template : NULL;
}
int32_t kvs_tok_bos(const kvs_tokenizer *t) { return t->bos; }
int32_t kvs_tok_eos(const kvs_tokenizer *t) { return t->eos; }
bool kvs_tok_add_bos(const kvs_tokenizer *t) { return t->add_bos && t->bos >= 0; }
bool kvs_tok_add_eos(const kvs_tokenizer *t) { return t->add_eos && t->eos >= 0; }

bool kvs_tok_strip_leading_space(const kvs_tokenizer *t)
{
    if (t->kind == KVS_TOK_HF)
        return t->strip_space;
    return t->kind == KVS_TOK_SPM && t->add_space_prefix;
}

size_t kvs_tok_max_token_bytes(const kvs_tokenizer *t) { return t->max_piece_len; }

bool kvs_tok_is_eog(const kvs_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

const char *kvs_tok_piece(const kvs_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    return t->pool + t->piece[id].off;
}

int32_t kvs_tok_find_piece(const kvs_tokenizer *t, const char *piece)
{
    return kvs_tok_map_find(&t->piece_map, piece, strlen(piece));
}
