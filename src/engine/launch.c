#include "engine/launch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_internal.h"
#include "backends/registry.h"
#include "model/source.h"
#include "engine/block_pool.h"
#include "engine/kv_cache.h"
#include "memory/host.h"
#include "tokenizer/tok_internal.h" /* the tables' sizes, for the reserve */

/* The runtime reserve's constants (launch.h), calibrated on x86-64 Debian 12
 * (glibc 2.36, gcc 12 and clang 14): a release kvserve measured 4.6 to
 * 4.9 MiB resident before kvs_launch (program, libc, libjansson,
 * libmicrohttpd and its TLS libraries, stdio); the first load and profile
 * page in 0.2 to 0.5 MiB of kernel code.  Under AddressSanitizer every
 * figure grows (shadow memory, the allocator's own tables, redzones): a
 * start of stories260K measured 18 to 21 MiB of overhead where a release
 * build measures 6 to 9.5. */
#if defined(__SANITIZE_ADDRESS__)
#define KVS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVS_ASAN 1
#endif
#endif
#ifdef KVS_ASAN
#define RESERVE_BASE (20ull << 20)
#define RESERVE_CODE (2ull << 20)
#define RESERVE_PER_THREAD (512ull << 10)
#define RESERVE_HEAP_FACTOR 2
#else
#define RESERVE_BASE (5376ull << 10)
#define RESERVE_CODE (512ull << 10)
#define RESERVE_PER_THREAD (128ull << 10)
#define RESERVE_HEAP_FACTOR 1
#endif
/* A build with the CUDA backend also maps libcudart and libstdc++ and runs
 * their initializers (measured +1.5 MiB resident with --device cpu, a
 * little more when the default device is probed on a machine without a
 * GPU). */
#ifdef KVS_HAVE_CUDA
#define RESERVE_CUDA_RUNTIME (2ull << 20)
#else
#define RESERVE_CUDA_RUNTIME 0ull
#endif

bool kvs_launch_host_is_device(const kvs_backend *b) { return b->ops->caps.host_memory; }

kvs_gpool_limits kvs_launch_gpool_limits(const kvs_launch_opts *o)
{
    kvs_gpool_limits l = {.slots = o->max_structured_seqs,
                          .arena_bytes = o->max_grammar_bytes ? (size_t)o->max_grammar_bytes : KVS_GPOOL_DEFAULT_ARENA,
                          .matcher = kvs_gmatcher_default_limits()};
    if (l.slots < 0)
        l.slots = o->max_num_seqs < KVS_GPOOL_DEFAULT_SLOTS_MAX ? o->max_num_seqs : KVS_GPOOL_DEFAULT_SLOTS_MAX;
    return l;
}

uint64_t kvs_launch_structured_reserve(const kvs_gpool_limits *l, const kvs_tokenizer *t)
{
    return l->slots > 0 ? kvs_gpool_bytes(l, t) : 0;
}

kvs_dtype kvs_launch_auto_kv_dtype(const kvs_model_hparams *hp, bool host_memory)
{
    /* The CPU computes in f32 and caches in f32; a GPU caches in the
     * weights' half type (bf16 for bf16 weights, else f16), as vLLM does. */
    if (host_memory)
        return KVS_DTYPE_F32;
    return hp->weight_type == KVS_DTYPE_BF16 ? KVS_DTYPE_BF16 : KVS_DTYPE_F16;
}

void kvs_launch_budget_inputs(const kvs_launch_opts *o, const kvs_model_hparams *hp,
                              const kvs_runner_limits *lim, kvs_dtype kv_dtype, bool host_is_device,
                              kvs_budget_in *bi)
{
    memset(bi, 0, sizeof *bi);
    bi->utilization = o->gpu_memory_utilization;
    bi->kv_cache_memory = o->kv_cache_memory;
    bi->block_bytes = kvs_kv_block_bytes(hp, o->block_size, kv_dtype);
    bi->block_size = o->block_size;
    bi->max_model_len = o->max_model_len == -1 ? 0 : lim->max_model_len;
    bi->model_max_len = lim->max_model_len;
    bi->overhead_per_block =
        host_is_device ? kvs_block_pool_host_bytes_per_block(o->block_size, !o->no_prefix_caching) : 0;
}

void kvs_launch_fill_report(kvs_memory_report *rep, const kvs_budget_in *bi, const kvs_budget *bud)
{
    rep->total_bytes = bi->total;
    rep->utilization = bi->utilization;
    rep->overhead_per_block_bytes = bi->overhead_per_block;
    rep->budget_bytes = bud->budget;
    rep->used_by_others_bytes = bi->used_by_others;
    rep->weights_bytes = bi->weights;
    rep->activation_peak_bytes = bi->activation_peak;
    rep->graph_bytes = bi->graphs;
    rep->overhead_bytes = bud->overhead;
    rep->overhead_reserve_bytes = bi->overhead;
    rep->serving_reserve_bytes = bi->serving; /* (structured_reserve_bytes: the caller's) */
    rep->kv_cache_bytes = bud->kv_cache_bytes;
    rep->block_size = bi->block_size;
    rep->kv_bytes_per_token = bi->block_bytes / (uint64_t)bi->block_size;
    rep->num_blocks = bud->num_blocks;
    rep->kv_cache_tokens = bud->kv_cache_tokens;
    rep->max_model_len = bud->max_model_len;
    rep->max_concurrency = bud->max_concurrency;
    rep->slack_inside_bytes = bud->slack_inside;
    rep->slack_outside_bytes = bud->slack_outside;
}

kvs_engine_config kvs_launch_engine_config(const kvs_launch_opts *o, const kvs_runner_limits *lim,
                                           kvs_dtype kv_dtype)
{
    return (kvs_engine_config){
        .max_num_seqs = o->max_num_seqs, .max_num_batched_tokens = lim->max_tokens,
        .max_model_len = lim->max_model_len, .block_size = o->block_size, .num_blocks = 0,
        .kv_dtype = kv_dtype, .prefix_caching = !o->no_prefix_caching, .max_requests = o->max_requests,
    };
}

uint64_t kvs_launch_tokenizer_reserve(const kvs_tokenizer *t)
{
    uint64_t n = (uint64_t)t->n_vocab, bytes = 0, merge_bytes = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        bytes += t->piece[i].len;
    for (size_t i = 0; i < t->n_merges; i++)
        merge_bytes += t->merge[i].len;
    /* Per token: its score, type and flags, its span and hash slot and its
     * decoded form (measured 83 bytes a token for a 32000-token
     * SentencePiece vocabulary); the text twice (the pool and the decoded
     * pool); per merge: its pair and rank in a hash table. */
    return 72 * n + 2 * bytes + 48 * (uint64_t)t->n_merges + 2 * merge_bytes + (128u << 10);
}

void kvs_launch_runtime_reserve(const kvs_launch_opts *o, const kvs_model_hparams *hp, const kvs_runner_limits *lim,
                                kvs_dtype kv_dtype, const kvs_backend *b, uint64_t tok_bytes,
                                size_t max_token_bytes, kvs_runtime_reserve *out)
{
    kvs_engine_config cfg = kvs_launch_engine_config(o, lim, kv_dtype);
    memset(out, 0, sizeof *out);
    out->base = RESERVE_BASE + RESERVE_CUDA_RUNTIME;
    out->code = RESERVE_CODE;
    out->threads = (uint64_t)kvs_cpu_backend_threads(b) * RESERVE_PER_THREAD + kvs_cpu_backend_overhead_bytes(b);
    out->tokenizer = RESERVE_HEAP_FACTOR * tok_bytes;
    out->host_buffers = RESERVE_HEAP_FACTOR * (kvs_runner_host_bytes(hp, lim) +
                                               kvs_engine_host_bytes(hp, &cfg, max_token_bytes) +
                                               (uint64_t)hp->n_layers * 512 + 64 * 1024);
    uint64_t sum = out->base + out->code + out->threads + out->tokenizer + out->host_buffers;
    out->margin = sum / 32;
    out->total = sum + out->margin;
}

static uint64_t round_to(uint64_t x, uint64_t g) { return g > 1 ? (x + g - 1) / g * g : x; }

bool kvs_launch_solve_at_len(const kvs_len_fit *f, int32_t len, kvs_budget *bud)
{
    kvs_budget_in bi = f->bi;
    kvs_runner_limits lim = f->lim;
    lim.max_model_len = len;
    bi.max_model_len = len;
    bi.activation_peak = round_to(kvs_runner_activation_bytes(f->hp, &lim, (kvs_backend *)f->b), f->granularity);
    if (f->host) {
        kvs_runtime_reserve rr;
        kvs_launch_runtime_reserve(f->o, f->hp, &lim, f->kv_dtype, f->b, f->tok_bytes, f->max_token_bytes, &rr);
        bi.overhead = rr.total;
    }
    bi.fit_len_hint = 0;
    kvs_error e;
    return kvs_budget_solve(&bi, bud, &e) == KVS_OK;
}

int32_t kvs_launch_largest_len(const kvs_len_fit *f, int32_t limit)
{
    /* fits(len) only falls as len grows (more KV, larger reserve and peak) */
    int32_t lo = 0, hi = limit > 0 ? limit : (f->hp->n_ctx_train > 0 ? f->hp->n_ctx_train : 1 << 20);
    while (lo < hi) {
        int32_t mid = lo + (hi - lo + 1) / 2;
        kvs_budget t;
        if (kvs_launch_solve_at_len(f, mid, &t))
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

kvs_status kvs_launch_solve(kvs_len_fit *f, kvs_budget_in *bi, kvs_budget *bud, kvs_error *err)
{
    kvs_status st = kvs_budget_solve(bi, bud, err);
    if (st == KVS_E_BUDGET && bi->max_model_len > 0) { /* name the largest length a start fits */
        f->bi = *bi;
        int32_t L = kvs_launch_largest_len(f, f->hp->n_ctx_train);
        if (L > 0) {
            bi->fit_len_hint = L;
            st = kvs_budget_solve(bi, bud, err);
            bi->fit_len_hint = 0;
        }
    }
    if (st == KVS_E_BUDGET && err && f->structured_bytes > 0) { /* a large part of small budgets */
        size_t n = strlen(err->msg);
        snprintf(err->msg + n, sizeof err->msg - n, " (the serving reserve holds %.2f MiB for %d structured-output "
                 "slots: --max-structured-seqs)", f->structured_bytes / 1048576.0, f->structured_slots);
    }
    return st;
}

void kvs_launch_pick_auto_len(kvs_len_fit *f, kvs_budget_in *bi, kvs_runner_limits *lim)
{
    f->bi = *bi;
    f->lim = *lim;
    int32_t L = kvs_launch_largest_len(f, lim->max_model_len);
    if (L < 1)
        return; /* nothing fits: the solve says why */
    lim->max_model_len = L;
    bi->model_max_len = L;
    bi->activation_peak = round_to(kvs_runner_activation_bytes(f->hp, lim, (kvs_backend *)f->b), f->granularity);
    if (f->host) {
        kvs_runtime_reserve rr;
        kvs_launch_runtime_reserve(f->o, f->hp, lim, f->kv_dtype, f->b, f->tok_bytes, f->max_token_bytes, &rr);
        bi->overhead = rr.total;
    }
    f->lim = *lim;
    f->bi = *bi;
}

int32_t kvs_launch_default_batched_tokens(const char *device)
{
    /* The profiling run computes a step of this many tokens at start-up, and
     * every step of a long prompt's chunked prefill is this long: on a few
     * CPU cores 256 tokens keep both short (the prefill rate per token is the
     * same); GPUs take vLLM's 2048. */
    return !device || strcmp(device, "cpu") == 0 ? 256 : 2048;
}

kvs_launch_opts kvs_launch_defaults(void)
{
    return (kvs_launch_opts){
        .device = NULL, .gpu_memory_utilization = 0.92, .max_num_seqs = 256,
        .max_num_batched_tokens = -1, .block_size = 16, .kv_cache_dtype = "auto", .warn = stderr,
        .max_connections = 64, .max_request_bytes = 1u << 20, .max_structured_seqs = -1,
    };
}

kvs_status kvs_launch_check_memory_flags(const kvs_launch_opts *o, kvs_error *err)
{
    if (o->device_memory_set && o->device_memory == 0)
        return kvs_fail(err, KVS_E_INVALID, "--device-memory must be more than 0 bytes (leave it out to use the "
                        "host's memory)");
    if (o->kv_cache_memory_set && o->kv_cache_memory == 0)
        return kvs_fail(err, KVS_E_INVALID, "--kv-cache-memory must be more than 0 bytes (leave it out to give "
                        "the KV cache what the budget leaves)");
    if (o->max_requests < 0)
        return kvs_fail(err, KVS_E_INVALID, "--max-requests must be positive, got %d", o->max_requests);
    if (o->max_requests > 0 && o->max_requests < o->max_num_seqs)
        return kvs_fail(err, KVS_E_INVALID, "--max-requests %d is less than --max-num-seqs %d", o->max_requests,
                        o->max_num_seqs);
    if (o->max_connections < 1)
        return kvs_fail(err, KVS_E_INVALID, "--max-connections must be positive, got %d", o->max_connections);
    if (o->max_request_bytes < 1024)
        return kvs_fail(err, KVS_E_INVALID, "--max-request-bytes must be at least 1KiB, got %llu",
                        (unsigned long long)o->max_request_bytes);
    if (o->max_structured_seqs < -1 || o->max_structured_seqs > 4096)
        return kvs_fail(err, KVS_E_INVALID, "--max-structured-seqs must be in 0..4096, got %d", o->max_structured_seqs);
    if (o->max_grammar_bytes && (o->max_grammar_bytes < KVS_GPOOL_MIN_ARENA || o->max_grammar_bytes > (1ull << 30)))
        return kvs_fail(err, KVS_E_INVALID, "--max-grammar-bytes must be in 16KiB..1GiB, got %llu",
                        (unsigned long long)o->max_grammar_bytes);
    if (o->http_threads < 0 || o->http_threads > 1024 || (o->http_threads == 0 && o->http_threads_set))
        return kvs_fail(err, KVS_E_INVALID, "--http-threads must be in 1..1024, got %d", o->http_threads);
    if (o->http_body_pool && o->http_body_pool < o->max_request_bytes + 1)
        return kvs_fail(err, KVS_E_INVALID, "--http-body-pool must be larger than --max-request-bytes (it holds the "
                        "bodies being read at once)");
    if (o->http_answer_pool && (o->http_answer_pool < 65536 || o->http_answer_pool > (1ull << 40)))
        return kvs_fail(err, KVS_E_INVALID, "--http-answer-pool must be in 64KiB..1TiB, got %llu",
                        (unsigned long long)o->http_answer_pool);
    const char *dev = o->device ? o->device : "cpu";
    if (o->device_memory > 0 && strcmp(dev, "cpu") == 0) {
        kvs_mem_info host;
        kvs_status st = kvs_cpu_mem_info(0, &host, err);
        if (st != KVS_OK)
            return st;
        if (o->device_memory > host.total)
            return kvs_fail(err, KVS_E_INVALID,
                            "--device-memory %.2f GiB (%llu bytes) is more than this host has: %.2f GiB (%llu "
                            "bytes, MemTotal or the cgroup's memory limit); give at most that",
                            o->device_memory / 1073741824.0, (unsigned long long)o->device_memory,
                            host.total / 1073741824.0, (unsigned long long)host.total);
    }
    return KVS_OK;
}

kvs_status kvs_launch_limits(const kvs_launch_opts *o, const kvs_model_hparams *hp,
                             kvs_runner_limits *lim, kvs_dtype *kv_dtype, kvs_error *err)
{
    if (o->block_size < 1 || o->block_size > 1024)
        return kvs_fail(err, KVS_E_INVALID, "--block-size must be in 1..1024, got %d", o->block_size);
    if (o->max_num_seqs < 1)
        return kvs_fail(err, KVS_E_INVALID, "--max-num-seqs must be positive, got %d", o->max_num_seqs);
    if (o->max_num_batched_tokens < 1 && o->max_num_batched_tokens != -1)
        return kvs_fail(err, KVS_E_INVALID, "--max-num-batched-tokens must be positive, got %d",
                        o->max_num_batched_tokens);
    if (o->max_model_len < -1)
        return kvs_fail(err, KVS_E_INVALID, "--max-model-len must be positive or auto");
    if (o->max_model_len > hp->n_ctx_train && hp->n_ctx_train > 0)
        return kvs_fail(err, KVS_E_INVALID,
                        "--max-model-len %d is longer than the model's context length %d",
                        o->max_model_len, hp->n_ctx_train);
    const char *dt = o->kv_cache_dtype ? o->kv_cache_dtype : "auto";
    if (strcmp(dt, "auto") == 0) {
        *kv_dtype = KVS_DTYPE_F32; /* the CPU backend computes in f32 */
    } else if (!kvs_dtype_parse(dt, kv_dtype) ||
               (*kv_dtype != KVS_DTYPE_F32 && *kv_dtype != KVS_DTYPE_F16 && *kv_dtype != KVS_DTYPE_BF16)) {
        return kvs_fail(err, KVS_E_INVALID, "--kv-cache-dtype must be auto, f32, f16 or bf16, got '%s'", dt);
    }
    /* Profile for the longest length the instance may pick. */
    *lim = (kvs_runner_limits){
        .max_tokens = o->max_num_batched_tokens > 0 ? o->max_num_batched_tokens
                                                    : kvs_launch_default_batched_tokens(o->device),
        .max_seqs = o->max_num_seqs,
        .max_model_len = o->max_model_len > 0 ? o->max_model_len : hp->n_ctx_train,
        .block_size = o->block_size,
    };
    return KVS_OK;
}

static kvs_status open_backend(const kvs_launch_opts *o, kvs_backend **b, kvs_error *err)
{
    if (o->cpu_matmul && strcmp(o->cpu_matmul, "int8") != 0 && strcmp(o->cpu_matmul, "f32") != 0 &&
        strcmp(o->cpu_matmul, "auto") != 0)
        return kvs_fail(err, KVS_E_INVALID, "--cpu-matmul must be auto, int8 or f32, got '%s'", o->cpu_matmul);
    kvs_backend_opts bo = {.device = o->device, .n_threads = o->n_threads, .device_memory = o->device_memory,
                           .cpu_f32_matmul = o->cpu_matmul && strcmp(o->cpu_matmul, "f32") == 0,
                           .cpu_int8_all = o->cpu_matmul && strcmp(o->cpu_matmul, "int8") == 0};
    return kvs_backend_open(b, &bo, err);
}

double kvs_launch_utilization(const kvs_launch_opts *o, bool host_memory, uint64_t total, uint64_t free,
                              bool *lowered)
{
    *lowered = false;
    double u = o->gpu_memory_utilization;
    if (o->gpu_memory_utilization_set || !host_memory || !(u > 0.0 && u <= 1.0))
        return u;
    double fits = kvs_budget_max_free_utilization(total, free);
    if (fits > 0.0 && fits < u) {
        *lowered = true;
        return fits;
    }
    return u;
}

kvs_status kvs_launch_weight_bytes(const kvs_model_source *src, bool use_mmap, uint64_t *out, kvs_error *err)
{
    return kvs_model_source_weight_bytes(src, use_mmap, out, err);
}

/* Loading progress: a bar on a terminal (shards and bytes, rewritten in
 * place), nothing otherwise (the summary line follows the load). */
typedef struct load_progress {
    FILE *f;
    int last_pct;
} load_progress;

static void on_progress(void *ctx, uint64_t done, uint64_t total, uint32_t file, uint32_t n_files)
{
    load_progress *p = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == p->last_pct)
        return;
    p->last_pct = pct;
    bool gib = total >= (1ull << 30);
    double unit = gib ? 1073741824.0 : 1048576.0;
    fprintf(p->f, "\rLoading checkpoint shards: %3d%% | shard %u/%u | %.2f / %.2f %s", pct, file + 1, n_files,
            done / unit, total / unit, gib ? "GiB" : "MiB");
    if (done == total)
        fputc('\n', p->f);
    fflush(p->f);
}

/* Page in a file mapping (--mmap) so that it is resident as the ledger says. */
static void read_pages(const void *p, uint64_t bytes)
{
    const volatile unsigned char *c = p;
    unsigned sum = 0;
    for (uint64_t i = 0; i < bytes; i += 4096)
        sum += c[i];
    (void)sum;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

kvs_status kvs_launch(kvs_instance **out, const kvs_launch_opts *o, kvs_error *err)
{
    *out = NULL;
    kvs_status st;
    double t_start = now_seconds(), t_load0 = 0, t_prof0 = 0, t_prof1 = 0, t_kv0 = 0;
    kvs_model_source *src = NULL;
    /* No --device: the GPU when one is built in and present, else the CPU. */
    kvs_launch_opts resolved = *o;
    if (!resolved.device)
        resolved.device = kvs_backend_default_device();
    o = &resolved;
    kvs_instance *in = calloc(1, sizeof *in);
    if (!in)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    kvs_memory_report *rep = &in->report;
    if ((st = kvs_launch_check_memory_flags(o, err)) != KVS_OK)
        goto fail;

    /* 1: the device: its total, and what others hold. */
    if ((st = open_backend(o, &in->backend, err)) != KVS_OK)
        goto fail;
    kvs_backend *b = in->backend;
    if (o->log)
        fprintf(o->log, "INFO kvserve: device %s (%s backend; memory meter: %s)\n", o->device, b->ops->name,
                b->ops->caps.meter);
    kvs_mem_info m0;
    if ((st = b->ops->mem_info(b, &m0, err)) != KVS_OK)
        goto fail;
    snprintf(rep->device, sizeof rep->device, "%s", b->ops->name);
    rep->total_bytes = m0.total;
    uint64_t mine0 = m0.process_used;
    rep->used_by_others_bytes = m0.total > m0.free + mine0 ? m0.total - m0.free - mine0 : 0;
    uint64_t free0 = m0.total - rep->used_by_others_bytes;
    bool host = kvs_launch_host_is_device(b) && o->device_memory == 0;
    rep->utilization = kvs_launch_utilization(o, host, m0.total, free0, &rep->utilization_lowered);
    if (rep->utilization_lowered && o->warn)
        fprintf(o->warn,
                "WARNING kvserve: %.2f GiB of host memory is used by other processes, so the default "
                "gpu_memory_utilization %.2f does not fit; using %.4f, the largest that fits now (give "
                "--gpu-memory-utilization or --device-memory to choose)\n",
                rep->used_by_others_bytes / 1073741824.0, o->gpu_memory_utilization, rep->utilization);

    /* 2: the budget must be free. */
    if ((st = kvs_budget_check_free(m0.total, free0, rep->used_by_others_bytes, rep->utilization, err)) != KVS_OK)
        goto fail;
    rep->budget_bytes = kvs_budget_bytes(m0.total, rep->utilization);

    /* 3: the header fixes the weights and the activation peak; a split
     * that cannot fit even with no runtime overhead fails before loading. */
    if ((st = kvs_source_open(&src, o->model_path, err)) != KVS_OK)
        goto fail;
    kvs_model_hparams hp0 = src->hp;
    uint64_t weights0;
    kvs_runner_limits lim;
    kvs_dtype kv_dtype;
    if ((st = kvs_launch_weight_bytes(src, o->use_mmap, &weights0, err)) != KVS_OK ||
        (st = kvs_launch_limits(o, &hp0, &lim, &kv_dtype, err)) != KVS_OK)
        goto fail;
    bool host_dev = kvs_launch_host_is_device(b);
    if (!o->kv_cache_dtype || strcmp(o->kv_cache_dtype, "auto") == 0)
        kv_dtype = kvs_launch_auto_kv_dtype(&hp0, host_dev);
    kvs_budget_in bi;
    kvs_budget bud;
    kvs_launch_budget_inputs(o, &hp0, &lim, kv_dtype, host_dev, &bi);
    bi.utilization = rep->utilization;
    bi.total = m0.total;
    bi.free = free0;
    bi.used_by_others = rep->used_by_others_bytes;
    bi.weights = weights0;
    bi.activation_peak = kvs_runner_activation_bytes(&hp0, &lim, b);
    /* The tokenizer is small and fixes the last input of the reserve. */
    if ((st = kvs_source_tokenizer(src, &in->tok, err)) != KVS_OK)
        goto fail;
    kvs_runtime_reserve rr = {0};
    kvs_len_fit fit = {.o = o, .hp = &hp0, .lim = lim, .kv_dtype = kv_dtype, .b = b, .host = host_dev,
                       .granularity = 1};
    if (host_dev) {
        fit.tok_bytes = kvs_launch_tokenizer_reserve(in->tok);
        fit.max_token_bytes = kvs_tok_max_token_bytes(in->tok);
        kvs_launch_runtime_reserve(o, &hp0, &lim, kv_dtype, b, fit.tok_bytes, fit.max_token_bytes, &rr);
    }
    /* The structured-output slots: host memory, so a budget term where the
     * device is the host's memory (a part of the serving reserve). */
    kvs_gpool_limits gl = kvs_launch_gpool_limits(o);
    rep->structured_slots = gl.slots;
    if (host_dev) {
        rep->structured_reserve_bytes = kvs_launch_structured_reserve(&gl, in->tok);
        bi.serving = o->serving_reserve + rep->structured_reserve_bytes;
        fit.structured_bytes = rep->structured_reserve_bytes;
        fit.structured_slots = gl.slots;
    }
    bi.overhead = rr.total;
    if (o->max_model_len == -1) { /* auto: the largest length a start fits, profiled for itself */
        kvs_launch_pick_auto_len(&fit, &bi, &lim);
        if (host_dev)
            kvs_launch_runtime_reserve(o, &hp0, &lim, kv_dtype, b, fit.tok_bytes, fit.max_token_bytes, &rr);
    }
    if ((st = kvs_launch_solve(&fit, &bi, &bud, err)) != KVS_OK)
        goto fail;

    /* 4: the weights. */
    if (src->chat_template && !(in->chat_template = strdup(src->chat_template))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    in->gen_defaults = src->gen;
    load_progress lp = {.f = o->log, .last_pct = -1};
    kvs_model_load_opts lo = {.use_mmap = o->use_mmap};
    if (host_dev)   /* the weights are read by as many threads as the kernels use */
        lo.n_threads = kvs_cpu_backend_threads(b);
    if (o->log && isatty(fileno(o->log))) {
        lo.progress = on_progress;
        lo.progress_ctx = &lp;
    }
    t_load0 = now_seconds();
    if ((st = kvs_model_load_source(&in->model, src, b, &lo, err)) != KVS_OK)
        goto fail;
    const kvs_model_hparams *hp = &in->model->hp;
    rep->load_seconds = in->model->load_seconds;
    for (size_t i = 0; i < in->model->n_maps; i++)
        read_pages(in->model->maps[i], in->model->map_sizes[i]);
    if (o->log)
        fprintf(o->log, "kvserve: loaded %s (%s, %zu tensors, %.2f GiB) from %u %s in %.2f s\n", src->path,
                hp->arch_name, src->n_tensors, kvs_source_data_bytes(src) / 1073741824.0, src->n_files,
                src->kind == KVS_SOURCE_HF ? (src->n_files == 1 ? "safetensors file" : "safetensors shards")
                                           : "GGUF file",
                in->model->load_seconds);
    kvs_source_close(src);
    src = NULL;
    kvs_ledger led;
    kvs_ledger_snapshot(&b->ledger, &led);
    rep->weights_bytes = led.cur[KVS_MEM_WEIGHTS];

    /* 5: the largest step, measured; and the same peak from the shapes. */
    t_prof0 = now_seconds();
    if ((st = kvs_runner_new(&in->runner, in->model, &lim, err)) != KVS_OK)
        goto fail;
    in->runner->profile_mode = o->full_profile ? KVS_PROFILE_FULL : KVS_PROFILE_WALK;
    if ((st = kvs_runner_profile(in->runner, kv_dtype, err)) != KVS_OK)
        goto fail;
    t_prof1 = now_seconds();
    rep->activation_peak_bytes = in->runner->profiled_peak;
    rep->activation_formula_bytes = kvs_runner_activation_bytes(hp, &lim, b);
    if (b->ops->touch)
        b->ops->touch(b, in->runner->arena.fixed.ptr, in->runner->arena.fixed.bytes);

    /* 6: graphs (none on the CPU backend; enforce_eager captures none). */
    rep->graph_bytes = (!o->enforce_eager && b->ops->graph_bytes) ? b->ops->graph_bytes(b) : 0;

    /* The engine's host buffers exist before the measurement, its cache after. */
    kvs_engine_config cfg = kvs_launch_engine_config(o, &lim, kv_dtype);
    if ((st = kvs_engine_new(&in->engine, in->model, in->tok, in->runner, &cfg, err)) != KVS_OK)
        goto fail;

    /* 7: what the device counts for this process beyond the ledger. */
    kvs_mem_info m1;
    if ((st = b->ops->mem_info(b, &m1, err)) != KVS_OK)
        goto fail;
    kvs_ledger_snapshot(&b->ledger, &led);
    uint64_t measured = m1.process_used > led.cur_total ? m1.process_used - led.cur_total : 0;
    rep->overhead_measured_bytes = measured;
    if (host_dev && measured > rr.total) {
        char msg[640];
        snprintf(msg, sizeof msg,
                 "the runtime overhead measured at start-up (%.2f MiB of host memory beyond the ledger; the "
                 "process held %.2f MiB before start-up) does not fit its reserve (%.2f MiB: program %.2f + "
                 "kernel code %.2f + %d threads %.2f + tokenizer %.2f + host buffers %.2f + margin %.2f MiB); "
                 "memory the process held before start-up counts too, else the reserve's constants are off "
                 "(worth reporting); fewer --threads or a smaller --max-num-seqs lower both",
                 measured / 1048576.0, mine0 / 1048576.0, rr.total / 1048576.0, rr.base / 1048576.0,
                 rr.code / 1048576.0, kvs_cpu_backend_threads(b), rr.threads / 1048576.0,
                 rr.tokenizer / 1048576.0, rr.host_buffers / 1048576.0, rr.margin / 1048576.0);
#ifdef KVS_ASAN
        /* The sanitizers keep freed blocks resident (their quarantine): the
         * reading says nothing about kvserve's own memory. */
        if (o->warn)
            fprintf(o->warn, "WARNING kvserve: %s (not enforced under AddressSanitizer)\n", msg);
#else
        st = kvs_fail(err, KVS_E_BUDGET, "%s", msg);
        goto fail;
#endif
    }
    if (!host_dev)
        rr.total = measured; /* a device that counts its own: the reading is the term */

    /* 8: the KV cache gets the rest. */
    bi.weights = rep->weights_bytes;
    bi.activation_peak = rep->activation_peak_bytes;
    bi.graphs = rep->graph_bytes;
    bi.overhead = rr.total;
    if ((st = kvs_launch_solve(&fit, &bi, &bud, err)) != KVS_OK)
        goto fail;
    t_kv0 = now_seconds();
    if ((st = kvs_engine_set_cache(in->engine, bud.num_blocks, bud.max_model_len, err)) != KVS_OK)
        goto fail;
    double t_kv1 = now_seconds();
    /* The structured-output slots: a part of the serving reserve, made
     * (and resident) after the measurement, like the front end's pools. */
    if (gl.slots > 0 && (st = kvs_gpool_new(&in->gpool, in->tok, &gl, err)) != KVS_OK)
        goto fail;
    double t_end = now_seconds();
    rep->startup_seconds = t_end - t_start;
    rep->profile_seconds = t_prof1 - t_prof0;
    rep->full_profile = o->full_profile;
    rep->kv_alloc_seconds = t_kv1 - t_kv0;
    rep->header_seconds = t_load0 - t_start;
    kvs_ledger_snapshot(&b->ledger, &led);
    kvs_launch_fill_report(rep, &bi, &bud);
    rep->overhead_measured_bytes = measured;
    rep->kv_cache_bytes = led.cur[KVS_MEM_KV_CACHE];
    rep->projected_peak_bytes = bud.non_kv + bud.kv_cache_bytes;
    uint64_t rss = 0, hwm = 0;
    rep->peak_process_bytes = host_dev && kvs_host_rss(&rss, &hwm) ? hwm : rep->projected_peak_bytes;
    if (o->log)
        kvs_report_log(rep, o->log);
    *out = in;
    return KVS_OK;
fail:
    kvs_source_close(src);
    kvs_instance_free(in);
    return st;
}

void kvs_instance_free(kvs_instance *in)
{
    if (!in)
        return;
    kvs_engine_free(in->engine);
    kvs_gpool_free(in->gpool); /* after the engine: its requests' matchers go back to it */
    kvs_runner_free(in->runner);
    kvs_model_free(in->model);
    kvs_tok_free(in->tok);
    kvs_backend_destroy(in->backend);
    free(in->chat_template);
    free(in);
}
