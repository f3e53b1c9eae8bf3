/* Hyperparameters from GGUF metadata, their checks, and the per-layer and
 * RoPE helpers every source shares. */
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
    const kvs_arch_info *ai = kvs_arch_by_gguf(arch);
    if (!ai)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "architecture '%.40s' is not supported (supported: %s)", arch,
                        kvs_arch_gguf_names());
    kvs_model_hparams_set_arch(hp, ai);
    hp->rope_neox = ai->gguf_neox;
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
        if (strcmp(scaling, "linear") == 0)
            hp->rope_scaling = KVS_ROPE_LINEAR;
        else if (strcmp(scaling, "yarn") == 0)
            hp->rope_scaling = KVS_ROPE_YARN;
        else
            return kvs_fail(err, KVS_E_UNSUPPORTED, "RoPE scaling '%.32s' is not supported (linear, yarn)",
                            scaling);
        hp->rope_factor = 1.0f;
        if ((st = arch_f32(g, arch, "rope.scaling.factor", &hp->rope_factor, err)))
            return st;
        if (!(hp->rope_factor >= 1.0f && hp->rope_factor <= 1024.0f))
            return kvs_fail(err, KVS_E_FORMAT, "rope.scaling.factor %g is out of range", hp->rope_factor);
        if (hp->rope_scaling == KVS_ROPE_LINEAR)
            hp->rope_freq_scale = 1.0f / hp->rope_factor;
        hp->rope_orig_ctx = hp->n_ctx_train;
        if ((st = arch_u32(g, arch, "rope.scaling.original_context_length", false, &hp->rope_orig_ctx,
                           KVS_MAX_CTX, err)) ||
            (st = arch_f32(g, arch, "rope.scaling.yarn_beta_fast", &hp->rope_beta_fast, err)) ||
            (st = arch_f32(g, arch, "rope.scaling.yarn_beta_slow", &hp->rope_beta_slow, err)) ||
            (st = arch_f32(g, arch, "rope.scaling.attn_factor", &hp->rope_attn_factor, err)))
            return st;
    }
    const kvs_gguf_tensor *ff = kvs_gguf_find_tensor(g, "rope_freqs.weight");
    if (ff && hp->rope_scaling == KVS_ROPE_NONE) {
        hp->rope_scaling = KVS_ROPE_FACTORS;
        hp->rope_factor = 1.0f;
    }
    if (kvs_gguf_find_tensor(g, "rope_factors_long.weight") || kvs_gguf_find_tensor(g, "rope_factors_short.weight"))
        return kvs_fail(err, KVS_E_UNSUPPORTED, "LongRoPE scaling (rope_factors_long/short) is not supported");
    /* The deviations of the family, where GGUF records them. */
    if ((st = arch_f32(g, arch, "attn_logit_softcapping", &hp->attn_softcap, err)) ||
        (st = arch_f32(g, arch, "final_logit_softcapping", &hp->final_softcap, err)) ||
        (st = arch_f32(g, arch, "attention.scale", &hp->attn_scale, err)) ||
        (st = arch_u32(g, arch, "attention.sliding_window", false, &hp->sliding_window, KVS_MAX_CTX, err)))
        return st;
    if (hp->sliding_window > 0)
        hp->swa_mode = hp->arch == KVS_ARCH_GEMMA2 ? KVS_SWA_EVEN : KVS_SWA_ALL;
    if (ai->embed_scale)
        hp->embed_scale = sqrtf((float)hp->dim);
    /* Gemma 2 27B scales queries by (dim / heads)^-0.5, not head_dim^-0.5
     * (query_pre_attn_scalar 144); llama.cpp knows it by the layer count. */
    if (hp->arch == KVS_ARCH_GEMMA2 && hp->attn_scale == 0.0f && hp->n_layers == 46)
        hp->attn_scale = 1.0f / sqrtf((float)hp->dim / (float)hp->n_heads);

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

    if ((st = kvs_model_hparams_check(hp, err)) != KVS_OK)
        return st;

    hp->tied_embeddings = ai->always_tied || kvs_gguf_find_tensor(g, "output.weight") == NULL;
    const kvs_gguf_tensor *wq = kvs_gguf_find_tensor(g, "blk.0.attn_q.weight");
    hp->weight_type = wq ? wq->type : (emb ? emb->type : KVS_DTYPE_F32);
    return KVS_OK;
}

int64_t kvs_model_dim(const kvs_model_hparams *hp, kvs_dim_role r)
{
    int64_t q = (int64_t)hp->n_heads * hp->head_dim, kv = (int64_t)hp->n_kv_heads * hp->head_dim;
    switch (r) {
    case KVS_D_ONE: return 1;
    case KVS_D_DIM: return hp->dim;
    case KVS_D_VOCAB: return hp->n_vocab;
    case KVS_D_Q: return q;
    case KVS_D_KV: return kv;
    case KVS_D_QKV: return q + 2 * kv;
    case KVS_D_HIDDEN: return hp->hidden_dim;
    case KVS_D_HIDDEN2: return 2 * (int64_t)hp->hidden_dim;
    case KVS_D_HEAD: return hp->head_dim;
    }
    return 0;
}

void kvs_model_hparams_set_arch(kvs_model_hparams *hp, const kvs_arch_info *ai)
{
    hp->arch = ai->id;
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", ai->gguf_name);
    hp->attn_bias = ai->attn_bias;
    hp->qk_norm = ai->qk_norm;
    hp->post_norms = ai->post_norms;
    hp->act = ai->act;
}

kvs_status kvs_model_hparams_check(const kvs_model_hparams *hp, kvs_error *err)
{
    if (hp->dim < 1 || hp->dim > KVS_MAX_DIM || hp->n_layers < 1 || hp->n_layers > KVS_MAX_LAYERS ||
        hp->hidden_dim < 1 || hp->hidden_dim > KVS_MAX_DIM || hp->n_heads < 1 || hp->n_heads > 4096 ||
        hp->n_kv_heads < 1 || hp->n_vocab < 1 || hp->n_vocab > KVS_MAX_VOCAB || hp->n_ctx_train < 1 ||
        hp->n_ctx_train > KVS_MAX_CTX || hp->head_dim < 1 || hp->head_dim > 65536)
        return kvs_fail(err, KVS_E_FORMAT,
                        "hyperparameters out of range (dim %d, layers %d, hidden %d, heads %d/%d, head_dim %d, "
                        "vocab %d, context %d)",
                        hp->dim, hp->n_layers, hp->hidden_dim, hp->n_heads, hp->n_kv_heads, hp->head_dim,
                        hp->n_vocab, hp->n_ctx_train);
    if (hp->n_kv_heads > hp->n_heads || hp->n_heads % hp->n_kv_heads != 0)
        return kvs_fail(err, KVS_E_FORMAT, "head_count %d is not a multiple of head_count_kv %d",
                        hp->n_heads, hp->n_kv_heads);
    if (hp->head_dim < 2 || hp->head_dim % 2 != 0)
        return kvs_fail(err, KVS_E_FORMAT, "head dimension %d must be even", hp->head_dim);
    if (hp->rot_dim < 2 || hp->rot_dim > hp->head_dim || hp->rot_dim % 2 != 0)
        return kvs_fail(err, KVS_E_FORMAT, "rope.dimension_count %d must be even and <= head dim %d",
                        hp->rot_dim, hp->head_dim);
    if (hp->arch == KVS_ARCH_LLAMA && hp->head_dim * hp->n_heads != hp->dim && hp->head_dim == hp->dim / hp->n_heads)
        return kvs_fail(err, KVS_E_FORMAT, "embedding_length %d is not divisible by head_count %d",
                        hp->dim, hp->n_heads);
    if (!(hp->norm_eps > 0.0f && hp->norm_eps < 1.0f))
        return kvs_fail(err, KVS_E_FORMAT, "rms epsilon %g is out of range", hp->norm_eps);
    if (!(hp->rope_freq_base > 0.0f && isfinite(hp->rope_freq_base)))
        return kvs_fail(err, KVS_E_FORMAT, "rope.freq_base %g is out of range", hp->rope_freq_base);
    if (!(hp->rope_freq_scale > 0.0f && hp->rope_freq_scale <= 1.0f))
        return kvs_fail(err, KVS_E_FORMAT, "RoPE frequency scale %g is out of range", hp->rope_freq_scale);
    if (hp->rope_scaling != KVS_ROPE_NONE && !(hp->rope_factor >= 1.0f && hp->rope_factor <= 1024.0f))
        return kvs_fail(err, KVS_E_FORMAT, "RoPE scaling factor %g is out of range (1..1024)", hp->rope_factor);
    if (hp->rope_scaling == KVS_ROPE_LLAMA3 &&
        !(hp->rope_low_freq_factor > 0.0f && hp->rope_high_freq_factor > hp->rope_low_freq_factor &&
          hp->rope_orig_ctx > 0))
        return kvs_fail(err, KVS_E_FORMAT,
                        "llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor and "
                        "original_max_position_embeddings > 0 (got %g, %g, %d)",
                        hp->rope_low_freq_factor, hp->rope_high_freq_factor, hp->rope_orig_ctx);
    if (hp->rope_scaling == KVS_ROPE_YARN && !(hp->rope_orig_ctx > 0))
        return kvs_fail(err, KVS_E_FORMAT, "yarn RoPE scaling needs original_max_position_embeddings > 0");
    if (hp->rope_scaling == KVS_ROPE_DYNAMIC && hp->rot_dim <= 2)
        return kvs_fail(err, KVS_E_FORMAT, "dynamic RoPE scaling needs more than 2 rotary dims");
    if (!(hp->attn_scale >= 0.0f && hp->attn_scale < 1e3f) || !(hp->attn_softcap >= 0.0f && isfinite(hp->attn_softcap)) ||
        !(hp->final_softcap >= 0.0f && isfinite(hp->final_softcap)) || !(hp->embed_scale >= 0.0f && isfinite(hp->embed_scale)))
        return kvs_fail(err, KVS_E_FORMAT, "attention scale / soft-capping / embedding scale out of range");
    if (hp->sliding_window < 0 || (hp->swa_mode != KVS_SWA_NONE && hp->sliding_window < 1))
        return kvs_fail(err, KVS_E_FORMAT, "sliding window %d is out of range", hp->sliding_window);
    return KVS_OK;
}

int32_t kvs_model_layer_window(const kvs_model_hparams *hp, int32_t l)
{
    switch (hp->swa_mode) {
    case KVS_SWA_ALL: return hp->sliding_window;
    case KVS_SWA_EVEN: return l % 2 == 0 ? hp->sliding_window : 0;
    case KVS_SWA_FROM: return l >= hp->swa_from ? hp->sliding_window : 0;
    default: return 0;
    }
}

bool kvs_model_rope_table(const kvs_model_hparams *hp)
{
    return hp->rope_scaling == KVS_ROPE_DYNAMIC || hp->rope_scaling == KVS_ROPE_LLAMA3 ||
           hp->rope_scaling == KVS_ROPE_YARN || hp->rope_scaling == KVS_ROPE_FACTORS;
}

static double yarn_mscale(double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

/* YaRN's correction dimension for a number of rotations (transformers'
 * find_correction_dim). */
static double yarn_dim(double rot, int dim, double base, double max_pos)
{
    return dim * log(max_pos / (rot * 2.0 * M_PI)) / (2.0 * log(base));
}

void kvs_model_rope_inv_freq(const kvs_model_hparams *hp, double *inv, float *mscale)
{
    const int d = hp->rot_dim, half = d / 2;
    double base = hp->rope_freq_base, factor = hp->rope_factor;
    *mscale = 1.0f;
    if (hp->rope_scaling == KVS_ROPE_DYNAMIC) /* vLLM: the base for max_position * factor, fixed */
        base *= pow(factor * factor - (factor - 1.0), (double)d / (d - 2));
    for (int i = 0; i < half; i++)
        inv[i] = pow(base, -2.0 * i / d) * (hp->rope_scaling == KVS_ROPE_LINEAR ? 1.0 / factor : 1.0);
    if (hp->rope_scaling == KVS_ROPE_LLAMA3) {
        double old = hp->rope_orig_ctx, lo = hp->rope_low_freq_factor, hi = hp->rope_high_freq_factor;
        double lo_wl = old / lo, hi_wl = old / hi;
        for (int i = 0; i < half; i++) {
            double wl = 2.0 * M_PI / inv[i];
            if (wl > lo_wl) {
                inv[i] /= factor;
            } else if (wl >= hi_wl) {
                double s = (old / wl - lo) / (hi - lo);
                inv[i] = (1.0 - s) * inv[i] / factor + s * inv[i];
            }
        }
    } else if (hp->rope_scaling == KVS_ROPE_YARN) {
        double fast = hp->rope_beta_fast > 0 ? hp->rope_beta_fast : 32.0;
        double slow = hp->rope_beta_slow > 0 ? hp->rope_beta_slow : 1.0;
        double lo = floor(yarn_dim(fast, d, base, hp->rope_orig_ctx));
        double hi = ceil(yarn_dim(slow, d, base, hp->rope_orig_ctx));
        if (lo < 0)
            lo = 0;
        if (hi > d - 1)
            hi = d - 1;
        if (lo == hi)
            hi += 0.001;
        for (int i = 0; i < half; i++) {
            double ramp = ((double)i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extra = 1.0 - ramp;  /* extrapolation weight */
            inv[i] = inv[i] / factor * (1.0 - extra) + inv[i] * extra;
        }
        *mscale = hp->rope_attn_factor > 0 ? hp->rope_attn_factor : (float)yarn_mscale(factor, 1.0);
    }
}
