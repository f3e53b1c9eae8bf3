/* Generation requests: submit to the engine thread, answer as JSON or SSE. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat_parse.h"
#include "grammar/grammar.h"
#include "server/server_internal.h"

#define POLL_MS 250   /* stopping: the wait for the stopped loop's answer to a submission */
/* sizeof(kvs_request_params) as gen_sub_new knows it (see there). */
#define KVS_GEN_PARAMS_SIZE 136

typedef struct gen_choice {
    char *text;                    /* non-streaming: the text so far (a run of the answer pool, cap bytes) */
    size_t len, cap;
    unsigned char *rec;            /* non-streaming: its logprob records (answer pool, rec_cap bytes) */
    size_t rec_cap, n_rec;
    json_t *msg;                   /* non-streaming chat with parsers: the parsed message, at the end */
    json_t *lp;                    /* streaming: the echoed prompt's logprobs, until the first chunk */
    size_t offset;                 /* bytes of text so far (text_offset), the echoed prompt included */
    int32_t n_output;
    int32_t stop_string, stop_token;
    kvs_finish_reason reason;
    bool finished;
    bool echoed;                   /* the prompt text went out (echo) */
    bool plp_started;              /* echo with logprobs: the prompt's first token is listed */
    kvs_chat_stream *cs;           /* chat with parsers, streaming: the parser state */
} gen_choice;

typedef enum au_stage {
    AU_HEAD, AU_CHOICE, AU_TEXT, AU_MSG_KEY, AU_MSG_END, AU_LP_OPEN, AU_LP_ITEM, AU_CHOICE_END, AU_TAIL, AU_DONE
} au_stage;

typedef struct ans_cur {
    au_stage st, after;            /* AU_TEXT: the stage after the string */
    int32_t i;                     /* the choice */
    const char *s;                 /* the string being written in slices */
    size_t n, pos;
    void *mi;                      /* the parsed message's next member */
    int f;                         /* completions' logprobs: the field */
    size_t j;                      /* the record */
} ans_cur;

/* One prompt of the request and its n choices. */
typedef struct gen_prompt {
    uint64_t base;                 /* engine ids of its choices */
    bool accepted;
    const int32_t *ids;            /* the caller's, valid only while kvs_gen_run_batch runs */
    int32_t first_id;              /* ids[0], for later */
    int32_t n_ids;
    int32_t n_prompt, n_cached;
    char *echo;                    /* echo: the prompt's text */
    size_t echo_len;
    size_t *tok_off;               /* echo with logprobs: each prompt token's offset in the echo text */
} gen_prompt;

typedef struct gen {
    kvs_server *s;
    kvs_oai_kind kind;
    int32_t n, logprobs;           /* n: choices in all (prompts x choices per prompt) */
    int32_t per_prompt, n_prompts;
    bool include_usage;
    bool echo, echo_only;
    kvs_chan *chan;
    char id[48];
    json_t *created_j;
    json_int_t created;
    int fd;
    int32_t n_finished;
    gen_choice *ch;
    gen_prompt *pr;
    char *stop[8];                 /* copies, for stop_reason */
    size_t stop_len[8];
    size_t n_stop;
    char *out;                     /* streaming: the chunk buffer (from the stream pool, out_cap bytes) */
    size_t out_cap;
    char *pend;                    /* streaming: what MHD is handed next (out or spill)... */
    size_t pend_len, pend_off;     /* ...its length and what was handed already */
    char *spill;                   /* a chunk larger than out (see stream_event) */
    int32_t roles_sent;            /* chat: role chunks written */
    kvs_srv_event *held;           /* events read while the prompts were accepted, in order */
    kvs_srv_event *held_tail;
    bool done;                     /* streaming: [DONE] is queued */
    double last_check;             /* when the client was last checked for a hang-up */
    /* Waiting without a thread (http_front.h). */
    struct MHD_Connection *conn;   /* the connection it answers (woken by the channel) */
    struct gen_sub *gs;            /* the submissions, until each has its first event */
    bool stream;
    int32_t n_submitted, n_replies;
    unsigned err_status;           /* the first refusal among the replies */
    char err_param[32], err_msg[sizeof(((kvs_error *)0)->msg)];
    bool keep_ok;
    bool parse;                    /* chat: reasoning / tool-call parsing per pcfg (api_chat.c) */
    kvs_chat_parse_cfg pcfg;
    size_t rec_stride;             /* non-streaming: bytes of one logprob record (lp_rec + its top) */
    char *sc;                      /* non-streaming: the answer's scratch run (answer pool, sc_cap bytes)... */
    size_t sc_cap;
    kvs_jw aw;                     /* ...the writer, its state carried from unit to unit... */
    ans_cur ac;                    /* ...and where the answer is (see answer_read) */
    int32_t rec_top;               /* top logprobs a record holds */
    bool pool_full;                /* the answer pool had no room (503) */
} gen;

/* The submissions and what the engine thread reads from them when it takes
 * them, which may be long after the handler has returned: copies of the
 * prompts and of the parameters' arrays.  If the client leaves first, the
 * block is left to the channel (kvs_chan_set_dtor), whose last reference
 * the loop drops only once it is done with every submission. */
typedef struct gen_sub {
    kvs_submit *subs;
    int32_t n;
    int32_t **prompts;
    kvs_request_params params;     /* shared by subs[] (strip_leading_space set per prompt there) */
    char **stops;
    size_t *stop_len;
    size_t n_stops;
    int32_t *stop_ids;
    kvs_logit_bias *bias;
} gen_sub;

static void gen_sub_free(void *arg)
{
    gen_sub *gs = arg;
    if (!gs)
        return;
    for (int32_t k = 0; gs->prompts && k < gs->n; k++)
        free(gs->prompts[k]);
    free(gs->prompts);
    for (size_t i = 0; i < gs->n_stops; i++)
        free(gs->stops[i]);
    free(gs->stops);
    free(gs->stop_len);
    free(gs->stop_ids);
    free(gs->bias);
    kvs_grammar_unref(gs->params.grammar);
    free(gs->subs);
    free(gs);
}

static void gen_abort(gen *g)
{
    for (int32_t p = 0; p < g->n_prompts; p++)
        if (g->pr[p].accepted)
            kvs_loop_abort(g->s->loop, g->pr[p].base, g->per_prompt);
}

static void gen_free(gen *g)
{
    if (!g)
        return;
    for (int32_t i = 0; g->ch && i < g->n; i++) {
        if (g->ch[i].text)
            kvs_http_pool_free(&g->s->answer_pool, g->ch[i].text, g->ch[i].cap);
        if (g->ch[i].rec)
            kvs_http_pool_free(&g->s->answer_pool, g->ch[i].rec, g->ch[i].rec_cap);
        json_decref(g->ch[i].msg);
        json_decref(g->ch[i].lp);
        kvs_chat_stream_free(g->ch[i].cs);
    }
    for (int32_t p = 0; g->pr && p < g->n_prompts; p++) {
        free(g->pr[p].echo);
        free(g->pr[p].tok_off);
    }
    for (size_t i = 0; i < g->n_stop; i++)
        free(g->stop[i]);
    free(g->ch);
    free(g->pr);
    if (g->out)
        kvs_http_pool_free(&g->s->stream_pool, g->out, g->out_cap);
    if (g->sc)
        kvs_http_pool_free(&g->s->answer_pool, g->sc, g->sc_cap);
    free(g->spill);
    while (g->held) {
        kvs_srv_event *n = g->held->next;
        kvs_event_free(g->held);
        g->held = n;
    }
    if (g->gs && g->n_replies < g->n_submitted && g->chan) /* the loop may still read them */
        kvs_chan_set_dtor(g->chan, gen_sub_free, g->gs);
    else
        gen_sub_free(g->gs);
    kvs_http_unbind(g->chan);
    kvs_chan_unref(g->chan);
    free(g);
}

static const char *finish_name(kvs_finish_reason r)
{
    const char *n = kvs_finish_reason_name(r);
    return n ? n : "stop";
}

/* ---- logprobs ---- */

static gen_prompt *prompt_of(gen *g, int32_t index) { return &g->pr[index / g->per_prompt]; }

/* JSON cannot hold -inf: vLLM writes -9999.0 for it. */
static json_t *lp_val(float v) { return json_real(isfinite(v) ? (double)v : -9999.0); }

static void lp_completion_entry(json_t *lp, const kvs_tokenizer *t, int32_t token, float logprob, int32_t n_top,
                                const int32_t *top_ids, const float *top_logprobs, size_t offset)
{
    json_array_append_new(json_object_get(lp, "tokens"), kvs_api_token_str(t, token, NULL));
    json_array_append_new(json_object_get(lp, "token_logprobs"), lp_val(logprob));
    json_t *top = json_object();
    for (int32_t k = 0; k < n_top; k++) {
        json_t *ks = kvs_api_token_str(t, top_ids[k], NULL);
        if (ks && !json_object_get(top, json_string_value(ks)))
            json_object_set_new(top, json_string_value(ks), lp_val(top_logprobs[k]));
        json_decref(ks);
    }
    json_t *ks = kvs_api_token_str(t, token, NULL); /* the chosen token is always listed */
    if (ks && !json_object_get(top, json_string_value(ks)))
        json_object_set_new(top, json_string_value(ks), lp_val(logprob));
    json_decref(ks);
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
    json_array_append_new(json_object_get(lp, "text_offset"), json_integer((json_int_t)offset));
}

static json_t *lp_completion_new(void)
{
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
}

static json_t *lp_new(const gen *g)
{
    return g->kind == KVS_OAI_COMPLETION ? lp_completion_new() : json_pack("{s:[]}", "content");
}

/* ---- a non-streamed answer's storage (the answer pool) ----
 *
 * A choice's text and its logprobs (one fixed-size record per token: the
 * token, its logprob, text_offset and the top ids and logprobs) are kept in
 * runs of the server's answer pool (http_reserve.h), which grow in place or
 * move by doubling, so nothing is allocated per token and nothing grows
 * past the pool: a request that finds no room is answered 503. */

typedef struct lp_rec {
    size_t offset;                 /* text_offset */
    int32_t token;
    float logprob;
    int32_t n_top;                 /* top entries after the record; -1: the echoed prompt's first token */
} lp_rec;                          /* then int32_t ids[rec_top], float logprobs[rec_top] */

#define ANSWER_FIRST_RUN ((size_t)4 << 10)

static const char ANSWER_FULL[] = "the server is busy building other answers (its answer pool, --http-answer-pool, "
                                  "is full); retry";

/* Room for `need` bytes in the run *p (*cap bytes, `len` used): false (and
 * pool_full) when the pool has none. */
static bool answer_room(gen *g, void **p, size_t *cap, size_t len, size_t need)
{
    if (need <= *cap)
        return true;
    size_t want = *cap ? 2 * *cap : ANSWER_FIRST_RUN;
    while (want < need)
        want *= 2;
    void *q = kvs_http_pool_grow(&g->s->answer_pool, *p, cap, len, want);
    if (!q && want > need)
        q = kvs_http_pool_grow(&g->s->answer_pool, *p, cap, len, need);
    if (!q) {
        if (!g->pool_full) /* the request gets a 503: count it once */
            kvs_metrics_refused_for_memory(&g->s->metrics);
        g->pool_full = true;
        return false;
    }
    *p = q;
    return true;
}

static const lp_rec *rec_at(const gen *g, const gen_choice *c, size_t i)
{
    return (const lp_rec *)(const void *)(c->rec + i * g->rec_stride);
}

static const int32_t *rec_ids(const lp_rec *r) { return (const int32_t *)(const void *)(r + 1); }

static const float *rec_lps(const gen *g, const lp_rec *r)
{
    return (const float *)(const void *)(rec_ids(r) + g->rec_top);
}

/* Top entries kept per record for a request's logprobs (-1: none asked). */
static int32_t rec_top_of(int32_t logprobs)
{
    return logprobs < 0 ? 0 : logprobs < KVS_MAX_LOGPROBS ? logprobs : KVS_MAX_LOGPROBS;
}

/* Bytes of one record with rec_top top entries (8-byte aligned). */
static size_t rec_stride_of(int32_t rec_top)
{
    return (sizeof(lp_rec) + (size_t)rec_top * (sizeof(int32_t) + sizeof(float)) + 7) / 8 * 8;
}

static bool rec_add(gen *g, gen_choice *c, int32_t token, float logprob, int32_t n_top, const int32_t *ids,
                    const float *lps, size_t offset)
{
    void *p = c->rec;
    size_t used = c->n_rec * g->rec_stride;
    if (!answer_room(g, &p, &c->rec_cap, used, used + g->rec_stride))
        return false;
    c->rec = p;
    lp_rec *r = (lp_rec *)(void *)(c->rec + used);
    if (n_top > g->rec_top)
        n_top = g->rec_top;
    *r = (lp_rec){.offset = offset, .token = token, .logprob = logprob, .n_top = n_top};
    int32_t *ri = (int32_t *)(void *)(r + 1);
    float *rl = (float *)(void *)(ri + g->rec_top);
    for (int32_t k = 0; k < n_top; k++) {
        ri[k] = ids[k];
        rl[k] = lps[k];
    }
    c->n_rec++;
    return true;
}

/* echo with logprobs: the prompt's tokens first, as vLLM returns them (the
 * first has no logprob: nothing comes before it); ev is a prompt-logprob
 * event (ev->prompt_index > 0). */
static bool lp_prompt_add(gen *g, gen_choice *c, const gen_prompt *pr, const kvs_srv_event *ev)
{
    if (!g->echo || g->logprobs < 0 || g->kind != KVS_OAI_COMPLETION)
        return true;
    if (!g->stream) { /* records in the answer pool */
        if (!c->plp_started) {
            if (!rec_add(g, c, pr->first_id, 0.0f, -1, NULL, NULL, 0))
                return false;
            c->plp_started = true;
        }
        size_t off = ev->prompt_index < pr->n_ids && pr->tok_off ? pr->tok_off[ev->prompt_index] : pr->echo_len;
        return rec_add(g, c, ev->token, ev->logprob, ev->n_top, ev->top_ids, ev->top_logprobs, off);
    }
    if (!c->lp && !(c->lp = lp_new(g)))
        return false;
    const kvs_tokenizer *t = g->s->inst->tok;
    if (!c->plp_started) {
        c->plp_started = true;
        json_array_append_new(json_object_get(c->lp, "tokens"), kvs_api_token_str(t, pr->first_id, NULL));
        json_array_append_new(json_object_get(c->lp, "token_logprobs"), json_null());
        json_array_append_new(json_object_get(c->lp, "top_logprobs"), json_null());
        json_array_append_new(json_object_get(c->lp, "text_offset"), json_integer(0));
    }
    size_t off = ev->prompt_index < pr->n_ids && pr->tok_off ? pr->tok_off[ev->prompt_index] : pr->echo_len;
    lp_completion_entry(c->lp, t, ev->token, ev->logprob, ev->n_top, ev->top_ids, ev->top_logprobs, off);
    return true;
}

/* A prompt-logprob event: kept for the choice's first chunk (or the answer). */
static bool prompt_event(gen *g, const kvs_srv_event *ev)
{
    gen_choice *c = &g->ch[ev->index];
    gen_prompt *pr = prompt_of(g, ev->index);
    if (ev->n_prompt > 0)
        pr->n_prompt = ev->n_prompt;
    return lp_prompt_add(g, c, pr, ev);
}

/* ---- response pieces ---- */

static void note_event(gen *g, const kvs_srv_event *ev, gen_choice *c)
{
    gen_prompt *pr = prompt_of(g, ev->index);
    if (ev->n_prompt > 0)
        pr->n_prompt = ev->n_prompt;
    if (ev->n_cached > pr->n_cached)
        pr->n_cached = ev->n_cached;
    if (!g->echo_only)
        c->offset += ev->text_len;
    if (ev->finished && !c->finished) {
        c->finished = true;
        c->reason = g->echo_only && ev->reason != KVS_FINISH_ABORT ? KVS_FINISH_LENGTH : ev->reason;
        c->n_output = ev->n_output;
        c->stop_string = g->echo_only ? -1 : ev->stop_string;
        c->stop_token = g->echo_only ? -1 : ev->stop_token;
        g->n_finished++;
    }
}

/* echo: the choice's text starts with its prompt's; false when the answer pool is full */
static bool text_append(gen *g, gen_choice *c, const char *p, size_t n)
{
    void *t = c->text;
    if (!answer_room(g, &t, &c->cap, c->len, c->len + n + 1))
        return false;
    c->text = t;
    memcpy(c->text + c->len, p, n);
    c->len += n;
    return true;
}

/* ---- streaming ----
 *
 * Each event's chunks ("data: {...}\n\n", and at the end the usage chunk
 * and "data: [DONE]\n\n") are written with the fixed-buffer JSON writer
 * (core/json_out.h) straight into g->out, a buffer taken from the server's
 * stream pool when the request is admitted and sized there for the largest
 * chunks its limits allow (stream_out_bytes).  The next event is read only
 * once the client has drained the buffer (MHD calls sse_read when its
 * socket has room): a slow client holds back its own events, which pauses
 * its request in the engine (engine_loop.h), and nothing grows.  A chunk
 * whose size the limits do not bound (the echoed prompt in a choice's first
 * chunk, a reasoning or tool-call parser's flush, a long error message)
 * goes through a one-off buffer of its exact size (g->spill). */

/* The bytes one event's output can take at most for this request: a chunk
 * with up to KVS_EVENT_TEXT bytes of text and its logprobs (the request's
 * top-n of tokens of the tokenizer's longest), then the usage chunk and
 * [DONE]; the chat role chunks and the error chunks are smaller. */
static size_t stream_out_bytes(const gen *g)
{
    size_t B = kvs_tok_max_token_bytes(g->s->inst->tok) + 8;
    if (B > KVS_API_TOKEN_MAX)
        B = KVS_API_TOKEN_MAX;
    const size_t tok = 6 * B + 8; /* a token's string, or its "bytes:\\xNN" form */
    const size_t env = 128 + KVS_JW_STR_MAX(sizeof g->id) + KVS_JW_STR_MAX(strlen(g->s->model_name)) +
                       KVS_JW_INT_MAX;
    size_t stop = KVS_JW_INT_MAX;
    for (size_t i = 0; i < g->n_stop; i++)
        if (KVS_JW_STR_MAX(g->stop_len[i]) > stop)
            stop = KVS_JW_STR_MAX(g->stop_len[i]);
    size_t lp = 0;
    if (g->logprobs >= 0) {
        size_t top = (size_t)(g->logprobs < KVS_MAX_LOGPROBS ? g->logprobs : KVS_MAX_LOGPROBS) + 1;
        lp = g->kind == KVS_OAI_COMPLETION
                 ? 128 + tok + KVS_JW_DOUBLE_MAX + top * (tok + KVS_JW_DOUBLE_MAX + 2) + KVS_JW_INT_MAX
                 : 64 + top * (64 + tok + KVS_JW_DOUBLE_MAX + 4 * B + 2);
    }
    size_t chunk = 8 + env + 128 + KVS_JW_INT_MAX + KVS_JW_STR_MAX(KVS_EVENT_TEXT) + lp + 32 + stop;
    size_t usage = 8 + env + 192 + 4 * KVS_JW_INT_MAX;
    return chunk + usage + 16;
}

static void sse_begin(kvs_jw *w) { kvs_jw_raw(w, "data: ", 6); }

static void sse_end(kvs_jw *w)
{
    kvs_jw_raw(w, "\n\n", 2);
    kvs_jw_next(w);
}

/* Opens the chunk object: id, object, created, model (and, for a chunk with
 * include_usage, "usage": null, as chunk_envelope). */
static void jw_envelope(const gen *g, kvs_jw *w, bool chunk)
{
    kvs_jw_obj(w);
    kvs_jw_key(w, "id");
    kvs_jw_cstr(w, g->id);
    kvs_jw_key(w, "object");
    kvs_jw_cstr(w, g->kind == KVS_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
    kvs_jw_key(w, "created");
    kvs_jw_int(w, (long long)g->created);
    kvs_jw_key(w, "model");
    kvs_jw_cstr(w, g->s->model_name);
    if (chunk && g->include_usage) {
        kvs_jw_key(w, "usage");
        kvs_jw_null(w);
    }
}

static void jw_usage(const gen *g, kvs_jw *w)
{
    long long c = 0, p = 0, cached = 0;
    for (int32_t i = 0; i < g->n; i++)
        c += g->ch[i].n_output;
    for (int32_t k = 0; k < g->n_prompts; k++) {
        p += g->pr[k].n_prompt;
        cached += g->pr[k].n_cached;
    }
    if (g->echo_only)
        c = 0;
    kvs_jw_obj(w);
    kvs_jw_key(w, "prompt_tokens");
    kvs_jw_int(w, p);
    kvs_jw_key(w, "completion_tokens");
    kvs_jw_int(w, c);
    kvs_jw_key(w, "total_tokens");
    kvs_jw_int(w, p + c);
    kvs_jw_key(w, "prompt_tokens_details");
    kvs_jw_obj(w);
    kvs_jw_key(w, "cached_tokens");
    kvs_jw_int(w, cached);
    kvs_jw_end(w);
    kvs_jw_end(w);
}

static void jw_lp_val(kvs_jw *w, float v) { kvs_jw_double(w, isfinite(v) ? (double)v : -9999.0); }

static void jw_token(kvs_jw *w, const kvs_tokenizer *t, int32_t id)
{
    char raw[KVS_API_TOKEN_MAX];
    kvs_api_jw_token(w, raw, kvs_api_token_raw(t, id, raw));
}

/* A top_logprobs object key as jansson keeps it: the token's string up to a NUL. */
static size_t top_key(const kvs_tokenizer *t, int32_t id, char raw[KVS_API_TOKEN_MAX],
                      char esc[KVS_API_TOKEN_FORM_MAX], const char **key)
{
    size_t n = kvs_api_token_raw(t, id, raw), len;
    *key = kvs_api_token_form(raw, n, esc, &len);
    const char *nul = memchr(*key, '\0', len);
    return nul ? (size_t)(nul - *key) : len;
}

/* Completions' top_logprobs entry: {token: logprob} for the top tokens (the
 * first of each string), then the chosen token unless listed
 * (lp_completion_entry's object). */
static void jw_lp_top(kvs_jw *w, const kvs_tokenizer *t, int32_t token, float logprob, int32_t n_top,
                      const int32_t *ids, const float *lps)
{
    char raw[KVS_API_TOKEN_MAX], esc[KVS_API_TOKEN_FORM_MAX], raw2[KVS_API_TOKEN_MAX], esc2[KVS_API_TOKEN_FORM_MAX];
    kvs_jw_obj(w);
    for (int32_t k = 0; k <= n_top; k++) {
        int32_t id = k < n_top ? ids[k] : token;
        const char *key, *other;
        size_t n = top_key(t, id, raw, esc, &key);
        bool dup = false;
        for (int32_t j = 0; j < k && j < n_top && !dup; j++) {
            size_t m = top_key(t, ids[j], raw2, esc2, &other);
            dup = m == n && memcmp(key, other, n) == 0;
        }
        if (dup)
            continue;
        kvs_jw_keyn(w, key, n);
        jw_lp_val(w, k < n_top ? lps[k] : logprob);
    }
    kvs_jw_end(w);
}

/* Completions' logprobs: the echoed prompt's (prefix, a jansson object of
 * lp_completion_new's arrays, or NULL), then ev's token when ev is set. */
static void jw_lp_completion(const gen *g, kvs_jw *w, const json_t *prefix, const kvs_srv_event *ev, size_t offset)
{
    static const char *const keys[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    const kvs_tokenizer *t = g->s->inst->tok;
    kvs_jw_obj(w);
    for (int f = 0; f < 4; f++) {
        kvs_jw_key(w, keys[f]);
        kvs_jw_arr(w);
        if (prefix) {
            size_t i;
            json_t *v;
            json_array_foreach(json_object_get(prefix, keys[f]), i, v)
                kvs_api_jw_json(w, v);
        }
        if (ev) {
            switch (f) {
            case 0: jw_token(w, t, ev->token); break;
            case 1: jw_lp_val(w, ev->logprob); break;
            case 2: jw_lp_top(w, t, ev->token, ev->logprob, ev->n_top, ev->top_ids, ev->top_logprobs); break;
            default: kvs_jw_int(w, (long long)offset); break;
            }
        }
        kvs_jw_end(w);
    }
    kvs_jw_end(w);
}

/* Chat's {"token", "logprob", "bytes"} (lp_chat_entry), left open. */
static void jw_lp_chat_entry(kvs_jw *w, const kvs_tokenizer *t, int32_t id, float logprob)
{
    char raw[KVS_API_TOKEN_MAX];
    size_t n = kvs_api_token_raw(t, id, raw);
    kvs_jw_obj(w);
    kvs_jw_key(w, "token");
    kvs_api_jw_token(w, raw, n);
    kvs_jw_key(w, "logprob");
    jw_lp_val(w, logprob);
    kvs_jw_key(w, "bytes");
    kvs_jw_arr(w);
    for (size_t i = 0; i < n; i++)
        kvs_jw_int(w, (unsigned char)raw[i]);
    kvs_jw_end(w);
}

static void jw_lp_chat(const gen *g, kvs_jw *w, const kvs_srv_event *ev)
{
    const kvs_tokenizer *t = g->s->inst->tok;
    kvs_jw_obj(w);
    kvs_jw_key(w, "content");
    kvs_jw_arr(w);
    if (ev) {
        jw_lp_chat_entry(w, t, ev->token, ev->logprob);
        kvs_jw_key(w, "top_logprobs");
        kvs_jw_arr(w);
        for (int32_t k = 0; k < ev->n_top; k++) {
            jw_lp_chat_entry(w, t, ev->top_ids[k], ev->top_logprobs[k]);
            kvs_jw_end(w);
        }
        kvs_jw_end(w);
        kvs_jw_end(w);
    }
    kvs_jw_end(w);
    kvs_jw_end(w);
}

/* What one token event writes (stream_event decides, write_event writes;
 * the writing changes nothing, so it can run again into a larger buffer). */
typedef struct ev_out {
    const kvs_srv_event *ev;
    const gen_choice *c;
    const kvs_chat_delta *deltas;  /* chat with parsers: this event's deltas, or NULL */
    size_t n_deltas;
    bool chunk;                    /* the choice's chunk (else only the parser's deltas / the end) */
    bool want_lp;
    const char *text;              /* the choice's text in this chunk (the echoed prompt first) */
    size_t text_len;               /* (the event's own text: its length, for chat's delta) */
    size_t text_n;
    size_t offset;                 /* text_offset of the token */
    bool end;                      /* every choice is finished: the usage chunk and [DONE] follow */
} ev_out;

/* A parser's delta (kvs_chat_delta_json's object). */
static void jw_delta(kvs_jw *w, const kvs_chat_delta *d)
{
    kvs_jw_obj(w);
    switch (d->kind) {
    case KVS_CHAT_DELTA_REASONING:
    case KVS_CHAT_DELTA_CONTENT:
        kvs_jw_key(w, d->kind == KVS_CHAT_DELTA_REASONING ? "reasoning_content" : "content");
        kvs_jw_str(w, d->text, d->len);
        break;
    case KVS_CHAT_DELTA_CALL:
    case KVS_CHAT_DELTA_ARGS:
        kvs_jw_key(w, "tool_calls");
        kvs_jw_arr(w);
        kvs_jw_obj(w);
        kvs_jw_key(w, "index");
        kvs_jw_int(w, (long long)d->index);
        if (d->kind == KVS_CHAT_DELTA_CALL) {
            kvs_jw_key(w, "id");
            kvs_jw_cstr(w, d->id);
            kvs_jw_key(w, "type");
            kvs_jw_cstr(w, "function");
        }
        kvs_jw_key(w, "function");
        kvs_jw_obj(w);
        if (d->kind == KVS_CHAT_DELTA_CALL) {
            kvs_jw_key(w, "name");
            kvs_jw_str(w, d->text, d->len);
            kvs_jw_key(w, "arguments");
            kvs_jw_str(w, "", 0);
        } else {
            kvs_jw_key(w, "arguments");
            kvs_jw_str(w, d->text, d->len);
        }
        kvs_jw_end(w);
        kvs_jw_end(w);
        kvs_jw_end(w);
        break;
    }
    kvs_jw_end(w);
}

/* "data: {<envelope>, "choices": [{"index": i" -- a chunk's one choice, left open. */
static void chunk_open(const gen *g, kvs_jw *w, int32_t index)
{
    sse_begin(w);
    jw_envelope(g, w, true);
    kvs_jw_key(w, "choices");
    kvs_jw_arr(w);
    kvs_jw_obj(w);
    kvs_jw_key(w, "index");
    kvs_jw_int(w, index);
}

/* Close what chunk_open opened: the choice, the array, the chunk, the event. */
static void chunk_close(kvs_jw *w)
{
    kvs_jw_end(w);
    kvs_jw_end(w);
    kvs_jw_end(w);
    sse_end(w);
}

/* A choice that is not finishing and carries no logprobs: both null, then close. */
static void chunk_close_open_choice(kvs_jw *w)
{
    kvs_jw_key(w, "logprobs");
    kvs_jw_null(w);
    kvs_jw_key(w, "finish_reason");
    kvs_jw_null(w);
    chunk_close(w);
}

static void write_end(const gen *g, kvs_jw *w)
{
    if (g->include_usage) {
        sse_begin(w);
        jw_envelope(g, w, false);
        kvs_jw_key(w, "choices");
        kvs_jw_arr(w);
        kvs_jw_end(w);
        kvs_jw_key(w, "usage");
        jw_usage(g, w);
        kvs_jw_end(w);
        sse_end(w);
    }
    kvs_jw_raw(w, "data: [DONE]\n\n", 14);
}

static void write_event(const gen *g, const void *arg, kvs_jw *w)
{
    const ev_out *o = arg;
    const kvs_srv_event *ev = o->ev;
    const gen_choice *c = o->c;
    bool chat = g->kind == KVS_OAI_CHAT;
    size_t extra = o->deltas && o->n_deltas > 1 ? o->n_deltas - 1 : 0;
    for (size_t k = 0; k < extra; k++) { /* all deltas but the last in chunks of their own */
        chunk_open(g, w, ev->index);
        kvs_jw_key(w, "delta");
        jw_delta(w, &o->deltas[k]);
        chunk_close_open_choice(w);
    }
    if (o->chunk) {
        chunk_open(g, w, ev->index);
        if (chat && o->deltas) {
            kvs_jw_key(w, "delta");
            if (o->n_deltas) {
                jw_delta(w, &o->deltas[o->n_deltas - 1]);
            } else {
                kvs_jw_obj(w);
                kvs_jw_end(w);
            }
        } else if (chat) {
            kvs_jw_key(w, "delta");
            kvs_jw_obj(w);
            if (o->text_len > 0) {
                kvs_jw_key(w, "content");
                kvs_jw_str_lossy(w, o->text, o->text_n);
            }
            kvs_jw_end(w);
        } else {
            kvs_jw_key(w, "text");
            kvs_jw_str_lossy(w, o->text, o->text_n);
        }
        kvs_jw_key(w, "logprobs");
        if (!c->lp && !o->want_lp)
            kvs_jw_null(w);
        else if (g->kind == KVS_OAI_COMPLETION)
            jw_lp_completion(g, w, c->lp, o->want_lp ? ev : NULL, o->offset);
        else
            jw_lp_chat(g, w, o->want_lp ? ev : NULL);
        kvs_jw_key(w, "finish_reason");
        if (ev->finished) {
            const char *fin = finish_name(c->reason);
            if (kvs_chat_stream_has_tool_calls(c->cs) && strcmp(fin, "stop") == 0)
                fin = "tool_calls";
            kvs_jw_cstr(w, fin);
        } else {
            kvs_jw_null(w);
        }
        kvs_jw_key(w, "stop_reason");
        if (ev->finished && c->finished && c->stop_string >= 0 && (size_t)c->stop_string < g->n_stop)
            kvs_jw_str_lossy(w, g->stop[c->stop_string], g->stop_len[c->stop_string]);
        else if (ev->finished && c->finished && c->stop_token >= 0)
            kvs_jw_int(w, c->stop_token);
        else
            kvs_jw_null(w);
        chunk_close(w);
    }
    if (o->end)
        write_end(g, w);
}

typedef struct err_out {
    unsigned status;
    const char *param, *msg;
} err_out;

/* An error chunk (kvs_http_error_obj's object) and [DONE]. */
static void write_error(const gen *g, const void *arg, kvs_jw *w)
{
    (void)g;
    const err_out *e = arg;
    sse_begin(w);
    kvs_jw_obj(w);
    kvs_jw_key(w, "error");
    kvs_jw_obj(w);
    kvs_jw_key(w, "message");
    kvs_jw_str_lossy(w, e->msg, strlen(e->msg));
    kvs_jw_key(w, "type");
    kvs_jw_cstr(w, e->status >= 500 ? "server_error" : "invalid_request_error");
    kvs_jw_key(w, "param");
    if (e->param && *e->param)
        kvs_jw_cstr(w, e->param);
    else
        kvs_jw_null(w);
    kvs_jw_key(w, "code");
    kvs_jw_null(w);
    kvs_jw_end(w);
    kvs_jw_end(w);
    sse_end(w);
    kvs_jw_raw(w, "data: [DONE]\n\n", 14);
}

/* Chat: choice i's role chunk, which comes first as OpenAI sends it. */
static void write_role(const gen *g, const void *arg, kvs_jw *w)
{
    chunk_open(g, w, *(const int32_t *)arg);
    kvs_jw_key(w, "delta");
    kvs_jw_obj(w);
    kvs_jw_key(w, "role");
    kvs_jw_cstr(w, "assistant");
    kvs_jw_key(w, "content");
    kvs_jw_cstr(w, "");
    kvs_jw_end(w);
    chunk_close_open_choice(w);
}

/* Write into the drained buffer what fn writes; when it does not fit, into
 * a one-off buffer of its size.  False when out of memory. */
static bool emit(gen *g, void (*fn)(const gen *, const void *, kvs_jw *), const void *arg)
{
    kvs_jw w;
    kvs_jw_init(&w, g->out, g->out_cap);
    fn(g, arg, &w);
    size_t need = kvs_jw_len(&w);
    if (!kvs_jw_overflow(&w)) {
        g->pend = g->out;
        g->pend_len = need;
        g->pend_off = 0;
        return true;
    }
    char *sp = malloc(need ? need : 1);
    if (!sp)
        return false;
    kvs_jw_init(&w, sp, need);
    fn(g, arg, &w);
    if (kvs_jw_overflow(&w)) { /* cannot happen: the same text */
        free(sp);
        return false;
    }
    free(g->spill);
    g->spill = g->pend = sp;
    g->pend_len = need;
    g->pend_off = 0;
    return true;
}

static bool stream_error(gen *g, unsigned status, const char *param, const char *msg)
{
    err_out e = {status, param, msg};
    if (!emit(g, write_error, &e))
        return false;
    g->done = true;
    return true;
}

/* One event into the (drained) buffer. */
static bool stream_event(gen *g, const kvs_srv_event *ev)
{
    if (ev->kind == KVS_EV_ERROR)
        return g->done || stream_error(g, (unsigned)ev->status, ev->param, ev->text);
    if (ev->kind != KVS_EV_TOKEN || ev->index < 0 || ev->index >= g->n || g->done)
        return true;
    if (ev->prompt_index > 0)
        return prompt_event(g, ev);
    gen_choice *c = &g->ch[ev->index];
    gen_prompt *pr = prompt_of(g, ev->index);
    bool sampled = ev->token >= 0 && !g->echo_only;
    ev_out o = {.ev = ev, .c = c, .want_lp = g->logprobs >= 0 && sampled,
                .text_len = g->echo_only ? 0 : ev->text_len, .offset = c->offset};
    bool echo_now = g->echo && !c->echoed && (sampled || ev->finished);
    const kvs_chat_delta *deltas = NULL; /* chat with parsers: this event's deltas (api_chat.c's parsers) */
    if (g->kind == KVS_OAI_CHAT && g->parse && (ev->text_len > 0 || ev->finished)) {
        /* the parser reads the whole output so far: kept in the answer pool */
        if (!text_append(g, c, ev->text, ev->text_len))
            return g->pool_full && stream_error(g, 503, NULL, ANSWER_FULL);
        if ((!c->cs && !(c->cs = kvs_chat_stream_new(&g->pcfg))) ||
            !kvs_chat_stream_step(c->cs, c->text, c->len, ev->finished, &deltas, &o.n_deltas))
            return false;
        o.deltas = deltas;
    }
    o.chunk = deltas ? o.n_deltas > 0 || ev->finished || o.want_lp
                     : o.text_len > 0 || ev->finished || o.want_lp || echo_now;
    note_event(g, ev, c);
    o.end = g->n_finished == g->n;
    char *both = NULL;
    o.text = ev->text;
    o.text_n = o.text_len;
    if (o.chunk && echo_now) { /* the prompt comes first, in the choice's first chunk (as vLLM) */
        if (!(both = malloc(pr->echo_len + o.text_len + 1)))
            return false;
        memcpy(both, pr->echo, pr->echo_len);
        memcpy(both + pr->echo_len, ev->text, o.text_len);
        o.text = both;
        o.text_n = pr->echo_len + o.text_len;
    }
    bool ok = !(o.chunk || o.n_deltas > 1 || o.end) || emit(g, write_event, &o);
    free(both);
    if (ok && o.chunk) {
        if (echo_now)
            c->echoed = true;
        json_decref(c->lp); /* the echoed prompt's logprobs went out */
        c->lp = NULL;
    }
    if (ok && o.end)
        g->done = true;
    return ok;
}

/* MHD wants more of the stream.  With nothing to send the connection
 * sleeps (returns 0) until the channel has an event or the client leaves. */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gen *g = cls;
    if (!g->done && kvs_http_gone(g->conn))
        return MHD_CONTENT_READER_END_WITH_ERROR;
    while (g->pend_off == g->pend_len) { /* drained: the next event */
        free(g->spill);
        g->spill = NULL;
        g->pend = g->out;
        g->pend_off = g->pend_len = 0;
        if (g->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (g->kind == KVS_OAI_CHAT && g->roles_sent < g->n) {
            if (!emit(g, write_role, &g->roles_sent))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            g->roles_sent++;
            continue;
        }
        kvs_srv_event *ev = g->held;
        if (ev) { /* events that came while the prompts were being accepted */
            g->held = ev->next;
            ev->next = NULL;
        } else if (!(ev = kvs_chan_pop(g->chan, 0))) {
            switch (kvs_http_sleep(g->conn)) {
            case KVS_HTTP_SLEPT: return 0;
            case KVS_HTTP_AGAIN: continue;
            case KVS_HTTP_GONE: return MHD_CONTENT_READER_END_WITH_ERROR;
            case KVS_HTTP_STOPPING: /* the engine has stopped: end the stream properly */
                if (!stream_error(g, 503, NULL, "the server is shutting down"))
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                continue;
            }
        }
        bool ok = stream_event(g, ev);
        kvs_event_free(ev);
        if (!ok)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = g->pend_len - g->pend_off < max ? g->pend_len - g->pend_off : max;
    memcpy(buf, g->pend + g->pend_off, n);
    g->pend_off += n;
    return (ssize_t)n;
}

/* MHD is done with the stream: finished, or the client went away. */
static void sse_free(void *cls)
{
    gen *g = cls;
    kvs_server *s = g->s;
    if (!g->done) {
        kvs_chan_close(g->chan);
        gen_abort(g);
    }
    gen_free(g);
    kvs_server_job_end(s);
}

static enum MHD_Result start_stream(gen *g, struct MHD_Connection *c)
{
    g->conn = c;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, KVS_HTTP_STREAM_BLOCK, sse_read, g,
                                                               sse_free);
    if (!r) {
        sse_free(g);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    kvs_http_decorate(c, r);
    kvs_http_response_long(c); /* its client may read it slowly */
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r); /* sse_free runs when MHD lets go of it */
    return ret;
}

/* ---- non-streaming ---- */

static bool collect_event(gen *g, const kvs_srv_event *ev)
{
    if (ev->kind != KVS_EV_TOKEN || ev->index < 0 || ev->index >= g->n)
        return true;
    if (ev->prompt_index > 0)
        return prompt_event(g, ev);
    gen_choice *c = &g->ch[ev->index];
    gen_prompt *pr = prompt_of(g, ev->index);
    if (g->echo && !c->echoed) {
        if (!text_append(g, c, pr->echo, pr->echo_len))
            return false;
        c->echoed = true;
    }
    if (g->echo_only) {
        note_event(g, ev, c);
        return true;
    }
    if (ev->text_len && !text_append(g, c, ev->text, ev->text_len))
        return false;
    if (g->logprobs >= 0 && ev->token >= 0 &&
        !rec_add(g, c, ev->token, ev->logprob, ev->n_top, ev->top_ids, ev->top_logprobs, c->offset))
        return false;
    note_event(g, ev, c);
    return true;
}

/* ---- the answer, written as it is sent ----
 *
 * The document is the one the jansson version built (the same text
 * json_dumps gave), written from the stored text and records in small
 * units (the envelope, a choice's head, a slice of a string, one logprob
 * entry, ...) by one writer whose nesting state carries from unit to unit.
 * A dry run gives the Content-Length; then MHD pulls the units through
 * answer_read, each written into a scratch run of the answer pool (grown
 * only for a unit larger than any before: a parsed tool_calls array), so
 * no buffer the size of the document is ever needed. */

#define AU_SLICE 512               /* bytes of a string per unit */

static const char *const LP_KEYS[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};

/* Open a string value (its opening quote only: the slices and the closing
 * quote follow in AU_TEXT units). */
static void str_begin(kvs_jw *w, ans_cur *u, const char *s, size_t n, au_stage after)
{
    kvs_jw_str(w, "", 0);
    w->len--; /* the closing quote: written by the last slice */
    u->s = s;
    u->n = n;
    u->pos = 0;
    u->after = after;
    u->st = AU_TEXT;
}

/* The next slice of the string, cut between UTF-8 sequences (an invalid
 * byte is one sequence), escaped as kvs_jw_str_lossy escapes the whole. */
static void str_slice(kvs_jw *w, ans_cur *u)
{
    const unsigned char *p = (const unsigned char *)u->s;
    size_t a = u->pos, b = a;
    while (b < u->n && b - a < AU_SLICE) {
        size_t l = kvs_jw_utf8_seq(p + b, u->n - b);
        b += l ? l : 1;
    }
    if (b > a) {
        char tmp[KVS_JW_STR_MAX(AU_SLICE + 4)];
        kvs_jw t;
        kvs_jw_init(&t, tmp, sizeof tmp);
        kvs_jw_str_lossy(&t, u->s + a, b - a);
        kvs_jw_raw(w, tmp + 1, kvs_jw_len(&t) - 2);
    }
    u->pos = b;
    if (b >= u->n) {
        kvs_jw_raw(w, "\"", 1);
        u->st = u->after;
    }
}

static void lp_item(const gen *g, kvs_jw *w, const gen_choice *c, const lp_rec *r, int f)
{
    const kvs_tokenizer *t = g->s->inst->tok;
    if (g->kind != KVS_OAI_COMPLETION) {
        jw_lp_chat_entry(w, t, r->token, r->logprob);
        kvs_jw_key(w, "top_logprobs");
        kvs_jw_arr(w);
        for (int32_t k = 0; k < r->n_top; k++) {
            jw_lp_chat_entry(w, t, rec_ids(r)[k], rec_lps(g, r)[k]);
            kvs_jw_end(w);
        }
        kvs_jw_end(w);
        kvs_jw_end(w);
        return;
    }
    (void)c;
    bool none = r->n_top < 0; /* the echoed prompt's first token */
    switch (f) {
    case 0: jw_token(w, t, r->token); break;
    case 1: none ? kvs_jw_null(w) : jw_lp_val(w, r->logprob); break;
    case 2:
        if (none)
            kvs_jw_null(w);
        else
            jw_lp_top(w, t, r->token, r->logprob, r->n_top, rec_ids(r), rec_lps(g, r));
        break;
    default: kvs_jw_int(w, (long long)r->offset); break;
    }
}

/* One unit of the answer; advances u. */
static void ans_unit(const gen *g, kvs_jw *w, ans_cur *u)
{
    bool chat = g->kind == KVS_OAI_CHAT;
    const gen_choice *c = u->i < g->n ? &g->ch[u->i] : NULL;
    switch (u->st) {
    case AU_HEAD:
        kvs_jw_obj(w);
        kvs_jw_key(w, "id");
        kvs_jw_cstr(w, g->id);
        kvs_jw_key(w, "object");
        kvs_jw_cstr(w, chat ? "chat.completion" : "text_completion");
        kvs_jw_key(w, "created");
        kvs_jw_int(w, (long long)g->created);
        kvs_jw_key(w, "model");
        kvs_jw_cstr(w, g->s->model_name);
        kvs_jw_key(w, "choices");
        kvs_jw_arr(w);
        u->i = 0;
        u->st = g->n ? AU_CHOICE : AU_TAIL;
        break;
    case AU_CHOICE:
        kvs_jw_obj(w);
        kvs_jw_key(w, "index");
        kvs_jw_int(w, u->i);
        if (chat) {
            kvs_jw_key(w, "message");
            kvs_jw_obj(w);
            kvs_jw_key(w, "role");
            kvs_jw_cstr(w, "assistant");
        }
        if (chat && g->parse) { /* reasoning_content, tool_calls (api_chat.c's parsers) */
            u->mi = json_object_iter(c->msg);
            u->st = AU_MSG_KEY;
        } else {
            kvs_jw_key(w, chat ? "content" : "text");
            str_begin(w, u, c->text ? c->text : "", c->len, chat ? AU_MSG_END : AU_LP_OPEN);
        }
        break;
    case AU_TEXT: str_slice(w, u); break;
    case AU_MSG_KEY: {
        if (!u->mi) {
            u->st = AU_MSG_END;
            break;
        }
        const char *key = json_object_iter_key(u->mi);
        json_t *v = json_object_iter_value(u->mi);
        u->mi = json_object_iter_next(c->msg, u->mi);
        if (strcmp(key, "role") == 0)
            break;
        kvs_jw_key(w, key);
        if (json_is_string(v))
            str_begin(w, u, json_string_value(v), json_string_length(v), AU_MSG_KEY);
        else
            kvs_api_jw_json(w, v);
        break;
    }
    case AU_MSG_END:
        kvs_jw_end(w);
        u->st = AU_LP_OPEN;
        break;
    case AU_LP_OPEN:
        kvs_jw_key(w, "logprobs");
        if (g->logprobs < 0) {
            kvs_jw_null(w);
            u->st = AU_CHOICE_END;
            break;
        }
        kvs_jw_obj(w);
        kvs_jw_key(w, chat ? "content" : LP_KEYS[0]);
        kvs_jw_arr(w);
        u->f = 0;
        u->j = 0;
        u->st = AU_LP_ITEM;
        break;
    case AU_LP_ITEM:
        if (u->j < c->n_rec) {
            lp_item(g, w, c, rec_at(g, c, u->j++), u->f);
            break;
        }
        kvs_jw_end(w);
        if (!chat && ++u->f < 4) {
            kvs_jw_key(w, LP_KEYS[u->f]);
            kvs_jw_arr(w);
            u->j = 0;
            break;
        }
        kvs_jw_end(w);
        u->st = AU_CHOICE_END;
        break;
    case AU_CHOICE_END: {
        const char *fin = finish_name(c->reason);
        if (chat && g->parse && json_object_get(c->msg, "tool_calls") && strcmp(fin, "stop") == 0)
            fin = "tool_calls";
        kvs_jw_key(w, "finish_reason");
        kvs_jw_cstr(w, fin);
        kvs_jw_key(w, "stop_reason"); /* the stop string or stop token id that ended the choice, else null */
        if (c->finished && c->stop_string >= 0 && (size_t)c->stop_string < g->n_stop)
            kvs_jw_str_lossy(w, g->stop[c->stop_string], g->stop_len[c->stop_string]);
        else if (c->finished && c->stop_token >= 0)
            kvs_jw_int(w, c->stop_token);
        else
            kvs_jw_null(w);
        kvs_jw_end(w);
        u->st = ++u->i < g->n ? AU_CHOICE : AU_TAIL;
        break;
    }
    case AU_TAIL:
        kvs_jw_end(w);
        kvs_jw_key(w, "usage");
        jw_usage(g, w);
        kvs_jw_end(w);
        u->st = AU_DONE;
        break;
    case AU_DONE: break;
    }
}

/* The next unit into the scratch run (g->pend): false when the pool has no
 * room for a unit larger than the run. */
static bool ans_next(gen *g)
{
    kvs_jw save = g->aw;
    ans_cur usave = g->ac;
    for (;;) {
        g->aw.buf = g->sc;
        g->aw.cap = g->sc_cap;
        g->aw.len = 0;
        ans_unit(g, &g->aw, &g->ac);
        size_t need = kvs_jw_len(&g->aw);
        if (need <= g->sc_cap) {
            g->pend = g->sc;
            g->pend_len = need;
            g->pend_off = 0;
            return true;
        }
        void *p = g->sc;
        if (!answer_room(g, &p, &g->sc_cap, 0, need))
            return false;
        g->sc = p;
        g->aw = save;
        g->ac = usave;
    }
}

static ssize_t answer_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gen *g = cls;
    size_t k = 0;
    while (k < max) {
        if (g->pend_off == g->pend_len) {
            if (g->ac.st == AU_DONE)
                break;
            if (!ans_next(g))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            continue;
        }
        size_t n = g->pend_len - g->pend_off < max - k ? g->pend_len - g->pend_off : max - k;
        memcpy(buf + k, g->pend + g->pend_off, n);
        g->pend_off += n;
        k += n;
    }
    return k ? (ssize_t)k : MHD_CONTENT_READER_END_OF_STREAM;
}

static void answer_done(void *cls)
{
    gen *g = cls;
    kvs_server *s = g->s;
    gen_free(g);
    kvs_server_job_end(s);
}

/* Answer (g is done with: freed here or when MHD is done with the answer). */
static enum MHD_Result send_answer(gen *g, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    if (g->kind == KVS_OAI_CHAT && g->parse)
        for (int32_t i = 0; i < g->n; i++) { /* once per choice, at the end */
            gen_choice *ch = &g->ch[i];
            if (!(ch->msg = kvs_chat_parse_message(&g->pcfg, ch->text ? ch->text : "", ch->len))) {
                ret = kvs_http_error(c, 500, NULL, NULL, "out of memory");
                answer_done(g);
                return ret;
            }
        }
    kvs_jw w;
    kvs_jw_init(&w, NULL, 0);
    ans_cur u = {.st = AU_HEAD};
    while (u.st != AU_DONE)
        ans_unit(g, &w, &u);
    size_t total = kvs_jw_len(&w);
    void *p = g->sc; /* reserved when the request was admitted */
    if (!answer_room(g, &p, &g->sc_cap, 0, ANSWER_FIRST_RUN)) {
        ret = kvs_http_status_error(c, KVS_E_BUDGET, NULL, ANSWER_FULL);
        answer_done(g);
        return ret;
    }
    g->sc = p;
    kvs_jw_init(&g->aw, NULL, 0);
    g->ac = (ans_cur){.st = AU_HEAD};
    g->pend = g->sc;
    g->pend_len = g->pend_off = 0;
    struct MHD_Response *r = MHD_create_response_from_callback(total, KVS_HTTP_STREAM_BLOCK, answer_read, g,
                                                               answer_done);
    if (!r) {
        answer_done(g);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    kvs_http_decorate(c, r);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r); /* answer_done runs when MHD lets go of it */
    return ret;
}

/* ---- the request ---- */

static enum MHD_Result length_error(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                                    size_t n_prompt, const char *prompt_param, bool *failed)
{
    const long long L = s->max_model_len, P = (long long)n_prompt, M = r->params.max_tokens;
    *failed = true;
    if (P >= L)
        return kvs_http_error(c, 400, prompt_param, "context_length_exceeded",
                              "This model's maximum context length is %lld tokens. However, your request has %lld "
                              "input tokens. Please reduce the length of the input (at least one token must be "
                              "left for the completion).", L, P);
    if (M > 0 && P + M > L)
        return kvs_http_error(c, 400, r->max_tokens_field ? r->max_tokens_field : "max_tokens",
                              "context_length_exceeded",
                              "This model's maximum context length is %lld tokens. However, you requested %lld "
                              "tokens (%lld in the messages, %lld in the completion). Please reduce the length of "
                              "the messages or completion.", L, P + M, P, M);
    *failed = false;
    return MHD_YES;
}

/* Records a choice of prompt k can keep: one per output token (max_tokens,
 * else up to max_model_len) and, with echo, one per prompt token. */
static size_t answer_recs(const kvs_server *s, const kvs_oai_request *r, size_t n_prompt)
{
    size_t out = r->params.max_tokens > 0 ? (size_t)r->params.max_tokens : (size_t)s->max_model_len - n_prompt;
    return out + (r->echo ? n_prompt : 0);
}

/* A non-streamed answer with logprobs keeps one record per token of every
 * choice (and per prompt token with echo) in the answer pool, and the most
 * it can need is known before it starts: each choice takes its run for all
 * of them when the request is admitted (gen_run), so an answer never runs
 * out of room for its records half-way.  A request that could not fit even
 * in an empty pool is a 400 naming the flag (retrying cannot help); one
 * that finds the pool busy is a 503 before anything is computed.  (The
 * text cannot be bounded so well: it grows in the pool as it comes, and a
 * full pool then is a 503 too.) */
static bool answer_fits(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                        const size_t *n_prompts, int32_t n_prompt_lists, enum MHD_Result *ret)
{
    const size_t stride = rec_stride_of(rec_top_of(r->params.logprobs));
    size_t need = ANSWER_FIRST_RUN; /* the run it is sent from */
    for (int32_t k = 0; k < n_prompt_lists; k++) {
        size_t run = 0; /* a choice's records are one run of whole pages, then its first run of text */
        if (r->params.logprobs >= 0)
            run = (answer_recs(s, r, n_prompts[k]) * stride + KVS_HTTP_POOL_PAGE - 1) / KVS_HTTP_POOL_PAGE *
                  KVS_HTTP_POOL_PAGE;
        need += (size_t)r->n * (run + ANSWER_FIRST_RUN);
    }
    if (need <= s->answer_pool.bytes)
        return true;
    if (r->params.logprobs < 0)
        *ret = kvs_http_error(c, 400, "n", "answer_too_large",
                              "this request's %d choices need %zu bytes of the server's answer pool, which holds %zu "
                              "(--http-answer-pool); lower n, stream it, or start the server with a larger "
                              "--http-answer-pool", r->n * n_prompt_lists, need, s->answer_pool.bytes);
    else
        *ret = kvs_http_error(c, 400, "logprobs", "answer_too_large",
                              "this request's logprobs could need %zu bytes of the server's answer pool, which holds "
                              "%zu (--http-answer-pool); lower n, %s or logprobs, stream it, or start the server with "
                              "a larger --http-answer-pool", need, s->answer_pool.bytes,
                              r->max_tokens_field ? r->max_tokens_field : "max_tokens");
    return false;
}

/* Echo: the prompt's text (as sent, or decoded from its ids) and, with
 * logprobs, where each of its tokens starts in it. */
static bool echo_prepare(gen *g, gen_prompt *pr, const kvs_oai_request *r, size_t k)
{
    const kvs_tokenizer *t = g->s->inst->tok;
    size_t len;
    const char *text = r->prompt ? kvs_oai_prompt_text(r, k, &len) : NULL;
    if (text) {
        if (!(pr->echo = malloc(len + 1)))
            return false;
        memcpy(pr->echo, text, len);
        pr->echo[len] = '\0';
        pr->echo_len = len;
    } else if (!(pr->echo = kvs_api_decode(t, pr->ids, (size_t)pr->n_ids, &pr->echo_len))) {
        return false;
    }
    if (g->logprobs < 0)
        return true;
    if (!(pr->tok_off = malloc((size_t)pr->n_ids * sizeof *pr->tok_off)))
        return false;
    size_t off = 0;
    bool strip = kvs_tok_strip_leading_space(t), first = true;
    char probe[1];
    for (int32_t i = 0; i < pr->n_ids; i++) {
        pr->tok_off[i] = off < pr->echo_len ? off : pr->echo_len;
        size_t m = kvs_tok_decode_token(t, pr->ids[i], false, probe, sizeof probe);
        if (m && first && strip && probe[0] == ' ')
            m--;
        if (m)
            first = false;
        off += m;
    }
    return true;
}

/* ---- waiting without a thread ---- */

static void gen_end(gen *g, bool abort)
{
    kvs_server *s = g->s;
    if (abort) {
        kvs_chan_close(g->chan);
        gen_abort(g);
    }
    gen_free(g);
    kvs_server_job_end(s);
}

static void gen_cancel(void *ctx) { gen_end(ctx, true); }

/* A non-streaming request waiting for its events: collect what is there,
 * answer when every choice is finished, else sleep until woken. */
static enum MHD_Result gen_poll(void *ctx, struct MHD_Connection *c)
{
    gen *g = ctx;
    enum MHD_Result ret;
    while (g->n_finished < g->n) {
        kvs_srv_event *ev = kvs_chan_pop(g->chan, 0);
        if (!ev) {
            switch (kvs_http_sleep(c)) {
            case KVS_HTTP_SLEPT: return kvs_http_defer(c, gen_poll, gen_cancel, g);
            case KVS_HTTP_AGAIN: continue;
            case KVS_HTTP_GONE: /* nobody to answer: free the blocks now */
                gen_end(g, true);
                return MHD_NO;
            case KVS_HTTP_STOPPING:
                ret = kvs_http_error(c, 503, NULL, "shutting_down", "the server is shutting down");
                gen_end(g, true);
                return ret;
            }
        }
        if (ev->kind == KVS_EV_ERROR) {
            ret = kvs_http_error(c, (unsigned)ev->status, NULL, NULL, "%s", ev->text);
            kvs_event_free(ev);
            gen_end(g, true);
            return ret;
        }
        bool ok = collect_event(g, ev);
        kvs_event_free(ev);
        if (!ok) {
            bool full = g->pool_full;
            gen_end(g, true);
            return full ? kvs_http_status_error(c, KVS_E_BUDGET, NULL, ANSWER_FULL)
                        : kvs_http_error(c, 500, NULL, NULL, "out of memory");
        }
    }
    return send_answer(g, c);
    return ret;
}

/* The submissions' replies (one each, in order), and events of prompts
 * accepted earlier, kept as usual; then the answer starts. */
static enum MHD_Result gen_accept(void *ctx, struct MHD_Connection *c)
{
    gen *g = ctx;
    while (g->n_replies < g->n_submitted) {
        kvs_srv_event *ev = kvs_chan_pop(g->chan, 0);
        if (!ev) {
            switch (kvs_http_sleep(c)) {
            case KVS_HTTP_SLEPT: return kvs_http_defer(c, gen_accept, gen_cancel, g);
            case KVS_HTTP_AGAIN: continue;
            case KVS_HTTP_GONE: gen_end(g, true); return MHD_NO;
            case KVS_HTTP_STOPPING: /* the stopped loop has answered every submission */
                if (!(ev = kvs_chan_pop(g->chan, POLL_MS)))
                    continue;
                break;
            }
        }
        if (ev->kind == KVS_EV_ACCEPTED) {
            g->pr[g->n_replies++].accepted = true;
        } else if (ev->kind == KVS_EV_ERROR) { /* a submission refused, or the engine failing */
            if (g->err_status == 0) {
                g->err_status = (unsigned)ev->status;
                snprintf(g->err_param, sizeof g->err_param, "%s", ev->param);
                snprintf(g->err_msg, sizeof g->err_msg, "%s", ev->text);
            }
            if (ev->reply)
                g->n_replies++;
        } else if (g->stream) { /* kept for the stream, which has not started */
            ev->next = NULL;
            if (g->held)
                g->held_tail->next = ev;
            else
                g->held = ev;
            g->held_tail = ev;
            continue;
        } else if (g->keep_ok) {
            g->keep_ok = collect_event(g, ev);
        }
        kvs_event_free(ev);
    }
    /* The loop is done with every submission. */
    gen_sub_free(g->gs);
    g->gs = NULL;
    if (g->err_status || !g->keep_ok) {
        unsigned st = g->err_status;
        bool oom = !g->keep_ok, full = g->pool_full;
        char param[32], msg[sizeof g->err_msg];
        snprintf(param, sizeof param, "%s", g->err_param);
        snprintf(msg, sizeof msg, "%s", g->err_msg);
        gen_end(g, true);
        if (oom && full)
            return kvs_http_status_error(c, KVS_E_BUDGET, NULL, ANSWER_FULL);
        if (oom)
            return kvs_http_error(c, 500, NULL, NULL, "out of memory");
        return kvs_http_error(c, st, param[0] ? param : NULL, st == 503 ? "shutting_down" : NULL, "%s", msg);
    }
    g->last_check = kvs_now();
    return g->stream ? start_stream(g, c) : gen_poll(g, c);
}

/* Copy what the engine reads from the request when it takes it: the
 * prompts and the parameters' arrays (kvs_engine_add copies them in turn).
 * A new pointer field in kvs_request_params must be copied here too. */
_Static_assert(sizeof(kvs_request_params) == KVS_GEN_PARAMS_SIZE,
               "kvs_request_params changed: copy any new pointer field in gen_sub_new (api_gen.c)");
static gen_sub *gen_sub_new(gen *g, const kvs_oai_request *r, const int32_t *const *prompts, const size_t *n_prompts,
                            const bool *strip, int32_t P)
{
    gen_sub *gs = calloc(1, sizeof *gs);
    if (!gs)
        return NULL;
    gs->n = P;
    const kvs_request_params *rp = &r->params;
    gs->params = *rp;
    gs->params.stop = NULL;
    gs->params.stop_len = NULL;
    gs->params.n_stop = 0;
    gs->params.stop_token_ids = NULL;
    gs->params.n_stop_token_ids = 0;
    gs->params.logit_bias = NULL;
    gs->params.n_logit_bias = 0;
    gs->params.grammar = kvs_grammar_ref(rp->grammar); /* (NULL stays NULL); unref'd in gen_sub_free */
    if (!(gs->subs = calloc((size_t)P, sizeof *gs->subs)) || !(gs->prompts = calloc((size_t)P, sizeof *gs->prompts)))
        goto fail;
    if (rp->n_stop) {
        if (!(gs->stops = calloc(rp->n_stop, sizeof *gs->stops)) ||
            !(gs->stop_len = malloc(rp->n_stop * sizeof *gs->stop_len)))
            goto fail;
        for (; gs->n_stops < rp->n_stop; gs->n_stops++) {
            size_t i = gs->n_stops, m = rp->stop_len ? rp->stop_len[i] : strlen(rp->stop[i]);
            if (!(gs->stops[i] = malloc(m + 1)))
                goto fail;
            memcpy(gs->stops[i], rp->stop[i], m);
            gs->stops[i][m] = '\0';
            gs->stop_len[i] = m;
        }
        gs->params.stop = (const char *const *)gs->stops;
        gs->params.stop_len = gs->stop_len;
        gs->params.n_stop = gs->n_stops;
    }
    if (rp->n_stop_token_ids) {
        if (!(gs->stop_ids = malloc(rp->n_stop_token_ids * sizeof *gs->stop_ids)))
            goto fail;
        memcpy(gs->stop_ids, rp->stop_token_ids, rp->n_stop_token_ids * sizeof *gs->stop_ids);
        gs->params.stop_token_ids = gs->stop_ids;
        gs->params.n_stop_token_ids = rp->n_stop_token_ids;
    }
    if (rp->n_logit_bias) {
        if (!(gs->bias = malloc(rp->n_logit_bias * sizeof *gs->bias)))
            goto fail;
        memcpy(gs->bias, rp->logit_bias, rp->n_logit_bias * sizeof *gs->bias);
        gs->params.logit_bias = gs->bias;
        gs->params.n_logit_bias = rp->n_logit_bias;
    }
    for (int32_t k = 0; k < P; k++) {
        size_t n = n_prompts[k];
        if (!(gs->prompts[k] = malloc((n ? n : 1) * sizeof **gs->prompts)))
            goto fail;
        memcpy(gs->prompts[k], prompts[k], n * sizeof **gs->prompts);
        gs->subs[k] = (kvs_submit){.n = r->n, .index_base = k * r->n, .prompt = gs->prompts[k], .n_prompt = n,
                                   .params = gs->params, .t_arrival = kvs_now(), .length_param = r->max_tokens_field,
                                   .reply = kvs_event_new(KVS_EV_ACCEPTED, NULL, KVS_SUBMIT_REPLY_ROOM)};
        gs->subs[k].params.strip_leading_space = strip[k];
        if (!gs->subs[k].reply)
            goto fail;
    }
    (void)g;
    return gs;
fail:
    for (int32_t k = 0; gs->subs && k < P; k++)
        kvs_event_free(gs->subs[k].reply);
    gen_sub_free(gs);
    return NULL;
}

static enum MHD_Result gen_run(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                               const int32_t *const *prompts, const size_t *n_prompts, const bool *strip,
                               int32_t n_prompt_lists, const char *prompt_param, const kvs_chat_parse_cfg *pcfg)
{
    enum MHD_Result ret;
    for (int32_t k = 0; k < n_prompt_lists; k++) {
        bool failed;
        ret = length_error(s, c, r, n_prompts[k], prompt_param, &failed);
        if (failed)
            return ret;
    }
    const int32_t V = kvs_tok_n_vocab(s->inst->tok);
    for (size_t i = 0; i < r->params.n_logit_bias; i++)
        if (r->params.logit_bias[i].token >= V)
            return kvs_http_error(c, 400, "logit_bias", NULL, "logit_bias: token id %d is outside the vocabulary "
                                  "[0, %d)", r->params.logit_bias[i].token, V);
    if (!r->stream && !answer_fits(s, c, r, n_prompts, n_prompt_lists, &ret))
        return ret;
    if (!kvs_server_job_begin(s))
        return kvs_http_error(c, 503, NULL, "shutting_down", "the server is shutting down");
    const int32_t P = n_prompt_lists, N = P * r->n;
    gen *g = calloc(1, sizeof *g);
    if (!g || !(g->ch = calloc((size_t)N, sizeof *g->ch)) || !(g->pr = calloc((size_t)P, sizeof *g->pr)) ||
        !(g->chan = kvs_chan_new())) {
        gen_free(g);
        kvs_server_job_end(s);
        return kvs_http_error(c, 500, NULL, NULL, "out of memory");
    }
    g->s = s;
    g->kind = r->kind;
    g->n = N;
    g->per_prompt = r->n;
    g->n_prompts = P;
    g->logprobs = r->params.logprobs;
    g->include_usage = r->include_usage;
    g->echo = r->echo;
    g->echo_only = r->echo_only;
    g->created = (json_int_t)time(NULL);
    g->fd = kvs_http_fd(c);
    if (pcfg && r->kind == KVS_OAI_CHAT) {
        g->parse = true;
        g->pcfg = *pcfg;
        g->pcfg.id_seed ^= s->salt;
    }
    bool oom = false;
    for (size_t i = 0; i < r->params.n_stop && i < 8; i++) {
        size_t m = r->params.stop_len ? r->params.stop_len[i] : strlen(r->params.stop[i]);
        if (!(g->stop[i] = malloc(m + 1))) {
            oom = true;
            break;
        }
        memcpy(g->stop[i], r->params.stop[i], m);
        g->stop[i][m] = '\0';
        g->stop_len[i] = m;
        g->n_stop = i + 1;
    }
    for (int32_t k = 0; k < P && !oom; k++) {
        gen_prompt *pr = &g->pr[k];
        pr->ids = prompts[k];
        pr->first_id = prompts[k][0];
        pr->n_ids = (int32_t)n_prompts[k];
        pr->n_prompt = (int32_t)n_prompts[k];
        oom = g->echo && !echo_prepare(g, pr, r, (size_t)k);
    }
    for (int32_t i = 0; i < N; i++) {
        g->ch[i].stop_string = g->ch[i].stop_token = -1;
        g->ch[i].offset = g->echo ? g->pr[i / r->n].echo_len : 0; /* text_offset counts the echoed prompt */
    }
    g->stream = r->stream;
    g->rec_top = rec_top_of(r->params.logprobs);
    g->rec_stride = rec_stride_of(g->rec_top);
    /* A non-streamed answer takes its runs now (see answer_fits): the
     * records of every choice, each choice's first run of text and the run
     * it is sent from, so that the pool being busy is a 503 before anything
     * is computed, and only text longer than a run can meet a full pool. */
    bool full = false;
    for (int32_t i = 0; i < N && !oom && !g->stream && !full; i++) {
        gen_choice *ch = &g->ch[i];
        size_t n = g->logprobs >= 0 ? answer_recs(s, r, n_prompts[i / r->n]) * g->rec_stride : 0;
        full = (n && !(ch->rec = kvs_http_pool_alloc(&s->answer_pool, n, &ch->rec_cap))) ||
               !(ch->text = kvs_http_pool_alloc(&s->answer_pool, ANSWER_FIRST_RUN, &ch->cap));
    }
    if (!oom && !g->stream && !full)
        full = !(g->sc = kvs_http_pool_alloc(&s->answer_pool, ANSWER_FIRST_RUN, &g->sc_cap));
    if (full) {
        kvs_metrics_refused_for_memory(&s->metrics);
        gen_free(g);
        kvs_server_job_end(s);
        return kvs_http_status_error(c, KVS_E_BUDGET, NULL, ANSWER_FULL);
    }
    if (!oom && g->stream && !(g->out = kvs_http_pool_alloc(&s->stream_pool, stream_out_bytes(g), &g->out_cap))) {
        kvs_metrics_refused_for_memory(&s->metrics);
        gen_free(g);
        kvs_server_job_end(s);
        return kvs_http_error(c, 503, NULL, NULL, "the server is busy streaming other responses (its stream buffer "
                              "pool is full); retry");
    }
    g->conn = c;
    g->keep_ok = true;
    g->n_submitted = P; /* until submitted: g->gs is ours (see gen_free) */
    g->n_replies = P;
    if (!oom && (oom = !(g->gs = gen_sub_new(g, r, prompts, n_prompts, strip, P))) == false)
        for (int32_t k = 0; k < P; k++)
            g->gs->subs[k].chan = g->chan;
    if (oom) {
        gen_free(g);
        kvs_server_job_end(s);
        return kvs_http_error(c, 500, NULL, NULL, "out of memory");
    }
    kvs_http_bind(c, g->chan); /* its events wake this connection */
    /* Submit every prompt; the replies (one per submission) and any events
     * of prompts accepted earlier come to gen_accept. */
    kvs_submit *sb = g->gs->subs;
    int32_t n_submitted = 0;
    for (; n_submitted < P; n_submitted++)
        if (!kvs_loop_submit(s->loop, &sb[n_submitted]))
            break;
    for (int32_t k = n_submitted; k < P; k++) {
        kvs_event_free(sb[k].reply);
        sb[k].reply = NULL;
    }
    for (int32_t k = 0; k < n_submitted; k++) {
        g->pr[k].base = sb[k].base_id;
        if (k == 0) {
            snprintf(g->id, sizeof g->id, "%s-%016" PRIx64, r->kind == KVS_OAI_CHAT ? "chatcmpl" : "cmpl",
                     (uint64_t)(s->salt ^ (sb[0].base_id * (uint64_t)0x9E3779B97F4A7C15ull)));
            g->pcfg.id_seed ^= sb[0].base_id * 0xD6E8FEB86659FD93ull; /* tool-call ids differ between requests */
        }
    }
    g->n_submitted = n_submitted;
    g->n_replies = 0;
    g->err_status = n_submitted < P ? 503 : 0;
    snprintf(g->err_msg, sizeof g->err_msg, "%s", "the server is shutting down");
    return gen_accept(g, c);
}

enum MHD_Result kvs_gen_run_batch(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                                  const int32_t *const *prompts, const size_t *n_prompts, const bool *strip,
                                  int32_t n_prompt_lists, const char *prompt_param)
{
    return gen_run(s, c, r, prompts, n_prompts, strip, n_prompt_lists, prompt_param, NULL);
}

enum MHD_Result kvs_gen_run(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                            const int32_t *prompt, size_t n_prompt, const char *prompt_param)
{
    return kvs_gen_run_chat(s, c, r, prompt, n_prompt, prompt_param, NULL);
}

enum MHD_Result kvs_gen_run_chat(kvs_server *s, struct MHD_Connection *c, const kvs_oai_request *r,
                                 const int32_t *prompt, size_t n_prompt, const char *prompt_param,
                                 const kvs_chat_parse_cfg *pcfg)
{
    bool strip = r->params.strip_leading_space;
    return gen_run(s, c, r, &prompt, &n_prompt, &strip, 1, prompt_param, pcfg);
}
