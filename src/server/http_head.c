/* A strict check of an HTTP/1.x request head (see http_head.h). */
#include "server/http_head.h"
#include "core/chars.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static kvs_head_result bad(kvs_http_head_verdict *v, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kvs_head_result bad(kvs_http_head_verdict *v, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg, sizeof v->msg, fmt, ap);
    va_end(ap);
    v->status = status;
    v->code = code;
    return KVS_HEAD_BAD;
}

static bool name_is(const char *p, size_t n, const char *want)
{
    size_t w = strlen(want);
    if (n != w)
        return false;
    for (size_t i = 0; i < n; i++) {
        char a = p[i] >= 'A' && p[i] <= 'Z' ? (char)(p[i] + 32) : p[i];
        if (a != want[i])
            return false;
    }
    return true;
}

/* The request line from buf[pos]; *end gets the offset after its LF. */
static kvs_head_result request_line(const char *buf, size_t len, size_t pos, const kvs_http_head_limits *lim,
                                    kvs_http_head_verdict *v, size_t *end, bool *http10)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t p = pos;
    while (p < len && is_tchar(b[p]))
        p++;
    if (p == len)
        return p - pos > 32 ? bad(v, 400, "bad_request", "malformed request line (the method is too long)")
                            : KVS_HEAD_MORE;
    if (p == pos || b[p] != ' ')
        return bad(v, 400, "bad_request", "malformed request line: expected 'METHOD /path HTTP/1.1'");
    size_t method_len = p - pos;
    size_t t0 = ++p;
    while (p < len && b[p] > 0x20 && b[p] < 0x7f && p - t0 <= lim->max_target)
        p++;
    if (p - t0 > lim->max_target)
        return bad(v, 414, "uri_too_long", "the request target is longer than %zu bytes", lim->max_target);
    if (p == len)
        return KVS_HEAD_MORE;
    if (p == t0 || b[p] != ' ')
        return bad(v, 400, "bad_request", "malformed request line: expected 'METHOD /path HTTP/1.1'");
    size_t tlen = p - t0;
    const char *t = buf + t0;
    bool origin = t[0] == '/';
    bool absolute = (tlen > 7 && strncmp(t, "http://", 7) == 0) || (tlen > 8 && strncmp(t, "https://", 8) == 0);
    bool star = tlen == 1 && t[0] == '*' && method_len == 7 && memcmp(buf + pos, "OPTIONS", 7) == 0;
    if (!origin && !absolute && !star)
        return bad(v, 400, "bad_request", "malformed request target: it must start with '/'");
    for (size_t i = 0; i + 2 < tlen; i++)
        if (t[i] == '%' && t[i + 1] == '0' && t[i + 2] == '0')
            return bad(v, 400, "bad_request", "the request target contains an encoded NUL (%%00)");
    p++;
    static const char V[] = "HTTP/";
    for (size_t i = 0; i < 5; i++, p++) {
        if (p == len)
            return KVS_HEAD_MORE;
        if (b[p] != (unsigned char)V[i])
            return bad(v, 400, "bad_request", "malformed request line: expected 'METHOD /path HTTP/1.1'");
    }
    if (len - p < 3)
        return KVS_HEAD_MORE;
    if (!(b[p] >= '0' && b[p] <= '9' && b[p + 1] == '.' && b[p + 2] >= '0' && b[p + 2] <= '9'))
        return bad(v, 400, "bad_request", "malformed HTTP version");
    if (b[p] != '1')
        return bad(v, 505, "http_version_not_supported", "HTTP/%c.%c is not supported: use HTTP/1.1", b[p],
                   b[p + 2]);
    *http10 = b[p + 2] == '0';
    p += 3;
    if (p < len && b[p] == '\r')
        p++;
    if (p == len)
        return KVS_HEAD_MORE;
    if (b[p] != '\n')
        return bad(v, 400, "bad_request", "malformed request line: expected CRLF after the HTTP version");
    *end = p + 1;
    return KVS_HEAD_OK;
}

/* The first chunk line of a chunked body starting at buf[p]. */
static kvs_head_result first_chunk(const char *buf, size_t len, size_t p, bool expect_continue,
                                   const kvs_http_head_limits *lim, kvs_http_head_verdict *v)
{
    const unsigned char *b = (const unsigned char *)buf;
    uint64_t size = 0;
    size_t nd = 0;
    for (; p < len && kvs_hex_digit(b[p]) >= 0; p++, nd++) {
        if (nd >= 16 || size > (lim->max_body >> 4))
            return bad(v, 413, "request_too_large", "a chunk of the request body exceeds the limit of %llu bytes",
                       (unsigned long long)lim->max_body);
        size = size * 16 + (uint64_t)kvs_hex_digit(b[p]);
    }
    if (size > lim->max_body)
        return bad(v, 413, "request_too_large", "a chunk of the request body exceeds the limit of %llu bytes",
                   (unsigned long long)lim->max_body);
    if (p == len) /* the line has not arrived (all of it) yet */
        return expect_continue ? KVS_HEAD_OK : (v->head_done = true, KVS_HEAD_MORE);
    if (nd == 0 || (b[p] != ';' && b[p] != '\r' && b[p] != '\n' && b[p] != ' ' && b[p] != '\t'))
        return bad(v, 400, "bad_request", "malformed chunk size in the request body");
    return KVS_HEAD_OK;
}

kvs_head_result kvs_http_head_check(const char *buf, size_t len, const kvs_http_head_limits *lim,
                                    kvs_http_head_verdict *v)
{
    memset(v, 0, sizeof *v);
    const unsigned char *b = (const unsigned char *)buf;
    size_t p = 0;
    /* RFC 9112 2.2: empty lines before the request line are ignored. */
    while (p < len && (b[p] == '\r' || b[p] == '\n') && p < 8)
        p++;
    bool http10 = false;
    size_t line_end = 0;
    kvs_head_result r = request_line(buf, len, p, lim, v, &line_end, &http10);
    if (r != KVS_HEAD_OK)
        return r == KVS_HEAD_MORE && len > lim->max_head
                   ? bad(v, 431, "header_too_large", "the request head is larger than %zu bytes", lim->max_head)
                   : r;
    p = line_end;
    unsigned n_fields = 0, n_host = 0, n_te = 0;
    bool have_cl = false, cl_huge = false, te_chunked = false, expect_continue = false;
    uint64_t cl = 0;
    for (;;) {
        if (p > lim->max_head)
            return bad(v, 431, "header_too_large", "the request head is larger than %zu bytes", lim->max_head);
        if (p == len)
            return KVS_HEAD_MORE;
        if (b[p] == '\r' || b[p] == '\n') { /* the blank line */
            if (b[p] == '\r') {
                if (p + 1 == len)
                    return KVS_HEAD_MORE;
                if (b[p + 1] != '\n')
                    return bad(v, 400, "bad_request", "malformed header section (bare CR)");
                p++;
            }
            p++;
            break;
        }
        if (b[p] == ' ' || b[p] == '\t')
            return bad(v, 400, "bad_request", "obsolete line folding in a header field is not accepted");
        const char *lf = memchr(buf + p, '\n', len - p);
        if (!lf)
            return len > lim->max_head
                       ? bad(v, 431, "header_too_large", "the request head is larger than %zu bytes", lim->max_head)
                       : KVS_HEAD_MORE;
        size_t e = (size_t)(lf - buf);
        size_t le = e > p && b[e - 1] == '\r' ? e - 1 : e;
        size_t q = p;
        while (q < le && is_tchar(b[q]))
            q++;
        if (q == p || q == le || b[q] != ':')
            return bad(v, 400, "bad_request", "malformed header field (expected 'Name: value', no space before ':')");
        const char *name = buf + p;
        size_t name_len = q - p;
        size_t v0 = q + 1, v1 = le;
        for (size_t i = v0; i < v1; i++)
            if ((b[i] < 0x20 && b[i] != '\t') || b[i] == 0x7f)
                return bad(v, 400, "bad_request", "a control character in the value of header '%.*s'",
                           (int)(name_len > 64 ? 64 : name_len), name);
        while (v0 < v1 && (b[v0] == ' ' || b[v0] == '\t'))
            v0++;
        while (v1 > v0 && (b[v1 - 1] == ' ' || b[v1 - 1] == '\t'))
            v1--;
        const char *val = buf + v0;
        size_t val_len = v1 - v0;
        if (++n_fields > lim->max_fields)
            return bad(v, 431, "header_too_large", "the request has more than %u header fields", lim->max_fields);
        if (name_is(name, name_len, "host")) {
            n_host++;
        } else if (name_is(name, name_len, "content-length")) {
            uint64_t n = 0;
            bool huge = false;
            if (val_len == 0)
                return bad(v, 400, "bad_request", "Content-Length must be a decimal number");
            for (size_t i = 0; i < val_len; i++) {
                if (val[i] < '0' || val[i] > '9')
                    return bad(v, 400, "bad_request", "Content-Length must be a decimal number");
                if (n > (UINT64_MAX - 9) / 10)
                    huge = true;
                else
                    n = n * 10 + (uint64_t)(val[i] - '0');
            }
            if (have_cl && (huge != cl_huge || n != cl))
                return bad(v, 400, "bad_request", "conflicting Content-Length header fields");
            have_cl = true;
            cl = n;
            cl_huge = huge;
        } else if (name_is(name, name_len, "transfer-encoding")) {
            n_te++;
            te_chunked = n_te == 1 && name_is(val, val_len, "chunked");
        } else if (name_is(name, name_len, "expect")) {
            expect_continue = name_is(val, val_len, "100-continue");
        }
        p = e + 1;
    }
    v->head_len = p;
    if (n_host > 1 || (!http10 && n_host == 0))
        return bad(v, 400, "bad_request", n_host ? "more than one Host header field" : "HTTP/1.1 requires a Host "
                   "header field");
    if (n_te > 0) {
        if (http10)
            return bad(v, 400, "bad_request", "Transfer-Encoding is not allowed in HTTP/1.0");
        if (have_cl)
            return bad(v, 400, "bad_request", "a request must not have both Transfer-Encoding and Content-Length");
        if (!te_chunked)
            return bad(v, 501, "not_implemented", "only 'Transfer-Encoding: chunked' is supported");
    }
    if (have_cl && (cl_huge || cl > lim->max_body))
        return bad(v, 413, "request_too_large", "the request body exceeds the limit of %llu bytes",
                   (unsigned long long)lim->max_body);
    v->body_len = have_cl ? cl : 0;
    v->chunked = te_chunked;
    if (te_chunked)
        return first_chunk(buf, len, p, expect_continue, lim, v);
    return KVS_HEAD_OK;
}
