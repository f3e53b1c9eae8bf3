/*
 * gguf_cursor.c - the bounds-checked cursor the GGUF parser reads through.
 *
 * Every read asks kvs_gguf_need() for its bytes first.  Over memory, bytes
 * past the end fail with a "truncated" message naming the item, field and
 * offset; over a file, the buffer grows with plain pread()s up to the file's
 * size (never past it), so only the header region is ever read.
 */
#include "formats/gguf_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Make n more bytes at c->pos available, reading more of the file if needed. */
kvs_status kvs_gguf_need(kvs_gguf_cursor *c, uint64_t n, const char *field, kvs_error *err)
{
    if (n <= c->avail - c->pos)
        return KVS_OK;
    uint64_t left = c->file_size > c->pos ? c->file_size - c->pos : 0;
    if (c->fd >= 0 && n <= left) {
        uint64_t want = (uint64_t)c->pos + n, grow = (uint64_t)c->avail * 2;
        if (grow > want)
            want = grow < c->file_size ? grow : c->file_size;
        if (want > SIZE_MAX)
            return kvs_fail(err, KVS_E_NOMEM, "%s: %s: header region of %" PRIu64
                            " bytes does not fit in memory", c->ctx, field, want);
        uint8_t *nb = realloc(c->own, (size_t)want);
        if (!nb)
            return kvs_fail(err, KVS_E_NOMEM, "%s: %s: cannot allocate %" PRIu64
                            " bytes for the header region", c->ctx, field, want);
        c->own = nb;
        c->buf = nb;
        while (c->avail < want) {
            ssize_t r = pread(c->fd, nb + c->avail, (size_t)want - c->avail, (off_t)c->avail);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return kvs_fail(err, KVS_E_IO, "%s: %s: read at offset %zu failed: %s",
                                c->ctx, field, c->avail, strerror(errno));
            if (r == 0)
                return kvs_fail(err, KVS_E_FORMAT, "truncated file: %s: %s: the file ended "
                                "at offset %zu while reading (it shrank?)",
                                c->ctx, field, c->avail);
            c->avail += (size_t)r;
        }
        return KVS_OK;
    }
    if (c->fd < 0 && n <= left)
        return kvs_fail(err, KVS_E_FORMAT, "truncated header region: %s: %s needs %" PRIu64
                        " bytes at offset %zu, but only the first %zu bytes of the file "
                        "were given", c->ctx, field, n, c->pos, c->avail);
    return kvs_fail(err, KVS_E_FORMAT, "truncated file: %s: %s needs %" PRIu64
                    " bytes at offset %zu, but the file ends at %" PRIu64,
                    c->ctx, field, n, c->pos, c->file_size);
}

uint64_t kvs_gguf_remaining(const kvs_gguf_cursor *c)
{
    return c->file_size > c->pos ? c->file_size - c->pos : 0;
}

/* Copy the next n bytes to v and step past them. */
static kvs_status rd_fixed(kvs_gguf_cursor *c, void *v, size_t n, const char *field, kvs_error *err)
{
    kvs_status st = kvs_gguf_need(c, n, field, err);
    if (st == KVS_OK) {
        memcpy(v, c->buf + c->pos, n);
        c->pos += n;
    }
    return st;
}

kvs_status kvs_gguf_rd_u32(kvs_gguf_cursor *c, uint32_t *v, const char *field, kvs_error *err)
{
    return rd_fixed(c, v, sizeof *v, field, err);
}

kvs_status kvs_gguf_rd_u64(kvs_gguf_cursor *c, uint64_t *v, const char *field, kvs_error *err)
{
    return rd_fixed(c, v, sizeof *v, field, err);
}

/* Read a length-prefixed string; *off is its offset in the buffer (the
 * buffer may move on the next read, the offset stays valid). */
kvs_status kvs_gguf_rd_str(kvs_gguf_cursor *c, size_t *off, size_t *len, const char *field,
                           kvs_error *err)
{
    uint64_t n;
    kvs_status st = kvs_gguf_rd_u64(c, &n, field, err);
    if (st != KVS_OK)
        return st;
    if (n > kvs_gguf_remaining(c))
        return kvs_fail(err, KVS_E_FORMAT, "%s: %s: string length %" PRIu64 " at offset %zu "
                        "runs past the end of the file (%" PRIu64 " bytes remain)",
                        c->ctx, field, n, c->pos - 8, kvs_gguf_remaining(c));
    if ((st = kvs_gguf_need(c, n, field, err)) != KVS_OK)
        return st;
    *off = c->pos;
    *len = (size_t)n;
    c->pos += (size_t)n;
    return KVS_OK;
}

char *kvs_gguf_dup_bytes(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* A printable, bounded rendering of a name for messages. */
void kvs_gguf_printable(char *dst, size_t cap, const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap; i++)
        dst[k++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    if (n > 0 && k < n && k + 4 >= cap && cap >= 4) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = '\0';
}

/* A name as printable text for a message (buf of 80 bytes). */
const char *kvs_gguf_shown(char *buf, const char *name)
{
    kvs_gguf_printable(buf, 80, (const uint8_t *)name, strlen(name));
    return buf;
}

