/* Per-request channels: a queue of events with a condition variable; and
 * the fixed pool the engine thread takes its events from. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "memory/host.h"
#include "server/engine_loop.h"

struct kvs_chan {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kvs_srv_event *head, *tail;
    int queued;                  /* events in the queue */
    int refs;
    bool closed;
    void (*notify)(void *arg);     /* wake-up hook (kvs_chan_set_notify) */
    void *notify_arg;
    void (*dtor)(void *arg);       /* run when the last reference goes (kvs_chan_set_dtor) */
    void *dtor_arg;
};

double kvs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct timespec kvs_deadline_ms(int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

kvs_srv_event *kvs_event_new(kvs_ev_kind kind, const char *text, size_t len)
{
    kvs_srv_event *ev = malloc(sizeof *ev + len + 1);
    if (!ev)
        return NULL;
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->token = -1;
    ev->text_len = len;
    if (text && len)
        memcpy(ev->text, text, len);
    ev->text[len] = '\0';
    return ev;
}

/* ---- the event pool ---- */

struct kvs_event_pool {
    pthread_mutex_t mu;
    unsigned char *mem;          /* n events of `stride` bytes */
    size_t n, reserve, stride, text_cap;
    kvs_srv_event **free_list;   /* [n] */
    size_t n_free, high_water;
};

static size_t event_stride(size_t text_cap)
{
    return (sizeof(kvs_srv_event) + text_cap + 1 + 15) & ~(size_t)15;
}

uint64_t kvs_event_pool_bytes(size_t n_events, size_t text_cap)
{
    return (uint64_t)n_events * (event_stride(text_cap) + sizeof(kvs_srv_event *)) + sizeof(kvs_event_pool);
}

kvs_status kvs_event_pool_new(kvs_event_pool **out, size_t n_events, size_t reserve, size_t text_cap,
                              kvs_error *err)
{
    *out = NULL;
    if (n_events == 0 || reserve >= n_events)
        return kvs_fail(err, KVS_E_INVALID, "an event pool needs more events than its reserve");
    kvs_event_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the event pool");
    p->n = n_events;
    p->reserve = reserve;
    p->text_cap = text_cap;
    p->stride = event_stride(text_cap);
    p->mem = malloc(n_events * p->stride);
    p->free_list = malloc(n_events * sizeof *p->free_list);
    if (!p->mem || !p->free_list) {
        free(p->mem);
        free(p->free_list);
        free(p);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the event pool");
    }
    pthread_mutex_init(&p->mu, NULL);
    kvs_host_touch(p->mem, n_events * p->stride);
    for (size_t i = 0; i < n_events; i++)
        p->free_list[i] = (kvs_srv_event *)(p->mem + (n_events - 1 - i) * p->stride);
    p->n_free = n_events;
    *out = p;
    return KVS_OK;
}

void kvs_event_pool_free(kvs_event_pool *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p->mem);
    free(p->free_list);
    free(p);
}

kvs_srv_event *kvs_event_pool_get(kvs_event_pool *p, kvs_ev_kind kind, bool use_reserve)
{
    pthread_mutex_lock(&p->mu);
    kvs_srv_event *ev = NULL;
    if (p->n_free > (use_reserve ? 0 : p->reserve)) {
        ev = p->free_list[--p->n_free];
        if (p->n - p->n_free > p->high_water)
            p->high_water = p->n - p->n_free;
    }
    pthread_mutex_unlock(&p->mu);
    if (!ev)
        return NULL;
    memset(ev, 0, sizeof *ev);
    ev->pool = p;
    ev->kind = kind;
    ev->token = -1;
    ev->text[0] = '\0';
    return ev;
}

size_t kvs_event_pool_text_cap(const kvs_event_pool *p) { return p->text_cap; }

void kvs_event_pool_get_stats(kvs_event_pool *p, kvs_event_pool_stats *st)
{
    pthread_mutex_lock(&p->mu);
    *st = (kvs_event_pool_stats){.capacity = p->n, .in_use = p->n - p->n_free, .high_water = p->high_water,
                                 .bytes = kvs_event_pool_bytes(p->n, p->text_cap)};
    pthread_mutex_unlock(&p->mu);
}

void kvs_event_free(kvs_srv_event *ev)
{
    if (!ev)
        return;
    kvs_event_pool *p = ev->pool;
    if (!p) {
        free(ev);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->free_list[p->n_free++] = ev;
    pthread_mutex_unlock(&p->mu);
}

/* ---- channels ---- */

kvs_chan *kvs_chan_new(void)
{
    kvs_chan *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->refs = 1;
    return c;
}

void kvs_chan_ref(kvs_chan *c)
{
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

static void drop_events(kvs_chan *c)
{
    while (c->head) {
        kvs_srv_event *n = c->head->next;
        kvs_event_free(c->head);
        c->head = n;
    }
    c->tail = NULL;
    c->queued = 0;
}

void kvs_chan_unref(kvs_chan *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left > 0)
        return;
    if (c->dtor)
        c->dtor(c->dtor_arg);
    drop_events(c);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool kvs_chan_push_quota(kvs_chan *c, kvs_srv_event *ev, int quota, bool *closed)
{
    pthread_mutex_lock(&c->mu);
    *closed = c->closed;
    if (c->closed || (quota > 0 && c->queued >= quota)) {
        pthread_mutex_unlock(&c->mu);
        return false;
    }
    ev->next = NULL;
    if (c->tail)
        c->tail->next = ev;
    else
        c->head = ev;
    c->tail = ev;
    c->queued++;
    pthread_cond_signal(&c->cv);
    if (c->notify) /* wake-up hook (kvs_chan_set_notify) */
        c->notify(c->notify_arg);
    pthread_mutex_unlock(&c->mu);
    return true;
}

int kvs_chan_queued(kvs_chan *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->queued;
    pthread_mutex_unlock(&c->mu);
    return n;
}

bool kvs_chan_push(kvs_chan *c, kvs_srv_event *ev)
{
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        kvs_event_free(ev);
        return false;
    }
    c->queued++;
    ev->next = NULL;
    if (c->tail)
        c->tail->next = ev;
    else
        c->head = ev;
    c->tail = ev;
    pthread_cond_signal(&c->cv);
    if (c->notify)
        c->notify(c->notify_arg);
    pthread_mutex_unlock(&c->mu);
    return true;
}

kvs_srv_event *kvs_chan_pop(kvs_chan *c, int timeout_ms)
{
    struct timespec dl = kvs_deadline_ms(timeout_ms);
    pthread_mutex_lock(&c->mu);
    while (!c->head) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
            break;
    }
    kvs_srv_event *ev = c->head;
    if (ev) {
        c->head = ev->next;
        c->queued--;
        if (!c->head)
            c->tail = NULL;
        ev->next = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    return ev;
}

void kvs_chan_close(kvs_chan *c)
{
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    drop_events(c);
    pthread_mutex_unlock(&c->mu);
}

bool kvs_chan_closed(kvs_chan *c)
{
    pthread_mutex_lock(&c->mu);
    bool closed = c->closed;
    pthread_mutex_unlock(&c->mu);
    return closed;
}

/* ---- wake-ups for the HTTP front end (http_front.h) ---- */

void kvs_chan_set_notify(kvs_chan *c, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&c->mu);
    c->notify = fn;
    c->notify_arg = arg;
    pthread_mutex_unlock(&c->mu);
}

void kvs_chan_set_dtor(kvs_chan *c, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&c->mu);
    c->dtor = fn;
    c->dtor_arg = arg;
    pthread_mutex_unlock(&c->mu);
}
