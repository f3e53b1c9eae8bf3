/* The front end's gate thread, connection slots and suspend/resume (see http_front.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h> /* (not <netinet/tcp.h>: struct tcp_info with tcpi_bytes_received) */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "server/http_front.h"
#include "server/server_internal.h"

/* epoll tags: kind in the top byte, slot index and generation below. */
enum { TAG_LISTEN = 1, TAG_WAKE, TAG_GATE, TAG_LINGER, TAG_WATCH, TAG_OVERFLOW, TAG_IDLE };
#define TAG(kind, idx, gen) (((uint64_t)(kind) << 56) | ((uint64_t)((gen) & 0xffffff) << 32) | (uint32_t)(idx))
#define TAG_KIND(t) ((int)((t) >> 56))
#define TAG_IDX(t) ((unsigned)((t) & 0xffffffffu))
#define TAG_GEN(t) ((unsigned)(((t) >> 32) & 0xffffff))

size_t kvs_http_slot_bytes(void) { return sizeof(kvs_http_slot); }

/* ---- raw answers (the gate's, before MHD has the connection) ---- */

void kvs_http_raw_error(int fd, int status, const char *code, const char *msg)
{
    json_t *o = kvs_http_error_obj((unsigned)status, NULL, code, msg);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n%s\r\n%s",
                     status, reason && *reason ? reason : "Error", body ? strlen(body) : 0,
                     status == 503 ? "Retry-After: 1\r\n" : "", body ? body : "");
    free(body);
    if (n > 0)
        (void)!send(fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Read and drop what is there; true when the peer has closed (or failed). */
static bool drain_socket(int fd)
{
    char junk[4096];
    for (;;) {
        ssize_t n = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n < 0 && errno == EINTR)
            continue;
        return true;
    }
}

/* ---- slots ---- */

static kvs_http_slot *slot_alloc(kvs_http_front *f)
{
    pthread_mutex_lock(&f->mu);
    kvs_http_slot *sl = f->free_list;
    if (sl) {
        f->free_list = sl->next_free;
        f->n_used++;
    }
    pthread_mutex_unlock(&f->mu);
    return sl;
}

static void slot_release(kvs_http_front *f, kvs_http_slot *sl)
{
    pthread_mutex_lock(&sl->mu);
    sl->state = SLOT_FREE;
    sl->fd = -1;
    sl->conn = NULL;
    sl->gen++;
    sl->suspended = sl->wake_pending = sl->hup = sl->watched = sl->awaiting_head = false;
    sl->owned = sl->tracked = sl->keep = sl->resp_close = false;
    sl->consumed = 0;
    if (sl->closing)
        atomic_fetch_sub(&f->n_closing, 1);
    sl->closing = false;
    pthread_mutex_unlock(&sl->mu);
    pthread_mutex_lock(&f->mu);
    sl->next_free = f->free_list;
    f->free_list = sl;
    f->n_used--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    if (f->wake_fd >= 0) { /* a connection waiting for a slot can have it */
        uint64_t one = 1;
        (void)!write(f->wake_fd, &one, sizeof one);
    }
}

/* Close a kept-alive connection that libmicrohttpd has suspended between
 * two requests (IDLE, or LINGER after an answer).  Its descriptor is made a
 * copy of dead_fd (dup3 closes the TCP socket in the same step), and the
 * connection is resumed: libmicrohttpd reads the end of the stream, closes
 * the descriptor and frees the slot (kvs_http_on_connection).  So it never
 * reads a byte that came after the last head the gate passed.  Call with
 * sl->mu held. */
static void owned_close(kvs_http_front *f, kvs_http_slot *sl)
{
    if (sl->watched)
        epoll_ctl(f->ep, EPOLL_CTL_DEL, sl->fd, NULL);
    sl->watched = false;
    drain_socket(sl->fd); /* (what is left unread would make the close a reset) */
    if (f->dead_fd < 0 || dup3(f->dead_fd, sl->fd, O_CLOEXEC) < 0)
        shutdown(sl->fd, SHUT_RDWR);
    sl->state = SLOT_LIVE;
    sl->awaiting_head = false;
    sl->tracked = false;
    if (!sl->closing)
        atomic_fetch_add(&f->n_closing, 1);
    sl->closing = true;
    MHD_resume_connection(sl->conn);
}

/* Close a connection the gate holds (GATE or LINGER) and free its slot
 * (or, when libmicrohttpd has it, let libmicrohttpd close it). */
static void gate_close(kvs_http_front *f, kvs_http_slot *sl)
{
    if (sl->owned) {
        pthread_mutex_lock(&sl->mu);
        owned_close(f, sl);
        pthread_mutex_unlock(&sl->mu);
        return;
    }
    epoll_ctl(f->ep, EPOLL_CTL_DEL, sl->fd, NULL);
    close(sl->fd);
    slot_release(f, sl);
}

/* Answer from the gate and linger: the peer reads the answer before it sees the close. */
static void gate_answer(kvs_http_front *f, kvs_http_slot *sl, int status, const char *code, const char *msg)
{
    kvs_http_raw_error(sl->fd, status, code, msg);
    shutdown(sl->fd, SHUT_WR);
    sl->state = SLOT_LINGER; /* (an owned one: under sl->mu, see idle_check) */
    sl->deadline = kvs_now() + KVS_HTTP_LINGER_S;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = TAG(TAG_LINGER, sl->index, sl->gen)};
    if (epoll_ctl(f->ep, EPOLL_CTL_MOD, sl->fd, &ev) != 0 || drain_socket(sl->fd)) {
        if (sl->owned)
            owned_close(f, sl);
        else
            gate_close(f, sl);
    }
}

static void log_line(kvs_http_front *f, const char *fmt, const char *a)
{
    if (f->s->log) {
        fprintf(f->s->log, fmt, a);
        fflush(f->s->log);
    }
}

/* Start (or end, for a chunked body) counting the bytes of the requests a
 * connection has sent, to tell later whether libmicrohttpd has read past
 * them (see kvs_http_keep). */
static void count_request(kvs_http_slot *sl, const kvs_http_head_verdict *v, bool ok)
{
    if (!ok || v->chunked)
        sl->tracked = false;
    else
        sl->consumed += v->head_len + v->body_len;
}

/* A complete, valid first head: hand the connection to MHD. */
static void hand_over(kvs_http_front *f, kvs_http_slot *sl, const kvs_http_head_verdict *v, bool ok)
{
    epoll_ctl(f->ep, EPOLL_CTL_DEL, sl->fd, NULL);
    pthread_mutex_lock(&f->mu);
    sl->state = SLOT_HANDED;
    sl->owned = true;
    sl->tracked = true;
    sl->consumed = 0;
    count_request(sl, v, ok);
    pthread_mutex_unlock(&f->mu);
    int fd = sl->fd;
    if (MHD_add_connection(f->d, fd, (struct sockaddr *)&sl->addr, sl->addr_len) != MHD_YES) {
        /* MHD closed the socket. */
        log_line(f, "WARNING kvserve: http: %s\n", "libmicrohttpd refused a connection");
        slot_release(f, sl);
    }
}

/* The verdict on the n bytes of a head peeked into f->peek: OK (pass it on;
 * *ok false when the check did not pass it whole: its body is cut short or
 * late, which libmicrohttpd answers), BAD (answer v), or MORE (wait).  A
 * head still incomplete when the peer has closed, or late, is BAD (400,
 * 408). */
static kvs_head_result judge_head(kvs_http_front *f, size_t n, bool peer_closed, bool late,
                                  kvs_http_head_verdict *v, bool *ok)
{
    kvs_head_result r = kvs_http_head_check(f->peek, n, &f->head, v);
    *ok = r == KVS_HEAD_OK;
    if (r != KVS_HEAD_MORE || !(peer_closed || late))
        return r;
    if (v->head_done)
        return KVS_HEAD_OK;
    v->status = peer_closed ? 400 : 408;
    v->code = peer_closed ? "bad_request" : "request_timeout";
    static const char closed[] = "the connection was closed before the request head was complete";
    static const char late_msg[] = "the request head did not arrive in time (--http-header-timeout)";
    snprintf(v->msg, sizeof v->msg, "%s", peer_closed ? closed : late_msg);
    return KVS_HEAD_BAD;
}

/* Look at what a GATE connection has sent so far. */
static void gate_check(kvs_http_front *f, kvs_http_slot *sl, bool peer_closed)
{
    ssize_t n = recv(sl->fd, f->peek, f->peek_cap, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        gate_close(f, sl);
        return;
    }
    if (n == 0) { /* closed without a byte */
        gate_close(f, sl);
        return;
    }
    sl->seen = (size_t)n;
    kvs_http_head_verdict v;
    bool ok;
    switch (judge_head(f, (size_t)n, peer_closed, false, &v, &ok)) {
    case KVS_HEAD_OK:
        if (atomic_load(&f->draining))
            gate_answer(f, sl, 503, "shutting_down", "the server is shutting down");
        else
            hand_over(f, sl, &v, ok);
        return;
    case KVS_HEAD_BAD:
        gate_answer(f, sl, v.status, v.code, v.msg);
        return;
    case KVS_HEAD_MORE:
        return;
    }
}

/* ---- kept-alive connections between requests (IDLE) ---- */

/* Look at the next head of an IDLE connection, as gate_check does for a
 * first one.  Call with sl->mu held. */
static void idle_check(kvs_http_front *f, kvs_http_slot *sl, bool peer_closed, double now)
{
    ssize_t n = recv(sl->fd, f->peek, f->peek_cap, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) { /* the peer has left (or failed) between requests */
        owned_close(f, sl);
        return;
    }
    if (sl->seen == 0) /* the head's first bytes: it is due --http-header-timeout from now */
        sl->deadline = now + f->header_timeout_s;
    sl->seen = (size_t)n;
    kvs_http_head_verdict v;
    bool ok;
    switch (judge_head(f, (size_t)n, peer_closed, now >= sl->deadline, &v, &ok)) {
    case KVS_HEAD_OK:
        if (atomic_load(&f->draining)) {
            gate_answer(f, sl, 503, "shutting_down", "the server is shutting down");
            return;
        }
        epoll_ctl(f->ep, EPOLL_CTL_DEL, sl->fd, NULL);
        sl->watched = false;
        count_request(sl, &v, ok);
        sl->state = SLOT_LIVE;
        sl->awaiting_head = false; /* (the head is in: libmicrohttpd reads it at once) */
        MHD_resume_connection(sl->conn);
        return;
    case KVS_HEAD_BAD:
        gate_answer(f, sl, v.status, v.code, v.msg);
        return;
    case KVS_HEAD_MORE:
        return;
    }
}

/* Bytes libmicrohttpd has read from socket fd: what the kernel received
 * (TCP_INFO) less what is still queued (SIOCINQ, read on both sides to see
 * that nothing arrived meanwhile).  False if it cannot tell. */
static bool bytes_read(int fd, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    int q0 = -1, q1 = -2;
    memset(&ti, 0, sizeof ti);
    if (ioctl(fd, SIOCINQ, &q0) != 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        ioctl(fd, SIOCINQ, &q1) != 0 || q0 != q1 || q0 < 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received ||
        ti.tcpi_bytes_received < (uint64_t)q0)
        return false;
    *out = ti.tcpi_bytes_received - (uint64_t)q0;
    return true;
}

bool kvs_http_keep(kvs_http_front *f, kvs_http_slot *sl, struct MHD_Connection *c)
{
    bool kept = false;
    pthread_mutex_lock(&sl->mu);
    uint64_t got = 0;
    if (!sl->tracked || sl->state != SLOT_LIVE || atomic_load(&f->stopping) || atomic_load(&f->quit))
        goto done;
    /* More than the requests' bytes (a pipelined request in libmicrohttpd's
     * buffer, or the peer's FIN): libmicrohttpd parses what follows. */
    if (!bytes_read(sl->fd, &got) || got != sl->consumed) {
        sl->tracked = false;
        goto done;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = TAG(TAG_IDLE, sl->index, sl->gen)};
    MHD_suspend_connection(c);
    sl->state = SLOT_IDLE;
    sl->seen = 0;
    sl->t_accept = kvs_now();
    sl->deadline = sl->t_accept + f->header_timeout_s;
    if (epoll_ctl(f->ep, sl->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, sl->fd, &ev) != 0) {
        sl->watched = false; /* cannot watch it: give it back to libmicrohttpd */
        sl->state = SLOT_LIVE;
        sl->tracked = false;
        MHD_resume_connection(c);
        goto done;
    }
    sl->watched = true;
    kept = true;
done:
    pthread_mutex_unlock(&sl->mu);
    return kept;
}

static void overflow_answer(kvs_http_front *f, int fd, double now)
{
    atomic_fetch_add(&f->refused_full, 1);
    const char *msg = atomic_load(&f->draining) ? "the server is shutting down"
                                                 : "the server has reached its connection limit (--max-connections); "
                                                   "retry later";
    kvs_http_raw_error(fd, 503, atomic_load(&f->draining) ? "shutting_down" : "server_busy", msg);
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < KVS_HTTP_OVERFLOW_SLOTS; i++) {
        if (f->overflow[i].fd >= 0)
            continue;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = TAG(TAG_OVERFLOW, (unsigned)i, 0)};
        if (epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            break;
        f->overflow[i].fd = fd;
        f->overflow[i].deadline = now + 1.0;
        return;
    }
    drain_socket(fd);
    close(fd);
}

static void overflow_close(kvs_http_front *f, int i)
{
    epoll_ctl(f->ep, EPOLL_CTL_DEL, f->overflow[i].fd, NULL);
    close(f->overflow[i].fd);
    f->overflow[i].fd = -1;
}

/* The table is full: close the oldest connection that has not sent a byte
 * in KVS_HTTP_EVICT_IDLE_S (an idle socket owes nothing and is owed no
 * answer) and hand its slot to a new one.  NULL if there is none. */
static kvs_http_slot *evict_idle(kvs_http_front *f, double now)
{
    kvs_http_slot *old = NULL;
    if (atomic_load(&f->n_closing) > 0)
        return NULL; /* a slot is about to be freed: no need to close another */
    for (unsigned i = 0; i < f->n_slots; i++) {
        kvs_http_slot *sl = &f->slots[i];
        int st = sl->state; /* (IDLE is checked again under its lock) */
        if ((st == SLOT_GATE || st == SLOT_IDLE) && sl->seen == 0 && now - sl->t_accept >= KVS_HTTP_EVICT_IDLE_S &&
            (!old || sl->t_accept < old->t_accept))
            old = sl;
    }
    if (!old || recv(old->fd, f->peek, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
        return NULL; /* (it has just sent something: leave it) */
    if (old->state == SLOT_GATE) {
        gate_close(f, old);
        return slot_alloc(f);
    }
    /* A kept-alive connection between requests: libmicrohttpd frees its
     * slot a moment later, and the new connection waits for it. */
    pthread_mutex_lock(&old->mu);
    if (old->state == SLOT_IDLE && old->seen == 0)
        owned_close(f, old);
    pthread_mutex_unlock(&old->mu);
    return slot_alloc(f);
}

/* Take a new connection into slot sl and look at what it has sent. */
static void admit(kvs_http_front *f, kvs_http_slot *sl, int fd, const struct sockaddr_storage *ss, socklen_t len,
                  double now)
{
    pthread_mutex_lock(&sl->mu);
    sl->state = SLOT_GATE;
    sl->fd = fd;
    memcpy(&sl->addr, ss, sizeof *ss);
    sl->addr_len = len;
    sl->deadline = now + f->header_timeout_s;
    sl->t_accept = now;
    sl->seen = 0;
    pthread_mutex_unlock(&sl->mu);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = TAG(TAG_GATE, sl->index, sl->gen)};
    if (epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        slot_release(f, sl);
        return;
    }
    gate_check(f, sl, false);
}

/* Connections waiting for a slot take the free ones, oldest first. */
static void admit_waiting(kvs_http_front *f, double now)
{
    while (f->n_waiting > 0) {
        kvs_http_slot *sl = slot_alloc(f);
        if (!sl && !atomic_load(&f->draining))
            sl = evict_idle(f, now);
        if (!sl)
            return;
        unsigned i = f->wait_head;
        f->wait_head = (f->wait_head + 1) % KVS_HTTP_WAIT_SLOTS;
        f->n_waiting--;
        admit(f, sl, f->waiting[i].fd, &f->waiting[i].addr, f->waiting[i].addr_len, now);
    }
}

/* Waiting connections whose time is up (or all, when draining or stopping) get 503. */
static void expire_waiting(kvs_http_front *f, double now, bool all)
{
    while (f->n_waiting > 0 && (all || now >= f->waiting[f->wait_head].deadline)) {
        unsigned i = f->wait_head;
        f->wait_head = (f->wait_head + 1) % KVS_HTTP_WAIT_SLOTS;
        f->n_waiting--;
        overflow_answer(f, f->waiting[i].fd, now);
    }
}

static void accept_all(kvs_http_front *f)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(f->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop listening for a moment (the kernel keeps the backlog). */
                struct epoll_event ev = {.events = 0, .data.u64 = TAG(TAG_LISTEN, 0, 0)};
                epoll_ctl(f->ep, EPOLL_CTL_MOD, f->listen_fd, &ev);
                f->listen_paused_until = kvs_now() + 0.1;
                log_line(f, "WARNING kvserve: http: accept: %s (pausing)\n", strerror(errno));
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        double now = kvs_now();
        bool draining = atomic_load(&f->draining);
        kvs_http_slot *sl = f->n_waiting == 0 ? slot_alloc(f) : NULL; /* no overtaking */
        if (!sl && !draining && f->n_waiting == 0)
            sl = evict_idle(f, now);
        if (sl) {
            admit(f, sl, fd, &ss, len, now);
        } else if (!draining && f->n_waiting < KVS_HTTP_WAIT_SLOTS) {
            unsigned i = (f->wait_head + f->n_waiting) % KVS_HTTP_WAIT_SLOTS;
            f->waiting[i].fd = fd;
            memcpy(&f->waiting[i].addr, &ss, sizeof ss);
            f->waiting[i].addr_len = len;
            f->waiting[i].deadline = now + KVS_HTTP_SLOT_WAIT_S;
            f->n_waiting++;
            admit_waiting(f, now); /* a slot may have been freed meanwhile */
        } else {
            overflow_answer(f, fd, now);
        }
    }
}

/* Time-outs: heads that do not arrive, lingering connections, kept-alive
 * connections whose next head does not arrive. */
static void scan(kvs_http_front *f, double now)
{
    if (f->listen_paused_until > 0 && now >= f->listen_paused_until) {
        f->listen_paused_until = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(TAG_LISTEN, 0, 0)};
        epoll_ctl(f->ep, EPOLL_CTL_MOD, f->listen_fd, &ev);
    }
    for (int i = 0; i < KVS_HTTP_OVERFLOW_SLOTS; i++)
        if (f->overflow[i].fd >= 0 && now >= f->overflow[i].deadline)
            overflow_close(f, i);
    expire_waiting(f, now, atomic_load(&f->draining));
    for (unsigned i = 0; i < f->n_slots; i++) {
        kvs_http_slot *sl = &f->slots[i];
        int state = sl->state; /* GATE and LINGER are changed by this thread only */
        if (state == SLOT_GATE && now >= sl->deadline) {
            ssize_t n = recv(sl->fd, f->peek, f->peek_cap, MSG_PEEK | MSG_DONTWAIT);
            kvs_http_head_verdict v;
            if (n > 0 && kvs_http_head_check(f->peek, (size_t)n, &f->head, &v) == KVS_HEAD_MORE && v.head_done)
                hand_over(f, sl, &v, false); /* the head is complete, the body is late: MHD's idle time-out applies */
            else if (n > 0)
                gate_answer(f, sl, 408, "request_timeout", "the request head did not arrive in time "
                            "(--http-header-timeout)");
            else
                gate_close(f, sl); /* never sent a byte: nothing to answer */
        } else if (state == SLOT_LINGER && now >= sl->deadline) {
            gate_close(f, sl);
        } else if (state == SLOT_IDLE) {
            pthread_mutex_lock(&sl->mu);
            if (sl->state == SLOT_IDLE) {
                if (sl->seen > 0 && now >= sl->deadline)
                    idle_check(f, sl, false, now); /* 408 */
                else if (sl->seen == 0 && now >= sl->t_accept + f->idle_timeout_s)
                    owned_close(f, sl); /* idle: closed without a word, as libmicrohttpd would */
            }
            pthread_mutex_unlock(&sl->mu);
        } else if (state == SLOT_LIVE) {
            pthread_mutex_lock(&sl->mu);
            if (sl->state == SLOT_LIVE && sl->awaiting_head && !sl->suspended && now >= sl->deadline) {
                sl->awaiting_head = false;
                shutdown(sl->fd, SHUT_RDWR); /* MHD sees the end and closes it */
            }
            pthread_mutex_unlock(&sl->mu);
        }
    }
}

static void on_watch(kvs_http_front *f, uint64_t tag)
{
    unsigned idx = TAG_IDX(tag);
    if (idx >= f->n_slots)
        return;
    kvs_http_slot *sl = &f->slots[idx];
    pthread_mutex_lock(&sl->mu);
    if ((sl->gen & 0xffffff) == TAG_GEN(tag) && sl->state == SLOT_LIVE) {
        sl->hup = true;
        if (sl->suspended) {
            sl->suspended = false;
            MHD_resume_connection(sl->conn);
        }
    }
    pthread_mutex_unlock(&sl->mu);
}

static void *gate_main(void *arg)
{
    kvs_http_front *f = arg;
    struct epoll_event evs[64];
    double next_scan = 0;
    while (!atomic_load(&f->quit)) {
        int n = epoll_wait(f->ep, evs, 64, 100);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            unsigned idx = TAG_IDX(tag);
            switch (TAG_KIND(tag)) {
            case TAG_LISTEN:
                accept_all(f);
                break;
            case TAG_WAKE: {
                uint64_t x;
                (void)!read(f->wake_fd, &x, sizeof x);
                break;
            }
            case TAG_GATE:
                if (idx < f->n_slots && f->slots[idx].state == SLOT_GATE &&
                    (f->slots[idx].gen & 0xffffff) == TAG_GEN(tag))
                    gate_check(f, &f->slots[idx], (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
                break;
            case TAG_LINGER:
                if (idx < f->n_slots && f->slots[idx].state == SLOT_LINGER &&
                    (f->slots[idx].gen & 0xffffff) == TAG_GEN(tag) && drain_socket(f->slots[idx].fd))
                    gate_close(f, &f->slots[idx]);
                break;
            case TAG_OVERFLOW:
                if (idx < KVS_HTTP_OVERFLOW_SLOTS && f->overflow[idx].fd >= 0 && drain_socket(f->overflow[idx].fd))
                    overflow_close(f, (int)idx);
                break;
            case TAG_WATCH:
                on_watch(f, tag);
                break;
            case TAG_IDLE:
                if (idx < f->n_slots) {
                    kvs_http_slot *sl = &f->slots[idx];
                    pthread_mutex_lock(&sl->mu);
                    if (sl->state == SLOT_IDLE && (sl->gen & 0xffffff) == TAG_GEN(tag))
                        idle_check(f, sl, (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0, kvs_now());
                    pthread_mutex_unlock(&sl->mu);
                }
                break;
            }
        }
        double now = kvs_now();
        admit_waiting(f, now);
        if (now >= next_scan) {
            scan(f, now);
            next_scan = now + 0.1;
        }
    }
    return NULL;
}

/* ---- life cycle ---- */

static kvs_status bind_listen(kvs_http_front *f, const char *host, int port, kvs_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0)
        return kvs_fail(err, KVS_E_INVALID, "--host '%s': %s", host, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return kvs_fail(err, KVS_E_IO, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    f->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    f->listen_fd = fd;
    return KVS_OK;
}

kvs_status kvs_http_front_init(kvs_http_front *f, struct kvs_server *s, const char *host, int port,
                               const kvs_http_limits *lim, unsigned idle_timeout_s, double header_timeout_s,
                               kvs_error *err)
{
    memset(f, 0, sizeof *f);
    f->s = s;
    f->listen_fd = f->ep = f->wake_fd = f->dead_fd = -1;
    f->lim = kvs_http_limits_resolve(lim);
    f->idle_timeout_s = idle_timeout_s;
    f->header_timeout_s = header_timeout_s;
    for (int i = 0; i < KVS_HTTP_OVERFLOW_SLOTS; i++)
        f->overflow[i].fd = -1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* A head must fit in half of MHD's per-connection pool (the rest holds the
     * parsed fields and the write buffer). */
    size_t max_head = f->lim.connection_memory / 2;
    f->head = (kvs_http_head_limits){.max_head = max_head, .max_target = max_head / 2, .max_fields = 100,
                                     .max_body = f->lim.max_request_bytes};
    f->peek_cap = max_head + 64;
    f->n_slots = f->lim.max_connections;
    f->peek = malloc(f->peek_cap);
    f->slots = calloc(f->n_slots, sizeof *f->slots);
    if (!f->peek || !f->slots)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    for (unsigned i = f->n_slots; i-- > 0;) {
        kvs_http_slot *sl = &f->slots[i];
        pthread_mutex_init(&sl->mu, NULL);
        sl->index = i;
        sl->front = f;
        sl->fd = -1;
        sl->next_free = f->free_list;
        f->free_list = sl;
    }
    kvs_status st = kvs_http_pool_init(&f->pool, kvs_http_body_pool_bytes(&f->lim), err);
    if (st != KVS_OK)
        return st;
    if ((st = bind_listen(f, host, port, err)) != KVS_OK)
        return st;
    f->ep = epoll_create1(EPOLL_CLOEXEC);
    f->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (f->ep < 0 || f->wake_fd < 0)
        return kvs_fail(err, KVS_E_IO, "epoll: %s", strerror(errno));
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0)
        return kvs_fail(err, KVS_E_IO, "socketpair: %s", strerror(errno));
    close(pair[1]); /* pair[0] now reads the end of the stream */
    f->dead_fd = pair[0];
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(TAG_LISTEN, 0, 0)};
    struct epoll_event wv = {.events = EPOLLIN, .data.u64 = TAG(TAG_WAKE, 0, 0)};
    if (epoll_ctl(f->ep, EPOLL_CTL_ADD, f->listen_fd, &ev) != 0 ||
        epoll_ctl(f->ep, EPOLL_CTL_ADD, f->wake_fd, &wv) != 0)
        return kvs_fail(err, KVS_E_IO, "epoll: %s", strerror(errno));
    return KVS_OK;
}

kvs_status kvs_http_front_start(kvs_http_front *f, struct MHD_Daemon *d, kvs_error *err)
{
    f->d = d;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, KVS_HTTP_GATE_STACK);
    int rc = pthread_create(&f->thread, &at, gate_main, f);
    pthread_attr_destroy(&at);
    if (rc != 0)
        return kvs_fail(err, KVS_E_INTERNAL, "cannot start the HTTP gate thread");
    f->thread_started = true;
    return KVS_OK;
}

void kvs_http_front_stop_gate(kvs_http_front *f)
{
    if (f->thread_started) {
        atomic_store(&f->quit, true);
        uint64_t one = 1;
        (void)!write(f->wake_fd, &one, sizeof one);
        pthread_join(f->thread, NULL);
        f->thread_started = false;
    }
    if (f->listen_fd >= 0) {
        close(f->listen_fd);
        f->listen_fd = -1;
    }
    for (unsigned i = 0; f->slots && i < f->n_slots; i++) {
        kvs_http_slot *sl = &f->slots[i];
        if (sl->state == SLOT_GATE || sl->state == SLOT_LINGER) {
            gate_close(f, sl);
        } else if (sl->state == SLOT_IDLE) {
            pthread_mutex_lock(&sl->mu);
            if (sl->state == SLOT_IDLE)
                owned_close(f, sl);
            pthread_mutex_unlock(&sl->mu);
        }
    }
    while (f->n_waiting > 0) {
        close(f->waiting[f->wait_head].fd);
        f->wait_head = (f->wait_head + 1) % KVS_HTTP_WAIT_SLOTS;
        f->n_waiting--;
    }
    for (int i = 0; i < KVS_HTTP_OVERFLOW_SLOTS; i++)
        if (f->overflow[i].fd >= 0)
            overflow_close(f, i);
}

void kvs_http_front_free(kvs_http_front *f)
{
    kvs_http_front_stop_gate(f);
    if (f->ep >= 0)
        close(f->ep);
    if (f->wake_fd >= 0)
        close(f->wake_fd);
    if (f->dead_fd >= 0)
        close(f->dead_fd);
    for (unsigned i = 0; f->slots && i < f->n_slots; i++)
        pthread_mutex_destroy(&f->slots[i].mu);
    free(f->slots);
    free(f->peek);
    kvs_http_pool_destroy(&f->pool);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    memset(f, 0, sizeof *f);
}

bool kvs_http_front_finish(kvs_http_front *f, int timeout_ms)
{
    atomic_store(&f->stopping, true);
    for (unsigned i = 0; i < f->n_slots; i++) {
        kvs_http_slot *sl = &f->slots[i];
        pthread_mutex_lock(&sl->mu);
        if (sl->suspended) {
            sl->suspended = false;
            MHD_resume_connection(sl->conn);
        }
        if (sl->state == SLOT_IDLE) /* kept alive between requests: closed */
            owned_close(f, sl);
        pthread_mutex_unlock(&sl->mu);
    }
    struct timespec dl = kvs_deadline_ms(timeout_ms);
    pthread_mutex_lock(&f->mu);
    while (f->n_requests > 0 && pthread_cond_timedwait(&f->cv, &f->mu, &dl) == 0)
        ;
    bool done = f->n_requests == 0;
    pthread_mutex_unlock(&f->mu);
    return done;
}

/* ---- MHD's side ---- */

void kvs_http_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe)
{
    kvs_http_front *f = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        int fd = kvs_http_fd(c);
        kvs_http_slot *sl = NULL;
        pthread_mutex_lock(&f->mu);
        for (unsigned i = 0; i < f->n_slots && !sl; i++)
            if (f->slots[i].state == SLOT_HANDED && f->slots[i].fd == fd)
                sl = &f->slots[i];
        pthread_mutex_unlock(&f->mu);
        *socket_context = sl;
        if (sl) {
            pthread_mutex_lock(&sl->mu);
            sl->state = SLOT_LIVE;
            sl->conn = c;
            pthread_mutex_unlock(&sl->mu);
        }
        return;
    }
    kvs_http_slot *sl = *socket_context;
    *socket_context = NULL;
    if (!sl)
        return;
    pthread_mutex_lock(&sl->mu);
    if (sl->watched)
        epoll_ctl(f->ep, EPOLL_CTL_DEL, sl->fd, NULL);
    sl->watched = false;
    pthread_mutex_unlock(&sl->mu);
    slot_release(f, sl);
}

kvs_http_slot *kvs_http_slot_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void kvs_http_request_begin(kvs_http_front *f, kvs_http_slot *sl)
{
    pthread_mutex_lock(&sl->mu);
    sl->awaiting_head = false;
    sl->hup = false;
    sl->wake_pending = false;
    pthread_mutex_unlock(&sl->mu);
    pthread_mutex_lock(&f->mu);
    f->n_requests++;
    pthread_mutex_unlock(&f->mu);
}

void kvs_http_request_end(kvs_http_front *f, kvs_http_slot *sl)
{
    pthread_mutex_lock(&sl->mu);
    sl->awaiting_head = true;
    sl->deadline = kvs_now() + f->header_timeout_s;
    pthread_mutex_unlock(&sl->mu);
    pthread_mutex_lock(&f->mu);
    f->n_requests--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* ---- waiting ---- */

static void wake(void *arg)
{
    kvs_http_slot *sl = arg;
    pthread_mutex_lock(&sl->mu);
    if (sl->suspended) {
        sl->suspended = false;
        MHD_resume_connection(sl->conn);
    } else {
        sl->wake_pending = true;
    }
    pthread_mutex_unlock(&sl->mu);
}

void kvs_http_bind(struct MHD_Connection *c, kvs_chan *ch)
{
    kvs_http_slot *sl = kvs_http_slot_of(c);
    if (sl)
        kvs_chan_set_notify(ch, wake, sl);
}

void kvs_http_unbind(kvs_chan *ch)
{
    if (ch)
        kvs_chan_set_notify(ch, NULL, NULL);
}

kvs_http_sleep_result kvs_http_sleep(struct MHD_Connection *c)
{
    kvs_http_slot *sl = kvs_http_slot_of(c);
    if (!sl)
        return KVS_HTTP_GONE;
    kvs_http_front *f = sl->front;
    kvs_http_sleep_result r;
    pthread_mutex_lock(&sl->mu);
    if (sl->hup) {
        r = KVS_HTTP_GONE;
    } else if (sl->wake_pending) {
        sl->wake_pending = false;
        r = KVS_HTTP_AGAIN;
    } else if (atomic_load(&f->stopping)) {
        r = KVS_HTTP_STOPPING;
    } else {
        MHD_suspend_connection(c);
        sl->suspended = true;
        r = KVS_HTTP_SLEPT;
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT,
                                 .data.u64 = TAG(TAG_WATCH, sl->index, sl->gen)};
        if (epoll_ctl(f->ep, sl->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, sl->fd, &ev) == 0)
            sl->watched = true;
    }
    pthread_mutex_unlock(&sl->mu);
    return r;
}

void kvs_http_response_long(struct MHD_Connection *c)
{
    kvs_http_slot *sl = kvs_http_slot_of(c);
    if (!sl)
        return;
    sl->long_timeout = true;
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, KVS_HTTP_WRITE_TIMEOUT_S);
}

bool kvs_http_gone(struct MHD_Connection *c)
{
    kvs_http_slot *sl = kvs_http_slot_of(c);
    if (!sl)
        return false;
    pthread_mutex_lock(&sl->mu);
    bool gone = sl->hup;
    pthread_mutex_unlock(&sl->mu);
    return gone;
}

enum MHD_Result kvs_http_defer(struct MHD_Connection *c, kvs_http_resume_fn fn, kvs_http_cancel_fn cancel, void *ctx)
{
    kvs_http_slot *sl = kvs_http_slot_of(c);
    if (!sl) {
        cancel(ctx);
        return MHD_NO;
    }
    sl->phase = REQ_DEFERRED;
    sl->defer_fn = fn;
    sl->defer_cancel = cancel;
    sl->defer_ctx = ctx;
    return MHD_YES;
}
