/*
 * backend.h - a device that holds tensors and runs the model's kernels.
 *
 * A backend is a small table of function pointers (kvs_backend_ops) plus
 * its private state, in the manner of ggml's backends.  The model code in
 * model/ is written once against this table; the CPU backend
 * (backends/cpu) is the first implementation and the default, the CUDA
 * backend (backends/cuda) plugs into the same table.  Callers never ask a
 * backend for its name to decide what it can do: they read its
 * capabilities (kvs_backend_caps), and backends/registry.h opens one by
 * the name a user gives (--device cpu|cuda[:N]).
 *
 * Memory: every device buffer is taken with kvs_backend_alloc(), which
 * records it in the backend's ledger (memory/ledger.h) under a tag.  No
 * kernel allocates: scratch space comes from the caller (the model's
 * activation arena), so a forward step allocates nothing.
 *
 * Pointers passed to kernels are device pointers.  Activations are f32;
 * weights may be any computable dtype.  Kernels return nothing: a backend
 * that can fail asynchronously reports it from synchronize().
 *
 * The paged KV cache of one layer is two pools, K and V, each laid out
 *     [n_blocks][n_kv_heads][block_size][head_dim]
 * so that one head's keys within a block are contiguous.  A token's cache
 * slot is block * block_size + offset; a sequence's blocks are listed in
 * its row of the block table.
 */
#ifndef KVS_BACKENDS_BACKEND_H
#define KVS_BACKENDS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"
#include "memory/ledger.h"

typedef struct kvs_backend kvs_backend;

/* What the device says about its memory. */
typedef struct kvs_mem_info {
    uint64_t total;          /* device capacity (CPU: physical, cgroup limit, or --device-memory) */
    uint64_t free;           /* free now, as the device reports it */
    uint64_t process_used;   /* used by this process on the device (CPU: resident set) */
} kvs_mem_info;

/* One device buffer as the ledger knows it. */
typedef struct kvs_dbuf {
    void *ptr;
    uint64_t bytes;
    kvs_mem_tag tag;
} kvs_dbuf;

/* One layer's view of the paged KV cache. */
typedef struct kvs_kv_view {
    void *k;                 /* [n_blocks][n_kv_heads][block_size][head_dim] of dtype */
    void *v;                 /* same layout */
    kvs_dtype dtype;         /* F32, F16 or BF16 */
    int32_t block_size;
    int32_t n_kv_heads;
    int32_t head_dim;
} kvs_kv_view;

/* Where each token of a step sits and what it attends to (device pointers). */
typedef struct kvs_attn_meta {
    int32_t n_tokens;
    const int32_t *tok_seq;       /* [n_tokens] row of block_tables this token belongs to */
    const int32_t *tok_pos;       /* [n_tokens] position; attends to positions 0..pos of its sequence */
    const int32_t *slots;         /* [n_tokens] cache slot its k/v are written to */
    const int32_t *block_tables;  /* [n_seqs][max_blocks] block ids, -1 past the end */
    int32_t max_blocks;
    int32_t max_ctx;              /* max over tokens of pos + 1 (sizes scratch) */
    int32_t window;               /* > 0: a token sees only positions pos - window + 1 .. pos */
    float softcap;                /* > 0: scores become softcap * tanh(score / softcap) */
} kvs_attn_meta;

/* What a backend declares about itself, so that no caller compares names. */
typedef struct kvs_backend_caps {
    bool host_memory;        /* device pointers are host pointers: the engine may read them
                                directly, mmap'ed weights can be used in place, and the
                                process's resident set is the device meter */
    bool graphs;             /* can capture and replay execution graphs (graph_bytes is set) */
    kvs_dtype act_dtype;     /* what activations are computed in (the interface passes f32) */
    uint64_t kv_dtypes;      /* KV-cache dtypes kv_store/attention accept: bit (1 << dtype id) */
    uint64_t weight_dtypes;  /* weight dtypes matmul/get_rows compute with: bit (1 << dtype id);
                                0: every type kvs_dtype_computable() names */
    const char *meter;       /* how mem_info's process_used is measured, for the log */
    bool attn_window;        /* attention honors kvs_attn_meta.window and .softcap */
} kvs_backend_caps;

#define KVS_DTYPE_BIT(t) (1ull << (unsigned)(t))

typedef struct kvs_backend_ops {
    const char *name;                                        /* "cpu", "cuda": for messages only */
    kvs_backend_caps caps;
    void (*destroy)(kvs_backend *b);

    /* --- memory --- */
    kvs_status (*mem_info)(kvs_backend *b, kvs_mem_info *out, kvs_error *err);
    void *(*raw_alloc)(kvs_backend *b, size_t bytes);         /* NULL on failure */
    void (*raw_free)(kvs_backend *b, void *p, size_t bytes);
    void (*to_device)(kvs_backend *b, void *dst, const void *src, size_t n);
    void (*to_host)(kvs_backend *b, void *dst, const void *src, size_t n);
    kvs_status (*synchronize)(kvs_backend *b, kvs_error *err);  /* optional (NULL: always done) */

    /* --- kernels --- */
    /* y[i][:] = row ids[i] of table (row_len elements of type t), as f32. */
    void (*get_rows)(kvs_backend *b, float *y, const void *table, kvs_dtype t, int64_t row_len,
                     const int32_t *ids, int64_t n);
    /* y[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w, for n rows of dim. y may alias x. */
    void (*rms_norm)(kvs_backend *b, float *y, const float *x, const float *w, int64_t n,
                     int64_t dim, float eps);
    /* y[n][m] = x[n][k] . W[m][k]^T, W of type wt stored row-major (ggml ne = {k, m}). */
    void (*matmul)(kvs_backend *b, float *y, const float *x, const void *w, kvs_dtype wt,
                   int64_t n, int64_t k, int64_t m);
    /* Rotate x[n][n_heads][head_dim] in place by positions pos[n].  The first rot_dim
     * dims of each head rotate, with theta_i = pos * freq_scale * freq_base^(-2i/rot_dim).
     * neox=false: pairs (2i, 2i+1) (llama.cpp's "normal"); neox=true: pairs (i, i + rot_dim/2). */
    void (*rope)(kvs_backend *b, float *x, const int32_t *pos, int64_t n, int32_t n_heads,
                 int32_t head_dim, int32_t rot_dim, float freq_base, float freq_scale, bool neox);
    /* y[i] = silu(gate[i]) * up[i]; y may alias gate. */
    void (*silu_mul)(kvs_backend *b, float *y, const float *gate, const float *up, int64_t n);
    /* y[i] = a[i] + c[i]; y may alias a. */
    void (*add)(kvs_backend *b, float *y, const float *a, const float *c, int64_t n);
    /* y[i][j] += bias[j] for n rows of dim (attention biases). */
    void (*add_rows)(kvs_backend *b, float *y, const float *bias, int64_t n, int64_t dim);
    /* Write k[t], v[t] ([n_tokens][n_kv_heads * head_dim]) to cache slot slots[t]. */
    void (*kv_store)(kvs_backend *b, const kvs_kv_view *kv, const float *k, const float *v,
                     const int32_t *slots, int64_t n_tokens);
    /* Causal grouped-query attention over the paged cache (after kv_store of
     * this step): out[t][h][:] = softmax(scale * q[t][h] . K[0..pos]) V, where
     * query head h reads KV head h / (n_heads / n_kv_heads).  scratch holds at
     * least attention_scratch_bytes(). */
    void (*attention)(kvs_backend *b, float *out, const float *q, const kvs_kv_view *kv,
                      const kvs_attn_meta *meta, int32_t n_heads, float scale, void *scratch);
    size_t (*attention_scratch_bytes)(kvs_backend *b, int32_t n_heads, int32_t max_ctx,
                                      int64_t n_tokens);

    /* --- kernels of the families beyond Llama (model/arch.h) --- */
    /* x[i] *= s (Gemma's embedding scale). */
    void (*scale)(kvs_backend *b, float *x, int64_t n, float s);
    /* y[i] = gelu_tanh(gate[i]) * up[i] (GeGLU); y may alias gate. */
    void (*gelu_mul)(kvs_backend *b, float *y, const float *gate, const float *up, int64_t n);
    /* x[i] = cap * tanh(x[i] / cap) (Gemma 2's final logit soft-capping). */
    void (*softcap)(kvs_backend *b, float *x, int64_t n, float cap);
    /* RoPE as rope() with per-frequency angles theta_i = pos * inv_freq[i]
     * (inv_freq: rot_dim / 2 doubles on the device; dynamic, llama3 and yarn
     * scaling) and the rotated values multiplied by mscale (yarn). */
    void (*rope_freqs)(kvs_backend *b, float *x, const int32_t *pos, int64_t n, int32_t n_heads,
                       int32_t head_dim, int32_t rot_dim, const double *inv_freq, float mscale, bool neox);

    /* --- optional (NULL where the backend has none) --- */
    /* Make every page of a buffer resident now (the CPU backend's memory is
     * committed lazily; the activation arena is touched at start-up so the
     * overhead measurement sees it). */
    void (*touch)(kvs_backend *b, void *p, size_t bytes);
    /* Bytes held by captured execution plans for batch sizes (reported as "graphs"). */
    uint64_t (*graph_bytes)(kvs_backend *b);
} kvs_backend_ops;

struct kvs_backend {
    const kvs_backend_ops *ops;
    kvs_ledger ledger;
    void *ctx;               /* the implementation's state */
};

/* Allocate `bytes` on the device under `tag`, recorded in the ledger.
 * Zero bytes gives an empty buffer (ptr NULL) and succeeds. */
kvs_status kvs_backend_alloc(kvs_backend *b, kvs_mem_tag tag, uint64_t bytes, kvs_dbuf *out,
                             kvs_error *err);
/* Free a buffer taken with kvs_backend_alloc (no-op on an empty one) and clear it. */
void kvs_backend_release(kvs_backend *b, kvs_dbuf *buf);
void kvs_backend_destroy(kvs_backend *b);

#endif
