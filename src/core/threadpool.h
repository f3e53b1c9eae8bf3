/*
 * threadpool.h - a persistent pool of worker threads for parallel-for.
 *
 * The CPU backend runs every kernel as a parallel-for over "tasks" (chunks
 * of rows, (token, head) pairs, ...).  A pool of n threads is n - 1 workers
 * plus the caller: kvs_pool_run() publishes the job, takes part in it, and
 * returns when every task has finished.  Tasks are claimed dynamically
 * (one atomic compare-and-swap each), so a thread that the OS delays does
 * not hold up the others.  Each call to fn also gets the index of the
 * thread running it (0 = the caller, 1..n-1 = workers), so kernels can use
 * per-thread scratch without locking.
 *
 * Wake-up is low latency: after a job, workers spin for a short while
 * (tens of microseconds) watching for the next one, then sleep on a
 * condition variable.  A run allocates nothing.
 *
 * One thread at a time may call kvs_pool_run() on a pool, and fn must not
 * call kvs_pool_run() on the same pool.
 */
#ifndef KVS_CORE_THREADPOOL_H
#define KVS_CORE_THREADPOOL_H

#include "core/status.h"

typedef struct kvs_pool kvs_pool;

/* One task of a parallel-for: task in [0, n_tasks), thread in [0, n_threads). */
typedef void (*kvs_pool_fn)(void *ctx, int task, int n_tasks, int thread);

#define KVS_POOL_MAX_THREADS 1024

/* Start a pool of n_threads threads in all (1..KVS_POOL_MAX_THREADS; the
 * caller counts as one, so n_threads - 1 workers are started). */
kvs_status kvs_pool_new(kvs_pool **out, int n_threads, kvs_error *err);
/* Stop and join the workers and free the pool (NULL is a no-op). */
void kvs_pool_free(kvs_pool *p);
/* Threads in the pool, the caller included. */
int kvs_pool_threads(const kvs_pool *p);
/* Run fn(ctx, task, n_tasks, thread) once for each task in [0, n_tasks) on
 * the pool's threads and the caller; returns when all have finished.
 * n_tasks <= 0 does nothing; a single task, or a one-thread pool, runs
 * inline on the caller. */
void kvs_pool_run(kvs_pool *p, kvs_pool_fn fn, void *ctx, int n_tasks);

#endif
