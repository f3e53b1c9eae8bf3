/* A JSON writer into a fixed buffer (see json_out.h). */
#include "core/json_out.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void kvs_jw_init(kvs_jw *w, char *buf, size_t cap)
{
    *w = (kvs_jw){.buf = buf, .cap = buf ? cap : 0};
}

size_t kvs_jw_len(const kvs_jw *w) { return w->len; }

bool kvs_jw_overflow(const kvs_jw *w) { return w->len > w->cap || w->bad; }

static void put(kvs_jw *w, const char *s, size_t n)
{
    if (w->len < w->cap) {
        size_t room = w->cap - w->len;
        memcpy(w->buf + w->len, s, n < room ? n : room);
    }
    w->len += n;
}

static void put_c(kvs_jw *w, char c)
{
    if (w->len < w->cap)
        w->buf[w->len] = c;
    w->len++;
}

/* Before a value: the comma, unless it follows a key or opens its level. */
static void value_start(kvs_jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    uint64_t bit = (uint64_t)1 << w->depth;
    if (w->has_member & bit)
        put_c(w, ',');
    w->has_member |= bit;
}

static void open(kvs_jw *w, char c)
{
    value_start(w);
    put_c(w, c);
    if (w->depth + 1 >= KVS_JW_MAX_DEPTH) {
        w->bad = true;
        return;
    }
    w->depth++;
    w->has_member &= ~((uint64_t)1 << w->depth);
    if (c == '[')
        w->is_arr |= (uint64_t)1 << w->depth;
    else
        w->is_arr &= ~((uint64_t)1 << w->depth);
}

void kvs_jw_obj(kvs_jw *w) { open(w, '{'); }

void kvs_jw_arr(kvs_jw *w) { open(w, '['); }

void kvs_jw_end(kvs_jw *w)
{
    if (w->depth == 0 || w->after_key) {
        w->bad = true;
        return;
    }
    put_c(w, w->is_arr & ((uint64_t)1 << w->depth) ? ']' : '}');
    w->depth--;
}

void kvs_jw_keyn(kvs_jw *w, const char *key, size_t n)
{
    if (w->after_key || w->depth == 0 || (w->is_arr & ((uint64_t)1 << w->depth)))
        w->bad = true;
    kvs_jw_str(w, key, n);
    w->after_key = true;
    put_c(w, ':');
}

void kvs_jw_key(kvs_jw *w, const char *key) { kvs_jw_keyn(w, key, strlen(key)); }

size_t kvs_jw_utf8_seq(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;
    if (n == 0)
        return 0;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xE0) == 0xC0) {
        len = 2;
        cp = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3;
        cp = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

bool kvs_jw_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = kvs_jw_utf8_seq(p + i, n - i);
        if (!l)
            return false;
        i += l;
    }
    return true;
}

/* The string's body, escaped as jansson's dump_string does; lossy: bytes
 * that start no valid sequence become U+FFFD. */
static void str_body(kvs_jw *w, const char *s, size_t n, bool lossy)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0; /* start of the bytes not yet written */
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && (c < 0x80 || !lossy)) {
            i++;
            continue;
        }
        if (c >= 0x80) { /* lossy: check the sequence */
            size_t l = kvs_jw_utf8_seq(p + i, n - i);
            if (l) {
                i += l;
                continue;
            }
            put(w, s + run, i - run);
            put(w, "\xEF\xBF\xBD", 3);
            run = ++i;
            continue;
        }
        put(w, s + run, i - run);
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t m = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            m = 6;
        }
        put(w, esc, m);
        run = ++i;
    }
    put(w, s + run, n - run);
}

static void str(kvs_jw *w, const char *s, size_t n, bool lossy)
{
    value_start(w);
    put_c(w, '"');
    str_body(w, s, n, lossy);
    put_c(w, '"');
}

void kvs_jw_str(kvs_jw *w, const char *s, size_t n) { str(w, s, n, false); }

void kvs_jw_str_lossy(kvs_jw *w, const char *s, size_t n) { str(w, s, n, true); }

void kvs_jw_cstr(kvs_jw *w, const char *s) { str(w, s, strlen(s), false); }

void kvs_jw_int(kvs_jw *w, long long v)
{
    char b[KVS_JW_INT_MAX + 1];
    int n = snprintf(b, sizeof b, "%lld", v);
    value_start(w);
    put(w, b, (size_t)n);
}

void kvs_jw_double(kvs_jw *w, double v)
{
    if (!isfinite(v)) {
        kvs_jw_null(w);
        return;
    }
    char b[40];
    int r = snprintf(b, sizeof b - 3, "%.17g", v);
    size_t n = r > 0 ? (size_t)r : 0;
    for (size_t i = 0; i < n; i++) /* a locale's decimal comma, as jansson's from_locale */
        if (b[i] == ',')
            b[i] = '.';
    if (!memchr(b, '.', n) && !memchr(b, 'e', n)) {
        b[n++] = '.';
        b[n++] = '0';
    }
    char *e = memchr(b, 'e', n);
    if (e) { /* drop the exponent's '+' and leading zeros */
        char *start = e + 1, *end = start + 1;
        if (*start == '-')
            start++;
        while (end < b + n && *end == '0')
            end++;
        if (end != start) {
            memmove(start, end, (size_t)(b + n - end));
            n -= (size_t)(end - start);
        }
    }
    value_start(w);
    put(w, b, n);
}

void kvs_jw_bool(kvs_jw *w, bool v)
{
    value_start(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

void kvs_jw_null(kvs_jw *w)
{
    value_start(w);
    put(w, "null", 4);
}

void kvs_jw_raw(kvs_jw *w, const char *s, size_t n) { put(w, s, n); }

void kvs_jw_next(kvs_jw *w)
{
    w->has_member = w->is_arr = 0;
    w->depth = 0;
    w->after_key = false;
}
