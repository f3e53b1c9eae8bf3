/*
 * arch.h - the architecture table: one entry per model family, saying
 * which tensors it has, what they are called in GGUF and in Hugging Face
 * checkpoints, their shapes in terms of the hyperparameters, and how the
 * family deviates from plain Llama.  The loader and the runner read this
 * table; nothing else in the model code tests for a family by name.
 *
 *   family  GGUF name  HF classes                        deviations
 *   llama   llama      LlamaForCausalLM,                 (Mistral: sliding window on
 *                      MistralForCausalLM                 every layer)
 *   qwen2   qwen2      Qwen2ForCausalLM                  q/k/v biases
 *   qwen3   qwen3      Qwen3ForCausalLM                  RMSNorm per head of q and k
 *   gemma2  gemma2     Gemma2ForCausalLM                 sandwich norms, GeGLU (tanh),
 *                                                        embeddings * sqrt(dim),
 *                                                        RMSNorm weight stored as w - 1
 *                                                        in HF, attention and final
 *                                                        logit soft-capping, sliding
 *                                                        window on even layers, tied
 *   phi3    phi3       Phi3ForCausalLM                   fused qkv and gate_up
 *
 * Canonical tensor names are GGUF's ("blk.3.attn_q.weight"): an HF
 * checkpoint's names are mapped to them when the directory is opened, so
 * everything after the source (model/source.h) sees one naming.
 *
 * RoPE layout: Hugging Face checkpoints rotate halves (NeoX, "rotate_half")
 * for every family.  llama.cpp's converter permutes Llama's q/k rows so
 * that the interleaved-pair rotation ("normal") gives the same result;
 * GGUF files of the other families keep the HF order and use NeoX.  So
 * the layout is a property of the family *and* the source (gguf_neox
 * below), and no weights are permuted at load time.
 */
#ifndef KVS_MODEL_ARCH_H
#define KVS_MODEL_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kvs_arch {
    KVS_ARCH_LLAMA,
    KVS_ARCH_QWEN2,
    KVS_ARCH_QWEN3,
    KVS_ARCH_GEMMA2,
    KVS_ARCH_PHI3,
    KVS_ARCH_COUNT
} kvs_arch;

/* A tensor dimension in terms of the hyperparameters. */
typedef enum kvs_dim_role {
    KVS_D_ONE,      /* 1 (a vector's second dimension) */
    KVS_D_DIM,      /* embedding width */
    KVS_D_VOCAB,
    KVS_D_Q,        /* n_heads * head_dim */
    KVS_D_KV,       /* n_kv_heads * head_dim */
    KVS_D_QKV,      /* Q + 2 KV (fused) */
    KVS_D_HIDDEN,   /* MLP width */
    KVS_D_HIDDEN2,  /* 2 * MLP width (fused gate and up) */
    KVS_D_HEAD,     /* head_dim */
} kvs_dim_role;

enum {
    KVS_T_LAYER = 1,    /* one per layer: names hold a %d */
    KVS_T_NORM = 2,     /* a norm vector (or bias): kept as f32 on the device */
    KVS_T_OUTPUT = 4,   /* the output head: absent with tied embeddings */
    KVS_T_PLUS_ONE = 8, /* HF stores w - 1 (Gemma's RMSNorm): add 1 when loading from HF */
};

/* Where a tensor goes in the model (model.h); a stable id rather than a
 * pointer, so that the table is constant. */
typedef enum kvs_slot {
    KVS_S_TOK_EMBD, KVS_S_OUTPUT_NORM, KVS_S_OUTPUT,
    KVS_S_ATTN_NORM, KVS_S_WQ, KVS_S_WK, KVS_S_WV, KVS_S_WQKV, KVS_S_WO,
    KVS_S_BQ, KVS_S_BK, KVS_S_BV, KVS_S_Q_NORM, KVS_S_K_NORM, KVS_S_POST_ATTN_NORM,
    KVS_S_FFN_NORM, KVS_S_GATE, KVS_S_UP, KVS_S_GATE_UP, KVS_S_DOWN, KVS_S_POST_FFW_NORM,
} kvs_slot;

typedef struct kvs_arch_tensor {
    const char *gguf;        /* "blk.%d.attn_q.weight" */
    const char *hf;          /* "model.layers.%d.self_attn.q_proj.weight" */
    kvs_dim_role ne0, ne1;   /* ggml order: ne0 is the row length (input features) */
    unsigned flags;
    kvs_slot slot;
} kvs_arch_tensor;

typedef enum kvs_ffn_act { KVS_ACT_SILU, KVS_ACT_GELU_TANH } kvs_ffn_act;

typedef struct kvs_arch_info {
    kvs_arch id;
    const char *gguf_name;          /* general.architecture */
    const char *hf_classes[3];      /* config.json "architectures"; NULL-terminated */
    const kvs_arch_tensor *tensors; /* the family's tensors */
    size_t n_tensors;
    bool gguf_neox;                 /* RoPE on halves in GGUF files (false: llama's permuted q/k) */
    bool attn_bias;                 /* q, k, v biases */
    bool qk_norm;                   /* RMSNorm over each head of q and k before RoPE */
    bool post_norms;                /* norms after attention and after the MLP (sandwich) */
    bool fused_qkv, fused_gate_up;
    bool embed_scale;               /* embeddings * sqrt(dim) */
    bool always_tied;               /* no output head at all */
    kvs_ffn_act act;
} kvs_arch_info;

/* The entry of a family. */
const kvs_arch_info *kvs_arch_get(kvs_arch id);
/* By GGUF general.architecture / HF class name; NULL if unknown. */
const kvs_arch_info *kvs_arch_by_gguf(const char *name);
const kvs_arch_info *kvs_arch_by_hf(const char *cls);
/* "llama, qwen2, ..." and "LlamaForCausalLM, ..." for error messages. */
const char *kvs_arch_gguf_names(void);
const char *kvs_arch_hf_names(void);

#endif
