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

typedef struct kvs_runner {
    kvs_model_model *model;
    kvs_backend *backend;
    kvs_runner_limits lim;
    int32_t max_blocks;           /* per sequence: ceil(max_model_len / block_size) */
    int32_t max_logits;           /* min(max_seqs, max_tokens) */
    kvs_arena arena;
    int32_t *slots;               /* host staging [max_tokens] */
    float *logits;                /* host [max_logits][n_vocab]: the last step's logits */
    uint64_t profiled_peak;       /* measured activation peak (bytes) */
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
 * block_size), measure the activation peak, and fix the arena at it. */
kvs_status kvs_runner_profile(kvs_runner *r, kvs_dtype kv_dtype, kvs_error *err);

/* Run one step.  kv holds n_layers views.  On success r->logits holds
 * batch->n_logits rows of n_vocab floats, in the order of logit_rows. */
kvs_status kvs_runner_forward(kvs_runner *r, const kvs_batch *batch, const kvs_kv_view *kv,
                              kvs_error *err);

#endif
