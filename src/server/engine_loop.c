/* The engine thread: inbox, step loop, hand-out of tokens to channels. */
#include "server/engine_loop.h"

#include "engine/logits_proc.h"

/* A step's prompt logprobs and its token fit what a reader may have queued. */
_Static_assert(KVS_PLP_MAX_PER_STEP + 1 <= KVS_EVENTS_PER_REQUEST, "prompt logprobs per step vs the event quota");
/* The engine's error message for a request fits a pooled event (no malloc on the engine thread). */
_Static_assert(KVS_OUTPUT_ERROR_BYTES <= KVS_EVENT_TEXT + 1, "engine error messages vs the event text");

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory/host.h"
#include "server/http_reserve.h"

/* One submission's shared state: its channel and how many choices live
 * (from the loop's pool of max_requests jobs: a job has at least one live
 * choice, each holding a request slot). */
typedef struct live_job {
    kvs_chan *chan;
    int32_t n_live;
    int32_t n_choices;
} live_job;

/* One engine request (one choice), sorted by id. */
typedef struct live_req {
    uint64_t id;
    live_job *job;
    int32_t index;
    double t_arrival, t_last;
    bool got_first;
    bool failed;                   /* ended with an error event: the rest is not delivered */
} live_req;

typedef struct abort_range {
    uint64_t base;
    int32_t n;
} abort_range;

struct kvs_loop {
    kvs_engine *e;
    kvs_metrics *m;
    FILE *log;                     /* error lines (NULL: none) */
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;            /* guards the inbox below */
    pthread_cond_t cv;
    kvs_submit *sub_head, *sub_tail;
    abort_range *aborts;           /* [cap_aborts], fixed */
    size_t n_aborts, cap_aborts;
    bool stop;
    uint64_t next_id;

    /* engine thread only; every array sized at start from the request slots */
    kvs_event_pool *events;
    live_req *live;                /* [cap_live], sorted by id */
    size_t n_live, cap_live;
    live_job *jobs;                /* [cap_live] */
    live_job **free_jobs;
    size_t n_free_jobs;
    abort_range *ab_copy;          /* [cap_aborts] the inbox's aborts, taken out */
    kvs_submit *pend_head, *pend_tail; /* taken from the inbox, waiting for request slots */
    uint64_t n_refused;            /* choices ended for lack of event room */
    bool pool_low;                 /* the event pool is nearly spent: pause readers behind at all */
};

#define ABORTS_PER_REQUEST 2

uint64_t kvs_loop_reserve_bytes(int32_t max_requests)
{
    uint64_t R = (uint64_t)(max_requests > 0 ? max_requests : 1);
    return kvs_event_pool_bytes(R * (KVS_EVENTS_PER_REQUEST + 2), KVS_EVENT_TEXT) +
           R * (sizeof(live_req) + sizeof(live_job) + sizeof(live_job *)) +
           2 * R * ABORTS_PER_REQUEST * sizeof(abort_range) + sizeof(kvs_loop);
}

uint64_t kvs_serving_reserve_bytes(const kvs_launch_opts *o)
{
    int32_t R = o->max_requests > 0 ? o->max_requests : kvs_engine_default_max_requests(o->max_num_seqs);
    kvs_http_limits hl = {.threads = (unsigned)(o->http_threads > 0 ? o->http_threads : 0),
                          .max_connections = o->max_connections, .max_request_bytes = o->max_request_bytes,
                          .body_pool_bytes = (size_t)o->http_body_pool,
                          .answer_pool_bytes = (size_t)o->http_answer_pool};
    return kvs_loop_reserve_bytes(R) + kvs_http_reserve_bytes(&hl);
}

static live_job *job_new(kvs_loop *l)
{
    return l->n_free_jobs ? l->free_jobs[--l->n_free_jobs] : NULL;
}

static void job_release(kvs_loop *l, live_job *job)
{
    if (--job->n_live > 0)
        return;
    kvs_chan_unref(job->chan);
    job->chan = NULL;
    l->free_jobs[l->n_free_jobs++] = job;
}

/* A final error event from the pool's reserve (a malloc'ed one only if even
 * that is spent, which its size rules out). */
static void push_error(kvs_loop *l, kvs_chan *c, int status, const char *param, const char *msg)
{
    kvs_srv_event *ev = kvs_event_pool_get(l->events, KVS_EV_ERROR, true);
    size_t cap = kvs_event_pool_text_cap(l->events), n = strlen(msg);
    if (!ev || n > cap) {
        kvs_event_free(ev);
        ev = kvs_event_new(KVS_EV_ERROR, msg, n);
        if (!ev)
            return;
    } else {
        memcpy(ev->text, msg, n);
        ev->text[n] = '\0';
        ev->text_len = n;
    }
    ev->status = status;
    snprintf(ev->param, sizeof ev->param, "%s", param ? param : "");
    kvs_chan_push(c, ev);
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
        kvs_event_free(s->reply);
        kvs_chan_unref(c);
        return;
    }
    live_job *job = s->n <= (int32_t)(l->cap_live - l->n_live) ? job_new(l) : NULL;
    if (!job) { /* cannot happen: take_pending waits for the slots */
        reply(s, KVS_EV_ERROR, 503, NULL, "no request slot is free");
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
            l->free_jobs[l->n_free_jobs++] = job;
            kvs_chan_unref(c);
            return;
        }
    }
    job->chan = c; /* the submission's reference moves to the job */
    job->n_live = s->n;
    job->n_choices = s->n;
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

/* Queue o's event(s) on the choice's channel: one event per
 * KVS_EVENT_TEXT bytes of text (the first carries the token and its
 * logprobs, the last the finish).  False when the reader is KVS_EVENTS_PER_
 * REQUEST events behind per choice or the pool is empty (*closed: the
 * reader is gone); what was queued stays. */
static bool post_output(kvs_loop *l, live_job *job, const live_req *lr, const kvs_output *o, bool *closed)
{
    size_t cap = kvs_event_pool_text_cap(l->events);
    size_t n_chunks = o->text_len ? (o->text_len + cap - 1) / cap : 1;
    *closed = false;
    /* Prompt logprobs go first, one event each (in the token fields, with
     * prompt_index set); a step may carry only those (token -1, unfinished). */
    for (int32_t k = 0; k < o->n_prompt_lp; k++) {
        const kvs_prompt_logprob *p = &o->prompt_lp[k];
        kvs_srv_event *ev = kvs_event_pool_get(l->events, KVS_EV_TOKEN, false);
        if (!ev)
            return false;
        ev->text[0] = '\0';
        ev->text_len = 0;
        ev->index = lr->index;
        ev->prompt_index = p->index;
        ev->token = p->token;
        ev->logprob = p->logprob;
        ev->n_top = p->n_top > KVS_MAX_LOGPROBS ? KVS_MAX_LOGPROBS : p->n_top;
        memcpy(ev->top_ids, p->top_ids, (size_t)ev->n_top * sizeof *ev->top_ids);
        memcpy(ev->top_logprobs, p->top_logprobs, (size_t)ev->n_top * sizeof *ev->top_logprobs);
        ev->n_prompt = o->n_prompt_tokens;
        ev->n_cached = o->n_cached_tokens;
        if (!kvs_chan_push_quota(job->chan, ev, 0, closed)) {
            kvs_event_free(ev);
            return false;
        }
    }
    if (o->token < 0 && !o->finished)
        return true;
    for (size_t k = 0; k < n_chunks; k++) {
        kvs_srv_event *ev = kvs_event_pool_get(l->events, KVS_EV_TOKEN, false);
        if (!ev)
            return false;
        size_t off = k * cap, len = o->text_len - off < cap ? o->text_len - off : cap;
        if (len)
            memcpy(ev->text, o->text + off, len);
        ev->text[len] = '\0';
        ev->text_len = len;
        ev->index = lr->index;
        if (k == 0) {
            ev->token = o->token;
            ev->logprob = o->logprob;
            ev->n_top = o->n_top > KVS_MAX_LOGPROBS ? KVS_MAX_LOGPROBS : o->n_top;
            if (ev->n_top > 0) {
                memcpy(ev->top_ids, o->top_ids, (size_t)ev->n_top * sizeof *ev->top_ids);
                memcpy(ev->top_logprobs, o->top_logprobs, (size_t)ev->n_top * sizeof *ev->top_logprobs);
            }
        }
        bool last = k + 1 == n_chunks;
        ev->finished = last && o->finished;
        ev->reason = last ? o->reason : KVS_FINISH_NONE;
        ev->stop_string = last ? o->stop_string : -1;
        ev->stop_token = last ? o->stop_token : -1;
        ev->n_prompt = o->n_prompt_tokens;
        ev->n_output = o->n_output_tokens;
        ev->n_cached = o->n_cached_tokens;
        if (!kvs_chan_push_quota(job->chan, ev, 0, closed)) {
            kvs_event_free(ev);
            return false;
        }
    }
    return true;
}

static void deliver(kvs_loop *l, const kvs_output *o, double now)
{
    live_req *lr = find_live(l, o->id);
    if (!lr)
        return;
    if (o->token >= 0) {
        if (!lr->got_first)
            kvs_metrics_first_token(l->m, now - lr->t_arrival, o->n_prompt_tokens);
        else
            kvs_metrics_next_token(l->m, now - lr->t_last);
        lr->got_first = true;
        lr->t_last = now;
    }
    /* Metrics first: a client that reads them after its answer sees this step. */
    live_job *job = lr->job;
    live_req copy = *lr;
    if (o->finished) {
        kvs_metrics_finished(l->m, o->reason, now - lr->t_arrival);
        remove_live(l, lr);
    }
    if (o->error && l->log) { /* one line per request the engine ended: the event is logged */
        fprintf(l->log, "ERROR kvserve: engine: request %" PRIu64 " (choice %d) failed: %s\n", o->id, copy.index,
                o->error);
        fflush(l->log);
    }
    bool closed;
    if (copy.failed) {
        /* its error event went out already */
    } else if (o->error) { /* the engine ended it (a broken invariant): say so; the others go on */
        push_error(l, job->chan, 500, NULL, o->error);
    } else if (!post_output(l, job, &copy, o, &closed)) {
        if (!closed) { /* the reader is too far behind for the pool: end this choice cleanly */
            l->n_refused++;
            push_error(l, job->chan, 503, NULL,
                       "the server's event pool is full (its readers are behind); the request was ended");
        }
        if (!o->finished)
            lr->failed = true;
        if (!o->finished)
            kvs_engine_abort(l->e, o->id); /* free the blocks now; the abort is not delivered */
    }
    if (o->finished)
        job_release(l, job);
}

/* End every live request with an error event (shutdown, engine failure). */
static void fail_all(kvs_loop *l, int status, const char *msg)
{
    for (size_t i = 0; i < l->n_live; i++) {
        live_req *lr = &l->live[i];
        kvs_engine_abort(l->e, lr->id);
        push_error(l, lr->job->chan, status, NULL, msg); /* the reader stops at the first */
    }
    /* Release each job once per live choice. */
    size_t n = l->n_live;
    l->n_live = 0;
    for (size_t i = 0; i < n; i++)
        job_release(l, l->live[i].job);
}

/* kvs_engine_pause's question: is this request's reader behind?  Behind:
 * KVS_EVENTS_PER_REQUEST events per choice queued; or, while the event
 * pool runs low (readers of finished requests may still hold events),
 * anything queued at all, so that only readers who keep up go on. */
static bool reader_behind(void *ctx, uint64_t id)
{
    kvs_loop *l = ctx;
    live_req *lr = find_live(l, id);
    if (!lr || lr->failed)
        return false;
    int q = kvs_chan_queued(lr->job->chan);
    return q >= KVS_EVENTS_PER_REQUEST * lr->job->n_choices || (l->pool_low && q > 0);
}

/* Move the inbox's submissions to the pending list, and add the pending
 * ones, first come first served, while the engine has request slots for
 * all of a submission's choices. */
static void take_pending(kvs_loop *l, kvs_submit *subs)
{
    while (subs) {
        kvs_submit *next = subs->next;
        subs->next = NULL;
        if (l->pend_tail)
            l->pend_tail->next = subs;
        else
            l->pend_head = subs;
        l->pend_tail = subs;
        subs = next;
    }
    while (l->pend_head) {
        kvs_submit *s = l->pend_head;
        if (s->n > (int32_t)l->cap_live) {
            char msg[128];
            snprintf(msg, sizeof msg, "n = %d choices is more than the server's %zu request slots", s->n,
                     l->cap_live);
            l->pend_head = s->next;
            kvs_chan *c = s->chan;
            reply(s, KVS_EV_ERROR, 400, "n", msg);
            kvs_chan_unref(c);
            continue;
        }
        if (!kvs_chan_closed(s->chan) &&
            (kvs_engine_free_slots(l->e) < s->n || l->n_live + (size_t)s->n > l->cap_live || !l->n_free_jobs))
            break; /* waits for slots: requests finishing free them */
        l->pend_head = s->next;
        add_submission(l, s);
    }
    if (!l->pend_head)
        l->pend_tail = NULL;
}

static void publish_serving(kvs_loop *l)
{
    kvs_event_pool_stats es;
    kvs_event_pool_get_stats(l->events, &es);
    size_t n_pending = 0;
    for (kvs_submit *s = l->pend_head; s; s = s->next)
        n_pending++;
    kvs_serving_stats ss = {.events_in_use = es.in_use, .events_high_water = es.high_water,
                            .events_capacity = es.capacity, .events_bytes = es.bytes,
                            .submissions_waiting = n_pending, .refused_for_memory = l->n_refused};
    kvs_metrics_set_serving(l->m, &ss);
}

static void *loop_main(void *arg)
{
    kvs_loop *l = arg;
    pthread_setname_np(pthread_self(), "kvs-engine"); /* for tools that count per thread */
    kvs_engine_stats st;
    kvs_engine_get_stats(l->e, &st);
    kvs_metrics_set_stats(l->m, &st);
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && !l->sub_head && l->n_aborts == 0 && !kvs_engine_has_work(l->e) &&
               !(l->pend_head && (kvs_chan_closed(l->pend_head->chan) ||
                                  kvs_engine_free_slots(l->e) >= l->pend_head->n)))
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        kvs_submit *subs = l->sub_head;
        l->sub_head = l->sub_tail = NULL;
        abort_range *ab = l->ab_copy;
        size_t n_ab = l->n_aborts;
        if (n_ab > 0)
            memcpy(ab, l->aborts, n_ab * sizeof *ab);
        l->n_aborts = 0;
        pthread_mutex_unlock(&l->mu);

        /* Submissions first, so that an abort posted right after one applies. */
        take_pending(l, subs);
        for (size_t i = 0; i < n_ab; i++)
            for (int32_t j = 0; j < ab[i].n; j++)
                kvs_engine_abort(l->e, ab[i].base + (uint64_t)j);

        if (kvs_engine_has_work(l->e)) {
            const kvs_output *outs;
            size_t n_outs;
            kvs_error err;
            kvs_event_pool_stats es;
            kvs_event_pool_get_stats(l->events, &es);
            /* low: less than two events per live choice left beside the reserve */
            l->pool_low = es.capacity - es.in_use < l->cap_live + 2 * l->n_live;
            kvs_engine_pause(l->e, reader_behind, l);
            if (kvs_engine_step(l->e, &outs, &n_outs, &err) != KVS_OK) {
                char msg[600];
                snprintf(msg, sizeof msg, "engine step failed: %s", err.msg);
                if (l->log) {
                    fprintf(l->log, "ERROR kvserve: engine: %s; every live request was ended\n", msg);
                    fflush(l->log);
                }
                fail_all(l, 500, msg);
            } else {
                kvs_engine_get_stats(l->e, &st);
                kvs_metrics_set_stats(l->m, &st);
                double now = kvs_now();
                for (size_t i = 0; i < n_outs; i++)
                    deliver(l, &outs[i], now);
                kvs_engine_release_finished(l->e); /* delivered: the slots can take pending submissions */
                if (n_outs == 0 && st.last_step_tokens == 0) { /* every request waits for its reader */
                    struct timespec dl = kvs_deadline_ms(1);
                    pthread_mutex_lock(&l->mu);
                    if (!l->stop && !l->sub_head && l->n_aborts == 0)
                        pthread_cond_timedwait(&l->cv, &l->mu, &dl);
                    pthread_mutex_unlock(&l->mu);
                }
            }
            publish_serving(l);
        }
    }
    /* Stopping: everything still live or queued ends now. */
    fail_all(l, 503, "the server is shutting down");
    pthread_mutex_lock(&l->mu);
    kvs_submit *subs = l->sub_head;
    l->sub_head = l->sub_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    if (l->pend_tail) { /* the pending ones first: they came first */
        l->pend_tail->next = subs;
        subs = l->pend_head;
        l->pend_head = l->pend_tail = NULL;
    }
    while (subs) {
        kvs_submit *next = subs->next;
        kvs_chan *c = subs->chan;
        reply(subs, KVS_EV_ERROR, 503, NULL, "the server is shutting down");
        kvs_chan_unref(c);
        subs = next;
    }
    return NULL;
}

kvs_status kvs_loop_start(kvs_loop **out, kvs_engine *e, kvs_metrics *m, FILE *log, kvs_error *err)
{
    *out = NULL;
    kvs_loop *l = calloc(1, sizeof *l);
    if (!l)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    l->e = e;
    l->m = m;
    l->log = log;
    l->next_id = 1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca; /* monotonic, for kvs_deadline_ms */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    kvs_engine_stats es;
    kvs_engine_get_stats(e, &es);
    size_t R = (size_t)(es.requests_cap > 0 ? es.requests_cap : 1);
    kvs_status st = kvs_event_pool_new(&l->events, R * (KVS_EVENTS_PER_REQUEST + 2), R, KVS_EVENT_TEXT, err);
    if (st != KVS_OK) {
        kvs_loop_free(l);
        return st;
    }
    l->cap_live = R;
    l->cap_aborts = R * ABORTS_PER_REQUEST;
    l->live = malloc(R * sizeof *l->live);
    l->jobs = calloc(R, sizeof *l->jobs);
    l->free_jobs = malloc(R * sizeof *l->free_jobs);
    l->aborts = malloc(l->cap_aborts * sizeof *l->aborts);
    l->ab_copy = malloc(l->cap_aborts * sizeof *l->ab_copy);
    if (!l->live || !l->jobs || !l->free_jobs || !l->aborts || !l->ab_copy) {
        kvs_loop_free(l);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the serving loop");
    }
    /* Resident first (kvs_host_touch writes a zero into each page), then filled. */
    kvs_host_touch(l->live, R * sizeof *l->live);
    kvs_host_touch(l->free_jobs, R * sizeof *l->free_jobs);
    for (size_t i = 0; i < R; i++)
        l->free_jobs[i] = &l->jobs[R - 1 - i];
    l->n_free_jobs = R;
    kvs_host_touch(l->aborts, l->cap_aborts * sizeof *l->aborts);
    kvs_host_touch(l->ab_copy, l->cap_aborts * sizeof *l->ab_copy);
    kvs_metrics_set_serving_capacity(m, kvs_loop_reserve_bytes((int32_t)R));
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
    /* Full (cannot happen: each submission aborts once): the engine still
     * aborts it when it next finds the channel closed. */
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
    free(l->ab_copy);
    free(l->live);
    free(l->jobs);
    free(l->free_jobs);
    kvs_event_pool_free(l->events);
    free(l);
}
