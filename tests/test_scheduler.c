/*
 * test_scheduler.c - the scheduler without a model.
 *
 * A fake model drives it: each step "computes" the scheduled tokens by
 * writing (token, position) into the slot its request's block table gives,
 * and a request that samples first reads all its positions back through
 * its block table (what attention would read) and must find exactly its
 * tokens; the next token is a fixed function of the tokens (0 = EOS).  A
 * wrong block table, a shared block written to, a stale prefix-cache hit
 * or a lost preempted request therefore shows up as a wrong read, a wrong
 * output, or a request that never finishes.  The model-level equivalents
 * (same tokens with and without batching/preemption) are in test_engine.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/scheduler.h"

#define VOCAB 50
#define EOS 0

typedef struct sim {
    kvs_engine_config cfg;
    kvs_scheduler s;
    int32_t *kv_tok, *kv_pos;     /* [num_blocks * block_size]; -1: never written */
    kvs_request **reqs;           /* everything added, in order */
    int32_t n_reqs, cap_reqs;
    int32_t *max_out;             /* per request */
    bool *done, *removed;         /* finished by the fake model; taken out by the test */
    uint64_t steps;
} sim;

static uint32_t next_token(const int32_t *tok, int32_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < n; i++)
        h = (h ^ (uint32_t)tok[i]) * 1099511628211ull;
    return (uint32_t)((h >> 20) % VOCAB);
}

static void sim_init(sim *m, int32_t bs, int32_t num_blocks, int32_t budget, int32_t max_seqs, int32_t max_len,
                     bool caching)
{
    memset(m, 0, sizeof *m);
    m->cfg = (kvs_engine_config){.max_num_seqs = max_seqs, .max_num_batched_tokens = budget,
                                 .max_model_len = max_len, .block_size = bs, .num_blocks = num_blocks,
                                 .prefix_caching = caching};
    kvs_error err;
    assert_int_equal(kvs_sched_init(&m->s, &m->cfg, &err), KVS_OK);
    m->kv_tok = malloc((size_t)num_blocks * bs * sizeof *m->kv_tok);
    m->kv_pos = malloc((size_t)num_blocks * bs * sizeof *m->kv_pos);
    assert_non_null(m->kv_tok);
    assert_non_null(m->kv_pos);
    for (int32_t i = 0; i < num_blocks * bs; i++)
        m->kv_tok[i] = m->kv_pos[i] = -1;
}

static void sim_destroy(sim *m)
{
    for (int32_t i = 0; i < m->n_reqs; i++) {
        free(m->reqs[i]->tokens);
        free(m->reqs[i]->blocks);
        free(m->reqs[i]);
    }
    free(m->reqs);
    free(m->max_out);
    free(m->done);
    free(m->removed);
    free(m->kv_tok);
    free(m->kv_pos);
    kvs_sched_destroy(&m->s);
}

static kvs_request *sim_add(sim *m, const int32_t *prompt, int32_t n, int32_t max_out)
{
    assert_true(n >= 1 && n + max_out <= m->cfg.max_model_len);
    if (m->n_reqs == m->cap_reqs) {
        m->cap_reqs = m->cap_reqs ? 2 * m->cap_reqs : 16;
        m->reqs = realloc(m->reqs, (size_t)m->cap_reqs * sizeof *m->reqs);
        m->max_out = realloc(m->max_out, (size_t)m->cap_reqs * sizeof *m->max_out);
        m->done = realloc(m->done, (size_t)m->cap_reqs * sizeof *m->done);
        m->removed = realloc(m->removed, (size_t)m->cap_reqs * sizeof *m->removed);
        assert_non_null(m->reqs);
        assert_non_null(m->max_out);
        assert_non_null(m->done);
        assert_non_null(m->removed);
    }
    kvs_request *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->id = (uint64_t)m->n_reqs;
    r->cap = n + max_out;
    r->tokens = malloc((size_t)r->cap * sizeof *r->tokens);
    r->blocks = malloc((size_t)m->s.max_blocks * sizeof *r->blocks);
    assert_non_null(r->tokens);
    assert_non_null(r->blocks);
    memcpy(r->tokens, prompt, (size_t)n * sizeof *prompt);
    r->n_prompt = r->n_tokens = n;
    kvs_error err;
    assert_int_equal(kvs_sched_add(&m->s, r, &err), KVS_OK);
    assert_int_equal(r->state, KVS_REQ_WAITING);
    assert_int_equal(r->n_cached, -1);
    m->max_out[m->n_reqs] = max_out;
    m->done[m->n_reqs] = m->removed[m->n_reqs] = false;
    m->reqs[m->n_reqs++] = r;
    return r;
}

/* Take a request out as an abort would. */
static void sim_remove(sim *m, kvs_request *r)
{
    kvs_sched_remove(&m->s, r);
    assert_int_equal(r->state, KVS_REQ_FINISHED);
    assert_int_equal(r->n_blocks, 0);
    m->removed[r->id] = true;
}

/* Every structural invariant of the scheduler and the pool. */
static void sim_check(const sim *m)
{
    const kvs_scheduler *s = &m->s;
    kvs_error err = {0};
    if (kvs_block_pool_check(s->pool, &err) != KVS_OK)
        fail_msg("pool: %s", err.msg);
    assert_true(s->n_running <= m->cfg.max_num_seqs);
    int32_t nb = m->cfg.num_blocks, *holders = calloc((size_t)nb, sizeof *holders);
    assert_non_null(holders);
    int64_t n_refs = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        const kvs_request *r = s->running[i];
        assert_int_equal(r->state, KVS_REQ_RUNNING);
        assert_true(r->n_computed < r->n_tokens); /* a running request always has a token to compute */
        assert_true(r->n_blocks >= kvs_sched_blocks_for(s, r->n_computed));
        assert_true(r->n_blocks <= s->max_blocks);
        assert_true(r->n_cached >= 0);
        for (int32_t b = 0; b < r->n_blocks; b++) {
            assert_true(r->blocks[b] >= 0 && r->blocks[b] < nb);
            holders[r->blocks[b]]++;
            n_refs++;
        }
        if (i > 0) /* admission order */
            assert_true(s->running[i - 1] != r);
    }
    for (int32_t b = 0; b < nb; b++) {
        assert_int_equal(kvs_block_pool_ref(s->pool, b), holders[b]);
        if (holders[b] > 1) /* shared only through the prefix cache */
            assert_true(kvs_block_pool_is_cached(s->pool, b));
    }
    int32_t used = 0;
    int64_t sum_ref = 0;
    for (int32_t b = 0; b < nb; b++) {
        used += holders[b] > 0;
        sum_ref += kvs_block_pool_ref(s->pool, b);
    }
    assert_int_equal(sum_ref, n_refs);
    assert_int_equal(nb - kvs_block_pool_n_free(s->pool), used);
    free(holders);
    for (int32_t i = 0; i < s->n_waiting; i++) {
        const kvs_request *r = s->waiting[(s->waiting_head + i) % s->waiting_cap];
        assert_int_equal(r->state, KVS_REQ_WAITING);
        assert_int_equal(r->n_blocks, 0);
        assert_int_equal(r->n_computed, 0);
    }
    assert_true(s->n_waiting + s->n_running <= s->waiting_cap);
}

/* One step of the fake model; returns the number of planned entries. */
static int32_t sim_step(sim *m)
{
    kvs_scheduler *s = &m->s;
    const int32_t bs = m->cfg.block_size;
    kvs_sched_schedule(s);
    m->steps++;
    int32_t total = 0;
    for (int32_t i = 0; i < s->n_plan; i++) {
        const kvs_sched_entry *e = &s->plan[i];
        kvs_request *r = e->req;
        assert_int_equal(r->state, KVS_REQ_RUNNING);
        for (int32_t j = 0; j < i; j++)
            assert_ptr_not_equal(s->plan[j].req, r);
        assert_true(e->n_new >= 1);
        assert_true(r->n_computed + e->n_new <= r->n_tokens);
        assert_int_equal(e->sample, r->n_computed + e->n_new == r->n_tokens);
        assert_true(r->n_blocks >= kvs_sched_blocks_for(s, r->n_computed + e->n_new));
        total += e->n_new;
        for (int32_t pos = r->n_computed; pos < r->n_computed + e->n_new; pos++) {
            int32_t b = r->blocks[pos / bs];
            /* only a block this request alone holds, not yet cached, is written */
            assert_int_equal(kvs_block_pool_ref(s->pool, b), 1);
            assert_false(kvs_block_pool_is_cached(s->pool, b));
            m->kv_tok[b * bs + pos % bs] = r->tokens[pos];
            m->kv_pos[b * bs + pos % bs] = pos;
        }
    }
    assert_true(total <= m->cfg.max_num_batched_tokens);
    assert_true(s->n_plan <= m->cfg.max_num_seqs);
    kvs_sched_update(s);
    for (int32_t i = 0; i < s->n_plan; i++) {
        kvs_request *r = s->plan[i].req;
        if (!s->plan[i].sample)
            continue;
        assert_int_equal(r->n_computed, r->n_tokens);
        /* attention's view: every position through the block table */
        for (int32_t pos = 0; pos < r->n_tokens; pos++) {
            int32_t b = r->blocks[pos / bs];
            if (m->kv_pos[b * bs + pos % bs] != pos || m->kv_tok[b * bs + pos % bs] != r->tokens[pos])
                fail_msg("request %d reads (tok %d, pos %d) at position %d, wants (tok %d)", (int)r->id,
                         m->kv_tok[b * bs + pos % bs], m->kv_pos[b * bs + pos % bs], pos, r->tokens[pos]);
        }
        int32_t tok = (int32_t)next_token(r->tokens, r->n_tokens);
        assert_true(r->n_tokens < r->cap);
        r->tokens[r->n_tokens++] = tok;
        if (tok == EOS || r->n_tokens - r->n_prompt >= m->max_out[r->id]) {
            kvs_sched_remove(s, r);
            m->done[r->id] = true;
        }
    }
    sim_check(m);
    return s->n_plan;
}

/* Run until nothing is left; every step with work must plan something. */
static void sim_run(sim *m, uint64_t max_steps)
{
    while (m->s.n_running + m->s.n_waiting > 0) {
        assert_true(sim_step(m) > 0);
        assert_true(m->steps < max_steps);
    }
}

/* What the fake model produces for a request alone. */
static void expected_output(const sim *m, const kvs_request *r, int32_t *out, int32_t *n_out)
{
    int32_t *t = malloc((size_t)r->cap * sizeof *t);
    assert_non_null(t);
    memcpy(t, r->tokens, (size_t)r->n_prompt * sizeof *t);
    int32_t n = r->n_prompt;
    *n_out = 0;
    while (*n_out < m->max_out[r->id]) {
        int32_t tok = (int32_t)next_token(t, n);
        t[n++] = tok;
        out[(*n_out)++] = tok;
        if (tok == EOS)
            break;
    }
    free(t);
}

static void assert_outputs_right(const sim *m)
{
    for (int32_t i = 0; i < m->n_reqs; i++) {
        const kvs_request *r = m->reqs[i];
        if (m->removed[i])
            continue;
        assert_true(m->done[i]);
        int32_t want[512], n_want;
        expected_output(m, r, want, &n_want);
        assert_int_equal(r->n_tokens - r->n_prompt, n_want);
        assert_memory_equal(r->tokens + r->n_prompt, want, (size_t)n_want * sizeof *want);
    }
    assert_int_equal(kvs_block_pool_n_free(m->s.pool), m->cfg.num_blocks);
}

static void fill(int32_t *t, int32_t n, int32_t seed)
{
    for (int32_t i = 0; i < n; i++)
        t[i] = 1 + (int32_t)((uint32_t)(seed * 7919 + i * 104729) % (VOCAB - 1));
}

/* ---- tests ---- */

/* Running requests first (their next token, or the next chunk of their
 * prompt), then admissions in arrival order, all within the budget. */
static void test_budget_chunks_and_order(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 4, 64, 10, 4, 64, false);
    int32_t p[32];
    fill(p, 32, 1);
    kvs_request *a = sim_add(&m, p, 25, 3);
    kvs_request *b = sim_add(&m, p + 1, 7, 3);
    kvs_request *c = sim_add(&m, p + 2, 3, 3);
    struct { kvs_request *r; int32_t n; bool sample; } want[4][3] = {
        {{a, 10, false}},
        {{a, 10, false}},
        {{a, 5, true}, {b, 5, false}},
        {{a, 1, true}, {b, 2, true}, {c, 3, true}},
    };
    int32_t n_want[4] = {1, 1, 2, 3};
    for (int step = 0; step < 4; step++) {
        kvs_sched_schedule(&m.s);
        assert_int_equal(m.s.n_plan, n_want[step]);
        for (int i = 0; i < n_want[step]; i++) {
            assert_ptr_equal(m.s.plan[i].req, want[step][i].r);
            assert_int_equal(m.s.plan[i].n_new, want[step][i].n);
            assert_int_equal(m.s.plan[i].sample, want[step][i].sample);
        }
        /* complete the step as sim_step would, without rescheduling */
        kvs_sched_update(&m.s);
        for (int i = 0; i < m.s.n_plan; i++) {
            kvs_request *r = m.s.plan[i].req;
            if (m.s.plan[i].sample) {
                int32_t tok = 1 + (int32_t)next_token(r->tokens, r->n_tokens) % (VOCAB - 1);
                r->tokens[r->n_tokens++] = tok;
            }
        }
        sim_check(&m);
    }
    assert_int_equal(m.s.n_running, 3);
    assert_int_equal(a->n_cached, 0);
    sim_destroy(&m);
}

/* max_num_seqs caps the running set; admission is first come first served
 * across a waiting ring that grows and wraps, with removals in the middle. */
static void test_seq_cap_fcfs_ring(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 4, 256, 64, 3, 64, true);
    int32_t p[16];
    int32_t order[300], n_order = 0;
    bool admitted[300] = {false};
    for (int i = 0; i < 200; i++) {
        fill(p, 16, i);
        sim_add(&m, p, 1 + i % 13, 1 + i % 5);
    }
    assert_true(m.s.waiting_cap >= 200);
    for (int i = 10; i < 200; i += 17) /* abort some while waiting */
        sim_remove(&m, m.reqs[i]);
    int added = 200;
    while (m.s.n_running + m.s.n_waiting > 0) {
        assert_true(sim_step(&m) > 0);
        for (int32_t i = 0; i < m.s.n_plan; i++) {
            uint64_t id = m.s.plan[i].req->id;
            if (!admitted[id]) {
                admitted[id] = true;
                order[n_order++] = (int32_t)id;
            }
        }
        if (m.steps % 7 == 0 && added < 300) { /* arrivals while running: the ring wraps */
            fill(p, 16, added);
            sim_add(&m, p, 1 + added % 11, 2);
            added++;
        }
        assert_true(m.steps < 100000);
    }
    for (int i = 1; i < n_order; i++)
        assert_true(order[i - 1] < order[i]);
    assert_int_equal(m.s.n_preemptions, 0);
    assert_outputs_right(&m);
    sim_destroy(&m);
}

/* Out of blocks, the most recently admitted running request is preempted:
 * its blocks freed, back at the front of the queue, older victims ahead. */
static void test_preemption_order(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 4, 6, 64, 8, 64, false);
    int32_t p[8];
    fill(p, 8, 3);
    kvs_request *a = sim_add(&m, p, 8, 12);
    fill(p, 8, 4);
    kvs_request *b = sim_add(&m, p, 8, 12);
    fill(p, 8, 5);
    kvs_request *c = sim_add(&m, p, 7, 8);
    sim_step(&m); /* all three prefill: 6 blocks */
    assert_int_equal(kvs_block_pool_n_free(m.s.pool), 0);
    assert_int_equal(m.s.n_running, 3);
    sim_step(&m); /* a and b need a block each: c goes */
    assert_int_equal(m.s.n_preemptions, 1);
    assert_int_equal(c->state, KVS_REQ_WAITING);
    assert_int_equal(c->n_blocks, 0);
    assert_int_equal(m.s.n_plan, 2);
    assert_ptr_equal(m.s.plan[0].req, a);
    assert_ptr_equal(m.s.plan[1].req, b);
    assert_int_equal(m.s.n_waiting, 1);
    while (m.s.n_preemptions < 2)
        sim_step(&m);
    /* b was preempted next (a needed a block): b before c in the queue */
    assert_int_equal(b->state, KVS_REQ_WAITING);
    assert_int_equal(m.s.n_waiting, 2);
    assert_ptr_equal(m.s.waiting[m.s.waiting_head], b);
    assert_ptr_equal(m.s.waiting[(m.s.waiting_head + 1) % m.s.waiting_cap], c);
    sim_run(&m, 1000);
    assert_outputs_right(&m);
    sim_destroy(&m);
}

/* When the request needing a block is itself the most recent, it is the
 * one preempted and the step goes on without it. */
static void test_self_preemption(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 4, 4, 64, 8, 64, false);
    int32_t p[8];
    fill(p, 8, 6);
    kvs_request *a = sim_add(&m, p, 5, 3);
    fill(p, 8, 7);
    kvs_request *b = sim_add(&m, p, 8, 3);
    sim_step(&m);
    assert_int_equal(kvs_block_pool_n_free(m.s.pool), 0);
    sim_step(&m); /* a fits in its second block; b needs a third */
    assert_int_equal(m.s.n_preemptions, 1);
    assert_int_equal(m.s.n_plan, 1);
    assert_ptr_equal(m.s.plan[0].req, a);
    assert_int_equal(b->state, KVS_REQ_WAITING);
    sim_run(&m, 1000);
    assert_outputs_right(&m);
    sim_destroy(&m);
}

/* A new request takes the longest cached prefix of full blocks, leaving
 * at least one token to compute; the hit blocks are shared. */
static void test_prefix_hits(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 4, 32, 64, 8, 64, true);
    int32_t p[16];
    fill(p, 16, 8);
    kvs_request *a = sim_add(&m, p, 10, 20);
    sim_step(&m); /* a's prompt: blocks 0 and 1 are full and cached */
    assert_int_equal(a->n_cached, 0);
    assert_int_equal(kvs_block_pool_n_cached(m.s.pool), 2);
    int32_t q[16];
    memcpy(q, p, sizeof q);
    q[8] = p[8] % (VOCAB - 1) + 1; /* differs from position 8 on */
    kvs_request *b = sim_add(&m, q, 12, 4);
    kvs_request *c = sim_add(&m, p, 8, 4); /* exactly two blocks: the last one is recomputed */
    uint64_t q0 = m.s.prefix_queries, h0 = m.s.prefix_hits;
    sim_step(&m);
    assert_int_equal(b->n_cached, 8);
    assert_int_equal(c->n_cached, 4);
    assert_int_equal(m.s.prefix_queries - q0, 12 + 8);
    assert_int_equal(m.s.prefix_hits - h0, 8 + 4);
    /* b computed only its last 4 tokens; its first two blocks are a's */
    assert_int_equal(m.s.plan[1].n_new, 4);
    assert_int_equal(b->blocks[0], a->blocks[0]);
    assert_int_equal(b->blocks[1], a->blocks[1]);
    assert_int_equal(kvs_block_pool_ref(m.s.pool, a->blocks[0]), 3);
    assert_int_equal(kvs_block_pool_ref(m.s.pool, a->blocks[1]), 2);
    sim_run(&m, 1000);
    assert_outputs_right(&m);
    /* all freed, the cached blocks stay findable */
    fill(p, 16, 8);
    kvs_request *d = sim_add(&m, p, 12, 2);
    sim_step(&m);
    assert_int_equal(d->n_cached, 8);
    sim_run(&m, 1000);
    assert_outputs_right(&m);
    sim_destroy(&m);
}

/* A request preempted in the middle of its prompt finds its own blocks in
 * the cache when it resumes; that is not a prefix-cache hit of its
 * prompt: n_cached stays what its first admission found. */
static void test_n_cached_survives_preemption(void **state)
{
    (void)state;
    sim m;
    sim_init(&m, 4, 12, 2, 8, 64, true);
    int32_t p[48];
    fill(p, 48, 9);
    kvs_request *a = sim_add(&m, p, 3, 40);
    fill(p, 48, 10);
    kvs_request *b = sim_add(&m, p, 40, 4);
    bool preempted_in_prompt = false;
    uint64_t hits_before_resume = 0;
    while (m.s.n_running + m.s.n_waiting > 0) {
        uint64_t before = m.s.n_preemptions;
        kvs_req_state bs = b->state;
        int32_t b_tokens = b->n_tokens;
        sim_step(&m);
        if (m.s.n_preemptions > before && bs == KVS_REQ_RUNNING && b->state == KVS_REQ_WAITING &&
            b_tokens == b->n_prompt && !preempted_in_prompt) {
            preempted_in_prompt = true;
            hits_before_resume = m.s.prefix_hits;
        }
        assert_true(m.steps < 2000);
    }
    assert_true(preempted_in_prompt);
    assert_true(m.s.prefix_hits > hits_before_resume); /* the resumption found its blocks */
    assert_int_equal(b->n_cached, 0);
    assert_int_equal(a->n_cached, 0);
    assert_outputs_right(&m);
    sim_destroy(&m);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random mixes on a small cache: requests that fit the cache alone all
 * complete with the right tokens, whatever the budget, cap and block size,
 * with arrivals and aborts along the way; every step with work plans
 * something; everything is freed at the end. */
static void test_random_mixes(void **state)
{
    (void)state;
    uint64_t total_preemptions = 0, total_hits = 0;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        uint64_t s = seed * 0x9e3779b97f4a7c15ull;
        const int32_t bss[4] = {1, 2, 4, 16};
        int32_t bs = bss[rng_next(&s) % 4];
        int32_t max_len = 48;
        int32_t num_blocks = (max_len + bs - 1) / bs + (int32_t)(rng_next(&s) % 4); /* one request and a bit */
        int32_t budget = 1 + (int32_t)(rng_next(&s) % 40);
        int32_t seqs = 1 + (int32_t)(rng_next(&s) % 8);
        bool caching = rng_next(&s) % 4 != 0;
        sim m;
        sim_init(&m, bs, num_blocks, budget, seqs, max_len, caching);
        int32_t families[3][40];
        for (int f = 0; f < 3; f++)
            fill(families[f], 40, (int32_t)(seed * 3 + (uint64_t)f));
        int32_t n_total = 12 + (int32_t)(rng_next(&s) % 12);
        int32_t added = 0;
        while (added < n_total || m.s.n_running + m.s.n_waiting > 0) {
            while (added < n_total && rng_next(&s) % 3 == 0) {
                int32_t p[48];
                int32_t n = 1 + (int32_t)(rng_next(&s) % 40);
                int32_t shared = (int32_t)(rng_next(&s) % (uint64_t)(n + 1));
                memcpy(p, families[rng_next(&s) % 3], (size_t)shared * sizeof *p);
                fill(p + shared, n - shared, (int32_t)rng_next(&s) % 1000);
                int32_t max_out = 1 + (int32_t)(rng_next(&s) % (uint64_t)(max_len - n));
                sim_add(&m, p, n, max_out);
                added++;
            }
            if (m.n_reqs > 0 && rng_next(&s) % 40 == 0) { /* abort one, waiting or running */
                kvs_request *r = m.reqs[rng_next(&s) % (uint64_t)m.n_reqs];
                if (!m.done[r->id] && !m.removed[r->id])
                    sim_remove(&m, r);
            }
            if (m.s.n_running + m.s.n_waiting > 0)
                assert_true(sim_step(&m) > 0);
            else
                sim_check(&m);
            assert_true(m.steps < 20000);
        }
        assert_outputs_right(&m);
        total_preemptions += m.s.n_preemptions;
        total_hits += m.s.prefix_hits;
        sim_destroy(&m);
    }
    assert_true(total_preemptions > 50); /* the mixes did squeeze the cache */
    assert_true(total_hits > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_chunks_and_order),
        cmocka_unit_test(test_seq_cap_fcfs_ring),
        cmocka_unit_test(test_preemption_order),
        cmocka_unit_test(test_self_preemption),
        cmocka_unit_test(test_prefix_hits),
        cmocka_unit_test(test_n_cached_survives_preemption),
        cmocka_unit_test(test_random_mixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
