/*
 * request.h - a request's state inside the engine (internal to engine/).
 *
 * tokens holds the prompt followed by the output so far; n_computed counts
 * the leading tokens whose keys and values are in the KV cache.  The
 * request's block table lists the blocks holding positions
 * [i * block_size, (i + 1) * block_size).  Preemption frees the blocks and
 * sets n_computed to 0; the tokens stay, so the request resumes by
 * recomputing them (and the prefix cache may give most of them back).
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
    char **stop;
    int32_t *stop_ids;
    size_t max_stop_len;
    kvs_rng rng;
    struct kvs_gmatcher *gm;    /* structured output state, or NULL */

    kvs_tok_stream stream;      /* incremental detokenizer */
    char *text;                 /* output text so far */
    size_t text_len, text_cap, text_sent;
    kvs_finish_reason reason;
    bool aborted;
    bool stop_string_hit;       /* finished on a stop string (text cut there) */

    /* last step's output (for kvs_output) */
    float logprob;
    int32_t n_top;
    int32_t top_ids[KVS_MAX_LOGPROBS];
    float top_logprobs[KVS_MAX_LOGPROBS];
} kvs_request;

#endif
