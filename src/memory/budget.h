/*
 * budget.h - dividing a device's memory: the one formula behind both a
 * real start and `kvserve plan`.
 *
 *   budget   = ceil(total * utilization)              this instance's share
 *   others   = what other processes held at start     (reported; must leave `budget` free)
 *   kv_cache = budget - weights - activation_peak - graphs - overhead - serving,
 *              rounded down to whole blocks, or --kv-cache-memory if given
 *              (on the CPU backend each block also costs a little host
 *              bookkeeping, counted in the overhead)
 *   blocks   = kv_cache / bytes_per_block,  bytes_per_block =
 *              2 * layers * kv_heads * head_dim * block_size * sizeof(kv dtype)
 *
 * A real start measures weights, activation peak, graphs and overhead and
 * calls kvs_budget_solve(); `plan` computes the same inputs from the model
 * header and calls the same function, which is why they agree.
 *
 * max_model_len: a request of max_model_len tokens must fit the cache
 * alone.  max_model_len = 0 means "auto": the model's trained context,
 * lowered to what fits.  Errors explain what would fit: the largest
 * max_model_len for this budget, and the utilization the asked length needs.
 */
#ifndef KVS_MEMORY_BUDGET_H
#define KVS_MEMORY_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef struct kvs_budget_in {
    uint64_t total;               /* device memory */
    uint64_t free;                /* free on the device before this instance allocated */
    uint64_t used_by_others;      /* held by other processes at start */
    double utilization;           /* (0, 1] */
    uint64_t weights;
    uint64_t activation_peak;
    uint64_t graphs;
    uint64_t overhead;            /* the runtime overhead reserve (computed; see launch.h) */
    uint64_t serving;             /* the serving reserve: the HTTP front end and the serving
                                     loop's pools (host memory: CPU backend only) */
    bool overhead_unknown;        /* not measured yet (0 above): a check before loading, whose
                                     advice is then a lower bound */
    uint64_t overhead_per_block;  /* host bookkeeping per KV block when host memory is the
                                     device's (CPU backend); 0 on a GPU */
    uint64_t kv_cache_memory;     /* --kv-cache-memory; 0 = from the budget */
    uint64_t block_bytes;         /* KV bytes per block (all layers, K and V) */
    int32_t block_size;           /* tokens per block */
    int32_t max_model_len;        /* 0 = auto */
    int32_t model_max_len;        /* the model's trained context (the auto default) */
    int32_t fit_len_hint;         /* > 0: the largest max_model_len a start fits (the caller's
                                     search, kvs_launch_largest_len), named by the error */
} kvs_budget_in;

typedef struct kvs_budget {
    uint64_t budget;              /* ceil(total * utilization) */
    uint64_t overhead;            /* overhead + num_blocks * overhead_per_block */
    uint64_t non_kv;              /* weights + activation peak + graphs + overhead + serving */
    uint64_t kv_cache_bytes;      /* num_blocks * block_bytes */
    int32_t num_blocks;
    int64_t kv_cache_tokens;      /* num_blocks * block_size */
    int32_t max_model_len;
    double max_concurrency;       /* kv_cache_tokens / max_model_len */
    uint64_t slack_inside;        /* budget - non_kv - kv_cache_bytes */
    uint64_t slack_outside;       /* total - others - budget (memory left on the device) */
} kvs_budget;

/* Check the requested budget against what is free: KVS_E_INVALID for a
 * utilization outside (0, 1], KVS_E_BUDGET when ceil(total * utilization)
 * is more than `free`, with a message giving the others' use and the
 * largest utilization that fits now. */
kvs_status kvs_budget_check_free(uint64_t total, uint64_t free, uint64_t used_by_others, double utilization,
                                 kvs_error *err);
/* The largest utilization (in steps of 0.0001) whose budget is free now; 0 if none. */
double kvs_budget_max_free_utilization(uint64_t total, uint64_t free);

/* Solve the split; KVS_E_BUDGET with an explanatory message when it does
 * not fit (it names the figures and the utilization, KV memory or
 * max_model_len that would fit). */
kvs_status kvs_budget_solve(const kvs_budget_in *in, kvs_budget *out, kvs_error *err);

/* ceil(total * utilization) without floating-point surprises on exact values. */
uint64_t kvs_budget_bytes(uint64_t total, double utilization);

/* Parse "24GiB", "512MiB", "1.5GB", "123456" (bytes). */
bool kvs_parse_size(const char *s, uint64_t *out);
/* Format bytes as "1.23 GiB" into buf. */
const char *kvs_format_gib(uint64_t bytes, char *buf, int cap);

#endif
