/*
 * server.h - kvserve's OpenAI-compatible HTTP server.
 *
 * One engine thread owns the engine (engine_loop.h): it takes new requests
 * and aborts from an inbox, runs one batched step, and hands each request's
 * tokens to that request's channel.  HTTP connections are served by
 * libmicrohttpd, one thread per connection; a handler parses and checks the
 * request, posts it to the engine thread and reads its results from the
 * channel (blocking, or as server-sent events).  When a client goes away its
 * request is aborted and its KV blocks freed at once.
 *
 * Endpoints (OpenAI's and vLLM's shapes):
 *   POST /v1/completions, POST /v1/chat/completions   (stream: true = SSE)
 *   GET  /v1/models, GET /health, GET /metrics (Prometheus text)
 *   POST /tokenize, POST /detokenize
 * With an API key every /v1 call needs "Authorization: Bearer KEY".
 *
 * Life cycle:
 *     kvs_server_start(&s, inst, &opts, &err);   // listening, engine thread running
 *     ... a signal arrives ...
 *     kvs_server_drain(s);                       // no new connections or requests
 *     kvs_server_wait(s, 30000);                 // let in-flight requests finish
 *     kvs_server_stop(s);                        // abort the rest, join, free
 */
#ifndef KVS_SERVER_SERVER_H
#define KVS_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "engine/launch.h"

typedef struct kvs_server_opts {
    const char *host;                /* default "127.0.0.1" */
    int port;                        /* 0: any free port (see kvs_server_port) */
    const char *api_key;             /* NULL: no authentication */
    const char *served_model_name;   /* default: model_path's file name without extension */
    const char *model_path;
    size_t max_body_bytes;           /* request bodies above this get 413 (default 8 MiB) */
    unsigned connection_timeout_s;   /* idle connections are closed after this (default 600) */
    FILE *log;                       /* access and error lines (NULL: silent) */
    const char *chat_template_path;  /* --chat-template FILE (.jinja or tokenizer_config.json); NULL: the model's */
    const char *reasoning_parser;    /* --reasoning-parser deepseek_r1|qwen3, or NULL */
    const char *tool_call_parser;    /* --tool-call-parser hermes|llama3_json|mistral, or NULL */
    bool enable_auto_tool_choice;    /* --enable-auto-tool-choice */
} kvs_server_opts;

/* Options with every default filled in (127.0.0.1:8000, 8 MiB bodies, 600 s). */
kvs_server_opts kvs_server_defaults(void);

typedef struct kvs_server kvs_server;

/* Start serving `inst` (which must outlive the server; the server drives its
 * engine from now on).  Fails if the address cannot be bound. */
kvs_status kvs_server_start(kvs_server **out, kvs_instance *inst, const kvs_server_opts *o, kvs_error *err);
/* The TCP port actually bound. */
int kvs_server_port(const kvs_server *s);
/* The model name clients must use (or omit). */
const char *kvs_server_model_name(const kvs_server *s);
/* Stop accepting connections and new requests (they get 503); requests in
 * flight go on.  Idempotent. */
void kvs_server_drain(kvs_server *s);
/* Wait until no generation request is in flight, at most timeout_ms
 * (< 0: forever).  True if idle. */
bool kvs_server_wait(kvs_server *s, int timeout_ms);
/* Abort what is still running, stop the engine thread and the HTTP daemon,
 * free everything.  NULL is a no-op. */
void kvs_server_stop(kvs_server *s);

/* The default served name for a model path: its base name without the
 * extension ("stories260K" for "dir/stories260K.gguf"), into buf. */
void kvs_server_default_name(const char *model_path, char *buf, size_t cap);

#endif
