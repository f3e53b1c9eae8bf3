/* jinja_value.c - the arena, the value model and Python's str()/repr()/json.dumps
 * of values (see jinja_internal.h). */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_internal.h"

/* ---- errors and the arena ---- */

void jfail(jctx *c, kvs_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    c->st = st;
    longjmp(c->jb, 1);
}

void *jalloc(jctx *c, size_t n)
{
    jarena *a = &c->arena;
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0)
        n = sizeof(max_align_t);
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > a->limit)
            jfail(c, KVS_E_BUDGET, "template exceeds its memory limit (%zu bytes)", a->limit);
        jchunk *ch = malloc(sizeof *ch + cap);
        if (!ch)
            jfail(c, KVS_E_NOMEM, "out of memory rendering the template");
        ch->next = a->head;
        ch->used = 0;
        ch->cap = cap;
        a->head = ch;
        a->total += cap;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

void *jgrow(jctx *c, const void *old, size_t n, size_t cap, size_t size)
{
    void *p = jalloc(c, cap * size);
    if (n)
        memcpy(p, old, n * size);
    return p;
}

void jarena_free(jarena *a)
{
    jchunk *ch = a->head;
    while (ch) {
        jchunk *next = ch->next;
        free(ch);
        ch = next;
    }
    a->head = NULL;
    a->total = 0;
}

void jctx_release(jctx *c)
{
    if (c->loc != (locale_t)0)
        freelocale(c->loc);
    c->loc = (locale_t)0;
}

char *jstrdup(jctx *c, const char *s, size_t n)
{
    char *p = jalloc(c, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- constructors ---- */

jv jv_str(jctx *c, const char *p, size_t n)
{
    return jv_strn(jstrdup(c, p, n), n);
}

jv jv_cstr(const char *s)
{
    return jv_strn(s, strlen(s));
}

jv jv_undef_msg(jctx *c, const char *fmt, ...)
{
    char tmp[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    jv v = {.t = JV_UNDEF};
    v.undef = jstrdup(c, tmp, strlen(tmp));
    return v;
}

jv jv_list(jctx *c, size_t cap)
{
    jlist *l = jalloc(c, sizeof *l);
    l->n = 0;
    l->cap = cap;
    l->v = cap ? jalloc(c, cap * sizeof(jv)) : NULL;
    jv v = {.t = JV_LIST, .l = l};
    return v;
}

jv jv_dict(jctx *c, size_t cap)
{
    jdict *d = jalloc(c, sizeof *d);
    d->n = 0;
    d->cap = cap;
    d->k = cap ? jalloc(c, cap * sizeof(jv)) : NULL;
    d->v = cap ? jalloc(c, cap * sizeof(jv)) : NULL;
    jv v = {.t = JV_DICT, .d = d};
    return v;
}

void jlist_push(jctx *c, jlist *l, jv v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        l->v = jgrow(c, l->v, l->n, cap, sizeof(jv));
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

static ptrdiff_t jdict_find(const jdict *d, jv k)
{
    for (size_t i = 0; i < d->n; i++)
        if (jv_eq(d->k[i], k))
            return (ptrdiff_t)i;
    return -1;
}

void jdict_set(jctx *c, jdict *d, jv k, jv v)
{
    ptrdiff_t i = jdict_find(d, k);
    if (i >= 0) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        d->k = jgrow(c, d->k, d->n, cap, sizeof(jv));
        d->v = jgrow(c, d->v, d->n, cap, sizeof(jv));
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

bool jdict_get(const jdict *d, jv k, jv *out)
{
    ptrdiff_t i = jdict_find(d, k);
    if (i < 0)
        return false;
    *out = d->v[i];
    return true;
}

bool jdict_gets(const jdict *d, const char *k, jv *out)
{
    size_t n = strlen(k);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].s.n == n && memcmp(d->k[i].s.p, k, n) == 0) {
            *out = d->v[i];
            return true;
        }
    return false;
}

/* ---- Python semantics ---- */

bool jv_truthy(jv v)
{
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE:
        return false;
    case JV_BOOL:
        return v.b;
    case JV_INT:
        return v.i != 0;
    case JV_FLOAT:
        return v.f != 0.0;
    case JV_STR:
        return v.s.n > 0;
    case JV_LIST:
        return v.l->n > 0;
    case JV_DICT:
        return v.d->n > 0;
    default:
        return true;
    }
}

static bool is_num(jv v)
{
    return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
}

static double num_f(jv v)
{
    return v.t == JV_FLOAT ? v.f : v.t == JV_INT ? (double)v.i : v.t == JV_BOOL ? (double)v.b : 0.0;
}

#define JV_MAX_NEST 200 /* nesting of values that eq / repr / json / input conversion follow */

static bool eq_rec(jv a, jv b, int depth);

bool jv_eq(jv a, jv b)
{
    return eq_rec(a, b, 0);
}

/* Deeper than JV_MAX_NEST compares unequal (Python would raise RecursionError). */
static bool eq_rec(jv a, jv b, int depth)
{
    if (depth > JV_MAX_NEST)
        return false;
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT)
            return (a.t == JV_INT ? a.i : a.b) == (b.t == JV_INT ? b.i : b.b);
        return num_f(a) == num_f(b);
    }
    if (a.t != b.t) {
        if ((a.t == JV_DICT || a.t == JV_NS) && (b.t == JV_DICT || b.t == JV_NS))
            ;
        else
            return false;
    }
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE:
        return true;
    case JV_STR:
        return a.s.n == b.s.n && memcmp(a.s.p, b.s.p, a.s.n) == 0;
    case JV_LIST:
        if (a.tuple != b.tuple || a.l->n != b.l->n)
            return false;
        for (size_t i = 0; i < a.l->n; i++)
            if (!eq_rec(a.l->v[i], b.l->v[i], depth + 1))
                return false;
        return true;
    case JV_DICT:
    case JV_NS:
        if (a.t != b.t || a.d->n != b.d->n)
            return false;
        for (size_t i = 0; i < a.d->n; i++) {
            jv o;
            if (!jdict_get(b.d, a.d->k[i], &o) || !eq_rec(a.d->v[i], o, depth + 1))
                return false;
        }
        return true;
    case JV_MACRO:
        return a.mac == b.mac;
    case JV_FUNC:
        return a.i == b.i;
    default:
        return false;
    }
}

const char *jv_typename(jv v)
{
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_LOOP: return "LoopContext";
    case JV_MACRO: return "Macro";
    default: return "builtin_function_or_method";
    }
}

static int cmp_rec(jctx *c, jv a, jv b, int depth);

int jv_cmp(jctx *c, jv a, jv b)
{
    return cmp_rec(c, a, b, 0);
}

static int cmp_rec(jctx *c, jv a, jv b, int depth)
{
    if (depth > JV_MAX_NEST)
        jfail(c, KVS_E_INVALID, "maximum recursion depth exceeded in comparison");
    if (is_num(a) && is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
            int64_t x = a.t == JV_INT ? a.i : a.b, y = b.t == JV_INT ? b.i : b.b;
            return x < y ? -1 : x > y;
        }
        double x = num_f(a), y = num_f(b);
        return x < y ? -1 : x > y;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.s.n < b.s.n ? a.s.n : b.s.n;
        int r = memcmp(a.s.p, b.s.p, n);
        if (r)
            return r;
        return a.s.n < b.s.n ? -1 : a.s.n > b.s.n;
    }
    if (a.t == JV_LIST && b.t == JV_LIST && a.tuple == b.tuple) {
        size_t n = a.l->n < b.l->n ? a.l->n : b.l->n;
        for (size_t i = 0; i < n; i++)
            if (!jv_eq(a.l->v[i], b.l->v[i]))
                return cmp_rec(c, a.l->v[i], b.l->v[i], depth + 1);
        return a.l->n < b.l->n ? -1 : a.l->n > b.l->n;
    }
    jfail(c, KVS_E_INVALID, "'<' not supported between instances of '%s' and '%s'", jv_typename(a),
          jv_typename(b));
}

bool jv_iterable(jv v)
{
    return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
}

bool jv_is_seq(jv v)
{
    return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
}

jlist *jv_iter(jctx *c, jv v)
{
    jv out;
    switch (v.t) {
    case JV_UNDEF:
        return jv_list(c, 0).l;
    case JV_LIST:
        return v.l;
    case JV_DICT:
        out = jv_list(c, v.d->n);
        for (size_t i = 0; i < v.d->n; i++)
            out.l->v[out.l->n++] = v.d->k[i];
        return out.l;
    case JV_STR: {
        out = jv_list(c, v.s.n);
        size_t i = 0;
        while (i < v.s.n) {
            size_t adv;
            ju8_decode(v.s.p + i, v.s.n - i, &adv);
            out.l->v[out.l->n++] = jv_strn(v.s.p + i, adv);
            i += adv;
        }
        return out.l;
    }
    default:
        jfail(c, KVS_E_INVALID, "'%s' object is not iterable", jv_typename(v));
    }
}

size_t jv_len(jctx *c, jv v)
{
    switch (v.t) {
    case JV_UNDEF:
        return 0;
    case JV_STR:
        return ju8_count(v.s.p, v.s.n);
    case JV_LIST:
        return v.l->n;
    case JV_DICT:
    case JV_NS:
        return v.d->n;
    default:
        jfail(c, KVS_E_INVALID, "object of type '%s' has no len()", jv_typename(v));
    }
}

/* ---- UTF-8 ---- */

uint32_t ju8_decode(const char *s, size_t n, size_t *adv)
{
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) {
        *adv = 0;
        return 0;
    }
    unsigned b = u[0];
    size_t need = b < 0x80 ? 0 : (b & 0xe0) == 0xc0 ? 1 : (b & 0xf0) == 0xe0 ? 2 : (b & 0xf8) == 0xf0 ? 3 : 9;
    if (need == 0 || need == 9 || need >= n + 0 || need > n - 1) {
        *adv = 1;
        return b;
    }
    uint32_t cp = b & (0x3f >> need);
    for (size_t i = 1; i <= need; i++) {
        if ((u[i] & 0xc0) != 0x80) {
            *adv = 1;
            return b;
        }
        cp = cp << 6 | (u[i] & 0x3f);
    }
    *adv = need + 1;
    return cp;
}

size_t ju8_count(const char *s, size_t n)
{
    size_t i = 0, k = 0, adv;
    while (i < n) {
        ju8_decode(s + i, n - i, &adv);
        i += adv;
        k++;
    }
    return k;
}

size_t ju8_offset(const char *s, size_t n, size_t cp)
{
    size_t i = 0, adv;
    while (i < n && cp > 0) {
        ju8_decode(s + i, n - i, &adv);
        i += adv;
        cp--;
    }
    return i;
}

bool ju_isspace(uint32_t cp)
{
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f) || cp == 0x85 || cp == 0xa0)
        return true;
    return cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

/* ---- text buffers ---- */

void jbuf_put(jctx *c, jbuf *b, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        if (cap > c->arena.limit)
            jfail(c, KVS_E_BUDGET, "template exceeds its memory limit (%zu bytes)", c->arena.limit);
        b->p = jgrow(c, b->p, b->n, cap, 1);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void jbuf_puts(jctx *c, jbuf *b, const char *s)
{
    jbuf_put(c, b, s, strlen(s));
}

jv jbuf_str(jbuf *b)
{
    return jv_strn(b->p ? b->p : "", b->n);
}

/* Python's repr(float): the shortest digits that read back, fixed notation
 * for exponents -4..15, else d.ddde+XX. */
void jfloat_repr(double f, char *buf, size_t cap)
{
    if (isnan(f)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX */
    char digits[32];
    size_t nd = 0;
    const char *p = tmp;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int e10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    int decpt = e10 + 1;
    char *o = buf;
    size_t left = cap;
#define PUT(...)                                                                                                      \
    do {                                                                                                              \
        int w_ = snprintf(o, left, __VA_ARGS__);                                                                      \
        if (w_ > 0 && (size_t)w_ < left) {                                                                            \
            o += w_;                                                                                                  \
            left -= (size_t)w_;                                                                                       \
        }                                                                                                             \
    } while (0)
    if (neg)
        PUT("-");
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            PUT("0.");
            for (int i = 0; i < -decpt; i++)
                PUT("0");
            PUT("%s", digits);
        } else if ((size_t)decpt < nd) {
            PUT("%.*s.%s", decpt, digits, digits + decpt);
        } else {
            PUT("%s", digits);
            for (size_t i = nd; i < (size_t)decpt; i++)
                PUT("0");
            PUT(".0");
        }
    } else {
        PUT("%c", digits[0]);
        if (nd > 1)
            PUT(".%s", digits + 1);
        int x = decpt - 1;
        PUT("e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
    }
#undef PUT
}

static bool repr_printable(uint32_t cp)
{
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad)
        return false;
    if (cp < 0x300)
        return true;
    if ((cp >= 0x600 && cp <= 0x605) || cp == 0x61c || cp == 0x6dd || cp == 0x70f || cp == 0x1680 ||
        cp == 0x180e || (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
        (cp >= 0x205f && cp <= 0x2064) || (cp >= 0x2066 && cp <= 0x206f) || cp == 0x3000 ||
        (cp >= 0xd800 && cp <= 0xf8ff) || cp == 0xfeff || (cp >= 0xfff0 && cp <= 0xfffb) || cp >= 0xfffe)
        return cp >= 0x10000 && cp < 0xe0000 && cp != 0x1bca0 && !(cp >= 0x1d173 && cp <= 0x1d17a);
    if (cp >= 0xe0000)
        return cp >= 0xe0100 && cp <= 0xe01ef;
    return true;
}

static void write_py_str_repr(jctx *c, jbuf *b, const char *s, size_t n)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jbuf_put(c, b, &q, 1);
    size_t i = 0;
    while (i < n) {
        size_t adv;
        uint32_t cp = ju8_decode(s + i, n - i, &adv);
        char esc[16];
        if (cp == (uint32_t)q || cp == '\\') {
            esc[0] = '\\';
            esc[1] = (char)cp;
            jbuf_put(c, b, esc, 2);
        } else if (cp == '\n') {
            jbuf_puts(c, b, "\\n");
        } else if (cp == '\r') {
            jbuf_puts(c, b, "\\r");
        } else if (cp == '\t') {
            jbuf_puts(c, b, "\\t");
        } else if (repr_printable(cp)) {
            jbuf_put(c, b, s + i, adv);
        } else {
            if (cp < 0x100)
                snprintf(esc, sizeof esc, "\\x%02x", cp);
            else if (cp < 0x10000)
                snprintf(esc, sizeof esc, "\\u%04x", cp);
            else
                snprintf(esc, sizeof esc, "\\U%08x", cp);
            jbuf_puts(c, b, esc);
        }
        i += adv;
    }
    jbuf_put(c, b, &q, 1);
}

static void write_str_rec(jctx *c, jbuf *b, jv v, int depth);

static void write_repr_rec(jctx *c, jbuf *b, jv v, int depth)
{
    if (v.t == JV_STR)
        write_py_str_repr(c, b, v.s.p, v.s.n);
    else if (v.t == JV_UNDEF)
        jbuf_puts(c, b, "Undefined");
    else
        write_str_rec(c, b, v, depth);
}

void jv_write_repr(jctx *c, jbuf *b, jv v)
{
    switch (v.t) {
    case JV_STR:
        write_py_str_repr(c, b, v.s.p, v.s.n);
        return;
    case JV_UNDEF:
        jbuf_puts(c, b, "Undefined");
        return;
    default:
        jv_write_str(c, b, v);
    }
}

void jv_write_str(jctx *c, jbuf *b, jv v)
{
    write_str_rec(c, b, v, 0);
}

static void write_str_rec(jctx *c, jbuf *b, jv v, int depth)
{
    char num[64];
    if (depth > JV_MAX_NEST)
        jfail(c, KVS_E_INVALID, "maximum recursion depth exceeded while getting the repr of an object");
    switch (v.t) {
    case JV_UNDEF:
        return;
    case JV_NONE:
        jbuf_puts(c, b, "None");
        return;
    case JV_BOOL:
        jbuf_puts(c, b, v.b ? "True" : "False");
        return;
    case JV_INT:
        snprintf(num, sizeof num, "%lld", (long long)v.i);
        jbuf_puts(c, b, num);
        return;
    case JV_FLOAT:
        jfloat_repr(v.f, num, sizeof num);
        jbuf_puts(c, b, num);
        return;
    case JV_STR:
        jbuf_put(c, b, v.s.p, v.s.n);
        return;
    case JV_LIST:
        jbuf_puts(c, b, v.tuple ? "(" : "[");
        for (size_t i = 0; i < v.l->n; i++) {
            if (i)
                jbuf_puts(c, b, ", ");
            write_repr_rec(c, b, v.l->v[i], depth + 1);
        }
        if (v.tuple && v.l->n == 1)
            jbuf_puts(c, b, ",");
        jbuf_puts(c, b, v.tuple ? ")" : "]");
        return;
    case JV_NS:
        jbuf_puts(c, b, "<Namespace ");
        /* fall through */
    case JV_DICT:
        jbuf_puts(c, b, "{");
        for (size_t i = 0; i < v.d->n; i++) {
            if (i)
                jbuf_puts(c, b, ", ");
            write_repr_rec(c, b, v.d->k[i], depth + 1);
            jbuf_puts(c, b, ": ");
            write_repr_rec(c, b, v.d->v[i], depth + 1);
        }
        jbuf_puts(c, b, "}");
        if (v.t == JV_NS)
            jbuf_puts(c, b, ">");
        return;
    case JV_MACRO:
        if (v.mac->name)
            snprintf(num, sizeof num, "<Macro '%.40s'>", v.mac->name);
        else
            snprintf(num, sizeof num, "<Macro anonymous>");
        jbuf_puts(c, b, num);
        return;
    case JV_LOOP:
        jbuf_puts(c, b, "<LoopContext>");
        return;
    default:
        jbuf_puts(c, b, "<built-in function>");
        return;
    }
}

jv jv_to_str(jctx *c, jv v)
{
    if (v.t == JV_STR)
        return v;
    jbuf b = {0};
    jv_write_str(c, &b, v);
    return jbuf_str(&b);
}

/* ---- json.dumps ---- */

static void write_json_str(jctx *c, jbuf *b, const char *s, size_t n, bool ensure_ascii)
{
    jbuf_put(c, b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t adv;
        uint32_t cp = ju8_decode(s + i, n - i, &adv);
        char esc[16];
        switch (cp) {
        case '"': jbuf_puts(c, b, "\\\""); break;
        case '\\': jbuf_puts(c, b, "\\\\"); break;
        case '\n': jbuf_puts(c, b, "\\n"); break;
        case '\r': jbuf_puts(c, b, "\\r"); break;
        case '\t': jbuf_puts(c, b, "\\t"); break;
        case '\b': jbuf_puts(c, b, "\\b"); break;
        case '\f': jbuf_puts(c, b, "\\f"); break;
        default:
            if (cp < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", cp);
                jbuf_puts(c, b, esc);
            } else if (ensure_ascii && cp > 0x7e) {
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
                } else {
                    snprintf(esc, sizeof esc, "\\u%04x", cp);
                }
                if (cp == 0x7f)
                    jbuf_put(c, b, s + i, adv);
                else
                    jbuf_puts(c, b, esc);
            } else {
                jbuf_put(c, b, s + i, adv);
            }
        }
        i += adv;
    }
    jbuf_put(c, b, "\"", 1);
}

static void json_newline(jctx *c, jbuf *b, const char *indent, int level)
{
    jbuf_put(c, b, "\n", 1);
    for (int i = 0; i < level; i++)
        jbuf_puts(c, b, indent);
}

static jv json_key(jctx *c, jv k)
{
    switch (k.t) {
    case JV_STR:
        return k;
    case JV_BOOL:
        return jv_cstr(k.b ? "true" : "false");
    case JV_NONE:
        return jv_cstr("null");
    case JV_INT:
    case JV_FLOAT:
        return jv_to_str(c, k);
    default:
        jfail(c, KVS_E_INVALID, "keys must be str, int, float, bool or None, not %s", jv_typename(k));
    }
}

void jv_write_json(jctx *c, jbuf *b, jv v, bool ensure_ascii, const char *indent, const char *item_sep,
                   const char *key_sep, bool sort_keys, int level)
{
    char num[64];
    if (level > JV_MAX_NEST)
        jfail(c, KVS_E_INVALID, "maximum recursion depth exceeded while encoding a JSON object");
    switch (v.t) {
    case JV_NONE:
        jbuf_puts(c, b, "null");
        return;
    case JV_BOOL:
        jbuf_puts(c, b, v.b ? "true" : "false");
        return;
    case JV_INT:
        jv_write_str(c, b, v);
        return;
    case JV_FLOAT:
        if (isnan(v.f))
            jbuf_puts(c, b, "NaN");
        else if (isinf(v.f))
            jbuf_puts(c, b, v.f < 0 ? "-Infinity" : "Infinity");
        else {
            jfloat_repr(v.f, num, sizeof num);
            jbuf_puts(c, b, num);
        }
        return;
    case JV_STR:
        write_json_str(c, b, v.s.p, v.s.n, ensure_ascii);
        return;
    case JV_LIST:
        if (v.l->n == 0) {
            jbuf_puts(c, b, "[]");
            return;
        }
        jbuf_puts(c, b, "[");
        for (size_t i = 0; i < v.l->n; i++) {
            if (i)
                jbuf_puts(c, b, item_sep);
            if (indent)
                json_newline(c, b, indent, level + 1);
            jv_write_json(c, b, v.l->v[i], ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
        }
        if (indent)
            json_newline(c, b, indent, level);
        jbuf_puts(c, b, "]");
        return;
    case JV_DICT: {
        if (v.d->n == 0) {
            jbuf_puts(c, b, "{}");
            return;
        }
        size_t n = v.d->n;
        size_t *ord = jalloc(c, n * sizeof *ord);
        jv *keys = jalloc(c, n * sizeof *keys);
        for (size_t i = 0; i < n; i++) {
            ord[i] = i;
            keys[i] = json_key(c, v.d->k[i]);
        }
        if (sort_keys) /* insertion sort: stable, dicts are small */
            for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && jv_cmp(c, v.d->k[ord[j - 1]], v.d->k[ord[j]]) > 0; j--) {
                    size_t t = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = t;
                }
        jbuf_puts(c, b, "{");
        for (size_t i = 0; i < n; i++) {
            if (i)
                jbuf_puts(c, b, item_sep);
            if (indent)
                json_newline(c, b, indent, level + 1);
            jv k = keys[ord[i]];
            write_json_str(c, b, k.s.p, k.s.n, ensure_ascii);
            jbuf_puts(c, b, key_sep);
            jv_write_json(c, b, v.d->v[ord[i]], ensure_ascii, indent, item_sep, key_sep, sort_keys, level + 1);
        }
        if (indent)
            json_newline(c, b, indent, level);
        jbuf_puts(c, b, "}");
        return;
    }
    default:
        jfail(c, KVS_E_INVALID, "Object of type %s is not JSON serializable", jv_typename(v));
    }
}

static jv from_json_rec(jctx *c, const json_t *j, int depth);

jv jv_from_json(jctx *c, const void *jp)
{
    return from_json_rec(c, jp, 0);
}

static jv from_json_rec(jctx *c, const json_t *j, int depth)
{
    if (depth > JV_MAX_NEST)
        jfail(c, KVS_E_INVALID, "the template's input nests more than %d levels deep", JV_MAX_NEST);
    if (!j)
        return jv_none();
    switch (json_typeof(j)) {
    case JSON_NULL:
        return jv_none();
    case JSON_TRUE:
        return jv_bool(true);
    case JSON_FALSE:
        return jv_bool(false);
    case JSON_INTEGER:
        return jv_int((int64_t)json_integer_value(j));
    case JSON_REAL:
        return jv_float(json_real_value(j));
    case JSON_STRING:
        return jv_strn(json_string_value(j), json_string_length(j));
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        jv l = jv_list(c, n);
        for (size_t i = 0; i < n; i++)
            l.l->v[l.l->n++] = from_json_rec(c, json_array_get(j, i), depth + 1);
        return l;
    }
    case JSON_OBJECT: {
        jv d = jv_dict(c, json_object_size(j));
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)j, k, val)
        {
            d.d->k[d.d->n] = jv_strn(k, strlen(k));
            d.d->v[d.d->n++] = from_json_rec(c, val, depth + 1);
        }
        return d;
    }
    }
    return jv_none();
}
