/*
 * tok_pretok.c - the byte-level BPE pre-tokenizers, i.e. the regexes of
 * llama.cpp's llama-vocab.cpp written as hand matchers over code points.
 *
 * A pre-tokenizer is a list of regexes applied in turn: each one splits
 * every current piece into its matches and the gaps between them (gaps are
 * kept as pieces), as llama.cpp's unicode_regex_split does.  Matching
 * follows ECMAScript semantics (leftmost match, alternatives in order), and
 * \s, \p{L}, \p{N}, \p{P} use the Unicode classes of unicode.h.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

enum rx {
    RX_GPT2,          /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    RX_LLAMA3,        /* (?i:'s|..)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
    RX_QWEN2,         /* the same with \p{N} instead of \p{N}{1,3} */
    RX_PUNCT,         /* [\p{P}\$\+<=>\^~\|]+ */
    RX_PUNCT_TICK,    /* [\p{P}\$\+<=>\^~\|`]+ */
    RX_NUMS,          /* \p{N}+ */
    RX_NUM,           /* \p{N} */
    RX_DIGITS3,       /* [0-9][0-9][0-9] */
    RX_CRLF,          /* [\r\n] */
    RX_SP_LETTERS,    /* \s?\p{L}+ */
    RX_SP_PUNCTS,     /* \s?\p{P}+ */
    RX_CJK,           /* [一-龥ࠀ-一가-퟿]+ */
    RX_END,
};

static const enum rx *regexes_of(enum kvs_tok_pre pre)
{
    static const enum rx def[] = {RX_PUNCT, RX_GPT2, RX_NUMS, RX_DIGITS3, RX_END};
    static const enum rx gpt2[] = {RX_GPT2, RX_END};
    static const enum rx llama3[] = {RX_LLAMA3, RX_END};
    static const enum rx qwen2[] = {RX_QWEN2, RX_END};
    static const enum rx falcon[] = {RX_PUNCT_TICK, RX_GPT2, RX_DIGITS3, RX_END};
    static const enum rx starcoder[] = {RX_NUM, RX_GPT2, RX_END};
    static const enum rx dscoder[] = {RX_CRLF, RX_SP_LETTERS, RX_SP_PUNCTS, RX_CJK, RX_NUM,
                                      RX_END};
    switch (pre) {
    case KVS_PRE_DEFAULT: return def;
    case KVS_PRE_GPT2: return gpt2;
    case KVS_PRE_LLAMA3: return llama3;
    case KVS_PRE_QWEN2: return qwen2;
    case KVS_PRE_FALCON: return falcon;
    case KVS_PRE_STARCODER: return starcoder;
    case KVS_PRE_DEEPSEEK_CODER: return dscoder;
    case KVS_PRE_NONE: break;
    }
    return gpt2;
}

/* The piece being matched: code points [.., e) */
typedef struct text {
    const uint32_t *cpt;
    const uint8_t *cls;
    size_t e;
} text;

static bool is_cat(const text *x, size_t i, enum kvs_ucat c)
{
    return i < x->e && (x->cls[i] & ~KVS_PRE_SPACE) == c && !(x->cls[i] & KVS_PRE_SPACE);
}
static bool is_l(const text *x, size_t i) { return is_cat(x, i, KVS_UCAT_L); }
static bool is_n(const text *x, size_t i) { return is_cat(x, i, KVS_UCAT_N); }
static bool is_p(const text *x, size_t i) { return is_cat(x, i, KVS_UCAT_P); }
static bool is_sp(const text *x, size_t i) { return i < x->e && (x->cls[i] & KVS_PRE_SPACE); }
/* [^\s\p{L}\p{N}] */
static bool is_other(const text *x, size_t i)
{
    return i < x->e && !is_sp(x, i) && !is_l(x, i) && !is_n(x, i);
}
static bool is_crlf(const text *x, size_t i)
{
    return i < x->e && (x->cpt[i] == '\r' || x->cpt[i] == '\n');
}
static uint32_t lower_ascii(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* 's|'t|'re|'ve|'m|'ll|'d (optionally case-insensitive): length or 0 */
static size_t contraction(const text *x, size_t p, bool icase)
{
    if (x->cpt[p] != '\'' || p + 1 >= x->e)
        return 0;
    uint32_t a = icase ? lower_ascii(x->cpt[p + 1]) : x->cpt[p + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (p + 2 >= x->e)
        return 0;
    uint32_t b = icase ? lower_ascii(x->cpt[p + 2]) : x->cpt[p + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* \s+(?!\S)|\s+ at p, where `n_sp` spaces start: length or 0 */
static size_t spaces(const text *x, size_t p, size_t n_sp)
{
    if (n_sp > 1 && p + n_sp < x->e)
        return n_sp - 1; /* leave the last space to prefix the next word */
    return n_sp;
}

static size_t count_sp(const text *x, size_t p)
{
    size_t q = p;
    while (is_sp(x, q))
        q++;
    return q - p;
}

static size_t match_gpt2(const text *x, size_t p)
{
    size_t n = contraction(x, p, false);
    if (n)
        return n;
    size_t sp = x->cpt[p] == ' ', q = p + sp;
    bool (*cls)(const text *, size_t) = is_l(x, q) ? is_l : is_n(x, q) ? is_n
                                                   : is_other(x, q) ? is_other
                                                                    : NULL;
    if (cls) { /* ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` */
        while (cls(x, q))
            q++;
        return q - p;
    }
    n = spaces(x, p, count_sp(x, p));
    return n ? n : 1;
}

static size_t match_llama3(const text *x, size_t p, size_t max_digits)
{
    size_t n = contraction(x, p, true);
    if (n)
        return n;
    size_t q = p;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!is_crlf(x, p) && !is_n(x, p) && (is_l(x, p) || is_l(x, p + 1))) {
        q = p + 1;
        while (is_l(x, q))
            q++;
        return q - p;
    }
    if (is_n(x, p)) { /* \p{N}{1,max} */
        while (is_n(x, q) && q - p < max_digits)
            q++;
        return q - p;
    }
    /* ` ?[^\s\p{L}\p{N}]+[\r\n]*` */
    q = p + (x->cpt[p] == ' ');
    if (is_other(x, q)) {
        while (is_other(x, q))
            q++;
        while (is_crlf(x, q))
            q++;
        return q - p;
    }
    /* \s*[\r\n]+ ends after the last CR/LF of the run of spaces */
    size_t n_sp = count_sp(x, p), last = 0;
    for (size_t i = p; i < p + n_sp; i++)
        if (is_crlf(x, i))
            last = i + 1;
    if (last)
        return last - p;
    n = spaces(x, p, n_sp);
    return n ? n : 1;
}

static bool is_punct_sym(const text *x, size_t i, bool tick)
{
    if (is_p(x, i))
        return true;
    if (i >= x->e)
        return false;
    uint32_t c = x->cpt[i];
    return c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' || c == '~' ||
           c == '|' || (tick && c == '`');
}

static bool is_cjk(const text *x, size_t i)
{
    if (i >= x->e || is_sp(x, i))
        return false;
    uint32_t c = x->cpt[i];
    return (c >= 0x4e00 && c <= 0x9fa5) || (c >= 0x0800 && c <= 0x4e00) ||
           (c >= 0xac00 && c <= 0xd7ff);
}

/* Length of the match of `r` at p (p < x->e), or 0. */
static size_t match(enum rx r, const text *x, size_t p)
{
    size_t q = p;
    switch (r) {
    case RX_GPT2: return match_gpt2(x, p);
    case RX_LLAMA3: return match_llama3(x, p, 3);
    case RX_QWEN2: return match_llama3(x, p, 1);
    case RX_PUNCT:
    case RX_PUNCT_TICK:
        while (is_punct_sym(x, q, r == RX_PUNCT_TICK))
            q++;
        return q - p;
    case RX_NUMS:
        while (is_n(x, q))
            q++;
        return q - p;
    case RX_NUM: return is_n(x, p);
    case RX_DIGITS3:
        for (; q < p + 3; q++)
            if (q >= x->e || x->cpt[q] < '0' || x->cpt[q] > '9')
                return 0;
        return 3;
    case RX_CRLF: return is_crlf(x, p);
    case RX_SP_LETTERS:
    case RX_SP_PUNCTS: {
        bool (*cls)(const text *, size_t) = r == RX_SP_LETTERS ? is_l : is_p;
        if (is_sp(x, q) && cls(x, q + 1))
            q++;
        while (cls(x, q))
            q++;
        return q - p;
    }
    case RX_CJK:
        while (is_cjk(x, q))
            q++;
        return q - p;
    case RX_END: break;
    }
    return 0;
}

void kvs_tok_pieces_free(kvs_tok_pieces *p)
{
    free(p->start);
    free(p->len);
    memset(p, 0, sizeof(*p));
}

static kvs_status add_piece(kvs_tok_pieces *p, size_t start, size_t len, kvs_error *err)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        size_t *s = realloc(p->start, cap * sizeof(*s));
        if (s)
            p->start = s;
        size_t *l = s ? realloc(p->len, cap * sizeof(*l)) : NULL;
        if (!l)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory splitting text (%zu pieces)", cap);
        p->len = l;
        p->cap = cap;
    }
    p->start[p->n] = start;
    p->len[p->n] = len;
    p->n++;
    return KVS_OK;
}

kvs_status kvs_tok_pretokenize(enum kvs_tok_pre pre, const uint32_t *cpt, const uint8_t *cls,
                               size_t n, kvs_tok_pieces *out, kvs_tok_pieces *tmp,
                               kvs_error *err)
{
    out->n = 0;
    if (n == 0)
        return KVS_OK;
    kvs_status st = add_piece(out, 0, n, err);
    for (const enum rx *r = regexes_of(pre); st == KVS_OK && *r != RX_END; r++) {
        kvs_tok_pieces *src = out, *dst = tmp;
        dst->n = 0;
        for (size_t k = 0; st == KVS_OK && k < src->n; k++) {
            text x = {.cpt = cpt, .cls = cls, .e = src->start[k] + src->len[k]};
            size_t gap = src->start[k];
            for (size_t p = gap; st == KVS_OK && p < x.e;) {
                size_t m = match(*r, &x, p);
                if (m == 0) {
                    p++;
                    continue;
                }
                if (p > gap)
                    st = add_piece(dst, gap, p - gap, err);
                if (st == KVS_OK)
                    st = add_piece(dst, p, m, err);
                p += m;
                gap = p;
            }
            if (st == KVS_OK && gap < x.e)
                st = add_piece(dst, gap, x.e - gap, err);
        }
        /* the result becomes `out` */
        kvs_tok_pieces swap = *out;
        *out = *tmp;
        *tmp = swap;
    }
    return st;
}
