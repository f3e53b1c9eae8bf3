/*
 * oai_params.h - OpenAI-style request objects (as JSON) to engine
 * parameters.
 *
 * One parser serves the HTTP server's /v1/completions and
 * /v1/chat/completions and `kvserve generate --input-file`.  Every field is
 * type- and range-checked; an error names the field (kvs_oai_error.param)
 * as OpenAI's error objects do.  Fields kvserve does not implement are
 * rejected by name rather than silently ignored.
 */
#ifndef KVS_SERVER_OAI_PARAMS_H
#define KVS_SERVER_OAI_PARAMS_H

#include <jansson.h>
#include <stdbool.h>

#include "engine/engine.h"

typedef enum kvs_oai_kind { KVS_OAI_COMPLETION, KVS_OAI_CHAT } kvs_oai_kind;

/* Most prompts one completion request may carry (a list of prompts), and
 * most choices (prompts x n) in all. */
#define KVS_OAI_MAX_PROMPTS 64
#define KVS_OAI_MAX_CHOICES 256
/* Most logit_bias entries in a request. */
#define KVS_OAI_MAX_LOGIT_BIAS KVS_MAX_LOGIT_BIAS

/* A parsed request.  Strings point into the JSON object (keep it alive). */
typedef struct kvs_oai_request {
    kvs_oai_kind kind;
    kvs_request_params params;
    const char *model;                 /* NULL if absent */
    size_t model_len;
    /* completions: the prompt field (borrowed), holding n_prompts prompts:
     * a string, a list of strings, a list of token ids (one prompt) or a
     * list of lists of token ids */
    json_t *prompt;
    size_t n_prompts;
    json_t *messages;                  /* chat: the messages array (borrowed) */
    bool stream;
    bool include_usage;                /* stream_options.include_usage */
    int32_t n;                         /* choices per prompt */
    bool echo;                         /* completions: the prompt comes first in each choice */
    bool echo_only;                    /* echo with max_tokens 0: the prompt (and its logprobs) only */
    const char *suffix;                /* completions: fill in the middle before this text, or NULL */
    size_t suffix_len;
    bool add_generation_prompt;        /* chat (default true) */
    const char *max_tokens_field;      /* the length field the client sent ("max_tokens" when none) */
    const char *stop[8];
    size_t stop_len[8];
    int32_t stop_ids[64];
    kvs_logit_bias *logit_bias;        /* malloc'ed, or NULL */
    /* in, set by the caller before parsing: where a structured-output
     * constraint compiles (oai_structured.h) */
    struct kvs_gpool *gpool;           /* the server's slots; NULL with !structured_off: malloc */
    bool structured_off;               /* no slots (--max-structured-seqs 0): such requests are a 400 */
} kvs_oai_request;

typedef struct kvs_oai_error {
    char message[512];
    char param[64];                    /* the offending field, or "" */
} kvs_oai_error;

/* Parse body into r (which must be zeroed).  KVS_E_INVALID on a bad
 * request, KVS_E_NOMEM when out of memory, with e filled either way. */
kvs_status kvs_oai_parse(json_t *body, kvs_oai_kind kind, kvs_oai_request *r, kvs_oai_error *e);

struct kvs_gen_defaults;
/* vLLM's --generation-config auto (its default): each sampling field that
 * `body` leaves out (absent or null) takes the model's generation_config.json
 * value, for r as kvs_oai_parse filled it: temperature, top_p, top_k, min_p,
 * repetition_penalty, and max_new_tokens as max_tokens (chat: also when
 * max_completion_tokens is absent).  g NULL or without values: no-op. */
void kvs_oai_apply_generation_config(json_t *body, const struct kvs_gen_defaults *g, kvs_oai_request *r);
/* Free what r owns (its prompt ids); its strings point into the JSON body. */
void kvs_oai_request_free(kvs_oai_request *r);

/* Prompt i (< r->n_prompts) of a completion request as token ids: text is
 * tokenized (with BOS where the vocabulary wants one), ids are checked
 * against the vocabulary.  *ids is malloc'ed.  Also sets
 * r->params.strip_leading_space for a prompt that is BOS alone (the same
 * for every prompt of a list only when they all are).  On failure e is
 * filled (param "prompt") and the status is KVS_E_NOMEM when out of
 * memory, else KVS_E_INVALID. */
struct kvs_tokenizer;
kvs_status kvs_oai_prompt_tokens_at(kvs_oai_request *r, size_t i, const struct kvs_tokenizer *t, int32_t **ids,
                                    size_t *n, kvs_oai_error *e);
/* The same for a request of one prompt (KVS_E_INVALID for a list). */
kvs_status kvs_oai_prompt_tokens(kvs_oai_request *r, const struct kvs_tokenizer *t, int32_t **ids, size_t *n,
                                 kvs_oai_error *e);
/* Prompt i as given when it is text (*len its bytes), else NULL. */
const char *kvs_oai_prompt_text(const kvs_oai_request *r, size_t i, size_t *len);

/* Integral JSON numbers (2 or 2.0, as vLLM's validation accepts) as an
 * integer; false for anything else (2.5, strings, out of range). */
bool kvs_oai_json_int(const json_t *v, long long *out);

#endif
