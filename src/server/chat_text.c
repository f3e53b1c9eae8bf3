/* chat_text.c - output buffer and Python-compatible string helpers for the
 * chat-template renderers (see chat_internal.h). */
#include "server/chat_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void kvs_chat_buf_put(kvs_chat_buf *b, const char *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (n > SIZE_MAX - b->len - 1) {
        b->oom = true;
        return;
    }
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void kvs_chat_buf_puts(kvs_chat_buf *b, const char *s)
{
    kvs_chat_buf_put(b, s, strlen(s));
}

void kvs_chat_buf_free(kvs_chat_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

kvs_chat_span kvs_chat_span_of(const char *s)
{
    return (kvs_chat_span){s, strlen(s)};
}

void kvs_chat_buf_span(kvs_chat_buf *b, kvs_chat_span s)
{
    kvs_chat_buf_put(b, s.p, s.n);
}

/* Python's str.isspace() code points, UTF-8 encoded, beyond single bytes. */
static const char *const k_ws_multi[] = {
    "\xc2\x85",     "\xc2\xa0",     "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81",
    "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86",
    "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8",
    "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80",
};

static bool ws_byte(unsigned char c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20);
}

/* Length of the whitespace character starting at p (0 if none). */
static size_t ws_len_at(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (ws_byte((unsigned char)p[0]))
        return 1;
    for (size_t i = 0; i < sizeof k_ws_multi / sizeof k_ws_multi[0]; i++) {
        size_t l = strlen(k_ws_multi[i]);
        if (l <= n && memcmp(p, k_ws_multi[i], l) == 0)
            return l;
    }
    return 0;
}

/* Length of the whitespace character ending at p + n (0 if none).  The
 * multi-byte forms start with a lead byte, so a match is a whole character. */
static size_t ws_len_before(const char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (ws_byte((unsigned char)p[n - 1]))
        return 1;
    for (size_t i = 0; i < sizeof k_ws_multi / sizeof k_ws_multi[0]; i++) {
        size_t l = strlen(k_ws_multi[i]);
        if (l <= n && memcmp(p + n - l, k_ws_multi[i], l) == 0)
            return l;
    }
    return 0;
}

kvs_chat_span kvs_chat_py_strip(kvs_chat_span s, int sides)
{
    size_t l;
    if (sides & KVS_CHAT_LEFT)
        while ((l = ws_len_at(s.p, s.n)) > 0) {
            s.p += l;
            s.n -= l;
        }
    if (sides & KVS_CHAT_RIGHT)
        while ((l = ws_len_before(s.p, s.n)) > 0)
            s.n -= l;
    return s;
}

kvs_chat_span kvs_chat_strip_char(kvs_chat_span s, char c, int sides)
{
    if (sides & KVS_CHAT_LEFT)
        while (s.n > 0 && s.p[0] == c) {
            s.p++;
            s.n--;
        }
    if (sides & KVS_CHAT_RIGHT)
        while (s.n > 0 && s.p[s.n - 1] == c)
            s.n--;
    return s;
}

/* Offset of the first (last) occurrence of needle in s, or SIZE_MAX. */
static size_t find(kvs_chat_span s, const char *needle, bool last)
{
    size_t m = strlen(needle), at = SIZE_MAX;
    if (m > s.n)
        return SIZE_MAX;
    for (size_t i = 0; i + m <= s.n; i++)
        if (memcmp(s.p + i, needle, m) == 0) {
            at = i;
            if (!last)
                break;
        }
    return at;
}

bool kvs_chat_contains(kvs_chat_span s, const char *needle)
{
    return find(s, needle, false) != SIZE_MAX;
}

bool kvs_chat_starts(kvs_chat_span s, const char *prefix)
{
    size_t m = strlen(prefix);
    return m <= s.n && memcmp(s.p, prefix, m) == 0;
}

bool kvs_chat_ends(kvs_chat_span s, const char *suffix)
{
    size_t m = strlen(suffix);
    return m <= s.n && memcmp(s.p + s.n - m, suffix, m) == 0;
}

kvs_chat_span kvs_chat_split_first(kvs_chat_span s, const char *sep)
{
    size_t at = find(s, sep, false);
    if (at != SIZE_MAX)
        s.n = at;
    return s;
}

kvs_chat_span kvs_chat_split_last(kvs_chat_span s, const char *sep)
{
    size_t at = find(s, sep, true);
    if (at != SIZE_MAX) {
        size_t skip = at + strlen(sep);
        s.p += skip;
        s.n -= skip;
    }
    return s;
}
