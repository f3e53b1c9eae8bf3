/*
 * cpu_test_util.h - helpers shared by the CPU backend tests: a seeded
 * random generator, backend construction, and a checked allocation.
 */
#ifndef KVS_TESTS_CPU_TEST_UTIL_H
#define KVS_TESTS_CPU_TEST_UTIL_H

#include <math.h>
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

/* The dot product of x[0, k) and w[0, k) summed in double into *s (the reference a kernel is held
 * to), and the sum of |x_e w_e| into *sa (the scale its rounding error is measured against). */
static inline void exact_dot(const float *x, const float *w, int64_t k, double *s, double *sa)
{
    *s = 0;
    *sa = 0;
    for (int64_t e = 0; e < k; e++) {
        *s += (double)x[e] * w[e];
        *sa += fabs((double)x[e] * w[e]);
    }
}

#endif
