/*
 * http_head.h - a strict check of an HTTP/1.x request head, before
 * libmicrohttpd sees it.
 *
 * libmicrohttpd answers what it cannot parse with fixed HTML pages (and
 * some things, like `Transfer-Encoding: gzip` or a chunk size of 2^64-1,
 * not at all).  The front end therefore peeks at every request head (the
 * first of a connection and, where libmicrohttpd has not read ahead, each
 * later one on a kept-alive connection: see http_front.h) with recv and
 * MSG_PEEK, so the bytes stay in the socket for libmicrohttpd, and runs it
 * through this check.  Whatever RFC 9112
 * says a server must reject is answered here with kvserve's JSON error
 * object; only heads that pass are handed to libmicrohttpd.
 *
 *     kvs_http_head_verdict v;
 *     switch (kvs_http_head_check(buf, n, &limits, &v)) {
 *     case KVS_HEAD_MORE:  wait for more bytes (v.head_done: the head itself is complete)
 *     case KVS_HEAD_OK:    hand the connection over
 *     case KVS_HEAD_BAD:   answer v.status with v.code and v.msg, close
 *     }
 *
 * What is refused: a request line that is not `METHOD SP target SP
 * HTTP/d.d` (400; any other major version 505), a target over the limit
 * (414), a head over its byte or field-count limit (431), obs-fold and
 * whitespace before a colon (400), control bytes in field values (400), a
 * missing or repeated Host in HTTP/1.1 (400), a Content-Length that is not
 * one decimal number or that disagrees with another Content-Length (400),
 * one over the body limit (413), a Transfer-Encoding other than `chunked`
 * (501), Transfer-Encoding with Content-Length or in HTTP/1.0 (400), an
 * encoded NUL (`%00`) in the target (400), and for chunked bodies whose
 * first chunk line has arrived, a chunk size over the body limit (413) or
 * that is not hexadecimal (400).
 */
#ifndef KVS_SERVER_HTTP_HEAD_H
#define KVS_SERVER_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kvs_http_head_limits {
    size_t max_head;               /* bytes of the whole head (request line + fields) */
    size_t max_target;             /* bytes of the request target */
    unsigned max_fields;           /* header fields */
    uint64_t max_body;             /* Content-Length or a chunk size above this: 413 */
} kvs_http_head_limits;

typedef enum kvs_head_result {
    KVS_HEAD_MORE,                 /* not complete yet */
    KVS_HEAD_OK,                   /* a valid head (and first chunk line, for chunked bodies) */
    KVS_HEAD_BAD,                  /* refused: v->status, v->code, v->msg */
} kvs_head_result;

typedef struct kvs_http_head_verdict {
    int status;                    /* BAD: 400, 413, 414, 431, 501 or 505 */
    const char *code;              /* BAD: the error object's code */
    char msg[200];                 /* BAD: what was wrong */
    bool head_done;                /* MORE: the head is complete, only the first chunk line is missing */
    size_t head_len;               /* OK or head_done: bytes of the head including its blank line */
    uint64_t body_len;             /* OK: the Content-Length (0 without one) */
    bool chunked;                  /* OK or head_done: the body is chunked (its length is not known) */
} kvs_http_head_verdict;

/* Check the first len bytes received on a connection (buf need not be NUL
 * terminated).  Pure: the same bytes always give the same verdict, and a
 * refusal (BAD) does not change when more bytes arrive.  (OK may: with
 * `Expect: 100-continue` a chunked body's first line is not waited for.) */
kvs_head_result kvs_http_head_check(const char *buf, size_t len, const kvs_http_head_limits *lim,
                                    kvs_http_head_verdict *v);

#endif
