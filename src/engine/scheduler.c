#include "engine/scheduler.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int32_t kvs_sched_blocks_for(const kvs_scheduler *s, int32_t n_tokens)
{
    return (n_tokens + s->cfg.block_size - 1) / s->cfg.block_size;
}

kvs_status kvs_sched_init(kvs_scheduler *s, const kvs_engine_config *cfg, kvs_error *err)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->max_blocks = kvs_sched_blocks_for(s, cfg->max_model_len);
    s->waiting_cap = cfg->max_requests > 0 ? cfg->max_requests : 64; /* never grows for an engine */
    s->running = calloc((size_t)cfg->max_num_seqs, sizeof *s->running);
    s->plan = calloc((size_t)cfg->max_num_seqs, sizeof *s->plan);
    s->waiting = calloc((size_t)s->waiting_cap, sizeof *s->waiting);
    if (!s->running || !s->plan || !s->waiting) {
        kvs_sched_destroy(s);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the scheduler");
    }
    return kvs_block_pool_new(&s->pool, cfg->num_blocks, cfg->block_size, cfg->prefix_caching, err);
}

void kvs_sched_destroy(kvs_scheduler *s)
{
    kvs_block_pool_free(s->pool);
    free(s->running);
    free(s->plan);
    free(s->waiting);
    memset(s, 0, sizeof *s);
}

/* ---- the waiting queue (a ring; preempted requests go back to the front) ---- */

/* Make room for `need` requests.  kvs_sched_add reserves a slot for every
 * live request (waiting or running), so a preempted request always finds
 * one and push_front never allocates. */
static kvs_status waiting_reserve(kvs_scheduler *s, int32_t need, kvs_error *err)
{
    if (need <= s->waiting_cap)
        return KVS_OK;
    int32_t cap = s->waiting_cap;
    while (cap < need)
        cap *= 2;
    kvs_request **w = calloc((size_t)cap, sizeof *w);
    if (!w)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the waiting queue");
    for (int32_t i = 0; i < s->n_waiting; i++)
        w[i] = s->waiting[(s->waiting_head + i) % s->waiting_cap];
    free(s->waiting);
    s->waiting = w;
    s->waiting_cap = cap;
    s->waiting_head = 0;
    return KVS_OK;
}

static kvs_request *waiting_at(const kvs_scheduler *s, int32_t i)
{
    return s->waiting[(s->waiting_head + i) % s->waiting_cap];
}

static void waiting_pop_front(kvs_scheduler *s)
{
    s->waiting_head = (s->waiting_head + 1) % s->waiting_cap;
    s->n_waiting--;
}

kvs_status kvs_sched_add(kvs_scheduler *s, kvs_request *r, kvs_error *err)
{
    kvs_status st = waiting_reserve(s, s->n_waiting + s->n_running + 1, err);
    if (st != KVS_OK)
        return st;
    r->state = KVS_REQ_WAITING;
    r->arrival = s->next_arrival++;
    r->n_cached = -1; /* set at the first admission */
    r->n_blocks = 0;
    r->n_computed = 0;
    s->waiting[(s->waiting_head + s->n_waiting++) % s->waiting_cap] = r;
    return KVS_OK;
}

/* Preempted requests return to the front (room was reserved at add). */
static void waiting_push_front(kvs_scheduler *s, kvs_request *r)
{
    s->waiting_head = (s->waiting_head + s->waiting_cap - 1) % s->waiting_cap;
    s->waiting[s->waiting_head] = r;
    s->n_waiting++;
    r->state = KVS_REQ_WAITING;
}

/* ---- blocks ---- */

static void free_blocks(kvs_scheduler *s, kvs_request *r)
{
    for (int32_t i = r->n_blocks - 1; i >= 0; i--) /* tail blocks become the first to evict */
        kvs_block_pool_release(s->pool, r->blocks[i]);
    r->n_blocks = 0;
    r->n_computed = 0;
}

/* Make r's block table cover n tokens; false (with no partial state
 * beyond the blocks taken) if the pool runs dry. */
static bool ensure_blocks(kvs_scheduler *s, kvs_request *r, int32_t n)
{
    int32_t need = kvs_sched_blocks_for(s, n);
    while (r->n_blocks < need) {
        int32_t b = kvs_block_pool_alloc(s->pool);
        if (b == KVS_NO_BLOCK)
            return false;
        r->blocks[r->n_blocks++] = b;
    }
    return true;
}

/* Take the longest cached prefix of r's tokens (at least one token is left
 * to compute, so the step that completes them produces logits). */
static void take_cached_prefix(kvs_scheduler *s, kvs_request *r)
{
    const int32_t bs = s->cfg.block_size;
    int32_t parent = KVS_NO_BLOCK, hits = 0;
    /* prompt logprobs need the logits of the positions still to report (as vLLM, no cache reads) */
    int32_t limit = r->params.prompt_logprobs && r->plp_next < r->n_prompt ? r->plp_next - 1 : r->n_tokens - 1;
    while ((hits + 1) * bs <= limit) {
        int32_t b = kvs_block_pool_lookup(s->pool, parent, r->tokens + (int64_t)hits * bs);
        if (b == KVS_NO_BLOCK)
            break;
        r->blocks[r->n_blocks++] = b;
        parent = b;
        hits++;
    }
    r->n_computed = hits * bs;
}

static void running_remove_at(kvs_scheduler *s, int32_t i)
{
    memmove(&s->running[i], &s->running[i + 1], (size_t)(s->n_running - i - 1) * sizeof *s->running);
    s->n_running--;
}

static void preempt_last(kvs_scheduler *s)
{
    kvs_request *v = s->running[s->n_running - 1];
    running_remove_at(s, s->n_running - 1);
    free_blocks(s, v);
    waiting_push_front(s, v);
    s->n_preemptions++;
}

static void plan_add(kvs_scheduler *s, kvs_request *r, int32_t n_new)
{
    s->plan[s->n_plan++] = (kvs_sched_entry){r, n_new, r->n_computed + n_new == r->n_tokens};
}

void kvs_sched_schedule(kvs_scheduler *s)
{
    int32_t budget = s->cfg.max_num_batched_tokens;
    bool preempted = false;
    s->n_plan = 0;

    for (int32_t i = 0; i < s->n_running && budget > 0;) {
        kvs_request *r = s->running[i];
        if (r->paused) { /* its reader is behind: it keeps its blocks and waits */
            i++;
            continue;
        }
        int32_t n_new = r->n_tokens - r->n_computed;
        if (n_new > budget)
            n_new = budget;
        bool self_preempted = false;
        while (!ensure_blocks(s, r, r->n_computed + n_new)) {
            self_preempted = s->running[s->n_running - 1] == r;
            preempt_last(s);
            preempted = true;
            if (self_preempted)
                break;
        }
        if (self_preempted)
            break;
        plan_add(s, r, n_new);
        budget -= n_new;
        i++;
    }
    if (preempted)
        return; /* as vLLM: no admissions in a step that had to preempt */

    while (s->n_waiting > 0 && budget > 0 && s->n_running < s->cfg.max_num_seqs) {
        kvs_request *r = waiting_at(s, 0);
        /* a waiting request holds no blocks (preemption freed them) */
        take_cached_prefix(s, r);
        int32_t n_new = r->n_tokens - r->n_computed;
        if (n_new > budget)
            n_new = budget;
        if (!ensure_blocks(s, r, r->n_computed + n_new)) {
            free_blocks(s, r);
            break;
        }
        s->prefix_queries += (uint64_t)r->n_tokens;
        s->prefix_hits += (uint64_t)r->n_computed;
        if (r->n_cached < 0) /* the first admission, not a resumption after preemption */
            r->n_cached = r->n_computed < r->n_prompt ? r->n_computed : r->n_prompt;
        waiting_pop_front(s);
        r->state = KVS_REQ_RUNNING;
        s->running[s->n_running++] = r;
        plan_add(s, r, n_new);
        budget -= n_new;
    }
}

void kvs_sched_update(kvs_scheduler *s)
{
    const int32_t bs = s->cfg.block_size;
    for (int32_t i = 0; i < s->n_plan; i++) {
        kvs_request *r = s->plan[i].req;
        int32_t full_before = r->n_computed / bs;
        r->n_computed += s->plan[i].n_new;
        for (int32_t b = full_before; b < r->n_computed / bs; b++)
            kvs_block_pool_commit(s->pool, r->blocks[b], b > 0 ? r->blocks[b - 1] : KVS_NO_BLOCK,
                                  r->tokens + (int64_t)b * bs);
    }
}

void kvs_sched_remove(kvs_scheduler *s, kvs_request *r)
{
    for (int32_t i = 0; i < s->n_running; i++) {
        if (s->running[i] == r) {
            running_remove_at(s, i);
            break;
        }
    }
    for (int32_t i = 0; i < s->n_waiting; i++) {
        if (waiting_at(s, i) == r) {
            for (int32_t j = i; j + 1 < s->n_waiting; j++)
                s->waiting[(s->waiting_head + j) % s->waiting_cap] = waiting_at(s, j + 1);
            s->n_waiting--;
            break;
        }
    }
    free_blocks(s, r);
    r->state = KVS_REQ_FINISHED;
}

/* ---- checking a plan ---- */

/* The first of the request's own limits that the entry passes, or NONE. */
static kvs_plan_verdict entry_fault(const kvs_sched_entry *pe, const kvs_plan_limits *lim)
{
    const kvs_request *r = pe->req;
    int64_t end = (int64_t)r->n_computed + pe->n_new; /* positions the entry reaches */
    int32_t end32 = end > INT32_MAX ? INT32_MAX : (int32_t)end;
    kvs_plan_verdict v = {pe->req, KVS_PLAN_FAIL, KVS_LIMIT_NONE, 0, 0};
    if (pe->n_new < 1)
        v.limit = KVS_LIMIT_NO_TOKENS, v.value = pe->n_new, v.bound = 1;
    else if (r->n_tokens > r->cap)
        v.limit = KVS_LIMIT_TOKEN_BUFFER, v.value = r->n_tokens, v.bound = r->cap;
    else if (end > r->n_tokens)
        v.limit = KVS_LIMIT_OWN_TOKENS, v.value = end32, v.bound = r->n_tokens;
    else if (end > lim->max_model_len)
        v.limit = KVS_LIMIT_MODEL_LEN, v.value = end32, v.bound = lim->max_model_len;
    else if (r->n_blocks > lim->max_blocks)
        v.limit = KVS_LIMIT_BLOCK_TABLE, v.value = r->n_blocks, v.bound = lim->max_blocks;
    else if ((int64_t)r->n_blocks * lim->block_size < end)
        v.limit = KVS_LIMIT_OWN_BLOCKS, v.value = end32, v.bound = r->n_blocks * lim->block_size;
    else
        v.action = KVS_PLAN_RUN;
    return v;
}

int32_t kvs_sched_check_plan(kvs_sched_entry *plan, int32_t n_plan, const kvs_plan_limits *lim,
                             kvs_plan_verdict *verdicts)
{
    int32_t k = 0, n_tok = 0;
    for (int32_t i = 0; i < n_plan; i++) {
        kvs_sched_entry pe = plan[i];
        kvs_plan_verdict v = entry_fault(&pe, lim);
        if (v.action == KVS_PLAN_RUN) {
            if (k >= lim->max_seqs)
                v = (kvs_plan_verdict){pe.req, KVS_PLAN_WAIT, KVS_LIMIT_STEP_SEQS, k + 1, lim->max_seqs};
            else if (n_tok >= lim->max_tokens)
                v = (kvs_plan_verdict){pe.req, KVS_PLAN_WAIT, KVS_LIMIT_STEP_TOKENS, n_tok + pe.n_new, lim->max_tokens};
            else if (pe.n_new > lim->max_tokens - n_tok) {
                v = (kvs_plan_verdict){pe.req, KVS_PLAN_CLIP, KVS_LIMIT_STEP_TOKENS, n_tok + pe.n_new, lim->max_tokens};
                pe.n_new = lim->max_tokens - n_tok;
            }
        }
        verdicts[i] = v;
        if (v.action != KVS_PLAN_RUN && v.action != KVS_PLAN_CLIP)
            continue;
        pe.sample = pe.req->n_computed + pe.n_new == pe.req->n_tokens;
        n_tok += pe.n_new;
        plan[k++] = pe;
    }
    return k;
}

const char *kvs_plan_limit_name(kvs_plan_limit l)
{
    switch (l) {
    case KVS_LIMIT_NONE: return "none";
    case KVS_LIMIT_NO_TOKENS: return "at least one token";
    case KVS_LIMIT_OWN_TOKENS: return "the request's tokens";
    case KVS_LIMIT_TOKEN_BUFFER: return "the request's token buffer";
    case KVS_LIMIT_MODEL_LEN: return "max_model_len";
    case KVS_LIMIT_BLOCK_TABLE: return "the block table";
    case KVS_LIMIT_OWN_BLOCKS: return "the request's KV blocks";
    case KVS_LIMIT_STEP_SEQS: return "the step's sequences";
    case KVS_LIMIT_STEP_TOKENS: return "the step's tokens";
    }
    return "an unknown limit";
}

int kvs_plan_verdict_format(const kvs_plan_verdict *v, char *buf, size_t cap)
{
    const char *what = kvs_plan_limit_name(v->limit);
    switch (v->limit) {
    case KVS_LIMIT_NONE:
        return snprintf(buf, cap, "the plan is within its limits");
    case KVS_LIMIT_NO_TOKENS:
        return snprintf(buf, cap, "the scheduler planned %d tokens, need %s", (int)v->value, what);
    case KVS_LIMIT_TOKEN_BUFFER:
        return snprintf(buf, cap, "the request holds %d tokens, past %s of %d", (int)v->value, what, (int)v->bound);
    case KVS_LIMIT_BLOCK_TABLE:
        return snprintf(buf, cap, "the request holds %d KV blocks, past %s of %d", (int)v->value, what,
                        (int)v->bound);
    case KVS_LIMIT_OWN_TOKENS:
    case KVS_LIMIT_MODEL_LEN:
    case KVS_LIMIT_OWN_BLOCKS:
        return snprintf(buf, cap, "the scheduler planned positions up to %d, past %s (%d)", (int)v->value, what,
                        (int)v->bound);
    case KVS_LIMIT_STEP_SEQS:
        return snprintf(buf, cap, "the scheduler planned sequence %d of a step, past %s (%d)", (int)v->value, what,
                        (int)v->bound);
    case KVS_LIMIT_STEP_TOKENS:
        return snprintf(buf, cap, "the scheduler planned %d tokens in a step, past %s (%d)", (int)v->value, what,
                        (int)v->bound);
    }
    return snprintf(buf, cap, "the scheduler planned past %s", what);
}
