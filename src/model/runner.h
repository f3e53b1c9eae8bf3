/*
 * runner.h - the model runner: one batched forward step of a model of any
 * family in the architecture table (model/arch.h) over the paged KV cache.
 *
 * A step is a flat list of tokens from several sequences at once: prefill
 * chunks and single decode tokens mixed freely (there are no phases).  Each
 * token carries its sequence and position; its key and value are written
 * to the cache slot its sequence's block table gives for that position,
 * then it attends to positions 0..pos of its sequence.  Logits are
 * computed only for the rows the caller asks for (typically the last token
 * of each sequence that will sample).
 *
 * Activation memory comes from an arena (model/arena.h).  A new runner
 * is in PROFILE mode: kvs_runner_profile() runs one step at the largest
 * shape the limits allow, reads the measured peak from the ledger, and
 * fixes the arena at that size, after which steps allocate nothing.
 * kvs_runner_activation_bytes() computes the same peak from the shapes
 * alone (what `kvserve plan` uses).
 *
 * The arithmetic of that step is not needed for the measurement: the
 * allocations a step takes, and every scratch size the backend is asked
 * for, depend on the shapes only, never on the values.  So the step is
 * written once, and a flag says which kernels run (the layers up to some
 * count, the embedding and the head); everything else is done either way.
 * The default profile (KVS_PROFILE_WALK) walks the largest step with no
 * kernel (every allocation, through the ledger, in the same order: the
 * same peak, byte for byte), then runs one small real step (a few tokens
 * through the first layer) inside the fixed arena, so that the kernels'
 * code, thread stacks and per-thread scratch are resident before start-up
 * measures its runtime overhead, as after a full step.  On the 1B shape it
 * costs milliseconds where the full step took seconds.  KVS_PROFILE_FULL
 * runs the whole step (kvserve --full-profile); tests/test_runner_profile.c
 * checks the two equal (peak, allocation count and sizes in order, arena
 * high-water) over many models and limits.
 */
#ifndef KVS_MODEL_RUNNER_H
#define KVS_MODEL_RUNNER_H

#include "model/arena.h"
#include "model/model.h"

typedef struct kvs_runner_limits {
    int32_t max_tokens;     /* tokens in one step (--max-num-batched-tokens) */
    int32_t max_seqs;       /* sequences in one step (--max-num-seqs) */
    int32_t max_model_len;  /* longest sequence, prompt + output */
    int32_t block_size;     /* tokens per KV block */
} kvs_runner_limits;

/* One step.  Host pointers. */
typedef struct kvs_batch {
    int32_t n_tokens;
    int32_t n_seqs;
    const int32_t *tokens;        /* [n_tokens] */
    const int32_t *pos;           /* [n_tokens] */
    const int32_t *seq;           /* [n_tokens] in 0..n_seqs-1 */
    const int32_t *block_tables;  /* [n_seqs][max_blocks] (max_blocks from the limits) */
    int32_t n_logits;
    const int32_t *logit_rows;    /* [n_logits] token indices whose logits are wanted */
} kvs_batch;

typedef enum kvs_profile_mode {
    KVS_PROFILE_WALK = 0,   /* the allocations of the largest step without its arithmetic (default) */
    KVS_PROFILE_FULL,       /* the largest step, computed */
} kvs_profile_mode;

/* Tokens of the small real step that follows a walk. */
#define KVS_PROFILE_WARMUP_TOKENS 16

typedef struct kvs_runner {
    kvs_model_model *model;
    kvs_backend *backend;
    kvs_runner_limits lim;
    int32_t max_blocks;           /* per sequence: ceil(max_model_len / block_size) */
    int32_t max_logits;           /* min(max_seqs, max_tokens) */
    kvs_arena arena;
    int32_t *slots;               /* host staging [max_tokens] */
    float *logits;                /* host [max_logits][n_vocab]: the last step's logits */
    kvs_profile_mode profile_mode; /* set before kvs_runner_profile (default: walk) */
    uint64_t profiled_peak;       /* measured activation peak (bytes) */
    uint64_t profile_allocs;      /* the profiled step's arena allocations, */
    uint64_t profile_trace;       /*   the hash of their sizes in order (arena.h), */
    uint64_t profile_high_water;  /*   and the arena's high-water mark */
} kvs_runner;

kvs_status kvs_runner_new(kvs_runner **out, kvs_model_model *m, const kvs_runner_limits *lim,
                          kvs_error *err);
void kvs_runner_free(kvs_runner *r);

/* Peak activation bytes of the largest step, from the shapes alone. */
uint64_t kvs_runner_activation_bytes(const kvs_model_hparams *hp, const kvs_runner_limits *lim,
                                     kvs_backend *b);

/* Host memory the runner keeps (staging and logits). */
uint64_t kvs_runner_host_bytes(const kvs_model_hparams *hp, const kvs_runner_limits *lim);

/* Run the largest step against a one-block dummy cache of layout (kv_dtype,
 * block_size), measure the activation peak, and fix the arena at it
 * (r->profile_mode: walked or computed; the same figures either way). */
kvs_status kvs_runner_profile(kvs_runner *r, kvs_dtype kv_dtype, kvs_error *err);

/* Run one step.  kv holds n_layers views.  On success r->logits holds
 * batch->n_logits rows of n_vocab floats, in the order of logit_rows. */
kvs_status kvs_runner_forward(kvs_runner *r, const kvs_batch *batch, const kvs_kv_view *kv,
                              kvs_error *err);

#endif
