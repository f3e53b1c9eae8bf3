/*
 * cpu_backend.h - the CPU backend: "device memory" is host memory.
 *
 * Kernels run on a thread pool of n_threads workers (0 = one per core the
 * process may use).  Buffers are 64-byte aligned host allocations.
 * mem_info reports as total the physical memory, or the cgroup limit if
 * lower, or `device_memory` when non-zero (the --device-memory flag); free
 * is what the OS reports available (capped so that, with an explicit
 * device_memory, free = total - this process's resident memory); the
 * process's use is its resident set from /proc/self/status.
 *
 * Kernels: AVX-512 or AVX2 paths where compiled for (-march=native),
 * else portable C; see cpu_internal.h.  A kernel call returns when its
 * work is done (there is no synchronize); kernels of one backend must be
 * called from one thread at a time, since they share its thread pool.
 */
#ifndef KVS_BACKENDS_CPU_CPU_BACKEND_H
#define KVS_BACKENDS_CPU_CPU_BACKEND_H

#include "backends/backend.h"

typedef struct kvs_cpu_options {
    int n_threads;              /* 0: one per available core */
    uint64_t device_memory;     /* 0: physical memory / cgroup limit */
    bool f32_matmul;            /* matmuls on quantized weights with f32 activations (exact
                                   products of the weights, slower); default false: the
                                   activations are quantized to 8 bits per 256 elements and
                                   multiplied in integers (cpu_matmul_i8.c) */
    bool int8_all;              /* 8-bit activations for every type cpu_matmul_i8.c takes; default
                                   false: q8_0 takes them only with VNNI or AVX2 (AVX-512
                                   without VNNI has no q8_0 int8 kernel; the portable build's
                                   scalar one is slower than its f32 kernel) */
} kvs_cpu_options;

/* Make a CPU backend (opt may be NULL for the defaults).  Fails on a
 * negative n_threads or when threads or scratch cannot be had. */
kvs_status kvs_cpu_backend_new(kvs_backend **out, const kvs_cpu_options *opt, kvs_error *err);
/* Threads the kernels run on (the caller of a kernel counts as one). */
int kvs_cpu_backend_threads(const kvs_backend *b);
/* Host bytes the backend holds outside the ledger: its state and the
 * per-thread matmul scratch (n_threads * 512 KiB). */
uint64_t kvs_cpu_backend_overhead_bytes(const kvs_backend *b);

#endif
