/* The engine thread: inbox, step loop, hand-out of tokens to channels. */
#include "server/engine_loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One submission's shared state: its channel and how many choices live. */
typedef struct live_job {
    kvs_chan *chan;
    int32_t n_live;
} live_job;

/* One engine request (one choice), sorted by id. */
typedef struct live_req {
    uint64_t id;
    live_job *job;
    int32_t index;
    double t_arrival, t_last;
    bool got_first;
} live_req;

typedef struct abort_range {
    uint64_t base;
    int32_t n;
} abort_range;

struct kvs_loop {
    kvs_engine *e;
    kvs_metrics *m;
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;            /* guards the inbox below */
    pthread_cond_t cv;
    kvs_submit *sub_head, *sub_tail;
    abort_range *aborts;
    size_t n_aborts, cap_aborts;
    bool stop;
    uint64_t next_id;

    /* engine thread only */
    live_req *live;
    size_t n_live, cap_live;
};

static void job_release(live_job *job)
{
    if (--job->n_live > 0)
        return;
    kvs_chan_unref(job->chan);
    free(job);
}

static void push_error(kvs_chan *c, int status, const char *param, const char *msg)
{
    kvs_srv_event *ev = kvs_event_new(KVS_EV_ERROR, msg, strlen(msg));
    if (!ev)
        return;
    ev->status = status;
    snprintf(ev->param, sizeof ev->param, "%s", param ? param : "");
    kvs_chan_push(c, ev);
}

static bool grow_live(kvs_loop *l, size_t extra)
{
    if (l->n_live + extra <= l->cap_live)
        return true;
    size_t cap = l->cap_live ? l->cap_live : 64;
    while (cap < l->n_live + extra)
        cap *= 2;
    live_req *p = realloc(l->live, cap * sizeof *p);
    if (!p)
        return false;
    l->live = p;
    l->cap_live = cap;
    return true;
}

static live_req *find_live(kvs_loop *l, uint64_t id)
{
    size_t lo = 0, hi = l->n_live;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->live[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < l->n_live && l->live[lo].id == id ? &l->live[lo] : NULL;
}

static void remove_live(kvs_loop *l, live_req *lr)
{
    size_t i = (size_t)(lr - l->live);
    memmove(&l->live[i], &l->live[i + 1], (l->n_live - i - 1) * sizeof *l->live);
    l->n_live--;
}

/* Send a submission's first event in its preallocated reply (msg, when
 * given, is cut to KVS_SUBMIT_REPLY_ROOM bytes).  `s` must not be touched
 * afterwards (the submitter may free it). */
static void reply(kvs_submit *s, kvs_ev_kind kind, int status, const char *param, const char *msg)
{
    kvs_chan *c = s->chan;
    kvs_srv_event *ev = s->reply;
    s->reply = NULL;
    size_t n = msg ? strnlen(msg, KVS_SUBMIT_REPLY_ROOM) : 0;
    if (n)
        memcpy(ev->text, msg, n);
    ev->text[n] = '\0';
    ev->text_len = n;
    ev->kind = kind;
    ev->reply = true;
    ev->status = status;
    snprintf(ev->param, sizeof ev->param, "%s", param ? param : "");
    kvs_chan_push(c, ev);
}

/* Queue a submission's n choices, or none.  `s` must not be touched after
 * its ACCEPTED/ERROR event is pushed (the submitter may free it). */
static void add_submission(kvs_loop *l, kvs_submit *s)
{
    kvs_chan *c = s->chan;
    if (kvs_chan_closed(c)) {
        free(s->reply);
        kvs_chan_unref(c);
        return;
    }
    live_job *job = calloc(1, sizeof *job);
    if (!job || !grow_live(l, (size_t)s->n)) {
        free(job);
        reply(s, KVS_EV_ERROR, 500, NULL, "out of memory");
        kvs_chan_unref(c);
        return;
    }
    for (int32_t i = 0; i < s->n; i++) {
        kvs_request_params p = s->params;
        if (p.sampling.has_seed)
            p.sampling.seed += (uint64_t)i;
        kvs_error err;
        kvs_status st = kvs_engine_add(l->e, s->base_id + (uint64_t)i, s->prompt, s->n_prompt, &p, &err);
        if (st != KVS_OK) {
            for (int32_t j = 0; j < i; j++)
                kvs_engine_abort(l->e, s->base_id + (uint64_t)j);
            int status = st == KVS_E_INVALID || st == KVS_E_BUDGET ? 400 : 500;
            reply(s, KVS_EV_ERROR, status, st == KVS_E_BUDGET ? (s->length_param ? s->length_param : "max_tokens") : NULL,
                  err.msg);
            free(job);
            kvs_chan_unref(c);
            return;
        }
    }
    job->chan = c; /* the submission's reference moves to the job */
    job->n_live = s->n;
    for (int32_t i = 0; i < s->n; i++)
        l->live[l->n_live++] = (live_req){.id = s->base_id + (uint64_t)i, .job = job, .index = s->index_base + i,
                                          .t_arrival = s->t_arrival};
    uint64_t base = s->base_id;
    int32_t n = s->n;
    reply(s, KVS_EV_ACCEPTED, 0, NULL, NULL);
    if (kvs_chan_closed(c)) /* cannot happen while the submitter keeps its promise */
        for (int32_t i = 0; i < n; i++) /* reported as aborted by the next step */
            kvs_engine_abort(l->e, base + (uint64_t)i);
}

/* Prompt logprobs go out first, one event each (in the token fields, with
 * prompt_index set).  False when the reader is gone. */
static bool deliver_prompt_lp(const live_req *lr, const kvs_output *o)
{
    for (int32_t k = 0; k < o->n_prompt_lp; k++) {
        const kvs_prompt_logprob *p = &o->prompt_lp[k];
        kvs_srv_event *ev = kvs_event_new(KVS_EV_TOKEN, NULL, 0);
        if (!ev)
            return true; /* out of memory: that entry is lost, the request goes on */
        ev->index = lr->index;
        ev->prompt_index = p->index;
        ev->token = p->token;
        ev->logprob = p->logprob;
        ev->n_top = p->n_top > KVS_MAX_LOGPROBS ? KVS_MAX_LOGPROBS : p->n_top;
        memcpy(ev->top_ids, p->top_ids, (size_t)ev->n_top * sizeof *ev->top_ids);
        memcpy(ev->top_logprobs, p->top_logprobs, (size_t)ev->n_top * sizeof *ev->top_logprobs);
        ev->n_prompt = o->n_prompt_tokens;
        ev->n_cached = o->n_cached_tokens;
        if (!kvs_chan_push(lr->job->chan, ev))
            return false;
    }
    return true;
}

static void deliver(kvs_loop *l, const kvs_output *o, double now)
{
    live_req *lr = find_live(l, o->id);
    if (!lr)
        return;
    bool gone = !deliver_prompt_lp(lr, o);
    if (o->token < 0 && !o->finished) { /* a step that only computed prompt logprobs */
        if (gone)
            kvs_engine_abort(l->e, o->id); /* the reader is gone: free the blocks now */
        return;
    }
    if (o->token >= 0) {
        if (!lr->got_first)
            kvs_metrics_first_token(l->m, now - lr->t_arrival, o->n_prompt_tokens);
        else
            kvs_metrics_next_token(l->m, now - lr->t_last);
        lr->got_first = true;
        lr->t_last = now;
    }
    kvs_srv_event *ev = kvs_event_new(KVS_EV_TOKEN, o->text, o->text_len);
    if (ev) {
        ev->index = lr->index;
        ev->token = o->token;
        ev->logprob = o->logprob;
        ev->n_top = o->n_top > KVS_MAX_LOGPROBS ? KVS_MAX_LOGPROBS : o->n_top;
        if (ev->n_top > 0) {
            memcpy(ev->top_ids, o->top_ids, (size_t)ev->n_top * sizeof *ev->top_ids);
            memcpy(ev->top_logprobs, o->top_logprobs, (size_t)ev->n_top * sizeof *ev->top_logprobs);
        }
        ev->finished = o->finished;
        ev->reason = o->reason;
        ev->stop_string = o->stop_string;
        ev->stop_token = o->stop_token;
        ev->n_prompt = o->n_prompt_tokens;
        ev->n_output = o->n_output_tokens;
        ev->n_cached = o->n_cached_tokens;
    }
    /* Metrics first: a client that reads them after its answer sees this step. */
    live_job *job = lr->job;
    if (o->finished) {
        kvs_metrics_finished(l->m, o->reason, now - lr->t_arrival);
        remove_live(l, lr);
    }
    bool delivered = ev && kvs_chan_push(job->chan, ev);
    if (!delivered && !o->finished)
        kvs_engine_abort(l->e, o->id); /* the reader is gone: free the blocks now */
    if (o->finished)
        job_release(job);
}

/* End every live request with an error event (shutdown, engine failure). */
static void fail_all(kvs_loop *l, int status, const char *msg)
{
    for (size_t i = 0; i < l->n_live; i++) {
        live_req *lr = &l->live[i];
        kvs_engine_abort(l->e, lr->id);
        push_error(lr->job->chan, status, NULL, msg); /* the reader stops at the first */
    }
    /* Release each job once per live choice. */
    size_t n = l->n_live;
    l->n_live = 0;
    for (size_t i = 0; i < n; i++)
        job_release(l->live[i].job);
}

static void *loop_main(void *arg)
{
    kvs_loop *l = arg;
    kvs_engine_stats st;
    kvs_engine_get_stats(l->e, &st);
    kvs_metrics_set_stats(l->m, &st);
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && !l->sub_head && l->n_aborts == 0 && !kvs_engine_has_work(l->e))
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        kvs_submit *subs = l->sub_head;
        l->sub_head = l->sub_tail = NULL;
        abort_range stack_ab[16];
        abort_range *ab = stack_ab;
        size_t n_ab = l->n_aborts;
        if (n_ab > 16 && !(ab = malloc(n_ab * sizeof *ab))) {
            ab = stack_ab;
            n_ab = 16;
        }
        if (n_ab > 0) {
            memcpy(ab, l->aborts, n_ab * sizeof *ab);
            memmove(l->aborts, l->aborts + n_ab, (l->n_aborts - n_ab) * sizeof *ab);
            l->n_aborts -= n_ab;
        }
        pthread_mutex_unlock(&l->mu);

        /* Submissions first, so that an abort posted right after one applies. */
        while (subs) {
            kvs_submit *next = subs->next;
            add_submission(l, subs);
            subs = next;
        }
        for (size_t i = 0; i < n_ab; i++)
            for (int32_t j = 0; j < ab[i].n; j++)
                kvs_engine_abort(l->e, ab[i].base + (uint64_t)j);
        if (ab != stack_ab)
            free(ab);

        if (kvs_engine_has_work(l->e)) {
            const kvs_output *outs;
            size_t n_outs;
            kvs_error err;
            if (kvs_engine_step(l->e, &outs, &n_outs, &err) != KVS_OK) {
                char msg[600];
                snprintf(msg, sizeof msg, "engine step failed: %s", err.msg);
                fail_all(l, 500, msg);
            } else {
                kvs_engine_get_stats(l->e, &st);
                kvs_metrics_set_stats(l->m, &st);
                double now = kvs_now();
                for (size_t i = 0; i < n_outs; i++)
                    deliver(l, &outs[i], now);
            }
        }
    }
    /* Stopping: everything still live or queued ends now. */
    fail_all(l, 503, "the server is shutting down");
    pthread_mutex_lock(&l->mu);
    kvs_submit *subs = l->sub_head;
    l->sub_head = l->sub_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    while (subs) {
        kvs_submit *next = subs->next;
        kvs_chan *c = subs->chan;
        reply(subs, KVS_EV_ERROR, 503, NULL, "the server is shutting down");
        kvs_chan_unref(c);
        subs = next;
    }
    return NULL;
}

kvs_status kvs_loop_start(kvs_loop **out, kvs_engine *e, kvs_metrics *m, kvs_error *err)
{
    *out = NULL;
    kvs_loop *l = calloc(1, sizeof *l);
    if (!l)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    l->e = e;
    l->m = m;
    l->next_id = 1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        kvs_loop_free(l);
        return kvs_fail(err, KVS_E_INTERNAL, "cannot start the engine thread");
    }
    l->started = true;
    *out = l;
    return KVS_OK;
}

bool kvs_loop_submit(kvs_loop *l, kvs_submit *sub)
{
    pthread_mutex_lock(&l->mu);
    if (l->stop) {
        pthread_mutex_unlock(&l->mu);
        return false;
    }
    sub->base_id = l->next_id;
    l->next_id += (uint64_t)sub->n;
    kvs_chan_ref(sub->chan);
    sub->next = NULL;
    if (l->sub_tail)
        l->sub_tail->next = sub;
    else
        l->sub_head = sub;
    l->sub_tail = sub;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return true;
}

void kvs_loop_abort(kvs_loop *l, uint64_t base, int32_t n)
{
    pthread_mutex_lock(&l->mu);
    if (l->stop) { /* everything was aborted already */
        pthread_mutex_unlock(&l->mu);
        return;
    }
    if (l->n_aborts == l->cap_aborts) {
        size_t cap = l->cap_aborts ? l->cap_aborts * 2 : 16;
        abort_range *p = realloc(l->aborts, cap * sizeof *p);
        if (p) {
            l->aborts = p;
            l->cap_aborts = cap;
        }
    }
    /* Out of memory: the engine still aborts it when it next finds the channel closed. */
    if (l->n_aborts < l->cap_aborts)
        l->aborts[l->n_aborts++] = (abort_range){base, n};
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void kvs_loop_stop(kvs_loop *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->started)
        pthread_join(l->thread, NULL);
    l->started = false;
}

void kvs_loop_free(kvs_loop *l)
{
    if (!l)
        return;
    kvs_loop_stop(l);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l->aborts);
    free(l->live);
    free(l);
}
