/* Per-request channels: a queue of events with a condition variable. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/engine_loop.h"

struct kvs_chan {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kvs_srv_event *head, *tail;
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
        free(c->head);
        c->head = n;
    }
    c->tail = NULL;
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

bool kvs_chan_push(kvs_chan *c, kvs_srv_event *ev)
{
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        free(ev);
        return false;
    }
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
