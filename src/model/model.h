/*
 * model.h - decoder-only transformers of the Llama family: hyperparameters
 * read from GGUF metadata, and weights loaded onto a backend.
 *
 * Architectures (general.architecture):
 *   llama   Llama 2/3, TinyLlama, Mistral (no sliding window), TinyStories.
 *           RoPE on interleaved pairs (llama.cpp's "normal" layout).
 *   qwen2   Llama plus biases on q, k and v; RoPE on split halves (NeoX).
 *   qwen3   Llama plus an RMSNorm over each head of q and k before RoPE;
 *           RoPE on split halves (NeoX layout); head_dim need not be
 *           dim / n_heads.
 *
 * One layer, in the notation of the shapes below (n = tokens in the step):
 *   xb = rmsnorm(x) * attn_norm
 *   q, k, v = xb Wq^T, xb Wk^T, xb Wv^T      (qwen3: q, k = rmsnorm per head)
 *   q, k = rope(q, pos), rope(k, pos)
 *   x += attention(q, K cache, V cache) Wo^T
 *   xb = rmsnorm(x) * ffn_norm
 *   x += (silu(xb Wgate^T) * (xb Wup^T)) Wdown^T
 * and at the end logits = rmsnorm(x) * output_norm  Wout^T  (Wout = token
 * embedding when the file has no output.weight: tied embeddings).
 *
 * Loading reads every tensor into one backend buffer tagged "weights"
 * (or, with use_mmap on the CPU backend, points into the mapped file).
 */
#ifndef KVS_MODEL_MODEL_H
#define KVS_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"
#include "core/status.h"
#include "formats/gguf.h"

typedef enum kvs_arch { KVS_ARCH_LLAMA, KVS_ARCH_QWEN2, KVS_ARCH_QWEN3 } kvs_arch;

typedef struct kvs_model_hparams {
    kvs_arch arch;
    char arch_name[32];
    int32_t n_vocab;
    int32_t dim;            /* embedding width */
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t hidden_dim;     /* MLP width */
    int32_t n_ctx_train;    /* context_length the model was trained for */
    int32_t rot_dim;        /* RoPE dims per head (<= head_dim) */
    float norm_eps;
    float rope_freq_base;
    float rope_freq_scale; /* 1 / linear scaling factor */
    bool rope_neox;
    bool qk_norm;          /* qwen3 */
    bool attn_bias;        /* qwen2 */
    bool tied_embeddings;  /* no output.weight */
    uint32_t weight_type;  /* type of the largest matrices (for reports) */
} kvs_model_hparams;

/* A weight tensor on the device. */
typedef struct kvs_weight {
    const void *data;      /* device pointer (into the weights buffer or the mapping) */
    kvs_dtype type;
    int64_t ne0, ne1;      /* ne0 = row length (input features), ne1 = rows */
} kvs_weight;

typedef struct kvs_model_layer {
    kvs_weight attn_norm;  /* [dim] f32 */
    kvs_weight wq;         /* [n_heads * head_dim][dim] */
    kvs_weight wk;         /* [n_kv_heads * head_dim][dim] */
    kvs_weight wv;         /* [n_kv_heads * head_dim][dim] */
    kvs_weight wo;         /* [dim][n_heads * head_dim] */
    kvs_weight bq;         /* qwen2: [n_heads * head_dim] f32 */
    kvs_weight bk;         /* qwen2: [n_kv_heads * head_dim] f32 */
    kvs_weight bv;         /* qwen2: [n_kv_heads * head_dim] f32 */
    kvs_weight q_norm;     /* qwen3: [head_dim] f32 */
    kvs_weight k_norm;     /* qwen3: [head_dim] f32 */
    kvs_weight ffn_norm;   /* [dim] f32 */
    kvs_weight w_gate;     /* [hidden_dim][dim] */
    kvs_weight w_up;       /* [hidden_dim][dim] */
    kvs_weight w_down;     /* [dim][hidden_dim] */
} kvs_model_layer;

typedef struct kvs_model_model {
    kvs_model_hparams hp;
    kvs_backend *backend;
    kvs_weight tok_embd;      /* [n_vocab][dim] */
    kvs_weight output_norm;   /* [dim] f32 */
    kvs_weight output;        /* [n_vocab][dim] (== tok_embd when tied) */
    kvs_model_layer *layers;  /* [n_layers] */
    kvs_dbuf weights;         /* the one weights buffer (empty with mmap) */
    void *map;                /* mmap'ed file (use_mmap) */
    uint64_t map_bytes;
    double load_seconds;
} kvs_model_model;

/* Read and check the hyperparameters (no tensor data is read).  Absurd
 * values (zero or huge sizes, heads that do not divide) are errors. */
kvs_status kvs_model_hparams_from_gguf(const kvs_gguf *g, kvs_model_hparams *hp, kvs_error *err);

/* Bytes the weights take on the device when loaded: the sum of the tensors
 * the model uses, each rounded up to KVS_WEIGHT_ALIGN.  What `plan` predicts
 * and what kvs_model_load allocates. */
#define KVS_WEIGHT_ALIGN 256
kvs_status kvs_model_weight_bytes(const kvs_gguf *g, const kvs_model_hparams *hp, uint64_t *out,
                                  kvs_error *err);

typedef struct kvs_model_load_opts {
    bool use_mmap;         /* CPU backend only: weights stay in the mapped file */
} kvs_model_load_opts;

/* Load the model's weights from g onto backend b.  Checks that every tensor
 * exists with the shape the hyperparameters imply and a computable type. */
kvs_status kvs_model_load(kvs_model_model **out, const kvs_gguf *g, kvs_backend *b,
                          const kvs_model_load_opts *opts, kvs_error *err);
void kvs_model_free(kvs_model_model *m);

#endif
