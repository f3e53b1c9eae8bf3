/* jinja_builtins.c - Jinja2's filters, tests and globals, the str / dict /
 * list methods templates call, attribute and item access as the sandbox
 * allows them, and Python's arithmetic. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wctype.h>

#include "chat/jinja_internal.h"

enum { G_RANGE = 1, G_DICT, G_NAMESPACE, G_RAISE, G_STRFTIME, G_CYCLER, G_JOINER };

#define UNDEF_FAIL(c, v) jfail((c), KVS_E_INVALID, "%s", (v).undef ? (v).undef : "value is undefined")

static bool streq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static bool sv_eq(jv v, const char *s)
{
    return v.t == JV_STR && v.s.n == strlen(s) && memcmp(v.s.p, s, v.s.n) == 0;
}

bool jarg(const jargs *a, size_t pos, const char *name, jv *out)
{
    size_t p = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->kw && a->kw[i]) {
            if (name && streq(a->kw[i], name)) {
                *out = a->v[i];
                return true;
            }
        } else if (p++ == pos) {
            *out = a->v[i];
            return true;
        }
    }
    return false;
}

static jv arg_or(const jargs *a, size_t pos, const char *name, jv def)
{
    jv v;
    return jarg(a, pos, name, &v) ? v : def;
}

static size_t npos(const jargs *a)
{
    size_t p = 0;
    for (size_t i = 0; i < a->n; i++)
        if (!a->kw || !a->kw[i])
            p++;
    return p;
}

static int64_t as_int(jctx *c, jv v, const char *what)
{
    if (v.t == JV_INT)
        return v.i;
    if (v.t == JV_BOOL)
        return v.b;
    jfail(c, KVS_E_INVALID, "%s must be an integer, not '%s'", what, jv_typename(v));
}

static jv need_str(jctx *c, jv v, const char *what)
{
    if (v.t != JV_STR)
        jfail(c, KVS_E_INVALID, "%s must be a string, not '%s'", what, jv_typename(v));
    return v;
}

/* ---- string helpers ---- */

static locale_t utf8_locale(jctx *c)
{
    if (!c->loc_tried) {
        c->loc_tried = true;
        c->loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    }
    return c->loc;
}

static size_t u8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Python's str.lower() / upper() / title() / capitalize() (mode 0..3), one
 * code point to one (towlower / towupper in C.UTF-8; ASCII only where that
 * locale is missing): Python's one-to-many cases such as 'ß'.upper() == 'SS'
 * are not applied. */
static jv ascii_case(jctx *c, jv s, int mode /* 0 lower, 1 upper, 2 str.title, 3 capitalize, 4 |title */)
{
    locale_t loc = utf8_locale(c);
    char *o = jalloc(c, s.s.n * 2 + 4);
    size_t k = 0, i = 0, adv;
    bool prev_cased = false, first = true;
    while (i < s.s.n) {
        uint32_t cp = ju8_decode(s.s.p + i, s.s.n - i, &adv);
        if (adv == 1 && (unsigned char)s.s.p[i] >= 0x80) { /* a stray byte: kept */
            o[k++] = s.s.p[i++];
            continue;
        }
        uint32_t lo = cp, up = cp;
        if (cp < 0x80) {
            lo = (uint32_t)tolower((int)cp);
            up = (uint32_t)toupper((int)cp);
        } else if (loc != (locale_t)0) {
            lo = (uint32_t)towlower_l((wint_t)cp, loc);
            up = (uint32_t)towupper_l((wint_t)cp, loc);
        }
        bool cased = lo != up || (loc != (locale_t)0 && cp >= 0x80 && (iswlower_l((wint_t)cp, loc) || iswupper_l((wint_t)cp, loc)));
        bool sep = mode == 4 && (ju_isspace(cp) || (cp < 0x80 && strchr("-({[<", (int)cp)));
        uint32_t r = mode == 0   ? lo
                     : mode == 1 ? up
                     : mode == 2 ? (prev_cased ? lo : up)
                     : mode == 3 ? (first ? up : lo)
                                 : (sep ? cp : first ? up : lo);
        if (mode == 4)
            first = sep;
        else
            first = false;
        k += u8_put(o + k, r);
        prev_cased = cased;
        i += adv;
    }
    o[k] = '\0';
    return jv_strn(o, k);
}

/* does code point cp occur in chars (a UTF-8 string)? */
static bool in_chars(uint32_t cp, jv chars)
{
    size_t i = 0, adv;
    while (i < chars.s.n) {
        if (ju8_decode(chars.s.p + i, chars.s.n - i, &adv) == cp)
            return true;
        i += adv;
    }
    return false;
}

static jv py_strip(jctx *c, jv s, jv chars, bool left, bool right)
{
    (void)c;
    bool ws = chars.t == JV_NONE || chars.t == JV_UNDEF;
    size_t a = 0, b = s.s.n, adv;
    if (left)
        while (a < b) {
            uint32_t cp = ju8_decode(s.s.p + a, b - a, &adv);
            if (ws ? !ju_isspace(cp) : !in_chars(cp, chars))
                break;
            a += adv;
        }
    if (right)
        while (b > a) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)s.s.p[st] & 0xc0) == 0x80 && b - st < 4)
                st--;
            uint32_t cp = ju8_decode(s.s.p + st, b - st, &adv);
            if (adv != b - st || (ws ? !ju_isspace(cp) : !in_chars(cp, chars)))
                break;
            b = st;
        }
    return jv_strn(s.s.p + a, b - a);
}

static const char *mem_find(const char *h, size_t hn, const char *n, size_t nn)
{
    if (nn == 0)
        return h;
    if (nn > hn)
        return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == n[0] && memcmp(h + i, n, nn) == 0)
            return h + i;
    return NULL;
}

static jv py_split(jctx *c, jv s, jv sep, int64_t maxsplit)
{
    jv out = jv_list(c, 0);
    if (sep.t == JV_NONE || sep.t == JV_UNDEF) {
        size_t i = 0, adv;
        int64_t splits = 0;
        for (;;) {
            while (i < s.s.n) {
                uint32_t cp = ju8_decode(s.s.p + i, s.s.n - i, &adv);
                if (!ju_isspace(cp))
                    break;
                i += adv;
            }
            if (i >= s.s.n)
                break;
            if (maxsplit >= 0 && splits >= maxsplit) {
                size_t e = s.s.n;
                jv rest = py_strip(c, jv_strn(s.s.p + i, e - i), jv_none(), false, true);
                jlist_push(c, out.l, rest);
                break;
            }
            size_t st = i;
            while (i < s.s.n) {
                uint32_t cp = ju8_decode(s.s.p + i, s.s.n - i, &adv);
                if (ju_isspace(cp))
                    break;
                i += adv;
            }
            jlist_push(c, out.l, jv_strn(s.s.p + st, i - st));
            splits++;
        }
        return out;
    }
    need_str(c, sep, "separator");
    if (sep.s.n == 0)
        jfail(c, KVS_E_INVALID, "empty separator");
    const char *p = s.s.p, *end = s.s.p + s.s.n;
    int64_t splits = 0;
    for (;;) {
        const char *hit = (maxsplit < 0 || splits < maxsplit) ? mem_find(p, (size_t)(end - p), sep.s.p, sep.s.n)
                                                              : NULL;
        if (!hit) {
            jlist_push(c, out.l, jv_strn(p, (size_t)(end - p)));
            break;
        }
        jlist_push(c, out.l, jv_strn(p, (size_t)(hit - p)));
        p = hit + sep.s.n;
        splits++;
    }
    return out;
}

static jv py_replace(jctx *c, jv s, jv old, jv new_, int64_t count)
{
    jbuf b = {0};
    if (old.s.n == 0) {
        /* inserts new before every code point and at the end */
        size_t i = 0, adv;
        int64_t k = 0;
        while (i <= s.s.n) {
            if (count < 0 || k < count) {
                jbuf_put(c, &b, new_.s.p, new_.s.n);
                k++;
            }
            if (i == s.s.n)
                break;
            ju8_decode(s.s.p + i, s.s.n - i, &adv);
            jbuf_put(c, &b, s.s.p + i, adv);
            i += adv;
        }
        return jbuf_str(&b);
    }
    const char *p = s.s.p, *end = s.s.p + s.s.n;
    int64_t k = 0;
    for (;;) {
        const char *hit = (count < 0 || k < count) ? mem_find(p, (size_t)(end - p), old.s.p, old.s.n) : NULL;
        if (!hit) {
            jbuf_put(c, &b, p, (size_t)(end - p));
            break;
        }
        jbuf_put(c, &b, p, (size_t)(hit - p));
        jbuf_put(c, &b, new_.s.p, new_.s.n);
        p = hit + old.s.n;
        k++;
    }
    return jbuf_str(&b);
}

static bool starts_with(jv s, jv p)
{
    return p.t == JV_STR && p.s.n <= s.s.n && memcmp(s.s.p, p.s.p, p.s.n) == 0;
}

static bool ends_with(jv s, jv p)
{
    return p.t == JV_STR && p.s.n <= s.s.n && memcmp(s.s.p + s.s.n - p.s.n, p.s.p, p.s.n) == 0;
}

/* str.splitlines() (keepends false) */
static jv py_splitlines(jctx *c, jv s)
{
    jv out = jv_list(c, 0);
    size_t i = 0, st = 0, adv;
    while (i < s.s.n) {
        uint32_t cp = ju8_decode(s.s.p + i, s.s.n - i, &adv);
        bool brk = cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || (cp >= 0x1c && cp <= 0x1e) ||
                   cp == 0x85 || cp == 0x2028 || cp == 0x2029;
        if (brk) {
            jlist_push(c, out.l, jv_strn(s.s.p + st, i - st));
            if (cp == '\r' && i + 1 < s.s.n && s.s.p[i + 1] == '\n')
                adv = 2;
            i += adv;
            st = i;
        } else {
            i += adv;
        }
    }
    if (st < s.s.n)
        jlist_push(c, out.l, jv_strn(s.s.p + st, s.s.n - st));
    return out;
}

/* printf-style formatting: fmt % args */
static jv py_percent(jctx *c, jv fmt, jv args)
{
    jlist *items;
    jv single = args;
    jlist one = {1, 1, &single};
    if (args.t == JV_LIST && args.tuple)
        items = args.l;
    else
        items = &one;
    size_t ai = 0;
    jbuf b = {0};
    const char *p = fmt.s.p, *end = p + fmt.s.n;
    while (p < end) {
        if (*p != '%') {
            jbuf_put(c, &b, p++, 1);
            continue;
        }
        p++;
        if (p < end && *p == '%') {
            jbuf_put(c, &b, "%", 1);
            p++;
            continue;
        }
        char spec[32] = "%";
        size_t sl = 1;
        while (p < end && strchr("-+ #0123456789.", *p) && sl < 20)
            spec[sl++] = *p++;
        if (p >= end)
            jfail(c, KVS_E_INVALID, "incomplete format");
        char conv = *p++;
        if (ai >= items->n)
            jfail(c, KVS_E_INVALID, "not enough arguments for format string");
        jv a = items->v[ai++];
        char tmp[512];
        if (conv == 's' || conv == 'r') {
            jbuf sb = {0};
            if (conv == 's')
                jv_write_str(c, &sb, a);
            else
                jv_write_repr(c, &sb, a);
            jbuf_put(c, &b, sb.p ? sb.p : "", sb.n);
        } else if (conv == 'd' || conv == 'i') {
            int64_t iv = a.t == JV_FLOAT ? (int64_t)a.f : as_int(c, a, "%d format");
            spec[sl++] = 'l';
            spec[sl++] = 'l';
            spec[sl++] = 'd';
            spec[sl] = 0;
            snprintf(tmp, sizeof tmp, spec, (long long)iv);
            jbuf_puts(c, &b, tmp);
        } else if (conv == 'f' || conv == 'e' || conv == 'g' || conv == 'F' || conv == 'E' || conv == 'G') {
            double fv = a.t == JV_FLOAT ? a.f : (double)as_int(c, a, "%f format");
            spec[sl++] = conv;
            spec[sl] = 0;
            snprintf(tmp, sizeof tmp, spec, fv);
            jbuf_puts(c, &b, tmp);
        } else if (conv == 'x' || conv == 'X' || conv == 'o') {
            spec[sl++] = 'l';
            spec[sl++] = 'l';
            spec[sl++] = conv;
            spec[sl] = 0;
            snprintf(tmp, sizeof tmp, spec, (long long)as_int(c, a, "%x format"));
            jbuf_puts(c, &b, tmp);
        } else {
            jfail(c, KVS_E_INVALID, "unsupported format character '%c'", conv);
        }
    }
    /* Python treats any non-tuple with __getitem__ (list, dict) as a mapping: no error then */
    if (ai < items->n && args.t != JV_DICT && args.t != JV_UNDEF && !(args.t == JV_LIST && !args.tuple))
        jfail(c, KVS_E_INVALID, "not all arguments converted during string formatting");
    return jbuf_str(&b);
}

/* str.format(*args, **kwargs) with {} {0} {name} and an ignored-if-empty spec */
static jv py_format(jctx *c, jv fmt, const jargs *a)
{
    jbuf b = {0};
    const char *p = fmt.s.p, *end = p + fmt.s.n;
    size_t auto_i = 0;
    while (p < end) {
        if (*p == '{' && p + 1 < end && p[1] == '{') {
            jbuf_put(c, &b, "{", 1);
            p += 2;
            continue;
        }
        if (*p == '}' && p + 1 < end && p[1] == '}') {
            jbuf_put(c, &b, "}", 1);
            p += 2;
            continue;
        }
        if (*p != '{') {
            jbuf_put(c, &b, p++, 1);
            continue;
        }
        const char *q = memchr(p, '}', (size_t)(end - p));
        if (!q)
            jfail(c, KVS_E_INVALID, "Single '{' encountered in format string");
        const char *field = p + 1;
        size_t fl = (size_t)(q - field);
        const char *colon = memchr(field, ':', fl);
        if (colon) {
            if ((size_t)(q - colon) > 1)
                jfail(c, KVS_E_UNSUPPORTED, "format specs in str.format are not supported");
            fl = (size_t)(colon - field);
        }
        jv v;
        if (fl == 0) {
            if (!jarg(a, auto_i++, NULL, &v))
                jfail(c, KVS_E_INVALID, "Replacement index %zu out of range for positional args tuple",
                      auto_i - 1);
        } else if (isdigit((unsigned char)field[0])) {
            size_t idx = (size_t)strtoul(field, NULL, 10);
            if (!jarg(a, idx, NULL, &v))
                jfail(c, KVS_E_INVALID, "Replacement index %zu out of range for positional args tuple", idx);
        } else {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(fl < 127 ? fl : 127), field);
            bool found = false;
            for (size_t i = 0; i < a->n; i++)
                if (a->kw && a->kw[i] && streq(a->kw[i], name)) {
                    v = a->v[i];
                    found = true;
                }
            if (!found)
                jfail(c, KVS_E_INVALID, "KeyError: '%s'", name);
        }
        jv_write_str(c, &b, v);
        p = q + 1;
    }
    return jbuf_str(&b);
}

/* ---- attribute and item access ---- */

static const char *const k_str_methods[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower", "title",
    "capitalize", "replace", "format", "join", "count", "find", "rfind", "index", "splitlines", "isdigit",
    "isalpha", "isalnum", "isspace", "isupper", "islower", "removeprefix", "removesuffix", "partition",
    "rpartition", "swapcase", "casefold", "zfill", "center", "ljust", "rjust", "isnumeric", "isdecimal",
    "istitle", "encode", "expandtabs", NULL};
static const char *const k_dict_methods[] = {"items", "keys", "values", "get", "copy", NULL};
static const char *const k_dict_unsafe[] = {"pop", "popitem", "update", "clear", "setdefault", NULL};
static const char *const k_list_methods[] = {"index", "count", "copy", NULL};
static const char *const k_list_unsafe[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort",
                                            "clear", NULL};

static bool in_names(const char *const *names, const char *s)
{
    for (size_t i = 0; names[i]; i++)
        if (streq(names[i], s))
            return true;
    return false;
}

static jv bound(jctx *c, jv self, const char *name)
{
    jbound *b = jalloc(c, sizeof *b);
    b->self = self;
    b->name = name;
    jv v = {.t = JV_METHOD, .bm = b};
    return v;
}

static const char *type_repr(jv v)
{
    switch (v.t) {
    case JV_NONE: return "None";
    case JV_STR: return "str object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_BOOL: return "bool object";
    case JV_LIST: return v.tuple ? "tuple object" : "list object";
    case JV_DICT: return "dict object";
    case JV_NS: return "jinja2.utils.Namespace object";
    case JV_LOOP: return "jinja2.runtime.LoopContext object";
    default: return "object";
    }
}

static jv loop_attr(jctx *c, jloop *lp, const char *name, jv self)
{
    size_t n = lp->items->n, i = lp->index0;
    if (streq(name, "index"))
        return jv_int((int64_t)i + 1);
    if (streq(name, "index0"))
        return jv_int((int64_t)i);
    if (streq(name, "revindex"))
        return jv_int((int64_t)(n - i));
    if (streq(name, "revindex0"))
        return jv_int((int64_t)(n - i - 1));
    if (streq(name, "first"))
        return jv_bool(i == 0);
    if (streq(name, "last"))
        return jv_bool(i + 1 == n);
    if (streq(name, "length"))
        return jv_int((int64_t)n);
    if (streq(name, "depth"))
        return jv_int(lp->depth0 + 1);
    if (streq(name, "depth0"))
        return jv_int(lp->depth0);
    if (streq(name, "previtem"))
        return i > 0 ? lp->items->v[i - 1] : jv_undef_msg(c, "there is no previous item");
    if (streq(name, "nextitem"))
        return i + 1 < n ? lp->items->v[i + 1] : jv_undef_msg(c, "there is no next item");
    if (streq(name, "cycle") || streq(name, "changed"))
        return bound(c, self, name);
    return jv_undef_msg(c, "'%s' has no attribute '%s'", type_repr(self), name);
}

jv jgetattr(jctx *c, jv obj, const char *name, size_t n)
{
    (void)n;
    jv v;
    switch (obj.t) {
    case JV_UNDEF:
        UNDEF_FAIL(c, obj);
    case JV_DICT:
        if (in_names(k_dict_methods, name))
            return bound(c, obj, name);
        if (in_names(k_dict_unsafe, name))
            return jv_undef_msg(c, "access to attribute '%s' of 'dict' object is unsafe.", name);
        if (jdict_gets(obj.d, name, &v))
            return v;
        break;
    case JV_NS:
        if (jdict_gets(obj.d, name, &v))
            return v;
        break;
    case JV_STR:
        if (in_names(k_str_methods, name))
            return bound(c, obj, name);
        break;
    case JV_LIST:
        if (in_names(k_list_methods, name))
            return bound(c, obj, name);
        if (in_names(k_list_unsafe, name))
            return jv_undef_msg(c, "access to attribute '%s' of '%s' object is unsafe.", name,
                                obj.tuple ? "tuple" : "list");
        break;
    case JV_LOOP:
        return loop_attr(c, obj.loop, name, obj);
    case JV_CYCLER:
        if (streq(name, "current"))
            return obj.cyc[0].l->v[obj.cyc[1].i];
        if (streq(name, "next") || streq(name, "reset"))
            return bound(c, obj, name);
        break;
    case JV_FLOAT:
        if (streq(name, "real"))
            return obj;
        if (streq(name, "imag"))
            return jv_float(0);
        if (streq(name, "is_integer"))
            return bound(c, obj, name);
        break;
    default:
        break;
    }
    return jv_undef_msg(c, "'%s' has no attribute '%s'", type_repr(obj), name);
}

jv jgetitem(jctx *c, jv obj, jv key)
{
    jv v;
    switch (obj.t) {
    case JV_UNDEF:
        UNDEF_FAIL(c, obj);
    case JV_DICT:
    case JV_NS:
        if (jdict_get(obj.d, key, &v))
            return v;
        break;
    case JV_LIST:
    case JV_STR:
        if (key.t == JV_INT || key.t == JV_BOOL) {
            int64_t i = key.t == JV_INT ? key.i : key.b;
            if (obj.t == JV_LIST) {
                if (i < 0)
                    i += (int64_t)obj.l->n;
                if (i >= 0 && i < (int64_t)obj.l->n)
                    return obj.l->v[i];
            } else {
                int64_t len = (int64_t)ju8_count(obj.s.p, obj.s.n);
                if (i < 0)
                    i += len;
                if (i >= 0 && i < len) {
                    size_t off = ju8_offset(obj.s.p, obj.s.n, (size_t)i), adv;
                    ju8_decode(obj.s.p + off, obj.s.n - off, &adv);
                    return jv_strn(obj.s.p + off, adv);
                }
            }
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)i);
            return jv_undef_msg(c, "'%s' has no element %s", type_repr(obj),
                                key.t == JV_INT ? num : (key.b ? "True" : "False"));
        }
        break;
    default:
        break;
    }
    if (key.t == JV_STR) {
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(key.s.n < 255 ? key.s.n : 255), key.s.p);
        if (memchr(key.s.p, '\0', key.s.n) == NULL && obj.t != JV_DICT && obj.t != JV_NS)
            return jgetattr(c, obj, jstrdup(c, name, strlen(name)), strlen(name));
        if (obj.t == JV_DICT && in_names(k_dict_methods, name))
            return bound(c, obj, jstrdup(c, name, strlen(name)));
        return jv_undef_msg(c, "'%s' has no attribute '%s'", type_repr(obj), name);
    }
    jbuf kb = {0};
    jv_write_repr(c, &kb, key);
    return jv_undef_msg(c, "'%s' has no element %.100s", type_repr(obj), kb.p ? kb.p : "");
}

/* attribute getter of filters (attribute='a.b.0') */
static jv get_path(jctx *c, jv obj, jv path)
{
    if (path.t == JV_INT)
        return jgetitem(c, obj, path);
    need_str(c, path, "attribute");
    const char *p = path.s.p, *end = p + path.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot)
            dot = end;
        size_t l = (size_t)(dot - p);
        bool digits = l > 0;
        for (size_t i = 0; i < l; i++)
            if (!isdigit((unsigned char)p[i]))
                digits = false;
        jv key = digits ? jv_int(strtoll(p, NULL, 10)) : jv_str(c, p, l);
        if (obj.t == JV_UNDEF)
            return obj;
        obj = jgetitem(c, obj, key);
        if (dot == end)
            break;
        p = dot + 1;
    }
    return obj;
}

/* ---- arithmetic ---- */

static bool numeric(jv v)
{
    return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
}

static double fnum(jv v)
{
    return v.t == JV_FLOAT ? v.f : v.t == JV_INT ? (double)v.i : v.t == JV_BOOL ? (double)v.b : 0.0;
}

static int64_t inum(jv v)
{
    return v.t == JV_INT ? v.i : v.t == JV_BOOL ? v.b : 0;
}

static const char *op_sym(int op)
{
    switch (op) {
    case T_ADD: return "+";
    case T_SUB: return "-";
    case T_MUL: return "*";
    case T_DIV: return "/";
    case T_FLOORDIV: return "//";
    case T_MOD: return "%";
    case T_POW: return "** or pow()";
    default: return "?";
    }
}

static jv repeat(jctx *c, jv seq, int64_t k)
{
    if (k <= 0)
        return seq.t == JV_STR ? jv_cstr("") : jv_list(c, 0);
    size_t unit = seq.t == JV_STR ? seq.s.n : seq.l->n * sizeof(jv);
    if (unit && (uint64_t)k > c->arena.limit / unit)
        jfail(c, KVS_E_BUDGET, "template exceeds its memory limit (%zu bytes)", c->arena.limit);
    if (seq.t == JV_STR) {
        jbuf b = {0};
        for (int64_t i = 0; i < k; i++)
            jbuf_put(c, &b, seq.s.p, seq.s.n);
        return jbuf_str(&b);
    }
    jv out = jv_list(c, seq.l->n * (size_t)k);
    out.tuple = seq.tuple;
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < seq.l->n; j++)
            out.l->v[out.l->n++] = seq.l->v[j];
    return out;
}

jv jbinop(jctx *c, int op, jv a, jv b)
{
    if (op == T_MOD && a.t == JV_STR && b.t == JV_UNDEF) /* Undefined has __getitem__: a "mapping" to % */
        return py_percent(c, a, b);
    if (a.t == JV_UNDEF)
        UNDEF_FAIL(c, a);
    if (b.t == JV_UNDEF)
        UNDEF_FAIL(c, b);
    if (numeric(a) && numeric(b)) {
        bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
        int64_t x = inum(a), y = inum(b), r;
        double fx = fnum(a), fy = fnum(b);
        switch (op) {
        case T_ADD:
            if (fl)
                return jv_float(fx + fy);
            if (__builtin_add_overflow(x, y, &r))
                break;
            return jv_int(r);
        case T_SUB:
            if (fl)
                return jv_float(fx - fy);
            if (__builtin_sub_overflow(x, y, &r))
                break;
            return jv_int(r);
        case T_MUL:
            if (fl)
                return jv_float(fx * fy);
            if (__builtin_mul_overflow(x, y, &r))
                break;
            return jv_int(r);
        case T_DIV:
            if (fy == 0)
                jfail(c, KVS_E_INVALID, "division by zero");
            return jv_float(fx / fy);
        case T_FLOORDIV:
        case T_MOD:
            if (fl ? fy == 0 : y == 0)
                jfail(c, KVS_E_INVALID, op == T_MOD ? "integer modulo by zero" : "integer division or modulo by zero");
            if (fl) {
                double m = fmod(fx, fy);
                if (m != 0 && ((m < 0) != (fy < 0)))
                    m += fy;
                if (op == T_MOD)
                    return jv_float(m);
                return jv_float(floor((fx - m) / fy + 0.5 * 0) == 0 ? floor(fx / fy) : floor(fx / fy));
            }
            if (x == INT64_MIN && y == -1)
                break;
            {
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q -= 1;
                    m += y;
                }
                return jv_int(op == T_MOD ? m : q);
            }
        case T_POW:
            if (fl || y < 0)
                return jv_float(pow(fx, fy));
            {
                int64_t acc = 1, base = x;
                int64_t e = y;
                while (e > 0) {
                    if (e & 1) {
                        if (__builtin_mul_overflow(acc, base, &acc))
                            goto overflow;
                    }
                    e >>= 1;
                    if (e && __builtin_mul_overflow(base, base, &base))
                        goto overflow;
                }
                return jv_int(acc);
            }
        }
    overflow:
        jfail(c, KVS_E_UNSUPPORTED, "integer overflow in '%s' (kvserve's integers are 64-bit)", op_sym(op));
    }
    if (op == T_ADD && a.t == JV_STR && b.t == JV_STR) {
        jbuf o = {0};
        jbuf_put(c, &o, a.s.p, a.s.n);
        jbuf_put(c, &o, b.s.p, b.s.n);
        return jbuf_str(&o);
    }
    if (op == T_ADD && a.t == JV_LIST && b.t == JV_LIST && a.tuple == b.tuple) {
        jv out = jv_list(c, a.l->n + b.l->n);
        out.tuple = a.tuple;
        for (size_t i = 0; i < a.l->n; i++)
            out.l->v[out.l->n++] = a.l->v[i];
        for (size_t i = 0; i < b.l->n; i++)
            out.l->v[out.l->n++] = b.l->v[i];
        return out;
    }
    if (op == T_MUL && (a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(c, a, inum(b));
    if (op == T_MUL && (b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
        return repeat(c, b, inum(a));
    if (op == T_MOD && a.t == JV_STR)
        return py_percent(c, a, b);
    if (op == T_ADD && a.t == JV_STR)
        jfail(c, KVS_E_INVALID, "can only concatenate str (not \"%s\") to str", jv_typename(b));
    jfail(c, KVS_E_INVALID, "unsupported operand type(s) for %s: '%s' and '%s'", op_sym(op), jv_typename(a),
          jv_typename(b));
}

/* ---- sorting ---- */

typedef struct sort_ctx {
    jctx *c;
    bool case_sensitive;
} sort_ctx;

static jv fold(jctx *c, jv v, bool case_sensitive)
{
    return (!case_sensitive && v.t == JV_STR) ? ascii_case(c, v, 0) : v;
}

/* stable insertion-merge sort of keys with a parallel value array */
static void sort_pairs(jctx *c, jv *keys, jv *vals, size_t n, bool reverse)
{
    /* merge sort (stable), O(n log n) */
    if (n < 2)
        return;
    jv *tk = jalloc(c, n * sizeof *tk), *tv = jalloc(c, n * sizeof *tv);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int r = jv_cmp(c, keys[j], keys[i]);
                bool take_j = reverse ? r > 0 : r < 0;
                if (take_j) {
                    tk[k] = keys[j];
                    tv[k++] = vals[j++];
                } else {
                    tk[k] = keys[i];
                    tv[k++] = vals[i++];
                }
            }
            while (i < mid) {
                tk[k] = keys[i];
                tv[k++] = vals[i++];
            }
            while (j < hi) {
                tk[k] = keys[j];
                tv[k++] = vals[j++];
            }
        }
        memcpy(keys, tk, n * sizeof *tk);
        memcpy(vals, tv, n * sizeof *tv);
    }
}

/* A new list of vals[0, n) ordered by their keys (sort_pairs: stable, descending when reverse):
 * what sort and dictsort return. */
static jv sorted_list(jctx *c, jv *keys, jv *vals, size_t n, bool reverse)
{
    sort_pairs(c, keys, vals, n, reverse);
    jv out = jv_list(c, n);
    for (size_t i = 0; i < n; i++)
        out.l->v[out.l->n++] = vals[i];
    return out;
}

/* ---- filters ---- */

/* Could Python hash it (dict keys, sets)? Lists, dicts and tuples holding them cannot. */
static bool hashable(jv v)
{
    if (v.t == JV_DICT || v.t == JV_NS || (v.t == JV_LIST && !v.tuple))
        return false;
    if (v.t == JV_LIST)
        for (size_t i = 0; i < v.l->n; i++)
            if (!hashable(v.l->v[i]))
                return false;
    return true;
}

static jv apply_filter_or_test_list(jctx *c, jframe *f, jv seq, const jargs *a, bool select, bool by_attr)
{
    /* select/reject(test, args...) and selectattr/rejectattr(attr, test, args...); Jinja2 skips a false value */
    jlist *items = jv_truthy(seq) ? jv_iter(c, seq) : jv_list(c, 0).l;
    size_t skip = by_attr ? 1 : 0;
    jv attr = jv_none(), test = jv_none();
    if (by_attr && !jarg(a, 0, NULL, &attr))
        jfail(c, KVS_E_INVALID, "selectattr needs an attribute");
    bool has_test = jarg(a, skip, NULL, &test);
    if (has_test)
        need_str(c, test, "test name");
    size_t rest = a->n > skip + 1 ? a->n - skip - 1 : 0;
    jargs ta = {rest, a->v + (a->n - rest), a->kw ? a->kw + (a->n - rest) : NULL};
    jv out = jv_list(c, 0);
    char tname[64];
    if (has_test)
        snprintf(tname, sizeof tname, "%.*s", (int)(test.s.n < 63 ? test.s.n : 63), test.s.p);
    for (size_t i = 0; i < items->n; i++) {
        jstep(c);
        jv x = by_attr ? get_path(c, items->v[i], attr) : items->v[i];
        bool ok = has_test ? jtest(c, f, tname, x, &ta) : jv_truthy(x);
        if (ok == select)
            jlist_push(c, out.l, items->v[i]);
    }
    return out;
}

static jv do_indent(jctx *c, jv s, jv width, bool first, bool blank)
{
    jv ind;
    if (width.t == JV_STR)
        ind = width;
    else {
        int64_t w = as_int(c, width, "indent width");
        ind = repeat(c, jv_cstr(" "), w);
    }
    jbuf sb = {0};
    jbuf_put(c, &sb, s.s.p, s.s.n);
    jbuf_put(c, &sb, "\n", 1);
    jlist *lines = py_splitlines(c, jbuf_str(&sb)).l;
    jbuf b = {0};
    if (blank) {
        for (size_t i = 0; i < lines->n; i++) {
            if (i) {
                jbuf_put(c, &b, "\n", 1);
                jbuf_put(c, &b, ind.s.p, ind.s.n);
            }
            jbuf_put(c, &b, lines->v[i].s.p, lines->v[i].s.n);
        }
    } else if (lines->n) {
        jbuf_put(c, &b, lines->v[0].s.p, lines->v[0].s.n);
        for (size_t i = 1; i < lines->n; i++) {
            jbuf_put(c, &b, "\n", 1);
            if (lines->v[i].s.n)
                jbuf_put(c, &b, ind.s.p, ind.s.n);
            jbuf_put(c, &b, lines->v[i].s.p, lines->v[i].s.n);
        }
    }
    if (first) {
        jbuf o = {0};
        jbuf_put(c, &o, ind.s.p, ind.s.n);
        jbuf_put(c, &o, b.p ? b.p : "", b.n);
        return jbuf_str(&o);
    }
    return jbuf_str(&b);
}

static jv do_tojson(jctx *c, jv v, const jargs *a)
{
    jv ea = arg_or(a, 0, "ensure_ascii", jv_bool(false)), indent = arg_or(a, 1, "indent", jv_none()),
       seps = arg_or(a, 2, "separators", jv_none()), sk = arg_or(a, 3, "sort_keys", jv_bool(false));
    const char *ind = NULL;
    if (indent.t == JV_STR)
        ind = jstrdup(c, indent.s.p, indent.s.n);
    else if (indent.t == JV_INT || indent.t == JV_BOOL) {
        jv sp = repeat(c, jv_cstr(" "), inum(indent));
        ind = jstrdup(c, sp.s.p, sp.s.n);
    } else if (indent.t != JV_NONE)
        jfail(c, KVS_E_INVALID, "tojson: indent must be an int or a string");
    const char *isep = ind ? "," : ", ", *ksep = ": ";
    if (seps.t == JV_LIST) {
        if (seps.l->n != 2 || seps.l->v[0].t != JV_STR || seps.l->v[1].t != JV_STR)
            jfail(c, KVS_E_INVALID, "tojson: separators must be a pair of strings");
        isep = jstrdup(c, seps.l->v[0].s.p, seps.l->v[0].s.n);
        ksep = jstrdup(c, seps.l->v[1].s.p, seps.l->v[1].s.n);
    }
    jbuf b = {0};
    jv_write_json(c, &b, v, jv_truthy(ea), ind, isep, ksep, jv_truthy(sk), 0);
    return jbuf_str(&b);
}

static jv to_int(jctx *c, jv v, jv def)
{
    switch (v.t) {
    case JV_UNDEF: /* int(Undefined) raises in Jinja2 */
        UNDEF_FAIL(c, v);
    case JV_INT:
        return v;
    case JV_BOOL:
        return jv_int(v.b);
    case JV_FLOAT:
        if (isnan(v.f) || isinf(v.f))
            return def;
        return jv_int((int64_t)v.f);
    case JV_STR: {
        char buf[64];
        jv t = py_strip(c, v, jv_none(), true, true);
        if (t.s.n == 0 || t.s.n >= sizeof buf)
            return def;
        size_t k = 0;
        for (size_t i = 0; i < t.s.n; i++)
            if (t.s.p[i] != '_')
                buf[k++] = t.s.p[i];
        buf[k] = 0;
        char *end;
        long long x = strtoll(buf, &end, 10);
        if (*end == 0)
            return jv_int(x);
        double d = strtod(buf, &end);
        if (*end == 0 && !isnan(d) && !isinf(d))
            return jv_int((int64_t)d);
        return def;
    }
    default:
        return def;
    }
}

static jv to_float(jctx *c, jv v, jv def)
{
    switch (v.t) {
    case JV_UNDEF:
        UNDEF_FAIL(c, v);
    case JV_INT:
        return jv_float((double)v.i);
    case JV_BOOL:
        return jv_float(v.b);
    case JV_FLOAT:
        return v;
    case JV_STR: {
        char buf[64];
        jv t = py_strip(c, v, jv_none(), true, true);
        if (t.s.n == 0 || t.s.n >= sizeof buf)
            return def;
        memcpy(buf, t.s.p, t.s.n);
        buf[t.s.n] = 0;
        char *end;
        double d = strtod(buf, &end);
        return *end == 0 ? jv_float(d) : def;
    }
    default:
        return def;
    }
}

static const char *const k_filters[] = {
    "abs", "attr", "batch", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
    "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max",
    "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort",
    "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount", "striptags", "center",
    "truncate", NULL};

bool jfilter_exists(const char *name)
{
    return in_names(k_filters, name);
}

static jv escape_html(jctx *c, jv s)
{
    jbuf b = {0};
    for (size_t i = 0; i < s.s.n; i++) {
        switch (s.s.p[i]) {
        case '&': jbuf_puts(c, &b, "&amp;"); break;
        case '<': jbuf_puts(c, &b, "&lt;"); break;
        case '>': jbuf_puts(c, &b, "&gt;"); break;
        case '"': jbuf_puts(c, &b, "&#34;"); break;
        case '\'': jbuf_puts(c, &b, "&#39;"); break;
        default: jbuf_put(c, &b, s.s.p + i, 1);
        }
    }
    jv r = jbuf_str(&b);
    r.safe = true;
    return r;
}

jv jfilter(jctx *c, jframe *f, const char *name, jv v, const jargs *a)
{
    jv x;
    if (streq(name, "default") || streq(name, "d")) {
        jv def = arg_or(a, 0, "default_value", jv_cstr(""));
        bool boolean = jv_truthy(arg_or(a, 1, "boolean", jv_bool(false)));
        if (v.t == JV_UNDEF || (boolean && !jv_truthy(v)))
            return def;
        return v;
    }
    if (streq(name, "safe")) {
        jv s = jv_to_str(c, v);
        s.safe = true;
        return s;
    }
    if (streq(name, "string"))
        return v.t == JV_STR ? v : jv_to_str(c, v);
    if (streq(name, "length") || streq(name, "count"))
        return jv_int((int64_t)jv_len(c, v));
    if (streq(name, "tojson"))
        return do_tojson(c, v, a);
    if (streq(name, "trim")) {
        jv chars = arg_or(a, 0, "chars", jv_none());
        if (chars.t != JV_NONE)
            need_str(c, chars, "trim chars");
        return py_strip(c, jv_to_str(c, v), chars, true, true);
    }
    if (streq(name, "upper"))
        return ascii_case(c, jv_to_str(c, v), 1);
    if (streq(name, "lower"))
        return ascii_case(c, jv_to_str(c, v), 0);
    if (streq(name, "capitalize"))
        return ascii_case(c, jv_to_str(c, v), 3);
    if (streq(name, "title")) /* Jinja2: words split at [-\s({[<]+, each capitalised */
        return ascii_case(c, jv_to_str(c, v), 4);
    if (streq(name, "replace")) {
        jv old, nw;
        if (!jarg(a, 0, "old", &old) || !jarg(a, 1, "new", &nw))
            jfail(c, KVS_E_INVALID, "replace needs old and new");
        jv cnt = arg_or(a, 2, "count", jv_none());
        return py_replace(c, jv_to_str(c, v), jv_to_str(c, old), jv_to_str(c, nw),
                          cnt.t == JV_NONE ? -1 : as_int(c, cnt, "count"));
    }
    if (streq(name, "first")) {
        jlist *l = jv_iter(c, v);
        return l->n ? l->v[0] : jv_undef_msg(c, "No first item, sequence was empty.");
    }
    if (streq(name, "last")) {
        if (v.t == JV_UNDEF)
            return jv_undef_msg(c, "No last item, sequence was empty.");
        if (v.t == JV_DICT) /* reversed(dict): the last key */
            return v.d->n ? v.d->k[v.d->n - 1] : jv_undef_msg(c, "No last item, sequence was empty.");
        if (v.t != JV_LIST && v.t != JV_STR)
            jfail(c, KVS_E_INVALID, "'%s' object is not reversible", jv_typename(v));
        jlist *l = jv_iter(c, v);
        return l->n ? l->v[l->n - 1] : jv_undef_msg(c, "No last item, sequence was empty.");
    }
    if (streq(name, "list")) {
        jlist *l = jv_iter(c, v);
        jv out = jv_list(c, l->n);
        for (size_t i = 0; i < l->n; i++)
            out.l->v[out.l->n++] = l->v[i];
        return out;
    }
    if (streq(name, "reverse")) {
        if (v.t == JV_STR) {
            jlist *l = jv_iter(c, v);
            jbuf b = {0};
            for (size_t i = l->n; i-- > 0;)
                jbuf_put(c, &b, l->v[i].s.p, l->v[i].s.n);
            return jbuf_str(&b);
        }
        jlist *l = jv_iter(c, v);
        jv out = jv_list(c, l->n);
        for (size_t i = l->n; i-- > 0;)
            out.l->v[out.l->n++] = l->v[i];
        return out;
    }
    if (streq(name, "join")) {
        jv sep = jv_to_str(c, arg_or(a, 0, "d", jv_cstr("")));
        jv attr;
        bool by_attr = jarg(a, 1, "attribute", &attr);
        jlist *l = jv_iter(c, v);
        jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                jbuf_put(c, &b, sep.s.p, sep.s.n);
            jv_write_str(c, &b, by_attr ? get_path(c, l->v[i], attr) : l->v[i]);
        }
        return jbuf_str(&b);
    }
    if (streq(name, "map")) {
        jlist *l = jv_truthy(v) ? jv_iter(c, v) : jv_list(c, 0).l; /* Jinja2 skips a false value */
        jv out = jv_list(c, l->n);
        jv attr;
        if (jarg(a, 99, "attribute", &attr)) {
            jv def;
            bool has_def = jarg(a, 99, "default", &def);
            for (size_t i = 0; i < l->n; i++) {
                jv y = get_path(c, l->v[i], attr);
                out.l->v[out.l->n++] = (y.t == JV_UNDEF && has_def) ? def : y;
            }
            return out;
        }
        jv fname;
        if (!jarg(a, 0, NULL, &fname))
            jfail(c, KVS_E_INVALID, "map needs a filter name or attribute=");
        need_str(c, fname, "filter name");
        char fn[64];
        snprintf(fn, sizeof fn, "%.*s", (int)(fname.s.n < 63 ? fname.s.n : 63), fname.s.p);
        jargs rest = {a->n - 1, a->v + 1, a->kw ? a->kw + 1 : NULL};
        for (size_t i = 0; i < l->n; i++) {
            jstep(c);
            out.l->v[out.l->n++] = jfilter(c, f, fn, l->v[i], &rest);
        }
        return out;
    }
    if (streq(name, "select"))
        return apply_filter_or_test_list(c, f, v, a, true, false);
    if (streq(name, "reject"))
        return apply_filter_or_test_list(c, f, v, a, false, false);
    if (streq(name, "selectattr"))
        return apply_filter_or_test_list(c, f, v, a, true, true);
    if (streq(name, "rejectattr"))
        return apply_filter_or_test_list(c, f, v, a, false, true);
    if (streq(name, "items")) {
        if (v.t == JV_UNDEF)
            return jv_list(c, 0);
        if (v.t != JV_DICT && v.t != JV_NS)
            jfail(c, KVS_E_INVALID, "Can only get item pairs from a mapping.");
        jv out = jv_list(c, v.d->n);
        for (size_t i = 0; i < v.d->n; i++) {
            jv t = jv_list(c, 2);
            t.tuple = true;
            t.l->v[0] = v.d->k[i];
            t.l->v[1] = v.d->v[i];
            t.l->n = 2;
            out.l->v[out.l->n++] = t;
        }
        return out;
    }
    if (streq(name, "dictsort")) {
        if (v.t != JV_DICT)
            jfail(c, KVS_E_INVALID, "dictsort needs a mapping");
        bool cs = jv_truthy(arg_or(a, 0, "case_sensitive", jv_bool(false)));
        jv by = arg_or(a, 1, "by", jv_cstr("key"));
        bool rev = jv_truthy(arg_or(a, 2, "reverse", jv_bool(false)));
        int pos = sv_eq(by, "key") ? 0 : sv_eq(by, "value") ? 1 : -1;
        if (pos < 0)
            jfail(c, KVS_E_INVALID, "You can only sort by either \"key\" or \"value\"");
        size_t n = v.d->n;
        jv *keys = jalloc(c, (n ? n : 1) * sizeof *keys), *vals = jalloc(c, (n ? n : 1) * sizeof *vals);
        for (size_t i = 0; i < n; i++) {
            jv t = jv_list(c, 2);
            t.tuple = true;
            t.l->v[0] = v.d->k[i];
            t.l->v[1] = v.d->v[i];
            t.l->n = 2;
            vals[i] = t;
            keys[i] = fold(c, pos ? v.d->v[i] : v.d->k[i], cs);
        }
        return sorted_list(c, keys, vals, n, rev);
    }
    if (streq(name, "sort")) {
        bool rev = jv_truthy(arg_or(a, 0, "reverse", jv_bool(false)));
        bool cs = jv_truthy(arg_or(a, 1, "case_sensitive", jv_bool(false)));
        jv attr;
        bool by_attr = jarg(a, 2, "attribute", &attr);
        jlist *l = jv_iter(c, v);
        size_t n = l->n;
        jv *keys = jalloc(c, (n ? n : 1) * sizeof *keys), *vals = jalloc(c, (n ? n : 1) * sizeof *vals);
        for (size_t i = 0; i < n; i++) {
            vals[i] = l->v[i];
            keys[i] = fold(c, by_attr ? get_path(c, l->v[i], attr) : l->v[i], cs);
        }
        return sorted_list(c, keys, vals, n, rev);
    }
    if (streq(name, "unique")) {
        bool cs = jv_truthy(arg_or(a, 0, "case_sensitive", jv_bool(false)));
        jv attr;
        bool by_attr = jarg(a, 1, "attribute", &attr);
        jlist *l = jv_iter(c, v);
        jv out = jv_list(c, 0), seen = jv_list(c, 0);
        for (size_t i = 0; i < l->n; i++) {
            jv k = fold(c, by_attr ? get_path(c, l->v[i], attr) : l->v[i], cs);
            if (!hashable(k)) /* unique keeps a set of what it has seen */
                jfail(c, KVS_E_INVALID, "unhashable type: '%s'", jv_typename(k));
            bool dup = false;
            for (size_t j = 0; j < seen.l->n && !dup; j++)
                dup = jv_eq(seen.l->v[j], k);
            if (!dup) {
                jlist_push(c, seen.l, k);
                jlist_push(c, out.l, l->v[i]);
            }
        }
        return out;
    }
    if (streq(name, "min") || streq(name, "max")) {
        bool cs = jv_truthy(arg_or(a, 0, "case_sensitive", jv_bool(false)));
        jv attr;
        bool by_attr = jarg(a, 1, "attribute", &attr);
        jlist *l = jv_iter(c, v);
        if (l->n == 0)
            return jv_undef_msg(c, "No aggregated item, sequence was empty.");
        size_t best = 0;
        bool is_max = streq(name, "max");
        for (size_t i = 1; i < l->n; i++) {
            jv ki = fold(c, by_attr ? get_path(c, l->v[i], attr) : l->v[i], cs);
            jv kb = fold(c, by_attr ? get_path(c, l->v[best], attr) : l->v[best], cs);
            int r = jv_cmp(c, ki, kb);
            if (is_max ? r > 0 : r < 0)
                best = i;
        }
        return l->v[best];
    }
    if (streq(name, "sum")) {
        jv attr;
        bool by_attr = jarg(a, 0, "attribute", &attr);
        jv acc = arg_or(a, 1, "start", jv_int(0));
        jlist *l = jv_iter(c, v);
        for (size_t i = 0; i < l->n; i++)
            acc = jbinop(c, T_ADD, acc, by_attr ? get_path(c, l->v[i], attr) : l->v[i]);
        return acc;
    }
    if (streq(name, "int"))
        return to_int(c, v, arg_or(a, 0, "default", jv_int(0)));
    if (streq(name, "float"))
        return to_float(c, v, arg_or(a, 0, "default", jv_float(0.0)));
    if (streq(name, "abs")) {
        if (v.t == JV_INT)
            return jv_int(v.i < 0 ? -v.i : v.i);
        if (v.t == JV_FLOAT)
            return jv_float(fabs(v.f));
        if (v.t == JV_BOOL)
            return jv_int(v.b);
        jfail(c, KVS_E_INVALID, "bad operand type for abs(): '%s'", jv_typename(v));
    }
    if (streq(name, "round")) {
        int64_t prec = as_int(c, arg_or(a, 0, "precision", jv_int(0)), "precision");
        jv method = arg_or(a, 1, "method", jv_cstr("common"));
        double d = fnum(v), m = pow(10.0, (double)prec);
        if (!numeric(v))
            jfail(c, KVS_E_INVALID, "round needs a number");
        if (v.t != JV_FLOAT && sv_eq(method, "common") && prec >= 0) /* Python: round(int, n) is that int */
            return jv_int(inum(v));
        double r;
        if (sv_eq(method, "common") && prec >= 0 && prec < 300) {
            char buf[400]; /* Python's round(): correctly rounded, ties to even, as glibc's %f */
            snprintf(buf, sizeof buf, "%.*f", (int)prec, d);
            r = strtod(buf, NULL);
        } else if (sv_eq(method, "common"))
            r = round(d * m) / m;
        else if (sv_eq(method, "ceil"))
            r = ceil(d * m) / m;
        else if (sv_eq(method, "floor"))
            r = floor(d * m) / m;
        else
            jfail(c, KVS_E_INVALID, "method must be common, ceil or floor");
        return jv_float(r);
    }
    if (streq(name, "indent")) {
        if (v.t != JV_STR) /* Jinja2 appends "\n" to the value itself */
            jfail(c, KVS_E_INVALID, "can only indent a string, not '%s'", jv_typename(v));
        jv width = arg_or(a, 0, "width", jv_int(4));
        bool first = jv_truthy(arg_or(a, 1, "first", jv_bool(false)));
        bool blank = jv_truthy(arg_or(a, 2, "blank", jv_bool(false)));
        return do_indent(c, jv_to_str(c, v), width, first, blank);
    }
    if (streq(name, "format")) {
        jv s = jv_to_str(c, v);
        jv tup = jv_list(c, a->n);
        tup.tuple = true;
        for (size_t i = 0; i < a->n; i++)
            tup.l->v[tup.l->n++] = a->v[i];
        return py_percent(c, s, tup);
    }
    if (streq(name, "attr")) {
        if (!jarg(a, 0, "name", &x))
            jfail(c, KVS_E_INVALID, "attr needs a name");
        need_str(c, x, "attribute name");
        return jgetattr(c, v, jstrdup(c, x.s.p, x.s.n), x.s.n);
    }
    if (streq(name, "e") || streq(name, "escape") || streq(name, "forceescape")) {
        if (v.safe && !streq(name, "forceescape"))
            return v;
        return escape_html(c, jv_to_str(c, v));
    }
    if (streq(name, "wordcount")) {
        jv s = jv_to_str(c, v);
        int64_t k = 0;
        bool in = false;
        for (size_t i = 0; i < s.s.n; i++) {
            bool w = isalnum((unsigned char)s.s.p[i]) || s.s.p[i] == '_' || (unsigned char)s.s.p[i] >= 0x80;
            if (w && !in)
                k++;
            in = w;
        }
        return jv_int(k);
    }
    if (streq(name, "batch")) {
        int64_t n = as_int(c, arg_or(a, 0, "linecount", jv_int(1)), "linecount");
        if (n <= 0)
            jfail(c, KVS_E_INVALID, "batch size must be positive");
        jv fill;
        bool has_fill = jarg(a, 1, "fill_with", &fill) && fill.t != JV_NONE;
        jlist *l = jv_iter(c, v);
        jv out = jv_list(c, 0), cur = jv_list(c, 0);
        for (size_t i = 0; i < l->n; i++) {
            jlist_push(c, cur.l, l->v[i]);
            if ((int64_t)cur.l->n == n) {
                jlist_push(c, out.l, cur);
                cur = jv_list(c, 0);
            }
        }
        if (cur.l->n) {
            while (has_fill && (int64_t)cur.l->n < n)
                jlist_push(c, cur.l, fill);
            jlist_push(c, out.l, cur);
        }
        return out;
    }
    if (streq(name, "center")) {
        int64_t w = as_int(c, arg_or(a, 0, "width", jv_int(80)), "width");
        jv s = jv_to_str(c, v);
        int64_t len = (int64_t)ju8_count(s.s.p, s.s.n);
        if (w <= len)
            return s;
        int64_t pad = w - len, left = pad / 2 + (pad & w & 1);
        jbuf b = {0};
        for (int64_t i = 0; i < left; i++)
            jbuf_put(c, &b, " ", 1);
        jbuf_put(c, &b, s.s.p, s.s.n);
        for (int64_t i = 0; i < pad - left; i++)
            jbuf_put(c, &b, " ", 1);
        return jbuf_str(&b);
    }
    if (streq(name, "truncate")) { /* Jinja2's do_truncate with its default leeway of 5 */
        jv s = jv_to_str(c, v);
        int64_t length = as_int(c, arg_or(a, 0, "length", jv_int(255)), "length");
        bool killwords = jv_truthy(arg_or(a, 1, "killwords", jv_bool(false)));
        jv end = jv_to_str(c, arg_or(a, 2, "end", jv_cstr("...")));
        jv lw = arg_or(a, 3, "leeway", jv_none());
        int64_t leeway = lw.t == JV_NONE ? 5 : as_int(c, lw, "leeway");
        int64_t n = (int64_t)ju8_count(s.s.p, s.s.n), endn = (int64_t)ju8_count(end.s.p, end.s.n);
        if (length < endn)
            jfail(c, KVS_E_INVALID, "expected length >= %lld, got %lld", (long long)endn, (long long)length);
        if (leeway < 0)
            jfail(c, KVS_E_INVALID, "expected leeway >= 0, got %lld", (long long)leeway);
        if (n <= length + leeway)
            return s;
        size_t cut = ju8_offset(s.s.p, s.s.n, (size_t)(length - endn));
        if (!killwords) { /* s[:cut].rsplit(" ", 1)[0] */
            size_t k = cut;
            while (k > 0 && s.s.p[k - 1] != ' ')
                k--;
            if (k > 0)
                cut = k - 1;
        }
        jbuf b = {0};
        jbuf_put(c, &b, s.s.p, cut);
        jbuf_put(c, &b, end.s.p, end.s.n);
        return jbuf_str(&b);
    }
    if (streq(name, "striptags"))
        jfail(c, KVS_E_UNSUPPORTED, "the '%s' filter is not supported", name);
    jfail(c, KVS_E_INVALID, "No filter named '%s'.", name);
}

/* ---- tests ---- */

static const char *const k_tests[] = {"defined", "undefined", "none", "string", "mapping", "iterable", "sequence",
                                      "number", "integer", "float", "boolean", "true", "false", "in", "eq",
                                      "equalto", "==", "ne", "!=", "lt", "<", "lessthan", "le", "<=", "gt", ">",
                                      "greaterthan", "ge", ">=", "odd", "even", "divisibleby", "callable",
                                      "sameas", "lower", "upper", "escaped", "filter", "test", NULL};

bool jtest_exists(const char *name)
{
    return in_names(k_tests, name);
}

bool jtest(jctx *c, jframe *f, const char *name, jv v, const jargs *a)
{
    (void)f;
    jv o = jv_none();
    bool has = jarg(a, 0, NULL, &o);
    if (streq(name, "defined"))
        return v.t != JV_UNDEF;
    if (streq(name, "undefined"))
        return v.t == JV_UNDEF;
    if (streq(name, "none"))
        return v.t == JV_NONE;
    if (streq(name, "string"))
        return v.t == JV_STR;
    if (streq(name, "mapping"))
        return v.t == JV_DICT;
    if (streq(name, "iterable"))
        return jv_iterable(v);
    if (streq(name, "sequence"))
        return jv_is_seq(v);
    if (streq(name, "number"))
        return numeric(v);
    if (streq(name, "integer"))
        return v.t == JV_INT;
    if (streq(name, "float"))
        return v.t == JV_FLOAT;
    if (streq(name, "boolean"))
        return v.t == JV_BOOL;
    if (streq(name, "true"))
        return v.t == JV_BOOL && v.b;
    if (streq(name, "false"))
        return v.t == JV_BOOL && !v.b;
    if (streq(name, "callable")) /* Undefined has __call__ (which raises) */
        return v.t == JV_UNDEF || v.t == JV_FUNC || v.t == JV_METHOD || v.t == JV_MACRO || v.t == JV_JOINER;
    if (streq(name, "escaped"))
        return v.safe;
    if (streq(name, "lower") || streq(name, "upper")) {
        jv s = jv_to_str(c, v);
        bool cased = false;
        for (size_t i = 0; i < s.s.n; i++) {
            unsigned char ch = (unsigned char)s.s.p[i];
            if (isalpha(ch)) {
                cased = true;
                if (streq(name, "lower") ? isupper(ch) : islower(ch))
                    return false;
            }
        }
        return cased;
    }
    if (streq(name, "filter") || streq(name, "test")) {
        if (o.t != JV_STR)
            return false;
        char nm[64];
        snprintf(nm, sizeof nm, "%.*s", (int)(o.s.n < 63 ? o.s.n : 63), o.s.p);
        return streq(name, "filter") ? jfilter_exists(nm) : jtest_exists(nm);
    }
    if (!has && !streq(name, "odd") && !streq(name, "even"))
        jfail(c, KVS_E_INVALID, "the '%s' test needs an argument", name);
    if (streq(name, "in"))
        return jv_eq(v, v) && ({
                   bool r = false;
                   if (o.t == JV_STR) {
                       if (v.t != JV_STR)
                           jfail(c, KVS_E_INVALID, "'in <string>' requires string as left operand");
                       r = mem_find(o.s.p, o.s.n, v.s.p, v.s.n) != NULL;
                   } else if (o.t == JV_LIST) {
                       for (size_t i = 0; i < o.l->n && !r; i++)
                           r = jv_eq(o.l->v[i], v);
                   } else if (o.t == JV_DICT) {
                       jv tmp;
                       r = jdict_get(o.d, v, &tmp);
                   } else if (o.t != JV_UNDEF) {
                       jfail(c, KVS_E_INVALID, "argument of type '%s' is not iterable", jv_typename(o));
                   }
                   r;
               });
    if (streq(name, "eq") || streq(name, "equalto") || streq(name, "=="))
        return jv_eq(v, o);
    if (streq(name, "ne") || streq(name, "!="))
        return !jv_eq(v, o);
    if (streq(name, "sameas"))
        return v.t == o.t && jv_eq(v, o) && (v.t == JV_NONE || v.t == JV_BOOL || v.t == JV_UNDEF);
    if (streq(name, "lt") || streq(name, "<") || streq(name, "lessthan"))
        return jv_cmp(c, v, o) < 0;
    if (streq(name, "le") || streq(name, "<="))
        return jv_cmp(c, v, o) <= 0;
    if (streq(name, "gt") || streq(name, ">") || streq(name, "greaterthan"))
        return jv_cmp(c, v, o) > 0;
    if (streq(name, "ge") || streq(name, ">="))
        return jv_cmp(c, v, o) >= 0;
    if (streq(name, "odd") || streq(name, "even")) {
        jv m = jbinop(c, T_MOD, v, jv_int(2));
        bool odd = jv_truthy(m);
        return streq(name, "odd") ? odd : !odd;
    }
    if (streq(name, "divisibleby"))
        return !jv_truthy(jbinop(c, T_MOD, v, o));
    jfail(c, KVS_E_INVALID, "No test named '%s'.", name);
}

/* ---- methods ---- */

jv jcall_method(jctx *c, jframe *f, jbound *m, const jargs *a)
{
    jv self = m->self, x, y;
    const char *name = m->name;
    if (self.t == JV_STR) {
        if (streq(name, "strip") || streq(name, "lstrip") || streq(name, "rstrip")) {
            jv chars = arg_or(a, 0, "chars", jv_none());
            if (chars.t != JV_NONE)
                need_str(c, chars, "strip chars");
            return py_strip(c, self, chars, name[0] != 'r', name[0] != 'l');
        }
        if (streq(name, "split") || streq(name, "rsplit")) {
            jv sep = arg_or(a, 0, "sep", jv_none());
            int64_t maxs = as_int(c, arg_or(a, 1, "maxsplit", jv_int(-1)), "maxsplit");
            if (streq(name, "rsplit") && maxs >= 0)
                jfail(c, KVS_E_UNSUPPORTED, "rsplit with maxsplit is not supported");
            return py_split(c, self, sep, maxs);
        }
        if (streq(name, "startswith") || streq(name, "endswith")) {
            if (!jarg(a, 0, NULL, &x))
                jfail(c, KVS_E_INVALID, "%s needs an argument", name);
            bool sw = name[0] == 's';
            if (x.t == JV_LIST && x.tuple) {
                for (size_t i = 0; i < x.l->n; i++)
                    if (sw ? starts_with(self, need_str(c, x.l->v[i], "prefix"))
                           : ends_with(self, need_str(c, x.l->v[i], "suffix")))
                        return jv_bool(true);
                return jv_bool(false);
            }
            need_str(c, x, sw ? "startswith argument" : "endswith argument");
            return jv_bool(sw ? starts_with(self, x) : ends_with(self, x));
        }
        if (streq(name, "upper"))
            return ascii_case(c, self, 1);
        if (streq(name, "lower") || streq(name, "casefold"))
            return ascii_case(c, self, 0);
        if (streq(name, "title"))
            return ascii_case(c, self, 2);
        if (streq(name, "capitalize"))
            return ascii_case(c, self, 3);
        if (streq(name, "swapcase")) {
            char *o = jalloc(c, self.s.n + 1);
            for (size_t i = 0; i < self.s.n; i++) {
                unsigned char ch = (unsigned char)self.s.p[i];
                o[i] = (char)(isupper(ch) ? tolower(ch) : islower(ch) ? toupper(ch) : ch);
            }
            return jv_strn(o, self.s.n);
        }
        if (streq(name, "replace")) {
            if (!jarg(a, 0, NULL, &x) || !jarg(a, 1, NULL, &y))
                jfail(c, KVS_E_INVALID, "replace needs two arguments");
            need_str(c, x, "replace argument");
            need_str(c, y, "replace argument");
            jv cnt = arg_or(a, 2, "count", jv_int(-1));
            return py_replace(c, self, x, y, as_int(c, cnt, "count"));
        }
        if (streq(name, "format"))
            return py_format(c, self, a);
        if (streq(name, "join")) {
            if (!jarg(a, 0, NULL, &x))
                jfail(c, KVS_E_INVALID, "join needs an argument");
            jlist *l = jv_iter(c, x);
            jbuf b = {0};
            for (size_t i = 0; i < l->n; i++) {
                if (i)
                    jbuf_put(c, &b, self.s.p, self.s.n);
                if (l->v[i].t != JV_STR)
                    jfail(c, KVS_E_INVALID, "sequence item %zu: expected str instance, %s found", i,
                          jv_typename(l->v[i]));
                jbuf_put(c, &b, l->v[i].s.p, l->v[i].s.n);
            }
            return jbuf_str(&b);
        }
        if (streq(name, "count") || streq(name, "find") || streq(name, "rfind") || streq(name, "index")) {
            if (!jarg(a, 0, NULL, &x))
                jfail(c, KVS_E_INVALID, "%s needs an argument", name);
            need_str(c, x, "substring");
            if (streq(name, "count")) {
                if (x.s.n == 0)
                    return jv_int((int64_t)ju8_count(self.s.p, self.s.n) + 1);
                int64_t k = 0;
                const char *p = self.s.p, *end = p + self.s.n, *hit;
                while ((hit = mem_find(p, (size_t)(end - p), x.s.p, x.s.n))) {
                    k++;
                    p = hit + x.s.n;
                }
                return jv_int(k);
            }
            const char *hit = NULL;
            if (streq(name, "rfind")) {
                for (size_t i = self.s.n + 1; i-- > 0;)
                    if (i + x.s.n <= self.s.n && memcmp(self.s.p + i, x.s.p, x.s.n) == 0) {
                        hit = self.s.p + i;
                        break;
                    }
            } else {
                hit = mem_find(self.s.p, self.s.n, x.s.p, x.s.n);
            }
            if (!hit) {
                if (streq(name, "index"))
                    jfail(c, KVS_E_INVALID, "substring not found");
                return jv_int(-1);
            }
            return jv_int((int64_t)ju8_count(self.s.p, (size_t)(hit - self.s.p)));
        }
        if (streq(name, "splitlines"))
            return py_splitlines(c, self);
        if (streq(name, "removeprefix") || streq(name, "removesuffix")) {
            if (!jarg(a, 0, NULL, &x))
                jfail(c, KVS_E_INVALID, "%s needs an argument", name);
            need_str(c, x, "affix");
            if (name[6] == 'p')
                return starts_with(self, x) ? jv_strn(self.s.p + x.s.n, self.s.n - x.s.n) : self;
            return ends_with(self, x) ? jv_strn(self.s.p, self.s.n - x.s.n) : self;
        }
        if (streq(name, "partition") || streq(name, "rpartition")) {
            if (!jarg(a, 0, NULL, &x))
                jfail(c, KVS_E_INVALID, "%s needs an argument", name);
            need_str(c, x, "separator");
            if (x.s.n == 0)
                jfail(c, KVS_E_INVALID, "empty separator");
            const char *hit = NULL;
            if (name[0] == 'r') {
                for (size_t i = self.s.n + 1; i-- > 0;)
                    if (i + x.s.n <= self.s.n && memcmp(self.s.p + i, x.s.p, x.s.n) == 0) {
                        hit = self.s.p + i;
                        break;
                    }
            } else {
                hit = mem_find(self.s.p, self.s.n, x.s.p, x.s.n);
            }
            jv t = jv_list(c, 3);
            t.tuple = true;
            t.l->n = 3;
            if (!hit) {
                t.l->v[0] = name[0] == 'r' ? jv_cstr("") : self;
                t.l->v[1] = jv_cstr("");
                t.l->v[2] = name[0] == 'r' ? self : jv_cstr("");
            } else {
                t.l->v[0] = jv_strn(self.s.p, (size_t)(hit - self.s.p));
                t.l->v[1] = x;
                t.l->v[2] = jv_strn(hit + x.s.n, self.s.n - (size_t)(hit - self.s.p) - x.s.n);
            }
            return t;
        }
        if (streq(name, "isdigit") || streq(name, "isnumeric") || streq(name, "isdecimal") ||
            streq(name, "isalpha") || streq(name, "isalnum") || streq(name, "isspace") || streq(name, "isupper") ||
            streq(name, "islower") || streq(name, "istitle")) {
            if (self.s.n == 0)
                return jv_bool(false);
            if (streq(name, "isspace")) {
                size_t i = 0, adv;
                while (i < self.s.n) {
                    if (!ju_isspace(ju8_decode(self.s.p + i, self.s.n - i, &adv)))
                        return jv_bool(false);
                    i += adv;
                }
                return jv_bool(true);
            }
            bool cased = false;
            for (size_t i = 0; i < self.s.n; i++) {
                unsigned char ch = (unsigned char)self.s.p[i];
                if (name[2] == 'd' || name[2] == 'n') {
                    if (!isdigit(ch))
                        return jv_bool(false);
                } else if (streq(name, "isalpha")) {
                    if (!isalpha(ch))
                        return jv_bool(false);
                } else if (streq(name, "isalnum")) {
                    if (!isalnum(ch))
                        return jv_bool(false);
                } else if (streq(name, "isupper")) {
                    if (islower(ch))
                        return jv_bool(false);
                    cased |= isupper(ch) != 0;
                } else if (streq(name, "islower")) {
                    if (isupper(ch))
                        return jv_bool(false);
                    cased |= islower(ch) != 0;
                } else {
                    jv t = ascii_case(c, self, 2);
                    return jv_bool(jv_eq(t, self));
                }
            }
            return jv_bool(name[2] == 'u' || name[2] == 'l' ? cased : true);
        }
        if (streq(name, "zfill") || streq(name, "ljust") || streq(name, "rjust") || streq(name, "center")) {
            int64_t w = as_int(c, arg_or(a, 0, "width", jv_int(0)), "width");
            int64_t len = (int64_t)ju8_count(self.s.p, self.s.n);
            if (w <= len)
                return self;
            jv fill = arg_or(a, 1, "fillchar", jv_cstr(streq(name, "zfill") ? "0" : " "));
            need_str(c, fill, "fillchar");
            int64_t pad = w - len, left = name[0] == 'r' || name[0] == 'z' ? pad : name[0] == 'l' ? 0 : pad / 2 + (pad & w & 1);
            jbuf b = {0};
            for (int64_t i = 0; i < left; i++)
                jbuf_put(c, &b, fill.s.p, fill.s.n);
            jbuf_put(c, &b, self.s.p, self.s.n);
            for (int64_t i = 0; i < pad - left; i++)
                jbuf_put(c, &b, fill.s.p, fill.s.n);
            return jbuf_str(&b);
        }
        jfail(c, KVS_E_UNSUPPORTED, "str.%s() is not supported", name);
    }
    if (self.t == JV_DICT) {
        if (streq(name, "get")) {
            if (!jarg(a, 0, NULL, &x))
                jfail(c, KVS_E_INVALID, "get expected at least 1 argument, got 0");
            jv def = arg_or(a, 1, NULL, jv_none());
            return jdict_get(self.d, x, &y) ? y : def;
        }
        if (streq(name, "items") || streq(name, "keys") || streq(name, "values")) {
            jv out = jv_list(c, self.d->n);
            for (size_t i = 0; i < self.d->n; i++) {
                if (name[0] == 'i') {
                    jv t = jv_list(c, 2);
                    t.tuple = true;
                    t.l->v[0] = self.d->k[i];
                    t.l->v[1] = self.d->v[i];
                    t.l->n = 2;
                    out.l->v[out.l->n++] = t;
                } else {
                    out.l->v[out.l->n++] = name[0] == 'k' ? self.d->k[i] : self.d->v[i];
                }
            }
            return out;
        }
        if (streq(name, "copy")) {
            jv out = jv_dict(c, self.d->n);
            for (size_t i = 0; i < self.d->n; i++)
                jdict_set(c, out.d, self.d->k[i], self.d->v[i]);
            return out;
        }
    }
    if (self.t == JV_LIST) {
        if (streq(name, "index") || streq(name, "count")) {
            if (!jarg(a, 0, NULL, &x))
                jfail(c, KVS_E_INVALID, "%s needs an argument", name);
            int64_t k = 0;
            for (size_t i = 0; i < self.l->n; i++)
                if (jv_eq(self.l->v[i], x)) {
                    if (name[0] == 'i')
                        return jv_int((int64_t)i);
                    k++;
                }
            if (name[0] == 'i')
                jfail(c, KVS_E_INVALID, "value is not in list");
            return jv_int(k);
        }
        if (streq(name, "copy")) {
            jv out = jv_list(c, self.l->n);
            for (size_t i = 0; i < self.l->n; i++)
                out.l->v[out.l->n++] = self.l->v[i];
            return out;
        }
    }
    if (self.t == JV_LOOP && streq(name, "changed")) {
        jv now = jv_list(c, a->n);
        for (size_t i = 0; i < a->n; i++)
            now.l->v[now.l->n++] = a->v[i];
        bool changed = !self.loop->changed_seen || !jv_eq(now, self.loop->changed_last);
        self.loop->changed_seen = true;
        self.loop->changed_last = now;
        return jv_bool(changed);
    }
    if (self.t == JV_LOOP && streq(name, "cycle")) {
        if (a->n == 0)
            jfail(c, KVS_E_INVALID, "no items for cycling given");
        return a->v[self.loop->index0 % a->n];
    }
    if (self.t == JV_CYCLER) {
        jlist *items = self.cyc[0].l;
        if (streq(name, "next")) {
            jv r = items->v[self.cyc[1].i];
            self.cyc[1].i = (self.cyc[1].i + 1) % (int64_t)items->n;
            return r;
        }
        if (streq(name, "reset")) {
            self.cyc[1].i = 0;
            return jv_none();
        }
    }
    if (self.t == JV_JOINER && streq(name, "__call__")) {
        if (!self.cyc[1].b) {
            self.cyc[1].b = true;
            return jv_cstr("");
        }
        return self.cyc[0];
    }
    if (self.t == JV_FLOAT && streq(name, "is_integer"))
        return jv_bool(floor(self.f) == self.f && !isinf(self.f));
    (void)f;
    jfail(c, KVS_E_UNSUPPORTED, "%s.%s() is not supported", jv_typename(self), name);
}

/* ---- globals ---- */

jv jcall_global(jctx *c, jframe *f, int64_t id, const jargs *a)
{
    (void)f;
    jv x;
    switch (id) {
    case G_RANGE: {
        size_t np = npos(a);
        int64_t start = 0, stop, step = 1;
        if (np == 0)
            jfail(c, KVS_E_INVALID, "range expected at least 1 argument, got 0");
        jarg(a, 0, NULL, &x);
        if (np == 1) {
            stop = as_int(c, x, "range() argument");
        } else {
            start = as_int(c, x, "range() argument");
            jarg(a, 1, NULL, &x);
            stop = as_int(c, x, "range() argument");
            if (np > 2) {
                jarg(a, 2, NULL, &x);
                step = as_int(c, x, "range() argument");
            }
        }
        if (step == 0)
            jfail(c, KVS_E_INVALID, "range() arg 3 must not be zero");
        int64_t n = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                             : (start > stop ? (start - stop - step - 1) / -step : 0);
        if (n > 100000)
            jfail(c, KVS_E_INVALID,
                  "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        jv out = jv_list(c, (size_t)n);
        for (int64_t i = 0; i < n; i++)
            out.l->v[out.l->n++] = jv_int(start + i * step);
        return out;
    }
    case G_DICT:
    case G_NAMESPACE: {
        jv d = jv_dict(c, a->n);
        if (id == G_NAMESPACE)
            d.t = JV_NS;
        for (size_t i = 0; i < a->n; i++) {
            if (a->kw && a->kw[i]) {
                jdict_set(c, d.d, jv_cstr(a->kw[i]), a->v[i]);
            } else if (a->v[i].t == JV_DICT || a->v[i].t == JV_NS) {
                for (size_t k = 0; k < a->v[i].d->n; k++)
                    jdict_set(c, d.d, a->v[i].d->k[k], a->v[i].d->v[k]);
            } else {
                jfail(c, KVS_E_INVALID, "%s() takes keyword arguments or a mapping",
                      id == G_DICT ? "dict" : "namespace");
            }
        }
        return d;
    }
    case G_RAISE: {
        jv msg = arg_or(a, 0, "message", jv_cstr(""));
        jv s = jv_to_str(c, msg);
        c->raised = true;
        /* Jinja2 raises with the text as given; an empty one (or one that
         * starts with NUL) still gets a message saying what happened. */
        if (s.s.n == 0 || s.s.p[0] == '\0')
            jfail(c, KVS_E_INVALID, "the template called raise_exception() with an empty message");
        jfail(c, KVS_E_INVALID, "%.*s", (int)(s.s.n > 500 ? 500 : s.s.n), s.s.p);
    }
    case G_STRFTIME: {
        if (!jarg(a, 0, "format", &x))
            jfail(c, KVS_E_INVALID, "strftime_now needs a format");
        need_str(c, x, "strftime_now format");
        struct tm tm;
        localtime_r(&c->now, &tm);
        char fmt[256], out[512];
        snprintf(fmt, sizeof fmt, "%.*s", (int)(x.s.n < 255 ? x.s.n : 255), x.s.p);
        size_t n = strftime(out, sizeof out, fmt, &tm);
        return jv_str(c, out, n);
    }
    case G_CYCLER: {
        if (a->n == 0)
            jfail(c, KVS_E_INVALID, "at least one item has to be provided");
        jv items = jv_list(c, a->n);
        for (size_t i = 0; i < a->n; i++)
            items.l->v[items.l->n++] = a->v[i];
        jv *st = jalloc(c, 2 * sizeof *st);
        st[0] = items;
        st[1] = jv_int(0);
        jv v = {.t = JV_CYCLER, .cyc = st};
        return v;
    }
    case G_JOINER: {
        jv *st = jalloc(c, 2 * sizeof *st);
        st[0] = jv_to_str(c, arg_or(a, 0, "sep", jv_cstr(", ")));
        st[1] = jv_bool(false);
        jv v = {.t = JV_JOINER, .cyc = st};
        return v;
    }
    }
    jfail(c, KVS_E_INTERNAL, "unknown global function %lld", (long long)id);
}

void jglobals_install(jctx *c, jframe *g)
{
    static const struct {
        const char *name;
        int id;
    } k[] = {{"range", G_RANGE},           {"dict", G_DICT},     {"namespace", G_NAMESPACE},
             {"raise_exception", G_RAISE}, {"strftime_now", G_STRFTIME}, {"cycler", G_CYCLER},
             {"joiner", G_JOINER}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        jv v = {.t = JV_FUNC, .i = k[i].id};
        jframe_set(c, g, k[i].name, v);
    }
}
