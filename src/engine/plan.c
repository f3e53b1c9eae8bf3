#include "engine/plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu_backend.h"
#include "memory/devices.h"

/* Graph memory estimate for a GPU profile: kernels per decode step times
 * captured sizes, at the measured bytes per 1000 nodes. */
static uint64_t graph_estimate(const kvs_device_profile *d, const kvs_model_hparams *hp, int32_t n_sizes)
{
    uint64_t nodes_per_graph = 14ull * (uint64_t)hp->n_layers + 6;
    uint64_t nodes = nodes_per_graph * (uint64_t)n_sizes;
    uint64_t per_1k = d->graph_bytes_per_1k_nodes;
    return d->graph_base_bytes + (nodes + 999) / 1000 * per_1k;
}

static uint64_t round_up(uint64_t x, uint64_t g) { return g ? (x + g - 1) / g * g : x; }

/* The runtime reserve is computed (kvs_launch_runtime_reserve), exactly as
 * a start computes it.  Beside it, `plan` estimates what a start will
 * measure (overhead_measured_bytes, marked an estimate): the same host
 * structures are built here for real (on a model shell without weights),
 * so that this process's resident memory is the start's, but for what
 * only loading and running the kernels touches: the matmul scratch
 * (known) and the pages of code and thread stacks they run
 * (KVS_PLAN_CPU_CODE_BYTES, calibrated: measured 0.3 to 0.5 MiB on x86-64
 * release builds, about 0.7 MiB with AddressSanitizer). */
#define KVS_PLAN_CPU_CODE_BYTES (448ull * 1024)

static kvs_status cpu_overhead(const kvs_launch_opts *lo, const kvs_model_hparams *hp,
                               const kvs_runner_limits *lim, kvs_dtype kv_dtype, kvs_tokenizer *tok,
                               kvs_backend *b, uint64_t *out, kvs_error *err)
{
    kvs_status st;
    kvs_runner *r = NULL;
    kvs_engine *e = NULL;
    kvs_model_model *m = calloc(1, sizeof *m);
    if (!m || !(m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    m->hp = *hp;
    m->backend = b;
    kvs_engine_config cfg = kvs_launch_engine_config(lo, lim, kv_dtype);
    if ((st = kvs_runner_new(&r, m, lim, err)) != KVS_OK ||
        (st = kvs_engine_new(&e, m, tok, r, &cfg, err)) != KVS_OK)
        goto done;
    kvs_mem_info mi;
    if ((st = b->ops->mem_info(b, &mi, err)) != KVS_OK)
        goto done;
    *out = mi.process_used + kvs_cpu_backend_overhead_bytes(b) + KVS_PLAN_CPU_CODE_BYTES;
done:
    kvs_engine_free(e);
    kvs_runner_free(r);
    if (m)
        free(m->layers);
    free(m);
    return st;
}

typedef struct plan_ctx {
    kvs_len_fit fit;              /* everything a start with another length would redo */
    kvs_model_hparams hp;
} plan_ctx;

static bool solve_at_len(const plan_ctx *c, int32_t len, kvs_budget *bud)
{
    return kvs_launch_solve_at_len(&c->fit, len, bud);
}

/* The inverse questions for C requests of the plan's max_model_len tokens:
 * the smallest utilization that holds them, and at the given utilization
 * the largest max_model_len that still holds C of them. */
static void solve_inverse(const plan_ctx *c, double conc, const kvs_budget *bud, kvs_plan_result *out)
{
    out->has_target = true;
    const kvs_budget_in *bi = &c->fit.bi;
    double tokens = conc * (double)bud->max_model_len;
    uint64_t blocks = (uint64_t)ceil(tokens / bi->block_size);
    uint64_t need = bi->weights + bi->activation_peak + bi->graphs + bi->overhead + bi->serving +
                    blocks * (bi->block_bytes + bi->overhead_per_block);
    double u = ceil((double)need / (double)bi->total * 10000.0) / 10000.0;
    while (u <= 1.0 && kvs_budget_bytes(bi->total, u) < need)
        u += 0.0001;
    out->min_utilization = u;
    /* fits(len) falls as len grows: binary search the last length that fits. */
    int32_t lo = 0, hi = c->hp.n_ctx_train > 0 ? c->hp.n_ctx_train : INT32_MAX / 2;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo + 1) / 2;
        kvs_budget t;
        if (solve_at_len(c, mid, &t) && (double)t.kv_cache_tokens >= conc * (double)mid)
            lo = mid;
        else
            hi = mid - 1;
    }
    out->max_len_at_util = lo;
}

kvs_status kvs_plan(const kvs_plan_opts *o, kvs_plan_result *out, kvs_error *err)
{
    memset(out, 0, sizeof *out);
    const kvs_launch_opts *lo = &o->launch;
    kvs_memory_report *rep = &out->report;
    kvs_status st;
    kvs_model_source *src = NULL;
    kvs_tokenizer *tok = NULL;
    kvs_backend *b = NULL;
    const char *dev = lo->device ? lo->device : "cpu";
    const kvs_device_profile *gpu = NULL;
    if (strcmp(dev, "cpu") != 0) {
        gpu = kvs_device_find(strcmp(dev, "cuda") == 0 ? "h100" : dev);
        if (!gpu)
            return kvs_fail(err, KVS_E_INVALID, "unknown device '%s' (known: %s)", dev, kvs_device_names());
    }
    if ((st = kvs_launch_check_memory_flags(lo, err)) != KVS_OK)
        return st;
    if ((st = kvs_source_open(&src, lo->model_path, err)) != KVS_OK)
        goto done;
    kvs_model_hparams hp = src->hp;
    uint64_t weights;
    if ((st = kvs_launch_weight_bytes(src, lo->use_mmap && !gpu, &weights, err)) != KVS_OK)
        goto done;
    kvs_runner_limits lim;
    kvs_dtype kv_dtype;
    if ((st = kvs_launch_limits(lo, &hp, &lim, &kv_dtype, err)) != KVS_OK)
        goto done;
    if (gpu && (!lo->kv_cache_dtype || strcmp(lo->kv_cache_dtype, "auto") == 0))
        kv_dtype = kvs_launch_auto_kv_dtype(&hp, false);

    kvs_budget_in bi;
    kvs_launch_budget_inputs(lo, &hp, &lim, kv_dtype, gpu == NULL, &bi);
    bi.utilization = lo->gpu_memory_utilization;
    bi.weights = weights;
    uint64_t granularity = 1, tok_bytes = 0;
    size_t max_token_bytes = 0;
    if (gpu) {
        snprintf(rep->device, sizeof rep->device, "%s (%s)", gpu->name, gpu->full_name);
        rep->estimate = true;
        rep->overhead_estimate = true;
        bi.total = bi.free = gpu->total_bytes;
        /* weights and activations are cudaMalloc'ed: rounded to the granularity */
        granularity = gpu->alloc_granularity;
        bi.weights = round_up(weights, granularity);
        kvs_cpu_options co = {.n_threads = 1, .device_memory = 1};
        if ((st = kvs_cpu_backend_new(&b, &co, err)) != KVS_OK)
            goto done;
        /* The CUDA kernels need no attention scratch: the formula with a
         * one-thread CPU backend's scratch is an upper bound of a few MiB. */
        bi.activation_peak = round_up(kvs_runner_activation_bytes(&hp, &lim, b), gpu->alloc_granularity);
        bi.graphs = lo->enforce_eager ? 0
                                      : graph_estimate(gpu, &hp, o->n_cuda_graph_sizes > 0 ? o->n_cuda_graph_sizes : 67);
        bi.overhead = gpu->context_bytes + gpu->cublas_bytes;
        rep->structured_slots = kvs_launch_gpool_limits(lo).slots; /* host memory: not a device term */
        rep->overhead_measured_bytes = bi.overhead;
    } else {
        kvs_cpu_options co = {.n_threads = lo->n_threads, .device_memory = lo->device_memory};
        if ((st = kvs_cpu_backend_new(&b, &co, err)) != KVS_OK)
            goto done;
        kvs_mem_info mi;
        if ((st = b->ops->mem_info(b, &mi, err)) != KVS_OK)
            goto done;
        snprintf(rep->device, sizeof rep->device, "%s", b->ops->name);
        rep->overhead_estimate = true;
        bi.total = mi.total;
        bi.used_by_others = mi.total > mi.free + mi.process_used ? mi.total - mi.free - mi.process_used : 0;
        bi.free = mi.total - bi.used_by_others;
        bool host = lo->device_memory == 0;
        bi.utilization = kvs_launch_utilization(lo, host, bi.total, bi.free, &rep->utilization_lowered);
        if (rep->utilization_lowered && lo->warn)
            fprintf(lo->warn,
                    "WARNING kvserve: %.2f GiB of host memory is used by other processes, so the default "
                    "gpu_memory_utilization %.2f does not fit; planning with %.4f, the largest that fits now\n",
                    bi.used_by_others / 1073741824.0, lo->gpu_memory_utilization, bi.utilization);
        bi.activation_peak = kvs_runner_activation_bytes(&hp, &lim, b);
        bi.graphs = 0;
        if ((st = kvs_source_tokenizer(src, &tok, err)) != KVS_OK)
            goto done;
        kvs_runtime_reserve rr;
        tok_bytes = kvs_launch_tokenizer_reserve(tok);
        max_token_bytes = kvs_tok_max_token_bytes(tok);
        kvs_launch_runtime_reserve(lo, &hp, &lim, kv_dtype, b, tok_bytes, max_token_bytes, &rr);
        bi.overhead = rr.total;
        kvs_gpool_limits gl = kvs_launch_gpool_limits(lo);
        rep->structured_slots = gl.slots;
        rep->structured_reserve_bytes = kvs_launch_structured_reserve(&gl, tok);
        bi.serving = lo->serving_reserve + rep->structured_reserve_bytes;
        kvs_source_close(src);
        src = NULL;
        if ((st = cpu_overhead(lo, &hp, &lim, kv_dtype, tok, b, &rep->overhead_measured_bytes, err)) != KVS_OK)
            goto done;
    }
    kvs_len_fit fit = {.o = lo, .hp = &hp, .lim = lim, .kv_dtype = kv_dtype, .b = b, .bi = bi,
                       .tok_bytes = tok_bytes, .max_token_bytes = max_token_bytes, .host = !gpu,
                       .granularity = granularity, .structured_bytes = rep->structured_reserve_bytes,
                       .structured_slots = rep->structured_slots};
    if (lo->max_model_len == -1) /* auto: as a start picks it */
        kvs_launch_pick_auto_len(&fit, &bi, &lim);
    rep->activation_formula_bytes = bi.activation_peak;
    kvs_budget bud;
    if ((st = kvs_launch_solve(&fit, &bi, &bud, err)) != KVS_OK)
        goto done;
    kvs_launch_fill_report(rep, &bi, &bud);
    rep->projected_peak_bytes = bud.non_kv + bud.kv_cache_bytes;
    rep->peak_process_bytes = rep->projected_peak_bytes; /* a plan observes nothing: the projection */
    if (o->target_concurrency > 0.0) {
        fit.bi = bi;
        fit.lim = lim;
        plan_ctx c = {.fit = fit, .hp = hp};
        solve_inverse(&c, o->target_concurrency, &bud, out);
    }
done:
    kvs_tok_free(tok);
    kvs_backend_destroy(b);
    kvs_source_close(src);
    return st;
}
