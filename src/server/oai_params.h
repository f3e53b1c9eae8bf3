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

/* A parsed request.  Strings point into the JSON object (keep it alive). */
typedef struct kvs_oai_request {
    kvs_oai_kind kind;
    kvs_request_params params;
    const char *model;                 /* NULL if absent */
    /* completion prompt: text or token ids */
    const char *prompt_text;
    int32_t *prompt_ids;               /* malloc'ed, or NULL */
    size_t n_prompt_ids;
    json_t *messages;                  /* chat: the messages array (borrowed) */
    bool stream;
    bool include_usage;                /* stream_options.include_usage */
    int32_t n;                         /* choices per prompt */
    bool echo;
    bool add_generation_prompt;        /* chat (default true) */
    const char *stop[8];
    int32_t stop_ids[64];
} kvs_oai_request;

typedef struct kvs_oai_error {
    char message[512];
    char param[64];                    /* the offending field, or "" */
} kvs_oai_error;

/* Parse body into r (which must be zeroed).  KVS_E_INVALID on a bad
 * request, KVS_E_NOMEM when out of memory, with e filled either way. */
kvs_status kvs_oai_parse(json_t *body, kvs_oai_kind kind, kvs_oai_request *r, kvs_oai_error *e);
/* Free what r owns (its prompt ids); its strings point into the JSON body. */
void kvs_oai_request_free(kvs_oai_request *r);

/* The prompt of a completion request as token ids: text is tokenized (with
 * BOS where the vocabulary wants one), ids are checked against the
 * vocabulary and taken over from r.  Also sets
 * r->params.strip_leading_space for a prompt that is BOS alone.  *ids is
 * malloc'ed.  On failure e is filled (param "prompt") and the status is
 * KVS_E_NOMEM when out of memory, else KVS_E_INVALID. */
struct kvs_tokenizer;
kvs_status kvs_oai_prompt_tokens(kvs_oai_request *r, const struct kvs_tokenizer *t, int32_t **ids, size_t *n,
                                 kvs_oai_error *e);

#endif
