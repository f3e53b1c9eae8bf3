/*
 * server_internal.h - what the server's files share (internal to server/).
 *
 * http.c owns the daemon, routing, authentication and request bodies, and
 * the helpers that send JSON and OpenAI-style error objects.  Each api_*.c
 * file implements endpoints as functions of (server, connection, body) that
 * queue exactly one response (or return MHD_NO to drop the connection).
 */
#ifndef KVS_SERVER_SERVER_INTERNAL_H
#define KVS_SERVER_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "core/json_out.h"
#include "server/engine_loop.h"
#include "server/http_front.h"
#include "server/metrics.h"
#include "server/oai_params.h"
#include "server/server.h"

struct kvs_server {
    kvs_instance *inst;
    int32_t max_model_len;
    char *model_name, *api_key;
    size_t max_body;
    FILE *log;
    struct MHD_Daemon *d;
    int port;
    kvs_loop *loop;
    kvs_metrics metrics;
    time_t started;
    uint64_t salt;                 /* makes response ids differ between runs */
    char mhd_error[256];           /* libmicrohttpd's last log line */

    kvs_http_pool stream_pool;     /* streamed responses' chunk buffers (http_reserve.h) */
    bool stream_pool_ready;
    kvs_http_pool answer_pool;     /* non-streamed answers: text, logprobs, the document (http_reserve.h) */
    bool answer_pool_ready;

    struct kvs_chat_state *chat;     /* the chat template and parsers (api_chat.c) */
    bool chat_auto_tools;          /* --enable-auto-tool-choice */

    pthread_mutex_t mu;            /* guards what follows */
    pthread_cond_t cv;
    int n_active;                  /* generation requests in flight */
    bool draining, quiesced;

    /* The front end (http.c, http_gate.c). */
    kvs_http_front front;
    bool front_ready;
    char *origins;                 /* --allowed-origins, comma-separated (NULL: none) */
    bool any_origin;               /* "*" */
};

/* Begin / end a generation request (false: draining, answer 503). */
bool kvs_server_job_begin(kvs_server *s);
void kvs_server_job_end(kvs_server *s);

/* ---- responses (http.c); each queues one response ---- */

/* Send obj (stolen) as application/json. */
enum MHD_Result kvs_http_json(struct MHD_Connection *c, unsigned status, json_t *obj);
/* Send {"error": {"message", "type", "param", "code"}}; type from the status
 * (4xx invalid_request_error, 5xx server_error); param and code may be NULL. */
enum MHD_Result kvs_http_error(struct MHD_Connection *c, unsigned status, const char *param, const char *code,
                               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Send `text` (malloc'ed, taken) with a content type. */
enum MHD_Result kvs_http_text(struct MHD_Connection *c, unsigned status, const char *ctype, char *text, size_t len);
/* The error object itself (a new reference). */
json_t *kvs_http_error_obj(unsigned status, const char *param, const char *code, const char *msg);
/* The answer to a request's parse failure st: KVS_E_NOMEM 500,
 * KVS_E_BUDGET 503 (server_busy, with Retry-After: a structured-output
 * slot or another pool is full now), anything else 400. */
enum MHD_Result kvs_http_status_error(struct MHD_Connection *c, kvs_status st, const char *param, const char *msg);
/* True when the peer of connection socket fd has hung up. */
bool kvs_http_peer_gone(int fd);
/* The connection's socket, or -1. */
int kvs_http_fd(struct MHD_Connection *c);
/* Add the headers every response carries (CORS for an allowed Origin) to r
 * before it is queued on c; queue_response's callers that build their own
 * response (streams) call it. */
void kvs_http_decorate(struct MHD_Connection *c, struct MHD_Response *r);

/* ---- endpoints ---- */

/* Parse a JSON object body; on failure queue a 400 and return NULL with *ret set. */
json_t *kvs_api_parse_body(struct MHD_Connection *c, const char *body, size_t len, enum MHD_Result *ret);
/* False (and a 404 queued, *ret set) when `model` (len bytes; it may hold
 * NUL, which never matches) is given and is not the served name. */
bool kvs_api_check_model_n(kvs_server *s, struct MHD_Connection *c, const char *model, size_t len,
                           enum MHD_Result *ret);
/* Parse a generation request body of `kind` into r (zeroed here) and check
 * its model.  Returns the JSON (r's strings point into it; the caller
 * releases both), or NULL with the error response queued in *ret. */
json_t *kvs_api_parse_request(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len,
                              kvs_oai_kind kind, kvs_oai_request *r, enum MHD_Result *ret);

enum MHD_Result kvs_api_completions(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len);
enum MHD_Result kvs_api_chat(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len);
enum MHD_Result kvs_api_models(kvs_server *s, struct MHD_Connection *c);
/* GET /v1/models/{id}: the model card, or a 404 model_not_found error. */
enum MHD_Result kvs_api_model(kvs_server *s, struct MHD_Connection *c, const char *id);
enum MHD_Result kvs_api_health(kvs_server *s, struct MHD_Connection *c);
enum MHD_Result kvs_api_metrics(kvs_server *s, struct MHD_Connection *c);
enum MHD_Result kvs_api_tokenize(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len);
enum MHD_Result kvs_api_detokenize(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len);

/* Chat start-up (api_chat.c): load the template (o->chat_template_path or
 * the model's) and probe it; a template that cannot render is an error. */
typedef struct kvs_chat_state kvs_chat_state;
kvs_status kvs_api_chat_init(kvs_server *s, const kvs_server_opts *o, kvs_error *err);
void kvs_api_chat_free(kvs_server *s);
/* tool_choice "required" / named: constrain r's decoding to the tool-call
 * JSON (r->params.grammar).  No-op for other tool_choice values; on failure
 * `why` (cap bytes) says what the client should change (a 400), or with
 * KVS_E_BUDGET that every structured-output slot is busy (a 503). */
kvs_status kvs_api_chat_tool_constraint(kvs_server *s, json_t *body, kvs_oai_request *r, char *why, size_t cap);

/* Chat: render body's messages with the model's template and tokenize them
 * as the chat endpoint does.  On failure queue the error and return false. */
bool kvs_api_chat_prompt(kvs_server *s, struct MHD_Connection *c, json_t *messages, bool add_generation_prompt,
                         bool add_special, int32_t **ids, size_t *n_ids, enum MHD_Result *ret);

/* ---- generation (api_gen.c) ---- */

/* Run a parsed completion or chat request on prompt tokens: check lengths,
 * submit, and answer (JSON, or an SSE stream when r->stream).  prompt_param
 * names the field errors about the prompt point at ("prompt", "messages"). */
enum MHD_Result kvs_gen_run(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                            const int32_t *prompt, size_t n_prompt, const char *prompt_param);

/* The same for a chat request whose output goes through the reasoning and
 * tool-call parsers of `pcfg` (chat/chat_parse.h; copied; NULL: plain content). */
struct kvs_chat_parse_cfg;
enum MHD_Result kvs_gen_run_chat(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                                 const int32_t *prompt, size_t n_prompt, const char *prompt_param,
                                 const struct kvs_chat_parse_cfg *pcfg);
/* The same for several prompts (a completion request's list): prompt k
 * (prompts[k], n_prompts[k] tokens; strip[k] its strip_leading_space)
 * gets choices k * r->n .. k * r->n + r->n - 1; usage sums the prompts. */
enum MHD_Result kvs_gen_run_batch(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                                  const int32_t *const *prompts, const size_t *n_prompts, const bool *strip,
                                  int32_t n_prompt_lists, const char *prompt_param);

/* ---- logprobs formatting (api_logprobs.c) ---- */

/* A token's text as a JSON string: the decoded bytes when they are valid
 * UTF-8, else "bytes:\xNN..." as vLLM writes them.  *bytes (when asked) gets
 * the byte values as an array. */
json_t *kvs_api_token_str(const kvs_tokenizer *t, int32_t id, json_t **bytes);
/* Decode ids as /detokenize does into a malloc'ed buffer of *len bytes
 * (NUL bytes included, NUL-terminated after them); NULL when out of memory. */
char *kvs_api_decode(const kvs_tokenizer *t, const int32_t *ids, size_t n, size_t *len);
/* A JSON string of n bytes of text; bytes that are not valid UTF-8 become
 * U+FFFD.  NULL only when out of memory. */
json_t *kvs_api_text_json(const char *text, size_t n);

/* The same forms for the fixed-buffer writer (core/json_out.h), which
 * streamed chunks use so that they allocate nothing; kvs_jw_str_lossy is
 * kvs_api_text_json's.  A token's decoded bytes (at most KVS_API_TOKEN_MAX,
 * as kvs_api_token_str keeps): */
#define KVS_API_TOKEN_MAX 512
#define KVS_API_TOKEN_FORM_MAX (6 + 4 * KVS_API_TOKEN_MAX)
size_t kvs_api_token_raw(const kvs_tokenizer *t, int32_t id, char raw[KVS_API_TOKEN_MAX]);
/* Its string as kvs_api_token_str gives it: raw itself when valid UTF-8,
 * else "bytes:\xNN..." written into esc; *len its length. */
const char *kvs_api_token_form(const char *raw, size_t n, char esc[KVS_API_TOKEN_FORM_MAX], size_t *len);
/* Write that string. */
void kvs_api_jw_token(kvs_jw *w, const char *raw, size_t n);
/* Write a jansson value as json_dumps(JSON_COMPACT) would (allocates nothing). */
void kvs_api_jw_json(kvs_jw *w, const json_t *v);

#endif
