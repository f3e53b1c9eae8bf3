/*
 * http_reserve.h - the HTTP front end's fixed host memory for given limits.
 *
 * The front end (http.c, http_gate.c) allocates everything it will ever
 * need when the server starts, from these limits: a fixed pool of worker
 * threads with fixed stacks (libmicrohttpd's epoll threads plus kvserve's
 * gate thread), a fixed number of connection slots, each with
 * libmicrohttpd's per-connection memory pool (MHD_OPTION_CONNECTION_MEMORY_LIMIT,
 * which holds the request head and the write buffer), its bookkeeping, and
 * the buffer of a streaming response, one request-body pool (http_pool.h),
 * and one stream pool (the same kind) from which a streamed response takes,
 * when it is admitted, the buffer its chunks are written into (one event's
 * chunks at a time: sized from the request's limits, see api_gen.c; it
 * never grows, the client drains it before the next event is read): room
 * for KVS_HTTP_STREAM_OUT bytes per connection plus one stream of
 * KVS_HTTP_STREAM_OUT_MAX (the largest a request can ask for), and one
 * answer pool (the same kind again) that holds the non-streamed answers
 * being generated: their text, logprob records and final JSON document.
 * kvs_http_reserve_bytes is their sum: the memory report's
 * share for the front end (the serving reserve), computable without
 * starting anything, so `plan` and a start agree.
 *
 *     kvs_http_limits l = kvs_http_limits_defaults();
 *     l.max_connections = 64;
 *     size_t bytes = kvs_http_reserve_bytes(&l);
 */
#ifndef KVS_SERVER_HTTP_RESERVE_H
#define KVS_SERVER_HTTP_RESERVE_H

#include <stddef.h>

/* Defaults (also what 0 in a field means). */
#define KVS_HTTP_DEFAULT_THREADS 2u
#define KVS_HTTP_DEFAULT_MAX_CONNECTIONS 256u
#define KVS_HTTP_DEFAULT_MAX_REQUEST ((size_t)8 << 20)
#define KVS_HTTP_DEFAULT_CONN_MEMORY ((size_t)32 << 10)
#define KVS_HTTP_THREAD_STACK ((size_t)512 << 10)   /* a worker (runs the handlers) */
#define KVS_HTTP_GATE_STACK ((size_t)128 << 10)     /* the gate thread (heads and error answers only) */
/* A streaming response's buffer (MHD_create_response_from_callback's block). */
#define KVS_HTTP_STREAM_BLOCK ((size_t)4 << 10)
/* The stream pool: pages per connection (a chunk without logprobs needs
 * about 2 KiB), and room for one more stream of the largest kind (20 top
 * logprobs of 512-byte tokens). */
#define KVS_HTTP_STREAM_OUT ((size_t)4 << 10)
#define KVS_HTTP_STREAM_OUT_MAX ((size_t)128 << 10)
/* The answer pool (--http-answer-pool): a non-streamed answer keeps its
 * choices' text and per-token logprob records there while it is generated,
 * and the run its JSON is written into as it is sent.  The records (all a
 * request may need) and the first 4 KiB runs are taken when it is admitted
 * (a 400 if they could never fit, a 503 naming the flag when the pool is
 * busy); text grows by doubling.  By default 4 KiB per connection plus
 * 512 KiB, for a few large answers (a record is 24 bytes plus 8 per top
 * logprob). */
#define KVS_HTTP_ANSWER_OUT ((size_t)4 << 10)
#define KVS_HTTP_ANSWER_OUT_MAX ((size_t)512 << 10)
/* libmicrohttpd's own structure for a connection, its copy of the peer
 * address and allocator overhead, rounded up (struct MHD_Connection is
 * about 1 KiB in 0.9.75). */
#define KVS_HTTP_CONN_BOOKKEEPING ((size_t)2 << 10)

typedef struct kvs_http_limits {
    unsigned threads;              /* --http-threads: libmicrohttpd worker threads */
    unsigned max_connections;      /* --max-connections: open connections at most */
    size_t max_request_bytes;      /* --max-request-bytes: largest request body */
    size_t body_pool_bytes;        /* --http-body-pool: all bodies being read at once (0: max_request_bytes x 2) */
    size_t connection_memory;      /* libmicrohttpd's per-connection pool (0: 32 KiB) */
    size_t answer_pool_bytes;      /* --http-answer-pool: non-streamed answers being built (0: the default) */
} kvs_http_limits;

/* The defaults: 2 threads, 256 connections, 8 MiB bodies, a 16 MiB body pool, 32 KiB per connection. */
kvs_http_limits kvs_http_limits_defaults(void);
/* l with every 0 replaced by its default. */
kvs_http_limits kvs_http_limits_resolve(const kvs_http_limits *l);
/* The body pool's size for l (after defaults). */
size_t kvs_http_body_pool_bytes(const kvs_http_limits *l);
/* The stream pool's size for l: connections x KVS_HTTP_STREAM_OUT +
 * KVS_HTTP_STREAM_OUT_MAX (whole pages). */
size_t kvs_http_stream_pool_bytes(const kvs_http_limits *l);
/* The answer pool's size for l: answer_pool_bytes, or connections x
 * KVS_HTTP_ANSWER_OUT + KVS_HTTP_ANSWER_OUT_MAX (whole pages). */
size_t kvs_http_answer_pool_bytes(const kvs_http_limits *l);
/* The front end's fixed host memory for l (0 fields take their defaults):
 * worker and gate thread stacks + connections x (connection memory +
 * bookkeeping + stream buffer + slot) + the body pool + the stream pool +
 * the answer pool. */
size_t kvs_http_reserve_bytes(const kvs_http_limits *l);

#endif
