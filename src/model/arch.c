/* The architecture table (see arch.h). */
#include "model/arch.h"

#include <string.h>

#define L KVS_T_LAYER
#define N KVS_T_NORM
#define HF_L "model.layers.%d."

#define COMMON_HEAD                                                                                     \
    {"token_embd.weight", "model.embed_tokens.weight", KVS_D_DIM, KVS_D_VOCAB, 0, KVS_S_TOK_EMBD},    \
    {"output_norm.weight", "model.norm.weight", KVS_D_DIM, KVS_D_ONE, N, KVS_S_OUTPUT_NORM},          \
    {"output.weight", "lm_head.weight", KVS_D_DIM, KVS_D_VOCAB, KVS_T_OUTPUT, KVS_S_OUTPUT}

#define ATTN_NORM {"blk.%d.attn_norm.weight", HF_L "input_layernorm.weight", KVS_D_DIM, KVS_D_ONE, L | N, KVS_S_ATTN_NORM}
#define QKV_SPLIT                                                                                        \
    {"blk.%d.attn_q.weight", HF_L "self_attn.q_proj.weight", KVS_D_DIM, KVS_D_Q, L, KVS_S_WQ},        \
    {"blk.%d.attn_k.weight", HF_L "self_attn.k_proj.weight", KVS_D_DIM, KVS_D_KV, L, KVS_S_WK},       \
    {"blk.%d.attn_v.weight", HF_L "self_attn.v_proj.weight", KVS_D_DIM, KVS_D_KV, L, KVS_S_WV}
#define WO {"blk.%d.attn_output.weight", HF_L "self_attn.o_proj.weight", KVS_D_Q, KVS_D_DIM, L, KVS_S_WO}
#define MLP_SPLIT                                                                                        \
    {"blk.%d.ffn_gate.weight", HF_L "mlp.gate_proj.weight", KVS_D_DIM, KVS_D_HIDDEN, L, KVS_S_GATE},   \
    {"blk.%d.ffn_up.weight", HF_L "mlp.up_proj.weight", KVS_D_DIM, KVS_D_HIDDEN, L, KVS_S_UP},         \
    {"blk.%d.ffn_down.weight", HF_L "mlp.down_proj.weight", KVS_D_HIDDEN, KVS_D_DIM, L, KVS_S_DOWN}
/* Llama's pre-MLP norm is HF's "post_attention_layernorm". */
#define FFN_NORM_LLAMA {"blk.%d.ffn_norm.weight", HF_L "post_attention_layernorm.weight", KVS_D_DIM, KVS_D_ONE, L | N, KVS_S_FFN_NORM}

static const kvs_arch_tensor LLAMA[] = {COMMON_HEAD, ATTN_NORM, QKV_SPLIT, WO, FFN_NORM_LLAMA, MLP_SPLIT};

static const kvs_arch_tensor QWEN2[] = {
    COMMON_HEAD, ATTN_NORM, QKV_SPLIT,
    {"blk.%d.attn_q.bias", HF_L "self_attn.q_proj.bias", KVS_D_Q, KVS_D_ONE, L | N, KVS_S_BQ},
    {"blk.%d.attn_k.bias", HF_L "self_attn.k_proj.bias", KVS_D_KV, KVS_D_ONE, L | N, KVS_S_BK},
    {"blk.%d.attn_v.bias", HF_L "self_attn.v_proj.bias", KVS_D_KV, KVS_D_ONE, L | N, KVS_S_BV},
    WO, FFN_NORM_LLAMA, MLP_SPLIT,
};

static const kvs_arch_tensor QWEN3[] = {
    COMMON_HEAD, ATTN_NORM, QKV_SPLIT,
    {"blk.%d.attn_q_norm.weight", HF_L "self_attn.q_norm.weight", KVS_D_HEAD, KVS_D_ONE, L | N, KVS_S_Q_NORM},
    {"blk.%d.attn_k_norm.weight", HF_L "self_attn.k_norm.weight", KVS_D_HEAD, KVS_D_ONE, L | N, KVS_S_K_NORM},
    WO, FFN_NORM_LLAMA, MLP_SPLIT,
};

#define P1 KVS_T_PLUS_ONE
static const kvs_arch_tensor GEMMA2[] = {
    {"token_embd.weight", "model.embed_tokens.weight", KVS_D_DIM, KVS_D_VOCAB, 0, KVS_S_TOK_EMBD},
    {"output_norm.weight", "model.norm.weight", KVS_D_DIM, KVS_D_ONE, N | P1, KVS_S_OUTPUT_NORM},
    {"blk.%d.attn_norm.weight", HF_L "input_layernorm.weight", KVS_D_DIM, KVS_D_ONE, L | N | P1, KVS_S_ATTN_NORM},
    QKV_SPLIT, WO,
    {"blk.%d.post_attention_norm.weight", HF_L "post_attention_layernorm.weight", KVS_D_DIM, KVS_D_ONE,
     L | N | P1, KVS_S_POST_ATTN_NORM},
    {"blk.%d.ffn_norm.weight", HF_L "pre_feedforward_layernorm.weight", KVS_D_DIM, KVS_D_ONE, L | N | P1,
     KVS_S_FFN_NORM},
    MLP_SPLIT,
    {"blk.%d.post_ffw_norm.weight", HF_L "post_feedforward_layernorm.weight", KVS_D_DIM, KVS_D_ONE,
     L | N | P1, KVS_S_POST_FFW_NORM},
};

static const kvs_arch_tensor PHI3[] = {
    COMMON_HEAD, ATTN_NORM,
    {"blk.%d.attn_qkv.weight", HF_L "self_attn.qkv_proj.weight", KVS_D_DIM, KVS_D_QKV, L, KVS_S_WQKV},
    WO, FFN_NORM_LLAMA,
    {"blk.%d.ffn_up.weight", HF_L "mlp.gate_up_proj.weight", KVS_D_DIM, KVS_D_HIDDEN2, L, KVS_S_GATE_UP},
    {"blk.%d.ffn_down.weight", HF_L "mlp.down_proj.weight", KVS_D_HIDDEN, KVS_D_DIM, L, KVS_S_DOWN},
};

#define T(x) x, sizeof x / sizeof x[0]
static const kvs_arch_info ARCHS[KVS_ARCH_COUNT] = {
    {KVS_ARCH_LLAMA, "llama", {"LlamaForCausalLM", "MistralForCausalLM", NULL}, T(LLAMA),
     .gguf_neox = false, .act = KVS_ACT_SILU},
    {KVS_ARCH_QWEN2, "qwen2", {"Qwen2ForCausalLM", NULL}, T(QWEN2), .gguf_neox = true, .attn_bias = true,
     .act = KVS_ACT_SILU},
    {KVS_ARCH_QWEN3, "qwen3", {"Qwen3ForCausalLM", NULL}, T(QWEN3), .gguf_neox = true, .qk_norm = true,
     .act = KVS_ACT_SILU},
    {KVS_ARCH_GEMMA2, "gemma2", {"Gemma2ForCausalLM", NULL}, T(GEMMA2), .gguf_neox = true,
     .post_norms = true, .embed_scale = true, .always_tied = true, .act = KVS_ACT_GELU_TANH},
    {KVS_ARCH_PHI3, "phi3", {"Phi3ForCausalLM", NULL}, T(PHI3), .gguf_neox = true, .fused_qkv = true,
     .fused_gate_up = true, .act = KVS_ACT_SILU},
};

const kvs_arch_info *kvs_arch_get(kvs_arch id)
{
    return (unsigned)id < KVS_ARCH_COUNT ? &ARCHS[id] : NULL;
}

const kvs_arch_info *kvs_arch_by_gguf(const char *name)
{
    for (int i = 0; i < KVS_ARCH_COUNT; i++)
        if (strcmp(ARCHS[i].gguf_name, name) == 0)
            return &ARCHS[i];
    return NULL;
}

const kvs_arch_info *kvs_arch_by_hf(const char *cls)
{
    for (int i = 0; i < KVS_ARCH_COUNT; i++)
        for (int j = 0; ARCHS[i].hf_classes[j]; j++)
            if (strcmp(ARCHS[i].hf_classes[j], cls) == 0)
                return &ARCHS[i];
    return NULL;
}

const char *kvs_arch_gguf_names(void) { return "llama, qwen2, qwen3, gemma2, phi3"; }

const char *kvs_arch_hf_names(void)
{
    return "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, "
           "Phi3ForCausalLM";
}
