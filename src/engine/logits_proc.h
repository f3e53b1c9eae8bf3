/*
 * logits_proc.h - request-level changes to a row of logits before sampling
 * (vLLM's logits processors), and prompt logprobs.
 *
 * Before a request samples, in vLLM's order (these come before the
 * penalties and the temperature, which kvs_sample applies):
 *
 *   - min_tokens: while the request has fewer than min_tokens output
 *     tokens, every end-of-generation token of the vocabulary and every
 *     stop_token_id gets -inf, so none can be sampled (stop strings are
 *     not looked for either, see engine.h);
 *   - logit_bias: each listed token's logit gets its bias added.
 *
 * The reported logprobs stay those of the raw logits (vLLM's default).
 *
 * Prompt logprobs (vLLM's `prompt_logprobs`, what `echo` with `logprobs`
 * returns): the logprob of each prompt token i >= 1 given tokens 0..i-1,
 * with the top n of that distribution.  They need the logits of prompt
 * positions, which a step computes only for the rows it asks for, into the
 * runner's logits buffer of max_logits rows (sized at start-up).  So the
 * rows are shared out per step: after scheduling, kvs_plp_fit_plan()
 * shortens the prefill chunks of prompt-logprob requests until every logit
 * row of the step fits the buffer (each plan entry keeps at least one
 * row, so every request still advances; a cap per request per step can
 * match what its reader may have queued), and the entries computed in a
 * step go out with that step's output (kvs_output.prompt_lp; a prefill
 * step that samples nothing reports them with token -1) from a fixed array
 * of max_logits entries.  Memory does not grow with load or prompt length; a long prompt
 * just takes more steps.  A request with prompt logprobs does not read the
 * prefix cache for the positions it still has to report (as vLLM), and a
 * preempted one does not report a position twice.
 */
#ifndef KVS_ENGINE_LOGITS_PROC_H
#define KVS_ENGINE_LOGITS_PROC_H

#include "engine/request.h"
#include "engine/scheduler.h"
#include "tokenizer/tokenizer.h"

/* Most prompt logprobs one request reports in a step: with its token's
 * output, what its reader may have queued (the serving loop's per-choice
 * event quota, server/engine_loop.h, checked there).  A long prompt with
 * logprobs takes more steps; memory stays fixed. */
#define KVS_PLP_MAX_PER_STEP 3

/* Check p's logit_bias ids against the vocabulary and min_tokens against
 * max_tokens; KVS_E_INVALID naming the field otherwise. */
kvs_status kvs_lproc_validate(const kvs_request_params *p, int32_t n_vocab, kvs_error *err);

/* Apply min_tokens and logit_bias of r (with n_out output tokens so far)
 * to one row of n_vocab logits, in place. */
void kvs_lproc_apply(const kvs_request *r, const kvs_tokenizer *tok, float *logits, int32_t n_vocab);

/* Logit rows r needs for prompt logprobs in a step that computes n_new
 * tokens from position `from`: positions [*first, *first + result). */
int32_t kvs_plp_rows(const kvs_request *r, int32_t from, int32_t n_new, int32_t *first);

/* Shorten plan entries of prompt-logprob requests so that the step's logit
 * rows (these plus one per sampling entry) fit max_rows, and no request
 * reports more than max_per_request prompt logprobs in one step (>= 1; the
 * consumer's per-request room, e.g. events a reader may have queued).
 * Needs s->n_plan <= max_rows, which the runner's limits guarantee. */
void kvs_plp_fit_plan(kvs_scheduler *s, int32_t max_rows, int32_t max_per_request);

/* Compute the prompt logprobs of n_rows consecutive positions from `first`
 * (rows of n_vocab logits) into out[0..n_rows), and advance r->plp_next. */
void kvs_plp_compute(kvs_sampler *smp, kvs_request *r, const float *rows, int32_t first, int32_t n_rows,
                     int32_t n_vocab, kvs_prompt_logprob *out);

/* Host bytes of the prompt-logprob output array for max_rows rows. */
uint64_t kvs_plp_host_bytes(int32_t max_rows);

#endif
