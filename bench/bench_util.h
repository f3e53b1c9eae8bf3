/*
 * bench_util.h - what the benchmarks share: a monotonic clock, step-time
 * summaries, a small random generator, and the memory read bandwidth of
 * THREADS threads streaming a buffer far larger than the last-level cache.
 * Header-only (static functions): each bench_*.c is its own program.
 */
#ifndef KVS_BENCH_BENCH_UTIL_H
#define KVS_BENCH_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/threadpool.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Step times of one measurement: how many, the median and the best. */
typedef struct timing {
    int n;
    double med, best;
} timing;

static timing summarize(double *v, int n)
{
    timing t = {n, -1, -1};
    if (n > 0) {
        qsort(v, (size_t)n, sizeof *v, cmp_double);
        t.med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
        t.best = v[0];
    }
    return t;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---------------- memory bandwidth ---------------- */

typedef struct bw_job {
    const uint8_t *buf;
    size_t bytes;
    uint64_t sink[64];       /* one slot per task, read after the run */
} bw_job;

/* XOR every 64-bit word of [p, p + n) (n a multiple of 256): loads only. */
static uint64_t read_stream(const uint8_t *p, size_t n)
{
#if defined(__AVX512F__)
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 256) {
        a0 = _mm512_xor_si512(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_xor_si512(a1, _mm512_load_si512((const void *)(p + i + 64)));
        a2 = _mm512_xor_si512(a2, _mm512_load_si512((const void *)(p + i + 128)));
        a3 = _mm512_xor_si512(a3, _mm512_load_si512((const void *)(p + i + 192)));
    }
    a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
    return (uint64_t)_mm512_reduce_or_epi64(a0);
#elif defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    return (uint64_t)_mm256_extract_epi64(a0, 0) ^ (uint64_t)_mm256_extract_epi64(a0, 3);
#else
    const uint64_t *q = (const uint64_t *)(const void *)p;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (size_t i = 0; i < n / 8; i += 4) {
        a0 ^= q[i];
        a1 ^= q[i + 1];
        a2 ^= q[i + 2];
        a3 ^= q[i + 3];
    }
    return a0 ^ a1 ^ a2 ^ a3;
#endif
}

static void bw_task(void *arg, int task, int n_tasks, int thread)
{
    bw_job *j = arg;
    size_t per = j->bytes / (size_t)n_tasks / 256 * 256;
    j->sink[task % 64] ^= read_stream(j->buf + (size_t)task * per, per);
}

/* Best read bandwidth (bytes/s) of `threads` threads over `mib` MiB; 0 on failure. */
static double measure_bandwidth(int threads, int mib)
{
    kvs_error err;
    kvs_pool *pool = NULL;
    size_t bytes = (size_t)mib << 20;
    uint8_t *buf = aligned_alloc(4096, bytes);
    double best = 0;
    if (!buf || kvs_pool_new(&pool, threads, &err) != KVS_OK) {
        fprintf(stderr, "bench_model: bandwidth: %s\n", buf ? err.msg : "out of memory");
        goto done;
    }
    for (size_t i = 0; i < bytes; i += 8)   /* commit and vary the pages */
        *(uint64_t *)(void *)(buf + i) = i * 0x9e3779b97f4a7c15ull;
    bw_job j = {.buf = buf, .bytes = bytes};
    for (int run = 0; run < 11; run++) {
        double t0 = now_s();
        kvs_pool_run(pool, bw_task, &j, threads);
        double dt = now_s() - t0;
        double per = (double)(bytes / (size_t)threads / 256 * 256) * threads;
        if (run > 0 && per / dt > best)    /* the first run warms the TLB */
            best = per / dt;
    }
    uint64_t s = 0;
    for (int i = 0; i < 64; i++)
        s ^= j.sink[i];
    if (s == 0x123456789abcdefull)          /* keep the reads alive */
        fprintf(stderr, " ");
done:
    kvs_pool_free(pool);
    free(buf);
    return best;
}

#endif
