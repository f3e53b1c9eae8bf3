#include "engine/logits_proc.h"

#include <math.h>

kvs_status kvs_lproc_validate(const kvs_request_params *p, int32_t n_vocab, kvs_error *err)
{
    if (p->n_logit_bias && !p->logit_bias)
        return kvs_fail(err, KVS_E_INVALID, "logit_bias with a count needs its array");
    if (p->n_logit_bias > KVS_MAX_LOGIT_BIAS)
        return kvs_fail(err, KVS_E_INVALID, "logit_bias may hold at most %d entries", KVS_MAX_LOGIT_BIAS);
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias[i].token < 0 || p->logit_bias[i].token >= n_vocab)
            return kvs_fail(err, KVS_E_INVALID, "logit_bias: token id %d is outside the vocabulary [0, %d)",
                            p->logit_bias[i].token, n_vocab);
        if (!isfinite(p->logit_bias[i].bias))
            return kvs_fail(err, KVS_E_INVALID, "logit_bias: the bias of token %d is not finite",
                            p->logit_bias[i].token);
    }
    if (p->min_tokens < 0)
        return kvs_fail(err, KVS_E_INVALID, "min_tokens must be >= 0, got %d", p->min_tokens);
    if (p->max_tokens > 0 && p->min_tokens > p->max_tokens)
        return kvs_fail(err, KVS_E_INVALID, "min_tokens (%d) must be at most max_tokens (%d)", p->min_tokens,
                        p->max_tokens);
    if (p->prompt_logprobs && (p->prompt_top_logprobs < 0 || p->prompt_top_logprobs > KVS_MAX_LOGPROBS))
        return kvs_fail(err, KVS_E_INVALID, "prompt_top_logprobs must be in [0, %d]", KVS_MAX_LOGPROBS);
    return KVS_OK;
}

void kvs_lproc_apply(const kvs_request *r, const kvs_tokenizer *tok, float *logits, int32_t n_vocab)
{
    const kvs_request_params *p = &r->params;
    if (r->n_tokens - r->n_prompt < p->min_tokens) {
        for (int32_t t = 0; t < n_vocab; t++)
            if (kvs_tok_is_eog(tok, t))
                logits[t] = -INFINITY;
        for (size_t i = 0; i < p->n_stop_token_ids; i++)
            if (r->stop_ids[i] >= 0 && r->stop_ids[i] < n_vocab)
                logits[r->stop_ids[i]] = -INFINITY;
    }
    for (size_t i = 0; i < p->n_logit_bias; i++)
        logits[r->logit_bias[i].token] += r->logit_bias[i].bias;
}

int32_t kvs_plp_rows(const kvs_request *r, int32_t from, int32_t n_new, int32_t *first)
{
    *first = 0;
    if (!r->params.prompt_logprobs)
        return 0;
    /* The logits at position q give the logprob of prompt token q + 1. */
    int32_t lo = from > r->plp_next - 1 ? from : r->plp_next - 1;
    int32_t hi = from + n_new < r->n_prompt - 1 ? from + n_new : r->n_prompt - 1;
    *first = lo;
    return hi > lo ? hi - lo : 0;
}

void kvs_plp_fit_plan(kvs_scheduler *s, int32_t max_rows, int32_t max_per_request)
{
    int32_t used = 0;
    for (int32_t i = 0; i < s->n_plan; i++) {
        kvs_sched_entry *pe = &s->plan[i];
        int32_t first, rows = kvs_plp_rows(pe->req, pe->req->n_computed, pe->n_new, &first);
        int32_t need = rows + (pe->sample ? 1 : 0);
        int32_t avail = max_rows - used - (s->n_plan - i - 1); /* one row kept for each entry after this */
        if (rows > max_per_request && avail > max_per_request)
            avail = max_per_request;
        if (need > avail) {
            /* Compute up to the last position whose row fits; a shorter
             * chunk does not complete the request's tokens, so it does not
             * sample this step.  avail >= 1 (n_plan <= max_rows). */
            pe->n_new = first + avail - pe->req->n_computed;
            pe->sample = false;
            need = avail;
        }
        used += need;
    }
}

void kvs_plp_compute(kvs_sampler *smp, kvs_request *r, const float *rows, int32_t first, int32_t n_rows,
                     int32_t n_vocab, kvs_prompt_logprob *out)
{
    int32_t n_top = r->params.prompt_top_logprobs < n_vocab ? r->params.prompt_top_logprobs : n_vocab;
    for (int32_t k = 0; k < n_rows; k++) {
        kvs_prompt_logprob *o = &out[k];
        o->index = first + k + 1;
        o->token = r->tokens[o->index];
        o->n_top = n_top;
        o->logprob = kvs_logprobs(smp, rows + (int64_t)k * n_vocab, o->token, n_top, o->top_ids, o->top_logprobs);
    }
    if (n_rows > 0)
        r->plp_next = first + n_rows + 1;
}

uint64_t kvs_plp_host_bytes(int32_t max_rows) { return (uint64_t)max_rows * sizeof(kvs_prompt_logprob); }
