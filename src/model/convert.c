/* Converting between GGUF files and Hugging Face directories (see convert.h). */
#include "model/convert.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/safetensors.h"

void kvs_convert_permute_qk(const void *src, void *dst, int32_t n_head, int32_t head_dim, uint64_t row_bytes,
                            bool to_gguf)
{
    const int32_t half = head_dim / 2;
    for (int32_t h = 0; h < n_head; h++)
        for (int32_t i = 0; i < half; i++)
            for (int32_t a = 0; a < 2; a++) {
                uint64_t hf = (uint64_t)h * head_dim + (uint64_t)a * half + i;  /* rotate-half row */
                uint64_t gg = (uint64_t)h * head_dim + 2u * i + a;               /* interleaved row */
                uint64_t from = to_gguf ? hf : gg, to = to_gguf ? gg : hf;
                memcpy((char *)dst + to * row_bytes, (const char *)src + from * row_bytes, row_bytes);
            }
}

/* One tensor of the family, as the converter walks them. */
typedef struct conv_tensor {
    char gguf[96], hf[192];
    const kvs_arch_tensor *at;
    const kvs_source_tensor *t;
    int64_t ne0, ne1;
} conv_tensor;

/* The family's tensors in table order, each found in the source. */
static kvs_status walk(const kvs_model_source *src, conv_tensor **out, size_t *n, kvs_error *err)
{
    const kvs_model_hparams *hp = &src->hp;
    const kvs_arch_info *ai = kvs_arch_get(hp->arch);
    conv_tensor *c = calloc(ai->n_tensors * ((size_t)hp->n_layers + 1), sizeof *c);
    *n = 0;
    if (!c)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    for (size_t k = 0; k < ai->n_tensors; k++) {
        const kvs_arch_tensor *at = &ai->tensors[k];
        if ((at->flags & KVS_T_OUTPUT) && hp->tied_embeddings)
            continue;
        int32_t layers = (at->flags & KVS_T_LAYER) ? hp->n_layers : 1;
        for (int32_t l = 0; l < layers; l++) {
            conv_tensor *x = &c[*n];
            snprintf(x->gguf, sizeof x->gguf, at->gguf, (int)l);
            snprintf(x->hf, sizeof x->hf, at->hf, (int)l);
            x->at = at;
            x->ne0 = kvs_model_dim(hp, at->ne0);
            x->ne1 = kvs_model_dim(hp, at->ne1);
            x->t = kvs_source_find(src, x->gguf);
            kvs_status st = KVS_OK;
            if (!x->t)
                st = kvs_fail(err, KVS_E_FORMAT, "tensor '%s' is missing", src->kind == KVS_SOURCE_HF ? x->hf : x->gguf);
            else if (x->t->ne[0] != (uint64_t)x->ne0 || x->t->ne[1] != (uint64_t)x->ne1 || !x->t->known_type ||
                     !kvs_dtype_computable(x->t->type))
                st = kvs_fail(err, KVS_E_FORMAT, "tensor '%s' has an unexpected shape or type %s",
                              src->kind == KVS_SOURCE_HF ? x->hf : x->gguf, x->t->type_name);
            if (st != KVS_OK) {
                free(c);
                return st;
            }
            (*n)++;
        }
    }
    *out = c;
    return KVS_OK;
}

/* Read a tensor as float32 [ne1][ne0]. */
static kvs_status read_f32(const kvs_model_source *src, const conv_tensor *c, float **out, kvs_error *err)
{
    uint64_t n = (uint64_t)c->ne0 * (uint64_t)c->ne1;
    void *raw = malloc(c->t->nbytes ? c->t->nbytes : 1);
    float *f = malloc(n * sizeof *f);
    kvs_status st = raw && f ? kvs_source_read(src, c->t, raw, err) : kvs_fail(err, KVS_E_NOMEM, "out of memory");
    if (st == KVS_OK)
        for (int64_t r = 0; r < c->ne1; r++) {
            uint64_t rb = 0;
            kvs_dtype_row_bytes(c->t->type, (uint64_t)c->ne0, &rb);
            kvs_dtype_to_f32((kvs_dtype)c->t->type, (const char *)raw + (uint64_t)r * rb, f + (uint64_t)r * c->ne0,
                             (size_t)c->ne0);
        }
    free(raw);
    if (st != KVS_OK) {
        free(f);
        return st;
    }
    *out = f;
    return KVS_OK;
}

/* Which q/k permutation a tensor needs (0: none), for llama only. */
static int32_t qk_heads(const kvs_model_hparams *hp, const conv_tensor *c)
{
    if (hp->arch != KVS_ARCH_LLAMA)
        return 0;
    if (c->at->slot == KVS_S_WQ)
        return hp->n_heads;
    if (c->at->slot == KVS_S_WK)
        return hp->n_kv_heads;
    return 0;
}

static kvs_status encode(kvs_dtype t, const float *f, int64_t ne0, int64_t ne1, void **out, uint64_t *bytes,
                         kvs_error *err)
{
    uint64_t rb;
    if (!kvs_dtype_row_bytes(t, (uint64_t)ne0, &rb))
        return kvs_fail(err, KVS_E_INVALID, "rows of %lld elements cannot be stored as %s", (long long)ne0,
                        kvs_dtype_name(t));
    *bytes = rb * (uint64_t)ne1;
    if (!(*out = malloc(*bytes ? *bytes : 1)))
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    for (int64_t r = 0; r < ne1; r++)
        kvs_dtype_from_f32(t, f + (uint64_t)r * ne0, (char *)*out + (uint64_t)r * rb, (size_t)ne0);
    return KVS_OK;
}

/* Encodes the c->ne0 x c->ne1 floats f as `t` into a new buffer *out of *bytes; takes f and frees it
 * in every case. When `permute` and the tensor is a llama q/k projection, its rows are first reordered
 * (kvs_convert_permute_qk): to llama.cpp's interleaved layout when `to_interleaved`, else back to HF's
 * rotate-half. */
static kvs_status permute_encode(const kvs_model_hparams *hp, const conv_tensor *c, float *f, bool permute,
                                 bool to_interleaved, kvs_dtype t, void **out, uint64_t *bytes, kvs_error *err)
{
    int32_t heads = qk_heads(hp, c);
    if (heads && permute) {
        float *g = malloc((size_t)(c->ne0 * c->ne1) * sizeof *g);
        if (!g) {
            free(f);
            return kvs_fail(err, KVS_E_NOMEM, "out of memory");
        }
        kvs_convert_permute_qk(f, g, heads, hp->head_dim, (uint64_t)c->ne0 * sizeof *f, to_interleaved);
        free(f);
        f = g;
    }
    kvs_status st = encode(t, f, c->ne0, c->ne1, out, bytes, err);
    free(f);
    return st;
}

/* ---- to GGUF ------------------------------------------------------------- */

static kvs_status set_meta(kvs_gguf_writer *w, const kvs_model_source *src, kvs_error *err)
{
    const kvs_model_hparams *hp = &src->hp;
    const char *a = kvs_arch_get(hp->arch)->gguf_name;
    char key[128];
    kvs_status st;
#define U32(suffix, v)                                                       \
    do {                                                                     \
        snprintf(key, sizeof key, "%s.%s", a, suffix);                       \
        if ((st = kvs_gguf_writer_set_u32(w, key, (uint32_t)(v), err)))      \
            return st;                                                       \
    } while (0)
#define F32(suffix, v)                                                       \
    do {                                                                     \
        snprintf(key, sizeof key, "%s.%s", a, suffix);                       \
        if ((st = kvs_gguf_writer_set_f32(w, key, (float)(v), err)))         \
            return st;                                                       \
    } while (0)
    if ((st = kvs_gguf_writer_set_str(w, "general.architecture", a, err)))
        return st;
    const char *name = strrchr(src->path, '/');
    if ((st = kvs_gguf_writer_set_str(w, "general.name", name && name[1] ? name + 1 : src->path, err)))
        return st;
    U32("context_length", hp->n_ctx_train);
    U32("embedding_length", hp->dim);
    U32("block_count", hp->n_layers);
    U32("feed_forward_length", hp->hidden_dim);
    U32("attention.head_count", hp->n_heads);
    U32("attention.head_count_kv", hp->n_kv_heads);
    U32("attention.key_length", hp->head_dim);
    U32("attention.value_length", hp->head_dim);
    U32("rope.dimension_count", hp->rot_dim);
    U32("vocab_size", hp->n_vocab);
    F32("attention.layer_norm_rms_epsilon", hp->norm_eps);
    F32("rope.freq_base", hp->rope_freq_base);
    if (hp->rope_scaling == KVS_ROPE_LINEAR || hp->rope_scaling == KVS_ROPE_YARN) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        if ((st = kvs_gguf_writer_set_str(w, key, hp->rope_scaling == KVS_ROPE_LINEAR ? "linear" : "yarn", err)))
            return st;
        F32("rope.scaling.factor", hp->rope_factor);
        if (hp->rope_scaling == KVS_ROPE_YARN) {
            U32("rope.scaling.original_context_length", hp->rope_orig_ctx);
            if (hp->rope_beta_fast > 0)
                F32("rope.scaling.yarn_beta_fast", hp->rope_beta_fast);
            if (hp->rope_beta_slow > 0)
                F32("rope.scaling.yarn_beta_slow", hp->rope_beta_slow);
            if (hp->rope_attn_factor > 0)
                F32("rope.scaling.attn_factor", hp->rope_attn_factor);
        }
    }
    if (hp->attn_softcap > 0)
        F32("attn_logit_softcapping", hp->attn_softcap);
    if (hp->final_softcap > 0)
        F32("final_logit_softcapping", hp->final_softcap);
    if (hp->attn_scale > 0 && fabsf(hp->attn_scale * sqrtf((float)hp->head_dim) - 1.0f) > 1e-6f)
        F32("attention.scale", hp->attn_scale);
    if (hp->swa_mode != KVS_SWA_NONE)
        U32("attention.sliding_window", hp->sliding_window);
#undef U32
#undef F32
    return KVS_OK;
}

typedef struct buf_list {
    void **p;
    size_t n, cap;
} buf_list;

static bool keep(buf_list *b, void *p)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        void **q = realloc(b->p, cap * sizeof *q);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    b->p[b->n++] = p;
    return true;
}

kvs_status kvs_convert_to_gguf(const kvs_model_source *src, const char *out, const kvs_convert_opts *o,
                               kvs_error *err)
{
    const kvs_model_hparams *hp = &src->hp;
    if (hp->rope_scaling == KVS_ROPE_DYNAMIC)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "convert: dynamic RoPE scaling has no GGUF form in kvserve yet");
    if (hp->swa_mode == KVS_SWA_FROM)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "convert: a sliding window on only some layers (Qwen2 "
                        "max_window_layers) has no GGUF form");
    if (hp->swa_mode == KVS_SWA_EVEN && hp->arch != KVS_ARCH_GEMMA2)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "convert: alternating sliding window outside Gemma 2");
    kvs_dtype type = o && o->type_set ? o->type : (kvs_dtype)hp->weight_type;
    if (!(o && o->type_set) && src->config_dtype) {
        if (strcmp(src->config_dtype, "bfloat16") == 0)
            type = KVS_DTYPE_BF16;
        else if (strcmp(src->config_dtype, "float16") == 0)
            type = KVS_DTYPE_F16;
        else if (strcmp(src->config_dtype, "float32") == 0)
            type = KVS_DTYPE_F32;
    }
    if (!kvs_dtype_computable(type))
        return kvs_fail(err, KVS_E_INVALID, "convert: type %s cannot be written", kvs_dtype_name(type));
    FILE *warn = o ? o->warn : NULL;
    conv_tensor *ct = NULL;
    size_t n = 0;
    buf_list bufs = {0};
    kvs_tokenizer *tok = NULL;
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    kvs_status st;
    if (!w)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    if ((st = set_meta(w, src, err)) != KVS_OK || (st = walk(src, &ct, &n, err)) != KVS_OK)
        goto done;
    kvs_error terr;
    if (kvs_source_tokenizer(src, &tok, &terr) != KVS_OK || kvs_tok_write_gguf_meta(tok, w, &terr) != KVS_OK) {
        if (warn)
            fprintf(warn, "kvserve convert: warning: the tokenizer was not converted: %s\n", terr.msg);
    }
    if (src->chat_template && (st = kvs_gguf_writer_set_str(w, "tokenizer.chat_template", src->chat_template, err)))
        goto done;
    if (o && o->mix != KVS_MIX_NONE &&
        (st = kvs_gguf_writer_set_u32(w, "general.file_type", kvs_synth_mix_file_type(o->mix), err)) != KVS_OK)
        goto done;
    bool fallback_warned = false;
    for (size_t i = 0; i < n; i++) {
        conv_tensor *c = &ct[i];
        bool norm = (c->at->flags & KVS_T_NORM) != 0;
        kvs_dtype t = norm ? KVS_DTYPE_F32 : type;
        if (!norm && o && o->mix != KVS_MIX_NONE && c->ne1 > 1)
            t = kvs_synth_mix_type(o->mix, c->gguf, c->ne0, hp->n_layers, hp->n_heads / hp->n_kv_heads,
                                   !hp->tied_embeddings);
        uint64_t rb;
        if (!kvs_dtype_row_bytes(t, (uint64_t)c->ne0, &rb)) {
            if (warn && !fallback_warned)
                fprintf(warn, "kvserve convert: warning: '%s' has rows of %lld, not a multiple of %s blocks: "
                        "stored as f16 (and others like it)\n", c->gguf, (long long)c->ne0, kvs_dtype_name(t));
            fallback_warned = true;
            t = KVS_DTYPE_F16;
        }
        float *f;
        if ((st = read_f32(src, c, &f, err)) != KVS_OK)
            goto done;
        if (c->t->plus_one)
            for (int64_t j = 0; j < c->ne0 * c->ne1; j++)
                f[j] += 1.0f;
        void *data;
        uint64_t bytes;
        /* HF layout -> llama.cpp's interleaved rows */
        st = permute_encode(hp, c, f, hp->rope_neox, true, t, &data, &bytes, err);
        if (st != KVS_OK)
            goto done;
        if (!keep(&bufs, data)) {
            free(data);
            st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
            goto done;
        }
        uint64_t ne[2] = {(uint64_t)c->ne0, (uint64_t)c->ne1};
        if ((st = kvs_gguf_writer_add_tensor_raw(w, c->gguf, t, c->ne1 == 1 ? 1 : 2, ne, data, bytes, err)))
            goto done;
    }
    if (hp->rope_scaling == KVS_ROPE_LLAMA3 || hp->rope_scaling == KVS_ROPE_FACTORS) {
        /* llama.cpp's form: factor[i] = plain inv_freq / scaled inv_freq */
        int half = hp->rot_dim / 2;
        double *inv = malloc((size_t)half * sizeof *inv);
        float *ff = malloc((size_t)half * sizeof *ff);
        if (!inv || !ff || !keep(&bufs, ff)) {
            free(inv);
            free(ff);
            st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
            goto done;
        }
        float ms;
        kvs_model_rope_inv_freq(hp, inv, &ms);
        if (hp->rope_scaling == KVS_ROPE_FACTORS) {
            const kvs_source_tensor *t = kvs_source_find(src, "rope_freqs.weight");
            if (!t || t->ne[0] != (uint64_t)half || t->type != KVS_DTYPE_F32) {
                free(inv);
                st = kvs_fail(err, KVS_E_FORMAT, "rope_freqs.weight must be %d f32 values", half);
                goto done;
            }
            st = kvs_source_read(src, t, ff, err);
        } else {
            for (int i = 0; i < half; i++)
                ff[i] = (float)(pow(hp->rope_freq_base, -2.0 * i / hp->rot_dim) / inv[i]);
        }
        free(inv);
        uint64_t ne[1] = {(uint64_t)half};
        if (st != KVS_OK ||
            (st = kvs_gguf_writer_add_tensor_raw(w, "rope_freqs.weight", KVS_DTYPE_F32, 1, ne, ff,
                                                 (uint64_t)half * sizeof *ff, err)))
            goto done;
    }
    st = kvs_gguf_writer_write(w, out, err);
done:
    for (size_t i = 0; i < bufs.n; i++)
        free(bufs.p[i]);
    free(bufs.p);
    free(ct);
    kvs_tok_free(tok);
    kvs_gguf_writer_free(w);
    return st;
}

/* ---- to HF --------------------------------------------------------------- */

/* A float as the shortest decimal that reads back as the same float. */
static json_t *jfloat(float v)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if ((float)strtod(buf, NULL) == v)
            break;
    }
    return json_real(strtod(buf, NULL));
}

static const char *hf_class(const kvs_model_hparams *hp)
{
    if (hp->arch == KVS_ARCH_LLAMA && hp->swa_mode == KVS_SWA_ALL)
        return "MistralForCausalLM";
    return kvs_arch_get(hp->arch)->hf_classes[0];
}

static const char *torch_name(kvs_dtype t)
{
    return t == KVS_DTYPE_BF16 ? "bfloat16" : t == KVS_DTYPE_F16 ? "float16" : "float32";
}

static json_t *hf_config(const kvs_model_hparams *hp, kvs_dtype t, const kvs_tokenizer *tok)
{
    static const char *const TYPES[] = {"llama", "qwen2", "qwen3", "gemma2", "phi3"};
    const char *cls = hf_class(hp);
    json_t *c = json_object();
    json_object_set_new(c, "architectures", json_pack("[s]", cls));
    json_object_set_new(c, "model_type", json_string(strcmp(cls, "MistralForCausalLM") == 0 ? "mistral" : TYPES[hp->arch]));
    json_object_set_new(c, "hidden_size", json_integer(hp->dim));
    json_object_set_new(c, "num_hidden_layers", json_integer(hp->n_layers));
    json_object_set_new(c, "num_attention_heads", json_integer(hp->n_heads));
    json_object_set_new(c, "num_key_value_heads", json_integer(hp->n_kv_heads));
    json_object_set_new(c, "head_dim", json_integer(hp->head_dim));
    json_object_set_new(c, "intermediate_size", json_integer(hp->hidden_dim));
    json_object_set_new(c, "vocab_size", json_integer(hp->n_vocab));
    json_object_set_new(c, "max_position_embeddings", json_integer(hp->n_ctx_train));
    json_object_set_new(c, "rms_norm_eps", jfloat(hp->norm_eps));
    json_object_set_new(c, "rope_theta", jfloat(hp->rope_freq_base));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(hp->tied_embeddings));
    json_object_set_new(c, "torch_dtype", json_string(torch_name(t)));
    json_object_set_new(c, hp->arch == KVS_ARCH_GEMMA2 ? "hidden_activation" : "hidden_act",
                        json_string(hp->act == KVS_ACT_GELU_TANH ? "gelu_pytorch_tanh" : "silu"));
    if (hp->rot_dim != hp->head_dim)
        json_object_set_new(c, "partial_rotary_factor", json_real((double)hp->rot_dim / hp->head_dim));
    if (hp->rope_scaling == KVS_ROPE_LINEAR || hp->rope_scaling == KVS_ROPE_DYNAMIC)
        json_object_set_new(c, "rope_scaling", json_pack("{s:s, s:f}", "rope_type",
                                                         hp->rope_scaling == KVS_ROPE_LINEAR ? "linear" : "dynamic",
                                                         "factor", (double)hp->rope_factor));
    else if (hp->rope_scaling == KVS_ROPE_LLAMA3)
        json_object_set_new(c, "rope_scaling", json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
                                                         (double)hp->rope_factor, "low_freq_factor",
                                                         (double)hp->rope_low_freq_factor, "high_freq_factor",
                                                         (double)hp->rope_high_freq_factor,
                                                         "original_max_position_embeddings", hp->rope_orig_ctx));
    else if (hp->rope_scaling == KVS_ROPE_YARN) {
        json_t *r = json_pack("{s:s, s:f, s:i}", "rope_type", "yarn", "factor", (double)hp->rope_factor,
                              "original_max_position_embeddings", hp->rope_orig_ctx);
        if (hp->rope_beta_fast > 0)
            json_object_set_new(r, "beta_fast", jfloat(hp->rope_beta_fast));
        if (hp->rope_beta_slow > 0)
            json_object_set_new(r, "beta_slow", jfloat(hp->rope_beta_slow));
        if (hp->rope_attn_factor > 0)
            json_object_set_new(r, "attention_factor", jfloat(hp->rope_attn_factor));
        json_object_set_new(c, "rope_scaling", r);
    }
    if (hp->swa_mode != KVS_SWA_NONE)
        json_object_set_new(c, "sliding_window", json_integer(hp->sliding_window));
    if (hp->swa_mode == KVS_SWA_FROM) {
        json_object_set_new(c, "use_sliding_window", json_true());
        json_object_set_new(c, "max_window_layers", json_integer(hp->swa_from));
    }
    if (hp->arch == KVS_ARCH_GEMMA2) {
        float s = hp->attn_scale > 0 ? hp->attn_scale : 1.0f / sqrtf((float)hp->head_dim);
        json_object_set_new(c, "query_pre_attn_scalar", json_real(round(1.0 / ((double)s * s) * 1e4) / 1e4));
        json_object_set_new(c, "attn_logit_softcapping", hp->attn_softcap > 0 ? jfloat(hp->attn_softcap) : json_null());
        json_object_set_new(c, "final_logit_softcapping",
                            hp->final_softcap > 0 ? jfloat(hp->final_softcap) : json_null());
        if (hp->swa_mode == KVS_SWA_NONE)
            json_object_set_new(c, "sliding_window", json_integer(hp->n_ctx_train));
    }
    if (tok && kvs_tok_bos(tok) >= 0)
        json_object_set_new(c, "bos_token_id", json_integer(kvs_tok_bos(tok)));
    if (tok && kvs_tok_eos(tok) >= 0)
        json_object_set_new(c, "eos_token_id", json_integer(kvs_tok_eos(tok)));
    return c;
}

static kvs_status write_json(json_t *j, const char *dir, const char *name, kvs_error *err)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = j ? json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : -1;
    json_decref(j);
    return rc == 0 ? KVS_OK : kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
}

kvs_status kvs_convert_to_hf(const kvs_model_source *src, const char *dir, const kvs_convert_opts *o,
                             kvs_error *err)
{
    const kvs_model_hparams *hp = &src->hp;
    if (hp->rope_scaling == KVS_ROPE_FACTORS)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "convert: rope_freqs.weight (per-frequency RoPE factors) has no "
                        "config.json form");
    FILE *warn = o ? o->warn : NULL;
    int shards = o && o->shards > 0 ? o->shards : 1;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return kvs_fail(err, KVS_E_IO, "cannot create '%s': %s", dir, strerror(errno));
    conv_tensor *ct = NULL;
    size_t n = 0;
    kvs_st_write_tensor *wt = NULL;
    kvs_tokenizer *tok = NULL;
    kvs_status st = walk(src, &ct, &n, err);
    if (st != KVS_OK)
        return st;
    if (!(wt = calloc(n ? n : 1, sizeof *wt))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    kvs_dtype out_type = KVS_DTYPE_F32;
    for (size_t i = 0; i < n; i++) {
        conv_tensor *c = &ct[i];
        kvs_dtype t = (kvs_dtype)c->t->type;
        if (o && o->type_set)
            t = o->type;
        else if (t != KVS_DTYPE_F32 && t != KVS_DTYPE_F16 && t != KVS_DTYPE_BF16)
            t = KVS_DTYPE_F32;
        if (!kvs_st_dtype_name(t)) {
            st = kvs_fail(err, KVS_E_INVALID, "convert: safetensors cannot hold %s", kvs_dtype_name(t));
            goto done;
        }
        if (!(c->at->flags & KVS_T_NORM))
            out_type = t;
        float *f;
        if ((st = read_f32(src, c, &f, err)) != KVS_OK)
            goto done;
        if ((c->at->flags & KVS_T_PLUS_ONE) && src->kind == KVS_SOURCE_GGUF)
            for (int64_t j = 0; j < c->ne0 * c->ne1; j++)
                f[j] -= 1.0f;
        void *data;
        uint64_t bytes;
        /* llama.cpp's interleaved rows -> rotate-half */
        st = permute_encode(hp, c, f, !hp->rope_neox, false, t, &data, &bytes, err);
        if (st != KVS_OK)
            goto done;
        wt[i] = (kvs_st_write_tensor){.name = c->hf, .type = t, .n_dims = c->ne1 == 1 ? 1 : 2, .data = data,
                                      .nbytes = bytes};
        if (c->ne1 == 1)
            wt[i].shape[0] = (uint64_t)c->ne0;
        else {
            wt[i].shape[0] = (uint64_t)c->ne1;
            wt[i].shape[1] = (uint64_t)c->ne0;
        }
    }
    char path[1024];
    if (shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if ((st = kvs_st_write(path, wt, n, err)) != KVS_OK)
            goto done;
    } else {
        json_t *wm = json_object();
        uint64_t total = 0;
        size_t per = (n + (size_t)shards - 1) / (size_t)shards;
        for (int s = 0; s < shards; s++) {
            char fn[64];
            snprintf(fn, sizeof fn, "model-%05d-of-%05d.safetensors", s + 1, shards);
            size_t a = (size_t)s * per, b = a + per < n ? a + per : n;
            snprintf(path, sizeof path, "%s/%s", dir, fn);
            if ((st = kvs_st_write(path, wt + (a < n ? a : n), b > a ? b - a : 0, err)) != KVS_OK) {
                json_decref(wm);
                goto done;
            }
            for (size_t i = a; i < b; i++) {
                json_object_set_new(wm, wt[i].name, json_string(fn));
                total += wt[i].nbytes;
            }
        }
        if ((st = write_json(json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", wm),
                             dir, "model.safetensors.index.json", err)) != KVS_OK)
            goto done;
    }
    kvs_error terr;
    if (kvs_source_tokenizer(src, &tok, &terr) != KVS_OK || kvs_tok_write_hf(tok, dir, &terr) != KVS_OK) {
        if (warn)
            fprintf(warn, "kvserve convert: warning: the tokenizer was not converted: %s\n", terr.msg);
    }
    if ((st = write_json(hf_config(hp, out_type, tok), dir, "config.json", err)) != KVS_OK)
        goto done;
    if (tok) {
        json_t *g = json_object();
        if (kvs_tok_bos(tok) >= 0)
            json_object_set_new(g, "bos_token_id", json_integer(kvs_tok_bos(tok)));
        if (kvs_tok_eos(tok) >= 0)
            json_object_set_new(g, "eos_token_id", json_integer(kvs_tok_eos(tok)));
        if ((st = write_json(g, dir, "generation_config.json", err)) != KVS_OK)
            goto done;
    }
    if (src->chat_template) {
        snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
        FILE *f = fopen(path, "w");
        if (!f || fputs(src->chat_template, f) < 0) {
            if (f)
                fclose(f);
            st = kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
            goto done;
        }
        if (fclose(f) != 0) {
            st = kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
            goto done;
        }
    }
done:
    for (size_t i = 0; wt && i < n; i++)
        free((void *)wt[i].data);
    free(wt);
    free(ct);
    kvs_tok_free(tok);
    return st;
}
