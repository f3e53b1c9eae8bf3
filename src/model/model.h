/*
 * model.h - decoder-only transformers: hyperparameters and weights loaded
 * onto a backend, for every family of the architecture table (arch.h).
 *
 * Where a model comes from is a model source (model/source.h): a GGUF file
 * or a Hugging Face directory (config.json + safetensors).  Both give the
 * same description: these hyperparameters and a table of tensors under
 * canonical (GGUF) names, so nothing below knows the file format.
 *
 * One layer, in the notation of the shapes below (n = tokens in the step):
 *   xb = rmsnorm(x) * attn_norm
 *   q, k, v = xb Wq^T (+bq), xb Wk^T (+bk), xb Wv^T (+bv)   (qwen2: biases)
 *   q, k = rmsnorm per head (qwen3)
 *   q, k = rope(q, pos), rope(k, pos)          (layout, scaling: below)
 *   a = attention(q, K cache, V cache)          (scale, soft-cap, window)
 *   x += a Wo^T                                  (gemma2: rmsnorm(a Wo^T) * post_attn_norm)
 *   xb = rmsnorm(x) * ffn_norm
 *   x += (act(xb Wgate^T) * (xb Wup^T)) Wdown^T  (act: silu; gemma2 gelu-tanh, then post_ffw_norm)
 * and at the end logits = rmsnorm(x) * output_norm  Wout^T  (Wout = token
 * embedding when tied), soft-capped for gemma2; gemma2 also scales the
 * embeddings by sqrt(dim).
 *
 * Loading reads every tensor into one backend buffer tagged "weights"
 * (or, with use_mmap on the CPU backend, points into the mapped files).
 */
#ifndef KVS_MODEL_MODEL_H
#define KVS_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"
#include "core/status.h"
#include "formats/gguf.h"
#include "model/arch.h"

/* RoPE frequency scaling (HF rope_scaling / rope_parameters "rope_type"). */
typedef enum kvs_rope_scaling {
    KVS_ROPE_NONE,
    KVS_ROPE_LINEAR,    /* positions / factor */
    KVS_ROPE_DYNAMIC,   /* NTK-aware base, fixed at max_position * factor (as vLLM) */
    KVS_ROPE_LLAMA3,    /* Llama 3.1's per-frequency interpolation */
    KVS_ROPE_YARN,      /* YaRN: ramp between interpolation and extrapolation, mscale */
    KVS_ROPE_FACTORS,   /* GGUF rope_freqs.weight: inv_freq[i] = base^(-2i/d) / factor[i] (llama.cpp's
                           form of Llama 3.1 scaling) */
} kvs_rope_scaling;

/* Which layers use the sliding window. */
typedef enum kvs_swa_mode {
    KVS_SWA_NONE,
    KVS_SWA_ALL,        /* every layer (Mistral, Phi-3) */
    KVS_SWA_EVEN,       /* layers 0, 2, 4, ... (Gemma 2) */
    KVS_SWA_FROM,       /* layers >= swa_from (Qwen2 use_sliding_window) */
} kvs_swa_mode;

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
    bool rope_neox;        /* rotate halves (HF layout); false: interleaved pairs (GGUF llama) */
    bool qk_norm;          /* qwen3 */
    bool attn_bias;        /* qwen2 */
    bool tied_embeddings;  /* no output.weight */
    uint32_t weight_type;  /* type of the largest matrices (for reports) */
    /* --- deviations (zero: plain Llama) --- */
    kvs_rope_scaling rope_scaling;
    float rope_factor;
    int32_t rope_orig_ctx;          /* original_max_position_embeddings */
    float rope_low_freq_factor, rope_high_freq_factor;  /* llama3 */
    float rope_beta_fast, rope_beta_slow;               /* yarn */
    float rope_attn_factor;         /* yarn: cos/sin scale (0: from the factor) */
    float attn_scale;               /* query scale (0: 1 / sqrt(head_dim)) */
    float attn_softcap;             /* gemma2: tanh soft-cap of attention scores (0: none) */
    float final_softcap;            /* gemma2: of the logits */
    float embed_scale;              /* gemma2: sqrt(dim) (0: none) */
    int32_t sliding_window;         /* positions a windowed layer sees, itself included */
    kvs_swa_mode swa_mode;
    int32_t swa_from;
    bool post_norms;                /* gemma2 */
    kvs_ffn_act act;
} kvs_model_hparams;

/* Set arch, arch_name and the family's fixed deviations from the table. */
void kvs_model_hparams_set_arch(kvs_model_hparams *hp, const kvs_arch_info *ai);
/* The size of a tensor dimension of role r (arch.h) under these hyperparameters; 0 for an unknown role. */
int64_t kvs_model_dim(const kvs_model_hparams *hp, kvs_dim_role r);
/* The window of layer l: 0 for full attention. */
int32_t kvs_model_layer_window(const kvs_model_hparams *hp, int32_t l);
/* True when RoPE needs a per-frequency table (dynamic, llama3, yarn). */
bool kvs_model_rope_table(const kvs_model_hparams *hp);
/* The table: inv_freq[i] for i < rot_dim / 2 (theta_i = pos * inv_freq[i]),
 * and the factor that scales cos and sin (yarn's mscale; 1 otherwise). */
void kvs_model_rope_inv_freq(const kvs_model_hparams *hp, double *inv_freq, float *mscale);
/* Check the hyperparameters that every source must satisfy (sizes, heads
 * dividing, even head dims, epsilon, base, the deviations' values). */
kvs_status kvs_model_hparams_check(const kvs_model_hparams *hp, kvs_error *err);

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
    kvs_weight post_attn_norm; /* gemma2: [dim] f32 */
    kvs_weight post_ffw_norm;  /* gemma2: [dim] f32 */
    kvs_weight wqkv;       /* phi3: [q + 2 kv][dim]; wq, wk, wv are views of its rows */
    kvs_weight w_gate_up;  /* phi3: [2 hidden][dim]; w_gate, w_up are views of its rows */
} kvs_model_layer;

typedef struct kvs_model_model {
    kvs_model_hparams hp;
    kvs_backend *backend;
    kvs_weight tok_embd;      /* [n_vocab][dim] */
    kvs_weight output_norm;   /* [dim] f32 */
    kvs_weight output;        /* [n_vocab][dim] (== tok_embd when tied) */
    kvs_model_layer *layers;  /* [n_layers] */
    const double *rope_inv_freq; /* [rot_dim / 2] on the device, or NULL (kvs_model_rope_table) */
    float rope_mscale;
    kvs_dbuf weights;         /* the one weights buffer (empty with mmap) */
    void *map;                /* mmap'ed file (use_mmap; the first of maps) */
    uint64_t map_bytes;       /* bytes of every mapping together */
    size_t n_maps;
    void **maps;              /* one per source file (use_mmap) */
    uint64_t *map_sizes;
    double load_seconds;
} kvs_model_model;

/* Read and check the hyperparameters (no tensor data is read).  Absurd
 * values (zero or huge sizes, heads that do not divide) are errors. */
kvs_status kvs_model_hparams_from_gguf(const kvs_gguf *g, kvs_model_hparams *hp, kvs_error *err);

struct kvs_model_source;

/* Bytes the weights take on the device when loaded: the sum of the tensors
 * the model uses, each rounded up to KVS_WEIGHT_ALIGN (plus the RoPE table
 * where there is one).  What `plan` predicts and what kvs_model_load
 * allocates.  With use_mmap: the mapped files plus the tensors that need a
 * converted copy (norm vectors not stored as f32, Gemma's HF norms). */
#define KVS_WEIGHT_ALIGN 256
kvs_status kvs_model_source_weight_bytes(const struct kvs_model_source *src, bool use_mmap, uint64_t *out,
                                         kvs_error *err);
/* The same for a GGUF file without mmap (hp as read from g). */
kvs_status kvs_model_weight_bytes(const kvs_gguf *g, const kvs_model_hparams *hp, uint64_t *out,
                                  kvs_error *err);

/* Loading progress: called after each tensor with the bytes read so far,
 * the total, and the source file the tensor came from. */
typedef void (*kvs_load_progress_fn)(void *ctx, uint64_t done, uint64_t total, uint32_t file,
                                     uint32_t n_files);

typedef struct kvs_model_load_opts {
    bool use_mmap;         /* CPU backend only: weights stay in the mapped file */
    kvs_load_progress_fn progress;  /* optional */
    void *progress_ctx;
    int n_threads;         /* threads reading weights into host memory (<= 1: the caller alone) */
} kvs_model_load_opts;

/* Load the model's weights from a source onto backend b.  Checks that
 * every tensor exists with the shape the hyperparameters imply and a
 * computable type (a dtype kvserve cannot compute with is named). */
kvs_status kvs_model_load_source(kvs_model_model **out, const struct kvs_model_source *src, kvs_backend *b,
                                 const kvs_model_load_opts *opts, kvs_error *err);
/* The same from an open GGUF file. */
kvs_status kvs_model_load(kvs_model_model **out, const kvs_gguf *g, kvs_backend *b,
                          const kvs_model_load_opts *opts, kvs_error *err);
void kvs_model_free(kvs_model_model *m);

#endif
