/*
 * tok_hf_write.c - exporting a tokenizer: as a Hugging Face tokenizer.json
 * (+ tokenizer_config.json) and as GGUF tokenizer.ggml.* metadata.
 *
 * SentencePiece ("llama") vocabularies are written the way transformers'
 * LlamaConverter writes them (legacy form): a BPE with byte_fallback and
 * fuse_unk whose merges are every split of every piece into two pieces,
 * ordered by the piece's score (highest first; within a piece by the ids
 * of its halves), Prepend("▁") + Replace(" ", "▁") normalizers and the
 * Replace/ByteFallback/Fuse/Strip decoder.  Byte-level ("gpt2")
 * vocabularies become a ByteLevel BPE whose Split regexes are the
 * llama.cpp pre-tokenizer's, in the same order.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_hf.h"
#include "tokenizer/unicode.h"

#define GPT2_RX KVS_HF_GPT2_REGEX
#define LLAMA3_RX                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                    \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RX                                                                                   \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                         \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* llama.cpp's regex list of each pre-tokenizer (llama-vocab.cpp), and
 * the name kvserve writes to tokenizer.ggml.pre for it. */
const char *const *kvs_tok_hf_pre_regexes(enum kvs_tok_pre pre, const char **name)
{
    static const char *const def[] = {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RX, "\\p{N}+",
                                      "[0-9][0-9][0-9]", NULL};
    static const char *const gpt2[] = {GPT2_RX, NULL};
    static const char *const llama3[] = {LLAMA3_RX, NULL};
    static const char *const qwen2[] = {QWEN2_RX, NULL};
    static const char *const falcon[] = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RX, "[0-9][0-9][0-9]",
                                         NULL};
    static const char *const starcoder[] = {"\\p{N}", GPT2_RX, NULL};
    static const char *const dscoder[] = {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
                                          "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80"
                                          "\xea\xb0\x80-\xed\x9f\xbf]+",
                                          "\\p{N}", NULL};
    switch (pre) {
    case KVS_PRE_DEFAULT: *name = "default"; return def;
    case KVS_PRE_GPT2: *name = "gpt-2"; return gpt2;
    case KVS_PRE_LLAMA3: *name = "llama-bpe"; return llama3;
    case KVS_PRE_QWEN2: *name = "qwen2"; return qwen2;
    case KVS_PRE_FALCON: *name = "falcon"; return falcon;
    case KVS_PRE_STARCODER: *name = "starcoder"; return starcoder;
    case KVS_PRE_DEEPSEEK_CODER: *name = "deepseek-coder"; return dscoder;
    case KVS_PRE_NONE: break;
    }
    *name = NULL;
    return NULL;
}

static json_t *jstrn(const kvs_tokenizer *t, int32_t id)
{
    return json_stringn(t->pool + t->piece[id].off, t->piece[id].len);
}

static json_t *pattern(const char *key, const char *v)
{
    return json_pack("{s:s}", key, v);
}

/* ---- SentencePiece merges (transformers' SentencePieceExtractor) ------------- */

typedef struct smerge {
    int32_t l, r, piece;
    float score;
    size_t order;
} smerge;

static int cmp_local(const void *a, const void *b)
{
    const smerge *x = a, *y = b;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

static int cmp_score(const void *a, const void *b)
{
    const smerge *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order); /* stable */
}

static kvs_status spm_merges(const kvs_tokenizer *t, smerge **out, size_t *n_out, kvs_error *err)
{
    size_t n = 0, cap = 1024;
    smerge *m = malloc(cap * sizeof(*m));
    if (!m)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for merges");
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->pool + t->piece[id].off;
        size_t len = t->piece[id].len, first = n;
        for (size_t i = 0; i < len;) {
            i += kvs_utf8_len((uint8_t)s[i]);
            if (i >= len)
                break;
            int32_t l = kvs_tok_map_find(&t->piece_map, s, i);
            int32_t r = kvs_tok_map_find(&t->piece_map, s + i, len - i);
            if (l < 0 || r < 0)
                continue;
            if (n == cap) {
                smerge *p = realloc(m, (cap *= 2) * sizeof(*m));
                if (!p) {
                    free(m);
                    return kvs_fail(err, KVS_E_NOMEM, "out of memory for merges");
                }
                m = p;
            }
            m[n++] = (smerge){.l = l, .r = r, .piece = id, .score = t->score[id]};
        }
        qsort(m + first, n - first, sizeof(*m), cmp_local);
    }
    for (size_t i = 0; i < n; i++)
        m[i].order = i;
    qsort(m, n, sizeof(*m), cmp_score);
    *out = m;
    *n_out = n;
    return KVS_OK;
}

/* ---- tokenizer.json ------------------------------------------------------------ */

static json_t *template_json(const kvs_tokenizer *t, bool bos, bool eos)
{
    json_t *single = json_array(), *pair = json_array(), *sp = json_object();
    if (bos) {
        json_array_append_new(single, json_pack("{s:{s:o,s:i}}", "SpecialToken", "id",
                                                jstrn(t, t->bos), "type_id", 0));
        json_array_append_new(pair, json_pack("{s:{s:o,s:i}}", "SpecialToken", "id",
                                              jstrn(t, t->bos), "type_id", 0));
    }
    json_array_append_new(single, json_pack("{s:{s:s,s:i}}", "Sequence", "id", "A", "type_id", 0));
    json_array_append_new(pair, json_pack("{s:{s:s,s:i}}", "Sequence", "id", "A", "type_id", 0));
    if (eos)
        json_array_append_new(single, json_pack("{s:{s:o,s:i}}", "SpecialToken", "id",
                                                jstrn(t, t->eos), "type_id", 0));
    if (bos)
        json_array_append_new(pair, json_pack("{s:{s:o,s:i}}", "SpecialToken", "id",
                                              jstrn(t, t->bos), "type_id", 1));
    json_array_append_new(pair, json_pack("{s:{s:s,s:i}}", "Sequence", "id", "B", "type_id", 1));
    if (eos)
        json_array_append_new(pair, json_pack("{s:{s:o,s:i}}", "SpecialToken", "id",
                                              jstrn(t, t->eos), "type_id", 1));
    int32_t ids[2] = {bos ? t->bos : -1, eos ? t->eos : -1};
    for (int i = 0; i < 2; i++)
        if (ids[i] >= 0)
            json_object_setn_new(sp, t->pool + t->piece[ids[i]].off, t->piece[ids[i]].len,
                                 json_pack("{s:o,s:[i],s:[o]}", "id", jstrn(t, ids[i]), "ids",
                                           ids[i], "tokens", jstrn(t, ids[i])));
    return json_pack("{s:s,s:o,s:o,s:o}", "type", "TemplateProcessing", "single", single, "pair",
                     pair, "special_tokens", sp);
}

static kvs_status build_json(const kvs_tokenizer *t, json_t **tok_out, json_t **cfg_out,
                             kvs_error *err)
{
    bool spm = t->kind == KVS_TOK_SPM;
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    kvs_status st = KVS_OK;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->pool + t->piece[id].off;
        size_t len = t->piece[id].len;
        if (len == 0 || json_object_getn(vocab, s, len))
            continue; /* tokenizer.json has one id per string */
        json_object_setn_new(vocab, s, len, json_integer(id));
        uint8_t ty = t->type[id];
        if (ty == KVS_TT_CONTROL || ty == KVS_TT_USER || ty == KVS_TT_UNKNOWN)
            json_array_append_new(added, json_pack("{s:i,s:o,s:b,s:b,s:b,s:b,s:b}", "id", id,
                                                   "content", jstrn(t, id), "single_word", 0,
                                                   "lstrip", 0, "rstrip", 0, "normalized", 0,
                                                   "special", ty != KVS_TT_USER));
    }
    if (spm) {
        smerge *m = NULL;
        size_t n = 0;
        st = spm_merges(t, &m, &n, err);
        for (size_t i = 0; st == KVS_OK && i < n; i++)
            json_array_append_new(merges, json_pack("[o,o]", jstrn(t, m[i].l), jstrn(t, m[i].r)));
        free(m);
    } else {
        for (size_t i = 0; i < t->n_merges; i++) {
            const char *s = t->merge_pool + t->merge[i].off;
            size_t len = t->merge[i].len;
            const char *sp = len >= 2 ? memchr(s + 1, ' ', len - 1) : NULL;
            if (!sp)
                continue;
            size_t ll = (size_t)(sp - s), rl = len - ll - 1;
            char *both = malloc(ll + rl + 1);
            if (!both) {
                st = kvs_fail(err, KVS_E_NOMEM, "out of memory for merges");
                break;
            }
            memcpy(both, s, ll);
            memcpy(both + ll, sp + 1, rl);
            bool ok = kvs_tok_map_find(&t->piece_map, s, ll) >= 0 &&
                      kvs_tok_map_find(&t->piece_map, sp + 1, rl) >= 0 &&
                      kvs_tok_map_find(&t->piece_map, both, ll + rl) >= 0;
            free(both);
            if (ok) /* merges the library could not load are left out */
                json_array_append_new(merges, json_pack("[s#,s#]", s, (int)ll, sp + 1, (int)rl));
        }
    }
    json_t *model = json_pack("{s:s,s:n,s:o,s:n,s:n,s:b,s:b,s:b,s:o,s:o}", "type", "BPE",
                              "dropout", "unk_token", t->unk >= 0 ? jstrn(t, t->unk) : json_null(),
                              "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", spm,
                              "byte_fallback", spm, "ignore_merges", t->ignore_merges, "vocab",
                              vocab, "merges", merges);
    json_t *normalizer = json_null(), *pre = json_null(), *decoder, *post;
    bool bos = t->add_bos && t->bos >= 0, eos = t->add_eos && t->eos >= 0;
    if (spm) {
        json_t *seq = json_array();
        if (t->add_space_prefix)
            json_array_append_new(seq, json_pack("{s:s,s:s}", "type", "Prepend", "prepend",
                                                 "\xe2\x96\x81"));
        json_array_append_new(seq, json_pack("{s:s,s:o,s:s}", "type", "Replace", "pattern",
                                             pattern("String", " "), "content", "\xe2\x96\x81"));
        normalizer = json_pack("{s:s,s:o}", "type", "Sequence", "normalizers", seq);
        json_t *dec = json_array();
        json_array_append_new(dec, json_pack("{s:s,s:o,s:s}", "type", "Replace", "pattern",
                                             pattern("String", "\xe2\x96\x81"), "content", " "));
        json_array_append_new(dec, json_pack("{s:s}", "type", "ByteFallback"));
        json_array_append_new(dec, json_pack("{s:s}", "type", "Fuse"));
        if (t->add_space_prefix)
            json_array_append_new(dec, json_pack("{s:s,s:s,s:i,s:i}", "type", "Strip", "content",
                                                 " ", "start", 1, "stop", 0));
        decoder = json_pack("{s:s,s:o}", "type", "Sequence", "decoders", dec);
    } else {
        const char *name;
        const char *const *rx = kvs_tok_hf_pre_regexes(t->pre, &name);
        if (!rx) {
            st = kvs_fail(err, KVS_E_UNSUPPORTED, "this byte-level tokenizer has no "
                          "pre-tokenizer to write");
        } else if (t->pre == KVS_PRE_GPT2) {
            pre = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                            "trim_offsets", 1, "use_regex", 1);
        } else {
            json_t *seq = json_array();
            for (size_t i = 0; rx[i]; i++)
                json_array_append_new(seq, json_pack("{s:s,s:o,s:s,s:b}", "type", "Split",
                                                     "pattern", pattern("Regex", rx[i]),
                                                     "behavior", "Isolated", "invert", 0));
            json_array_append_new(seq, json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel",
                                                 "add_prefix_space", 0, "trim_offsets", 1,
                                                 "use_regex", 0));
            pre = json_pack("{s:s,s:o}", "type", "Sequence", "pretokenizers", seq);
        }
        decoder = json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                            "trim_offsets", 1, "use_regex", 1);
    }
    post = bos || eos ? template_json(t, bos, eos) : json_null();
    json_t *root = json_pack("{s:s,s:n,s:n,s:o,s:o,s:o,s:o,s:o,s:o}", "version", "1.0",
                             "truncation", "padding", "added_tokens", added, "normalizer",
                             normalizer, "pre_tokenizer", pre, "post_processor", post, "decoder",
                             decoder, "model", model);
    json_t *cfg = json_object();
    json_object_set_new(cfg, "tokenizer_class",
                        json_string(spm ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast"));
    json_object_set_new(cfg, "add_bos_token", json_boolean(bos));
    json_object_set_new(cfg, "add_eos_token", json_boolean(eos));
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    if (spm)
        json_object_set_new(cfg, "legacy", json_true());
    int32_t ids[] = {t->bos, t->eos, t->unk, t->pad};
    const char *keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    for (int i = 0; i < 4; i++)
        json_object_set_new(cfg, keys[i], ids[i] >= 0 ? jstrn(t, ids[i]) : json_null());
    if (!root || !cfg || st != KVS_OK) {
        json_decref(root);
        json_decref(cfg);
        return st != KVS_OK ? st : kvs_fail(err, KVS_E_NOMEM, "out of memory writing JSON");
    }
    *tok_out = root;
    *cfg_out = cfg;
    return KVS_OK;
}

kvs_status kvs_tok_write_hf(const kvs_tokenizer *t, const char *dir, kvs_error *err)
{
    if (t->kind == KVS_TOK_HF)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "writing tokenizer.json: this tokenizer came "
                        "from a tokenizer.json; copy that file instead");
    json_t *tok = NULL, *cfg = NULL;
    kvs_status st = build_json(t, &tok, &cfg, err);
    if (st != KVS_OK)
        return st;
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    if (json_dump_file(tok, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
        st = kvs_fail(err, KVS_E_IO, "cannot write %s", path);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    if (st == KVS_OK && json_dump_file(cfg, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
        st = kvs_fail(err, KVS_E_IO, "cannot write %s", path);
    json_decref(tok);
    json_decref(cfg);
    return st;
}

/* ---- GGUF metadata --------------------------------------------------------------- */

/* Can GGUF metadata say what this tokenizer.json does?  GGUF has no
 * normalizer: NFC is dropped (as llama.cpp's converter drops it; text
 * already in NFC tokenizes the same), a SentencePiece-style Prepend("▁")
 * and Replace(" " -> "▁") are add_space_prefix; anything else is refused. */
static kvs_status gguf_representable(const kvs_tok_hf *hf, kvs_error *err)
{
    static const char *const NAMES[] = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Prepend",
                                        "Replace"};
    for (size_t i = 0; i < hf->n_norm; i++) {
        const hf_norm *n = &hf->norm[i];
        bool ok = n->kind == HN_NFC ||
                  (hf->spm_like && n->kind == HN_PREPEND && n->text_len == 3 &&
                   memcmp(n->text, "\xe2\x96\x81", 3) == 0) ||
                  (hf->spm_like && n->kind == HN_REPLACE && n->pat.str && n->pat.len == 1 &&
                   n->pat.str[0] == ' ' && n->text_len == 3 &&
                   memcmp(n->text, "\xe2\x96\x81", 3) == 0);
        if (!ok)
            return kvs_fail(err, KVS_E_UNSUPPORTED, "tokenizer.json's %s normalizer has no GGUF "
                            "equivalent (llama.cpp would tokenize differently)", NAMES[n->kind]);
    }
    for (size_t i = 0; hf->spm_like && i < hf->n_pre; i++) {
        const hf_pre *p = &hf->pre[i];
        bool ok = p->kind == HP_METASPACE ||
                  (p->kind == HP_SPLIT && p->pat.str && p->pat.len == 1 && p->pat.str[0] == ' ');
        if (!ok)
            return kvs_fail(err, KVS_E_UNSUPPORTED, "tokenizer.json's pre-tokenizer has no GGUF "
                            "equivalent for a SentencePiece-style vocabulary");
    }
    return KVS_OK;
}

kvs_status kvs_tok_write_gguf_meta(const kvs_tokenizer *t, kvs_gguf_writer *w, kvs_error *err)
{
    if (t->kind == KVS_TOK_HF) {
        kvs_status st = gguf_representable(t->hf, err);
        if (st != KVS_OK)
            return st;
    }
    bool llama = t->kind == KVS_TOK_SPM || (t->kind == KVS_TOK_HF && t->hf->spm_like);
    const char *pre = NULL;
    if (t->kind == KVS_TOK_BPE)
        kvs_tok_hf_pre_regexes(t->pre, &pre);
    else if (t->kind == KVS_TOK_HF && !llama)
        pre = t->hf->gguf_pre;
    if (!llama && !pre)
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "tokenizer.json's pre-tokenizer is not one llama.cpp names (gpt-2, "
                        "llama-bpe, qwen2, default, falcon, starcoder, deepseek-coder): a GGUF "
                        "file could not say how to split text");
    size_t n = (size_t)t->n_vocab;
    const char **tok = malloc(n * sizeof(*tok));
    size_t *lens = malloc(n * sizeof(*lens));
    int32_t *types = malloc(n * sizeof(*types));
    if (!tok || !lens || !types) {
        free(tok);
        free(lens);
        free(types);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for %zu tokens", n);
    }
    for (size_t i = 0; i < n; i++) {
        tok[i] = t->pool + t->piece[i].off;
        lens[i] = t->piece[i].len;
        types[i] = t->type[i];
    }
    kvs_status st = kvs_gguf_writer_set_str(w, "tokenizer.ggml.model", llama ? "llama" : "gpt2",
                                            err);
    if (st == KVS_OK && pre)
        st = kvs_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, err);
    if (st == KVS_OK)
        st = kvs_gguf_writer_set_arr_strn(w, "tokenizer.ggml.tokens", tok, lens, n, err);
    if (st == KVS_OK)
        st = kvs_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", t->score, n, err);
    if (st == KVS_OK)
        st = kvs_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, n, err);
    if (st == KVS_OK && !llama) {
        const char **m = realloc(tok, (t->n_merges ? t->n_merges : 1) * sizeof(*m));
        size_t *ml = m ? realloc(lens, (t->n_merges ? t->n_merges : 1) * sizeof(*ml)) : NULL;
        if (m)
            tok = m;
        if (ml)
            lens = ml;
        if (!m || !ml) {
            st = kvs_fail(err, KVS_E_NOMEM, "out of memory for merges");
        } else {
            for (size_t i = 0; i < t->n_merges; i++) {
                m[i] = t->merge_pool + t->merge[i].off;
                ml[i] = t->merge[i].len;
            }
            st = kvs_gguf_writer_set_arr_strn(w, "tokenizer.ggml.merges", m, ml, t->n_merges,
                                              err);
        }
    }
    const char *idk[] = {"bos", "eos", "unknown", "padding", "eot", "eom"};
    int32_t ids[] = {t->bos, t->eos, t->unk, t->pad, t->eot, t->eom};
    for (int i = 0; st == KVS_OK && i < 6; i++) {
        char key[64];
        snprintf(key, sizeof(key), "tokenizer.ggml.%s_token_id", idk[i]);
        if (ids[i] >= 0)
            st = kvs_gguf_writer_set_u32(w, key, (uint32_t)ids[i], err);
    }
    bool add_bos = t->add_bos && t->bos >= 0, add_eos = t->add_eos && t->eos >= 0;
    if (t->kind == KVS_TOK_HF) {
        add_bos = t->hf->n_prefix > 0;
        add_eos = t->hf->n_suffix > 0;
    }
    if (st == KVS_OK)
        st = kvs_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", add_bos, err);
    if (st == KVS_OK)
        st = kvs_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", add_eos, err);
    if (st == KVS_OK && llama)
        st = kvs_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix,
                                      err);
    if (st == KVS_OK && kvs_tok_chat_template(t))
        st = kvs_gguf_writer_set_str(w, "tokenizer.chat_template", kvs_tok_chat_template(t), err);
    free(tok);
    free(lens);
    free(types);
    return st;
}
