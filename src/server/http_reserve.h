/*
 * http_reserve.h - the HTTP front end's fixed host memory, for the budget.
 *
 * On the CPU backend the host's memory is the device's, so the front end's
 * memory is part of the serving reserve (see engine_loop.h and
 * docs/memory.md): a fixed figure for given limits, subtracted before the
 * KV cache takes the rest.  This is the figure for the front end in
 * http.c; a front end with other threads or buffers gives its own.
 */
#ifndef KVS_SERVER_HTTP_RESERVE_H
#define KVS_SERVER_HTTP_RESERVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvs_http_limits {
    int32_t max_connections;         /* --max-connections */
    uint64_t max_request_bytes;      /* --max-request-bytes: the largest body */
} kvs_http_limits;

/* Bytes of host memory the front end holds at most under these limits. */
size_t kvs_http_reserve_bytes(const kvs_http_limits *lim);

#endif
