#include "engine/launch.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/registry.h"
#include "model/source.h"
#include "engine/block_pool.h"
#include "engine/kv_cache.h"

bool kvs_launch_host_is_device(const kvs_backend *b) { return b->ops->caps.host_memory; }

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
    };
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
    kvs_backend_opts bo = {.device = o->device, .n_threads = o->n_threads, .device_memory = o->device_memory};
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

kvs_status kvs_launch(kvs_instance **out, const kvs_launch_opts *o, kvs_error *err)
{
    *out = NULL;
    kvs_status st;
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
    if (!o->kv_cache_dtype || strcmp(o->kv_cache_dtype, "auto") == 0)
        kv_dtype = kvs_launch_auto_kv_dtype(&hp0, kvs_launch_host_is_device(b));
    kvs_budget_in bi;
    kvs_budget bud;
    kvs_launch_budget_inputs(o, &hp0, &lim, kv_dtype, kvs_launch_host_is_device(b), &bi);
    bi.utilization = rep->utilization;
    bi.total = m0.total;
    bi.free = free0;
    bi.used_by_others = rep->used_by_others_bytes;
    bi.weights = weights0;
    bi.activation_peak = kvs_runner_activation_bytes(&hp0, &lim, b);
    bi.overhead_unknown = true;
    if ((st = kvs_budget_solve(&bi, &bud, err)) != KVS_OK)
        goto fail;
    bi.overhead_unknown = false;

    /* 4: the weights. */
    if ((st = kvs_source_tokenizer(src, &in->tok, err)) != KVS_OK)
        goto fail;
    if (src->chat_template && !(in->chat_template = strdup(src->chat_template))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    in->gen_defaults = src->gen;
    load_progress lp = {.f = o->log, .last_pct = -1};
    kvs_model_load_opts lo = {.use_mmap = o->use_mmap};
    if (o->log && isatty(fileno(o->log))) {
        lo.progress = on_progress;
        lo.progress_ctx = &lp;
    }
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
    if ((st = kvs_runner_new(&in->runner, in->model, &lim, err)) != KVS_OK ||
        (st = kvs_runner_profile(in->runner, kv_dtype, err)) != KVS_OK)
        goto fail;
    rep->activation_peak_bytes = in->runner->profiled_peak;
    rep->activation_formula_bytes = kvs_runner_activation_bytes(hp, &lim, b);
    if (b->ops->touch)
        b->ops->touch(b, in->runner->arena.fixed.ptr, in->runner->arena.fixed.bytes);

    /* 6: graphs (none on the CPU backend; enforce_eager captures none). */
    rep->graph_bytes = (!o->enforce_eager && b->ops->graph_bytes) ? b->ops->graph_bytes(b) : 0;

    /* The engine's host buffers exist before the measurement, its cache after. */
    kvs_engine_config cfg = {
        .max_num_seqs = o->max_num_seqs, .max_num_batched_tokens = lim.max_tokens,
        .max_model_len = lim.max_model_len, .block_size = o->block_size, .num_blocks = 0,
        .kv_dtype = kv_dtype, .prefix_caching = !o->no_prefix_caching,
    };
    if ((st = kvs_engine_new(&in->engine, in->model, in->tok, in->runner, &cfg, err)) != KVS_OK)
        goto fail;

    /* 7: what the device counts for this process beyond the ledger. */
    kvs_mem_info m1;
    if ((st = b->ops->mem_info(b, &m1, err)) != KVS_OK)
        goto fail;
    kvs_ledger_snapshot(&b->ledger, &led);
    uint64_t overhead = m1.process_used > led.cur_total ? m1.process_used - led.cur_total : 0;

    /* 8: the KV cache gets the rest. */
    bi.weights = rep->weights_bytes;
    bi.activation_peak = rep->activation_peak_bytes;
    bi.graphs = rep->graph_bytes;
    bi.overhead = overhead;
    if ((st = kvs_budget_solve(&bi, &bud, err)) != KVS_OK)
        goto fail;
    if ((st = kvs_engine_set_cache(in->engine, bud.num_blocks, bud.max_model_len, err)) != KVS_OK)
        goto fail;
    kvs_ledger_snapshot(&b->ledger, &led);
    kvs_launch_fill_report(rep, &bi, &bud);
    rep->kv_cache_bytes = led.cur[KVS_MEM_KV_CACHE];
    rep->peak_process_bytes = led.peak_total + rep->overhead_bytes;
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
    kvs_runner_free(in->runner);
    kvs_model_free(in->model);
    kvs_tok_free(in->tok);
    kvs_backend_destroy(in->backend);
    free(in->chat_template);
    free(in);
}
