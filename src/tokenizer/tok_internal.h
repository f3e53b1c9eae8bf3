/*
 * tok_internal.h - the tokenizer's private layout, shared by its files:
 *   tokenizer.c   loading and validating the GGUF metadata, accessors
 *   tok_decode.c  token -> bytes, whole-sequence and streaming decoding
 *   tok_encode.c  special-token partition, then per-family encoding
 *   tok_spm.c     SentencePiece (score-driven merges, byte fallback)
 *   tok_bpe.c     byte-level BPE (byte alphabet, rank-driven merges)
 *   tok_pretok.c  the BPE pre-tokenizer regexes, written by hand
 *   tok_merge.c   the shared merge loop (linked symbols + binary heap)
 *   tok_map.c     open-addressing string -> index hash map
 *   tok_hf*.c     tokenizer.json: loading, encoding, regexes, export (tok_hf.h)
 * Strings live in pools (one allocation each); spans index into them.
 */
#ifndef KVS_TOKENIZER_TOK_INTERNAL_H
#define KVS_TOKENIZER_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

/* tokenizer.ggml.token_type values (llama.cpp's llama_token_type) */
enum {
    KVS_TT_UNDEFINED = 0,
    KVS_TT_NORMAL = 1,
    KVS_TT_UNKNOWN = 2,
    KVS_TT_CONTROL = 3,
    KVS_TT_USER = 4,
    KVS_TT_UNUSED = 5,
    KVS_TT_BYTE = 6,
};

enum kvs_tok_kind { KVS_TOK_SPM, KVS_TOK_BPE, KVS_TOK_HF /* tokenizer.json: see tok_hf.h */ };

/* Pre-tokenizer regex sets (llama.cpp's LLAMA_VOCAB_PRE_TYPE_* groups). */
enum kvs_tok_pre {
    KVS_PRE_NONE,           /* SentencePiece: no pre-tokenizer */
    KVS_PRE_DEFAULT,
    KVS_PRE_GPT2,
    KVS_PRE_LLAMA3,
    KVS_PRE_QWEN2,
    KVS_PRE_FALCON,
    KVS_PRE_STARCODER,
    KVS_PRE_DEEPSEEK_CODER,
};

typedef struct kvs_tok_span {
    uint32_t off; /* into the pool */
    uint32_t len;
} kvs_tok_span;

/* Hash map from a string (a span of `pool`) to its index in `keys`. */
typedef struct kvs_tok_map {
    int32_t *slots; /* key index, or -1 for an empty slot */
    uint32_t mask;  /* number of slots - 1 (a power of two minus one) */
    const char *pool;
    const kvs_tok_span *keys;
} kvs_tok_map;

struct kvs_tok_hf;

struct kvs_tokenizer {
    enum kvs_tok_kind kind;
    enum kvs_tok_pre pre;
    bool ignore_merges;     /* llama3: a pre-token that is a whole piece skips merging */
    bool add_bos, add_eos, add_space_prefix;
    int32_t n_vocab;
    int32_t bos, eos, unk, eot, eom, pad;
    uint32_t max_piece_len;

    char *pool;             /* piece strings, each NUL-terminated */
    kvs_tok_span *piece;    /* [n_vocab] */
    float *score;           /* [n_vocab] (SPM merge priority) */
    uint8_t *type;          /* [n_vocab] KVS_TT_* */
    uint8_t *eog;           /* [n_vocab] 1 for end-of-generation tokens */
    kvs_tok_map piece_map;  /* piece -> id (the last of duplicates wins) */

    char *dec_pool;         /* decoded bytes of every token (normal rendering) */
    kvs_tok_span *dec;      /* [n_vocab] */

    char *merge_pool;       /* BPE merges "a b" */
    kvs_tok_span *merge;    /* [n_merges] */
    size_t n_merges;
    kvs_tok_map merge_map;  /* "a b" -> rank (the first of duplicates wins) */

    int32_t *special;       /* CONTROL / USER / UNKNOWN ids, longest piece first */
    size_t n_special;

    int32_t byte_tok[256];  /* SPM byte fallback id, -1 if absent */
    uint16_t byte_cpt[256]; /* GPT-2 byte -> code point */

    struct kvs_tok_hf *hf;  /* KVS_TOK_HF: the tokenizer.json pipeline */
    bool strip_space;       /* KVS_TOK_HF: decoding drops the first token's leading space */
};

/* ---- tokenizer.c ---------------------------------------------------------- */
/* Mark end-of-generation tokens (EOS/EOT/EOM and llama.cpp's known texts,
 * which become control tokens). */
void kvs_tok_mark_eog(kvs_tokenizer *t);

/* ---- tok_decode.c -------------------------------------------------------- */
/* Fill dec_pool / dec with every token's bytes (control tokens: their text). */
kvs_status kvs_tok_build_decoder(kvs_tokenizer *t, kvs_error *err);
/* The byte of a byte-fallback piece "<0xHH>" (hex digits in either case), 0..255; -1 when the len
 * bytes at s are not exactly such a piece. */
int kvs_tok_byte_piece(const char *s, size_t len);

/* ---- tok_map.c ---------------------------------------------------------- */
/* Build over keys[0, n) of pool; duplicates keep the first key when
 * first_wins, else the last.  Empty keys are not inserted. */
kvs_status kvs_tok_map_build(kvs_tok_map *m, const char *pool, const kvs_tok_span *keys, size_t n,
                             bool first_wins, kvs_error *err);
void kvs_tok_map_free(kvs_tok_map *m);
/* Index of the key equal to s[0, len), or -1. */
int32_t kvs_tok_map_find(const kvs_tok_map *m, const char *s, size_t len);
/* Index of the key equal to a + sep + b, or -1 (no string is built). */
int32_t kvs_tok_map_find2(const kvs_tok_map *m, const char *a, size_t alen, char sep, const char *b,
                          size_t blen);

/* ---- growable id vector (tok_encode.c) ----------------------------------- */
typedef struct kvs_tok_ids {
    int32_t *v;
    size_t n, cap;
} kvs_tok_ids;

kvs_status kvs_tok_ids_push(kvs_tok_ids *ids, int32_t id, kvs_error *err);

/* ---- tok_merge.c --------------------------------------------------------- */
typedef struct kvs_tok_sym {
    const char *text;
    uint32_t n; /* bytes; 0 once merged into its left neighbour */
    int32_t prev, next;
} kvs_tok_sym;

typedef struct kvs_tok_bigram {
    double key; /* smaller merges first; ties go to the leftmost */
    int32_t left, right;
    uint32_t size;
} kvs_tok_bigram;

/* Scratch space reused across words. */
typedef struct kvs_tok_work {
    kvs_tok_sym *sym;
    size_t n_sym, cap_sym;
    kvs_tok_bigram *heap;
    size_t n_heap, cap_heap;
    char *buf; /* a text buffer for the callers */
    size_t n_buf, cap_buf;
} kvs_tok_work;

/* May symbols a = text[0, alen) and b = text[alen, alen + blen) merge, and
 * with what key? */
typedef bool (*kvs_tok_pair_fn)(const kvs_tokenizer *t, const char *text, size_t alen,
                                size_t blen, double *key);

void kvs_tok_work_free(kvs_tok_work *w);
kvs_status kvs_tok_work_reserve_buf(kvs_tok_work *w, size_t n, kvs_error *err);
/* Split text[0, len) into UTF-8 characters (whole = one symbol), then merge
 * adjacent symbols by smallest key until no pair may merge.  The result is
 * the chain w->sym[0], w->sym[sym[0].next], ... (empty when len == 0). */
kvs_status kvs_tok_merge(kvs_tok_work *w, const kvs_tokenizer *t, const char *text, size_t len,
                         bool whole, kvs_tok_pair_fn pair, kvs_error *err);

/* ---- per-family encoders -------------------------------------------------- */
/* Append the ids of one text fragment (no special tokens in it). */
kvs_status kvs_tok_spm_encode(const kvs_tokenizer *t, kvs_tok_work *w, const char *text,
                              size_t len, bool space_prefix, kvs_tok_ids *out, kvs_error *err);
kvs_status kvs_tok_bpe_encode(const kvs_tokenizer *t, kvs_tok_work *w, const char *text,
                              size_t len, kvs_tok_ids *out, kvs_error *err);
/* GPT-2 byte <-> printable code point tables. */
void kvs_tok_bpe_byte_map(uint16_t byte_cpt[256]);

/* ---- tok_pretok.c --------------------------------------------------------- */
/* Code point classes for the pre-tokenizer: enum kvs_ucat, | 0x80 if space. */
#define KVS_PRE_SPACE 0x80

typedef struct kvs_tok_pieces {
    size_t *start, *len; /* in code points */
    size_t n, cap;
} kvs_tok_pieces;

void kvs_tok_pieces_free(kvs_tok_pieces *p);
/* Split cpt[0, n) (with classes cls) by pre-tokenizer `pre` into *out
 * (reset first); `tmp` is scratch. */
kvs_status kvs_tok_pretokenize(enum kvs_tok_pre pre, const uint32_t *cpt, const uint8_t *cls,
                               size_t n, kvs_tok_pieces *out, kvs_tok_pieces *tmp,
                               kvs_error *err);

#endif
