/*
 * bench_kernels.c - CPU matmul throughput against the machine's memory
 * bandwidth.
 *
 *     bench_kernels [n_threads=2] [seconds_per_case=0.3]
 *
 * First measures read bandwidth: a parallel sum over a 1 GiB buffer on the
 * same number of threads (the roofline for decode).  Then, for W of
 * 4096x4096 and 2048x8192 (m x k) in f32, f16, q8_0 and q4_0, times the
 * matmul for decode (n = 1) and prefill (n = 128), cycling through enough
 * copies of W (>= 256 MiB) that it cannot be served from cache, and prints
 * weight GB/s, the fraction of the read bandwidth, and GFLOP/s.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_internal.h"

/* The 1-minute load average: other work on the machine skews the numbers. */
static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    const uint64_t *buf;
    size_t words;
    uint64_t sums[64];
} read_job;

static void read_task(void *arg, int task, int n_tasks, int thread)
{
    read_job *j = arg;
    size_t i0 = j->words * (size_t)task / (size_t)n_tasks;
    size_t i1 = j->words * (size_t)(task + 1) / (size_t)n_tasks;
    uint64_t s = 0;
    for (size_t i = i0; i < i1; i++)
        s += j->buf[i];
    j->sums[task % 64] += s;
}

static double read_bandwidth(kvs_cpu_ctx *c)
{
    const size_t bytes = (size_t)1 << 30;
    uint64_t *buf = aligned_alloc(64, bytes);
    if (!buf)
        return 0;
    memset(buf, 1, bytes);
    read_job j = {.buf = buf, .words = bytes / 8};
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        kvs_pool_run(c->pool, read_task, &j, c->n_threads);
        double gbs = bytes / (now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    if (j.sums[0] == 42) /* keep the sums alive */
        puts("");
    free(buf);
    return best;
}

static float frand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((*s >> 40) * (1.0 / (1 << 23)) - 1.0);
}

int main(int argc, char **argv)
{
    int n_threads = argc > 1 ? atoi(argv[1]) : 2;
    double secs = argc > 2 ? atof(argv[2]) : 0.3;
    kvs_backend *b;
    kvs_error err;
    kvs_cpu_options o = {.n_threads = n_threads};
    if (kvs_cpu_backend_new(&b, &o, &err) != KVS_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 1;
    }
    kvs_cpu_ctx *c = b->ctx;
    double bw = read_bandwidth(c);
    printf("cpu backend: %d threads, %s kernels (load average %.2f on %d cpus)\n", c->n_threads,
           kvs_cpu_simd_name(), loadavg(), (int)sysconf(_SC_NPROCESSORS_ONLN));
    printf("read bandwidth (1 GiB parallel sum): %.1f GB/s\n\n", bw);
    printf("%-5s %-11s %4s %10s %9s %8s %9s\n", "type", "m x k", "n", "ms/call", "W GB/s",
           "%roofl", "GFLOP/s");

    const int64_t shapes[2][2] = {{4096, 4096}, {2048, 8192}};
    const kvs_dtype types[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_Q8_0, KVS_DTYPE_Q4_0};
    const int64_t ns[] = {1, 128};
    uint64_t seed = 42;
    for (int si = 0; si < 2; si++) {
        const int64_t m = shapes[si][0], k = shapes[si][1];
        float *rowf = malloc((size_t)k * 4), *x = malloc((size_t)(128 * k) * 4);
        float *y = malloc((size_t)(128 * m) * 4);
        if (!rowf || !x || !y)
            return 1;
        for (int64_t i = 0; i < 128 * k; i++)
            x[i] = frand(&seed);
        for (int ti = 0; ti < 4; ti++) {
            kvs_dtype t = types[ti];
            uint64_t rb;
            kvs_dtype_row_bytes(t, (uint64_t)k, &rb);
            const size_t wbytes = (size_t)(rb * (uint64_t)m);
            const int copies = (int)((256u << 20) / wbytes) + 1;
            uint8_t **w = calloc((size_t)copies, sizeof *w);
            for (int cpy = 0; cpy < copies; cpy++) {
                w[cpy] = aligned_alloc(64, (wbytes + 63) & ~(size_t)63);
                if (!w[cpy])
                    return 1;
                if (cpy == 0) {
                    for (int64_t r = 0; r < m; r++) {
                        for (int64_t e = 0; e < k; e++)
                            rowf[e] = frand(&seed);
                        kvs_dtype_from_f32(t, rowf, w[0] + (uint64_t)r * rb, (size_t)k);
                    }
                } else {
                    memcpy(w[cpy], w[0], wbytes);
                }
            }
            for (int ni = 0; ni < 2; ni++) {
                const int64_t n = ns[ni];
                b->ops->matmul(b, y, x, w[0], t, n, k, m); /* warm up */
                int iters = 0;
                double t0 = now(), el;
                do {
                    b->ops->matmul(b, y, x, w[iters % copies], t, n, k, m);
                    iters++;
                    el = now() - t0;
                } while (el < secs || iters < 3);
                double per = el / iters;
                double gbs = wbytes / per / 1e9, gfl = 2.0 * n * k * m / per / 1e9;
                char shape[32];
                snprintf(shape, sizeof shape, "%lldx%lld", (long long)m, (long long)k);
                printf("%-5s %-11s %4lld %10.3f %9.1f %7.0f%% %9.1f\n", kvs_dtype_name(t), shape,
                       (long long)n, per * 1e3, gbs, bw > 0 ? 100.0 * gbs / bw : 0.0, gfl);
            }
            for (int cpy = 0; cpy < copies; cpy++)
                free(w[cpy]);
            free(w);
        }
        free(rowf), free(x), free(y);
    }
    printf("\nload average at the end: %.2f\n", loadavg());
    kvs_backend_destroy(b);
    return 0;
}
