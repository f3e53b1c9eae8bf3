/* Hyperparameters of the Llama family from GGUF metadata. */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define KVS_MAX_DIM (1 << 20)
#define KVS_MAX_LAYERS 1024
#define KVS_MAX_VOCAB (1 << 24)
#define KVS_MAX_CTX (1 << 24)

/* Read "<arch>.<suffix>" as u32 into *out; absent keys keep *out when !required. */
static kvs_status arch_u32(const kvs_gguf *g, const char *arch, const char *suffix, bool required,
                           int32_t *out, int64_t max, kvs_error *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    kvs_status st = kvs_gguf_get_u32(g, key, &v, err);
    if (st == KVS_E_NOT_FOUND && !required)
        return KVS_OK;
    if (st != KVS_OK)
        return st;
    if (v == 0 || (int64_t)v > max)
        return kvs_fail(err, KVS_E_FORMAT, "%s = %u is out of range (1..%lld)", key, v, (long long)max);
    *out = (int32_t)v;
    return KVS_OK;
}

static kvs_status arch_f32(const kvs_gguf *g, const char *arch, const char *suffix, float *out,
                           kvs_error *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    kvs_status st = kvs_gguf_get_f32(g, key, out, err);
    return st == KVS_E_NOT_FOUND ? KVS_OK : st;
}

kvs_status kvs_model_hparams_from_gguf(const kvs_gguf *g, kvs_model_hparams *hp, kvs_error *err)
{
    memset(hp, 0, sizeof *hp);
    const char *arch;
    kvs_status st = kvs_gguf_get_str(g, "general.architecture", &arch, NULL, err);
    if (st != KVS_OK)
        return st;
    if (strcmp(arch, "llama") == 0) {
        hp->arch = KVS_ARCH_LLAMA;
    } else if (strcmp(arch, "qwen2") == 0) {
        hp->arch = KVS_ARCH_QWEN2;
        hp->rope_neox = true;
        hp->attn_bias = true;
    } else if (strcmp(arch, "qwen3") == 0) {
        hp->arch = KVS_ARCH_QWEN3;
        hp->rope_neox = true;
        hp->qk_norm = true;
    } else {
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "architecture '%.40s' is not supported (supported: llama, qwen2, qwen3)", arch);
    }
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", arch);

    hp->rope_freq_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->norm_eps = 1e-5f;
    hp->n_ctx_train = 2048;
    if ((st = arch_u32(g, arch, "embedding_length", true, &hp->dim, KVS_MAX_DIM, err)) ||
        (st = arch_u32(g, arch, "block_count", true, &hp->n_layers, KVS_MAX_LAYERS, err)) ||
        (st = arch_u32(g, arch, "feed_forward_length", true, &hp->hidden_dim, KVS_MAX_DIM, err)) ||
        (st = arch_u32(g, arch, "attention.head_count", true, &hp->n_heads, 4096, err)) ||
        (st = arch_u32(g, arch, "context_length", false, &hp->n_ctx_train, KVS_MAX_CTX, err)))
        return st;
    hp->n_kv_heads = hp->n_heads;
    hp->head_dim = hp->dim / hp->n_heads;
    if ((st = arch_u32(g, arch, "attention.head_count_kv", false, &hp->n_kv_heads, 4096, err)) ||
        (st = arch_u32(g, arch, "attention.key_length", false, &hp->head_dim, 65536, err)))
        return st;
    hp->rot_dim = hp->head_dim;
    if ((st = arch_u32(g, arch, "rope.dimension_count", false, &hp->rot_dim, 65536, err)) ||
        (st = arch_f32(g, arch, "attention.layer_norm_rms_epsilon", &hp->norm_eps, err)) ||
        (st = arch_f32(g, arch, "rope.freq_base", &hp->rope_freq_base, err)))
        return st;

    int32_t value_len = hp->head_dim;
    if ((st = arch_u32(g, arch, "attention.value_length", false, &value_len, 65536, err)))
        return st;
    if (value_len != hp->head_dim)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "value_length %d differs from key_length %d",
                        value_len, hp->head_dim);

    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *scaling = NULL;
    if (kvs_gguf_get_str(g, key, &scaling, NULL, NULL) == KVS_OK && strcmp(scaling, "none") != 0) {
        if (strcmp(scaling, "linear") != 0)
            return kvs_fail(err, KVS_E_UNSUPPORTED, "RoPE scaling '%.32s' is not supported (only linear)",
                            scaling);
        float factor = 1.0f;
        if ((st = arch_f32(g, arch, "rope.scaling.factor", &factor, err)))
            return st;
        if (!(factor >= 1.0f && factor <= 1024.0f))
            return kvs_fail(err, KVS_E_FORMAT, "rope.scaling.factor %g is out of range", factor);
        hp->rope_freq_scale = 1.0f / factor;
    }

    /* Vocabulary size: <arch>.vocab_size, else the token embedding's rows. */
    const kvs_gguf_tensor *emb = kvs_gguf_find_tensor(g, "token_embd.weight");
    int32_t vocab = 0;
    if ((st = arch_u32(g, arch, "vocab_size", false, &vocab, KVS_MAX_VOCAB, err)))
        return st;
    if (vocab == 0 && emb)
        vocab = emb->ne[1] <= KVS_MAX_VOCAB ? (int32_t)emb->ne[1] : 0;
    if (vocab == 0) {
        uint64_t n;
        kvs_gguf_type et;
        if (kvs_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL) == KVS_OK && n <= KVS_MAX_VOCAB)
            vocab = (int32_t)n;
    }
    if (vocab <= 0)
        return kvs_fail(err, KVS_E_FORMAT, "cannot determine the vocabulary size");
    hp->n_vocab = vocab;

    if (hp->n_kv_heads > hp->n_heads || hp->n_heads % hp->n_kv_heads != 0)
        return kvs_fail(err, KVS_E_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                        hp->n_heads, hp->n_kv_heads);
    if (hp->head_dim < 2 || hp->head_dim % 2 != 0)
        return kvs_fail(err, KVS_E_FORMAT, "head dimension %d must be even", hp->head_dim);
    if (hp->rot_dim > hp->head_dim || hp->rot_dim % 2 != 0)
        return kvs_fail(err, KVS_E_FORMAT, "rope.dimension_count %d must be even and <= head dim %d",
                        hp->rot_dim, hp->head_dim);
    if (hp->arch == KVS_ARCH_LLAMA && hp->head_dim * hp->n_heads != hp->dim && hp->head_dim == hp->dim / hp->n_heads)
        return kvs_fail(err, KVS_E_FORMAT, "embedding_length %d is not divisible by head_count %d",
                        hp->dim, hp->n_heads);
    if (!(hp->norm_eps > 0.0f && hp->norm_eps < 1.0f))
        return kvs_fail(err, KVS_E_FORMAT, "rms epsilon %g is out of range", hp->norm_eps);
    if (!(hp->rope_freq_base > 0.0f && isfinite(hp->rope_freq_base)))
        return kvs_fail(err, KVS_E_FORMAT, "rope.freq_base %g is out of range", hp->rope_freq_base);

    hp->tied_embeddings = kvs_gguf_find_tensor(g, "output.weight") == NULL;
    const kvs_gguf_tensor *wq = kvs_gguf_find_tensor(g, "blk.0.attn_q.weight");
    hp->weight_type = wq ? wq->type : (emb ? emb->type : KVS_DTYPE_F32);
    return KVS_OK;
}
