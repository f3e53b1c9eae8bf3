#include "server/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/gpool.h"
#include "memory/host.h"

/* vLLM's bucket boundaries. */
static const double TTFT_BOUNDS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                     1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double TPOT_BOUNDS[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                     0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double E2E_BOUNDS[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void histo_init(kvs_histo *h, const double *b, int n)
{
    memset(h, 0, sizeof *h);
    h->bounds = b;
    h->n_bounds = n < KVS_HISTO_MAX_BUCKETS ? n : KVS_HISTO_MAX_BUCKETS;
}

static void histo_observe(kvs_histo *h, double v)
{
    if (!(v >= 0))
        v = 0;
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void kvs_metrics_init(kvs_metrics *m, const char *model_name, const kvs_memory_report *rep)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    /* A label value: escape backslash, quote and newline by dropping them. */
    size_t k = 0;
    for (const char *p = model_name; *p && k + 1 < sizeof m->model_name; p++)
        if (*p != '"' && *p != '\\' && *p != '\n')
            m->model_name[k++] = *p;
    m->model_name[k] = '\0';
    if (rep)
        m->report = *rep;
    histo_init(&m->ttft, TTFT_BOUNDS, N_OF(TTFT_BOUNDS));
    histo_init(&m->tpot, TPOT_BOUNDS, N_OF(TPOT_BOUNDS));
    histo_init(&m->e2e, E2E_BOUNDS, N_OF(E2E_BOUNDS));
}

void kvs_metrics_destroy(kvs_metrics *m) { pthread_mutex_destroy(&m->mu); }

void kvs_metrics_set_stats(kvs_metrics *m, const kvs_engine_stats *st)
{
    pthread_mutex_lock(&m->mu);
    m->st = *st;
    pthread_mutex_unlock(&m->mu);
}

void kvs_metrics_first_token(kvs_metrics *m, double ttft, int32_t n_prompt)
{
    pthread_mutex_lock(&m->mu);
    histo_observe(&m->ttft, ttft);
    m->prompt_tokens += (uint64_t)(n_prompt > 0 ? n_prompt : 0);
    pthread_mutex_unlock(&m->mu);
}

void kvs_metrics_next_token(kvs_metrics *m, double dt)
{
    pthread_mutex_lock(&m->mu);
    histo_observe(&m->tpot, dt);
    pthread_mutex_unlock(&m->mu);
}

void kvs_metrics_finished(kvs_metrics *m, kvs_finish_reason r, double e2e)
{
    pthread_mutex_lock(&m->mu);
    if ((int)r >= 0 && (int)r < 4)
        m->finished[r]++;
    histo_observe(&m->e2e, e2e);
    pthread_mutex_unlock(&m->mu);
}

void kvs_metrics_set_serving(kvs_metrics *m, const kvs_serving_stats *ss)
{
    pthread_mutex_lock(&m->mu);
    m->serving = *ss;
    pthread_mutex_unlock(&m->mu);
}

void kvs_metrics_set_serving_capacity(kvs_metrics *m, uint64_t bytes)
{
    pthread_mutex_lock(&m->mu);
    m->serving_loop_bytes = bytes;
    pthread_mutex_unlock(&m->mu);
}

void kvs_metrics_refused_for_memory(kvs_metrics *m)
{
    pthread_mutex_lock(&m->mu);
    m->http_refused_for_memory++;
    pthread_mutex_unlock(&m->mu);
}

void kvs_metrics_set_front(kvs_metrics *m, const kvs_server_http_stats *front)
{
    pthread_mutex_lock(&m->mu);
    m->front = *front;
    pthread_mutex_unlock(&m->mu);
}

/* ---- rendering ---- */

static void header(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP kvserve:%s %s\n# TYPE kvserve:%s %s\n", name, help, name, type);
}

static void gauge(FILE *f, const kvs_metrics *m, const char *name, const char *help, double v)
{
    header(f, name, "gauge", help);
    fprintf(f, "kvserve:%s{model_name=\"%s\"} %.17g\n", name, m->model_name, v);
}

static void counter(FILE *f, const kvs_metrics *m, const char *name, const char *help, uint64_t v)
{
    header(f, name, "counter", help);
    fprintf(f, "kvserve:%s_total{model_name=\"%s\"} %llu\n", name, m->model_name, (unsigned long long)v);
}

static void histogram(FILE *f, const kvs_metrics *m, const char *name, const char *help, const kvs_histo *h)
{
    header(f, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        fprintf(f, "kvserve:%s_bucket{model_name=\"%s\",le=\"%g\"} %llu\n", name, m->model_name, h->bounds[i],
                (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    fprintf(f, "kvserve:%s_bucket{model_name=\"%s\",le=\"+Inf\"} %llu\n", name, m->model_name,
            (unsigned long long)cum);
    fprintf(f, "kvserve:%s_sum{model_name=\"%s\"} %.17g\n", name, m->model_name, h->sum);
    fprintf(f, "kvserve:%s_count{model_name=\"%s\"} %llu\n", name, m->model_name, (unsigned long long)h->count);
}

static void memory_gauges(FILE *f, const kvs_metrics *m)
{
    const kvs_memory_report *r = &m->report;
    const struct {
        const char *name, *help;
        uint64_t v;
    } g[] = {
        {"memory_total_bytes", "Device memory (total).", r->total_bytes},
        {"memory_budget_bytes", "This instance's share: total x gpu_memory_utilization.", r->budget_bytes},
        {"memory_used_by_others_bytes", "Device memory other processes held at start.", r->used_by_others_bytes},
        {"memory_weights_bytes", "Model weights.", r->weights_bytes},
        {"memory_activation_peak_bytes", "Profiled activation peak of the largest step.", r->activation_peak_bytes},
        {"memory_graph_bytes", "Captured graphs.", r->graph_bytes},
        {"memory_overhead_bytes", "Runtime overhead reserve (computed) plus host bookkeeping per KV block.",
         r->overhead_bytes},
        {"memory_overhead_measured_bytes", "Runtime overhead measured at start (inside the reserve).",
         r->overhead_measured_bytes},
        {"memory_serving_reserve_bytes", "Serving reserve: the front end and the serving pools.",
         r->serving_reserve_bytes},
        {"memory_kv_cache_bytes", "KV cache.", r->kv_cache_bytes},
        {"memory_slack_inside_bytes", "Budget left after all terms (under one block).", r->slack_inside_bytes},
        {"memory_projected_peak_bytes", "Process memory projected at start: every term of the budget.",
         r->projected_peak_bytes},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        gauge(f, m, g[i].name, g[i].help, (double)g[i].v);
    gauge(f, m, "kv_cache_blocks", "KV cache blocks.", (double)r->num_blocks);
    gauge(f, m, "kv_cache_block_size", "Tokens per KV block.", (double)r->block_size);
    uint64_t rss = 0, hwm = 0;
    if (kvs_host_rss(&rss, &hwm)) {
        gauge(f, m, "memory_resident_bytes", "Process resident memory now (VmRSS).", (double)rss);
        gauge(f, m, "memory_resident_high_water_bytes", "Process resident memory high-water mark (VmHWM).",
              (double)hwm);
        gauge(f, m, "memory_peak_process_bytes", "Observed peak process memory (VmHWM).", (double)hwm);
    }
    gauge(f, m, "kv_cache_blocks_used", "KV cache blocks in use.", (double)m->st.kv_blocks_used);
    gauge(f, m, "memory_activation_arena_bytes", "Activation arena capacity (the profiled peak).",
          (double)r->activation_peak_bytes);
    gauge(f, m, "memory_activation_arena_high_water_bytes", "Activation arena high-water mark.",
          (double)m->st.arena_high_water);
    gauge(f, m, "request_slots_used", "Engine request slots in use (running + waiting).",
          (double)m->st.requests_live);
    gauge(f, m, "request_slots_high_water", "Most engine request slots in use at once.",
          (double)m->st.requests_high_water);
    gauge(f, m, "request_slots_capacity", "Engine request slots.", (double)m->st.requests_cap);
    gauge(f, m, "serving_events_used", "Serving-loop events in use.", (double)m->serving.events_in_use);
    gauge(f, m, "serving_events_high_water", "Most serving-loop events in use at once.",
          (double)m->serving.events_high_water);
    gauge(f, m, "serving_events_capacity", "Serving-loop events.", (double)m->serving.events_capacity);
    gauge(f, m, "serving_loop_pool_bytes", "Bytes of the serving loop's pools (fixed at start).",
          (double)m->serving_loop_bytes);
    gauge(f, m, "num_requests_queued_for_slots", "Requests waiting for engine request slots.",
          (double)m->serving.submissions_waiting);
    const kvs_server_http_stats *h = &m->front;
    gauge(f, m, "http_connections_used", "HTTP connection slots in use.", (double)h->connections);
    gauge(f, m, "http_connections_capacity", "HTTP connection slots (--max-connections).",
          (double)h->max_connections);
    gauge(f, m, "http_body_pool_used_bytes", "Request-body pool in use.", (double)h->body_pool_used);
    gauge(f, m, "http_body_pool_high_water_bytes", "Request-body pool high-water mark.", (double)h->body_pool_peak);
    gauge(f, m, "http_body_pool_capacity_bytes", "Request-body pool (--http-body-pool).", (double)h->body_pool_bytes);
    gauge(f, m, "http_stream_pool_used_bytes", "Streamed responses' chunk buffers in use.",
          (double)h->stream_pool_used);
    gauge(f, m, "http_stream_pool_high_water_bytes", "Stream pool high-water mark.", (double)h->stream_pool_peak);
    gauge(f, m, "http_stream_pool_capacity_bytes", "Stream pool (fixed at start).", (double)h->stream_pool_bytes);
    gauge(f, m, "http_answer_pool_used_bytes", "Non-streamed answers being built.", (double)h->answer_pool_used);
    gauge(f, m, "http_answer_pool_high_water_bytes", "Answer pool high-water mark.", (double)h->answer_pool_peak);
    gauge(f, m, "http_answer_pool_capacity_bytes", "Answer pool (--http-answer-pool).", (double)h->answer_pool_bytes);
    counter(f, m, "http_refused_connections", "Connections answered 503 past --max-connections.",
            h->refused_connections);
    counter(f, m, "http_refused_bodies", "Requests answered 503 for a full body pool.", h->refused_bodies);
    counter(f, m, "http_refused_streams", "Streams answered 503 for a full stream pool.", h->refused_streams);
    counter(f, m, "http_refused_answers", "Answer-pool runs refused (the answer got a 503).", h->refused_answers);
    kvs_gpool_stats gs = {0};
    if (m->gpool)
        kvs_gpool_get_stats(m->gpool, &gs);
    gauge(f, m, "structured_output_slots_capacity", "Structured-output sequences (--max-structured-seqs).",
          (double)gs.slots);
    gauge(f, m, "structured_output_slots_used", "Structured-output sequences in use (matchers taken or reserved).",
          (double)gs.matchers_in_use);
    gauge(f, m, "structured_output_slots_high_water", "Most structured-output sequences in use at once.",
          (double)gs.high_water);
    gauge(f, m, "structured_output_arenas_used", "Structured-output compile arenas in use (requests).",
          (double)gs.leases_in_use);
    gauge(f, m, "structured_output_arena_high_water_bytes", "Most bytes one constraint's compile used.",
          (double)gs.arena_high_water);
    gauge(f, m, "memory_structured_reserve_bytes", "Structured-output slots: matchers, compile arenas, the "
          "vocabulary trie (a part of the serving reserve).", (double)r->structured_reserve_bytes);
    counter(f, m, "structured_output_refused_too_large", "Structured-output constraints refused (400): over "
            "--max-grammar-bytes.", gs.refused_too_big);
    counter(f, m, "requests_refused_memory", "Requests refused or ended because a memory pool was full.",
            m->serving.refused_for_memory + m->http_refused_for_memory + gs.refused_busy);
    counter(f, m, "requests_failed_invariant", "Requests ended by a broken engine invariant.",
            m->st.n_failed_invariant);
    counter(f, m, "plan_entries_trimmed", "Planned step entries cut short or deferred to fit the profiled step "
            "(harmless; the scheduler should plan none).", m->st.n_plan_trimmed);
}

char *kvs_metrics_render(kvs_metrics *m, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    pthread_mutex_lock(&m->mu);
    const kvs_engine_stats *st = &m->st;
    gauge(f, m, "num_requests_running", "Requests in the running batch.", st->n_running);
    gauge(f, m, "num_requests_waiting", "Requests waiting to be scheduled.", st->n_waiting);
    double usage = st->kv_blocks_total > 0 ? (double)st->kv_blocks_used / st->kv_blocks_total : 0.0;
    gauge(f, m, "kv_cache_usage_perc", "KV cache usage (fraction of blocks in use; 1 = full).", usage);
    counter(f, m, "num_preemptions", "Preemptions (requests whose KV blocks were taken back).", st->n_preemptions);
    counter(f, m, "prompt_tokens", "Prompt tokens of requests that started generating.", m->prompt_tokens);
    counter(f, m, "prompt_tokens_computed", "Prompt tokens run through the model (prefix-cache hits excluded).",
            st->prompt_tokens_computed);
    counter(f, m, "generation_tokens", "Generated tokens.", st->generation_tokens);
    counter(f, m, "prefix_cache_queries", "Prefix cache queries, in tokens.", st->prefix_queries);
    counter(f, m, "prefix_cache_hits", "Prefix cache hits, in tokens.", st->prefix_hits);
    counter(f, m, "engine_steps", "Engine steps run.", st->n_steps);
    header(f, "request_success", "counter", "Finished requests by finish reason.");
    static const char *const reasons[] = {"stop", "length", "abort"};
    static const kvs_finish_reason codes[] = {KVS_FINISH_STOP, KVS_FINISH_LENGTH, KVS_FINISH_ABORT};
    for (int i = 0; i < 3; i++)
        fprintf(f, "kvserve:request_success_total{model_name=\"%s\",finished_reason=\"%s\"} %llu\n", m->model_name,
                reasons[i], (unsigned long long)m->finished[codes[i]]);
    histogram(f, m, "time_to_first_token_seconds", "Time to first token.", &m->ttft);
    histogram(f, m, "time_per_output_token_seconds", "Time between consecutive output tokens.", &m->tpot);
    histogram(f, m, "e2e_request_latency_seconds", "End-to-end request latency.", &m->e2e);
    memory_gauges(f, m);
    pthread_mutex_unlock(&m->mu);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
