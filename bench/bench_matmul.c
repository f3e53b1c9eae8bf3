/*
 * bench_matmul.c - the CPU matmul alone: weight bandwidth at small n
 * (decode) and arithmetic rate at large n (prefill).
 *
 *   bench_matmul [-t THREADS] [--type q8_0] [-n N] [-k K] [-m M] [--seconds S]
 *
 * Up to n = 64 the weights cycle through enough distinct copies (>= 256
 * MiB in all) that none is in cache, as in a model's forward pass, where
 * every weight comes from memory once per step.  Prints GB/s of weights read and GFLOP/s
 * (2 n k m per call), median over the calls made within the time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "backends/cpu/cpu_backend.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int threads = 2;
    long n = 1, k = 2048, m = 2048;
    double seconds = 3;
    kvs_dtype t = KVS_DTYPE_Q8_0;
    const char *mode = "auto"; /* the backend's default */
    int hot = 0, thp = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "-t"))
            threads = atoi(v);
        else if (!strcmp(a, "-n"))
            n = atol(v);
        else if (!strcmp(a, "-k"))
            k = atol(v);
        else if (!strcmp(a, "-m"))
            m = atol(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--thp")) /* the weights in transparent huge pages */
            thp = 1, i--;
        else if (!strcmp(a, "--hot")) /* one copy of the weights: cache-resident when small */
            hot = 1, i--;
        else if (!strcmp(a, "--type") && kvs_dtype_parse(v, &t))
            ;
        else if (!strcmp(a, "--cpu-matmul") && (!strcmp(v, "auto") || !strcmp(v, "int8") || !strcmp(v, "f32")))
            mode = v;
        else {
            fprintf(stderr, "usage: bench_matmul [-t T] [--type T] [-n N] [-k K] [-m M] [--seconds S] [--cpu-matmul auto|int8|f32] [--hot] [--thp]\n");
            return 2;
        }
    }
    uint64_t rb;
    if (n < 1 || m < 1 || !kvs_dtype_row_bytes(t, (uint64_t)k, &rb)) {
        fprintf(stderr, "bench_matmul: bad shape\n");
        return 2;
    }
    const size_t wbytes = (size_t)rb * (size_t)m;
    size_t copies = ((size_t)256 << 20) / wbytes + 1;
    if (n > 64 || hot)
        copies = 1;   /* prefill: compute-bound, cache residency does not matter; --hot: kept resident */
    kvs_backend *b;
    kvs_error err;
    kvs_cpu_options co = {.n_threads = threads, .f32_matmul = !strcmp(mode, "f32"), .int8_all = !strcmp(mode, "int8")};
    if (kvs_cpu_backend_new(&b, &co, &err) != KVS_OK) {
        fprintf(stderr, "bench_matmul: %s\n", err.msg);
        return 1;
    }
    const size_t walloc = (wbytes * copies + ((size_t)2 << 20) - 1) & ~(((size_t)2 << 20) - 1);
    uint8_t *w = aligned_alloc((size_t)2 << 20, walloc);
    if (w && thp)
        madvise(w, walloc, MADV_HUGEPAGE);
    float *x = malloc((size_t)(n * k) * 4), *y = malloc((size_t)(n * m) * 4);
    float *row = malloc((size_t)k * 4);
    if (!w || !x || !y || !row) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        return 1;
    }
    uint64_t s = 88172645463325252ull;
    for (long i = 0; i < n * k; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
    for (long j = 0; j < m; j++) {
        for (long i = 0; i < k; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            row[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5) * 0.05f;
        }
        kvs_dtype_from_f32(t, row, w + (size_t)j * rb, (size_t)k);
    }
    for (size_t c = 1; c < copies; c++)
        memcpy(w + c * wbytes, w, wbytes);
    enum { MAXT = 100000 };
    static double times[MAXT];
    int nt = 0;
    double t_end = now_s() + seconds, cpu0 = 0, wall0 = 0, flops = 0;
    for (size_t it = 0; nt < MAXT && (nt < 3 || now_s() < t_end); it++) {
        double t0 = now_s();
        b->ops->matmul(b, y, x, w + (it % copies) * wbytes, t, n, k, m);
        double dt = now_s() - t0;
        if (it >= copies || it >= 2) {
            if (nt == 0) {
                cpu0 = cpu_s();
                wall0 = now_s();
            } else {
                flops += 2.0 * n * k * m;
            }
            times[nt++] = dt;
        }
    }
    double cpu = cpu_s() - cpu0, wall = now_s() - wall0;
    qsort(times, (size_t)nt, sizeof *times, cmp_double);
    double med = times[nt / 2], best = times[0];
    printf("matmul %s n=%ld k=%ld m=%ld threads=%d: %.3f ms median (%.3f best), "
           "%.2f GB/s weights, %.1f GFLOP/s (best %.1f)  [%d calls]\n"
           "  per CPU-second of each thread: %.1f GFLOP/s, %.2f GB/s (cpu %.2f s over %.2f s wall)\n",
           kvs_dtype_name(t), n, k, m, threads, med * 1e3, best * 1e3, wbytes / med / 1e9,
           2.0 * n * k * m / med / 1e9, 2.0 * n * k * m / best / 1e9, nt, flops / cpu / 1e9 * threads,
           flops / (2.0 * n) * (double)rb / k / cpu / 1e9 * threads, cpu, wall);
    free(w), free(x), free(y), free(row);
    kvs_backend_destroy(b);
    return 0;
}
