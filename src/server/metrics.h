/*
 * metrics.h - the server's Prometheus metrics.
 *
 * Names follow vLLM's with a "kvserve:" prefix (kvserve:num_requests_running,
 * kvserve:time_to_first_token_seconds, ...), each labelled
 * model_name="<served name>".  The engine thread writes (kvs_metrics_*
 * observers, one mutex), the /metrics handler reads a consistent snapshot.
 * Memory gauges (kvserve:memory_*_bytes) are the start-up memory report's
 * terms, and live figures: the process's resident memory now and its
 * high-water mark (read at each scrape), the request slots, the serving
 * pools' use and capacity, and requests refused for lack of memory.
 */
#ifndef KVS_SERVER_METRICS_H
#define KVS_SERVER_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "memory/report.h"
#include "server/server.h"

#define KVS_HISTO_MAX_BUCKETS 24

typedef struct kvs_histo {
    const double *bounds;            /* upper bounds, ascending (+Inf implied) */
    int n_bounds;
    uint64_t counts[KVS_HISTO_MAX_BUCKETS + 1];   /* per bucket, not cumulative */
    uint64_t count;
    double sum;
} kvs_histo;

/* The serving loop's pools (engine_loop.h), published after each step. */
typedef struct kvs_serving_stats {
    uint64_t events_in_use, events_high_water, events_capacity, events_bytes;
    uint64_t submissions_waiting;    /* in the inbox, waiting for request slots */
    uint64_t refused_for_memory;     /* choices ended because a pool was full */
} kvs_serving_stats;

typedef struct kvs_metrics {
    pthread_mutex_t mu;
    char model_name[256];
    kvs_memory_report report;
    kvs_engine_stats st;             /* the last step's engine counters */
    uint64_t prompt_tokens;          /* prompt tokens of requests that produced a token */
    uint64_t finished[4];            /* by kvs_finish_reason */
    kvs_histo ttft, tpot, e2e;
    kvs_serving_stats serving;
    uint64_t serving_loop_bytes;     /* the loop's pools, fixed at start */
    uint64_t http_refused_for_memory; /* requests the front end refused for a full pool (503) */
    kvs_server_http_stats front;     /* the HTTP front end's pools, set by the /metrics handler */
    struct kvs_gpool *gpool;         /* the structured-output slots (read when rendering), or NULL */
} kvs_metrics;

/* Zero m and set its model label (copied, quotes, backslashes and newlines
 * dropped) and memory report (copied; rep may be NULL). */
void kvs_metrics_init(kvs_metrics *m, const char *model_name, const kvs_memory_report *rep);
/* Release m's mutex; m holds no memory. */
void kvs_metrics_destroy(kvs_metrics *m);

/* Engine thread: publish the engine's counters after a step. */
void kvs_metrics_set_stats(kvs_metrics *m, const kvs_engine_stats *st);
/* Engine thread: a request's first token `ttft` seconds after arrival. */
void kvs_metrics_first_token(kvs_metrics *m, double ttft, int32_t n_prompt);
/* Engine thread: `dt` seconds between two output tokens of a request. */
void kvs_metrics_next_token(kvs_metrics *m, double dt);
/* Engine thread: a request finished `e2e` seconds after arrival. */
void kvs_metrics_finished(kvs_metrics *m, kvs_finish_reason r, double e2e);

/* Engine thread: publish the serving loop's pool use. */
void kvs_metrics_set_serving(kvs_metrics *m, const kvs_serving_stats *ss);
/* The loop's pools' bytes (at start). */
void kvs_metrics_set_serving_capacity(kvs_metrics *m, uint64_t bytes);
/* Any thread: a request refused for a full pool (the front end's 503). */
void kvs_metrics_refused_for_memory(kvs_metrics *m);
/* /metrics handler: the front end's connection slots and pools, read just
 * before rendering (kvs_server_http_stats_get). */
void kvs_metrics_set_front(kvs_metrics *m, const kvs_server_http_stats *front);

/* The Prometheus text exposition (malloc'ed, NUL-terminated); NULL if out
 * of memory. */
char *kvs_metrics_render(kvs_metrics *m, size_t *len);

#endif
