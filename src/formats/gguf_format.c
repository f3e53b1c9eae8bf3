/*
 * gguf_format.c - metadata values as text, for `kvserve info` and messages:
 *   42    1e-05    true    "llama"    [array of 32000 string: "<unk>", "<s>", "</s>", ...]
 * Output is always NUL-terminated and cut to the buffer's capacity.
 */
#include "formats/gguf_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#define FMT_MAX_STR 120        /* bytes of a string value shown */
#define FMT_MAX_ARR_STR 40     /* bytes of each string array element shown */
#define FMT_ARR_STRINGS 3      /* string elements shown */
#define FMT_ARR_NUMBERS 8      /* numeric elements shown */

const char *kvs_gguf_type_name(kvs_gguf_type t)
{
    switch (t) {
    case KVS_GGUF_UINT8: return "uint8";
    case KVS_GGUF_INT8: return "int8";
    case KVS_GGUF_UINT16: return "uint16";
    case KVS_GGUF_INT16: return "int16";
    case KVS_GGUF_UINT32: return "uint32";
    case KVS_GGUF_INT32: return "int32";
    case KVS_GGUF_FLOAT32: return "float32";
    case KVS_GGUF_BOOL: return "bool";
    case KVS_GGUF_STRING: return "string";
    case KVS_GGUF_ARRAY: return "array";
    case KVS_GGUF_UINT64: return "uint64";
    case KVS_GGUF_INT64: return "int64";
    case KVS_GGUF_FLOAT64: return "float64";
    }
    return "unknown";
}

/* Append printf-style text at *pos, never past cap - 1. */
static void app(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void app(char *buf, size_t cap, size_t *pos, const char *fmt, ...)
{
    if (*pos + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, cap - *pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    *pos += (size_t)n;
    if (*pos > cap - 1)
        *pos = cap - 1;
}

void kvs_gguf_fmt_quoted(char *buf, size_t cap, size_t *pos, const char *s, size_t len,
                         size_t max_bytes)
{
    app(buf, cap, pos, "\"");
    size_t n = len < max_bytes ? len : max_bytes;
    for (size_t i = 0; i < n && *pos + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        switch (ch) {
        case '"': app(buf, cap, pos, "\\\""); break;
        case '\\': app(buf, cap, pos, "\\\\"); break;
        case '\n': app(buf, cap, pos, "\\n"); break;
        case '\t': app(buf, cap, pos, "\\t"); break;
        case '\r': app(buf, cap, pos, "\\r"); break;
        default:
            if (ch < 0x20 || ch == 0x7f)
                app(buf, cap, pos, "\\x%02x", ch);
            else
                app(buf, cap, pos, "%c", ch);
        }
    }
    app(buf, cap, pos, n < len ? "\"..." : "\"");
}

/* One numeric or bool element of type t at p. */
static void fmt_num(char *buf, size_t cap, size_t *pos, uint32_t t, const void *p)
{
    int64_t s;
    uint64_t u;
    int k = kvs_gguf_decode_int(t, p, &s, &u);
    if (k == 1) {
        app(buf, cap, pos, "%" PRId64, s);
    } else if (k == 0) {
        app(buf, cap, pos, "%" PRIu64, u);
    } else if (t == KVS_GGUF_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        app(buf, cap, pos, "%g", (double)f);
    } else if (t == KVS_GGUF_FLOAT64) {
        double d;
        memcpy(&d, p, 8);
        app(buf, cap, pos, "%g", d);
    } else if (t == KVS_GGUF_BOOL) {
        app(buf, cap, pos, "%s", *(const uint8_t *)p ? "true" : "false");
    } else {
        app(buf, cap, pos, "?");
    }
}

void kvs_gguf_kv_format(const kvs_gguf *g, size_t i, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return;
    buf[0] = '\0';
    size_t pos = 0;
    const kvs_gguf_kv *kv = &g->kv[i];
    if (kv->type == KVS_GGUF_STRING) {
        kvs_gguf_fmt_quoted(buf, cap, &pos, kv->str, kv->str_len, FMT_MAX_STR);
        return;
    }
    if (kv->type != KVS_GGUF_ARRAY) {
        fmt_num(buf, cap, &pos, kv->type, kv->scalar);
        return;
    }
    app(buf, cap, &pos, "[array of %" PRIu64 " %s", kv->n, kvs_gguf_type_name(kv->arr_type));
    bool is_str = kv->arr_type == KVS_GGUF_STRING;
    uint64_t show = is_str ? FMT_ARR_STRINGS : FMT_ARR_NUMBERS;
    if (show > kv->n)
        show = kv->n;
    size_t esz = kvs_gguf_type_size(kv->arr_type);
    for (uint64_t j = 0; j < show; j++) {
        app(buf, cap, &pos, j == 0 ? ": " : ", ");
        if (is_str) {
            size_t len = (size_t)(kv->arr_off[j + 1] - kv->arr_off[j] - 1);
            kvs_gguf_fmt_quoted(buf, cap, &pos, kv->str + kv->arr_off[j], len, FMT_MAX_ARR_STR);
        } else {
            fmt_num(buf, cap, &pos, kv->arr_type, (const uint8_t *)kv->arr + j * esz);
        }
    }
    app(buf, cap, &pos, show < kv->n ? ", ...]" : "]");
}
