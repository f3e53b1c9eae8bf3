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
#include <string.h>

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
    kvs_cpu_options o = {.n_threads = n_threads, .f32_matmul = true}; /* the exact f32 kernels */
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

/* Offsets of the f16 scale fields of a block of type t (-1 terminated). */
static inline const int *half_fields(kvs_dtype t)
{
    static const int d0[] = {0, -1}, dm[] = {0, 2, -1}, q2[] = {80, 82, -1}, q3[] = {108, -1},
                     q6[] = {208, -1};
    switch (t) {
    case KVS_DTYPE_Q5_0: return d0;
    case KVS_DTYPE_Q2_K: return q2;
    case KVS_DTYPE_Q3_K: return q3;
    case KVS_DTYPE_Q6_K: return q6;
    default: return dm;
    }
}

/* Random bytes, with every f16 scale a random value of magnitude 2^-12..2^-6. */
static inline void random_blocks(test_rng *rng, kvs_dtype t, uint8_t *w, size_t n_blocks)
{
    const size_t bb = kvs_dtype_block_bytes(t);
    for (size_t i = 0; i < n_blocks * bb; i++)
        w[i] = (uint8_t)((rng_uniform(rng) + 1.0f) * 128.0f);
    for (size_t b = 0; b < n_blocks; b++) {
        for (const int *o = half_fields(t); *o >= 0; o++) {
            float v = ldexpf(0.5f + 0.5f * fabsf(rng_uniform(rng)), -6 - (int)(b % 7));
            uint16_t h = kvs_fp32_to_fp16(rng_uniform(rng) < 0 ? -v : v);
            memcpy(w + b * bb + (size_t)*o, &h, 2);
        }
    }
}

#endif
