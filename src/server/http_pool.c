/* The request-body pool (see http_pool.h). */
#include "server/http_pool.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PG KVS_HTTP_POOL_PAGE
#define RETURN_PAGES 16 /* freed runs this long go back to the kernel */

static bool bit(const kvs_http_pool *p, size_t i) { return (p->used[i / 64] >> (i % 64)) & 1u; }

static void set_run(kvs_http_pool *p, size_t first, size_t n, bool on)
{
    for (size_t i = first; i < first + n; i++) {
        if (on)
            p->used[i / 64] |= (uint64_t)1 << (i % 64);
        else
            p->used[i / 64] &= ~((uint64_t)1 << (i % 64));
    }
}

/* First free run of n pages, or n_pages. */
static size_t find_run(const kvs_http_pool *p, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < p->n_pages; i++) {
        if (run == 0 && (i % 64) == 0 && p->used[i / 64] == UINT64_MAX && i + 64 <= p->n_pages) {
            i += 63; /* a full word: skip it */
            continue;
        }
        run = bit(p, i) ? 0 : run + 1;
        if (run == n)
            return i + 1 - n;
    }
    return p->n_pages;
}

kvs_status kvs_http_pool_init(kvs_http_pool *p, size_t bytes, kvs_error *err)
{
    memset(p, 0, sizeof *p);
    if (bytes == 0)
        return kvs_fail(err, KVS_E_INVALID, "the request-body pool must not be empty");
    p->n_pages = (bytes + PG - 1) / PG;
    p->bytes = p->n_pages * PG;
    p->used = calloc((p->n_pages + 63) / 64, sizeof *p->used);
    void *m = mmap(NULL, p->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!p->used || m == MAP_FAILED) {
        free(p->used);
        if (m != MAP_FAILED)
            munmap(m, p->bytes);
        memset(p, 0, sizeof *p);
        return kvs_fail(err, KVS_E_NOMEM, "cannot reserve %zu bytes for request bodies", bytes);
    }
    p->base = m;
    pthread_mutex_init(&p->mu, NULL);
    return KVS_OK;
}

void kvs_http_pool_destroy(kvs_http_pool *p)
{
    if (!p->base)
        return;
    munmap(p->base, p->bytes);
    free(p->used);
    pthread_mutex_destroy(&p->mu);
    memset(p, 0, sizeof *p);
}

void *kvs_http_pool_alloc(kvs_http_pool *p, size_t n, size_t *cap)
{
    if (!p->base || n == 0 || n > p->bytes)
        return NULL;
    size_t pages = (n + PG - 1) / PG;
    pthread_mutex_lock(&p->mu);
    size_t first = find_run(p, pages);
    void *r = NULL;
    if (first < p->n_pages) {
        set_run(p, first, pages, true);
        p->pages_used += pages;
        if (p->pages_used > p->pages_hwm)
            p->pages_hwm = p->pages_used;
        r = p->base + first * PG;
        *cap = pages * PG;
    } else {
        p->refused++;
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

static void release(kvs_http_pool *p, size_t first, size_t pages)
{
    set_run(p, first, pages, false);
    p->pages_used -= pages;
    if (pages >= RETURN_PAGES)
        madvise(p->base + first * PG, pages * PG, MADV_DONTNEED);
}

void kvs_http_pool_free(kvs_http_pool *p, void *ptr, size_t cap)
{
    if (!ptr)
        return;
    size_t first = (size_t)((unsigned char *)ptr - p->base) / PG;
    pthread_mutex_lock(&p->mu);
    release(p, first, cap / PG);
    pthread_mutex_unlock(&p->mu);
}

void *kvs_http_pool_grow(kvs_http_pool *p, void *ptr, size_t *cap, size_t len, size_t need)
{
    if (!ptr)
        return kvs_http_pool_alloc(p, need, cap);
    if (need <= *cap)
        return ptr;
    if (need > p->bytes)
        return NULL;
    size_t first = (size_t)((unsigned char *)ptr - p->base) / PG;
    size_t have = *cap / PG, want = (need + PG - 1) / PG;
    pthread_mutex_lock(&p->mu);
    bool in_place = first + want <= p->n_pages;
    for (size_t i = first + have; in_place && i < first + want; i++)
        in_place = !bit(p, i);
    if (in_place) {
        set_run(p, first + have, want - have, true);
        p->pages_used += want - have;
        if (p->pages_used > p->pages_hwm)
            p->pages_hwm = p->pages_used;
        *cap = want * PG;
        pthread_mutex_unlock(&p->mu);
        return ptr;
    }
    size_t to = find_run(p, want);
    if (to >= p->n_pages) {
        p->refused++;
        pthread_mutex_unlock(&p->mu);
        return NULL;
    }
    set_run(p, to, want, true);
    p->pages_used += want;
    if (p->pages_used > p->pages_hwm)
        p->pages_hwm = p->pages_used;
    unsigned char *dst = p->base + to * PG;
    memcpy(dst, ptr, len);
    release(p, first, have);
    *cap = want * PG;
    pthread_mutex_unlock(&p->mu);
    return dst;
}
