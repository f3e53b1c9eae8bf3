/*
 * launch.h - starting an engine: the start-up sequence that makes the
 * memory split exact, and the options it shares with `kvserve plan`.
 *
 *   1. open the device; read its total and free memory (others' use)
 *   2. check that the budget ceil(total * utilization) is free
 *   3. read the model's header: the weights' size and the activation peak
 *      from the shapes; if the split cannot fit even without any runtime
 *      overhead, fail now rather than after loading gigabytes
 *   4. load the weights                      (ledger: weights)
 *   5. profile the largest step              (ledger: activation peak)
 *   6. capture graphs, if the backend has any (graphs; before the KV cache)
 *   7. measure the runtime overhead: the device's count of this process's
 *      memory beyond the ledger, with every host buffer the serving loop
 *      uses already resident
 *   8. solve the budget (memory/budget.h) and allocate the KV cache
 * The result is a ready engine plus the memory report of what was measured.
 *
 * The default utilization: 0.92, as asked.  Only where the device is this
 * host's memory (the CPU backend without --device-memory) and the
 * utilization was not given, a default that is not free now is lowered to
 * the largest that is, with a warning: host memory is shared with every
 * other program, and a start that refuses to run by default helps no one.
 * A utilization given explicitly is never changed.
 */
#ifndef KVS_ENGINE_LAUNCH_H
#define KVS_ENGINE_LAUNCH_H

#include <stdio.h>

#include "backends/backend.h"
#include "engine/engine.h"
#include "memory/budget.h"
#include "memory/report.h"
#include "model/source.h"

typedef struct kvs_launch_opts {
    const char *model_path;
    const char *device;                 /* "cpu", "cuda[:N]"; NULL: kvs_backend_default_device() */
    int n_threads;                      /* 0: all cores */
    uint64_t device_memory;             /* CPU: --device-memory (0: physical / cgroup) */
    double gpu_memory_utilization;      /* default 0.92 */
    bool gpu_memory_utilization_set;    /* given explicitly: never lowered */
    uint64_t kv_cache_memory;           /* 0: from the budget */
    int32_t max_model_len;              /* 0: the model's context; -1: auto (largest that fits) */
    int32_t max_num_seqs;               /* default 256 */
    int32_t max_num_batched_tokens;     /* -1: kvs_launch_default_batched_tokens(device) */
    int32_t block_size;                 /* default 16 */
    const char *kv_cache_dtype;         /* "auto" | "f32" | "f16" | "bf16" */
    bool enforce_eager;
    bool no_prefix_caching;             /* --no-prefix-caching */
    bool use_mmap;
    FILE *log;                          /* start-up lines (NULL: silent) */
    FILE *warn;                         /* warnings (default stderr; NULL: none) */
} kvs_launch_opts;

kvs_launch_opts kvs_launch_defaults(void);
/* --max-num-batched-tokens when not given: 256 on the CPU, 2048 on a GPU. */
int32_t kvs_launch_default_batched_tokens(const char *device);

typedef struct kvs_instance {
    kvs_backend *backend;
    kvs_tokenizer *tok;
    kvs_model_model *model;
    kvs_runner *runner;
    kvs_engine *engine;
    char *chat_template;                /* tokenizer.chat_template, or NULL */
    kvs_gen_defaults gen_defaults;      /* generation_config.json (HF directories) */
    kvs_memory_report report;
} kvs_instance;

kvs_status kvs_launch(kvs_instance **out, const kvs_launch_opts *o, kvs_error *err);
void kvs_instance_free(kvs_instance *inst);

/* The engine limits the options imply for a model (before the budget). */
kvs_status kvs_launch_limits(const kvs_launch_opts *o, const kvs_model_hparams *hp,
                             kvs_runner_limits *lim, kvs_dtype *kv_dtype, kvs_error *err);

/* The budget inputs the options and model fix (everything but the device's
 * figures and the measured terms); shared by start-up and `plan`. */
void kvs_launch_budget_inputs(const kvs_launch_opts *o, const kvs_model_hparams *hp,
                              const kvs_runner_limits *lim, kvs_dtype kv_dtype, bool host_is_device,
                              kvs_budget_in *bi);
/* The utilization a start uses (see above); *lowered when the default was
 * lowered to what is free.  host_memory: the device is this host's memory. */
double kvs_launch_utilization(const kvs_launch_opts *o, bool host_memory, uint64_t total, uint64_t free,
                              bool *lowered);
/* Bytes the ledger will hold for the weights once loaded: the tensors
 * (kvs_model_weight_bytes), or with --mmap the mapped file plus f32 copies
 * of norm vectors stored in another type. */
kvs_status kvs_launch_weight_bytes(const kvs_model_source *src, bool use_mmap, uint64_t *out, kvs_error *err);
/* Copy the solved budget into a report. */
void kvs_launch_fill_report(kvs_memory_report *rep, const kvs_budget_in *bi, const kvs_budget *bud);
/* True where the backend's device memory is this host's memory (CPU). */
bool kvs_launch_host_is_device(const kvs_backend *b);
/* The KV-cache dtype `--kv-cache-dtype auto` means: f32 where the device is
 * host memory (the CPU computes in f32), else bf16 for bf16 weights and f16
 * otherwise.  plan and a start use this one rule. */
kvs_dtype kvs_launch_auto_kv_dtype(const kvs_model_hparams *hp, bool host_memory);

#endif
