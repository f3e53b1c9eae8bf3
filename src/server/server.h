/*
 * server.h - kvserve's OpenAI-compatible HTTP server.
 *
 * One engine thread owns the engine (engine_loop.h): it takes new requests
 * and aborts from an inbox, runs one batched step, and hands each request's
 * tokens to that request's channel.  HTTP connections are accepted by a
 * gate thread that checks each one's first request head, then served by
 * libmicrohttpd's epoll loop on a fixed pool of threads (http_front.h); a
 * handler parses and checks the request, posts it to the engine thread and
 * reads its results from the channel without blocking: the connection is
 * suspended until the channel has an event.  Connections, request bodies
 * and threads come from limits fixed at start-up (http_reserve.h).  When a
 * client goes away its request is aborted and its KV blocks freed at once.
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
 *     kvs_server_drain(s);                       // new connections and requests get 503
 *     kvs_server_wait(s, 30000);                 // let in-flight requests finish
 *     kvs_server_stop(s);                        // abort the rest, join, free
 */
#ifndef KVS_SERVER_SERVER_H
#define KVS_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "engine/launch.h"
#include "server/http_reserve.h"

typedef struct kvs_server_opts {
    const char *host;                /* default "127.0.0.1" */
    int port;                        /* 0: any free port (see kvs_server_port) */
    const char *api_key;             /* NULL: no authentication */
    const char *served_model_name;   /* default: model_path's file name without extension */
    const char *model_path;
    size_t max_body_bytes;           /* request bodies above this get 413 (default 8 MiB) */
    unsigned connection_timeout_s;   /* idle connections are closed after this (default 5) */
    double header_timeout_s;         /* a request head must arrive within this (default 10) */
    unsigned http_threads;           /* libmicrohttpd worker threads (default 2) */
    unsigned max_connections;        /* open connections at most; more get 503 (default 256) */
    size_t body_pool_bytes;          /* request bodies being read at once (default 2 x max_body_bytes) */
    size_t answer_pool_bytes;        /* non-streamed answers being built (http_reserve.h; 0: default) */
    size_t connection_memory;        /* libmicrohttpd's per-connection memory (default 32 KiB) */
    const char *allowed_origins;     /* CORS: comma-separated origins or "*" (NULL: none) */
    FILE *log;                       /* access and error lines (NULL: silent) */
    const char *chat_template_path;  /* --chat-template FILE (.jinja or tokenizer_config.json); NULL: the model's */
    const char *reasoning_parser;    /* --reasoning-parser deepseek_r1|qwen3, or NULL */
    const char *tool_call_parser;    /* --tool-call-parser hermes|llama3_json|mistral, or NULL */
    bool enable_auto_tool_choice;    /* --enable-auto-tool-choice */
} kvs_server_opts;

/* Options with every default filled in (127.0.0.1:8000, 8 MiB bodies, 5 s
 * idle, 10 s header timeout, 2 threads, 256 connections). */
kvs_server_opts kvs_server_defaults(void);

/* The front end's limits for o, defaults filled in (for kvs_http_reserve_bytes). */
kvs_http_limits kvs_server_http_limits(const kvs_server_opts *o);

typedef struct kvs_server kvs_server;

/* Start serving `inst` (which must outlive the server; the server drives its
 * engine from now on).  Fails if the address cannot be bound. */
kvs_status kvs_server_start(kvs_server **out, kvs_instance *inst, const kvs_server_opts *o, kvs_error *err);
/* The TCP port actually bound. */
int kvs_server_port(const kvs_server *s);
/* The model name clients must use (or omit). */
const char *kvs_server_model_name(const kvs_server *s);
/* Refuse new connections and requests with a 503 JSON error (the socket
 * stays open until kvs_server_stop); requests in flight go on.  Idempotent. */
void kvs_server_drain(kvs_server *s);
/* Wait until no generation request is in flight, at most timeout_ms
 * (< 0: forever).  True if idle. */
bool kvs_server_wait(kvs_server *s, int timeout_ms);
/* Abort what is still running (each aborted stream gets an error event and
 * [DONE], each waiting request a 503; their bytes are written before the
 * daemon stops, for up to 5 s), stop the engine thread and the HTTP daemon,
 * free everything.  NULL is a no-op. */
void kvs_server_stop(kvs_server *s);

/* The front end's pools now, for /metrics (issue 7's live reserve use). */
typedef struct kvs_server_http_stats {
    unsigned connections, max_connections;        /* slots in use, and their number */
    size_t body_pool_used, body_pool_peak, body_pool_bytes;
    uint64_t refused_connections;                 /* answered 503 for --max-connections */
    uint64_t refused_bodies;                      /* answered 503 for a full body pool */
    size_t stream_pool_used, stream_pool_peak, stream_pool_bytes; /* streamed responses' chunk buffers */
    uint64_t refused_streams;                     /* answered 503 for a full stream pool */
    size_t answer_pool_used, answer_pool_peak, answer_pool_bytes; /* non-streamed answers being built */
    uint64_t refused_answers;                     /* runs the answer pool could not give (503) */
} kvs_server_http_stats;
void kvs_server_http_stats_get(kvs_server *s, kvs_server_http_stats *out);

/* The default served name for a model path: its base name without the
 * extension ("stories260K" for "dir/stories260K.gguf"), into buf. */
void kvs_server_default_name(const char *model_path, char *buf, size_t cap);

#endif
