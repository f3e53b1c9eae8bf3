/*
 * cpu_test_util.h - helpers shared by the CPU backend tests: a seeded
 * random generator, backend construction, and a checked allocation.
 */
#ifndef KVS_TESTS_CPU_TEST_UTIL_H
#define KVS_TESTS_CPU_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_internal.h"

typedef struct { uint64_t s; } test_rng;

static inline float rng_uniform(test_rng *r)   /* [-1, 1) */
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (float)((r->s >> 40) * (1.0 / (1 << 23)) - 1.0);
}

static inline void rng_fill(test_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rng_uniform(r);
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static inline kvs_backend *make_cpu(int n_threads)
{
    kvs_backend *b = NULL;
    kvs_error err;
    kvs_cpu_options o = {.n_threads = n_threads};
    if (kvs_cpu_backend_new(&b, &o, &err) != KVS_OK)
        fail_msg("kvs_cpu_backend_new: %s", err.msg);
    return b;
}

static inline kvs_cpu_ctx *cpu_ctx(kvs_backend *b) { return b->ctx; }

#endif
