#include "model/synth.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

kvs_synth_opts kvs_synth_defaults(void)
{
    return (kvs_synth_opts){
        .arch = "llama", .name = "kvserve-synth", .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 4,
        .hidden_dim = 172, .n_vocab = 512, .n_ctx = 2048, .rope_freq_base = 10000.0f, .norm_eps = 1e-5f,
        .wtype = KVS_DTYPE_F32, .embd_type = KVS_DTYPE_F32, .seed = 1, .init_scale = 1.0f,
    };
}

typedef struct preset {
    const char *name, *arch;
    int32_t dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, n_vocab, n_ctx;
    float rope, eps;
    bool tied;
} preset;

static const preset PRESETS[] = {
    {"stories260k", "llama", 64, 5, 8, 4, 0, 172, 512, 512, 10000.0f, 1e-5f, true},
    {"llama2-110m", "llama", 768, 12, 12, 12, 0, 2048, 32000, 1024, 10000.0f, 1e-5f, false},
    {"llama3.2-1b", "llama", 2048, 16, 32, 8, 0, 8192, 128256, 131072, 500000.0f, 1e-5f, true},
    {"llama3.1-8b", "llama", 4096, 32, 32, 8, 0, 14336, 128256, 131072, 500000.0f, 1e-5f, false},
    {"qwen2.5-7b", "qwen2", 3584, 28, 28, 4, 0, 18944, 152064, 32768, 1000000.0f, 1e-6f, false},
    {"qwen3-0.6b", "qwen3", 1024, 28, 16, 8, 128, 3072, 151936, 40960, 1000000.0f, 1e-6f, true},
};

bool kvs_synth_preset(const char *name, kvs_synth_opts *o)
{
    for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++) {
        const preset *p = &PRESETS[i];
        if (strcmp(p->name, name) != 0)
            continue;
        o->arch = p->arch;
        o->name = p->name;
        o->dim = p->dim;
        o->n_layers = p->n_layers;
        o->n_heads = p->n_heads;
        o->n_kv_heads = p->n_kv_heads;
        o->head_dim = p->head_dim;
        o->hidden_dim = p->hidden_dim;
        o->n_vocab = p->n_vocab;
        o->n_ctx = p->n_ctx;
        o->rope_freq_base = p->rope;
        o->norm_eps = p->eps;
        o->tied = p->tied;
        return true;
    }
    return false;
}

const char *kvs_synth_preset_names(void)
{
    return "stories260k, llama2-110m, llama3.2-1b, llama3.1-8b, qwen2.5-7b, qwen3-0.6b";
}

/* ---- llama-quantize's file types and per-tensor rules ---- */
typedef struct mix_info {
    const char *name;
    kvs_dtype base;
    uint32_t file_type; /* general.file_type (llama_ftype) */
} mix_info;

static const mix_info MIXES[] = {
    [KVS_MIX_Q4_0] = {"q4_0", KVS_DTYPE_Q4_0, 2},     [KVS_MIX_Q4_1] = {"q4_1", KVS_DTYPE_Q4_1, 3},
    [KVS_MIX_Q5_0] = {"q5_0", KVS_DTYPE_Q5_0, 8},     [KVS_MIX_Q5_1] = {"q5_1", KVS_DTYPE_Q5_1, 9},
    [KVS_MIX_Q8_0] = {"q8_0", KVS_DTYPE_Q8_0, 7},     [KVS_MIX_Q2_K] = {"q2_k", KVS_DTYPE_Q2_K, 10},
    [KVS_MIX_Q3_K_M] = {"q3_k_m", KVS_DTYPE_Q3_K, 12}, [KVS_MIX_Q4_K_S] = {"q4_k_s", KVS_DTYPE_Q4_K, 14},
    [KVS_MIX_Q4_K_M] = {"q4_k_m", KVS_DTYPE_Q4_K, 15}, [KVS_MIX_Q5_K_S] = {"q5_k_s", KVS_DTYPE_Q5_K, 16},
    [KVS_MIX_Q5_K_M] = {"q5_k_m", KVS_DTYPE_Q5_K, 17}, [KVS_MIX_Q6_K] = {"q6_k", KVS_DTYPE_Q6_K, 18},
};
#define N_MIXES (sizeof MIXES / sizeof MIXES[0])

bool kvs_synth_mix_parse(const char *name, kvs_synth_mix *out)
{
    for (size_t i = 1; i < N_MIXES; i++) {
        if (strcasecmp(MIXES[i].name, name) == 0) {
            *out = (kvs_synth_mix)i;
            return true;
        }
    }
    return false;
}

const char *kvs_synth_mix_names(void)
{
    return "q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m, q2_k, q6_k, q4_0, q4_1, q5_0, q5_1, q8_0";
}

/* llama-quantize's use_more_bits: the first and last eighth of the layers,
 * and every third layer between. */
static bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

uint32_t kvs_synth_mix_file_type(kvs_synth_mix mix)
{
    return mix > KVS_MIX_NONE && (size_t)mix < N_MIXES ? MIXES[mix].file_type : 0;
}

kvs_dtype kvs_synth_mix_type(kvs_synth_mix mix, const char *name, int64_t ne0, int32_t n_layers,
                             int32_t n_gqa, bool has_output)
{
    if (mix <= KVS_MIX_NONE || (size_t)mix >= N_MIXES)
        return KVS_DTYPE_F32;
    const kvs_dtype base = MIXES[mix].base;
    kvs_dtype t = base;
    int layer = 0;
    if (strncmp(name, "blk.", 4) == 0)
        layer = atoi(name + 4);
    const int n = n_layers;
    if (strcmp(name, "output.weight") == 0 || (!has_output && strcmp(name, "token_embd.weight") == 0)) {
        if (ne0 % (int64_t)kvs_dtype_block_elems(base) != 0)
            t = KVS_DTYPE_Q8_0;
        else if (base != KVS_DTYPE_Q8_0)
            t = KVS_DTYPE_Q6_K;
    } else if (strcmp(name, "token_embd.weight") == 0) {
        t = base;
    } else if (has_suffix(name, "attn_v.weight")) {
        if (mix == KVS_MIX_Q2_K)
            t = n_gqa >= 4 ? KVS_DTYPE_Q4_K : KVS_DTYPE_Q3_K;
        else if (mix == KVS_MIX_Q3_K_M)
            t = layer < 2 ? KVS_DTYPE_Q5_K : KVS_DTYPE_Q4_K;
        else if ((mix == KVS_MIX_Q4_K_M || mix == KVS_MIX_Q5_K_M) && more_bits(layer, n))
            t = KVS_DTYPE_Q6_K;
        else if (mix == KVS_MIX_Q4_K_S && layer < 4)
            t = KVS_DTYPE_Q5_K;
    } else if (has_suffix(name, "ffn_down.weight")) {
        if (mix == KVS_MIX_Q2_K)
            t = KVS_DTYPE_Q3_K;
        else if (mix == KVS_MIX_Q3_K_M)
            t = layer < n / 16 ? KVS_DTYPE_Q5_K : KVS_DTYPE_Q4_K;
        else if ((mix == KVS_MIX_Q4_K_M || mix == KVS_MIX_Q5_K_M) && more_bits(layer, n))
            t = KVS_DTYPE_Q6_K;
        else if (mix == KVS_MIX_Q4_K_S && layer < n / 8)
            t = KVS_DTYPE_Q5_K;
    } else if (has_suffix(name, "attn_output.weight")) {
        if (mix == KVS_MIX_Q2_K)
            t = KVS_DTYPE_Q3_K;
        else if (mix == KVS_MIX_Q3_K_M)
            t = KVS_DTYPE_Q4_K;
    }
    /* Rows the type's block does not divide: llama-quantize's fallbacks. */
    if (ne0 % (int64_t)kvs_dtype_block_elems(t) != 0) {
        switch (t) {
        case KVS_DTYPE_Q4_K: t = KVS_DTYPE_Q5_0; break;
        case KVS_DTYPE_Q5_K: t = KVS_DTYPE_Q5_1; break;
        case KVS_DTYPE_Q6_K: t = KVS_DTYPE_Q8_0; break;
        case KVS_DTYPE_Q2_K:
        case KVS_DTYPE_Q3_K: t = KVS_DTYPE_Q4_0; break; /* llama-quantize: IQ4_NL */
        default: break;
        }
        if (ne0 % (int64_t)kvs_dtype_block_elems(t) != 0)
            t = KVS_DTYPE_F16;
    }
    return t;
}

/* ---- random numbers: splitmix64 + Box-Muller ---- */
typedef struct rng { uint64_t s; } rng;

static uint64_t next(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float normal(rng *r)
{
    double u1 = ((next(r) >> 11) + 1.0) * 0x1.0p-53, u2 = (next(r) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* ---- the synthetic tokenizer ---- */
static kvs_status write_vocab(kvs_gguf_writer *w, int32_t n_vocab, kvs_error *err)
{
    kvs_status st = KVS_OK;
    char **tok = calloc((size_t)n_vocab, sizeof *tok);
    float *scores = calloc((size_t)n_vocab, sizeof *scores);
    int32_t *types = calloc((size_t)n_vocab, sizeof *types);
    if (!tok || !scores || !types) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    for (int32_t i = 0; i < n_vocab; i++) {
        char buf[32];
        if (i == 0)
            snprintf(buf, sizeof buf, "<unk>");
        else if (i == 1)
            snprintf(buf, sizeof buf, "<s>");
        else if (i == 2)
            snprintf(buf, sizeof buf, "</s>");
        else if (i < 3 + 256)
            snprintf(buf, sizeof buf, "<0x%02X>", i - 3);
        else
            snprintf(buf, sizeof buf, "\xe2\x96\x81tok%d", i);
        types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
        scores[i] = i < 259 ? 0.0f : -(float)i;
        if (!(tok[i] = strdup(buf))) {
            st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
            goto done;
        }
    }
    if ((st = kvs_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", err)) ||
        (st = kvs_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (size_t)n_vocab, err)) ||
        (st = kvs_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)n_vocab, err)) ||
        (st = kvs_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n_vocab, err)) ||
        (st = kvs_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1, err)) ||
        (st = kvs_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2, err)) ||
        (st = kvs_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0, err)))
        goto done;
done:
    for (int32_t i = 0; tok && i < n_vocab; i++)
        free(tok[i]);
    free(tok);
    free(scores);
    free(types);
    return st;
}

/* ---- tensors ---- */
typedef struct synth_ctx {
    kvs_gguf_writer *w;
    const kvs_synth_opts *o;  /* for the mix: o->mix, n_layers, heads */
    rng r;
    bool header_only;
    float **bufs;          /* float data kept alive until the write */
    size_t n_bufs, cap_bufs;
} synth_ctx;

static kvs_status tensor(synth_ctx *c, const char *name, kvs_dtype type, int64_t ne0, int64_t ne1, float mean,
                         float std, kvs_error *err)
{
    uint64_t ne[2] = {(uint64_t)ne0, (uint64_t)ne1};
    uint32_t nd = ne1 > 1 ? 2 : 1;
    if (c->o && c->o->mix != KVS_MIX_NONE && nd == 2)
        type = kvs_synth_mix_type(c->o->mix, name, ne0, c->o->n_layers, c->o->n_heads / c->o->n_kv_heads,
                                  !c->o->tied);
    float *data = NULL;
    if (!c->header_only) {
        size_t n = (size_t)ne0 * (size_t)ne1;
        if (!(data = malloc(n * sizeof *data)))
            return kvs_fail(err, KVS_E_NOMEM, "out of memory for tensor '%s'", name);
        for (size_t i = 0; i < n; i++)
            data[i] = mean + std * normal(&c->r);
        if (c->n_bufs == c->cap_bufs) {
            size_t cap = c->cap_bufs ? c->cap_bufs * 2 : 64;
            float **b = realloc(c->bufs, cap * sizeof *b);
            if (!b) {
                free(data);
                return kvs_fail(err, KVS_E_NOMEM, "out of memory");
            }
            c->bufs = b;
            c->cap_bufs = cap;
        }
        c->bufs[c->n_bufs++] = data;
    }
    return kvs_gguf_writer_add_tensor(c->w, name, type, nd, ne, data, err);
}

static kvs_status set_hparams(kvs_gguf_writer *w, const kvs_synth_opts *o, kvs_error *err)
{
    char k[96];
    kvs_status st;
#define U32(suffix, v)                                                                     \
    do {                                                                                   \
        snprintf(k, sizeof k, "%s.%s", o->arch, suffix);                                   \
        if ((st = kvs_gguf_writer_set_u32(w, k, (uint32_t)(v), err)) != KVS_OK)            \
            return st;                                                                     \
    } while (0)
    if ((st = kvs_gguf_writer_set_str(w, "general.architecture", o->arch, err)) ||
        (st = kvs_gguf_writer_set_str(w, "general.name", o->name ? o->name : "kvserve-synth", err)) ||
        (st = kvs_gguf_writer_set_u32(w, "general.alignment", 32, err)))
        return st;
    U32("context_length", o->n_ctx);
    U32("embedding_length", o->dim);
    U32("block_count", o->n_layers);
    U32("feed_forward_length", o->hidden_dim);
    U32("attention.head_count", o->n_heads);
    U32("attention.head_count_kv", o->n_kv_heads);
    int32_t hd = o->head_dim > 0 ? o->head_dim : o->dim / o->n_heads;
    if (o->head_dim > 0) {
        U32("attention.key_length", hd);
        U32("attention.value_length", hd);
    }
    U32("rope.dimension_count", hd);
#undef U32
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", o->arch);
    if ((st = kvs_gguf_writer_set_f32(w, k, o->norm_eps, err)))
        return st;
    snprintf(k, sizeof k, "%s.rope.freq_base", o->arch);
    return kvs_gguf_writer_set_f32(w, k, o->rope_freq_base, err);
}

kvs_status kvs_synth_write(const kvs_synth_opts *o, const char *path, kvs_error *err)
{
    if (strcmp(o->arch, "llama") && strcmp(o->arch, "qwen2") && strcmp(o->arch, "qwen3"))
        return kvs_fail(err, KVS_E_INVALID, "synth: architecture '%s' (llama, qwen2, qwen3)", o->arch);
    if (o->dim < 1 || o->n_layers < 1 || o->n_heads < 1 || o->n_kv_heads < 1 || o->hidden_dim < 1 ||
        o->n_ctx < 1 || o->n_heads % o->n_kv_heads != 0 || (o->head_dim <= 0 && o->dim % o->n_heads != 0))
        return kvs_fail(err, KVS_E_INVALID, "synth: inconsistent shape (dim %d, heads %d, kv heads %d)", o->dim,
                        o->n_heads, o->n_kv_heads);
    kvs_status st;
    synth_ctx c = {.w = kvs_gguf_writer_new(), .o = o, .r = {o->seed}, .header_only = o->header_only};
    kvs_gguf *vocab = NULL;
    if (!c.w)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    int32_t n_vocab = o->n_vocab;
    if (o->vocab_from) {
        uint64_t n;
        kvs_gguf_type et;
        if ((st = kvs_gguf_open(&vocab, o->vocab_from, err)) != KVS_OK ||
            (st = kvs_gguf_writer_copy_kv(c.w, vocab, "tokenizer.", err)) != KVS_OK ||
            (st = kvs_gguf_get_arr(vocab, "tokenizer.ggml.tokens", &et, &n, err)) != KVS_OK)
            goto done;
        if (n < 1 || n > INT32_MAX) {
            st = kvs_fail(err, KVS_E_FORMAT, "synth: '%s' has %llu tokens in tokenizer.ggml.tokens",
                          o->vocab_from, (unsigned long long)n);
            goto done;
        }
        n_vocab = (int32_t)n;
    } else if (n_vocab < 260) {
        st = kvs_fail(err, KVS_E_INVALID, "synth: the made-up vocabulary needs at least 260 tokens");
        goto done;
    } else if ((st = write_vocab(c.w, n_vocab, err)) != KVS_OK) {
        goto done;
    }
    if (o->chat_template &&
        (st = kvs_gguf_writer_set_str(c.w, "tokenizer.chat_template", o->chat_template, err)) != KVS_OK)
        goto done;
    if ((st = set_hparams(c.w, o, err)) != KVS_OK)
        goto done;
    if (o->mix != KVS_MIX_NONE && (size_t)o->mix < N_MIXES &&
        (st = kvs_gguf_writer_set_u32(c.w, "general.file_type", kvs_synth_mix_file_type(o->mix), err)) != KVS_OK)
        goto done;

    const int32_t hd = o->head_dim > 0 ? o->head_dim : o->dim / o->n_heads;
    const int64_t q = (int64_t)o->n_heads * hd, kv = (int64_t)o->n_kv_heads * hd;
    const float s = o->init_scale > 0 ? o->init_scale : 1.0f;
    const float sd = s / sqrtf((float)o->dim), sq = s / sqrtf((float)q), sh = s / sqrtf((float)o->hidden_dim);
    kvs_dtype et = o->embd_type, wt = o->wtype;
    if ((st = tensor(&c, "token_embd.weight", et, o->dim, n_vocab, 0.0f, 1.0f, err)) ||
        (st = tensor(&c, "output_norm.weight", KVS_DTYPE_F32, o->dim, 1, 1.0f, 0.1f, err)) ||
        (!o->tied && (st = tensor(&c, "output.weight", et, o->dim, n_vocab, 0.0f, sd, err))))
        goto done;
    for (int32_t l = 0; l < o->n_layers; l++) {
        char nm[64];
#define T(suffix, type, a, b, mean, std)                                                     \
        snprintf(nm, sizeof nm, "blk.%d.%s", (int)l, suffix);                              \
        if ((st = tensor(&c, nm, type, a, b, mean, std, err)) != KVS_OK)                   \
            goto done;
        T("attn_norm.weight", KVS_DTYPE_F32, o->dim, 1, 1.0f, 0.1f);
        T("attn_q.weight", wt, o->dim, q, 0.0f, sd);
        T("attn_k.weight", wt, o->dim, kv, 0.0f, sd);
        T("attn_v.weight", wt, o->dim, kv, 0.0f, sd);
        if (strcmp(o->arch, "qwen2") == 0) {
            T("attn_q.bias", KVS_DTYPE_F32, q, 1, 0.0f, 0.1f);
            T("attn_k.bias", KVS_DTYPE_F32, kv, 1, 0.0f, 0.1f);
            T("attn_v.bias", KVS_DTYPE_F32, kv, 1, 0.0f, 0.1f);
        }
        if (strcmp(o->arch, "qwen3") == 0) {
            T("attn_q_norm.weight", KVS_DTYPE_F32, hd, 1, 1.0f, 0.1f);
            T("attn_k_norm.weight", KVS_DTYPE_F32, hd, 1, 1.0f, 0.1f);
        }
        T("attn_output.weight", wt, q, o->dim, 0.0f, sq);
        T("ffn_norm.weight", KVS_DTYPE_F32, o->dim, 1, 1.0f, 0.1f);
        T("ffn_gate.weight", wt, o->dim, o->hidden_dim, 0.0f, sd);
        T("ffn_up.weight", wt, o->dim, o->hidden_dim, 0.0f, sd);
        T("ffn_down.weight", wt, o->hidden_dim, o->dim, 0.0f, sh);
#undef T
    }
    st = o->header_only ? kvs_gguf_writer_write_sparse(c.w, path, err) : kvs_gguf_writer_write(c.w, path, err);
done:
    for (size_t i = 0; i < c.n_bufs; i++)
        free(c.bufs[i]);
    free(c.bufs);
    kvs_gguf_writer_free(c.w);
    kvs_gguf_close(vocab);
    return st;
}

/* ---- converting an existing model ---- */

kvs_status kvs_synth_requantize(const kvs_synth_opts *o, const char *src, const char *path, kvs_error *err)
{
    kvs_gguf *g = NULL;
    kvs_gguf_writer *w = NULL;
    float **bufs = NULL;
    size_t n_bufs = 0;
    void *raw = NULL;
    kvs_status st = kvs_gguf_open(&g, src, err);
    if (st != KVS_OK)
        return st;
    const size_t nt = kvs_gguf_n_tensors(g);
    if (!(w = kvs_gguf_writer_new()) || !(bufs = calloc(nt ? nt : 1, sizeof *bufs))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    if ((st = kvs_gguf_writer_copy_kv(w, g, "", err)) != KVS_OK)
        goto done;
    const char *arch = NULL;
    size_t alen = 0;
    char key[128];
    uint32_t n_layers = 1, heads = 1, kv_heads = 0;
    if (kvs_gguf_get_str(g, "general.architecture", &arch, &alen, err) != KVS_OK) {
        st = kvs_fail(err, KVS_E_FORMAT, "synth --from: '%s' has no general.architecture", src);
        goto done;
    }
    snprintf(key, sizeof key, "%.*s.block_count", (int)alen, arch);
    kvs_gguf_get_u32(g, key, &n_layers, err);
    snprintf(key, sizeof key, "%.*s.attention.head_count", (int)alen, arch);
    kvs_gguf_get_u32(g, key, &heads, err);
    snprintf(key, sizeof key, "%.*s.attention.head_count_kv", (int)alen, arch);
    if (kvs_gguf_get_u32(g, key, &kv_heads, err) != KVS_OK || kv_heads == 0)
        kv_heads = heads;
    const bool has_output = kvs_gguf_find_tensor(g, "output.weight") != NULL;
    if (o->mix != KVS_MIX_NONE && (size_t)o->mix < N_MIXES &&
        (st = kvs_gguf_writer_set_u32(w, "general.file_type", kvs_synth_mix_file_type(o->mix), err)) != KVS_OK)
        goto done;
    for (size_t i = 0; i < nt; i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= t->ne[d];
        if (!kvs_dtype_computable(t->type)) {
            st = kvs_fail(err, KVS_E_UNSUPPORTED, "synth --from: tensor '%s' has type %s, which kvserve cannot read",
                          t->name, kvs_dtype_name(t->type));
            goto done;
        }
        free(raw);
        if (!(raw = malloc(t->nbytes ? t->nbytes : 1)) || !(bufs[n_bufs] = malloc(n * sizeof(float)))) {
            st = kvs_fail(err, KVS_E_NOMEM, "out of memory for tensor '%s'", t->name);
            goto done;
        }
        float *f = bufs[n_bufs++];
        if ((st = kvs_gguf_read_tensor(g, t, raw, err)) != KVS_OK)
            goto done;
        kvs_dtype_to_f32((kvs_dtype)t->type, raw, f, (size_t)n);
        kvs_dtype type = KVS_DTYPE_F32;
        const bool matrix = t->n_dims >= 2 && has_suffix(t->name, "weight");
        if (matrix && o->mix != KVS_MIX_NONE)
            type = kvs_synth_mix_type(o->mix, t->name, (int64_t)t->ne[0], (int32_t)n_layers,
                                      (int32_t)(heads / kv_heads), has_output);
        else if (matrix)
            type = strcmp(t->name, "token_embd.weight") == 0 || strcmp(t->name, "output.weight") == 0 ? o->embd_type
                                                                                                     : o->wtype;
        if ((st = kvs_gguf_writer_add_tensor(w, t->name, type, t->n_dims, t->ne, f, err)) != KVS_OK)
            goto done;
    }
    st = kvs_gguf_writer_write(w, path, err);
done:
    for (size_t i = 0; i < n_bufs; i++)
        free(bufs[i]);
    free(bufs);
    free(raw);
    kvs_gguf_writer_free(w);
    kvs_gguf_close(g);
    return st;
}
