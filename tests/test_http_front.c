/*
 * test_http_front - the HTTP front end's pure parts: the gate's request-head
 * check against RFC 9112's rules (a table of heads and the status each must
 * get), the request-body pool (runs, growth in place and by moving, full),
 * and kvs_http_reserve_bytes as the sum of its documented terms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/http_front.h"
#include "server/http_head.h"
#include "server/http_pool.h"
#include "server/http_reserve.h"

static const kvs_http_head_limits LIM = {.max_head = 1024, .max_target = 256, .max_fields = 8, .max_body = 1000};

typedef struct head_case {
    const char *in;
    kvs_head_result want;
    int status;                    /* BAD */
} head_case;

static void test_head_table(void **state)
{
    (void)state;
    static const head_case cases[] = {
        {"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", KVS_HEAD_OK, 0},
        {"GET /health HTTP/1.0\r\n\r\n", KVS_HEAD_OK, 0},                  /* 1.0 needs no Host */
        {"\r\nGET / HTTP/1.1\nHost: x\n\n", KVS_HEAD_OK, 0},                 /* a leading empty line, bare LFs */
        {"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", KVS_HEAD_OK, 0},
        {"GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n", KVS_HEAD_OK, 0}, /* absolute form */
        {"GET /health HTTP/1.1\r\nHost: x\r\n", KVS_HEAD_MORE, 0},
        {"GET /hea", KVS_HEAD_MORE, 0},
        {"", KVS_HEAD_MORE, 0},
        {"\x16\x03\x01\x00", KVS_HEAD_BAD, 400},                            /* TLS on a plain port */
        {"HELLO\r\n\r\n", KVS_HEAD_BAD, 400},
        {"GET /health\r\n\r\n", KVS_HEAD_BAD, 400},                         /* HTTP/0.9 */
        {"GET  / HTTP/1.1\r\n", KVS_HEAD_BAD, 400},
        {"GET health HTTP/1.1\r\n", KVS_HEAD_BAD, 400},
        {"GET * HTTP/1.1\r\n", KVS_HEAD_BAD, 400},
        {"GET / http/1.1\r\n", KVS_HEAD_BAD, 400},
        {"GET / HTTP/2.0\r\n", KVS_HEAD_BAD, 505},
        {"GET / HTTP/1.1\r\n\r\n", KVS_HEAD_BAD, 400},                      /* no Host */
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", KVS_HEAD_BAD, 400},
        {"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", KVS_HEAD_BAD, 400},
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", KVS_HEAD_BAD, 400},
        {"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01" "b\r\n\r\n", KVS_HEAD_BAD, 400},
        {"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", KVS_HEAD_BAD, 400},
        {"GET /v1/completions%00junk HTTP/1.1\r\n", KVS_HEAD_BAD, 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", KVS_HEAD_BAD, 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", KVS_HEAD_OK, 0},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", KVS_HEAD_BAD, 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", KVS_HEAD_BAD, 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", KVS_HEAD_BAD, 413},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", KVS_HEAD_BAD, 413},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", KVS_HEAD_OK, 0},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", KVS_HEAD_BAD, 501},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", KVS_HEAD_BAD, 501},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", KVS_HEAD_BAD, 400},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", KVS_HEAD_BAD, 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", KVS_HEAD_BAD, 413},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n", KVS_HEAD_BAD, 413},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n", KVS_HEAD_OK, 0},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1f;ext=1\r\n", KVS_HEAD_OK, 0},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", KVS_HEAD_BAD, 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1f", KVS_HEAD_MORE, 0},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n", KVS_HEAD_OK, 0},
        {"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n", KVS_HEAD_BAD,
         431},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kvs_http_head_verdict v;
        kvs_head_result r = kvs_http_head_check(cases[i].in, strlen(cases[i].in), &LIM, &v);
        if (r != cases[i].want || (r == KVS_HEAD_BAD && v.status != cases[i].status))
            fail_msg("case %zu (%s): got %d/%d, want %d/%d", i, cases[i].in, r, v.status, cases[i].want,
                     cases[i].status);
        if (r == KVS_HEAD_BAD)
            assert_true(v.code && v.msg[0]);
    }
}

static void test_head_limits(void **state)
{
    (void)state;
    char buf[4096];
    kvs_http_head_verdict v;
    /* a target over max_target: 414, also before the line is complete */
    strcpy(buf, "GET /");
    memset(buf + 5, 'a', 300);
    buf[305] = '\0';
    assert_int_equal(kvs_http_head_check(buf, strlen(buf), &LIM, &v), KVS_HEAD_BAD);
    assert_int_equal(v.status, 414);
    /* a head over max_head: 431, also before it is complete */
    strcpy(buf, "GET / HTTP/1.1\r\nHost: x\r\nX: ");
    size_t n = strlen(buf);
    memset(buf + n, 'b', 1100);
    assert_int_equal(kvs_http_head_check(buf, n + 1100, &LIM, &v), KVS_HEAD_BAD);
    assert_int_equal(v.status, 431);
    /* the head length of an OK */
    const char *h = "GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
    assert_int_equal(kvs_http_head_check(h, strlen(h), &LIM, &v), KVS_HEAD_OK);
    assert_int_equal(v.head_len, strlen(h) - 4);
    assert_int_equal(v.body_len, 0);
    assert_false(v.chunked);
    /* the body's length (the gate counts a kept-alive connection's bytes), empty lines before included */
    h = "\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n";
    assert_int_equal(kvs_http_head_check(h, strlen(h), &LIM, &v), KVS_HEAD_OK);
    assert_int_equal(v.head_len, strlen(h));
    assert_int_equal(v.body_len, 12);
    assert_false(v.chunked);
    /* a complete head whose first chunk line is missing is flagged */
    h = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(kvs_http_head_check(h, strlen(h), &LIM, &v), KVS_HEAD_MORE);
    assert_true(v.head_done);
    assert_true(v.chunked);
    h = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_int_equal(kvs_http_head_check(h, strlen(h), &LIM, &v), KVS_HEAD_OK);
    assert_true(v.chunked);
}

static void test_pool(void **state)
{
    (void)state;
    kvs_error err;
    kvs_http_pool p;
    assert_int_equal(kvs_http_pool_init(&p, 10 * 4096 - 100, &err), KVS_OK);
    assert_int_equal(p.n_pages, 10);
    size_t ca, cb, cc;
    char *a = kvs_http_pool_alloc(&p, 5000, &ca); /* 2 pages */
    char *b = kvs_http_pool_alloc(&p, 1, &cb);    /* 1 page */
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(ca, 8192);
    assert_int_equal(cb, 4096);
    memset(a, 'a', 5000);
    /* a cannot grow in place (b follows it): it moves, keeping its bytes */
    char *a2 = kvs_http_pool_grow(&p, a, &ca, 5000, 20000);
    assert_non_null(a2);
    assert_ptr_not_equal(a2, a);
    assert_int_equal(ca, 5 * 4096);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(a2[i], 'a');
    /* a2 took pages 3..7: b (page 2) cannot grow to 3 pages anywhere and is left as it was */
    assert_null(kvs_http_pool_grow(&p, b, &cb, 1, 3 * 4096));
    assert_int_equal(cb, 4096);
    /* a's old pages 0..1 are reused; once b is gone, c grows in place over its page */
    char *c = kvs_http_pool_alloc(&p, 2 * 4096, &cc);
    assert_ptr_equal(c, a);
    kvs_http_pool_free(&p, b, cb);
    char *c2 = kvs_http_pool_grow(&p, c, &cc, 10, 3 * 4096);
    assert_ptr_equal(c2, c);
    assert_int_equal(cc, 3 * 4096);
    assert_int_equal(p.pages_used, 8);
    /* full: 2 pages left, 3 asked */
    size_t cd;
    assert_null(kvs_http_pool_alloc(&p, 3 * 4096, &cd));
    assert_int_equal(p.refused, 2);
    assert_null(kvs_http_pool_alloc(&p, 11 * 4096, &cd)); /* larger than the pool */
    kvs_http_pool_free(&p, a2, ca);
    kvs_http_pool_free(&p, c2, cc);
    assert_int_equal(p.pages_used, 0);
    assert_int_equal(p.pages_hwm, 8);
    char *all = kvs_http_pool_alloc(&p, 10 * 4096, &cc);
    assert_non_null(all);
    memset(all, 0, cc);
    kvs_http_pool_free(&p, all, cc);
    kvs_http_pool_destroy(&p);
    assert_int_equal(kvs_http_pool_init(&p, 0, &err), KVS_E_INVALID);
}

static void test_reserve(void **state)
{
    (void)state;
    kvs_http_limits d = kvs_http_limits_defaults();
    assert_int_equal(d.threads, 2);
    assert_int_equal(d.max_connections, 256);
    assert_int_equal(d.max_request_bytes, 8u << 20);
    assert_int_equal(d.body_pool_bytes, 16u << 20);
    assert_int_equal(d.connection_memory, 32u << 10);
    kvs_http_limits z = {0};
    assert_int_equal(kvs_http_reserve_bytes(&z), kvs_http_reserve_bytes(&d));
    kvs_http_limits l = {.threads = 2, .max_connections = 10, .max_request_bytes = 100000, .body_pool_bytes = 300000,
                         .connection_memory = 16384};
    /* a connection's slot, memory and buffers, and its shares of the stream and answer pools */
    size_t per_conn = 16384 + KVS_HTTP_CONN_BOOKKEEPING + KVS_HTTP_STREAM_BLOCK + kvs_http_slot_bytes() +
                      KVS_HTTP_STREAM_OUT + KVS_HTTP_ANSWER_OUT;
    size_t want = 2 * KVS_HTTP_THREAD_STACK + KVS_HTTP_GATE_STACK + 10 * per_conn + KVS_HTTP_OVERFLOW_SLOTS * 16 + KVS_HTTP_WAIT_SLOTS * 160 +
                  74 * 4096 + KVS_HTTP_STREAM_OUT_MAX + KVS_HTTP_ANSWER_OUT_MAX;
    assert_int_equal(kvs_http_body_pool_bytes(&l), 74 * 4096);
    assert_int_equal(kvs_http_stream_pool_bytes(&l), 10 * KVS_HTTP_STREAM_OUT + KVS_HTTP_STREAM_OUT_MAX);
    assert_int_equal(kvs_http_answer_pool_bytes(&l), 10 * KVS_HTTP_ANSWER_OUT + KVS_HTTP_ANSWER_OUT_MAX);
    assert_int_equal(kvs_http_reserve_bytes(&l), want);
    /* each limit moves it by its own term */
    l.answer_pool_bytes = 1 << 20; /* --http-answer-pool, in whole pages */
    assert_int_equal(kvs_http_answer_pool_bytes(&l), 1 << 20);
    assert_int_equal(kvs_http_reserve_bytes(&l), want - 10 * KVS_HTTP_ANSWER_OUT - KVS_HTTP_ANSWER_OUT_MAX + (1 << 20));
    l.answer_pool_bytes = 100000;
    assert_int_equal(kvs_http_answer_pool_bytes(&l), 25 * 4096);
    l.answer_pool_bytes = 0;
    l.max_connections = 11;
    assert_int_equal(kvs_http_reserve_bytes(&l), want + per_conn);
    l.max_connections = 10;
    l.threads = 3;
    assert_int_equal(kvs_http_reserve_bytes(&l), want + KVS_HTTP_THREAD_STACK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_table),
        cmocka_unit_test(test_head_limits),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
