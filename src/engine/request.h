/*
 * request.h - a request's state inside the engine (internal to engine/).
 *
 * tokens holds the prompt followed by the output so far; n_computed counts
 * the leading tokens whose keys and values are in the KV cache.  The
 * request's block table lists the blocks holding positions
 * [i * block_size, (i + 1) * block_size).  Preemption frees the blocks and
 * sets n_computed to 0; the tokens stay, so the request resumes by
 * recomputing them (and the prefix cache may give most of them back).
 *
 * Requests live in the engine's pool (max_requests slots, sized when the
 * engine is made): every buffer a request needs (tokens up to
 * max_model_len, its block table, its text window, its stop lists) is a
 * fixed slice of one allocation, so adding a request or running a step
 * allocates nothing.
 */
#ifndef KVS_ENGINE_REQUEST_H
#define KVS_ENGINE_REQUEST_H

#include "engine/engine.h"

typedef enum kvs_req_state { KVS_REQ_WAITING, KVS_REQ_RUNNING, KVS_REQ_FINISHED } kvs_req_state;

typedef struct kvs_request {
    uint64_t id;
    kvs_req_state state;
    int32_t *tokens;            /* [cap]: prompt, then output */
    int32_t n_prompt, n_tokens, cap;
    int32_t n_computed;
    int32_t *blocks;            /* [max_blocks] block table row */
    int32_t n_blocks;
    int32_t n_cached;           /* prompt tokens the prefix cache held at the first admission (-1 before) */
    uint64_t arrival;           /* admission order (FCFS) */

    kvs_request_params params;  /* stop / stop_token_ids point into owned copies */
    char *stop[KVS_MAX_STOP_STRINGS];     /* into stop_chars */
    char *stop_chars;           /* [KVS_MAX_STOP_BYTES + KVS_MAX_STOP_STRINGS] */
    int32_t stop_ids[KVS_MAX_STOP_TOKEN_IDS];
    size_t stop_len[KVS_MAX_STOP_STRINGS];   /* byte lengths (stop strings may hold NUL) */
    kvs_logit_bias logit_bias[KVS_MAX_LOGIT_BIAS];  /* [params.n_logit_bias] */
    size_t max_stop_len;
    int32_t slot;               /* index in the engine's request pool */
    kvs_rng rng;
    struct kvs_gmatcher *gm;    /* structured output state, or NULL */

    kvs_tok_stream stream;      /* incremental detokenizer */
    char *text;                 /* [text_cap] a window on the output text: what is not
                                   yet reported, and the max_stop_len bytes before it
                                   (all a stop string can still span) */
    size_t text_len, text_cap, text_sent;
    kvs_finish_reason reason;
    bool aborted;
    bool stop_string_hit;       /* finished on a stop string (text cut there) */
    int32_t stop_string;        /* which one, else -1 */
    int32_t stop_token;         /* finished on this stop token (not the vocabulary's EOS), else -1 */
    int32_t plp_next;           /* prompt logprobs: the next prompt index to report (survives preemption) */
    const char *error;          /* ended by a broken invariant: why (static text or error_text) */
    char error_text[KVS_OUTPUT_ERROR_BYTES];  /* the plan check's message for this request */
    bool paused;                /* not scheduled while set (kvs_engine_pause) */

    /* last step's output (for kvs_output) */
    float logprob;
    int32_t n_top;
    int32_t top_ids[KVS_MAX_LOGPROBS];
    float top_logprobs[KVS_MAX_LOGPROBS];
} kvs_request;

#endif
