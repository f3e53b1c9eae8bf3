/*
 * http_pool.h - the request-body pool: one region reserved at start-up,
 * handed out in runs of 4 KiB pages.
 *
 * Request bodies are the part of the front end's memory that a client
 * controls, so they never come from malloc: the pool's size is fixed when
 * the server starts (it is a term of kvs_http_reserve_bytes), a body takes
 * a run of whole pages for as long as it is being read and parsed, and a
 * request that finds no room is answered 503 rather than growing memory.
 *
 *     kvs_http_pool p;
 *     kvs_http_pool_init(&p, 16 << 20, &err);
 *     char *b = kvs_http_pool_alloc(&p, n, &cap);    // NULL: full (answer 503)
 *     b = kvs_http_pool_grow(&p, b, &cap, len, need); // NULL: full, b still valid
 *     kvs_http_pool_free(&p, b, cap);
 *
 * Thread-safe (one mutex).  Runs are found first-fit in a bitmap; freed runs
 * of 64 KiB or more are returned to the kernel (madvise) so that the
 * resident size follows the bodies in flight.
 */
#ifndef KVS_SERVER_HTTP_POOL_H
#define KVS_SERVER_HTTP_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define KVS_HTTP_POOL_PAGE 4096u

typedef struct kvs_http_pool {
    pthread_mutex_t mu;
    unsigned char *base;
    size_t bytes;                  /* region size (whole pages) */
    size_t n_pages;
    uint64_t *used;                /* one bit per page */
    size_t pages_used, pages_hwm;  /* now and the most ever */
    uint64_t refused;              /* allocations that found no room */
} kvs_http_pool;

/* Reserve a region of `bytes` (rounded up to whole pages; > 0). */
kvs_status kvs_http_pool_init(kvs_http_pool *p, size_t bytes, kvs_error *err);
/* Release the region (a zeroed or failed pool is fine). */
void kvs_http_pool_destroy(kvs_http_pool *p);
/* A run of at least n bytes (n > 0); *cap gets its size.  NULL when no run
 * that large is free. */
void *kvs_http_pool_alloc(kvs_http_pool *p, size_t n, size_t *cap);
/* A run of at least `need` bytes holding the first `len` bytes of ptr (a run
 * of *cap bytes, or NULL).  On success ptr's run is freed (or extended in
 * place) and *cap updated; on failure NULL and ptr is untouched. */
void *kvs_http_pool_grow(kvs_http_pool *p, void *ptr, size_t *cap, size_t len, size_t need);
/* Give back a run from alloc or grow (cap as returned; NULL: no-op). */
void kvs_http_pool_free(kvs_http_pool *p, void *ptr, size_t cap);

#endif
