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
 *
 * The plan is checked before it runs (kvs_sched_check_plan): the runner's
 * activation arena is sized for one shape (its profiled tokens and
 * sequences per step) and each request's buffers for its own limits, so a
 * plan past them would write past memory that was never reserved.  The
 * scheduler is built never to make such a plan; if one ever comes, the
 * check makes it harmless, entry by entry:
 *
 *     an entry past its request's limits   FAIL  (the request ends with an error)
 *       (no tokens, past its tokens or its token buffer, past
 *        max_model_len, more blocks than the block table, or
 *        positions its blocks do not cover)
 *     the step's sequences already full    WAIT  (nothing computed; a later step)
 *     the step's tokens already full       WAIT
 *     only part of its tokens fit          CLIP  (a shorter chunk now, which
 *                                                 does not sample; the rest later)
 *     otherwise                            RUN
 *
 * A failed entry takes nothing from the step, so the entries after it run
 * as if it had not been planned.
 */
#ifndef KVS_ENGINE_SCHEDULER_H
#define KVS_ENGINE_SCHEDULER_H

#include <stddef.h>

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

/* ---- checking a plan against the shape that was profiled ---- */

/* What a step may hold: the runner's profiled shape and its block tables. */
typedef struct kvs_plan_limits {
    int32_t max_seqs;        /* sequences in one step */
    int32_t max_tokens;      /* tokens in one step */
    int32_t max_model_len;   /* positions per request */
    int32_t max_blocks;      /* block table entries per request */
    int32_t block_size;      /* tokens per block */
} kvs_plan_limits;

typedef enum kvs_plan_action {
    KVS_PLAN_RUN = 0,        /* runs as planned */
    KVS_PLAN_CLIP,           /* runs with fewer tokens (the entry's n_new is cut) */
    KVS_PLAN_WAIT,           /* not this step: the request keeps its state and blocks */
    KVS_PLAN_FAIL,           /* past its request's limits: the request must end */
} kvs_plan_action;

/* Which limit an entry passed (KVS_LIMIT_NONE for RUN). */
typedef enum kvs_plan_limit {
    KVS_LIMIT_NONE = 0,
    KVS_LIMIT_NO_TOKENS,     /* n_new < 1 */
    KVS_LIMIT_OWN_TOKENS,    /* n_computed + n_new > the request's n_tokens */
    KVS_LIMIT_TOKEN_BUFFER,  /* n_tokens > the request's token buffer (cap) */
    KVS_LIMIT_MODEL_LEN,     /* n_computed + n_new > max_model_len */
    KVS_LIMIT_BLOCK_TABLE,   /* n_blocks > max_blocks */
    KVS_LIMIT_OWN_BLOCKS,    /* n_computed + n_new > n_blocks x block_size */
    KVS_LIMIT_STEP_SEQS,     /* the step holds max_seqs entries already (WAIT) */
    KVS_LIMIT_STEP_TOKENS,   /* the step's max_tokens are spent (WAIT) or too few are left (CLIP) */
} kvs_plan_limit;

/* One entry's verdict: its request, and what was asked against what the
 * limit allows (positions, blocks or tokens, as the limit counts them). */
typedef struct kvs_plan_verdict {
    kvs_request *req;        /* the entry's request */
    kvs_plan_action action;
    kvs_plan_limit limit;
    int32_t value, bound;
} kvs_plan_verdict;

/* Check plan[0..n_plan) against lim, in order.  verdicts[i] (room for
 * n_plan) receives entry i's verdict; the plan is compacted in place to
 * the entries that run (RUN and CLIP, in their order, a clipped one with
 * its shorter n_new), and their count is returned.  Every entry that runs
 * has `sample` set exactly when its tokens complete its request's.  Reads
 * the requests and changes none: the caller ends the FAIL verdicts'
 * requests.  Allocates nothing. */
int32_t kvs_sched_check_plan(kvs_sched_entry *plan, int32_t n_plan, const kvs_plan_limits *lim,
                             kvs_plan_verdict *verdicts);

/* A short phrase for a limit ("max_model_len", "the step's tokens", ...). */
const char *kvs_plan_limit_name(kvs_plan_limit l);

/* One line (no newline) saying what a FAIL, WAIT or CLIP verdict found,
 * for errors and logs: e.g. "the scheduler planned positions up to 40,
 * past max_model_len 32".  snprintf's contract; allocates nothing. */
int kvs_plan_verdict_format(const kvs_plan_verdict *v, char *buf, size_t cap);

#endif
