#include "memory/ledger.h"

#include <string.h>

void kvs_ledger_init(kvs_ledger *l)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->lock, NULL);
}

void kvs_ledger_destroy(kvs_ledger *l) { pthread_mutex_destroy(&l->lock); }

void kvs_ledger_add(kvs_ledger *l, kvs_mem_tag tag, uint64_t bytes)
{
    pthread_mutex_lock(&l->lock);
    l->cur[tag] += bytes;
    if (l->cur[tag] > l->peak[tag])
        l->peak[tag] = l->cur[tag];
    l->cur_total += bytes;
    if (l->cur_total > l->peak_total)
        l->peak_total = l->cur_total;
    l->n_allocs++;
    pthread_mutex_unlock(&l->lock);
}

void kvs_ledger_sub(kvs_ledger *l, kvs_mem_tag tag, uint64_t bytes)
{
    pthread_mutex_lock(&l->lock);
    l->cur[tag] -= bytes;
    l->cur_total -= bytes;
    l->n_frees++;
    pthread_mutex_unlock(&l->lock);
}

void kvs_ledger_snapshot(kvs_ledger *l, kvs_ledger *out)
{
    pthread_mutex_lock(&l->lock);
    memcpy(out->cur, l->cur, sizeof l->cur);
    memcpy(out->peak, l->peak, sizeof l->peak);
    out->cur_total = l->cur_total;
    out->peak_total = l->peak_total;
    out->n_allocs = l->n_allocs;
    out->n_frees = l->n_frees;
    pthread_mutex_unlock(&l->lock);
}

void kvs_ledger_reset_peaks(kvs_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    memcpy(l->peak, l->cur, sizeof l->cur);
    l->peak_total = l->cur_total;
    pthread_mutex_unlock(&l->lock);
}

const char *kvs_mem_tag_name(kvs_mem_tag tag)
{
    static const char *const names[KVS_MEM_TAG_COUNT] = {
        "weights", "activations", "kv_cache", "graphs", "workspace", "other",
    };
    return tag < KVS_MEM_TAG_COUNT ? names[tag] : "?";
}
