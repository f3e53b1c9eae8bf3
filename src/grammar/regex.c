/* Regular expressions and choice lists -> GBNF (see grammar.h). */
#include "grammar/grammar.h"
#include "core/chars.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef kvs_cp_range range;

typedef struct ranges {
    range r[512];
    int n;
    bool full;                   /* too many ranges */
} ranges;

typedef struct rx {
    const char *s;
    size_t n, pos;
    bool json;
    kvs_error *err;
    kvs_status st;
    int depth;
} rx;

static void rx_fail(rx *r, const char *fmt, const char *what)
{
    if (r->st != KVS_OK)
        return;
    char msg[200];
    snprintf(msg, sizeof msg, fmt, what);
    r->st = kvs_fail(r->err, KVS_E_UNSUPPORTED, "regex: %s (at offset %zu)", msg, r->pos);
}

static void add(ranges *v, uint32_t lo, uint32_t hi)
{
    if (v->n == (int)(sizeof v->r / sizeof v->r[0])) {
        v->full = true;
        return;
    }
    v->r[v->n++] = (range){lo, hi};
}

static void normalize(ranges *v)
{
    v->n = (int)kvs_cp_ranges_merge(v->r, (size_t)v->n);
}

static void negate(ranges *v)
{
    normalize(v);
    ranges o = {.n = 0};
    uint32_t next = 0;
    for (int i = 0; i < v->n; i++) {
        if (v->r[i].lo > next)
            add(&o, next, v->r[i].lo - 1);
        next = v->r[i].hi + 1;
    }
    if (next <= 0x10FFFF)
        add(&o, next, 0x10FFFF);
    o.full |= v->full;
    *v = o;
}

/* Remove lo..hi from v. */
static void subtract(ranges *v, uint32_t lo, uint32_t hi)
{
    ranges o = {.n = 0};
    for (int i = 0; i < v->n; i++) {
        range x = v->r[i];
        if (x.hi < lo || x.lo > hi) {
            add(&o, x.lo, x.hi);
            continue;
        }
        if (x.lo < lo)
            add(&o, x.lo, lo - 1);
        if (x.hi > hi)
            add(&o, hi + 1, x.hi);
    }
    o.full |= v->full;
    *v = o;
}

static void put_cp(kvs_gbuf *b, uint32_t c)
{
    if (c < 0x80 && c >= 0x20 && c != ']' && c != '[' && c != '\\' && c != '-' && c != '^' && c != '"' && c != 0x7F)
        kvs_gbuf_printf(b, "%c", (char)c);
    else if (c <= 0xFF)
        kvs_gbuf_printf(b, "\\x%02X", c);
    else if (c <= 0xFFFF)
        kvs_gbuf_printf(b, "\\u%04X", c);
    else
        kvs_gbuf_printf(b, "\\U%08X", c);
}

/* A class as GBNF, after the JSON-string restriction. */
static void emit_class(rx *r, ranges *v, kvs_gbuf *out)
{
    normalize(v);
    if (r->json) {
        subtract(v, 0, 0x1F);
        subtract(v, '"', '"');
        subtract(v, '\\', '\\');
    }
    subtract(v, 0xD800, 0xDFFF);
    if (v->full) {
        rx_fail(r, "%s", "a character class with too many ranges");
        return;
    }
    if (v->n == 0) {
        rx_fail(r, "%s", "a character class that matches no character");
        return;
    }
    kvs_gbuf_puts(out, "[");
    for (int i = 0; i < v->n; i++) {
        put_cp(out, v->r[i].lo);
        if (v->r[i].hi != v->r[i].lo) {
            kvs_gbuf_puts(out, "-");
            put_cp(out, v->r[i].hi);
        }
    }
    kvs_gbuf_puts(out, "]");
}

/* One literal character (inside a JSON string: as it is written there). */
static void emit_char(rx *r, uint32_t c, kvs_gbuf *out)
{
    char u[8];
    int n = 0;
    if (r->json && (c == '"' || c == '\\')) {
        u[n++] = '\\';
        u[n++] = (char)c;
    } else if (r->json && c < 0x20) {
        static const char short_esc[] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't'};
        if (c < sizeof short_esc && short_esc[c]) {
            u[n++] = '\\';
            u[n++] = short_esc[c];
        } else {
            n = snprintf(u, sizeof u, "\\u%04X", c);
        }
    } else if (c < 0x80) {
        u[n++] = (char)c;
    } else if (c < 0x800) {
        u[n++] = (char)(0xC0 | (c >> 6));
        u[n++] = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        u[n++] = (char)(0xE0 | (c >> 12));
        u[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[n++] = (char)(0x80 | (c & 0x3F));
    } else {
        u[n++] = (char)(0xF0 | (c >> 18));
        u[n++] = (char)(0x80 | ((c >> 12) & 0x3F));
        u[n++] = (char)(0x80 | ((c >> 6) & 0x3F));
        u[n++] = (char)(0x80 | (c & 0x3F));
    }
    kvs_gbuf_literal(out, u, (size_t)n);
}

static int peekc(const rx *r) { return r->pos < r->n ? (unsigned char)r->s[r->pos] : -1; }

/* A UTF-8 character of the pattern. */
static uint32_t next_cp(rx *r)
{
    unsigned char c = (unsigned char)r->s[r->pos++];
    if (c < 0x80)
        return c;
    int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    uint32_t v = c & (0x3F >> n);
    for (int i = 0; i < n; i++) {
        if (r->pos >= r->n || ((unsigned char)r->s[r->pos] & 0xC0) != 0x80) {
            rx_fail(r, "%s", "invalid UTF-8 in the pattern");
            return 0;
        }
        v = (v << 6) | ((unsigned char)r->s[r->pos++] & 0x3F);
    }
    if (!n || v > 0x10FFFF) {
        rx_fail(r, "%s", "invalid UTF-8 in the pattern");
        return 0;
    }
    return v;
}

static void class_escape_ranges(int e, ranges *v, bool *neg)
{
    *neg = e == 'D' || e == 'W' || e == 'S';
    switch (e | 0x20) {
    case 'd':
        add(v, '0', '9');
        break;
    case 'w':
        add(v, '0', '9');
        add(v, 'A', 'Z');
        add(v, 'a', 'z');
        add(v, '_', '_');
        break;
    case 's':
        add(v, ' ', ' ');
        add(v, '\t', '\r'); /* \t \n \v \f \r */
        break;
    }
}

/* After a backslash: a character (returns it, *cls false) or a class
 * escape like \d (fills v, *cls true). */
static uint32_t parse_escape(rx *r, bool in_class, bool *cls, ranges *v, bool *neg)
{
    *cls = false;
    if (r->pos >= r->n) {
        rx_fail(r, "%s", "a pattern that ends in '\\'");
        return 0;
    }
    int e = (unsigned char)r->s[r->pos++];
    switch (e) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        *cls = true;
        class_escape_ranges(e, v, neg);
        return 0;
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    case '0': return 0;
    case 'x': case 'u': {
        int nd = e == 'x' ? 2 : 4;
        uint32_t x = 0;
        for (int i = 0; i < nd; i++) {
            int h = r->pos < r->n ? kvs_hex_digit((unsigned char)r->s[r->pos]) : -1;
            if (h < 0) {
                rx_fail(r, "'\\%s' needs hex digits", e == 'x' ? "x" : "u");
                return 0;
            }
            x = x * 16 + (uint32_t)h;
            r->pos++;
        }
        return x;
    }
    case 'b':
        if (in_class)
            return '\b';
        rx_fail(r, "%s is not supported", "the word boundary '\\b'");
        return 0;
    case 'B': case 'A': case 'z': case 'Z': case 'G':
        rx_fail(r, "the anchor '\\%s' is not supported", (char[]){(char)e, 0});
        return 0;
    case 'p': case 'P':
        rx_fail(r, "%s are not supported", "Unicode property classes (\\p{...})");
        return 0;
    default:
        if (e >= '1' && e <= '9') {
            rx_fail(r, "%s are not supported", "backreferences");
            return 0;
        }
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
            rx_fail(r, "the escape '\\%s' is not supported", (char[]){(char)e, 0});
            return 0;
        }
        r->pos--;
        return next_cp(r); /* \. \* \\ \( ... stand for themselves */
    }
}

static void parse_class(rx *r, kvs_gbuf *out)
{
    /* r->pos is after '[' */
    ranges v = {.n = 0};
    bool neg = false;
    if (peekc(r) == '^') {
        neg = true;
        r->pos++;
    }
    bool first = true;
    while (r->st == KVS_OK) {
        int c = peekc(r);
        if (c < 0) {
            rx_fail(r, "%s", "'[' without its ']'");
            return;
        }
        if (c == ']' && !first) {
            r->pos++;
            break;
        }
        first = false;
        if (c == '[' && r->pos + 1 < r->n && (r->s[r->pos + 1] == ':' || r->s[r->pos + 1] == '=' || r->s[r->pos + 1] == '.')) {
            rx_fail(r, "%s are not supported", "POSIX classes like [:alpha:]");
            return;
        }
        uint32_t lo;
        if (c == '\\') {
            r->pos++;
            bool cls, cneg = false;
            ranges sub = {.n = 0};
            lo = parse_escape(r, true, &cls, &sub, &cneg);
            if (cls) {
                if (cneg)
                    negate(&sub);
                for (int i = 0; i < sub.n; i++)
                    add(&v, sub.r[i].lo, sub.r[i].hi);
                continue;
            }
        } else {
            lo = next_cp(r);
        }
        uint32_t hi = lo;
        if (peekc(r) == '-' && r->pos + 1 < r->n && r->s[r->pos + 1] != ']') {
            r->pos++;
            if (peekc(r) == '\\') {
                r->pos++;
                bool cls, cneg;
                ranges sub = {.n = 0};
                hi = parse_escape(r, true, &cls, &sub, &cneg);
                if (cls) {
                    rx_fail(r, "%s", "a class escape cannot end a range");
                    return;
                }
            } else {
                hi = next_cp(r);
            }
            if (hi < lo) {
                rx_fail(r, "%s", "a character range that runs backwards");
                return;
            }
        }
        add(&v, lo, hi);
    }
    if (r->st != KVS_OK)
        return;
    if (neg)
        negate(&v);
    emit_class(r, &v, out);
}

static void parse_alt(rx *r, kvs_gbuf *out, bool top);

/* {m}, {m,}, {m,n} at r->pos ('{'); false (pos unchanged) if it is not one. */
static bool parse_braces(rx *r, long *min, long *max)
{
    size_t p = r->pos + 1;
    long a = -1, b = -1;
    while (p < r->n && r->s[p] >= '0' && r->s[p] <= '9') {
        a = (a < 0 ? 0 : a) * 10 + (r->s[p] - '0');
        if (a > 100000)
            a = 100000;
        p++;
    }
    if (a < 0)
        return false;
    if (p < r->n && r->s[p] == ',') {
        p++;
        while (p < r->n && r->s[p] >= '0' && r->s[p] <= '9') {
            b = (b < 0 ? 0 : b) * 10 + (r->s[p] - '0');
            if (b > 100000)
                b = 100000;
            p++;
        }
    } else {
        b = a;
    }
    if (p >= r->n || r->s[p] != '}')
        return false;
    r->pos = p + 1;
    *min = a;
    *max = b;
    return true;
}

static void parse_seq(rx *r, kvs_gbuf *out, bool top)
{
    bool any = false;
    size_t seq_start = r->pos;
    while (r->st == KVS_OK && r->pos < r->n) {
        int c = peekc(r);
        if (c == '|' || c == ')')
            break;
        kvs_gbuf atom = {.ar = out->ar};
        if (c == '^') {
            r->pos++;
            if (!(top && r->pos - 1 == seq_start))
                rx_fail(r, "%s is not supported", "'^' inside the pattern (only at its start)");
            continue;
        }
        if (c == '$') {
            r->pos++;
            if (!(top && (r->pos == r->n || peekc(r) == '|')))
                rx_fail(r, "%s is not supported", "'$' inside the pattern (only at its end)");
            continue;
        }
        if (c == '(') {
            r->pos++;
            if (peekc(r) == '?') {
                r->pos++;
                int d = peekc(r);
                if (d == ':') {
                    r->pos++;
                } else if (d == 'P' && r->pos + 1 < r->n && r->s[r->pos + 1] == '<') {
                    r->pos += 2;
                    while (r->pos < r->n && r->s[r->pos] != '>')
                        r->pos++;
                    r->pos++;
                } else if (d == '<' && r->pos + 1 < r->n && r->s[r->pos + 1] != '=' && r->s[r->pos + 1] != '!') {
                    r->pos++;
                    while (r->pos < r->n && r->s[r->pos] != '>')
                        r->pos++;
                    r->pos++;
                } else if (d == '=' || d == '!' || d == '<') {
                    rx_fail(r, "%s are not supported", "lookaround assertions");
                } else if (d == 'P' && r->pos + 1 < r->n && r->s[r->pos + 1] == '=') {
                    rx_fail(r, "%s are not supported", "backreferences");
                } else {
                    rx_fail(r, "%s are not supported", "inline flags and other (?...) groups");
                }
            }
            if (r->depth > 100) {
                rx_fail(r, "%s", "groups nested too deeply");
                break;
            }
            r->depth++;
            parse_alt(r, &atom, false);
            r->depth--;
            if (r->st == KVS_OK && peekc(r) != ')')
                rx_fail(r, "%s", "'(' without its ')'");
            r->pos++;
        } else if (c == '[') {
            r->pos++;
            parse_class(r, &atom);
        } else if (c == '.') {
            r->pos++;
            ranges v = {.n = 0};
            add(&v, '\n', '\n');
            negate(&v);
            emit_class(r, &v, &atom);
        } else if (c == '\\') {
            r->pos++;
            bool cls, neg;
            ranges v = {.n = 0};
            uint32_t ch = parse_escape(r, false, &cls, &v, &neg);
            if (cls) {
                if (neg)
                    negate(&v);
                emit_class(r, &v, &atom);
            } else if (r->st == KVS_OK) {
                emit_char(r, ch, &atom);
            }
        } else if (c == '*' || c == '+' || c == '?') {
            rx_fail(r, "'%s' with nothing to repeat", (char[]){(char)c, 0});
            break;
        } else if (c == '{') {
            long a, b;
            size_t save = r->pos;
            if (parse_braces(r, &a, &b)) {
                r->pos = save;
                rx_fail(r, "%s", "'{' with nothing to repeat");
                break;
            }
            r->pos++;
            emit_char(r, '{', &atom);
        } else {
            uint32_t ch = next_cp(r);
            if (r->st == KVS_OK)
                emit_char(r, ch, &atom);
        }
        /* quantifiers */
        bool quantified = false;
        for (;;) {
            int q = peekc(r);
            long a, b;
            char qs[64];
            if (q == '*' || q == '+' || q == '?') {
                r->pos++;
                snprintf(qs, sizeof qs, "%c", q);
            } else if (q == '{' && parse_braces(r, &a, &b)) {
                if (b >= 0 && b < a) {
                    rx_fail(r, "%s", "{m,n} with n below m");
                    break;
                }
                if (b < 0)
                    snprintf(qs, sizeof qs, "{%ld,}", a);
                else
                    snprintf(qs, sizeof qs, "{%ld,%ld}", a, b);
            } else {
                break;
            }
            if (quantified) {
                rx_fail(r, "%s", "a quantifier after a quantifier (other than a lazy '?')");
                break;
            }
            quantified = true;
            /* group the atom so the quantifier applies to all of it */
            kvs_gbuf g = {.ar = out->ar};
            kvs_gbuf_puts(&g, "(");
            kvs_gbuf_put(&g, atom.s ? atom.s : "", atom.len);
            kvs_gbuf_puts(&g, ")");
            kvs_gbuf_puts(&g, qs);
            kvs_gbuf_free(&atom);
            atom = g;
            if (peekc(r) == '?' || peekc(r) == '+') /* lazy / possessive: same language */
                r->pos++;
        }
        if (atom.oom)
            r->st = kvs_fail(r->err, KVS_E_NOMEM, "regex: out of memory");
        if (atom.len) {
            if (any)
                kvs_gbuf_puts(out, " ");
            kvs_gbuf_put(out, atom.s, atom.len);
            any = true;
        }
        kvs_gbuf_free(&atom);
    }
    if (!any)
        kvs_gbuf_puts(out, "\"\"");
}

static void parse_alt(rx *r, kvs_gbuf *out, bool top)
{
    kvs_gbuf_puts(out, "(");
    parse_seq(r, out, top);
    while (r->st == KVS_OK && peekc(r) == '|') {
        r->pos++;
        kvs_gbuf_puts(out, " | ");
        parse_seq(r, out, top);
    }
    kvs_gbuf_puts(out, ")");
}

kvs_status kvs_regex_to_gbnf_expr(const char *re, bool json_string, kvs_gbuf *expr, kvs_error *err)
{
    rx r = {.s = re, .n = strlen(re), .json = json_string, .err = err};
    parse_alt(&r, expr, true);
    if (r.st == KVS_OK && r.pos < r.n)
        rx_fail(&r, "%s", "')' without its '('");
    if (r.st == KVS_OK && expr->oom)
        r.st = kvs_fail(err, KVS_E_NOMEM, "regex: out of memory");
    return r.st;
}

kvs_status kvs_regex_to_gbnf(const char *re, char **gbnf, kvs_error *err)
{
    return kvs_regex_to_gbnf_in(NULL, re, gbnf, err);
}

kvs_status kvs_regex_to_gbnf_in(kvs_garena *ar, const char *re, char **gbnf, kvs_error *err)
{
    *gbnf = NULL;
    kvs_gbuf b = {.ar = ar};
    kvs_gbuf_puts(&b, "root ::= ");
    kvs_status st = kvs_regex_to_gbnf_expr(re, false, &b, err);
    kvs_gbuf_puts(&b, "\n");
    if (st == KVS_OK && b.oom)
        st = kvs_fail(err, KVS_E_NOMEM, "regex: out of memory");
    if (st != KVS_OK) {
        kvs_gbuf_free(&b);
        return st;
    }
    *gbnf = b.s;
    return KVS_OK;
}

kvs_status kvs_choice_to_gbnf(const char *const *choices, size_t n, char **gbnf, kvs_error *err)
{
    return kvs_choice_to_gbnf_in(NULL, choices, n, gbnf, err);
}

kvs_status kvs_choice_to_gbnf_in(kvs_garena *ar, const char *const *choices, size_t n, char **gbnf, kvs_error *err)
{
    *gbnf = NULL;
    if (n == 0)
        return kvs_fail(err, KVS_E_INVALID, "choice: the list of choices is empty");
    kvs_gbuf b = {.ar = ar};
    kvs_gbuf_puts(&b, "root ::= ");
    for (size_t i = 0; i < n; i++) {
        if (i)
            kvs_gbuf_puts(&b, " | ");
        kvs_gbuf_literal(&b, choices[i], strlen(choices[i]));
    }
    kvs_gbuf_puts(&b, "\n");
    if (b.oom) {
        kvs_gbuf_free(&b);
        return kvs_fail(err, KVS_E_NOMEM, "choice: out of memory");
    }
    *gbnf = b.s;
    return KVS_OK;
}
