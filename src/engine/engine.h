/*
 * engine.h - the inference engine: requests in, tokens and text out.
 *
 * The engine owns the model runner, the paged KV cache, the block pool and
 * the scheduler.  It is driven by one thread; each call to kvs_engine_step()
 * is one iteration of continuous batching:
 *
 *     plan  = schedule(waiting, running, token budget, free blocks)
 *     batch = the tokens each scheduled request computes this step
 *     forward(batch) over the paged KV cache
 *     sample a token for every request whose computed tokens caught up
 *     append, detokenize, check stop conditions, free finished requests
 *
 * There are no prefill and decode phases: a request has tokens (prompt,
 * then output) and a count of computed tokens, and each step lets the
 * computed count catch up by as much as the budget allows.  See
 * scheduler.h for how the budget is shared and when requests are
 * preempted.
 */
#ifndef KVS_ENGINE_ENGINE_H
#define KVS_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "model/runner.h"
#include "tokenizer/tokenizer.h"

typedef struct kvs_engine_config {
    int32_t max_num_seqs;            /* sequences per step */
    int32_t max_num_batched_tokens;  /* tokens per step */
    int32_t max_model_len;           /* prompt + output, per request */
    int32_t block_size;
    int32_t num_blocks;              /* KV blocks (from the memory budget) */
    kvs_dtype kv_dtype;
    bool prefix_caching;
    int32_t max_requests;            /* live requests (running + waiting): the request pool's
                                        slots; 0: kvs_engine_default_max_requests() */
} kvs_engine_config;

/* The request pool's slots when the config leaves it 0: room for
 * max_num_seqs running and 64 waiting (preempted or not yet admitted;
 * further submissions wait outside the engine, in the server's inbox). */
int32_t kvs_engine_default_max_requests(int32_t max_num_seqs);

/* Per-request limits that fix the size of a request slot. */
#define KVS_MAX_STOP_STRINGS 16      /* stop strings per request */
#define KVS_MAX_STOP_BYTES 512       /* their bytes together */
#define KVS_MAX_LOGIT_BIAS 300       /* logit_bias entries per request */
#define KVS_MAX_STOP_TOKEN_IDS 64    /* stop_token_ids per request */

typedef enum kvs_finish_reason {
    KVS_FINISH_NONE = 0,
    KVS_FINISH_LENGTH,   /* max_tokens or max_model_len */
    KVS_FINISH_STOP,     /* EOS, a stop token or a stop string */
    KVS_FINISH_ABORT,    /* aborted by the caller */
} kvs_finish_reason;

const char *kvs_finish_reason_name(kvs_finish_reason r);  /* "length", "stop", "abort" */

#define KVS_MAX_LOGPROBS 20

/* One logit_bias entry: bias is added to the token's logit before sampling. */
typedef struct kvs_logit_bias {
    int32_t token;
    float bias;
} kvs_logit_bias;

/* The logprob of prompt token `index` (>= 1) given the tokens before it,
 * and the top n of that distribution (raw logits, as for output tokens). */
typedef struct kvs_prompt_logprob {
    int32_t index;
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_ids[KVS_MAX_LOGPROBS];
    float top_logprobs[KVS_MAX_LOGPROBS];
} kvs_prompt_logprob;

/* How a request ends, in vLLM's order, checked after each sampled token:
 *   1. length: max_tokens output tokens, or max_model_len tokens in all;
 *   2. stop: EOS (unless ignore_eos) or one of stop_token_ids; the token
 *      is reported but its text is not part of the output;
 *   3. stop: a stop string in the text (this wins over 1): the text ends
 *      where the earliest new occurrence starts, the stop string itself
 *      is not output.
 * While a request runs, the text that could still turn out to begin a
 * stop string (the longest suffix that is a proper prefix of one) is held
 * back; outputs never split a UTF-8 character.  At the end an incomplete
 * character left in the detokenizer comes out as U+FFFD.
 * With min_tokens, 2 applies only from min_tokens output tokens on (the
 * logits processor also keeps those tokens from being sampled before) and
 * 3 only after more than min_tokens, as vLLM.  logit_bias, min_tokens and
 * prompt logprobs are described in logits_proc.h; a request with prompt
 * logprobs reports them in outputs with token -1 while its prompt is
 * computed (and with the first sampled token for the last chunk). */
struct kvs_grammar;

typedef struct kvs_request_params {
    kvs_sampling_params sampling;
    int32_t max_tokens;              /* output tokens; <= 0: until max_model_len */
    bool ignore_eos;
    const char *const *stop;         /* stop strings (copied) */
    size_t n_stop;
    const int32_t *stop_token_ids;   /* copied */
    size_t n_stop_token_ids;
    int32_t logprobs;                /* -1: none; 0..KVS_MAX_LOGPROBS: sampled + top n */
    bool strip_leading_space;        /* detokenize the first output token without its leading space */
    /* Added for the OpenAI / vLLM request fields (see logits_proc.h): */
    const size_t *stop_len;          /* byte lengths of stop[] (NULL: strlen), for strings holding NUL */
    int32_t min_tokens;              /* no EOS / stop token / stop string before this many output tokens */
    const kvs_logit_bias *logit_bias;  /* added to the logits before sampling (copied) */
    size_t n_logit_bias;
    bool prompt_logprobs;            /* report each prompt token's logprob (from the second) ... */
    int32_t prompt_top_logprobs;     /* ... with the top n (0..KVS_MAX_LOGPROBS) of its distribution */
    struct kvs_grammar *grammar;     /* structured output (grammar/matcher.h): only tokens that keep the output
                                        in this grammar are sampled, and the request stops when it is complete;
                                        NULL: none.  The request takes its own reference. */
} kvs_request_params;

kvs_request_params kvs_request_defaults(void);

/* What happened to one request in a step.  Pointers stay valid until the
 * next kvs_engine_step / kvs_engine_abort call. */
typedef struct kvs_output {
    uint64_t id;
    int32_t token;                   /* the new token, or -1 (abort, or a step with prompt logprobs only) */
    const char *text;                /* new text (may be empty while held back) */
    size_t text_len;
    float logprob;                   /* of the new token (when asked) */
    int32_t n_top;
    const int32_t *top_ids;
    const float *top_logprobs;
    bool finished;
    kvs_finish_reason reason;
    int32_t n_prompt_tokens;
    int32_t n_output_tokens;
    int32_t n_cached_tokens;         /* prompt tokens the prefix cache held at the first admission */
    int32_t stop_string;             /* finished on stop[stop_string], else -1 */
    int32_t stop_token;              /* finished on this stop token (not the vocabulary's EOS), else -1 */
    const kvs_prompt_logprob *prompt_lp;  /* prompt logprobs computed this step (in index order) */
    int32_t n_prompt_lp;
    const char *error;               /* NULL, or why the engine ended this request (a broken
                                        invariant, reason abort; under KVS_OUTPUT_ERROR_BYTES with
                                        its NUL): the request failed, others go on.  The engine logs
                                        nothing: its caller logs this line (server, generate) */
} kvs_output;

/* Room for an output's error message, its NUL included. */
#define KVS_OUTPUT_ERROR_BYTES 128

typedef struct kvs_engine_stats {
    int32_t n_running, n_waiting;
    int32_t kv_blocks_total, kv_blocks_used;
    uint64_t n_preemptions;
    uint64_t n_steps;
    uint64_t prompt_tokens_computed;     /* prompt tokens run through the model (again after a preemption) */
    uint64_t generation_tokens;          /* tokens sampled */
    uint64_t prefix_queries, prefix_hits;   /* in tokens, at each admission (resumptions too) */
    int32_t last_step_tokens;
    int32_t requests_live, requests_cap;     /* request pool slots in use, and all of them */
    int32_t requests_high_water;             /* most slots ever in use at once */
    uint64_t n_failed_invariant;             /* requests ended by a broken invariant (see step) */
    uint64_t n_plan_trimmed;                 /* plan entries the step's check cut short or deferred
                                                (a plan past the profiled shape; harmless) */
    uint64_t arena_high_water;               /* the activation arena's most bytes at once */
} kvs_engine_stats;

typedef struct kvs_engine kvs_engine;

/* Build an engine over a loaded model: creates the runner (profiling it
 * unless `runner` is given, which the caller keeps owning, profiled for
 * cfg's block size; a runner profiled for fewer tokens or sequences per
 * step than cfg's is kept to its shape by the step's plan check) and the host
 * buffers; when cfg->num_blocks > 0 also the KV cache and the block pool,
 * else the caller attaches them with kvs_engine_set_cache() (start-up
 * measures the runtime overhead in between). */
kvs_status kvs_engine_new(kvs_engine **out, kvs_model_model *model, const kvs_tokenizer *tok,
                          kvs_runner *runner, const kvs_engine_config *cfg, kvs_error *err);
/* Allocate the KV cache of num_blocks and the block pool; max_model_len
 * may be lowered from the profiled one.  Once only; on failure the engine
 * is unchanged (still without a cache). */
kvs_status kvs_engine_set_cache(kvs_engine *e, int32_t num_blocks, int32_t max_model_len, kvs_error *err);
void kvs_engine_free(kvs_engine *e);

/* Queue a request.  Fails (and queues nothing) if the prompt is empty,
 * has ids outside the vocabulary, does not fit max_model_len, or could
 * never fit the KV cache alone, if its stop lists pass the KVS_MAX_STOP_*
 * limits (KVS_E_INVALID), or when every request slot is taken
 * (KVS_E_BUDGET; kvs_engine_free_slots says beforehand).  Allocates
 * nothing: the request takes a slot of the pool. */
kvs_status kvs_engine_add(kvs_engine *e, uint64_t id, const int32_t *prompt, size_t n_prompt,
                          const kvs_request_params *params, kvs_error *err);
/* Abort a request (every live request with that id): its blocks are freed
 * now; it is reported once as finished with reason ABORT (token -1, with
 * any text still held back) in the next step's outputs.  Unknown or
 * already finished ids are ignored. */
void kvs_engine_abort(kvs_engine *e, uint64_t id);
bool kvs_engine_has_work(const kvs_engine *e);
/* Pause or resume every live request: `paused(ctx, id)` says which; a
 * paused request is not scheduled (it keeps its KV blocks), so a reader
 * that falls behind holds its own request back and no one else's. */
void kvs_engine_pause(kvs_engine *e, bool (*paused)(void *ctx, uint64_t id), void *ctx);
/* Request slots free now (a request leaves its slot at the step after the
 * one that reported it finished, or at kvs_engine_release_finished). */
int32_t kvs_engine_free_slots(const kvs_engine *e);
/* The caller is done with the last step's outputs: give the slots of the
 * requests it reported finished back now (else the next step does).  The
 * outputs' text pointers are invalid afterwards. */
void kvs_engine_release_finished(kvs_engine *e);

/* One iteration.  *outs points to *n_outs events (engine-owned).  On an
 * error nothing is reported and no request advanced: a later step
 * computes the same tokens again.  Before the forward the plan is checked
 * against the runner's profiled shape and each request's limits
 * (scheduler.h: kvs_sched_check_plan): a request whose entry breaks its
 * limits ends (reported once, token -1, reason abort, `error` naming the
 * limit; its blocks freed; counted in n_failed_invariant), entries past the
 * step's shape are cut short or wait for a later step (n_plan_trimmed),
 * and the rest of the step runs. */
kvs_status kvs_engine_step(kvs_engine *e, const kvs_output **outs, size_t *n_outs, kvs_error *err);

/* Host memory the engine makes resident when it is made (step buffers,
 * block tables, sampler, the request pool), before the KV cache is
 * attached; max_token_bytes is kvs_tok_max_token_bytes() of its
 * tokenizer. */
uint64_t kvs_engine_host_bytes(const kvs_model_hparams *hp, const kvs_engine_config *cfg, size_t max_token_bytes);
/* The request pool alone (part of the above). */
uint64_t kvs_engine_request_pool_bytes(const kvs_engine_config *cfg, size_t max_token_bytes);

void kvs_engine_get_stats(const kvs_engine *e, kvs_engine_stats *st);
const kvs_engine_config *kvs_engine_get_config(const kvs_engine *e);

#endif
