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
#define KVS_GEN_PARAMS_SIZE 96

typedef struct gen_choice {
    char *text;                    /* non-streaming: the text so far */
    size_t len, cap;
    json_t *lp;                    /* non-streaming: logprobs so far */
    size_t offset;                 /* bytes of text so far (text_offset) */
    int32_t n_output;
    kvs_finish_reason reason;
    bool finished;
    kvs_chat_stream *cs;           /* chat with parsers, streaming: the parser state */
} gen_choice;

typedef struct gen {
    kvs_server *s;
    kvs_oai_kind kind;
    int32_t n, logprobs;
    bool include_usage;
    kvs_chan *chan;
    struct MHD_Connection *conn;   /* the connection it answers (woken by the channel) */
    uint64_t base;
    char id[48];
    json_int_t created;
    int fd;
    int32_t n_prompt, n_cached, n_finished;
    gen_choice *ch;
    char *out;                     /* streaming: bytes not yet handed to MHD */
    size_t out_len, out_off, out_cap;
    bool done;                     /* streaming: [DONE] is queued */
    double last_check;             /* when the client was last checked for a hang-up */
    bool parse;                    /* chat: reasoning / tool-call parsing per pcfg (api_chat.c) */
    kvs_chat_parse_cfg pcfg;
    struct gen_sub *gs;            /* the submission, until its first event */
    bool stream, accepted;         /* accepted: the submission's first event came */
} gen;

/* A submission and what the engine thread reads from it when it takes it,
 * which may be long after the handler has returned: copies of the prompt
 * and of the parameters' arrays.  If the client leaves first, the block is
 * left to the channel (kvs_chan_set_dtor), whose last reference the loop
 * drops only once it is done with the submission. */
typedef struct gen_sub {
    kvs_submit sub;
    kvs_request_params params;
    int32_t *prompt;
    char **stops;
    size_t n_stops;
    int32_t *stop_ids;
} gen_sub;

static void gen_sub_free(void *arg)
{
    gen_sub *gs = arg;
    if (!gs)
        return;
    free(gs->prompt);
    for (size_t i = 0; i < gs->n_stops; i++)
        free(gs->stops[i]);
    free(gs->stops);
    free(gs->stop_ids);
    kvs_grammar_unref(gs->params.grammar);
    free(gs);
}

static void gen_free(gen *g)
{
    if (!g)
        return;
    for (int32_t i = 0; g->ch && i < g->n; i++) {
        free(g->ch[i].text);
        json_decref(g->ch[i].lp);
        kvs_chat_stream_free(g->ch[i].cs);
    }
    free(g->ch);
    free(g->out);
    if (g->gs && !g->accepted && g->chan) /* the loop may still read it: the channel frees it */
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

/* JSON cannot hold -inf: vLLM writes -9999.0 for it. */
static json_t *lp_val(float v) { return json_real(isfinite(v) ? (double)v : -9999.0); }

static void lp_completion_add(json_t *lp, const kvs_tokenizer *t, const kvs_srv_event *ev, size_t offset)
{
    json_array_append_new(json_object_get(lp, "tokens"), kvs_api_token_str(t, ev->token, NULL));
    json_array_append_new(json_object_get(lp, "token_logprobs"), lp_val(ev->logprob));
    json_t *top = json_object();
    for (int32_t k = 0; k < ev->n_top; k++) {
        json_t *ks = kvs_api_token_str(t, ev->top_ids[k], NULL);
        if (ks && !json_object_get(top, json_string_value(ks)))
            json_object_set_new(top, json_string_value(ks), lp_val(ev->top_logprobs[k]));
        json_decref(ks);
    }
    json_t *ks = kvs_api_token_str(t, ev->token, NULL); /* the sampled token is always listed */
    if (ks && !json_object_get(top, json_string_value(ks)))
        json_object_set_new(top, json_string_value(ks), lp_val(ev->logprob));
    json_decref(ks);
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
    json_array_append_new(json_object_get(lp, "text_offset"), json_integer((json_int_t)offset));
}

static json_t *lp_completion_new(void)
{
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
}

static json_t *lp_chat_entry(const kvs_tokenizer *t, int32_t id, float logprob)
{
    json_t *bytes = NULL;
    json_t *tok = kvs_api_token_str(t, id, &bytes);
    return json_pack("{s:o, s:o, s:o}", "token", tok, "logprob", lp_val(logprob), "bytes", bytes);
}

static void lp_chat_add(json_t *lp, const kvs_tokenizer *t, const kvs_srv_event *ev)
{
    json_t *e = lp_chat_entry(t, ev->token, ev->logprob);
    json_t *top = json_array();
    for (int32_t k = 0; k < ev->n_top; k++)
        json_array_append_new(top, lp_chat_entry(t, ev->top_ids[k], ev->top_logprobs[k]));
    json_object_set_new(e, "top_logprobs", top);
    json_array_append_new(json_object_get(lp, "content"), e);
}

static json_t *lp_new(const gen *g)
{
    return g->kind == KVS_OAI_COMPLETION ? lp_completion_new() : json_pack("{s:[]}", "content");
}

static void lp_add(const gen *g, json_t *lp, const kvs_srv_event *ev, size_t offset)
{
    const kvs_tokenizer *t = g->s->inst->tok;
    if (g->kind == KVS_OAI_COMPLETION)
        lp_completion_add(lp, t, ev, offset);
    else
        lp_chat_add(lp, t, ev);
}

/* ---- response pieces ---- */

static json_t *usage_json(const gen *g)
{
    json_int_t c = 0;
    for (int32_t i = 0; i < g->n; i++)
        c += g->ch[i].n_output;
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)g->n_prompt, "completion_tokens", c,
                     "total_tokens", (json_int_t)g->n_prompt + c, "prompt_tokens_details", "cached_tokens",
                     (json_int_t)g->n_cached);
}

static json_t *envelope(const gen *g, const char *object)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", g->id, "object", object, "created", g->created, "model",
                     g->s->model_name);
}

static void note_event(gen *g, const kvs_srv_event *ev, gen_choice *c)
{
    g->n_prompt = ev->n_prompt;
    if (ev->n_cached > g->n_cached)
        g->n_cached = ev->n_cached;
    c->offset += ev->text_len;
    if (ev->finished && !c->finished) {
        c->finished = true;
        c->reason = ev->reason;
        c->n_output = ev->n_output;
        g->n_finished++;
    }
}

/* ---- streaming ---- */

static bool out_append(gen *g, const char *p, size_t n)
{
    if (g->out_len + n > g->out_cap) {
        size_t cap = g->out_cap ? g->out_cap : 1024;
        while (cap < g->out_len + n)
            cap *= 2;
        char *o = realloc(g->out, cap);
        if (!o)
            return false;
        g->out = o;
        g->out_cap = cap;
    }
    memcpy(g->out + g->out_len, p, n);
    g->out_len += n;
    return true;
}

/* Queue "data: <obj>\n\n" (obj stolen). */
static bool sse_json(gen *g, json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s)
        return false;
    bool ok = out_append(g, "data: ", 6) && out_append(g, s, strlen(s)) && out_append(g, "\n\n", 2);
    free(s);
    return ok;
}

static bool sse_done(gen *g)
{
    g->done = true;
    return out_append(g, "data: [DONE]\n\n", 14);
}

static bool stream_event(gen *g, const kvs_srv_event *ev)
{
    if (ev->kind == KVS_EV_ERROR) {
        if (g->done)
            return true;
        return sse_json(g, kvs_http_error_obj((unsigned)ev->status, ev->param, NULL, ev->text)) && sse_done(g);
    }
    if (ev->kind != KVS_EV_TOKEN || ev->index < 0 || ev->index >= g->n || g->done)
        return true;
    gen_choice *c = &g->ch[ev->index];
    bool want_lp = g->logprobs >= 0 && ev->token >= 0;
    bool ok = true;
    json_t *deltas = NULL; /* chat with parsers: this event's deltas (api_chat.c's parsers) */
    if (g->kind == KVS_OAI_CHAT && g->parse && (ev->text_len > 0 || ev->finished)) {
        if ((!c->cs && !(c->cs = kvs_chat_stream_new(&g->pcfg))) ||
            !(deltas = kvs_chat_stream_feed(c->cs, ev->text, ev->text_len, ev->finished)))
            return false;
        while (ok && json_array_size(deltas) > 1) { /* all but the last in chunks of their own */
            json_t *chunk = envelope(g, "chat.completion.chunk");
            json_object_set_new(chunk, "choices", json_pack("[{s:i, s:O, s:n, s:n}]", "index", ev->index, "delta",
                                                            json_array_get(deltas, 0), "logprobs", "finish_reason"));
            ok = sse_json(g, chunk);
            json_array_remove(deltas, 0);
        }
    }
    if (ok && (deltas ? json_array_size(deltas) > 0 || ev->finished || want_lp
                      : ev->text_len > 0 || ev->finished || want_lp)) {
        bool chat = g->kind == KVS_OAI_CHAT;
        json_t *chunk = envelope(g, chat ? "chat.completion.chunk" : "text_completion");
        json_t *choice = json_pack("{s:i}", "index", ev->index);
        json_t *text = kvs_api_text_json(ev->text, ev->text_len);
        if (chat && deltas)
            json_object_set_new(choice, "delta",
                                json_array_size(deltas) ? json_incref(json_array_get(deltas, 0)) : json_object());
        else if (chat)
            json_object_set_new(choice, "delta", ev->text_len > 0 ? json_pack("{s:o}", "content", text) : json_object());
        else
            json_object_set_new(choice, "text", text);
        if (chat && (ev->text_len == 0 || deltas))
            json_decref(text);
        json_t *lp = json_null();
        if (want_lp) {
            lp = lp_new(g);
            lp_add(g, lp, ev, c->offset);
        }
        json_object_set_new(choice, "logprobs", lp);
        const char *fin = finish_name(ev->reason);
        if (kvs_chat_stream_has_tool_calls(c->cs) && strcmp(fin, "stop") == 0)
            fin = "tool_calls";
        json_object_set_new(choice, "finish_reason", ev->finished ? json_string(fin) : json_null());
        json_object_set_new(chunk, "choices", json_pack("[o]", choice));
        ok = sse_json(g, chunk);
    }
    json_decref(deltas);
    note_event(g, ev, c);
    if (ok && g->n_finished == g->n) {
        if (g->include_usage) {
            json_t *u = envelope(g, g->kind == KVS_OAI_CHAT ? "chat.completion.chunk" : "text_completion");
            json_object_set_new(u, "choices", json_array());
            json_object_set_new(u, "usage", usage_json(g));
            ok = sse_json(g, u);
        }
        ok = ok && sse_done(g);
    }
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
    while (g->out_off == g->out_len) {
        if (g->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        g->out_off = g->out_len = 0;
        kvs_srv_event *ev = kvs_chan_pop(g->chan, 0);
        if (!ev) {
            switch (kvs_http_sleep(g->conn)) {
            case KVS_HTTP_SLEPT: return 0;
            case KVS_HTTP_AGAIN: continue;
            case KVS_HTTP_GONE: return MHD_CONTENT_READER_END_WITH_ERROR;
            case KVS_HTTP_STOPPING: /* the engine has stopped: end the stream properly */
                if (!sse_json(g, kvs_http_error_obj(503, NULL, NULL, "the server is shutting down")) || !sse_done(g))
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                continue;
            }
        }
        bool ok = stream_event(g, ev);
        kvs_event_free(ev);
        if (!ok)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = g->out_len - g->out_off < max ? g->out_len - g->out_off : max;
    memcpy(buf, g->out + g->out_off, n);
    g->out_off += n;
    return (ssize_t)n;
}

/* MHD is done with the stream: finished, or the client went away. */
static void sse_free(void *cls)
{
    gen *g = cls;
    kvs_server *s = g->s;
    if (!g->done) {
        kvs_chan_close(g->chan);
        kvs_loop_abort(s->loop, g->base, g->n);
    }
    gen_free(g);
    kvs_server_job_end(s);
}

static enum MHD_Result start_stream(gen *g, struct MHD_Connection *c)
{
    if (g->kind == KVS_OAI_CHAT) /* the role comes first, as OpenAI sends it */
        for (int32_t i = 0; i < g->n; i++) {
            json_t *chunk = envelope(g, "chat.completion.chunk");
            json_object_set_new(chunk, "choices",
                                json_pack("[{s:i, s:{s:s, s:s}, s:n, s:n}]", "index", i, "delta", "role", "assistant",
                                          "content", "", "logprobs", "finish_reason"));
            sse_json(g, chunk);
        }
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
    gen_choice *c = &g->ch[ev->index];
    if (ev->text_len) {
        if (c->len + ev->text_len + 1 > c->cap) {
            size_t cap = c->cap ? c->cap : 256;
            while (cap < c->len + ev->text_len + 1)
                cap *= 2;
            char *t = realloc(c->text, cap);
            if (!t)
                return false;
            c->text = t;
            c->cap = cap;
        }
        memcpy(c->text + c->len, ev->text, ev->text_len);
        c->len += ev->text_len;
    }
    if (g->logprobs >= 0 && ev->token >= 0) {
        if (!c->lp && !(c->lp = lp_new(g)))
            return false;
        lp_add(g, c->lp, ev, c->offset);
    }
    note_event(g, ev, c);
    return true;
}

static json_t *final_json(gen *g)
{
    bool chat = g->kind == KVS_OAI_CHAT;
    json_t *o = envelope(g, chat ? "chat.completion" : "text_completion");
    json_t *choices = json_array();
    for (int32_t i = 0; i < g->n; i++) {
        gen_choice *c = &g->ch[i];
        json_t *text = kvs_api_text_json(c->text ? c->text : "", c->len);
        json_t *lp = c->lp ? json_incref(c->lp) : (g->logprobs >= 0 ? lp_new(g) : json_null());
        if (chat && g->parse) { /* reasoning_content, tool_calls (api_chat.c's parsers) */
            json_decref(text);
            json_t *m = json_pack("{s:s}", "role", "assistant");
            json_t *pm = kvs_chat_parse_message(&g->pcfg, c->text ? c->text : "", c->len);
            json_object_update(m, pm);
            json_decref(pm);
            const char *fin = finish_name(c->reason);
            if (json_object_get(m, "tool_calls") && strcmp(fin, "stop") == 0)
                fin = "tool_calls";
            json_array_append_new(choices, json_pack("{s:i, s:o, s:o, s:s}", "index", i, "message", m, "logprobs", lp,
                                                     "finish_reason", fin));
            continue;
        }
        json_t *ch = chat ? json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", i, "message", "role", "assistant",
                                      "content", text, "logprobs", lp, "finish_reason", finish_name(c->reason))
                          : json_pack("{s:i, s:o, s:o, s:s, s:n}", "index", i, "text", text, "logprobs", lp,
                                      "finish_reason", finish_name(c->reason), "stop_reason");
        json_array_append_new(choices, ch);
    }
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", usage_json(g));
    return o;
}

/* A non-streaming request that waits for its events: collect what is
 * there, answer when every choice is finished, else sleep until woken. */
static void gen_end(gen *g, bool abort)
{
    kvs_server *s = g->s;
    if (abort) {
        kvs_chan_close(g->chan);
        kvs_loop_abort(s->loop, g->base, g->n);
    }
    gen_free(g);
    kvs_server_job_end(s);
}

static void gen_cancel(void *ctx) { gen_end(ctx, true); }

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
            gen_end(g, true);
            return kvs_http_error(c, 500, NULL, NULL, "out of memory");
        }
    }
    ret = kvs_http_json(c, 200, final_json(g));
    gen_end(g, false);
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
        return kvs_http_error(c, 400, r->kind == KVS_OAI_CHAT ? "max_completion_tokens" : "max_tokens",
                              "context_length_exceeded",
                              "This model's maximum context length is %lld tokens. However, you requested %lld "
                              "tokens (%lld in the messages, %lld in the completion). Please reduce the length of "
                              "the messages or completion.", L, P + M, P, M);
    *failed = false;
    return MHD_YES;
}

/* Copy what the engine reads from the request when it takes it: the prompt
 * and the parameters' arrays (kvs_engine_add copies them in turn).  A new
 * pointer field in kvs_request_params must be copied here too. */
_Static_assert(sizeof(kvs_request_params) == KVS_GEN_PARAMS_SIZE,
               "kvs_request_params changed: copy any new pointer field in gen_sub_new (api_gen.c)");
static gen_sub *gen_sub_new(const kvs_oai_request *r, const int32_t *prompt, size_t n_prompt)
{
    gen_sub *gs = calloc(1, sizeof *gs);
    if (!gs)
        return NULL;
    gs->params = r->params;
    gs->params.stop = NULL;
    gs->params.n_stop = 0;
    gs->params.stop_token_ids = NULL;
    gs->params.n_stop_token_ids = 0;
    gs->params.grammar = kvs_grammar_ref(r->params.grammar); /* (NULL stays NULL) */
    if (!(gs->prompt = malloc((n_prompt ? n_prompt : 1) * sizeof *gs->prompt)))
        goto fail;
    if (n_prompt)
        memcpy(gs->prompt, prompt, n_prompt * sizeof *prompt);
    if (r->params.n_stop) {
        if (!(gs->stops = calloc(r->params.n_stop, sizeof *gs->stops)))
            goto fail;
        for (; gs->n_stops < r->params.n_stop; gs->n_stops++)
            if (!(gs->stops[gs->n_stops] = strdup(r->params.stop[gs->n_stops])))
                goto fail;
        gs->params.stop = (const char *const *)gs->stops;
        gs->params.n_stop = gs->n_stops;
    }
    if (r->params.n_stop_token_ids) {
        size_t n = r->params.n_stop_token_ids;
        if (!(gs->stop_ids = malloc(n * sizeof *gs->stop_ids)))
            goto fail;
        memcpy(gs->stop_ids, r->params.stop_token_ids, n * sizeof *gs->stop_ids);
        gs->params.stop_token_ids = gs->stop_ids;
        gs->params.n_stop_token_ids = n;
    }
    gs->sub = (kvs_submit){.n = r->n, .prompt = gs->prompt, .n_prompt = n_prompt, .params = gs->params,
                           .t_arrival = kvs_now(), .reply = kvs_event_new(KVS_EV_ACCEPTED, NULL, KVS_SUBMIT_REPLY_ROOM)};
    if (!gs->sub.reply)
        goto fail;
    return gs;
fail:
    gen_sub_free(gs);
    return NULL;
}

/* The submission's first event: ACCEPTED starts the answer, ERROR is it. */
static enum MHD_Result gen_accept(void *ctx, struct MHD_Connection *c)
{
    gen *g = ctx;
    kvs_srv_event *ev;
    while (!(ev = kvs_chan_pop(g->chan, 0))) {
        switch (kvs_http_sleep(c)) {
        case KVS_HTTP_SLEPT: return kvs_http_defer(c, gen_accept, gen_cancel, g);
        case KVS_HTTP_AGAIN: continue;
        case KVS_HTTP_GONE: gen_end(g, true); return MHD_NO;
        case KVS_HTTP_STOPPING: /* the stopped loop has answered every submission */
            if (!(ev = kvs_chan_pop(g->chan, POLL_MS)))
                continue;
            break;
        }
        break;
    }
    g->accepted = true; /* the loop is done with the submission */
    gen_sub_free(g->gs);
    g->gs = NULL;
    if (ev->kind == KVS_EV_ERROR) {
        enum MHD_Result ret = kvs_http_error(c, (unsigned)ev->status, ev->param[0] ? ev->param : NULL, NULL, "%s",
                                             ev->text);
        kvs_event_free(ev);
        gen_end(g, false);
        return ret;
    }
    kvs_event_free(ev);
    g->last_check = kvs_now();
    return g->stream ? start_stream(g, c) : gen_poll(g, c);
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
    bool failed;
    enum MHD_Result ret = length_error(s, c, r, n_prompt, prompt_param, &failed);
    if (failed)
        return ret;
    if (!kvs_server_job_begin(s))
        return kvs_http_error(c, 503, NULL, "shutting_down", "the server is shutting down");
    gen *g = calloc(1, sizeof *g);
    if (!g || !(g->ch = calloc((size_t)r->n, sizeof *g->ch)) || !(g->chan = kvs_chan_new())) {
        gen_free(g);
        kvs_server_job_end(s);
        return kvs_http_error(c, 500, NULL, NULL, "out of memory");
    }
    g->s = s;
    g->kind = r->kind;
    g->n = r->n;
    g->logprobs = r->params.logprobs;
    g->include_usage = r->include_usage;
    g->created = (json_int_t)time(NULL);
    g->fd = kvs_http_fd(c);
    g->n_prompt = (int32_t)n_prompt;
    if (pcfg && r->kind == KVS_OAI_CHAT) {
        g->parse = true;
        g->pcfg = *pcfg;
        g->pcfg.id_seed ^= s->salt;
    }
    g->stream = r->stream;
    g->conn = c;
    kvs_http_bind(c, g->chan); /* its events wake this connection */
    if (!(g->gs = gen_sub_new(r, prompt, n_prompt))) {
        g->accepted = true;
        gen_free(g);
        kvs_server_job_end(s);
        return kvs_http_error(c, 500, NULL, NULL, "out of memory");
    }
    g->gs->sub.chan = g->chan;
    if (!kvs_loop_submit(s->loop, &g->gs->sub)) {
        g->accepted = true; /* nothing was queued: g->gs is still ours */
        kvs_event_free(g->gs->sub.reply);
        gen_free(g);
        kvs_server_job_end(s);
        return kvs_http_error(c, 503, NULL, "shutting_down", "the server is shutting down");
    }
    g->base = g->gs->sub.base_id;
    g->pcfg.id_seed ^= g->base * 0xD6E8FEB86659FD93ull; /* tool-call ids differ between requests */
    snprintf(g->id, sizeof g->id, "%s-%016" PRIx64, r->kind == KVS_OAI_CHAT ? "chatcmpl" : "cmpl",
             (uint64_t)(s->salt ^ (g->base * (uint64_t)0x9E3779B97F4A7C15ull)));
    return gen_accept(g, c);
}
