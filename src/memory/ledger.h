/*
 * ledger.h - the one account of device memory.
 *
 * Every byte kvserve allocates on a device (host memory on the CPU backend)
 * is allocated through kvs_backend_alloc(), which records it here under a
 * tag saying what it is for.  The ledger keeps, per tag and in total, the
 * bytes held now and the most ever held at once, and counts allocations,
 * so that the start-up report can say exactly where memory went and tests
 * can prove that the serving loop allocates nothing (the allocation count
 * does not move after start-up).
 *
 * The ledger is owned by one backend instance; it is thread-safe.
 */
#ifndef KVS_MEMORY_LEDGER_H
#define KVS_MEMORY_LEDGER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kvs_mem_tag {
    KVS_MEM_WEIGHTS = 0,
    KVS_MEM_ACTIVATIONS,
    KVS_MEM_KV_CACHE,
    KVS_MEM_GRAPHS,
    KVS_MEM_WORKSPACE,
    KVS_MEM_OTHER,
    KVS_MEM_TAG_COUNT
} kvs_mem_tag;

typedef struct kvs_ledger {
    pthread_mutex_t lock;
    uint64_t cur[KVS_MEM_TAG_COUNT];
    uint64_t peak[KVS_MEM_TAG_COUNT];
    uint64_t cur_total;
    uint64_t peak_total;
    uint64_t n_allocs;      /* allocations made, ever */
    uint64_t n_frees;
} kvs_ledger;

/* All counters zero. */
void kvs_ledger_init(kvs_ledger *l);
void kvs_ledger_destroy(kvs_ledger *l);
/* Record an allocation of bytes under tag (raises the peaks, counts it). */
void kvs_ledger_add(kvs_ledger *l, kvs_mem_tag tag, uint64_t bytes);
/* Record a free of bytes that kvs_ledger_add recorded under the same tag. */
void kvs_ledger_sub(kvs_ledger *l, kvs_mem_tag tag, uint64_t bytes);
/* Consistent copy of the counters. */
void kvs_ledger_snapshot(kvs_ledger *l, kvs_ledger *out);
/* Forget the peaks (set them to the current values), e.g. before a profile run. */
void kvs_ledger_reset_peaks(kvs_ledger *l);
const char *kvs_mem_tag_name(kvs_mem_tag tag);   /* "weights", "activations", ... */

#endif
