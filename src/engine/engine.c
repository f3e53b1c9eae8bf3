#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv_cache.h"
#include "engine/logits_proc.h"
#include "grammar/gpool.h"
#include "grammar/matcher.h"
#include "engine/scheduler.h"
#include "memory/host.h"

struct kvs_engine {
    kvs_engine_config cfg;
    kvs_model_model *model;
    const kvs_tokenizer *tok;
    kvs_runner *runner;
    bool owns_runner;
    kvs_kv_cache *kv;
    kvs_scheduler sched;
    kvs_sampler sampler;
    kvs_gvocab *gvocab;          /* token trie for structured output, made at the first request that has one */
    uint64_t seed_counter;       /* seeds requests that bring none */

    kvs_request **all;           /* live requests (not yet reported finished) */
    int32_t n_all, cap_all;      /* cap_all = max_requests sizes all, graveyard and outs */
    kvs_request **graveyard;     /* reported finished last step: freed at the next */
    int32_t n_grave;

    /* the request pool: cap_all slots, their buffers in one allocation */
    kvs_request *slots;
    int32_t *free_slot;          /* stack of free slot indices */
    int32_t n_free, high_water;
    unsigned char *slot_mem;
    size_t slot_bytes, text_cap;
    uint64_t n_failed;           /* requests ended by a broken invariant */
    uint64_t n_trimmed;          /* plan entries the check cut short or deferred */
    kvs_plan_verdict *verdicts;  /* [max_num_seqs]: the step's plan check */

    /* step buffers, sized once */
    int32_t *b_tokens, *b_pos, *b_seq, *b_tables, *b_rows;
    kvs_output *outs;
    float *logits_copy;          /* [n_vocab] */
    kvs_prompt_logprob *plp;     /* [runner max_logits]: this step's prompt logprobs */
    char *piece;                 /* detokenizer output for one token */
    size_t piece_cap;

    uint64_t n_steps, prompt_tokens, gen_tokens;
    int32_t last_step_tokens;
};

const char *kvs_finish_reason_name(kvs_finish_reason r)
{
    switch (r) {
    case KVS_FINISH_LENGTH: return "length";
    case KVS_FINISH_STOP: return "stop";
    case KVS_FINISH_ABORT: return "abort";
    case KVS_FINISH_NONE: break;
    }
    return NULL;
}

int32_t kvs_engine_default_max_requests(int32_t max_num_seqs)
{
    int64_t n = (int64_t)max_num_seqs + 64;
    return n > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)n;
}

/* The buffers of one request slot, each rounded to 16 bytes. */
typedef struct slot_layout {
    size_t tokens, blocks, text, stop, total;
} slot_layout;

static size_t round16(size_t x) { return (x + 15) & ~(size_t)15; }

/* The text window: the max_stop_len bytes before what is unreported, what
 * is held back (under max_stop_len, plus a split UTF-8 character), one
 * token's piece and the detokenizer's flush. */
static size_t text_window_bytes(size_t max_token_bytes)
{
    return 2 * KVS_MAX_STOP_BYTES + 4 + (max_token_bytes + 16) + 16 + 1;
}

static slot_layout layout_for(int32_t max_model_len, int32_t max_blocks, size_t max_token_bytes)
{
    slot_layout l;
    l.tokens = round16((size_t)max_model_len * 4);
    l.blocks = round16((size_t)max_blocks * 4);
    l.text = round16(text_window_bytes(max_token_bytes));
    l.stop = round16(KVS_MAX_STOP_BYTES + KVS_MAX_STOP_STRINGS);
    l.total = l.tokens + l.blocks + l.text + l.stop;
    return l;
}

static int32_t max_requests_of(const kvs_engine_config *cfg)
{
    return cfg->max_requests > 0 ? cfg->max_requests : kvs_engine_default_max_requests(cfg->max_num_seqs);
}

static int32_t blocks_of(const kvs_engine_config *cfg)
{
    return (int32_t)(((int64_t)cfg->max_model_len + cfg->block_size - 1) / cfg->block_size);
}

uint64_t kvs_engine_request_pool_bytes(const kvs_engine_config *cfg, size_t max_token_bytes)
{
    uint64_t R = (uint64_t)max_requests_of(cfg);
    slot_layout l = layout_for(cfg->max_model_len, blocks_of(cfg), max_token_bytes);
    /* the slots' buffers, the kvs_request structs, the free list, and the
     * all / graveyard / outs lists */
    return R * (l.total + sizeof(kvs_request) + 4 + 2 * sizeof(kvs_request *) + sizeof(kvs_output));
}

kvs_request_params kvs_request_defaults(void)
{
    return (kvs_request_params){.sampling = kvs_sampling_defaults(), .max_tokens = 16, .logprobs = -1};
}

/* Give a request's slot back to the pool. */
static void request_release(kvs_engine *e, kvs_request *r)
{
    if (!r)
        return;
    kvs_gmatcher_free(r->gm);
    r->gm = NULL;
    e->free_slot[e->n_free++] = r->slot;
}

kvs_status kvs_engine_new(kvs_engine **out, kvs_model_model *model, const kvs_tokenizer *tok,
                          kvs_runner *runner, const kvs_engine_config *cfg, kvs_error *err)
{
    *out = NULL;
    if (cfg->max_num_seqs < 1 || cfg->max_num_batched_tokens < 1 || cfg->max_model_len < 1 ||
        cfg->block_size < 1 || cfg->num_blocks < 0)
        return kvs_fail(err, KVS_E_INVALID, "engine limits must be positive");
    kvs_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    kvs_status st;
    e->cfg = *cfg;
    e->model = model;
    e->tok = tok;
    e->runner = runner;
    if (runner && runner->lim.block_size != cfg->block_size) { /* its block tables address other blocks */
        st = kvs_fail(err, KVS_E_INVALID, "the runner was profiled for KV blocks of %d tokens, the engine has %d",
                      runner->lim.block_size, cfg->block_size);
        goto fail;
    }
    if (!runner) {
        kvs_runner_limits lim = {cfg->max_num_batched_tokens, cfg->max_num_seqs, cfg->max_model_len,
                                 cfg->block_size};
        if ((st = kvs_runner_new(&e->runner, model, &lim, err)) != KVS_OK)
            goto fail;
        e->owns_runner = true;
        if ((st = kvs_runner_profile(e->runner, cfg->kv_dtype, err)) != KVS_OK)
            goto fail;
    }
    if ((st = kvs_sampler_init(&e->sampler, model->hp.n_vocab, err)) != KVS_OK)
        goto fail;
    e->cfg.max_requests = max_requests_of(cfg);
    int32_t T = cfg->max_num_batched_tokens, S = cfg->max_num_seqs;
    e->b_tokens = calloc((size_t)T, 4);
    e->b_pos = calloc((size_t)T, 4);
    e->b_seq = calloc((size_t)T, 4);
    e->b_rows = calloc((size_t)S, 4);
    e->verdicts = calloc((size_t)S, sizeof *e->verdicts);
    e->logits_copy = calloc((size_t)model->hp.n_vocab, 4);
    e->plp = calloc((size_t)e->runner->max_logits, sizeof *e->plp);
    e->piece_cap = kvs_tok_max_token_bytes(tok) + 16;
    e->piece = malloc(e->piece_cap);
    /* The runner's block tables are sized for its profiled length. */
    e->b_tables = calloc((size_t)S * (size_t)e->runner->max_blocks, 4);
    e->cap_all = e->cfg.max_requests;
    e->all = malloc((size_t)e->cap_all * sizeof *e->all);
    e->graveyard = malloc((size_t)e->cap_all * sizeof *e->graveyard);
    e->outs = malloc((size_t)e->cap_all * sizeof *e->outs);
    /* The request pool: the profiled length and the runner's block-table width. */
    slot_layout sl = layout_for(cfg->max_model_len, e->runner->max_blocks, e->piece_cap - 16);
    e->slot_bytes = sl.total;
    e->text_cap = sl.text;
    e->slots = calloc((size_t)e->cap_all, sizeof *e->slots);
    e->free_slot = malloc((size_t)e->cap_all * sizeof *e->free_slot);
    e->slot_mem = malloc((size_t)e->cap_all * sl.total);
    if (!e->b_tokens || !e->b_pos || !e->b_seq || !e->b_rows || !e->verdicts || !e->logits_copy || !e->plp || !e->piece || !e->b_tables ||
        !e->all || !e->graveyard || !e->outs || !e->slots || !e->free_slot || !e->slot_mem) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    /* Resident first (kvs_host_touch writes a zero into each page), then filled. */
    kvs_host_touch(e->slot_mem, (size_t)e->cap_all * sl.total);
    kvs_host_touch(e->slots, (size_t)e->cap_all * sizeof *e->slots);
    kvs_host_touch(e->free_slot, (size_t)e->cap_all * sizeof *e->free_slot);
    for (int32_t i = 0; i < e->cap_all; i++) {
        unsigned char *m = e->slot_mem + (size_t)i * sl.total;
        kvs_request *r = &e->slots[i];
        r->slot = i;
        r->tokens = (int32_t *)m;
        r->blocks = (int32_t *)(m + sl.tokens);
        r->text = (char *)(m + sl.tokens + sl.blocks);
        r->stop_chars = (char *)(m + sl.tokens + sl.blocks + sl.text);
        e->free_slot[i] = e->cap_all - 1 - i; /* slot 0 first */
    }
    e->n_free = e->cap_all;
    kvs_host_touch(e->all, (size_t)e->cap_all * sizeof *e->all);
    kvs_host_touch(e->graveyard, (size_t)e->cap_all * sizeof *e->graveyard);
    kvs_host_touch(e->outs, (size_t)e->cap_all * sizeof *e->outs);
    /* Make the host buffers resident now (see kvs_engine_host_bytes). */
    kvs_host_touch(e->b_tokens, (size_t)T * 4);
    kvs_host_touch(e->b_pos, (size_t)T * 4);
    kvs_host_touch(e->b_seq, (size_t)T * 4);
    kvs_host_touch(e->b_rows, (size_t)S * 4);
    kvs_host_touch(e->verdicts, (size_t)S * sizeof *e->verdicts);
    kvs_host_touch(e->logits_copy, (size_t)model->hp.n_vocab * 4);
    kvs_host_touch(e->plp, (size_t)kvs_plp_host_bytes(e->runner->max_logits));
    kvs_host_touch(e->b_tables, (size_t)S * (size_t)e->runner->max_blocks * 4);
    kvs_sampler_touch(&e->sampler);
    if (cfg->num_blocks > 0 && (st = kvs_engine_set_cache(e, cfg->num_blocks, cfg->max_model_len, err)) != KVS_OK)
        goto fail;
    *out = e;
    return KVS_OK;
fail:
    kvs_engine_free(e);
    return st;
}

kvs_status kvs_engine_set_cache(kvs_engine *e, int32_t num_blocks, int32_t max_model_len, kvs_error *err)
{
    if (e->kv)
        return kvs_fail(err, KVS_E_INVALID, "the engine already has a KV cache");
    if (num_blocks < 1 || max_model_len < 1)
        return kvs_fail(err, KVS_E_INVALID, "the KV cache needs at least one block");
    if (max_model_len > e->runner->lim.max_model_len)
        return kvs_fail(err, KVS_E_INVALID, "max_model_len %d exceeds the profiled %d", max_model_len,
                        e->runner->lim.max_model_len);
    /* All or nothing: on failure the engine is left without a cache, as
     * before, rather than with a cache over a half-made scheduler. */
    kvs_engine_config cfg = e->cfg;
    cfg.num_blocks = num_blocks;
    cfg.max_model_len = max_model_len;
    kvs_status st = kvs_kv_cache_new(&e->kv, e->model->backend, &e->model->hp, num_blocks, cfg.block_size,
                                     cfg.kv_dtype, err);
    if (st != KVS_OK)
        return st;
    if ((st = kvs_sched_init(&e->sched, &cfg, err)) != KVS_OK) {
        kvs_sched_destroy(&e->sched);
        kvs_kv_cache_free(e->kv);
        e->kv = NULL;
        return st;
    }
    e->cfg = cfg;
    return KVS_OK;
}

void kvs_engine_free(kvs_engine *e)
{
    if (!e)
        return;
    for (int32_t i = 0; i < e->n_all; i++) /* live and unreleased requests' matchers */
        request_release(e, e->all[i]);
    kvs_engine_release_finished(e);
    kvs_sched_destroy(&e->sched);
    kvs_sampler_destroy(&e->sampler);
    kvs_gvocab_free(e->gvocab);
    kvs_kv_cache_free(e->kv);
    if (e->owns_runner)
        kvs_runner_free(e->runner);
    free(e->b_tokens);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_tables);
    free(e->b_rows);
    free(e->verdicts);
    free(e->logits_copy);
    free(e->plp);
    free(e->piece);
    free(e->all);
    free(e->graveyard);
    free(e->outs);
    free(e->slots);
    free(e->free_slot);
    free(e->slot_mem);
    free(e);
}

uint64_t kvs_engine_host_bytes(const kvs_model_hparams *hp, const kvs_engine_config *cfg, size_t max_token_bytes)
{
    uint64_t T = (uint64_t)cfg->max_num_batched_tokens, S = (uint64_t)cfg->max_num_seqs, V = (uint64_t)hp->n_vocab;
    uint64_t max_blocks = (uint64_t)blocks_of(cfg);
    return 12 * T + 4 * S + S * sizeof(kvs_plan_verdict) + 4 * V + 4 * S * max_blocks + kvs_sampler_host_bytes(hp->n_vocab) +
           (max_token_bytes + 16) + kvs_engine_request_pool_bytes(cfg, max_token_bytes) +
           kvs_plp_host_bytes(cfg->max_num_seqs < cfg->max_num_batched_tokens ? cfg->max_num_seqs
                                                                              : cfg->max_num_batched_tokens);
}

int32_t kvs_engine_free_slots(const kvs_engine *e) { return e->n_free; }

void kvs_engine_pause(kvs_engine *e, bool (*paused)(void *ctx, uint64_t id), void *ctx)
{
    for (int32_t i = 0; i < e->n_all; i++)
        e->all[i]->paused = paused(ctx, e->all[i]->id);
}

const kvs_engine_config *kvs_engine_get_config(const kvs_engine *e) { return &e->cfg; }

bool kvs_engine_has_work(const kvs_engine *e) { return e->n_all > 0; }

/* Check the stop lists against the slot's room (before taking a slot). */
static kvs_status check_stops(const kvs_request_params *p, kvs_error *err)
{
    if ((p->n_stop && !p->stop) || (p->n_stop_token_ids && !p->stop_token_ids))
        return kvs_fail(err, KVS_E_INVALID, "stop lists with a count need their arrays");
    if (p->n_stop > KVS_MAX_STOP_STRINGS)
        return kvs_fail(err, KVS_E_INVALID, "at most %d stop strings are supported, got %zu", KVS_MAX_STOP_STRINGS,
                        p->n_stop);
    if (p->n_stop_token_ids > KVS_MAX_STOP_TOKEN_IDS)
        return kvs_fail(err, KVS_E_INVALID, "at most %d stop_token_ids are supported, got %zu",
                        KVS_MAX_STOP_TOKEN_IDS, p->n_stop_token_ids);
    size_t total = 0;
    for (size_t i = 0; i < p->n_stop; i++) {
        size_t n = p->stop[i] ? (p->stop_len ? p->stop_len[i] : strlen(p->stop[i])) : 0;
        if (n == 0)
            return kvs_fail(err, KVS_E_INVALID, "stop strings must not be empty");
        total += n;
        if (total > KVS_MAX_STOP_BYTES)
            return kvs_fail(err, KVS_E_INVALID, "the stop strings may hold at most %d bytes together",
                            KVS_MAX_STOP_BYTES);
    }
    return KVS_OK;
}

/* Copy the parameters and stop lists (checked) into the slot. */
static void copy_params(kvs_request *r, const kvs_request_params *p)
{
    r->params = *p;
    r->params.stop = NULL;
    r->params.stop_token_ids = NULL;
    r->max_stop_len = 0;
    char *dst = r->stop_chars;
    for (size_t i = 0; i < p->n_stop; i++) {
        size_t n = p->stop_len ? p->stop_len[i] : strlen(p->stop[i]);
        memcpy(dst, p->stop[i], n);
        dst[n] = '\0';
        r->stop[i] = dst;
        r->stop_len[i] = n;
        dst += n + 1;
        if (n > r->max_stop_len)
            r->max_stop_len = n;
    }
    r->params.stop_len = NULL;
    r->params.logit_bias = NULL;
    if (p->n_logit_bias)
        memcpy(r->logit_bias, p->logit_bias, p->n_logit_bias * sizeof *r->logit_bias);
    if (p->n_stop_token_ids)
        memcpy(r->stop_ids, p->stop_token_ids, p->n_stop_token_ids * sizeof *r->stop_ids);
}

kvs_status kvs_engine_add(kvs_engine *e, uint64_t id, const int32_t *prompt, size_t n_prompt,
                          const kvs_request_params *p, kvs_error *err)
{
    if (!e->kv)
        return kvs_fail(err, KVS_E_INVALID, "the engine has no KV cache yet");
    const int32_t L = e->cfg.max_model_len, V = e->model->hp.n_vocab;
    if (n_prompt == 0)
        return kvs_fail(err, KVS_E_INVALID, "the prompt is empty");
    if (n_prompt >= (size_t)L)
        return kvs_fail(err, KVS_E_INVALID,
                        "the prompt has %zu tokens; max_model_len is %d (prompt + output)", n_prompt, L);
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return kvs_fail(err, KVS_E_INVALID, "prompt token %d at index %zu is outside the vocabulary (%d)",
                            prompt[i], i, V);
    if (p->logprobs > KVS_MAX_LOGPROBS)
        return kvs_fail(err, KVS_E_INVALID, "logprobs must be at most %d", KVS_MAX_LOGPROBS);
    kvs_status st = kvs_sampling_validate(&p->sampling, err);
    if (st == KVS_OK)
        st = kvs_lproc_validate(p, V, err);
    if (st != KVS_OK || (st = check_stops(p, err)) != KVS_OK)
        return st;
    int32_t total = p->max_tokens > 0 && (int64_t)n_prompt + p->max_tokens < L ? (int32_t)n_prompt + p->max_tokens : L;
    int32_t need = kvs_sched_blocks_for(&e->sched, total);
    if (need > e->cfg.num_blocks)
        return kvs_fail(err, KVS_E_BUDGET,
                        "the request needs %d KV blocks (%d tokens) but the cache has %d blocks (%d tokens)",
                        need, total, e->cfg.num_blocks, e->cfg.num_blocks * e->cfg.block_size);
    if (e->n_free == 0)
        return kvs_fail(err, KVS_E_BUDGET, "all %d request slots are in use (--max-num-seqs %d running, the rest "
                        "waiting)", e->cap_all, e->cfg.max_num_seqs);

    kvs_request *r = &e->slots[e->free_slot[e->n_free - 1]];
    int32_t *tokens = r->tokens, *blocks = r->blocks, slot = r->slot;
    char *text = r->text, *stop_chars = r->stop_chars;
    memset(r, 0, sizeof *r);
    r->slot = slot;
    r->tokens = tokens;
    r->blocks = blocks;
    r->text = text;
    r->stop_chars = stop_chars;
    r->text_cap = e->text_cap;
    r->id = id;
    r->cap = total;
    copy_params(r, p);
    memcpy(r->tokens, prompt, n_prompt * 4);
    r->n_prompt = r->n_tokens = (int32_t)n_prompt;
    r->stop_string = r->stop_token = -1;
    r->plp_next = 1;
    kvs_rng_seed(&r->rng, p->sampling.has_seed ? p->sampling.seed : 0x5eed0000ull + e->seed_counter++);
    kvs_tok_stream_init(&r->stream, p->strip_leading_space && kvs_tok_strip_leading_space(e->tok));
    r->params.grammar = NULL; /* the matcher holds the request's reference */
    /* A grammar from the structured-output reserve (grammar/gpool.h) brings
     * its request's matchers; any other (a library caller's) gets one made
     * here, with a trie built at the first such request. */
    if (p->grammar && kvs_gpool_owns(p->grammar)) {
        st = kvs_gpool_matcher(p->grammar, r->stream.strip_leading_space, &r->gm, err);
    } else if (p->grammar) {
        st = e->gvocab ? KVS_OK : kvs_gvocab_new(&e->gvocab, e->tok, err);
        if (st == KVS_OK)
            st = kvs_gmatcher_new(&r->gm, p->grammar, e->gvocab, r->stream.strip_leading_space, NULL, err);
    }
    if (st != KVS_OK) {
        kvs_gmatcher_free(r->gm); /* the slot stays free */
        r->gm = NULL;
        return st;
    }
    if ((st = kvs_sched_add(&e->sched, r, err)) != KVS_OK) {
        kvs_gmatcher_free(r->gm);
        r->gm = NULL;
        return st;
    }
    e->n_free--;
    e->all[e->n_all++] = r;
    int32_t used = e->cap_all - e->n_free;
    if (used > e->high_water)
        e->high_water = used;
    return KVS_OK;
}

void kvs_engine_abort(kvs_engine *e, uint64_t id)
{
    for (int32_t i = 0; i < e->n_all; i++) {
        kvs_request *r = e->all[i];
        if (r->id == id && r->state != KVS_REQ_FINISHED) {
            kvs_sched_remove(&e->sched, r);
            r->aborted = true;
            r->reason = KVS_FINISH_ABORT;
        }
    }
}

/* ---- one step ---- */

/* End r for a broken invariant: its blocks are freed, it is reported once
 * (token -1, reason abort, with `error` set to why), and counted. */
static void fail_request(kvs_engine *e, kvs_request *r, const kvs_plan_verdict *v)
{
    if (r->aborted) /* planned twice: it ended at the first */
        return;
    kvs_sched_remove(&e->sched, r);
    r->aborted = true;
    r->reason = KVS_FINISH_ABORT;
    int n = snprintf(r->error_text, sizeof r->error_text, "internal error: ");
    kvs_plan_verdict_format(v, r->error_text + n, sizeof r->error_text - (size_t)n);
    r->error = r->error_text;
    e->n_failed++;
}

/* The scheduler must never plan a step larger than the profiled shape (the
 * activation arena is sized for it) or a request past its own buffers; if
 * it ever does, kvs_sched_check_plan (scheduler.h) says which entries run,
 * which are cut short or wait, and which requests must end: those end
 * here, and the rest of the step runs. */
static void check_plan(kvs_engine *e)
{
    kvs_scheduler *s = &e->sched;
    const kvs_runner_limits *rl = &e->runner->lim;
    const kvs_plan_limits lim = {.max_seqs = rl->max_seqs, .max_tokens = rl->max_tokens,
                                 .max_model_len = rl->max_model_len, .max_blocks = e->runner->max_blocks,
                                 .block_size = e->cfg.block_size};
    int32_t n = s->n_plan;
    s->n_plan = kvs_sched_check_plan(s->plan, n, &lim, e->verdicts);
    for (int32_t i = 0; i < n; i++) {
        const kvs_plan_verdict *v = &e->verdicts[i];
        if (v->action == KVS_PLAN_FAIL)
            fail_request(e, v->req, v);
        else if (v->action != KVS_PLAN_RUN)
            e->n_trimmed++;
    }
}

static int32_t build_batch(kvs_engine *e, kvs_batch *bt)
{
    const kvs_scheduler *s = &e->sched;
    int32_t n = 0, n_rows = 0;
    for (int32_t i = 0; i < s->n_plan; i++) {
        const kvs_sched_entry *pe = &s->plan[i];
        const kvs_request *r = pe->req;
        for (int32_t j = 0; j < pe->n_new; j++) {
            e->b_tokens[n] = r->tokens[r->n_computed + j];
            e->b_pos[n] = r->n_computed + j;
            e->b_seq[n] = i;
            n++;
        }
        const int32_t mb = e->runner->max_blocks;
        int32_t *row = e->b_tables + (int64_t)i * mb;
        memcpy(row, r->blocks, (size_t)r->n_blocks * 4);
        for (int32_t j = r->n_blocks; j < mb; j++)
            row[j] = KVS_NO_BLOCK;
        int32_t first, n_plp = kvs_plp_rows(r, r->n_computed, pe->n_new, &first); /* prompt-logprob rows first */
        for (int32_t j = 0; j < n_plp; j++)
            e->b_rows[n_rows++] = n - pe->n_new + (first - r->n_computed) + j;
        if (pe->sample)
            e->b_rows[n_rows++] = n - 1;
    }
    *bt = (kvs_batch){n, s->n_plan, e->b_tokens, e->b_pos, e->b_seq, e->b_tables, n_rows, e->b_rows};
    return n;
}

/* Drop the reported text that no stop string can still reach: keep the
 * max_stop_len bytes before text_sent.  Runs before a step appends, when
 * the previous step's outputs (which point into the window) are spent. */
static void text_compact(kvs_request *r)
{
    size_t keep = r->text_sent < r->max_stop_len ? r->text_sent : r->max_stop_len;
    size_t d = r->text_sent - keep;
    if (d == 0)
        return;
    memmove(r->text, r->text + d, r->text_len - d);
    r->text_len -= d;
    r->text_sent -= d;
    r->text[r->text_len] = '\0';
}

/* False when the window has no room (it is sized so that it always has). */
static bool text_append(kvs_request *r, const char *s, size_t n)
{
    if (r->text_len + n + 1 > r->text_cap)
        return false;
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = '\0';
    return true;
}

static bool is_stop_token(const kvs_engine *e, const kvs_request *r, int32_t tok)
{
    if (!r->params.ignore_eos && kvs_tok_is_eog(e->tok, tok))
        return true;
    for (size_t i = 0; i < r->params.n_stop_token_ids; i++)
        if (r->stop_ids[i] == tok)
            return true;
    return false;
}

/* The earliest stop string occurrence that ends in text[old_len..): only
 * those are new (the text before was searched when it came). */
static const char *find_stop_string(const kvs_request *r, size_t old_len, int32_t *which)
{
    const char *best = NULL;
    for (size_t i = 0; i < r->params.n_stop; i++) {
        size_t m = r->stop_len[i];
        size_t from = old_len + 1 > m ? old_len + 1 - m : 0;
        if (from + m > r->text_len)
            continue;
        const char *hit = memmem(r->text + from, r->text_len - from, r->stop[i], m);
        if (hit && (!best || hit < best)) {
            best = hit;
            *which = (int32_t)i;
        }
    }
    return best;
}

/* Bytes at the end of the text that must wait: the longest suffix that is
 * a proper prefix of a stop string (it could still become one). */
static size_t stop_holdback(const kvs_request *r)
{
    size_t hold = 0;
    for (size_t i = 0; i < r->params.n_stop; i++) {
        const char *stop = r->stop[i];
        size_t m = r->stop_len[i];
        for (size_t k = m - 1 < r->text_len ? m - 1 : r->text_len; k > hold; k--) {
            const char *tail = r->text + r->text_len - k;
            if (tail[0] == stop[0] && memcmp(tail, stop, k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

/* Append a sampled token and decide whether the request is done, in vLLM's
 * order: the length limits (max_tokens, max_model_len) first, then EOS and
 * stop token ids (whose text is not output), then stop strings in the new
 * text (a stop string wins over a length limit; the text is cut where the
 * stop string starts and the stop string is not output).  False when the
 * text cannot grow (out of memory). */
static bool accept_token(kvs_engine *e, kvs_request *r, int32_t tok)
{
    text_compact(r);
    r->tokens[r->n_tokens++] = tok;
    int32_t n_out = r->n_tokens - r->n_prompt;
    bool stop_token = false;
    if ((r->params.max_tokens > 0 && n_out >= r->params.max_tokens) || r->n_tokens >= e->cfg.max_model_len) {
        r->reason = KVS_FINISH_LENGTH;
    } else if (n_out >= r->params.min_tokens && is_stop_token(e, r, tok)) {
        r->reason = KVS_FINISH_STOP;
        stop_token = true;
        r->stop_token = tok == kvs_tok_eos(e->tok) ? -1 : tok; /* vLLM: null for EOS, else the id */
    }
    if (r->gm && !stop_token) /* structured output: a complete sentence stops (and wins over length) */
        r->reason = !kvs_gmatcher_accept_token(r->gm, tok) ? KVS_FINISH_ABORT
                    : kvs_gmatcher_done(r->gm)             ? KVS_FINISH_STOP
                                                           : r->reason;
    size_t old_len = r->text_len;
    if (!stop_token) {
        size_t np = kvs_tok_stream_push(e->tok, &r->stream, tok, e->piece, e->piece_cap);
        if (!text_append(r, e->piece, np))
            return false;
    }
    if (r->reason != KVS_FINISH_NONE) { /* an incomplete character at the end becomes U+FFFD */
        char tail[16];
        size_t nt = kvs_tok_stream_flush(&r->stream, tail, sizeof tail);
        if (!text_append(r, tail, nt))
            return false;
    }
    if (r->params.n_stop > 0 && r->text_len > old_len && n_out > r->params.min_tokens) {
        int32_t which = -1;
        const char *hit = find_stop_string(r, old_len, &which);
        if (hit) {
            r->text_len = (size_t)(hit - r->text);
            r->text[r->text_len] = '\0';
            r->reason = KVS_FINISH_STOP;
            r->stop_string_hit = true;
            r->stop_string = which;
            r->stop_token = -1;
        }
    }
    return true;
}

/* Report what r's last step produced: the text that can no longer be part
 * of a stop string (all of it once finished). */
static void emit(kvs_engine *e, size_t *n_outs, kvs_request *r, int32_t tok)
{
    bool done = r->reason != KVS_FINISH_NONE;
    size_t upto = r->text_len;
    if (!done && r->params.n_stop > 0) {
        upto -= stop_holdback(r);
        /* never split a UTF-8 character when holding back */
        while (upto > r->text_sent && ((unsigned char)r->text[upto] & 0xC0) == 0x80)
            upto--;
    }
    if (upto < r->text_sent)
        upto = r->text_sent;
    bool sampled = tok >= 0;
    kvs_output *o = &e->outs[(*n_outs)++];
    *o = (kvs_output){
        .id = r->id, .token = tok, .text = r->text + r->text_sent, .text_len = upto - r->text_sent,
        .logprob = sampled ? r->logprob : 0.0f, .n_top = sampled ? r->n_top : 0, .top_ids = r->top_ids,
        .top_logprobs = r->top_logprobs, .finished = done, .reason = r->reason, .n_prompt_tokens = r->n_prompt,
        .n_output_tokens = r->n_tokens - r->n_prompt, .n_cached_tokens = r->n_cached > 0 ? r->n_cached : 0,
        .stop_string = done ? r->stop_string : -1, .stop_token = done ? r->stop_token : -1,
        .error = r->error,
    };
    r->text_sent = upto;
}

/* Move reported-finished requests to the graveyard (freed next step). */
static void reap(kvs_engine *e)
{
    int32_t k = 0;
    for (int32_t i = 0; i < e->n_all; i++) {
        kvs_request *r = e->all[i];
        if (r->reason != KVS_FINISH_NONE) {
            /* its matcher goes back now, not at the next step (which an idle
             * engine may not take): the structured-output slot is free as
             * soon as the request's handler lets its grammar go */
            kvs_gmatcher_free(r->gm);
            r->gm = NULL;
            e->graveyard[e->n_grave++] = r;
        } else
            e->all[k++] = r;
    }
    e->n_all = k;
}

void kvs_engine_release_finished(kvs_engine *e)
{
    for (int32_t i = 0; i < e->n_grave; i++)
        request_release(e, e->graveyard[i]);
    e->n_grave = 0;
}

kvs_status kvs_engine_step(kvs_engine *e, const kvs_output **outs, size_t *n_outs, kvs_error *err)
{
    kvs_engine_release_finished(e);
    *n_outs = 0;
    *outs = e->outs;
    if (!e->kv)
        return kvs_fail(err, KVS_E_INVALID, "the engine has no KV cache yet");

    kvs_scheduler *s = &e->sched;
    const int32_t V = e->model->hp.n_vocab;
    kvs_sched_schedule(s);
    check_plan(e);
    kvs_plp_fit_plan(s, e->runner->max_logits, KVS_PLP_MAX_PER_STEP);
    e->last_step_tokens = 0;
    if (s->n_plan > 0) {
        kvs_batch bt;
        build_batch(e, &bt);
        /* On failure nothing is reported (aborts come with the next step)
         * and no computed count moved: the next step computes the same
         * tokens again. */
        kvs_status st = kvs_runner_forward(e->runner, &bt, e->kv->views, err);
        if (st != KVS_OK)
            return st;
    }
    /* Aborted requests are reported once, first. */
    for (int32_t i = 0; i < e->n_all; i++)
        if (e->all[i]->aborted)
            emit(e, n_outs, e->all[i], -1);
    if (s->n_plan > 0) {
        kvs_sched_update(s);
        e->n_steps++;
        int32_t row = 0, n_plp_out = 0;
        for (int32_t i = 0; i < s->n_plan; i++) {
            kvs_request *r = s->plan[i].req;
            int32_t after = r->n_computed, before = after - s->plan[i].n_new;
            kvs_prompt_logprob *plp = e->plp + n_plp_out;
            int32_t first, n_plp = kvs_plp_rows(r, before, s->plan[i].n_new, &first);
            kvs_plp_compute(&e->sampler, r, e->runner->logits + (int64_t)row * V, first, n_plp, V, plp);
            row += n_plp;
            n_plp_out += n_plp;
            if (n_plp > 0 && !s->plan[i].sample) { /* a prefill chunk: report its prompt logprobs */
                emit(e, n_outs, r, -1);
                e->outs[*n_outs - 1].prompt_lp = plp;
                e->outs[*n_outs - 1].n_prompt_lp = n_plp;
            }
            e->last_step_tokens += s->plan[i].n_new;
            e->prompt_tokens += (uint64_t)((after < r->n_prompt ? after : r->n_prompt) -
                                           (before < r->n_prompt ? before : r->n_prompt));
            if (!s->plan[i].sample)
                continue;
            float *logits = e->runner->logits + (int64_t)row++ * V;
            int32_t out_prefix = r->n_tokens - r->n_prompt;
            const float *raw = logits;
            if (r->params.logprobs >= 0) { /* sample on a copy: logprobs are of the raw logits */
                memcpy(e->logits_copy, logits, (size_t)V * 4);
                logits = e->logits_copy;
            }
            if (r->gm && kvs_gmatcher_mask_logits(r->gm, logits, V) == 0) { /* the grammar has a dead end */
                r->reason = KVS_FINISH_ABORT;
                kvs_sched_remove(s, r);
                emit(e, n_outs, r, -1);
                e->outs[*n_outs - 1].prompt_lp = plp;
                e->outs[*n_outs - 1].n_prompt_lp = n_plp;
                continue;
            }
            kvs_lproc_apply(r, e->tok, logits, V);
            int32_t tok = kvs_sample(&e->sampler, &r->params.sampling, &r->rng, logits, r->tokens,
                                     (size_t)r->n_prompt, r->tokens + r->n_prompt, (size_t)out_prefix);
            r->n_top = r->params.logprobs > 0 ? (r->params.logprobs < V ? r->params.logprobs : V) : 0;
            if (r->params.logprobs >= 0)
                r->logprob = kvs_logprobs(&e->sampler, raw, tok, r->n_top, r->top_ids, r->top_logprobs);
            e->gen_tokens++;
            if (!accept_token(e, r, tok)) { /* the text window is sized so that this cannot happen */
                r->reason = KVS_FINISH_ABORT;
                r->error = "internal error: the output text passed its window";
                e->n_failed++;
            }
            if (r->reason != KVS_FINISH_NONE)
                kvs_sched_remove(s, r);
            emit(e, n_outs, r, tok);
            e->outs[*n_outs - 1].prompt_lp = plp;
            e->outs[*n_outs - 1].n_prompt_lp = n_plp;
        }
    }
    reap(e);
    return KVS_OK;
}

void kvs_engine_get_stats(const kvs_engine *e, kvs_engine_stats *st)
{
    const kvs_scheduler *s = &e->sched;
    if (!s->pool) { /* no KV cache yet */
        *st = (kvs_engine_stats){.n_steps = e->n_steps, .requests_cap = e->cap_all};
        return;
    }
    *st = (kvs_engine_stats){
        .n_running = s->n_running, .n_waiting = s->n_waiting,
        .kv_blocks_total = kvs_block_pool_n_blocks(s->pool),
        .kv_blocks_used = kvs_block_pool_n_blocks(s->pool) - kvs_block_pool_n_free(s->pool),
        .n_preemptions = s->n_preemptions, .n_steps = e->n_steps,
        .prompt_tokens_computed = e->prompt_tokens, .generation_tokens = e->gen_tokens,
        .prefix_queries = s->prefix_queries, .prefix_hits = s->prefix_hits,
        .last_step_tokens = e->last_step_tokens,
        .requests_live = e->cap_all - e->n_free, .requests_cap = e->cap_all, .requests_high_water = e->high_water,
        .n_failed_invariant = e->n_failed, .n_plan_trimmed = e->n_trimmed, .arena_high_water = e->runner->arena.high_water,
    };
}
