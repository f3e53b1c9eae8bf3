/* The front end's memory for given limits (http_reserve.h).
 *
 * Today's front end (http.c): libmicrohttpd with a thread per connection.
 * Per connection: the pages of its thread's stack that a request touches
 * (32 KiB: the stack is 512 KiB of address space, the handlers' frames
 * touch a few pages), the pages of libmicrohttpd's per-connection memory
 * pool that headers and the response buffer use (8 KiB), and the working
 * set of one request's JSON documents and response text (8 KiB for the
 * documents of a completion; the body itself is counted below).  Bodies:
 * each is buffered whole, up to --max-request-bytes, and parsed into a
 * jansson tree about as large; one body of the largest size is reserved
 * beside the per-connection figures.  This front end does not enforce
 * the figure (a thread per connection, bodies from malloc): the load test
 * checks that it holds; the event-driven front end bounds it by
 * construction and replaces this function. */
#include "server/http_reserve.h"

#define PER_CONNECTION (32u * 1024 + 8u * 1024 + 8u * 1024)
#define LARGE_BODIES 1

size_t kvs_http_reserve_bytes(const kvs_http_limits *lim)
{
    size_t conns = lim->max_connections > 0 ? (size_t)lim->max_connections : 1;
    return conns * PER_CONNECTION + (size_t)LARGE_BODIES * 2 * (size_t)lim->max_request_bytes;
}
