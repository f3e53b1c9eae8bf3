/*
 * tok_hf.h - the tokenizer.json pipeline (Hugging Face `tokenizers`), the
 * private half of kvs_tok_load_hf.  A tokenizer.json describes a chain:
 *
 *   added tokens  split out of the raw text first (leftmost-longest match;
 *                 lstrip/rstrip eat neighbouring whitespace, single_word
 *                 needs word boundaries); tokens marked "normalized" are
 *                 matched a second time, on the normalized text;
 *   normalizer    NFC/NFD/NFKC/NFKD, Lowercase, Prepend, Replace, Sequence;
 *   pre-tokenizer splits each piece into words: ByteLevel (GPT-2's regex and
 *                 byte alphabet), Split (a regex or a string, with one of
 *                 the five delimiter behaviours), Metaspace, Digits,
 *                 WhitespaceSplit, Sequence;
 *   model         BPE over the word's characters: merges by rank (ids, not
 *                 strings), byte_fallback to <0xXX>, unk (fused), ignore_merges,
 *                 continuing_subword_prefix / end_of_word_suffix;
 *   post-process  TemplateProcessing's single template (specials before and
 *                 after $A), RobertaProcessing/BertProcessing, ByteLevel (no-op);
 *   decoder       ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip:
 *                 applied per token at load (each token's bytes), the
 *                 strip of the first token's leading space becoming
 *                 kvs_tok_strip_leading_space().
 * Regexes run on Oniguruma, the engine the `tokenizers` library uses, with
 * its default syntax and UTF-8; Unicode normalization is utf8proc's.
 */
#ifndef KVS_TOKENIZER_TOK_HF_H
#define KVS_TOKENIZER_TOK_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tok_internal.h"

/* A compiled Oniguruma regex (opaque here: regex_t *). */
typedef struct kvs_tok_rx kvs_tok_rx;

/* Compile `pat` (UTF-8, n bytes); a syntax error names the pattern. */
kvs_status kvs_tok_rx_compile(kvs_tok_rx **out, const char *pat, size_t n, kvs_error *err);
void kvs_tok_rx_free(kvs_tok_rx *rx);
/* First match in s[from, len) (the subject is s[0, len)): true and
 * [*ms, *me) when found.  A regex that fails at run time reports no match. */
bool kvs_tok_rx_search(const kvs_tok_rx *rx, const char *s, size_t len, size_t from, size_t *ms,
                       size_t *me);

/* A Split/Replace pattern: a literal string or a regex. */
typedef struct hf_pattern {
    char *str; /* literal (NULL for a regex) */
    size_t len;
    kvs_tok_rx *rx;
} hf_pattern;

enum hf_norm_kind { HN_NFC, HN_NFD, HN_NFKC, HN_NFKD, HN_LOWERCASE, HN_PREPEND, HN_REPLACE };

typedef struct hf_norm {
    enum hf_norm_kind kind;
    char *text; /* Prepend's prefix, Replace's content */
    size_t text_len;
    hf_pattern pat; /* Replace */
} hf_norm;

enum hf_pre_kind { HP_BYTELEVEL, HP_SPLIT, HP_METASPACE, HP_DIGITS, HP_WSPLIT };
enum hf_behavior { HB_REMOVED, HB_ISOLATED, HB_MERGED_PREV, HB_MERGED_NEXT, HB_CONTIGUOUS };
enum hf_scheme { HS_ALWAYS, HS_FIRST, HS_NEVER };

typedef struct hf_pre {
    enum hf_pre_kind kind;
    bool add_prefix_space, use_regex; /* ByteLevel */
    hf_pattern pat;                   /* Split */
    enum hf_behavior behavior;        /* Split */
    bool invert;                      /* Split */
    char repl[8];                     /* Metaspace replacement (one character) */
    size_t repl_len;
    enum hf_scheme scheme;            /* Metaspace */
    bool split;                       /* Metaspace */
    bool individual;                  /* Digits */
} hf_pre;

typedef struct hf_added {
    int32_t id;
    uint32_t off, len; /* content in the tokenizer's pool */
    bool special, lstrip, rstrip, single_word, normalized;
    uint8_t first; /* content[0] */
} hf_added;

/* (left id, right id) -> (rank, merged id), open addressing. */
typedef struct hf_merges {
    uint64_t *key; /* UINT64_MAX: empty */
    uint32_t *rank;
    int32_t *id;
    uint32_t mask;
    size_t n;
} hf_merges;

typedef struct kvs_tok_hf {
    hf_norm *norm;
    size_t n_norm;
    hf_pre *pre;
    size_t n_pre;
    kvs_tok_rx *bytelevel_rx; /* GPT-2's regex, when a ByteLevel uses it */

    /* BPE model */
    kvs_tok_span *model_key; /* [n_vocab]: the model's vocabulary (len 0: not in it) */
    kvs_tok_map vocab;       /* model string -> id */
    hf_merges merges;
    int32_t *merge_left, *merge_right; /* [n_merges] in rank order */
    size_t n_merges;
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk;
    char *cont_prefix, *eow_suffix; /* NULL when absent */
    size_t cont_len, eow_len;
    int32_t byte_id[256]; /* <0xXX> in the model vocabulary, -1 if absent */

    hf_added *added; /* by first byte, then longest content first */
    size_t n_added;
    uint32_t added_first[257]; /* added[added_first[b] ..] start with byte b */

    int32_t *prefix, *suffix; /* the post-processor's single template */
    size_t n_prefix, n_suffix;

    char *chat_template; /* tokenizer_config.json's (the "default" one of a list), or NULL */

    /* for kvs_tok_write_gguf_meta */
    bool spm_like;        /* Metaspace-style BPE with byte fallback -> "llama" */
    const char *gguf_pre; /* byte-level: llama.cpp's pre-tokenizer name, NULL if unknown */
} kvs_tok_hf;

void kvs_tok_hf_free(kvs_tok_hf *hf);
/* The merge of (a, b): the merged id and *rank, or -1. */
int32_t kvs_tok_hf_merge_find(const hf_merges *m, int32_t a, int32_t b, uint32_t *rank);

/* kvs_tok_encode for a tokenizer.json tokenizer. */
kvs_status kvs_tok_hf_encode(const kvs_tokenizer *t, const char *text, size_t len, bool add_special,
                             bool parse_special, int32_t **ids, size_t *n_ids, kvs_error *err);

/* llama.cpp's regex list for a GGUF pre-tokenizer (NULL-terminated; NULL
 * for KVS_PRE_NONE) and the tokenizer.ggml.pre name kvserve writes for it. */
const char *const *kvs_tok_hf_pre_regexes(enum kvs_tok_pre pre, const char **name);

/* GPT-2's ByteLevel regex (also llama.cpp's "gpt-2" pre-tokenizer). */
#define KVS_HF_GPT2_REGEX                                                                          \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

#endif
