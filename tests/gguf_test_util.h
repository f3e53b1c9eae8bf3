/*
 * gguf_test_util.h - helpers shared by the GGUF tests: paths into the shared
 * data and the build dir, a checked-status macro that prints the message,
 * and a tiny byte builder for hand-assembled GGUF images (written here from
 * the format's description, independently of the library's writer).
 */
#ifndef KVS_TESTS_GGUF_TEST_UTIL_H
#define KVS_TESTS_GGUF_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "formats/gguf.h"

#define CHECK_OK(expr, err)                                                      \
    do {                                                                         \
        kvs_status st_ = (expr);                                                 \
        if (st_ != KVS_OK)                                                       \
            fail_msg("%s failed (%s): %s", #expr, kvs_status_name(st_), (err).msg); \
    } while (0)

/* Assert that `st` failed with a message containing `needle`. */
#define CHECK_FAILS_WITH(st, err, needle)                                        \
    do {                                                                         \
        kvs_status s_ = (st);                                                    \
        if (s_ == KVS_OK)                                                        \
            fail_msg("expected a failure mentioning '%s', got OK", (needle));    \
        if (strstr((err).msg, (needle)) == NULL)                                 \
            fail_msg("message '%s' lacks '%s'", (err).msg, (needle));            \
    } while (0)

static inline void test_path(char *buf, size_t cap, const char *env, const char *fallback,
                             const char *rel)
{
    const char *base = getenv(env);
    snprintf(buf, cap, "%s/%s", base && base[0] ? base : fallback, rel);
}

static inline void shared_path(char *buf, size_t cap, const char *rel)
{
    test_path(buf, cap, "KVS_SHARED", "../shared", rel);
}

static inline void build_path(char *buf, size_t cap, const char *rel)
{
    test_path(buf, cap, "KVS_BUILD_DIR", ".", rel);
}

/* ---- byte builder -------------------------------------------------------- */

typedef struct bb {
    uint8_t *p;
    size_t len, cap;
} bb;

static inline void bb_put(bb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + n)
            nc *= 2;
        b->p = realloc(b->p, nc);
        assert_non_null(b->p);
        b->cap = nc;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static inline void bb_u32(bb *b, uint32_t v) { bb_put(b, &v, 4); }
static inline void bb_u64(bb *b, uint64_t v) { bb_put(b, &v, 8); }
static inline void bb_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}
static inline void bb_pad(bb *b, size_t align)
{
    static const uint8_t z[64];
    while (b->len % align)
        bb_put(b, z, 1);
}
static inline void bb_zeros(bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_put(b, "", 1);
}

/* Header of a version-3 file. */
static inline void bb_header(bb *b, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, 3);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

/* A uint32 key/value pair. */
static inline void bb_kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, KVS_GGUF_UINT32);
    bb_u32(b, v);
}

/* A tensor info with n_dims dims from ne. */
static inline void bb_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                             uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

/* Parse a complete image; returns the status, closes any result. */
static inline kvs_status bb_parse(const bb *b, kvs_error *err)
{
    kvs_gguf *g = NULL;
    memset(err, 0, sizeof *err);
    kvs_status st = kvs_gguf_parse(&g, b->p, b->len, b->len, err);
    kvs_gguf_close(g);
    return st;
}

#endif
