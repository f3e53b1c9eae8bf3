#include "core/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() ((void)0)
#endif

/*
 * The job word packs  gen (bits 32..63) | next (16..31) | count (0..15).
 * A thread claims task `next` of round `gen` by a CAS that bumps `next`
 * while next < count; since the round's identity is in the same word, a
 * worker that wakes late can never claim a task of a round that is over.
 * The job's fn/ctx/base are written before the word is published and are
 * not rewritten until every task of the round has finished, and a claimed
 * task cannot finish before its claimer has read them.
 */
#define ROUND_MAX 0xffff
#define SPIN_WORKER 20000    /* pauses (~tens of microseconds) before sleeping */
#define SPIN_CALLER 2000     /* pauses before yielding while waiting for stragglers */

struct worker_arg {
    struct kvs_pool *pool;
    int index;
};

struct kvs_pool {
    int n_threads;
    int n_started;
    pthread_t *threads;
    struct worker_arg *args;

    _Atomic uint64_t word;
    _Atomic int pending;           /* tasks of the round not yet finished */
    _Atomic int sleepers;
    _Atomic bool stop;
    uint32_t gen;                  /* caller-side round counter */

    kvs_pool_fn fn;
    void *ctx;
    int base, total;

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static inline uint32_t word_gen(uint64_t w) { return (uint32_t)(w >> 32); }

/* Claim and run tasks of whatever round is current until none are left. */
static void run_tasks(struct kvs_pool *p, int thread)
{
    uint64_t w = atomic_load_explicit(&p->word, memory_order_acquire);
    for (;;) {
        uint32_t next = (uint32_t)(w >> 16) & 0xffff, count = (uint32_t)w & 0xffff;
        if (next >= count)
            return;
        if (!atomic_compare_exchange_weak_explicit(&p->word, &w, w + (1u << 16),
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        p->fn(p->ctx, p->base + (int)next, p->total, thread);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
        w = atomic_load_explicit(&p->word, memory_order_acquire);
    }
}

static void *worker_main(void *arg)
{
    struct worker_arg *a = arg;
    struct kvs_pool *p = a->pool;
    uint32_t seen = 0;
    for (;;) {
        int spins = 0;
        while (word_gen(atomic_load(&p->word)) == seen && !atomic_load(&p->stop) &&
               spins < SPIN_WORKER) {
            POOL_PAUSE();
            spins++;
        }
        if (word_gen(atomic_load(&p->word)) == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (word_gen(atomic_load(&p->word)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            break;
        seen = word_gen(atomic_load(&p->word));
        run_tasks(p, a->index);
    }
    return NULL;
}

kvs_status kvs_pool_new(kvs_pool **out, int n_threads, kvs_error *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > KVS_POOL_MAX_THREADS)
        return kvs_fail(err, KVS_E_INVALID, "thread pool: %d threads (expected 1..%d)", n_threads,
                        KVS_POOL_MAX_THREADS);
    struct kvs_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "thread pool: out of memory");
    p->n_threads = n_threads;
    atomic_init(&p->word, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    kvs_status st = KVS_OK;
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        p->args = calloc((size_t)n_threads - 1, sizeof *p->args);
        if (!p->threads || !p->args) {
            st = kvs_fail(err, KVS_E_NOMEM, "thread pool: out of memory");
            goto fail;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->args[i].pool = p;
            p->args[i].index = i + 1;
            int rc = pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]);
            if (rc != 0) {
                st = kvs_fail(err, KVS_E_NOMEM, "thread pool: cannot start worker %d of %d: %s",
                              i + 1, n_threads - 1, strerror(rc));
                goto fail;
            }
            p->n_started++;
        }
    }
    *out = p;
    return KVS_OK;
fail:
    kvs_pool_free(p);
    return st;
}

void kvs_pool_free(kvs_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->args);
    free(p);
}

int kvs_pool_threads(const kvs_pool *p) { return p->n_threads; }

void kvs_pool_run(kvs_pool *p, kvs_pool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, n_tasks, 0);
        return;
    }
    for (int base = 0; base < n_tasks; base += ROUND_MAX) {
        int count = n_tasks - base < ROUND_MAX ? n_tasks - base : ROUND_MAX;
        p->fn = fn;
        p->ctx = ctx;
        p->base = base;
        p->total = n_tasks;
        atomic_store_explicit(&p->pending, count, memory_order_relaxed);
        p->gen++;
        atomic_store(&p->word, ((uint64_t)p->gen << 32) | (uint64_t)count);
        if (atomic_load(&p->sleepers) > 0) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
        }
        run_tasks(p, 0);
        int spins = 0;
        while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
            if (++spins < SPIN_CALLER) {
                POOL_PAUSE();
            } else {
                sched_yield();
            }
        }
    }
}
