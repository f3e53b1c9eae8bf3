/* The HTTP side: libmicrohttpd daemon, routing, authentication, bodies. */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/server_internal.h"

/* One HTTP request's state across MHD's calls: the body read so far. */
typedef struct http_req {
    char *body;
    size_t len, cap;
    bool answered;                 /* a response is queued (maybe before the body was read) */
    bool too_large;                /* the body passed the limit: dropping the rest */
    size_t dropped;                /* bytes of body dropped */
} http_req;

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

static enum MHD_Result send_error_v(struct MHD_Connection *c, unsigned status, const char *param, const char *code,
                                    const char *hname, const char *hval, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *o = kvs_http_error_obj(status, param, code, msg);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return MHD_NO;
    return send_buffer(c, status, "application/json", s, strlen(s), hname, hval);
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

/* ---- routing ---- */

/* Constant-time comparison of the Authorization header with "Bearer KEY". */
static bool authorized(const kvs_server *s, struct MHD_Connection *c)
{
    if (!s->api_key)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned char diff = a != b;
    for (size_t i = 0; i < b; i++)
        diff |= (unsigned char)(s->api_key[i] ^ (i < a ? h[i] : 0));
    return diff == 0;
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
                                http_req *r)
{
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (strcmp(url, ROUTES[i].path) == 0)
            rt = &ROUTES[i];
    bool v1 = strncmp(url, "/v1/", 4) == 0 || strcmp(url, "/v1") == 0;
    if (v1 && !authorized(s, c))
        return error_hdr(c, 401, "invalid_api_key", MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer",
                         "Incorrect or missing API key: send 'Authorization: Bearer KEY'");
    if (!rt)
        return kvs_http_error(c, 404, NULL, "not_found", "no such endpoint: %s %s", method, url);
    const char *want = rt->method == R_GET ? "GET" : "POST";
    if (strcmp(method, want) != 0 && !(rt->method == R_GET && strcmp(method, "HEAD") == 0)) {
        return error_hdr(c, 405, "method_not_allowed", MHD_HTTP_HEADER_ALLOW, want, "%s %s is not allowed; use %s",
                         method, url, want);
    }
    const char *body = r->body ? r->body : "";
    switch (rt->id) {
    case EP_COMPLETIONS: return kvs_api_completions(s, c, body, r->len);
    case EP_CHAT: return kvs_api_chat(s, c, body, r->len);
    case EP_MODELS: return kvs_api_models(s, c);
    case EP_HEALTH: return kvs_api_health(s, c);
    case EP_METRICS: return kvs_api_metrics(s, c);
    case EP_TOKENIZE: return kvs_api_tokenize(s, c, body, r->len);
    case EP_DETOKENIZE: return kvs_api_detokenize(s, c, body, r->len);
    case EP_VERSION: return kvs_http_json(c, 200, json_pack("{s:s}", "version", "0.1.0"));
    }
    return MHD_NO;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    kvs_server *s = cls;
    http_req *r = *con_cls;
    if (!r) { /* headers are in: a fresh request */
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        *con_cls = r;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            unsigned long long n = strtoull(cl, &end, 10);
            if (end != cl && *end == '\0' && n > s->max_body) {
                r->answered = true;
                return error_hdr(c, 413, "request_too_large", MHD_HTTP_HEADER_CONNECTION, "close",
                                 "the request body (%llu bytes) exceeds the limit of %zu bytes", n, s->max_body);
            }
        }
        return MHD_YES;
    }
    if (r->answered) { /* a response is queued: discard the rest of the body */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size > 0 && r->too_large) {
        /* MHD cannot answer in the middle of a body: read and drop it, up to a
         * point, then answer 413; a client that keeps sending is cut off. */
        r->dropped += *upload_size;
        *upload_size = 0;
        return r->dropped > 8 * s->max_body ? MHD_NO : MHD_YES;
    }
    if (*upload_size > 0) {
        if (*upload_size > s->max_body - r->len) {
            r->too_large = true;
            r->dropped = r->len + *upload_size;
            *upload_size = 0;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return MHD_YES;
        }
        if (r->len + *upload_size + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + *upload_size + 1)
                cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b)
                return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, *upload_size);
        r->len += *upload_size;
        r->body[r->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    r->answered = true;
    if (r->too_large)
        return kvs_http_error(c, 413, NULL, "request_too_large", "the request body (%zu bytes) exceeds the limit of "
                              "%zu bytes", r->dropped, s->max_body);
    return dispatch(s, c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    http_req *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
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
    return (kvs_server_opts){.host = "127.0.0.1", .port = 8000, .max_body_bytes = 8u << 20,
                             .connection_timeout_s = 600};
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

static kvs_status resolve(const char *host, int port, struct sockaddr_storage *ss, bool *v6, kvs_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0)
        return kvs_fail(err, KVS_E_INVALID, "--host '%s': %s", host, gai_strerror(rc));
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return KVS_OK;
}

kvs_status kvs_server_start(kvs_server **out, kvs_instance *inst, const kvs_server_opts *o, kvs_error *err)
{
    *out = NULL;
    if (o->port < 0 || o->port > 65535)
        return kvs_fail(err, KVS_E_INVALID, "--port must be in 0..65535, got %d", o->port);
    struct sockaddr_storage ss;
    bool v6 = false;
    kvs_status st = resolve(o->host ? o->host : "127.0.0.1", o->port, &ss, &v6, err);
    if (st != KVS_OK)
        return st;
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
    s->max_body = o->max_body_bytes ? o->max_body_bytes : (8u << 20);
    s->log = o->log;
    s->started = time(NULL);
    s->salt = (uint64_t)s->started * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32;
    char name[256];
    if (o->served_model_name && *o->served_model_name)
        snprintf(name, sizeof name, "%s", o->served_model_name);
    else
        kvs_server_default_name(o->model_path ? o->model_path : "model", name, sizeof name);
    s->model_name = strdup(name);
    s->api_key = o->api_key && *o->api_key ? strdup(o->api_key) : NULL;
    kvs_metrics_init(&s->metrics, name, &inst->report);
    if (!s->model_name || (o->api_key && *o->api_key && !s->api_key)) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = kvs_api_chat_init(s, o, err)) != KVS_OK)
        goto fail;
    if ((st = kvs_loop_start(&s->loop, inst->engine, &s->metrics, err)) != KVS_OK)
        goto fail;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_AUTO | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_access, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_CONNECTION_TIMEOUT, o->connection_timeout_s ? o->connection_timeout_s : 600u,
                            MHD_OPTION_CONNECTION_LIMIT, 1000u,
                            MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024),
                            MHD_OPTION_END);
    if (!s->d) {
        st = kvs_fail(err, KVS_E_IO, "cannot listen on %s:%d%s%s", o->host ? o->host : "127.0.0.1", o->port,
                      s->mhd_error[0] ? ": " : "", s->mhd_error);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
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
    bool quiesce = !s->quiesced && s->d;
    s->quiesced = true;
    pthread_mutex_unlock(&s->mu);
    if (quiesce) {
        MHD_socket fd = MHD_quiesce_daemon(s->d);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
    }
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

void kvs_server_stop(kvs_server *s)
{
    if (!s)
        return;
    kvs_server_drain(s);
    /* The engine thread ends every open channel, so handlers blocked on one return. */
    kvs_loop_stop(s->loop);
    if (s->d)
        MHD_stop_daemon(s->d);
    kvs_loop_free(s->loop);
    kvs_api_chat_free(s);
    kvs_metrics_destroy(&s->metrics);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->model_name);
    free(s->api_key);
    free(s);
}
