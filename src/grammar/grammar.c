/* GBNF text -> the byte-level grammar of grammar.h. */
#include "grammar/grammar.h"
#include "core/chars.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- kvs_gbuf ---- */

void kvs_gbuf_put(kvs_gbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = kvs_grealloc(b->ar, b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void kvs_gbuf_puts(kvs_gbuf *b, const char *s) { kvs_gbuf_put(b, s, strlen(s)); }

void kvs_gbuf_printf(kvs_gbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        kvs_gbuf_put(b, tmp, (size_t)n);
        return;
    }
    char *big = kvs_galloc(b->ar, (size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    kvs_gbuf_put(b, big, (size_t)n);
    kvs_gfree(b->ar, big);
}

void kvs_gbuf_literal(kvs_gbuf *b, const char *s, size_t n)
{
    kvs_gbuf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            kvs_gbuf_put(b, e, 2);
        } else if (c >= 0x20 && c != 0x7F) { /* printable ASCII, and UTF-8 as it is */
            kvs_gbuf_put(b, (const char *)&c, 1);
        } else {
            kvs_gbuf_printf(b, "\\x%02X", c);
        }
    }
    kvs_gbuf_put(b, "\"", 1);
}

static int cmp_range(const void *x, const void *y)
{
    const kvs_cp_range *a = x, *b = y;
    return a->lo < b->lo ? -1 : a->lo > b->lo;
}

size_t kvs_cp_ranges_merge(kvs_cp_range *r, size_t n)
{
    if (n)
        qsort(r, n, sizeof *r, cmp_range);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && r[i].lo <= r[k - 1].hi + 1) {
            if (r[i].hi > r[k - 1].hi)
                r[k - 1].hi = r[i].hi;
        } else {
            r[k++] = r[i];
        }
    }
    return k;
}

void kvs_gbuf_free(kvs_gbuf *b)
{
    kvs_garena *ar = b->ar;
    kvs_gfree(ar, b->s);
    memset(b, 0, sizeof *b);
    b->ar = ar;
}

/* ---- the builder ---- */

typedef struct evec {
    kvs_gelem *e;
    int32_t n, cap;
} evec;

typedef struct brule {
    evec *alts;
    int32_t n_alts, cap_alts;
    char *name;
    bool defined, generated;
    size_t first_use;            /* source offset of the first reference (for errors) */
} brule;

typedef struct builder {
    brule *rules;
    int32_t n_rules, cap_rules;
    int32_t *name_tab;           /* open addressing: rule index + 1, 0 empty */
    size_t tab_cap;
    uint64_t (*sets)[4];
    int32_t n_sets, cap_sets;
    int32_t *set_tab;
    size_t set_tab_cap;
    size_t n_elems;
    const char *src;
    size_t len, pos;
    kvs_error *err;
    kvs_status st;               /* first failure */
    kvs_garena *ar;              /* where everything is allocated (NULL: malloc) */
} builder;

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static bool failed(const builder *b) { return b->st != KVS_OK; }

static void line_col(const builder *b, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < b->len; i++) {
        if (b->src[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* The open-addressed tables of rule names and of byte sets hold index + 1 (0: empty) in cap
 * (a power of two) slots, probed linearly from hash & (cap - 1): puts index i of that hash into
 * the first empty slot (the table has one). */
static void tab_put(int32_t *t, size_t cap, uint64_t hash, int32_t i)
{
    size_t h = (size_t)hash & (cap - 1);
    while (t[h])
        h = (h + 1) & (cap - 1);
    t[h] = i + 1;
}

static void fail_at(builder *b, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_at(builder *b, size_t off, const char *fmt, ...)
{
    if (failed(b))
        return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    line_col(b, off, &line, &col);
    b->st = kvs_fail(b->err, KVS_E_INVALID, "grammar: line %d, col %d: %s", line, col, msg);
}

static void oom(builder *b)
{
    if (!failed(b))
        b->st = kvs_fail(b->err, KVS_E_NOMEM, "grammar: out of memory");
}

static bool tab_grow(builder *b)
{
    size_t cap = b->tab_cap ? b->tab_cap * 2 : 64;
    int32_t *t = kvs_gcalloc(b->ar, cap, sizeof *t);
    if (!t)
        return false;
    for (int32_t i = 0; i < b->n_rules; i++) {
        if (b->rules[i].generated)
            continue;
        tab_put(t, cap, hash_bytes(b->rules[i].name, strlen(b->rules[i].name)), i);
    }
    kvs_gfree(b->ar, b->name_tab);
    b->name_tab = t;
    b->tab_cap = cap;
    return true;
}

static int32_t new_rule(builder *b, const char *name, bool generated)
{
    if (failed(b))
        return -1;
    if (b->n_rules == b->cap_rules) {
        int32_t cap = b->cap_rules ? b->cap_rules * 2 : 32;
        brule *r = kvs_grealloc(b->ar, b->rules, (size_t)cap * sizeof *r);
        if (!r) {
            oom(b);
            return -1;
        }
        b->rules = r;
        b->cap_rules = cap;
    }
    brule *r = &b->rules[b->n_rules];
    memset(r, 0, sizeof *r);
    r->generated = generated;
    if (!(r->name = kvs_gstrdup(b->ar, name))) {
        oom(b);
        return -1;
    }
    int32_t id = b->n_rules++;
    if (!generated) {
        if ((size_t)b->n_rules * 2 > b->tab_cap && !tab_grow(b)) {
            oom(b);
            return -1;
        }
        tab_put(b->name_tab, b->tab_cap, hash_bytes(name, strlen(name)), id);
    }
    return id;
}

static int32_t find_rule(builder *b, const char *name, size_t n)
{
    if (!b->tab_cap)
        return -1;
    size_t h = (size_t)hash_bytes(name, n) & (b->tab_cap - 1);
    while (b->name_tab[h]) {
        const char *rn = b->rules[b->name_tab[h] - 1].name;
        if (strlen(rn) == n && memcmp(rn, name, n) == 0)
            return b->name_tab[h] - 1;
        h = (h + 1) & (b->tab_cap - 1);
    }
    return -1;
}

static int32_t rule_named(builder *b, const char *name, size_t n, size_t off)
{
    int32_t id = find_rule(b, name, n);
    if (id >= 0)
        return id;
    char tmp[256];
    if (n >= sizeof tmp) {
        fail_at(b, off, "rule name too long");
        return -1;
    }
    memcpy(tmp, name, n);
    tmp[n] = '\0';
    id = new_rule(b, tmp, false);
    if (id >= 0)
        b->rules[id].first_use = off;
    return id;
}

static evec *new_alt(builder *b, int32_t rule)
{
    if (failed(b))
        return NULL;
    brule *r = &b->rules[rule];
    if (r->n_alts == r->cap_alts) {
        int32_t cap = r->cap_alts ? r->cap_alts * 2 : 2;
        evec *a = kvs_grealloc(b->ar, r->alts, (size_t)cap * sizeof *a);
        if (!a) {
            oom(b);
            return NULL;
        }
        r->alts = a;
        r->cap_alts = cap;
    }
    evec *a = &r->alts[r->n_alts++];
    memset(a, 0, sizeof *a);
    return a;
}

static void push(builder *b, evec *a, uint32_t type, int32_t arg)
{
    if (failed(b))
        return;
    if (++b->n_elems > KVS_GRAMMAR_MAX_ELEMS) {
        b->st = kvs_fail(b->err, KVS_E_INVALID, "grammar: more than %d elements after expanding repetitions",
                         KVS_GRAMMAR_MAX_ELEMS);
        return;
    }
    if (a->n == a->cap) {
        int32_t cap = a->cap ? a->cap * 2 : 8;
        kvs_gelem *e = kvs_grealloc(b->ar, a->e, (size_t)cap * sizeof *e);
        if (!e) {
            oom(b);
            return;
        }
        a->e = e;
        a->cap = cap;
    }
    a->e[a->n++] = (kvs_gelem){type, arg};
}

static int32_t intern_set(builder *b, const uint64_t s[4])
{
    if (failed(b))
        return -1;
    if ((size_t)(b->n_sets + 1) * 2 > b->set_tab_cap) {
        size_t cap = b->set_tab_cap ? b->set_tab_cap * 2 : 64;
        int32_t *t = kvs_gcalloc(b->ar, cap, sizeof *t);
        if (!t) {
            oom(b);
            return -1;
        }
        for (int32_t i = 0; i < b->n_sets; i++) {
            tab_put(t, cap, hash_bytes(b->sets[i], 32), i);
        }
        kvs_gfree(b->ar, b->set_tab);
        b->set_tab = t;
        b->set_tab_cap = cap;
    }
    size_t h = (size_t)hash_bytes(s, 32) & (b->set_tab_cap - 1);
    while (b->set_tab[h]) {
        if (memcmp(b->sets[b->set_tab[h] - 1], s, 32) == 0)
            return b->set_tab[h] - 1;
        h = (h + 1) & (b->set_tab_cap - 1);
    }
    if (b->n_sets == b->cap_sets) {
        int32_t cap = b->cap_sets ? b->cap_sets * 2 : 32;
        uint64_t(*p)[4] = kvs_grealloc(b->ar, b->sets, (size_t)cap * sizeof *p);
        if (!p) {
            oom(b);
            return -1;
        }
        b->sets = p;
        b->cap_sets = cap;
    }
    memcpy(b->sets[b->n_sets], s, 32);
    b->set_tab[h] = b->n_sets + 1;
    return b->n_sets++;
}

static void push_range(builder *b, evec *a, uint8_t lo, uint8_t hi)
{
    uint64_t s[4] = {0};
    for (unsigned c = lo; c <= hi; c++)
        s[c >> 6] |= 1ull << (c & 63);
    push(b, a, KVS_GE_SET, intern_set(b, s));
}

/* ---- code points to UTF-8 byte sequences ---- */

static int utf8_encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* One alternative of `rule` per run of byte ranges that together encode
 * exactly the code points lo..hi (no surrogates inside): the classic
 * split at encoding-length and continuation-byte boundaries. */
static void utf8_split(builder *b, int32_t rule, uint32_t lo, uint32_t hi, int depth)
{
    static const uint32_t maxs[3] = {0x7F, 0x7FF, 0xFFFF};
    if (failed(b) || depth > 64)
        return;
    for (int i = 0; i < 3; i++)
        if (lo <= maxs[i] && hi > maxs[i]) {
            utf8_split(b, rule, lo, maxs[i], depth + 1);
            utf8_split(b, rule, maxs[i] + 1, hi, depth + 1);
            return;
        }
    uint8_t a[4], z[4];
    int n = utf8_encode(lo, a);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                utf8_split(b, rule, lo, lo | m, depth + 1);
                utf8_split(b, rule, (lo | m) + 1, hi, depth + 1);
                return;
            }
            if ((hi & m) != m) {
                utf8_split(b, rule, lo, (hi & ~m) - 1, depth + 1);
                utf8_split(b, rule, hi & ~m, hi, depth + 1);
                return;
            }
        }
    }
    utf8_encode(hi, z);
    evec *alt = new_alt(b, rule);
    for (int i = 0; alt && i < n; i++)
        push_range(b, alt, a[i], z[i]);
}

typedef kvs_cp_range cprange;

typedef struct rvec {
    cprange *r;
    size_t n, cap;
    kvs_garena *ar;
} rvec;

static bool rvec_add(rvec *v, uint32_t lo, uint32_t hi)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        cprange *p = kvs_grealloc(v->ar, v->r, cap * sizeof *p);
        if (!p)
            return false;
        v->r = p;
        v->cap = cap;
    }
    v->r[v->n++] = (cprange){lo, hi};
    return true;
}

/* Sort and merge; negate over all code points when asked; drop surrogates. */
static bool rvec_normalize(rvec *v, bool negate)
{
    v->n = kvs_cp_ranges_merge(v->r, v->n);
    rvec out = {.ar = v->ar};
    if (negate) {
        uint32_t next = 0;
        for (size_t i = 0; i < v->n; i++) {
            if (v->r[i].lo > next && !rvec_add(&out, next, v->r[i].lo - 1))
                goto oom;
            next = v->r[i].hi + 1;
        }
        if (next <= 0x10FFFF && !rvec_add(&out, next, 0x10FFFF))
            goto oom;
    } else {
        for (size_t i = 0; i < v->n; i++)
            if (!rvec_add(&out, v->r[i].lo, v->r[i].hi))
                goto oom;
    }
    /* surrogates are not characters: UTF-8 cannot encode them */
    v->n = 0;
    for (size_t i = 0; i < out.n; i++) {
        uint32_t lo = out.r[i].lo, hi = out.r[i].hi;
        if (hi < 0xD800 || lo > 0xDFFF) {
            if (!rvec_add(v, lo, hi))
                goto oom;
            continue;
        }
        if (lo < 0xD800 && !rvec_add(v, lo, 0xD7FF))
            goto oom;
        if (hi > 0xDFFF && !rvec_add(v, 0xE000, hi))
            goto oom;
    }
    kvs_gfree(v->ar, out.r);
    return true;
oom:
    kvs_gfree(v->ar, out.r);
    return false;
}

/* Append to `a` one element matching exactly one code point of the
 * (normalized) ranges: a byte set when they are all ASCII, else a
 * reference to a fresh rule of UTF-8 alternatives. */
static void push_class(builder *b, evec **a, int32_t owner, const rvec *v, size_t off)
{
    if (v->n == 0) {
        fail_at(b, off, "a character class that matches nothing");
        return;
    }
    if (v->r[v->n - 1].hi < 0x80) {
        uint64_t s[4] = {0};
        for (size_t i = 0; i < v->n; i++)
            for (uint32_t c = v->r[i].lo; c <= v->r[i].hi; c++)
                s[c >> 6] |= 1ull << (c & 63);
        push(b, *a, KVS_GE_SET, intern_set(b, s));
        return;
    }
    char name[300];
    snprintf(name, sizeof name, "%s-char", b->rules[owner].name);
    /* new_rule may move the rules array: *a points into it */
    brule *ob = &b->rules[owner];
    ptrdiff_t ai = *a - ob->alts;
    int32_t cr = new_rule(b, name, true);
    if (cr < 0)
        return;
    *a = &b->rules[owner].alts[ai];
    uint64_t ascii[4] = {0};
    bool any_ascii = false;
    for (size_t i = 0; i < v->n; i++) {
        uint32_t lo = v->r[i].lo, hi = v->r[i].hi;
        for (; lo <= hi && lo < 0x80; lo++) {
            ascii[lo >> 6] |= 1ull << (lo & 63);
            any_ascii = true;
        }
        if (lo <= hi)
            utf8_split(b, cr, lo, hi, 0);
    }
    if (any_ascii) {
        evec *alt = new_alt(b, cr);
        if (alt)
            push(b, alt, KVS_GE_SET, intern_set(b, ascii));
    }
    *a = &b->rules[owner].alts[ai];
    push(b, *a, KVS_GE_REF, cr);
}

/* ---- the GBNF parser ---- */

static int peek(const builder *b) { return b->pos < b->len ? (unsigned char)b->src[b->pos] : -1; }

static void skip_space(builder *b, bool newline_ok)
{
    while (b->pos < b->len) {
        char c = b->src[b->pos];
        if (c == ' ' || c == '\t') {
            b->pos++;
        } else if (c == '#') {
            while (b->pos < b->len && b->src[b->pos] != '\n')
                b->pos++;
        } else if (newline_ok && (c == '\n' || c == '\r')) {
            b->pos++;
        } else {
            break;
        }
    }
}

static bool is_name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* One character of a literal or class (escapes, UTF-8) as a code point;
 * false after a failure. */
static bool parse_char(builder *b, uint32_t *cp)
{
    size_t off = b->pos;
    if (b->pos >= b->len) {
        fail_at(b, off, "unexpected end of the grammar");
        return false;
    }
    unsigned char c = (unsigned char)b->src[b->pos++];
    if (c == '\\') {
        if (b->pos >= b->len) {
            fail_at(b, off, "unexpected end after '\\'");
            return false;
        }
        char e = b->src[b->pos++];
        int nhex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (nhex) {
            uint32_t v = 0;
            for (int i = 0; i < nhex; i++) {
                int h = b->pos < b->len ? kvs_hex_digit((unsigned char)b->src[b->pos]) : -1;
                if (h < 0) {
                    fail_at(b, off, "'\\%c' needs %d hex digits", e, nhex);
                    return false;
                }
                v = v * 16 + (uint32_t)h;
                b->pos++;
            }
            if (v > 0x10FFFF) {
                fail_at(b, off, "code point U+%X is beyond U+10FFFF", v);
                return false;
            }
            *cp = v;
            return true;
        }
        switch (e) {
        case 'n': *cp = '\n'; return true;
        case 'r': *cp = '\r'; return true;
        case 't': *cp = '\t'; return true;
        case '0': *cp = 0; return true;
        default:
            if ((unsigned char)e >= 0x21 && (unsigned char)e < 0x7F && !is_name_char((unsigned char)e)) {
                *cp = (unsigned char)e; /* \\ \" \[ \] \- \^ \. ... stand for themselves */
                return true;
            }
            fail_at(b, off, "unknown escape '\\%c'", e);
            return false;
        }
    }
    if (c < 0x80) {
        *cp = c;
        return true;
    }
    int n = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    if (!n || c >= 0xF5) {
        fail_at(b, off, "invalid UTF-8 in the grammar");
        return false;
    }
    uint32_t v = c & (0x7F >> n);
    for (int i = 1; i < n; i++) {
        if (b->pos >= b->len || ((unsigned char)b->src[b->pos] & 0xC0) != 0x80) {
            fail_at(b, off, "invalid UTF-8 in the grammar");
            return false;
        }
        v = (v << 6) | ((unsigned char)b->src[b->pos++] & 0x3F);
    }
    static const uint32_t min_for[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min_for[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        fail_at(b, off, "invalid UTF-8 in the grammar");
        return false;
    }
    *cp = v;
    return true;
}

static void push_codepoint(builder *b, evec *a, uint32_t cp, size_t off)
{
    if (cp >= 0xD800 && cp <= 0xDFFF) {
        fail_at(b, off, "U+%04X is a surrogate, not a character", cp);
        return;
    }
    uint8_t u[4];
    int n = utf8_encode(cp, u);
    for (int i = 0; i < n; i++)
        push_range(b, a, u[i], u[i]);
}

static void parse_alternates(builder *b, int32_t rule, bool nested, int depth);

/* Repeat the item a->e[start..] min..max times (max < 0: unbounded). */
static void repeat(builder *b, evec **ap, int32_t owner, int32_t start, long min, long max, size_t off)
{
    if (failed(b))
        return;
    evec *a = *ap;
    if (start >= a->n) {
        fail_at(b, off, "a repetition operator with nothing before it");
        return;
    }
    if (min > KVS_GRAMMAR_MAX_REPEAT || max > KVS_GRAMMAR_MAX_REPEAT) {
        fail_at(b, off, "repetition counts are limited to %d", KVS_GRAMMAR_MAX_REPEAT);
        return;
    }
    char name[300];
    brule *ob = &b->rules[owner];
    ptrdiff_t ai = a - ob->alts;
    kvs_gelem item;
    if (a->n - start == 1) {
        item = a->e[start];
    } else { /* wrap the item in a rule of its own */
        snprintf(name, sizeof name, "%s-item", ob->name);
        int32_t ir = new_rule(b, name, true);
        if (ir < 0)
            return;
        a = &b->rules[owner].alts[ai];
        evec *ia = new_alt(b, ir);
        if (!ia)
            return;
        a = &b->rules[owner].alts[ai];
        for (int32_t i = start; i < a->n; i++)
            push(b, ia, a->e[i].type, a->e[i].arg);
        item = (kvs_gelem){KVS_GE_REF, ir};
    }
    a->n = start;
    for (long i = 0; i < min; i++)
        push(b, a, item.type, item.arg);
    if (max == min) {
        *ap = a;
        return;
    }
    snprintf(name, sizeof name, "%s-rep", b->rules[owner].name);
    if (max < 0) { /* R ::= item R | (empty) */
        int32_t r = new_rule(b, name, true);
        if (r < 0)
            return;
        evec *x = new_alt(b, r);
        if (!x)
            return;
        push(b, x, item.type, item.arg);
        push(b, x, KVS_GE_REF, r);
        new_alt(b, r);
        a = &b->rules[owner].alts[ai];
        push(b, a, KVS_GE_REF, r);
        *ap = a;
        return;
    }
    /* O_1 ::= item | (empty);  O_k ::= item O_{k-1} | (empty) */
    int32_t prev = -1;
    for (long k = 1; k <= max - min && !failed(b); k++) {
        int32_t r = new_rule(b, name, true);
        if (r < 0)
            return;
        evec *x = new_alt(b, r);
        if (!x)
            return;
        push(b, x, item.type, item.arg);
        if (prev >= 0)
            push(b, x, KVS_GE_REF, prev);
        new_alt(b, r);
        prev = r;
    }
    a = &b->rules[owner].alts[ai];
    if (prev >= 0)
        push(b, a, KVS_GE_REF, prev);
    *ap = a;
}

static long parse_int(builder *b)
{
    long v = -1;
    while (b->pos < b->len && b->src[b->pos] >= '0' && b->src[b->pos] <= '9') {
        if (v < 0)
            v = 0;
        if (v < 1000000000)
            v = v * 10 + (b->src[b->pos] - '0');
        b->pos++;
    }
    return v;
}

static void parse_sequence(builder *b, int32_t owner, evec *a, bool nested, int depth)
{
    int32_t last = -1; /* where the last item starts */
    ptrdiff_t ai = a - b->rules[owner].alts;
    while (!failed(b) && b->pos < b->len) {
        a = &b->rules[owner].alts[ai];
        size_t off = b->pos;
        int c = peek(b);
        if (c == '"') {
            b->pos++;
            last = a->n;
            while (!failed(b) && peek(b) != '"') {
                size_t coff = b->pos;
                uint32_t cp;
                if (peek(b) < 0 || peek(b) == '\n') {
                    fail_at(b, off, "unterminated literal");
                    return;
                }
                if (!parse_char(b, &cp))
                    return;
                push_codepoint(b, a, cp, coff);
            }
            b->pos++;
            if (a->n == last) /* "" is nothing: a repetition after it has no item */
                last = -1;
        } else if (c == '[') {
            b->pos++;
            bool neg = false;
            if (peek(b) == '^') {
                neg = true;
                b->pos++;
            }
            rvec v = {.ar = b->ar};
            while (!failed(b) && peek(b) != ']') {
                if (peek(b) < 0) {
                    fail_at(b, off, "unterminated character class");
                    break;
                }
                uint32_t lo, hi;
                if (!parse_char(b, &lo))
                    break;
                hi = lo;
                if (peek(b) == '-' && b->pos + 1 < b->len && b->src[b->pos + 1] != ']') {
                    b->pos++;
                    if (!parse_char(b, &hi))
                        break;
                    if (hi < lo) {
                        fail_at(b, off, "a character range that runs backwards");
                        break;
                    }
                }
                if (!rvec_add(&v, lo, hi))
                    oom(b);
            }
            if (!failed(b)) {
                b->pos++;
                if (!rvec_normalize(&v, neg))
                    oom(b);
                last = a->n;
                push_class(b, &a, owner, &v, off);
            }
            kvs_gfree(b->ar, v.r);
        } else if (c == '.') {
            b->pos++;
            rvec v = {.ar = b->ar};
            if (!rvec_add(&v, 0, 0x10FFFF) || !rvec_normalize(&v, false))
                oom(b);
            last = a->n;
            push_class(b, &a, owner, &v, off);
            kvs_gfree(b->ar, v.r);
        } else if (is_name_char(c)) {
            size_t s = b->pos;
            while (b->pos < b->len && is_name_char((unsigned char)b->src[b->pos]))
                b->pos++;
            /* the next rule's definition ends this sequence (a rule on the next line) */
            size_t save = b->pos;
            skip_space(b, false);
            if (b->pos + 2 < b->len + 0 && memcmp(b->src + b->pos, "::=", 3) == 0) {
                b->pos = s;
                return;
            }
            b->pos = save;
            int32_t r = rule_named(b, b->src + s, b->pos - s, s);
            if (r < 0)
                return;
            a = &b->rules[owner].alts[ai];
            last = a->n;
            push(b, a, KVS_GE_REF, r);
        } else if (c == '(') {
            b->pos++;
            if (depth > 200) {
                fail_at(b, off, "groups nested too deeply");
                return;
            }
            char name[300];
            snprintf(name, sizeof name, "%s-group", b->rules[owner].name);
            int32_t gr = new_rule(b, name, true);
            if (gr < 0)
                return;
            skip_space(b, true);
            parse_alternates(b, gr, true, depth + 1);
            if (failed(b))
                return;
            if (peek(b) != ')') {
                fail_at(b, off, "'(' without its ')'");
                return;
            }
            b->pos++;
            a = &b->rules[owner].alts[ai];
            last = a->n;
            push(b, a, KVS_GE_REF, gr);
        } else if (c == '*' || c == '+' || c == '?') {
            b->pos++;
            if (last < 0) {
                fail_at(b, off, "'%c' with nothing before it", c);
                return;
            }
            repeat(b, &a, owner, last, c == '+' ? 1 : 0, c == '?' ? 1 : -1, off);
            last = -1; /* x** is not allowed: the item is gone */
        } else if (c == '{') {
            b->pos++;
            skip_space(b, false);
            long min = parse_int(b), max;
            skip_space(b, false);
            if (min < 0) {
                fail_at(b, off, "'{' needs a count: {m}, {m,} or {m,n}");
                return;
            }
            if (peek(b) == ',') {
                b->pos++;
                skip_space(b, false);
                max = parse_int(b);
                skip_space(b, false);
            } else {
                max = min;
            }
            if (peek(b) != '}') {
                fail_at(b, off, "'{' without its '}'");
                return;
            }
            b->pos++;
            if (max >= 0 && max < min) {
                fail_at(b, off, "{%ld,%ld}: the maximum is below the minimum", min, max);
                return;
            }
            if (last < 0) {
                fail_at(b, off, "'{' with nothing before it");
                return;
            }
            repeat(b, &a, owner, last, min, max, off);
            last = -1;
        } else {
            break;
        }
        skip_space(b, nested);
    }
}

static void parse_alternates(builder *b, int32_t rule, bool nested, int depth)
{
    evec *a = new_alt(b, rule);
    if (!a)
        return;
    parse_sequence(b, rule, a, nested, depth);
    while (!failed(b) && peek(b) == '|') {
        b->pos++;
        skip_space(b, true);
        if (!(a = new_alt(b, rule)))
            return;
        parse_sequence(b, rule, a, nested, depth);
    }
}

static void parse_rules(builder *b)
{
    skip_space(b, true);
    while (!failed(b) && b->pos < b->len) {
        size_t off = b->pos;
        size_t s = b->pos;
        while (b->pos < b->len && is_name_char((unsigned char)b->src[b->pos]))
            b->pos++;
        if (b->pos == s) {
            fail_at(b, off, "expected a rule name");
            return;
        }
        int32_t r = rule_named(b, b->src + s, b->pos - s, s);
        if (r < 0)
            return;
        if (b->rules[r].defined) {
            fail_at(b, off, "rule '%s' is defined twice", b->rules[r].name);
            return;
        }
        b->rules[r].defined = true;
        skip_space(b, false);
        if (b->pos + 3 > b->len || memcmp(b->src + b->pos, "::=", 3) != 0) {
            fail_at(b, b->pos, "expected '::=' after rule name '%s'", b->rules[r].name);
            return;
        }
        b->pos += 3;
        skip_space(b, true);
        parse_alternates(b, r, false, 0);
        if (failed(b))
            return;
        int c = peek(b);
        if (c == '\r' || c == '\n') {
            skip_space(b, true);
        } else if (c >= 0 && !is_name_char(c)) { /* a rule name starts the next rule */
            fail_at(b, b->pos, "unexpected '%c'", c);
            return;
        }
    }
}

/* ---- finishing ---- */

static void builder_free(builder *b)
{
    if (b->ar) /* the arena's blocks go with the arena */
        return;
    for (int32_t i = 0; i < b->n_rules; i++) {
        for (int32_t j = 0; j < b->rules[i].n_alts; j++)
            free(b->rules[i].alts[j].e);
        free(b->rules[i].alts);
        free(b->rules[i].name);
    }
    free(b->rules);
    free(b->name_tab);
    free(b->sets);
    free(b->set_tab);
}

void kvs_grammar_unref(kvs_grammar *g)
{
    if (!g || __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    if (g->arena) { /* it lives in its slot's arena: the slot goes back */
        if (g->release)
            g->release(g->release_ctx);
        return;
    }
    for (int32_t i = 0; g->rule_names && i < g->n_rules; i++)
        free(g->rule_names[i]);
    free(g->rule_names);
    free(g->alt_begin);
    free(g->alts);
    free(g->elems);
    free(g->sets);
    free(g);
}

kvs_grammar *kvs_grammar_ref(kvs_grammar *g)
{
    if (g)
        __atomic_add_fetch(&g->refs, 1, __ATOMIC_ACQ_REL);
    return g;
}

/* Rules that can match the empty string (fixpoint). */
static bool *nullable_rules(const kvs_grammar *g)
{
    bool *nul = kvs_gcalloc(g->arena, (size_t)g->n_rules + 1, 1);
    if (!nul)
        return NULL;
    for (bool changed = true; changed;) {
        changed = false;
        for (int32_t r = 0; r < g->n_rules; r++) {
            if (nul[r])
                continue;
            for (int32_t k = g->alt_begin[r]; k < g->alt_begin[r + 1] && !nul[r]; k++) {
                int32_t p = g->alts[k];
                while (g->elems[p].type == KVS_GE_REF && nul[g->elems[p].arg])
                    p++;
                if (g->elems[p].type == KVS_GE_END) {
                    nul[r] = true;
                    changed = true;
                }
            }
        }
    }
    return nul;
}

/* A rule that reaches itself through references that can come first
 * (only nullable elements before them): iterative depth-first search. */
static kvs_status check_left_recursion(const kvs_grammar *g, kvs_error *err)
{
    kvs_status st = KVS_OK;
    bool *nul = nullable_rules(g);
    uint8_t *color = kvs_gcalloc(g->arena, (size_t)g->n_rules + 1, 1);
    /* stack of (rule, alternative index, element index) */
    int32_t *sr = kvs_galloc(g->arena, ((size_t)g->n_rules + 1) * 3 * sizeof *sr);
    if (!nul || !color || !sr) {
        st = kvs_fail(err, KVS_E_NOMEM, "grammar: out of memory");
        goto done;
    }
    for (int32_t start = 0; start < g->n_rules && st == KVS_OK; start++) {
        if (color[start])
            continue;
        int32_t sp = 0;
        sr[0] = start, sr[1] = g->alt_begin[start], sr[2] = -1;
        sp = 1;
        color[start] = 1;
        while (sp > 0) {
            int32_t *f = &sr[(sp - 1) * 3];
            int32_t r = f[0];
            /* advance to the next first-reference of r */
            int32_t next = -1;
            while (f[1] < g->alt_begin[r + 1]) {
                int32_t p = f[2] < 0 ? g->alts[f[1]] : f[2] + 1;
                if (f[2] >= 0 && !(g->elems[f[2]].type == KVS_GE_REF && nul[g->elems[f[2]].arg]))
                    p = -1; /* the element before could not be skipped */
                if (p >= 0 && g->elems[p].type == KVS_GE_REF) {
                    f[2] = p;
                    next = g->elems[p].arg;
                    break;
                }
                f[1]++;
                f[2] = -1;
            }
            if (next < 0) {
                color[r] = 2;
                sp--;
                continue;
            }
            if (color[next] == 1) {
                const char *name = g->rule_names[next];
                bool gen = strstr(name, "-rep") != NULL;
                st = kvs_fail(err, KVS_E_INVALID,
                              gen ? "grammar: a repetition of something that can match the empty string (in rule '%s')"
                                  : "grammar: left recursion in rule '%s'",
                              name);
                break;
            }
            if (color[next] == 0) {
                color[next] = 1;
                int32_t *nf = &sr[sp * 3];
                nf[0] = next, nf[1] = g->alt_begin[next], nf[2] = -1;
                sp++;
            }
        }
    }
done: /* newest first, so that an arena takes the bytes back */
    kvs_gfree(g->arena, sr);
    kvs_gfree(g->arena, color);
    kvs_gfree(g->arena, nul);
    return st;
}

static kvs_status finish(builder *b, kvs_grammar **out)
{
    for (int32_t i = 0; i < b->n_rules; i++)
        if (!b->rules[i].generated && !b->rules[i].defined) {
            fail_at(b, b->rules[i].first_use, "undefined rule '%s'", b->rules[i].name);
            return b->st;
        }
    int32_t root = find_rule(b, "root", 4);
    if (root < 0)
        return kvs_fail(b->err, KVS_E_INVALID, "grammar: there is no 'root' rule");
    kvs_grammar *g = kvs_gcalloc(b->ar, 1, sizeof *g);
    if (!g)
        return kvs_fail(b->err, KVS_E_NOMEM, "grammar: out of memory");
    g->refs = 1;
    g->arena = b->ar;
    g->n_rules = b->n_rules;
    g->root = root;
    int32_t n_alts = 0;
    size_t n_elems = 0;
    for (int32_t i = 0; i < b->n_rules; i++) {
        n_alts += b->rules[i].n_alts;
        for (int32_t j = 0; j < b->rules[i].n_alts; j++)
            n_elems += (size_t)b->rules[i].alts[j].n + 1;
    }
    g->alt_begin = kvs_galloc(b->ar, ((size_t)b->n_rules + 1) * sizeof *g->alt_begin);
    g->alts = kvs_galloc(b->ar, ((size_t)n_alts + 1) * sizeof *g->alts);
    g->elems = kvs_galloc(b->ar, (n_elems + 1) * sizeof *g->elems);
    g->rule_names = kvs_gcalloc(b->ar, (size_t)b->n_rules, sizeof *g->rule_names);
    g->sets = kvs_galloc(b->ar, ((size_t)b->n_sets + 1) * sizeof *g->sets);
    if (!g->alt_begin || !g->alts || !g->elems || !g->rule_names || !g->sets) {
        kvs_grammar_unref(g);
        return kvs_fail(b->err, KVS_E_NOMEM, "grammar: out of memory");
    }
    if (b->n_sets > 0)
        memcpy(g->sets, b->sets, (size_t)b->n_sets * sizeof *g->sets);
    g->n_sets = b->n_sets;
    int32_t k = 0, p = 0;
    for (int32_t i = 0; i < b->n_rules; i++) {
        g->alt_begin[i] = k;
        g->rule_names[i] = b->rules[i].name;
        b->rules[i].name = NULL;
        for (int32_t j = 0; j < b->rules[i].n_alts; j++) {
            g->alts[k++] = p;
            if (b->rules[i].alts[j].n > 0)
                memcpy(&g->elems[p], b->rules[i].alts[j].e, (size_t)b->rules[i].alts[j].n * sizeof *g->elems);
            p += b->rules[i].alts[j].n;
            g->elems[p++] = (kvs_gelem){KVS_GE_END, 0};
        }
    }
    g->alt_begin[b->n_rules] = k;
    g->n_alts = k;
    g->n_elems = p;
    kvs_status st = check_left_recursion(g, b->err);
    if (st != KVS_OK) {
        kvs_grammar_unref(g);
        return st;
    }
    *out = g;
    return KVS_OK;
}

kvs_status kvs_grammar_parse(kvs_grammar **out, const char *text, size_t len, kvs_error *err)
{
    return kvs_grammar_parse_in(NULL, out, text, len, err);
}

kvs_status kvs_grammar_parse_in(kvs_garena *ar, kvs_grammar **out, const char *text, size_t len, kvs_error *err)
{
    *out = NULL;
    builder b = {.src = text, .len = len, .err = err, .ar = ar};
    parse_rules(&b);
    kvs_status st = b.st;
    if (st == KVS_OK)
        st = finish(&b, out);
    builder_free(&b);
    return st;
}
