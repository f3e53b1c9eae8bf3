/* The HTTP side: libmicrohttpd daemon, routing, authentication, CORS, bodies. */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/server_internal.h"

/* ---- responses ---- */

/* Queue buf (taken over) with an optional extra header (hname: hval). */
static enum MHD_Result send_buffer(struct MHD_Connection *c, unsigned status, const char *ctype, char *buf,
                                   size_t len, const char *hname, const char *hval)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(buf);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (hname)
        MHD_add_response_header(r, hname, hval);
    if (hname && strcasecmp(hname, MHD_HTTP_HEADER_CONNECTION) == 0) {
        kvs_http_slot *sl = kvs_http_slot_of(c);
        if (sl) /* libmicrohttpd closes after this response */
            sl->resp_close = true;
    }
    kvs_http_decorate(c, r);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result kvs_http_text(struct MHD_Connection *c, unsigned status, const char *ctype, char *text, size_t len)
{
    return send_buffer(c, status, ctype, text, len, NULL, NULL);
}

enum MHD_Result kvs_http_json(struct MHD_Connection *c, unsigned status, json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s)
        return MHD_NO;
    return send_buffer(c, status, "application/json", s, strlen(s), NULL, NULL);
}

json_t *kvs_http_error_obj(unsigned status, const char *param, const char *code, const char *msg)
{
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    json_t *e = json_object();
    json_object_set_new(e, "message", kvs_api_text_json(msg, strlen(msg)));
    json_object_set_new(e, "type", json_string(type));
    json_object_set_new(e, "param", param && *param ? json_string(param) : json_null());
    json_object_set_new(e, "code", code ? json_string(code) : json_null());
    json_t *o = json_object();
    json_object_set_new(o, "error", e);
    return o;
}

static enum MHD_Result send_error_hdr_msg(struct MHD_Connection *c, unsigned status, const char *param,
                                          const char *code, const char *hname, const char *hval, const char *msg)
{
    json_t *o = kvs_http_error_obj(status, param, code, msg);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return MHD_NO;
    return send_buffer(c, status, "application/json", s, strlen(s), hname, hval);
}

static enum MHD_Result send_error_v(struct MHD_Connection *c, unsigned status, const char *param, const char *code,
                                    const char *hname, const char *hval, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    return send_error_hdr_msg(c, status, param, code, hname, hval, msg);
}

enum MHD_Result kvs_http_error(struct MHD_Connection *c, unsigned status, const char *param, const char *code,
                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result r = send_error_v(c, status, param, code, NULL, NULL, fmt, ap);
    va_end(ap);
    return r;
}


/* An error response carrying one more header (Connection: close,
 * WWW-Authenticate, Allow). */
static enum MHD_Result error_hdr(struct MHD_Connection *c, unsigned status, const char *code, const char *hname,
                                 const char *hval, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result error_hdr(struct MHD_Connection *c, unsigned status, const char *code, const char *hname,
                                 const char *hval, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result r = send_error_v(c, status, NULL, code, hname, hval, fmt, ap);
    va_end(ap);
    return r;
}

enum MHD_Result kvs_http_status_error(struct MHD_Connection *c, kvs_status st, const char *param, const char *msg)
{
    if (st == KVS_E_BUDGET)
        return send_error_hdr_msg(c, 503, param, "server_busy", MHD_HTTP_HEADER_RETRY_AFTER, "1", msg);
    return kvs_http_error(c, st == KVS_E_NOMEM ? 500 : 400, param, NULL, "%s", msg);
}

int kvs_http_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

bool kvs_http_peer_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* ---- jobs (for draining) ---- */

bool kvs_server_job_begin(kvs_server *s)
{
    pthread_mutex_lock(&s->mu);
    bool ok = !s->draining;
    if (ok)
        s->n_active++;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void kvs_server_job_end(kvs_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->n_active--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- CORS ---- */

/* Whether origin o (n bytes) is in the --allowed-origins list. */
static bool origin_allowed(const kvs_server *s, const char *o)
{
    if (!o || !*o)
        return false;
    if (s->any_origin)
        return true;
    if (!s->origins)
        return false;
    size_t n = strlen(o);
    for (const char *p = s->origins; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncasecmp(p, o, n) == 0)
            return true;
        p += len + (e ? 1 : 0);
    }
    return false;
}

static kvs_server *server_of(struct MHD_Connection *c)
{
    kvs_http_slot *sl = kvs_http_slot_of(c);
    return sl ? sl->front->s : NULL;
}

void kvs_http_decorate(struct MHD_Connection *c, struct MHD_Response *r)
{
    kvs_server *s = server_of(c);
    if (!s || (!s->origins && !s->any_origin))
        return;
    const char *o = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!origin_allowed(s, o))
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", s->any_origin ? "*" : o);
    if (!s->any_origin)
        MHD_add_response_header(r, "Vary", "Origin");
}

/* OPTIONS: a CORS preflight from an allowed origin gets the permissions;
 * one from any other origin a 403; a plain OPTIONS the allowed methods. */
static enum MHD_Result preflight(kvs_server *s, struct MHD_Connection *c, const char *url)
{
    const char *o = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *m = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Method");
    if (!o || !m) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, POST, HEAD, OPTIONS");
        enum MHD_Result ret = MHD_queue_response(c, 204, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!origin_allowed(s, o))
        return kvs_http_error(c, 403, NULL, "cors_origin_not_allowed",
                              "cross-origin requests from %.200s are not allowed (see --allowed-origins)", o);
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(r, "Access-Control-Allow-Origin", s->any_origin ? "*" : o);
    MHD_add_response_header(r, "Vary", "Origin");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", h && *h ? h : "Authorization, Content-Type");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    (void)url;
    enum MHD_Result ret = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- routing ---- */

/* Constant-time comparison of the Authorization header with "Bearer KEY"
 * (the scheme is case-insensitive, RFC 7235). */
static bool authorized(const kvs_server *s, struct MHD_Connection *c)
{
    if (!s->api_key)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return false;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned char diff = a != b;
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned char)(s->api_key[i] ^ (i < a ? h[i] : 0));
    return diff == 0;
}

/* A JSON body: Content-Type application/json or application/...+json
 * (parameters such as charset allowed). */
static bool json_content_type(struct MHD_Connection *c)
{
    const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!t)
        return false;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = strcspn(t, "; \t");
    if (n == 16 && strncasecmp(t, "application/json", 16) == 0)
        return true;
    return n > 17 && strncasecmp(t, "application/", 12) == 0 && strncasecmp(t + n - 5, "+json", 5) == 0;
}

typedef enum { R_GET, R_POST } route_method;

typedef struct route {
    const char *path;
    route_method method;
    int id;
} route;

enum { EP_COMPLETIONS, EP_CHAT, EP_MODELS, EP_HEALTH, EP_METRICS, EP_TOKENIZE, EP_DETOKENIZE, EP_VERSION };

static const route ROUTES[] = {
    {"/v1/completions", R_POST, EP_COMPLETIONS}, {"/v1/chat/completions", R_POST, EP_CHAT},
    {"/v1/models", R_GET, EP_MODELS},           {"/health", R_GET, EP_HEALTH},
    {"/metrics", R_GET, EP_METRICS},            {"/tokenize", R_POST, EP_TOKENIZE},
    {"/detokenize", R_POST, EP_DETOKENIZE},     {"/version", R_GET, EP_VERSION},
};

static enum MHD_Result dispatch(kvs_server *s, struct MHD_Connection *c, const char *url, const char *method,
                                kvs_http_slot *sl)
{
    if (sl->bad_target)
        return kvs_http_error(c, 400, NULL, "bad_request", "the request target contains an encoded NUL (%%00)");
    if (strcmp(method, "OPTIONS") == 0)
        return preflight(s, c, url);
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (strcmp(url, ROUTES[i].path) == 0)
            rt = &ROUTES[i];
    bool v1 = strncmp(url, "/v1/", 4) == 0 || strcmp(url, "/v1") == 0;
    if (v1 && !authorized(s, c))
        return error_hdr(c, 401, "invalid_api_key", MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
                         "Incorrect or missing API key: send 'Authorization: Bearer KEY'");
    if (!rt && strncmp(url, "/v1/models/", 11) == 0 && url[11] != '\0') { /* GET /v1/models/{id} */
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return error_hdr(c, 405, "method_not_allowed", MHD_HTTP_HEADER_ALLOW, "GET",
                             "%s %.200s is not allowed; use GET", method, url);
        return kvs_api_model(s, c, url + 11);
    }
    if (!rt)
        return kvs_http_error(c, 404, NULL, "not_found", "no such endpoint: %s %.200s", method, url);
    const char *want = rt->method == R_GET ? "GET" : "POST";
    if (strcmp(method, want) != 0 && !(rt->method == R_GET && strcmp(method, "HEAD") == 0)) {
        return error_hdr(c, 405, "method_not_allowed", MHD_HTTP_HEADER_ALLOW, want, "%s %s is not allowed; use %s",
                         method, url, want);
    }
    /* Only JSON bodies: a browser can send text/plain or a form to any
     * origin without asking (a CORS "simple request"), never JSON. */
    if (rt->method == R_POST && !json_content_type(c))
        return kvs_http_error(c, 415, NULL, "unsupported_media_type",
                              "the request body must be JSON: send 'Content-Type: application/json'");
    const char *body = sl->body ? sl->body : "";
    switch (rt->id) {
    case EP_COMPLETIONS: return kvs_api_completions(s, c, body, sl->len);
    case EP_CHAT: return kvs_api_chat(s, c, body, sl->len);
    case EP_MODELS: return kvs_api_models(s, c);
    case EP_HEALTH: return kvs_api_health(s, c);
    case EP_METRICS: return kvs_api_metrics(s, c);
    case EP_TOKENIZE: return kvs_api_tokenize(s, c, body, sl->len);
    case EP_DETOKENIZE: return kvs_api_detokenize(s, c, body, sl->len);
    case EP_VERSION: return kvs_http_json(c, 200, json_pack("{s:s}", "version", "0.1.0"));
    }
    return MHD_NO;
}

/* A body's first run in the pool; it doubles as the body arrives. */
#define BODY_FIRST_RUN ((size_t)64 << 10)

static void body_free(kvs_server *s, kvs_http_slot *sl)
{
    kvs_http_pool_free(&s->front.pool, sl->body, sl->cap);
    sl->body = NULL;
    sl->len = sl->cap = 0;
}

/* Count the values of header `name` and whether they all agree. */
typedef struct hdr_count {
    const char *name, *first;
    unsigned n;
    bool differ;
} hdr_count;

static enum MHD_Result count_hdr(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    hdr_count *h = cls;
    if (strcasecmp(key, h->name) != 0)
        return MHD_YES;
    if (h->n++ == 0)
        h->first = value;
    else if (strcmp(h->first ? h->first : "", value ? value : "") != 0)
        h->differ = true;
    return MHD_YES;
}

/* Framing checks on a request head (the gate checked the first one of a
 * connection; these cover the later ones).  Queues the error and returns
 * false when the request must be refused. */
static bool head_ok(kvs_server *s, struct MHD_Connection *c, enum MHD_Result *ret)
{
    hdr_count cl = {.name = MHD_HTTP_HEADER_CONTENT_LENGTH}, te = {.name = MHD_HTTP_HEADER_TRANSFER_ENCODING};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_hdr, &cl);
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_hdr, &te);
    if (cl.differ) {
        *ret = error_hdr(c, 400, "bad_request", MHD_HTTP_HEADER_CONNECTION, "close",
                         "conflicting Content-Length header fields");
        return false;
    }
    if (te.n > 0 && cl.n > 0) {
        *ret = error_hdr(c, 400, "bad_request", MHD_HTTP_HEADER_CONNECTION, "close",
                         "a request must not have both Transfer-Encoding and Content-Length");
        return false;
    }
    if (te.n > 0 && (te.n > 1 || strcasecmp(te.first ? te.first : "", "chunked") != 0)) {
        *ret = error_hdr(c, 501, "not_implemented", MHD_HTTP_HEADER_CONNECTION, "close",
                         "only 'Transfer-Encoding: chunked' is supported");
        return false;
    }
    if (cl.n > 0) {
        char *end;
        unsigned long long n = strtoull(cl.first, &end, 10);
        if (end != cl.first && *end == '\0' && n > s->max_body) {
            *ret = error_hdr(c, 413, "request_too_large", MHD_HTTP_HEADER_CONNECTION, "close",
                             "the request body (%llu bytes) exceeds the limit of %zu bytes", n, s->max_body);
            return false;
        }
    }
    return true;
}

/* Whether value (a Connection header) lists the token `close`. */
static bool lists_close(const char *value)
{
    for (const char *p = value; p && *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ", \t");
        if (n == 5 && strncasecmp(p, "close", 5) == 0)
            return true;
        p += n;
    }
    return false;
}

/* Whether libmicrohttpd keeps the connection alive after this request, as
 * far as the request tells (its keepalive_possible: HTTP/1.1 and no
 * `Connection: close`; HTTP/1.0 keep-alive is left to libmicrohttpd). */
static bool request_keeps(struct MHD_Connection *c, const char *version)
{
    if (!version || strcmp(version, MHD_HTTP_VERSION_1_1) != 0)
        return false;
    const char *conn = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONNECTION);
    return !lists_close(conn);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    kvs_server *s = cls;
    kvs_http_slot *sl = kvs_http_slot_of(c);
    if (!sl)
        return MHD_NO;
    if (!*con_cls) { /* headers are in: a fresh request */
        *con_cls = sl;
        kvs_http_request_begin(&s->front, sl);
        sl->phase = REQ_BODY;
        sl->too_large = sl->pool_full = false;
        sl->dropped = 0;
        sl->defer_fn = NULL;
        sl->keep = request_keeps(c, version);
        sl->resp_close = false;
        enum MHD_Result ret;
        if (!head_ok(s, c, &ret)) {
            sl->phase = REQ_DONE;
            return ret;
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
        /* Room for what has arrived only (the rest grows as it comes), so a slow
         * sender of a large body holds little of the pool. */
        size_t first = n + 1 < BODY_FIRST_RUN ? (size_t)n + 1 : BODY_FIRST_RUN;
        if (n > 0 && !(sl->body = kvs_http_pool_alloc(&s->front.pool, first, &sl->cap))) {
            sl->phase = REQ_DONE;
            kvs_metrics_refused_for_memory(&s->metrics);
            return error_hdr(c, 503, "server_busy", MHD_HTTP_HEADER_CONNECTION, "close",
                             "the server is busy reading other requests' bodies (its body pool is full); retry");
        }
        return MHD_YES;
    }
    if (sl->phase == REQ_DEFERRED) { /* woken: continue */
        kvs_http_resume_fn fn = sl->defer_fn;
        sl->phase = REQ_DONE;
        sl->defer_fn = NULL;
        *upload_size = 0;
        return fn(sl->defer_ctx, c);
    }
    if (sl->phase == REQ_DONE) { /* answered: discard the rest of the body */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size > 0 && (sl->too_large || sl->pool_full)) {
        /* MHD cannot answer in the middle of a body: read and drop it, up to a
         * point, then answer; a client that keeps sending is cut off. */
        sl->dropped += *upload_size;
        *upload_size = 0;
        return sl->dropped > 8 * s->max_body ? MHD_NO : MHD_YES;
    }
    if (*upload_size > 0) {
        if (*upload_size > s->max_body - sl->len) {
            sl->too_large = true;
            sl->dropped = sl->len + *upload_size;
            *upload_size = 0;
            body_free(s, sl);
            return MHD_YES;
        }
        if (sl->len + *upload_size + 1 > sl->cap) {
            size_t want = sl->cap ? sl->cap * 2 : BODY_FIRST_RUN;
            if (want < sl->len + *upload_size + 1)
                want = sl->len + *upload_size + 1;
            if (want > s->max_body + 1)
                want = s->max_body + 1;
            char *b = kvs_http_pool_grow(&s->front.pool, sl->body, &sl->cap, sl->len, want);
            if (!b) {
                sl->pool_full = true;
                sl->dropped = sl->len + *upload_size;
                *upload_size = 0;
                body_free(s, sl);
                return MHD_YES;
            }
            sl->body = b;
        }
        memcpy(sl->body + sl->len, upload_data, *upload_size);
        sl->len += *upload_size;
        sl->body[sl->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    sl->phase = REQ_DONE;
    enum MHD_Result ret;
    if (sl->too_large)
        ret = kvs_http_error(c, 413, NULL, "request_too_large", "the request body (%zu bytes) exceeds the limit of "
                             "%zu bytes", sl->dropped, s->max_body);
    else if (sl->pool_full) {
        kvs_metrics_refused_for_memory(&s->metrics);
        ret = kvs_http_error(c, 503, NULL, "server_busy",
                             "the server is busy reading other requests' bodies (its body pool is full); retry");
    } else
        ret = dispatch(s, c, url, method, sl);
    body_free(s, sl); /* parsed: the request holds no pointer into it */
    return ret;
}

/* A request ends.  When libmicrohttpd keeps the connection alive, this runs
 * from its connection_reset(), just before the connection waits for the
 * next head (MHD_CONNECTION_INIT, read buffer kept); suspending it here
 * hands that wait to the gate (kvs_http_keep).  A wrong guess is harmless:
 * a connection libmicrohttpd closes after all is resumed by the gate when
 * its peer leaves or at the idle time-out, and cleaned up then. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    kvs_server *s = cls;
    kvs_http_slot *sl = *con_cls;
    *con_cls = NULL;
    if (!sl)
        return;
    if (sl->long_timeout) { /* back to the idle time-out between requests */
        sl->long_timeout = false;
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, s->front.idle_timeout_s);
    }
    if (sl->phase == REQ_DEFERRED && sl->defer_cancel) /* the connection ended while waiting */
        sl->defer_cancel(sl->defer_ctx);
    sl->defer_fn = NULL;
    sl->defer_cancel = NULL;
    sl->phase = REQ_NONE;
    sl->bad_target = false;
    body_free(s, sl);
    kvs_http_request_end(&s->front, sl);
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && sl->keep && !sl->resp_close)
        kvs_http_keep(&s->front, sl, c);
    sl->keep = sl->resp_close = false;
}

/* Percent-decoding of the target, as MHD's own, but a decoded NUL marks the
 * request as bad instead of silently cutting the path. */
static size_t on_unescape(void *cls, struct MHD_Connection *c, char *uri)
{
    (void)cls;
    size_t raw = strlen(uri);
    bool nul = false;
    for (size_t i = 0; i + 2 < raw + 1 && uri[i]; i++)
        if (uri[i] == '%' && uri[i + 1] == '0' && uri[i + 2] == '0')
            nul = true;
    size_t n = MHD_http_unescape(uri);
    if (nul) {
        kvs_http_slot *sl = kvs_http_slot_of(c);
        if (sl)
            sl->bad_target = true;
    }
    return n;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    kvs_server *s = cls;
    va_list ap2;
    va_copy(ap2, ap);
    pthread_mutex_lock(&s->mu);
    vsnprintf(s->mhd_error, sizeof s->mhd_error, fmt, ap);
    pthread_mutex_unlock(&s->mu);
    if (s->log) {
        fprintf(s->log, "WARNING kvserve: http: ");
        vfprintf(s->log, fmt, ap2);
        fflush(s->log);
    }
    va_end(ap2);
}

/* ---- start and stop ---- */

kvs_server_opts kvs_server_defaults(void)
{
    return (kvs_server_opts){.host = "127.0.0.1", .port = 8000, .max_body_bytes = KVS_HTTP_DEFAULT_MAX_REQUEST,
                             .connection_timeout_s = 5, .header_timeout_s = 10,
                             .http_threads = KVS_HTTP_DEFAULT_THREADS,
                             .max_connections = KVS_HTTP_DEFAULT_MAX_CONNECTIONS};
}

void kvs_server_default_name(const char *model_path, char *buf, size_t cap)
{
    /* A directory (a Hugging Face checkpoint) keeps its whole name, dots
     * included ("Qwen2.5-7B-Instruct"), without trailing slashes. */
    struct stat sb;
    bool dir = stat(model_path, &sb) == 0 && S_ISDIR(sb.st_mode);
    size_t len = strlen(model_path);
    while (dir && len > 1 && model_path[len - 1] == '/')
        len--;
    const char *base = model_path;
    for (size_t i = 0; i < len; i++)
        if (model_path[i] == '/')
            base = model_path + i + 1;
    size_t n = (size_t)(model_path + len - base);
    const char *dot = dir ? NULL : strrchr(base, '.');
    if (dot && dot != base)
        n = (size_t)(dot - base);
    snprintf(buf, cap, "%.*s", (int)n, base);
}

kvs_http_limits kvs_server_http_limits(const kvs_server_opts *o)
{
    kvs_http_limits l = {.threads = o->http_threads, .max_connections = o->max_connections,
                         .max_request_bytes = o->max_body_bytes, .body_pool_bytes = o->body_pool_bytes,
                         .connection_memory = o->connection_memory, .answer_pool_bytes = o->answer_pool_bytes};
    return kvs_http_limits_resolve(&l);
}

kvs_status kvs_server_start(kvs_server **out, kvs_instance *inst, const kvs_server_opts *o, kvs_error *err)
{
    *out = NULL;
    if (o->port < 0 || o->port > 65535)
        return kvs_fail(err, KVS_E_INVALID, "--port must be in 0..65535, got %d", o->port);
    if (o->api_key && !*o->api_key)
        return kvs_fail(err, KVS_E_INVALID, "the API key is empty (--api-key \"\" or KVSERVE_API_KEY=): give a "
                        "non-empty key, or none to serve without authentication");
    kvs_http_limits lim = kvs_server_http_limits(o);
    if (lim.threads > 1024 || lim.max_connections > 1000000)
        return kvs_fail(err, KVS_E_INVALID, "--http-threads must be in 1..1024 and --max-connections in 1..1000000");
    if (kvs_http_body_pool_bytes(&lim) < lim.max_request_bytes + 1)
        return kvs_fail(err, KVS_E_INVALID, "--http-body-pool (%zu bytes) must hold one body of --max-request-bytes "
                        "(%zu)", lim.body_pool_bytes, lim.max_request_bytes);
    if (lim.connection_memory < 8192)
        return kvs_fail(err, KVS_E_INVALID, "the per-connection memory must be at least 8 KiB");
    unsigned idle = o->connection_timeout_s ? o->connection_timeout_s : 5;
    double header_timeout = o->header_timeout_s > 0 ? o->header_timeout_s : 10;
    kvs_server *s = calloc(1, sizeof *s);
    if (!s)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->inst = inst;
    s->max_model_len = kvs_engine_get_config(inst->engine)->max_model_len;
    s->max_body = lim.max_request_bytes;
    s->log = o->log;
    s->started = time(NULL);
    s->salt = (uint64_t)s->started * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32;
    char name[256];
    if (o->served_model_name && *o->served_model_name)
        snprintf(name, sizeof name, "%s", o->served_model_name);
    else
        kvs_server_default_name(o->model_path ? o->model_path : "model", name, sizeof name);
    s->model_name = strdup(name);
    s->api_key = o->api_key ? strdup(o->api_key) : NULL;
    if (o->allowed_origins && *o->allowed_origins) {
        s->any_origin = strcmp(o->allowed_origins, "*") == 0;
        if (!s->any_origin) { /* kept without spaces */
            if ((s->origins = malloc(strlen(o->allowed_origins) + 1))) {
                char *d = s->origins;
                for (const char *p = o->allowed_origins; *p; p++)
                    if (*p != ' ' && *p != '\t')
                        *d++ = *p;
                *d = '\0';
            }
        }
    }
    kvs_metrics_init(&s->metrics, name, &inst->report);
    s->metrics.gpool = inst->gpool;
    kvs_status st;
    if (!s->model_name || (o->api_key && !s->api_key)) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = kvs_api_chat_init(s, o, err)) != KVS_OK)
        goto fail;
    st = kvs_http_front_init(&s->front, s, o->host ? o->host : "127.0.0.1", o->port, &lim, idle, header_timeout, err);
    s->front_ready = true;
    if (st != KVS_OK)
        goto fail;
    if ((st = kvs_http_pool_init(&s->stream_pool, kvs_http_stream_pool_bytes(&lim), err)) != KVS_OK)
        goto fail;
    s->stream_pool_ready = true;
    if ((st = kvs_http_pool_init(&s->answer_pool, kvs_http_answer_pool_bytes(&lim), err)) != KVS_OK)
        goto fail;
    s->answer_pool_ready = true;
    if ((st = kvs_loop_start(&s->loop, inst->engine, &s->metrics, s->log, err)) != KVS_OK)
        goto fail;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, kvs_http_on_connection, &s->front,
                            MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, s,
                            MHD_OPTION_THREAD_POOL_SIZE, lim.threads,
                            MHD_OPTION_CONNECTION_TIMEOUT, idle,
                            MHD_OPTION_CONNECTION_LIMIT, lim.max_connections + lim.threads,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, lim.connection_memory,
                            MHD_OPTION_THREAD_STACK_SIZE, KVS_HTTP_THREAD_STACK,
                            MHD_OPTION_STRICT_FOR_CLIENT, 1,
                            MHD_OPTION_END);
    if (!s->d) {
        st = kvs_fail(err, KVS_E_IO, "cannot start the HTTP daemon%s%s", s->mhd_error[0] ? ": " : "", s->mhd_error);
        goto fail;
    }
    if ((st = kvs_http_front_start(&s->front, s->d, err)) != KVS_OK)
        goto fail;
    s->port = s->front.port;
    *out = s;
    return KVS_OK;
fail:
    kvs_server_stop(s);
    return st;
}

int kvs_server_port(const kvs_server *s) { return s->port; }
const char *kvs_server_model_name(const kvs_server *s) { return s->model_name; }

void kvs_server_drain(kvs_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    pthread_mutex_unlock(&s->mu);
    if (s->front_ready)
        atomic_store(&s->front.draining, true); /* new connections get 503 */
}

bool kvs_server_wait(kvs_server *s, int timeout_ms)
{
    struct timespec dl = kvs_deadline_ms(timeout_ms >= 0 ? timeout_ms : 0); /* unused when < 0 */
    pthread_mutex_lock(&s->mu);
    while (s->n_active > 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&s->cv, &s->mu);
        else if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) != 0)
            break;
    }
    bool idle = s->n_active == 0;
    pthread_mutex_unlock(&s->mu);
    return idle;
}

/* How long stopping waits for aborted requests' last bytes to be written. */
#define FLUSH_MS 5000

void kvs_server_stop(kvs_server *s)
{
    if (!s)
        return;
    kvs_server_drain(s);
    /* The engine thread ends every open channel with an error event; each
     * push wakes its connection, which writes the error (and [DONE]). */
    kvs_loop_stop(s->loop);
    if (s->d) {
        /* No connection may stay suspended past MHD_stop_daemon: wake them all
         * and let each finish its answer (bounded: a client that does not
         * read is cut off). */
        if (!kvs_http_front_finish(&s->front, FLUSH_MS) && s->log) {
            fprintf(s->log, "WARNING kvserve: http: some responses were still being written at shutdown\n");
            fflush(s->log);
        }
    }
    if (s->front_ready)
        kvs_http_front_stop_gate(&s->front);
    if (s->d)
        MHD_stop_daemon(s->d);
    if (s->front_ready)
        kvs_http_front_free(&s->front);
    if (s->stream_pool_ready) /* every stream has given its buffer back (MHD is stopped) */
        kvs_http_pool_destroy(&s->stream_pool);
    if (s->answer_pool_ready) /* likewise every answer */
        kvs_http_pool_destroy(&s->answer_pool);
    kvs_loop_free(s->loop);
    kvs_api_chat_free(s);
    kvs_metrics_destroy(&s->metrics);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->model_name);
    free(s->api_key);
    free(s->origins);
    free(s);
}

void kvs_server_http_stats_get(kvs_server *s, kvs_server_http_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s->front_ready)
        return;
    kvs_http_front *f = &s->front;
    pthread_mutex_lock(&f->mu);
    out->connections = f->n_used;
    out->max_connections = f->n_slots;
    pthread_mutex_unlock(&f->mu);
    pthread_mutex_lock(&f->pool.mu);
    out->body_pool_used = f->pool.pages_used * KVS_HTTP_POOL_PAGE;
    out->body_pool_peak = f->pool.pages_hwm * KVS_HTTP_POOL_PAGE;
    out->body_pool_bytes = f->pool.bytes;
    out->refused_bodies = f->pool.refused;
    pthread_mutex_unlock(&f->pool.mu);
    if (s->stream_pool_ready) {
        kvs_http_pool *p = &s->stream_pool;
        pthread_mutex_lock(&p->mu);
        out->stream_pool_used = p->pages_used * KVS_HTTP_POOL_PAGE;
        out->stream_pool_peak = p->pages_hwm * KVS_HTTP_POOL_PAGE;
        out->stream_pool_bytes = p->bytes;
        out->refused_streams = p->refused;
        pthread_mutex_unlock(&p->mu);
    }
    if (s->answer_pool_ready) {
        kvs_http_pool *p = &s->answer_pool;
        pthread_mutex_lock(&p->mu);
        out->answer_pool_used = p->pages_used * KVS_HTTP_POOL_PAGE;
        out->answer_pool_peak = p->pages_hwm * KVS_HTTP_POOL_PAGE;
        out->answer_pool_bytes = p->bytes;
        out->refused_answers = p->refused;
        pthread_mutex_unlock(&p->mu);
    }
    out->refused_connections = atomic_load(&f->refused_full);
}
