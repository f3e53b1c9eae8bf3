/*
 * tok_hf_encode.c - kvs_tok_encode for tokenizer.json tokenizers: the
 * `tokenizers` library's pipeline, step by step (tok_hf.h).
 *
 * The text is a list of pieces, each either an added token or a string in
 * an arena; every step maps the list to a new one.  A piece remembers
 * whether it starts at the original text's first byte (Metaspace's
 * "first" scheme needs that).  Input that is not valid UTF-8 has each bad
 * byte replaced by U+FFFD first (the library only takes Rust strings).
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_hf.h"
#include "tokenizer/unicode.h"

typedef struct hpiece {
    int32_t id; /* an added token, or -1 for text */
    uint32_t off, len;
    bool at0;
} hpiece;

typedef struct hlist {
    hpiece *v;
    size_t n, cap;
} hlist;

typedef struct arena {
    char *b;
    size_t n, cap;
} arena;

typedef struct henc {
    const kvs_tokenizer *t;
    const kvs_tok_hf *hf;
    arena a;
    hlist cur, next;
    kvs_error *err;
} henc;

static kvs_status a_reserve(henc *e, size_t more)
{
    if (e->a.n + more <= e->a.cap)
        return KVS_OK;
    if (e->a.n + more > UINT32_MAX)
        return kvs_fail(e->err, KVS_E_INVALID, "text too long to tokenize (over 4 GiB in work)");
    size_t cap = e->a.cap ? e->a.cap : 4096;
    while (cap < e->a.n + more)
        cap *= 2;
    char *b = realloc(e->a.b, cap);
    if (!b)
        return kvs_fail(e->err, KVS_E_NOMEM, "out of memory tokenizing %zu bytes", more);
    e->a.b = b;
    e->a.cap = cap;
    return KVS_OK;
}

/* Append bytes (which may lie inside the arena) and return their offset. */
static kvs_status a_put(henc *e, const char *s, size_t n, uint32_t *off)
{
    size_t rel = (size_t)-1;
    if (e->a.b && s >= e->a.b && s < e->a.b + e->a.n)
        rel = (size_t)(s - e->a.b);
    kvs_status st = a_reserve(e, n);
    if (st != KVS_OK)
        return st;
    if (rel != (size_t)-1)
        s = e->a.b + rel;
    *off = (uint32_t)e->a.n;
    if (n)
        memmove(e->a.b + e->a.n, s, n);
    e->a.n += n;
    return KVS_OK;
}

static kvs_status l_push(henc *e, hlist *l, hpiece p)
{
    if (p.id < 0 && p.len == 0)
        return KVS_OK; /* the library drops empty splits */
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        hpiece *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return kvs_fail(e->err, KVS_E_NOMEM, "out of memory splitting text");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = p;
    return KVS_OK;
}

static void l_swap(henc *e)
{
    hlist t = e->cur;
    e->cur = e->next;
    e->next = t;
    e->next.n = 0;
}

static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *clen)
{
    size_t pos = i;
    uint32_t c = kvs_utf8_decode(s, n, &pos);
    *clen = pos - i;
    return c;
}

static bool is_word_cp(uint32_t c)
{
    enum kvs_ucat k = kvs_ucat_of(c);
    return c == '_' || k == KVS_UCAT_L || k == KVS_UCAT_N || k == KVS_UCAT_M;
}

/* The code point that ends s[0, n) (n > 0, valid UTF-8). */
static uint32_t last_cp(const char *s, size_t n)
{
    size_t i = n - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xc0) == 0x80)
        i--;
    size_t l;
    return cp_at(s, n, i, &l);
}

/* ---- added tokens ------------------------------------------------------------ */

/* Split text piece p at the added tokens whose `normalized` flag is
 * `normalized`: leftmost-longest matches, as the library's Aho-Corasick. */
static kvs_status split_added(henc *e, hpiece p, bool normalized, bool parse_special)
{
    const kvs_tok_hf *hf = e->hf;
    const char *pool = e->t->pool;
    size_t start_off = 0, i = 0, n = p.len;
    kvs_status st = KVS_OK;
    while (st == KVS_OK && i < n) {
        const char *s = e->a.b + p.off;
        const hf_added *m = NULL;
        uint8_t c0 = (uint8_t)s[i];
        for (size_t k = hf->added_first[c0]; k < hf->added_first[c0 + 1]; k++) {
            const hf_added *x = &hf->added[k]; /* longest first */
            if (x->normalized == normalized && x->len <= n - i &&
                memcmp(pool + x->off, s + i, x->len) == 0) {
                m = x;
                break;
            }
        }
        if (!m) {
            i++;
            continue;
        }
        size_t ms = i, me = i + m->len;
        i = me;
        if (m->special && !parse_special)
            continue;
        if (m->single_word) {
            size_t cl;
            bool sb = ms == 0 || !is_word_cp(last_cp(s, ms));
            bool eb = me == n || !is_word_cp(cp_at(s, n, me, &cl));
            if (!sb || !eb)
                continue;
        }
        if (ms < start_off)
            continue;
        if (m->lstrip)
            while (ms > start_off && kvs_ucat_is_space(last_cp(s, ms))) {
                size_t j = ms - 1;
                while (j > 0 && ((uint8_t)s[j] & 0xc0) == 0x80)
                    j--;
                ms = j;
            }
        if (m->rstrip) {
            size_t cl;
            while (me < n && kvs_ucat_is_space(cp_at(s, n, me, &cl)))
                me += cl;
            if (me > i)
                i = me;
        }
        if (ms > start_off)
            st = l_push(e, &e->next, (hpiece){-1, p.off + (uint32_t)start_off,
                                              (uint32_t)(ms - start_off),
                                              p.at0 && start_off == 0});
        if (st == KVS_OK)
            st = l_push(e, &e->next, (hpiece){m->id, p.off + (uint32_t)ms,
                                              (uint32_t)(me - ms), false});
        start_off = me;
    }
    if (st == KVS_OK && start_off < n)
        st = l_push(e, &e->next, (hpiece){-1, p.off + (uint32_t)start_off,
                                          (uint32_t)(n - start_off), p.at0 && start_off == 0});
    return st;
}

/* ---- normalizers -------------------------------------------------------------- */

static bool case_ignorable(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK || c == '\'' || c == '.' ||
           c == ':' || c == 0xb7 || c == 0x2018 || c == 0x2019 || c == 0x2024 || c == 0x2027;
}

static bool cased(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

/* Unicode's Final_Sigma condition for the Σ at s[at, end): a cased letter
 * before it and none after it (case-ignorable characters skipped). */
static bool final_sigma(const char *s, size_t n, size_t at, size_t end)
{
    bool before = false;
    for (size_t i = at; i > 0;) {
        size_t j = i - 1, cl;
        while (j > 0 && ((uint8_t)s[j] & 0xc0) == 0x80)
            j--;
        uint32_t c = cp_at(s, n, j, &cl);
        i = j;
        if (case_ignorable(c))
            continue;
        before = cased(c);
        break;
    }
    if (!before)
        return false;
    for (size_t i = end; i < n;) {
        size_t cl;
        uint32_t c = cp_at(s, n, i, &cl);
        i += cl;
        if (case_ignorable(c))
            continue;
        return !cased(c);
    }
    return true;
}

/* Replace every match of pat in piece *p by `to`, in a new arena string. */
static kvs_status replace_pattern(henc *e, hpiece *p, const hf_pattern *pat, const char *to,
                                  size_t tl)
{
    uint32_t off = (uint32_t)e->a.n;
    size_t from = 0, n = p->len;
    kvs_status st = KVS_OK;
    while (st == KVS_OK && from <= n) {
        const char *s = e->a.b + p->off;
        size_t ms, me;
        bool hit;
        if (pat->str) {
            const char *h = pat->len ? memmem(s + from, n - from, pat->str, pat->len) : NULL;
            hit = h != NULL;
            ms = hit ? (size_t)(h - s) : 0;
            me = ms + pat->len;
        } else {
            hit = kvs_tok_rx_search(pat->rx, s, n, from, &ms, &me);
        }
        if (!hit)
            break;
        uint32_t o;
        st = a_put(e, e->a.b + p->off + from, ms - from, &o);
        if (st == KVS_OK)
            st = a_put(e, to, tl, &o);
        if (me == ms) { /* empty match: keep one character and go on */
            size_t cl = 1;
            if (ms < n)
                cp_at(e->a.b + p->off, n, ms, &cl);
            if (st == KVS_OK && ms < n)
                st = a_put(e, e->a.b + p->off + ms, cl, &o);
            me = ms + cl;
        }
        from = me;
    }
    uint32_t o;
    if (st == KVS_OK && from < n)
        st = a_put(e, e->a.b + p->off + from, n - from, &o);
    p->off = off;
    p->len = (uint32_t)(e->a.n - off);
    return st;
}

static kvs_status normalize(henc *e, hpiece *p)
{
    kvs_status st = KVS_OK;
    for (size_t k = 0; st == KVS_OK && k < e->hf->n_norm; k++) {
        const hf_norm *nm = &e->hf->norm[k];
        if (p->len == 0)
            break;
        switch (nm->kind) {
        case HN_NFC:
        case HN_NFD:
        case HN_NFKC:
        case HN_NFKD: {
            int opt = UTF8PROC_STABLE;
            opt |= nm->kind == HN_NFC || nm->kind == HN_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
            if (nm->kind == HN_NFKC || nm->kind == HN_NFKD)
                opt |= UTF8PROC_COMPAT;
            utf8proc_uint8_t *out = NULL;
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)e->a.b + p->off,
                                              p->len, &out, (utf8proc_option_t)opt);
            if (r < 0) {
                free(out);
                return kvs_fail(e->err, KVS_E_INVALID, "Unicode normalization failed: %s",
                                utf8proc_errmsg(r));
            }
            st = a_put(e, (const char *)out, (size_t)r, &p->off);
            p->len = (uint32_t)r;
            free(out);
            break;
        }
        case HN_LOWERCASE: { /* Rust's str::to_lowercase */
            uint32_t off = (uint32_t)e->a.n;
            st = a_reserve(e, (size_t)p->len * 2 + 8);
            for (size_t i = 0; st == KVS_OK && i < p->len;) {
                size_t cl, start = i;
                uint32_t c = cp_at(e->a.b + p->off, p->len, i, &cl);
                i += cl;
                char u[8];
                size_t ul;
                if (c == 0x130) { /* İ: the one unconditional multi-character mapping */
                    memcpy(u, "i\xcc\x87", 3);
                    ul = 3;
                } else if (c == 0x3a3) {
                    bool fin = final_sigma(e->a.b + p->off, p->len, start, i);
                    ul = kvs_utf8_encode(fin ? 0x3c2 : 0x3c3, u);
                } else {
                    ul = kvs_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)c), u);
                }
                uint32_t o;
                st = a_put(e, u, ul, &o);
            }
            p->off = off;
            p->len = (uint32_t)(e->a.n - off);
            break;
        }
        case HN_PREPEND: {
            uint32_t off;
            st = a_put(e, nm->text, nm->text_len, &off);
            uint32_t o;
            if (st == KVS_OK)
                st = a_put(e, e->a.b + p->off, p->len, &o);
            p->off = off;
            p->len += (uint32_t)nm->text_len;
            break;
        }
        case HN_REPLACE:
            st = replace_pattern(e, p, &nm->pat, nm->text, nm->text_len);
            break;
        }
    }
    return st;
}

/* ---- pre-tokenizers ------------------------------------------------------------ */

typedef struct span {
    size_t s, e;
    bool m;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static kvs_status sp_push(spans *l, size_t s, size_t e, bool m, kvs_error *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        span *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory splitting text");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (span){s, e, m};
    return KVS_OK;
}

enum cpred { CP_NUMERIC, CP_SPACE };

static bool pred(enum cpred p, uint32_t c)
{
    if (p == CP_SPACE)
        return kvs_ucat_is_space(c);
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* Matches of a pattern (or of single characters of a class) over s[0, n),
 * with the gaps between them: the library's Pattern::find_matches. */
static kvs_status find_matches(const hf_pattern *pat, const kvs_tok_rx *rx, const char *repl,
                               size_t repl_len, int cls, const char *s, size_t n, spans *out,
                               kvs_error *err)
{
    out->n = 0;
    size_t prev = 0, from = 0;
    kvs_status st = KVS_OK;
    while (st == KVS_OK && from < n) {
        size_t ms, me;
        bool hit;
        if (cls >= 0) {
            size_t cl = 0;
            hit = false;
            while (from < n) {
                uint32_t c = cp_at(s, n, from, &cl);
                if (pred((enum cpred)cls, c)) {
                    hit = true;
                    break;
                }
                from += cl;
            }
            ms = from;
            me = from + cl;
        } else if (repl || (pat && pat->str)) {
            const char *needle = repl ? repl : pat->str;
            size_t nl = repl ? repl_len : pat->len;
            const char *h = nl ? memmem(s + from, n - from, needle, nl) : NULL;
            hit = h != NULL;
            ms = hit ? (size_t)(h - s) : 0;
            me = ms + nl;
        } else {
            hit = kvs_tok_rx_search(pat ? pat->rx : rx, s, n, from, &ms, &me);
        }
        if (!hit)
            break;
        if (me == ms) { /* an empty match splits nothing */
            size_t cl;
            cp_at(s, n, ms, &cl);
            from = ms + cl;
            continue;
        }
        if (ms > prev)
            st = sp_push(out, prev, ms, false, err);
        if (st == KVS_OK)
            st = sp_push(out, ms, me, true, err);
        prev = from = me;
    }
    if (st == KVS_OK && prev < n)
        st = sp_push(out, prev, n, false, err);
    return st;
}

/* Apply a delimiter behaviour to the spans of piece p and emit the parts. */
static kvs_status emit_split(henc *e, hpiece p, spans *sp, enum hf_behavior b, bool invert)
{
    if (invert)
        for (size_t i = 0; i < sp->n; i++)
            sp->v[i].m = !sp->v[i].m;
    size_t k = 0; /* compact in place */
    bool prev_m = false;
    if (b == HB_MERGED_NEXT) { /* fold from the right */
        size_t w = sp->n;
        for (size_t i = sp->n; i-- > 0;) {
            span x = sp->v[i];
            if (x.m && !prev_m && w < sp->n)
                sp->v[w].s = x.s;
            else
                sp->v[--w] = x;
            prev_m = x.m;
        }
        memmove(sp->v, sp->v + w, (sp->n - w) * sizeof(span));
        k = sp->n - w;
    } else {
        for (size_t i = 0; i < sp->n; i++) {
            span x = sp->v[i];
            if (b == HB_REMOVED) {
                if (!x.m)
                    sp->v[k++] = x;
            } else if (b == HB_ISOLATED) {
                sp->v[k++] = x;
            } else if (b == HB_MERGED_PREV) {
                if (x.m && !prev_m && k > 0)
                    sp->v[k - 1].e = x.e;
                else
                    sp->v[k++] = x;
            } else { /* contiguous */
                if (k > 0 && x.m == prev_m)
                    sp->v[k - 1].e = x.e;
                else
                    sp->v[k++] = x;
            }
            prev_m = x.m;
        }
    }
    kvs_status st = KVS_OK;
    for (size_t i = 0; st == KVS_OK && i < k; i++)
        st = l_push(e, &e->next, (hpiece){-1, p.off + (uint32_t)sp->v[i].s,
                                          (uint32_t)(sp->v[i].e - sp->v[i].s),
                                          p.at0 && sp->v[i].s == 0});
    return st;
}

static kvs_status pretok_step(henc *e, const hf_pre *pr, spans *sp)
{
    kvs_status st = KVS_OK;
    for (size_t k = 0; st == KVS_OK && k < e->cur.n; k++) {
        hpiece p = e->cur.v[k];
        if (p.id >= 0) {
            st = l_push(e, &e->next, p);
            continue;
        }
        switch (pr->kind) {
        case HP_SPLIT:
            st = find_matches(&pr->pat, NULL, NULL, 0, -1, e->a.b + p.off, p.len, sp, e->err);
            if (st == KVS_OK)
                st = emit_split(e, p, sp, pr->behavior, pr->invert);
            break;
        case HP_DIGITS:
            st = find_matches(NULL, NULL, NULL, 0, CP_NUMERIC, e->a.b + p.off, p.len, sp, e->err);
            if (st == KVS_OK)
                st = emit_split(e, p, sp, pr->individual ? HB_ISOLATED : HB_CONTIGUOUS, false);
            break;
        case HP_WSPLIT:
            st = find_matches(NULL, NULL, NULL, 0, CP_SPACE, e->a.b + p.off, p.len, sp, e->err);
            if (st == KVS_OK)
                st = emit_split(e, p, sp, HB_REMOVED, false);
            break;
        case HP_METASPACE: {
            hf_pattern sp_pat = {.str = (char *)" ", .len = 1};
            st = replace_pattern(e, &p, &sp_pat, pr->repl, pr->repl_len);
            bool starts = p.len >= pr->repl_len &&
                          memcmp(e->a.b + p.off, pr->repl, pr->repl_len) == 0;
            if (st == KVS_OK && !starts &&
                (pr->scheme == HS_ALWAYS || (pr->scheme == HS_FIRST && p.at0))) {
                uint32_t off, o;
                st = a_put(e, pr->repl, pr->repl_len, &off);
                if (st == KVS_OK)
                    st = a_put(e, e->a.b + p.off, p.len, &o);
                p.off = off;
                p.len += (uint32_t)pr->repl_len;
            }
            if (st == KVS_OK && pr->split) {
                st = find_matches(NULL, NULL, pr->repl, pr->repl_len, -1, e->a.b + p.off, p.len,
                                  sp, e->err);
                if (st == KVS_OK)
                    st = emit_split(e, p, sp, HB_MERGED_NEXT, false);
            } else if (st == KVS_OK) {
                st = l_push(e, &e->next, p);
            }
            break;
        }
        case HP_BYTELEVEL: {
            if (pr->add_prefix_space && e->a.b[p.off] != ' ') {
                uint32_t off, o;
                st = a_put(e, " ", 1, &off);
                if (st == KVS_OK)
                    st = a_put(e, e->a.b + p.off, p.len, &o);
                p.off = off;
                p.len += 1;
            }
            size_t first = e->next.n;
            if (st == KVS_OK && pr->use_regex) {
                st = find_matches(NULL, e->hf->bytelevel_rx, NULL, 0, -1, e->a.b + p.off, p.len,
                                  sp, e->err);
                if (st == KVS_OK)
                    st = emit_split(e, p, sp, HB_ISOLATED, false);
            } else if (st == KVS_OK) {
                st = l_push(e, &e->next, p);
            }
            /* each byte to GPT-2's printable alphabet */
            for (size_t j = first; st == KVS_OK && j < e->next.n; j++) {
                hpiece *q = &e->next.v[j];
                uint32_t off = (uint32_t)e->a.n;
                st = a_reserve(e, (size_t)q->len * 2);
                for (size_t i = 0; st == KVS_OK && i < q->len; i++)
                    e->a.n += kvs_utf8_encode(e->t->byte_cpt[(uint8_t)e->a.b[q->off + i]],
                                              e->a.b + e->a.n);
                q->off = off;
                q->len = (uint32_t)(e->a.n - off);
            }
            break;
        }
        }
    }
    l_swap(e);
    return st;
}

/* ---- the BPE model ------------------------------------------------------------- */

typedef struct bsym {
    int32_t id, prev, next;
    bool alive;
} bsym;

typedef struct bmerge {
    uint32_t rank;
    int32_t pos, new_id;
} bmerge;

typedef struct bwork {
    bsym *sym;
    size_t n_sym, cap_sym;
    bmerge *heap;
    size_t n_heap, cap_heap;
    char *buf;
    size_t cap_buf;
} bwork;

static bool mless(const bmerge *a, const bmerge *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static kvs_status hpush(bwork *w, bmerge m, kvs_error *err)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? 2 * w->cap_heap : 64;
        bmerge *h = realloc(w->heap, cap * sizeof(*h));
        if (!h)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory in BPE");
        w->heap = h;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0 && mless(&m, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = m;
    return KVS_OK;
}

static bmerge hpop(bwork *w)
{
    bmerge top = w->heap[0], last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && mless(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!mless(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

static kvs_status add_sym(bwork *w, int32_t id, kvs_error *err)
{
    if (w->n_sym == w->cap_sym) {
        size_t cap = w->cap_sym ? 2 * w->cap_sym : 64;
        bsym *s = realloc(w->sym, cap * sizeof(*s));
        if (!s)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory in BPE");
        w->sym = s;
        w->cap_sym = cap;
    }
    int32_t i = (int32_t)w->n_sym++;
    w->sym[i] = (bsym){.id = id, .prev = i - 1, .next = -1, .alive = true};
    if (i > 0)
        w->sym[i - 1].next = i;
    return KVS_OK;
}

static kvs_status try_pair(const kvs_tok_hf *hf, bwork *w, int32_t pos, kvs_error *err)
{
    if (pos < 0 || w->sym[pos].next < 0)
        return KVS_OK;
    uint32_t rank;
    int32_t id = kvs_tok_hf_merge_find(&hf->merges, w->sym[pos].id, w->sym[w->sym[pos].next].id,
                                       &rank);
    if (id < 0)
        return KVS_OK;
    return hpush(w, (bmerge){rank, pos, id}, err);
}

static kvs_status bpe_word(const kvs_tok_hf *hf, bwork *w, const char *s, size_t n,
                           kvs_tok_ids *out, kvs_error *err)
{
    if (hf->ignore_merges) {
        int32_t id = kvs_tok_map_find(&hf->vocab, s, n);
        if (id >= 0)
            return kvs_tok_ids_push(out, id, err);
    }
    w->n_sym = 0;
    w->n_heap = 0;
    size_t need = hf->cont_len + 4 + hf->eow_len;
    if (need > w->cap_buf) {
        char *b = realloc(w->buf, need);
        if (!b)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory in BPE");
        w->buf = b;
        w->cap_buf = need;
    }
    int32_t unk = -1; /* a pending (fused) unknown */
    kvs_status st = KVS_OK;
    for (size_t i = 0; st == KVS_OK && i < n;) {
        size_t cl;
        cp_at(s, n, i, &cl);
        size_t m = 0;
        if (i > 0 && hf->cont_prefix) {
            memcpy(w->buf, hf->cont_prefix, hf->cont_len);
            m = hf->cont_len;
        }
        memcpy(w->buf + m, s + i, cl);
        m += cl;
        i += cl;
        if (i == n && hf->eow_suffix) {
            memcpy(w->buf + m, hf->eow_suffix, hf->eow_len);
            m += hf->eow_len;
        }
        int32_t id = kvs_tok_map_find(&hf->vocab, w->buf, m);
        if (id >= 0) {
            if (unk >= 0)
                st = add_sym(w, unk, err);
            unk = -1;
            if (st == KVS_OK)
                st = add_sym(w, id, err);
            continue;
        }
        if (hf->byte_fallback) {
            bool all = true;
            for (size_t j = 0; j < m && all; j++)
                all = hf->byte_id[(uint8_t)w->buf[j]] >= 0;
            if (all) {
                for (size_t j = 0; st == KVS_OK && j < m; j++)
                    st = add_sym(w, hf->byte_id[(uint8_t)w->buf[j]], err);
                continue;
            }
        }
        if (hf->unk >= 0) {
            if (unk >= 0 && !hf->fuse_unk)
                st = add_sym(w, unk, err);
            unk = hf->unk;
        }
    }
    if (st == KVS_OK && unk >= 0)
        st = add_sym(w, unk, err);
    for (int32_t i = 0; st == KVS_OK && i + 1 < (int32_t)w->n_sym; i++)
        st = try_pair(hf, w, i, err);
    while (st == KVS_OK && w->n_heap > 0) {
        bmerge top = hpop(w);
        bsym *l = &w->sym[top.pos];
        if (!l->alive || l->next < 0)
            continue;
        bsym *r = &w->sym[l->next];
        uint32_t rank;
        if (kvs_tok_hf_merge_find(&hf->merges, l->id, r->id, &rank) != top.new_id)
            continue;
        l->id = top.new_id;
        r->alive = false;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = top.pos;
        st = try_pair(hf, w, l->prev, err);
        if (st == KVS_OK)
            st = try_pair(hf, w, top.pos, err);
    }
    for (int32_t i = w->n_sym ? 0 : -1; st == KVS_OK && i >= 0; i = w->sym[i].next)
        st = kvs_tok_ids_push(out, w->sym[i].id, err);
    return st;
}

/* ---- the whole pipeline ---------------------------------------------------------- */

kvs_status kvs_tok_hf_encode(const kvs_tokenizer *t, const char *text, size_t len, bool add_special,
                             bool parse_special, int32_t **ids, size_t *n_ids, kvs_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    const kvs_tok_hf *hf = t->hf;
    henc e = {.t = t, .hf = hf, .err = err};
    kvs_tok_ids out = {0};
    spans sp = {0};
    bwork w = {0};
    kvs_status st = KVS_OK;
    if (len > UINT32_MAX / 8)
        return kvs_fail(err, KVS_E_INVALID, "text of %zu bytes is too long to tokenize", len);

    /* valid UTF-8: each byte that starts no valid sequence becomes U+FFFD */
    st = a_reserve(&e, len * 3 + 16);
    for (size_t i = 0; st == KVS_OK && i < len;) {
        int r = kvs_utf8_check((const uint8_t *)text + i, len - i);
        if (r > 0) {
            memcpy(e.a.b + e.a.n, text + i, (size_t)r);
            e.a.n += (size_t)r;
            i += (size_t)r;
        } else {
            memcpy(e.a.b + e.a.n, "\xef\xbf\xbd", 3);
            e.a.n += 3;
            i++;
        }
    }
    if (st == KVS_OK)
        st = l_push(&e, &e.cur, (hpiece){-1, 0, (uint32_t)e.a.n, true});

    /* added tokens on the raw text; normalize; added tokens on the normalized text */
    for (size_t k = 0; st == KVS_OK && k < e.cur.n; k++)
        st = e.cur.v[k].id >= 0 ? l_push(&e, &e.next, e.cur.v[k])
                                : split_added(&e, e.cur.v[k], false, parse_special);
    l_swap(&e);
    for (size_t k = 0; st == KVS_OK && k < e.cur.n; k++) {
        hpiece p = e.cur.v[k];
        if (p.id >= 0) {
            st = l_push(&e, &e.next, p);
            continue;
        }
        st = normalize(&e, &p);
        if (st == KVS_OK)
            st = split_added(&e, p, true, parse_special);
    }
    l_swap(&e);
    for (size_t k = 0; st == KVS_OK && k < hf->n_pre; k++)
        st = pretok_step(&e, &hf->pre[k], &sp);

    if (st == KVS_OK && add_special)
        for (size_t k = 0; st == KVS_OK && k < hf->n_prefix; k++)
            st = kvs_tok_ids_push(&out, hf->prefix[k], err);
    for (size_t k = 0; st == KVS_OK && k < e.cur.n; k++) {
        hpiece p = e.cur.v[k];
        st = p.id >= 0 ? kvs_tok_ids_push(&out, p.id, err)
                       : bpe_word(hf, &w, e.a.b + p.off, p.len, &out, err);
    }
    if (st == KVS_OK && add_special)
        for (size_t k = 0; st == KVS_OK && k < hf->n_suffix; k++)
            st = kvs_tok_ids_push(&out, hf->suffix[k], err);

    free(e.a.b);
    free(e.cur.v);
    free(e.next.v);
    free(sp.v);
    free(w.sym);
    free(w.heap);
    free(w.buf);
    if (st != KVS_OK) {
        free(out.v);
        return st;
    }
    if (!out.v)
        out.v = malloc(sizeof(int32_t));
    if (!out.v)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for token ids");
    *ids = out.v;
    *n_ids = out.n;
    return KVS_OK;
}
