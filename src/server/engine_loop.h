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
#include <stdio.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/launch.h"
#include "server/metrics.h"

typedef enum kvs_ev_kind {
    KVS_EV_ACCEPTED,   /* all choices were queued */
    KVS_EV_ERROR,      /* nothing was queued: status, param and message say why */
    KVS_EV_TOKEN,      /* a step's output for one choice */
} kvs_ev_kind;

typedef struct kvs_srv_event {
    struct kvs_srv_event *next;
    struct kvs_event_pool *pool;   /* where it came from (NULL: kvs_event_new's malloc) */
    kvs_ev_kind kind;
    bool reply;                    /* a submission's first event (ACCEPTED or ERROR) */
    int32_t index;                 /* choice */
    int32_t token;                 /* -1: none (abort) */
    float logprob;
    int32_t n_top;
    int32_t top_ids[KVS_MAX_LOGPROBS];
    float top_logprobs[KVS_MAX_LOGPROBS];
    bool finished;
    kvs_finish_reason reason;
    int32_t n_prompt, n_output, n_cached;
    int32_t stop_string, stop_token;   /* finished on a stop string (its index) / stop token, else -1 */
    int32_t prompt_index;          /* > 0: a prompt logprob (of prompt token prompt_index, in token,
                                      logprob and the top fields), not an output token */
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
/* Queue an event as kvs_chan_push does, unless `quota` (> 0) events are
 * queued already: then false, and the event is still the caller's. */
bool kvs_chan_push_quota(kvs_chan *c, kvs_srv_event *ev, int quota, bool *closed);
/* Events queued now. */
int kvs_chan_queued(kvs_chan *c);
/* The next event, waiting at most timeout_ms; NULL on time-out.  The caller
 * frees the event with kvs_event_free(). */
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
 * not NULL).  NULL when out of memory.  (Used off the engine thread: the
 * submitter's reply; the engine thread takes its events from a pool.) */
kvs_srv_event *kvs_event_new(kvs_ev_kind kind, const char *text, size_t len);
/* Give an event back: to its pool, or free() it (NULL: no-op).  Any thread. */
void kvs_event_free(kvs_srv_event *ev);

/* A fixed pool of events with room for text_cap bytes of text each, made
 * once and resident; `reserve` of them are kept for final error events
 * (kvs_event_pool_get with use_reserve).  Thread-safe. */
typedef struct kvs_event_pool kvs_event_pool;
typedef struct kvs_event_pool_stats {
    uint64_t capacity, in_use, high_water, bytes;
} kvs_event_pool_stats;
kvs_status kvs_event_pool_new(kvs_event_pool **out, size_t n_events, size_t reserve, size_t text_cap,
                              kvs_error *err);
/* Free the pool (NULL: no-op); every event must be back. */
void kvs_event_pool_free(kvs_event_pool *p);
/* An event of `kind` with no text, or NULL when the pool (outside the
 * reserve, unless use_reserve) is empty.  Allocates nothing. */
kvs_srv_event *kvs_event_pool_get(kvs_event_pool *p, kvs_ev_kind kind, bool use_reserve);
size_t kvs_event_pool_text_cap(const kvs_event_pool *p);
void kvs_event_pool_get_stats(kvs_event_pool *p, kvs_event_pool_stats *st);
/* The bytes a pool of n events of text_cap takes. */
uint64_t kvs_event_pool_bytes(size_t n_events, size_t text_cap);

/* The serving loop's pools for an engine with max_requests request slots:
 * events (KVS_EVENTS_PER_REQUEST queued per live request, plus a reserve),
 * live-request records and abort ranges.  Their bytes, for the budget. */
#define KVS_EVENTS_PER_REQUEST 4
#define KVS_EVENT_TEXT 128
uint64_t kvs_loop_reserve_bytes(int32_t max_requests);

/* The serving reserve for a start with these options: the loop's pools
 * for the engine's request slots, plus the HTTP front end's memory for
 * --http-threads, --max-connections, --max-request-bytes and
 * --http-body-pool (http_reserve.h).  (A start adds the structured-output
 * slots, launch.h: kvs_launch_structured_reserve.)  A budget
 * term of its own (launch.h: serving_reserve), the same for `plan`,
 * `generate` and `serve`, so that they agree. */
uint64_t kvs_serving_reserve_bytes(const kvs_launch_opts *o);

/* Text room of a submission's reply event: an engine error message fits. */
#define KVS_SUBMIT_REPLY_ROOM (sizeof(((kvs_error *)0)->msg) - 1)

/* A request for n choices of one prompt. */
typedef struct kvs_submit {
    struct kvs_submit *next;
    kvs_chan *chan;                /* the loop takes a reference */
    int32_t n;                     /* choices: engine ids base_id .. base_id + n - 1 */
    int32_t index_base;            /* events carry index index_base + i for choice i */
    const char *length_param;      /* the field an error about the request's length names
                                      ("max_tokens" when NULL) */
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

/* Start the engine thread over `e` (which it owns until kvs_loop_stop).
 * Its pools (kvs_loop_reserve_bytes) are made here, sized from the
 * engine's request slots; after that the loop allocates nothing: a
 * submission waits in the inbox until the engine has slots for all its
 * choices; a request whose reader has KVS_EVENTS_PER_REQUEST events per
 * choice queued (or, while the pool runs low, any event queued: readers of
 * finished requests may still hold some) is paused (not scheduled) until
 * the reader catches up; and a choice that finds the event pool empty
 * ends with a 503 error event.  A request the engine ends for a broken
 * invariant (kvs_output.error) gets a 500 error event, and one line goes
 * to `log` (NULL: none) naming the request and why; so does a failed step. */
kvs_status kvs_loop_start(kvs_loop **out, kvs_engine *e, kvs_metrics *m, FILE *log, kvs_error *err);
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
