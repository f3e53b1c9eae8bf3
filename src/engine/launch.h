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
 *      uses already resident, and check that it fits the runtime reserve
 *   8. solve the budget (memory/budget.h) and allocate the KV cache
 *
 * The runtime overhead in the budget is a reserve computed from known
 * sizes, never the noisy reading itself, so that the KV cache is a
 * function of the model header, the flags and the device's total alone:
 * `plan` and every start of the same settings give the same block count.
 * On the CPU (kvs_launch_runtime_reserve):
 *
 *   reserve = program, libraries and C runtime   (a calibrated constant)
 *           + kernel code paged in by the first steps (a constant)
 *           + per worker thread: its stack and scratch
 *           + the tokenizer's tables               (from the vocabulary's size)
 *           + the runner's and engine's host buffers, the request pool
 *                                                  (exact, from the limits)
 *           + 1/32 of the above as margin
 *
 * A start measures the real overhead (RSS beyond the ledger) and fails,
 * naming both figures, if it does not fit.  The serving reserve (the
 * front end and the serving pools, engine_loop.h) is the caller's figure
 * (serving_reserve), its own term.  On a GPU profile the runtime reserve
 * is the CUDA context and library handles, as measured.
 *
 * Step 3 now knows every term but the measured ones, which equal the
 * header's (weights, activation peak): the split is solved exactly before
 * any weight is loaded, and its advice is the same as `plan`'s.
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
#include "grammar/gpool.h"
#include "memory/budget.h"
#include "memory/report.h"
#include "model/source.h"

typedef struct kvs_launch_opts {
    const char *model_path;
    const char *device;                 /* "cpu", "cuda[:N]"; NULL: kvs_backend_default_device() */
    int n_threads;                      /* 0: all cores */
    uint64_t device_memory;             /* CPU: --device-memory (0: physical / cgroup) */
    bool device_memory_set;             /* given: then 0 is an error, not "unset" */
    double gpu_memory_utilization;      /* default 0.92 */
    bool gpu_memory_utilization_set;    /* given explicitly: never lowered */
    uint64_t kv_cache_memory;           /* 0: from the budget */
    bool kv_cache_memory_set;           /* given: then 0 is an error */
    int32_t max_model_len;              /* 0: the model's context; -1: auto (largest that fits) */
    int32_t max_num_seqs;               /* default 256 (the CLI's generate -p: 1) */
    bool max_num_seqs_set;              /*   given explicitly */
    int32_t max_num_batched_tokens;     /* -1: kvs_launch_default_batched_tokens(device) */
    int32_t block_size;                 /* default 16 */
    const char *kv_cache_dtype;         /* "auto" | "f32" | "f16" | "bf16" */
    const char *cpu_matmul;             /* CPU, quantized weights: "auto" (default: 8-bit activations, q8_0
                                           only with VNNI) | "int8" (q8_0 too) | "f32" */
    bool enforce_eager;
    bool full_profile;                  /* profile the largest step with its arithmetic (runner.h) */
    bool no_prefix_caching;             /* --no-prefix-caching */
    bool use_mmap;
    int32_t max_requests;               /* engine request slots (running + waiting); 0: default */
    int32_t max_connections;            /* serving limits (the server layer sizes serving_reserve */
    uint64_t max_request_bytes;         /*   from them): --max-connections, --max-request-bytes */
    int32_t http_threads;               /*   --http-threads (0: default) */
    bool http_threads_set;              /*   given: then 0 is an error */
    uint64_t http_body_pool;            /*   --http-body-pool (0: default) */
    uint64_t http_answer_pool;          /*   --http-answer-pool (0: default) */
    uint64_t serving_reserve;           /* bytes of the serving reserve (0: none, e.g. a library user),
                                           not counting the structured-output slots, which a start
                                           adds (they need the vocabulary): */
    int32_t max_structured_seqs;        /* --max-structured-seqs: matchers (-1: min(max_num_seqs, 8);
                                           0: structured output off) */
    uint64_t max_grammar_bytes;         /* --max-grammar-bytes: a request's compile arena (0: 512 KiB) */
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
    kvs_gpool *gpool;                   /* the structured-output slots (NULL: off) */
    kvs_memory_report report;
} kvs_instance;

/* The structured-output slots for these options (slots 0: none): as
 * given, or by default min(--max-num-seqs, 8).  A function of the flags
 * alone (never of the budget), so that following a fit error's advice
 * leaves the serving reserve as it was. */
kvs_gpool_limits kvs_launch_gpool_limits(const kvs_launch_opts *o);
/* Their bytes: a part of the serving reserve. */
uint64_t kvs_launch_structured_reserve(const kvs_gpool_limits *l, const kvs_tokenizer *t);

kvs_status kvs_launch(kvs_instance **out, const kvs_launch_opts *o, kvs_error *err);
void kvs_instance_free(kvs_instance *inst);

/* Check the memory flags: --device-memory and --kv-cache-memory given as 0
 * are errors (not "unset"), a --device-memory larger than the host's
 * memory is refused naming it, and the serving limits must be positive.
 * Start-up and `plan` both call it. */
kvs_status kvs_launch_check_memory_flags(const kvs_launch_opts *o, kvs_error *err);

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

/* The engine config a start builds for these options and limits. */
kvs_engine_config kvs_launch_engine_config(const kvs_launch_opts *o, const kvs_runner_limits *lim,
                                           kvs_dtype kv_dtype);

/* The CPU runtime reserve's parts (see above). */
typedef struct kvs_runtime_reserve {
    uint64_t base, code, threads, tokenizer, host_buffers, margin, total;
} kvs_runtime_reserve;
/* The tokenizer's tables for the model's vocabulary (an upper bound from
 * the counts and bytes of its pieces and merges; the same for a GGUF and a
 * tokenizer.json). */
uint64_t kvs_launch_tokenizer_reserve(const kvs_tokenizer *t);
/* The reserve for a CPU backend b, model hp and these options; tok_bytes
 * from kvs_launch_tokenizer_reserve, max_token_bytes from the tokenizer. */
void kvs_launch_runtime_reserve(const kvs_launch_opts *o, const kvs_model_hparams *hp, const kvs_runner_limits *lim,
                                kvs_dtype kv_dtype, const kvs_backend *b, uint64_t tok_bytes,
                                size_t max_token_bytes, kvs_runtime_reserve *out);

/* Solving at another --max-model-len: a start with that length profiles
 * for it and sizes its reserve for it, so the KV cache it gets differs.
 * kvs_launch_largest_len finds the largest length a start fits, which is
 * what the fit error suggests and what --max-model-len auto picks. */
typedef struct kvs_len_fit {
    const kvs_launch_opts *o;
    const kvs_model_hparams *hp;
    kvs_runner_limits lim;       /* as for the asked length */
    kvs_dtype kv_dtype;
    const kvs_backend *b;        /* for the activation formula and the threads */
    kvs_budget_in bi;            /* every other input */
    uint64_t tok_bytes;          /* kvs_launch_tokenizer_reserve */
    size_t max_token_bytes;
    uint64_t structured_bytes;   /* of bi.serving: the structured-output slots (named by a fit error) */
    int32_t structured_slots;
    bool host;                   /* CPU: the runtime reserve follows the length */
    uint64_t granularity;        /* GPU profiles: activations round to this (else 1) */
} kvs_len_fit;
/* Solve as a start with --max-model-len len would; false if it does not fit. */
bool kvs_launch_solve_at_len(const kvs_len_fit *f, int32_t len, kvs_budget *bud);
/* The largest len <= limit (<= 0: the model's context) that fits; 0 if none. */
int32_t kvs_launch_largest_len(const kvs_len_fit *f, int32_t limit);
/* kvs_budget_solve, but a max_model_len that does not fit is answered
 * with the largest length a start fits (f->bi is overwritten). */
kvs_status kvs_launch_solve(kvs_len_fit *f, kvs_budget_in *bi, kvs_budget *bud, kvs_error *err);
/* --max-model-len auto: set lim and bi to the largest length that fits
 * (with its own activation peak and reserve); unchanged if none does. */
void kvs_launch_pick_auto_len(kvs_len_fit *f, kvs_budget_in *bi, kvs_runner_limits *lim);

#endif
