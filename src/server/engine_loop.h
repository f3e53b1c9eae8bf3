/*
 * engine_loop.h - the engine thread and the channels that connect it to
 * HTTP handlers.
 *
 * The engine is single-threaded, so one thread owns it.  Other threads talk
 * to it through a mutex-protected inbox (new submissions, aborts) and read
 * results from per-request channels:
 *
 *     HTTP thread                         engine thread
 *     kvs_loop_submit(sub) --inbox-->     kvs_engine_add x n
 *     kvs_chan_pop()  <--ACCEPTED/ERROR-- (one event)
 *     kvs_chan_pop()  <--TOKEN ...------  each step: schedule, forward, sample
 *     kvs_chan_pop()  <--TOKEN finished-  a choice is done
 *
 * The loop sleeps on a condition variable when it has nothing to do.
 *
 * A channel is reference counted: the consumer holds one reference, the
 * engine thread one while any of its choices is live.  A consumer that goes
 * away calls kvs_chan_close() and kvs_loop_abort(); the engine also aborts a
 * request whose channel it finds closed, so a request never outlives its
 * reader by more than a step.
 *
 * The loop also keeps the server's metrics (metrics.h): time stamps for
 * time-to-first-token, time-per-output-token and end-to-end latency are taken
 * on the engine thread as tokens come out of the step.
 */
#ifndef KVS_SERVER_ENGINE_LOOP_H
#define KVS_SERVER_ENGINE_LOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "engine/engine.h"
#include "server/metrics.h"

typedef enum kvs_ev_kind {
    KVS_EV_ACCEPTED,   /* all choices were queued */
    KVS_EV_ERROR,      /* nothing was queued: status, param and message say why */
    KVS_EV_TOKEN,      /* a step's output for one choice */
} kvs_ev_kind;

typedef struct kvs_srv_event {
    struct kvs_srv_event *next;
    kvs_ev_kind kind;
    int32_t index;                 /* choice */
    int32_t token;                 /* -1: none (abort) */
    float logprob;
    int32_t n_top;
    int32_t top_ids[KVS_MAX_LOGPROBS];
    float top_logprobs[KVS_MAX_LOGPROBS];
    bool finished;
    kvs_finish_reason reason;
    int32_t n_prompt, n_output, n_cached;
    int status;                    /* ERROR: the HTTP status */
    char param[32];                /* ERROR: the offending field, or "" */
    size_t text_len;
    char text[];                   /* new text (TOKEN) or the message (ERROR); NUL-terminated */
} kvs_srv_event;

typedef struct kvs_chan kvs_chan;

/* A new, open, empty channel holding one reference (the caller's).  NULL
 * when out of memory. */
kvs_chan *kvs_chan_new(void);
/* Take one more reference. */
void kvs_chan_ref(kvs_chan *c);
/* Drop a reference; the last one frees the channel and any queued events
 * (NULL: no-op).  Never touch c after dropping one's own reference. */
void kvs_chan_unref(kvs_chan *c);
/* Queue an event (taking it).  False (and the event freed) if the consumer
 * has closed the channel. */
bool kvs_chan_push(kvs_chan *c, kvs_srv_event *ev);
/* The next event, waiting at most timeout_ms; NULL on time-out.  The caller
 * frees the event with free(). */
kvs_srv_event *kvs_chan_pop(kvs_chan *c, int timeout_ms);
/* The consumer is gone: drop queued events, refuse new ones. */
void kvs_chan_close(kvs_chan *c);
/* Whether kvs_chan_close was called. */
bool kvs_chan_closed(kvs_chan *c);

/* Wake-ups for the HTTP front end (http_front.h): call fn(arg) after every
 * event queued on c, under c's lock (fn must not call into the channel);
 * fn NULL: none.  Once this returns, the previous fn is not running and is
 * not called again. */
void kvs_chan_set_notify(kvs_chan *c, void (*fn)(void *arg), void *arg);
/* Call fn(arg) when c's last reference is dropped (the HTTP front end
 * hands a submission whose client left to the channel this way: the loop
 * may still read it until it lets the channel go). */
void kvs_chan_set_dtor(kvs_chan *c, void (*fn)(void *arg), void *arg);

/* An allocated event with room for len bytes of text (copied from text if
 * not NULL).  NULL when out of memory. */
kvs_srv_event *kvs_event_new(kvs_ev_kind kind, const char *text, size_t len);

/* Text room of a submission's reply event: an engine error message fits. */
#define KVS_SUBMIT_REPLY_ROOM (sizeof(((kvs_error *)0)->msg) - 1)

/* A request for n choices of one prompt. */
typedef struct kvs_submit {
    struct kvs_submit *next;
    kvs_chan *chan;                /* the loop takes a reference */
    int32_t n;                     /* choices: engine ids base_id .. base_id + n - 1 */
    int32_t *prompt;               /* owned by the submitter; valid until ACCEPTED/ERROR */
    size_t n_prompt;
    kvs_request_params params;     /* pointers valid until ACCEPTED/ERROR; with a seed,
                                      choice i uses seed + i */
    double t_arrival;              /* kvs_now() when the request arrived */
    uint64_t base_id;              /* set by kvs_loop_submit */
    kvs_srv_event *reply;          /* the first event, allocated by the submitter
                                      (kvs_event_new with KVS_SUBMIT_REPLY_ROOM bytes
                                      of text) so that it never fails for memory; the
                                      loop takes it, the submitter frees it only when
                                      kvs_loop_submit fails */
} kvs_submit;

typedef struct kvs_loop kvs_loop;

/* Start the engine thread over `e` (which it owns until kvs_loop_stop). */
kvs_status kvs_loop_start(kvs_loop **out, kvs_engine *e, kvs_metrics *m, kvs_error *err);
/* Post a submission (sub->reply set).  The caller keeps `sub` alive, and its
 * channel open, until the channel's first event (ACCEPTED or ERROR, sent in
 * sub->reply), which always comes, also when the loop stops.  False (nothing
 * queued, sub->reply still the caller's) when the loop is stopping. */
bool kvs_loop_submit(kvs_loop *l, kvs_submit *sub);
/* Abort choices base .. base + n - 1 (unknown ids are ignored). */
void kvs_loop_abort(kvs_loop *l, uint64_t base, int32_t n);
/* Abort everything, end every channel with a final event and join the
 * thread.  Afterwards submit fails and abort is a harmless no-op, so other
 * threads may still call them until kvs_loop_free.  Idempotent. */
void kvs_loop_stop(kvs_loop *l);
/* Free a stopped loop (NULL: no-op).  The engine is left to its owner. */
void kvs_loop_free(kvs_loop *l);

/* Monotonic seconds. */
double kvs_now(void);
/* The CLOCK_MONOTONIC time timeout_ms (>= 0) from now, for
 * pthread_cond_timedwait on a condition variable set to that clock. */
struct timespec kvs_deadline_ms(int timeout_ms);

#endif
