/* The compile arena (see grammar.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"

#define HDR 16u /* each block: its size, then the data (16-byte aligned) */

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t kvs_garena_block_bytes(size_t n) { return HDR + round16(n ? n : 1); }

void kvs_garena_init(kvs_garena *a, void *base, size_t cap)
{
    memset(a, 0, sizeof *a);
    a->base = base;
    a->cap = cap & ~(size_t)15;
    a->last = SIZE_MAX;
}

void kvs_garena_reset(kvs_garena *a)
{
    a->used = 0;
    a->hwm = 0;
    a->last = SIZE_MAX;
    a->full = false;
}

static size_t block_size(const void *p) { return *(const size_t *)((const unsigned char *)p - HDR); }

void *kvs_galloc(kvs_garena *a, size_t n)
{
    if (!a)
        return malloc(n ? n : 1);
    size_t need = kvs_garena_block_bytes(n);
    if (need < n || need > a->cap - a->used) {
        a->full = true;
        return NULL;
    }
    unsigned char *h = a->base + a->used;
    *(size_t *)h = n;
    a->last = a->used;
    a->used += need;
    if (a->used > a->hwm)
        a->hwm = a->used;
    return h + HDR;
}

void *kvs_gcalloc(kvs_garena *a, size_t n, size_t size)
{
    if (!a)
        return calloc(n ? n : 1, size ? size : 1);
    if (size && n > SIZE_MAX / size) {
        a->full = true;
        return NULL;
    }
    void *p = kvs_galloc(a, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *kvs_grealloc(kvs_garena *a, void *p, size_t n)
{
    if (!a)
        return realloc(p, n ? n : 1);
    if (!p)
        return kvs_galloc(a, n);
    unsigned char *h = (unsigned char *)p - HDR;
    size_t old = block_size(p);
    if ((size_t)(h - a->base) == a->last) { /* the newest block: grow (or shrink) in place */
        size_t need = kvs_garena_block_bytes(n);
        if (need < n || need > a->cap - a->last) {
            a->full = true;
            return NULL;
        }
        *(size_t *)h = n;
        a->used = a->last + need;
        if (a->used > a->hwm)
            a->hwm = a->used;
        return p;
    }
    void *q = kvs_galloc(a, n);
    if (q)
        memcpy(q, p, old < n ? old : n);
    return q;
}

void kvs_gfree(kvs_garena *a, void *p)
{
    if (!a) {
        free(p);
        return;
    }
    if (!p)
        return;
    size_t off = (size_t)((unsigned char *)p - HDR - a->base);
    if (off == a->last) { /* the newest block: give its bytes back */
        a->used = off;
        a->last = SIZE_MAX;
    }
}

char *kvs_gstrdup(kvs_garena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = kvs_galloc(a, n);
    if (d)
        memcpy(d, s, n);
    return d;
}
