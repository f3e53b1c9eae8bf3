/*
 * unicode.c - category lookup and UTF-8 helpers (see unicode.h).
 */
#include "tokenizer/unicode.h"

enum kvs_ucat kvs_ucat_of(uint32_t cp)
{
    if (cp >= 0x110000)
        return KVS_UCAT_C;
    /* last run whose first code point is <= cp */
    size_t lo = 0, hi = kvs_ucat_n_runs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((kvs_ucat_runs[mid] >> 4) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return (enum kvs_ucat)(kvs_ucat_runs[lo] & 0xf);
}

bool kvs_ucat_is_space(uint32_t cp)
{
    /* PropList.txt White_Space (stable since Unicode 6.3) */
    if (cp <= 0x20)
        return cp == 0x20 || (cp >= 0x09 && cp <= 0x0d);
    if (cp < 0x85)
        return false;
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

size_t kvs_utf8_len(uint8_t lead)
{
    static const uint8_t by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return by_high_nibble[lead >> 4];
}

uint32_t kvs_utf8_decode(const char *s, size_t len, size_t *pos)
{
    /* llama.cpp's unicode_cpt_from_utf8: continuation bytes are checked,
     * overlong forms are not; any failure is U+FFFD for one byte. */
    const uint8_t *p = (const uint8_t *)s + *pos;
    size_t left = len - *pos;
    uint8_t c = p[0];
    if (!(c & 0x80)) {
        *pos += 1;
        return c;
    }
    if ((c & 0xe0) == 0xc0 && left >= 2 && (p[1] & 0xc0) == 0x80) {
        *pos += 2;
        return (uint32_t)(c & 0x1f) << 6 | (p[1] & 0x3f);
    }
    if ((c & 0xf0) == 0xe0 && left >= 3 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80) {
        *pos += 3;
        return (uint32_t)(c & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 | (p[2] & 0x3f);
    }
    if ((c & 0xf8) == 0xf0 && left >= 4 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 &&
        (p[3] & 0xc0) == 0x80) {
        *pos += 4;
        return (uint32_t)(c & 0x07) << 18 | (uint32_t)(p[1] & 0x3f) << 12 |
               (uint32_t)(p[2] & 0x3f) << 6 | (p[3] & 0x3f);
    }
    *pos += 1;
    return 0xfffd;
}

size_t kvs_utf8_encode(uint32_t cp, char *out)
{
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xc0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (uint8_t)(0xf0 | (cp >> 18 & 0x07));
    o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

int kvs_utf8_check(const uint8_t *s, size_t len)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else {
        return -1;
    }
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= len)
            return 0;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xc0) != 0x80)
            return -1;
    }
    return need;
}
