/*
 * scheduler.h - deciding what each step computes (vLLM v1's model).
 *
 * Each step has a token budget (max_num_batched_tokens) and a sequence cap
 * (max_num_seqs).  Running requests go first, in admission order: each
 * gets the tokens it lacks (one for a request that is generating, a chunk
 * for one still reading its prompt), as far as the budget allows.  If its
 * next tokens need a KV block and none is free, the most recently admitted
 * running request is preempted (its blocks freed, put back at the front of
 * the waiting queue) until the block can be had, or the request itself is
 * the one preempted.  Then waiting requests are admitted first come first
 * served while the budget, the cap and the free blocks allow; a newly
 * admitted request first takes the longest prefix of its tokens that the
 * prefix cache holds, and computes the rest, in chunks if the budget is
 * smaller (chunked prefill).
 *
 * A running request that is paused (its reader is behind) gets no tokens
 * and keeps its blocks until it is resumed.
 *
 * A request samples in a step exactly when that step's tokens bring its
 * computed count up to all of its tokens.
 */
#ifndef KVS_ENGINE_SCHEDULER_H
#define KVS_ENGINE_SCHEDULER_H

#include "engine/block_pool.h"
#include "engine/request.h"

typedef struct kvs_sched_entry {
    kvs_request *req;
    int32_t n_new;        /* tokens computed this step, from req->n_computed */
    bool sample;          /* this step completes the request's tokens */
} kvs_sched_entry;

typedef struct kvs_scheduler {
    kvs_engine_config cfg;
    int32_t max_blocks;           /* per request */
    kvs_block_pool *pool;
    kvs_request **running;        /* [max_num_seqs], admission order */
    int32_t n_running;
    kvs_request **waiting;        /* ring buffer of pending requests */
    int32_t n_waiting, waiting_head, waiting_cap;
    kvs_sched_entry *plan;        /* [max_num_seqs] */
    int32_t n_plan;
    uint64_t n_preemptions;
    uint64_t prefix_queries, prefix_hits;
    uint64_t next_arrival;
} kvs_scheduler;

/* Queues sized for cfg and a block pool of cfg->num_blocks.  On failure
 * s may hold part of it: kvs_sched_destroy frees what is there. */
kvs_status kvs_sched_init(kvs_scheduler *s, const kvs_engine_config *cfg, kvs_error *err);
/* Free everything and zero s (safe on a zeroed scheduler). */
void kvs_sched_destroy(kvs_scheduler *s);
/* Queue r (tokens and block table allocated by the caller; it holds no
 * blocks).  Reserves a waiting slot for every live request, so that
 * preemption never allocates.  Sets r->n_cached to -1 until r's first
 * admission records the prompt tokens the prefix cache held. */
kvs_status kvs_sched_add(kvs_scheduler *s, kvs_request *r, kvs_error *err);
/* Fill s->plan for the next step. */
void kvs_sched_schedule(kvs_scheduler *s);
/* After the forward: advance n_computed, cache newly full blocks. */
void kvs_sched_update(kvs_scheduler *s);
/* Take a request out (finished or aborted) and free its blocks. */
void kvs_sched_remove(kvs_scheduler *s, kvs_request *r);
/* Blocks needed to hold n tokens. */
int32_t kvs_sched_blocks_for(const kvs_scheduler *s, int32_t n_tokens);

#endif
