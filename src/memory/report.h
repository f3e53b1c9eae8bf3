/*
 * report.h - the memory table of one start (or one plan), as text, JSON
 * and an SVG picture.  Every figure is in bytes unless named otherwise;
 * the JSON keys are the ones `--memory-report` documents.
 */
#ifndef KVS_MEMORY_REPORT_H
#define KVS_MEMORY_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct kvs_memory_report {
    char device[64];              /* "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)", "h100 (plan)" */
    bool estimate;                /* a prediction (plan) rather than a measurement */
    bool overhead_estimate;       /* the overhead figure is estimated */
    uint64_t total_bytes;
    double utilization;
    bool utilization_lowered;     /* the default was lowered to what is free (CPU host memory) */
    uint64_t budget_bytes;
    uint64_t used_by_others_bytes;
    uint64_t weights_bytes;
    uint64_t activation_peak_bytes;
    uint64_t activation_formula_bytes; /* the same peak computed from shapes */
    uint64_t graph_bytes;
    uint64_t overhead_bytes;      /* the runtime reserve + num_blocks * overhead_per_block */
    uint64_t overhead_reserve_bytes;   /* the runtime reserve: computed from known sizes (CPU), or
                                          the measured CUDA costs (GPU profiles) */
    uint64_t overhead_measured_bytes;  /* what start-up measured beyond the ledger (must fit the
                                          reserve); plan: its own estimate of that */
    uint64_t serving_reserve_bytes;    /* the front end and the serving pools (a budget term),
                                          structured_reserve_bytes included */
    uint64_t structured_reserve_bytes; /* of which: the structured-output slots (grammar/gpool.h) */
    int32_t structured_slots;          /* --max-structured-seqs in effect (0: structured output off) */
    uint64_t overhead_per_block_bytes; /* host bookkeeping per KV block (CPU backend; 0 on a GPU) */
    uint64_t kv_cache_bytes;
    int32_t block_size;
    uint64_t kv_bytes_per_token;
    int32_t num_blocks;
    int64_t kv_cache_tokens;
    int32_t max_model_len;
    double max_concurrency;
    uint64_t peak_process_bytes;  /* the observed peak (VmHWM) when the report was made; plan:
                                     the projection */
    uint64_t projected_peak_bytes; /* every term of the budget: what the process may reach */
    uint64_t slack_inside_bytes;
    uint64_t slack_outside_bytes;
    double load_seconds;
    /* Start-up phases (logged, not in the JSON): the header, tokenizer and
     * budget before loading; the profile of the largest step; the KV cache;
     * and the whole start-up. */
    double header_seconds, profile_seconds, kv_alloc_seconds, startup_seconds;
    bool full_profile;            /* the profile computed the largest step (else walked its allocations) */
} kvs_memory_report;

/* vLLM-style start-up lines ("INFO ...") to f. */
void kvs_report_log(const kvs_memory_report *r, FILE *f);
/* A table for `kvserve plan`. */
void kvs_report_table(const kvs_memory_report *r, FILE *f);
/* The JSON object (a new reference), and as a malloc'ed string. */
struct json_t;
struct json_t *kvs_report_json_obj(const kvs_memory_report *r);
char *kvs_report_json(const kvs_memory_report *r);
kvs_status kvs_report_write_json(const kvs_memory_report *r, const char *path, kvs_error *err);
/* One stacked bar: weights, activations, graphs, overhead, KV cache, slack,
 * with the total and the budget marked. */
kvs_status kvs_report_write_svg(const kvs_memory_report *r, const char *path, kvs_error *err);

#endif
