/* The HTTP front end's fixed host memory (see http_reserve.h). */
#include "server/http_reserve.h"

#include "server/http_front.h"

kvs_http_limits kvs_http_limits_defaults(void)
{
    kvs_http_limits l = {0};
    return kvs_http_limits_resolve(&l);
}

kvs_http_limits kvs_http_limits_resolve(const kvs_http_limits *l)
{
    kvs_http_limits r = *l;
    if (!r.threads)
        r.threads = KVS_HTTP_DEFAULT_THREADS;
    if (!r.max_connections)
        r.max_connections = KVS_HTTP_DEFAULT_MAX_CONNECTIONS;
    if (!r.max_request_bytes)
        r.max_request_bytes = KVS_HTTP_DEFAULT_MAX_REQUEST;
    if (!r.connection_memory)
        r.connection_memory = KVS_HTTP_DEFAULT_CONN_MEMORY;
    if (!r.body_pool_bytes)
        r.body_pool_bytes = 2 * r.max_request_bytes;
    if (!r.answer_pool_bytes)
        r.answer_pool_bytes = (size_t)r.max_connections * KVS_HTTP_ANSWER_OUT + KVS_HTTP_ANSWER_OUT_MAX;
    return r;
}

size_t kvs_http_body_pool_bytes(const kvs_http_limits *l)
{
    kvs_http_limits r = kvs_http_limits_resolve(l);
    return (r.body_pool_bytes + 4095) / 4096 * 4096;
}

size_t kvs_http_stream_pool_bytes(const kvs_http_limits *l)
{
    kvs_http_limits r = kvs_http_limits_resolve(l);
    size_t b = (size_t)r.max_connections * KVS_HTTP_STREAM_OUT + KVS_HTTP_STREAM_OUT_MAX;
    return (b + 4095) / 4096 * 4096;
}

size_t kvs_http_answer_pool_bytes(const kvs_http_limits *l)
{
    kvs_http_limits r = kvs_http_limits_resolve(l);
    return (r.answer_pool_bytes + 4095) / 4096 * 4096;
}

size_t kvs_http_reserve_bytes(const kvs_http_limits *l)
{
    kvs_http_limits r = kvs_http_limits_resolve(l);
    size_t threads = (size_t)r.threads * KVS_HTTP_THREAD_STACK + KVS_HTTP_GATE_STACK;
    size_t per_conn = r.connection_memory + KVS_HTTP_CONN_BOOKKEEPING + KVS_HTTP_STREAM_BLOCK + kvs_http_slot_bytes();
    size_t lingering = KVS_HTTP_OVERFLOW_SLOTS * 16 + KVS_HTTP_WAIT_SLOTS * 160;
    return threads + (size_t)r.max_connections * per_conn + lingering + kvs_http_body_pool_bytes(&r) +
           kvs_http_stream_pool_bytes(&r) + kvs_http_answer_pool_bytes(&r);
}
