/*
 * source_hf.c - a Hugging Face model directory as a model source.
 *
 *   config.json                     the class and hyperparameters (required)
 *   model.safetensors               the weights, or
 *   model.safetensors.index.json    {"weight_map": {tensor: shard file}} and the shards
 *   tokenizer_config.json           chat_template (optional)
 *   chat_template.jinja / .json     chat_template of newer checkpoints (optional)
 *   generation_config.json          EOS ids and default sampling (optional)
 *
 * config.json keys, by family (defaults as transformers' config classes):
 *   all      hidden_size, num_hidden_layers, num_attention_heads,
 *            intermediate_size, vocab_size (required); num_key_value_heads,
 *            head_dim, rms_norm_eps, max_position_embeddings, rope_theta,
 *            rope_scaling / rope_parameters {rope_type|type, factor, ...},
 *            partial_rotary_factor, tie_word_embeddings, torch_dtype|dtype
 *   Mistral  sliding_window (every layer)
 *   Qwen2/3  use_sliding_window, sliding_window, max_window_layers
 *   Gemma2   query_pre_attn_scalar, attn_logit_softcapping,
 *            final_logit_softcapping, sliding_window (even layers, or as
 *            layer_types lists), hidden_activation
 *   Phi3     sliding_window, partial_rotary_factor
 */
#include "model/source.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/safetensors.h"

#define MAX_SHARDS 4096

/* ---- config.json --------------------------------------------------------- */

typedef struct cfg {
    json_t *root;
    json_t *rope;        /* rope_scaling or rope_parameters object, or NULL */
    kvs_error *err;
} cfg;

/* An integer key; *out unchanged when absent (or null) and !required. */
static kvs_status cfg_int(cfg *c, json_t *obj, const char *key, bool required, int64_t lo, int64_t hi,
                          int32_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required)
            return kvs_fail(c->err, KVS_E_FORMAT, "config.json: \"%s\" is missing", key);
        return KVS_OK;
    }
    if (!json_is_integer(v))
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: \"%s\" is not an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: \"%s\" = %lld is out of range (%lld..%lld)", key,
                        (long long)x, (long long)lo, (long long)hi);
    *out = (int32_t)x;
    return KVS_OK;
}

static kvs_status cfg_num(cfg *c, json_t *obj, const char *key, double lo, double hi, float *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_number(v))
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: \"%s\" is not a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: \"%s\" = %g is out of range (%g..%g)", key, x, lo, hi);
    *out = (float)x;
    return KVS_OK;
}

static kvs_status cfg_bool(cfg *c, json_t *obj, const char *key, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_boolean(v))
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: \"%s\" is not true or false", key);
    *out = json_is_true(v);
    return KVS_OK;
}

static kvs_status parse_rope(cfg *c, kvs_model_hparams *hp)
{
    json_t *r = c->rope;
    if (!r)
        return KVS_OK;
    kvs_status st;
    json_t *ty = json_object_get(r, "rope_type");
    if (!ty)
        ty = json_object_get(r, "type");
    if (ty && !json_is_string(ty))
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: rope_scaling type is not a string");
    const char *t = ty ? json_string_value(ty) : "default";
    if (strcmp(t, "default") == 0)
        return KVS_OK;
    if (strcmp(t, "linear") == 0)
        hp->rope_scaling = KVS_ROPE_LINEAR;
    else if (strcmp(t, "dynamic") == 0)
        hp->rope_scaling = KVS_ROPE_DYNAMIC;
    else if (strcmp(t, "llama3") == 0)
        hp->rope_scaling = KVS_ROPE_LLAMA3;
    else if (strcmp(t, "yarn") == 0)
        hp->rope_scaling = KVS_ROPE_YARN;
    else
        return kvs_fail(c->err, KVS_E_UNSUPPORTED,
                        "config.json: rope_scaling type '%.32s' is not supported (default, linear, dynamic, "
                        "llama3, yarn)",
                        t);
    hp->rope_factor = 0.0f;
    if ((st = cfg_num(c, r, "factor", 1.0, 1024.0, &hp->rope_factor)))
        return st;
    if (hp->rope_factor == 0.0f)
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: rope_scaling \"factor\" is missing");
    hp->rope_orig_ctx = hp->n_ctx_train;
    if ((st = cfg_int(c, r, "original_max_position_embeddings", false, 1, 1 << 24, &hp->rope_orig_ctx)))
        return st;
    if (hp->rope_scaling == KVS_ROPE_LINEAR)
        hp->rope_freq_scale = 1.0f / hp->rope_factor;
    if (hp->rope_scaling == KVS_ROPE_DYNAMIC)  /* vLLM: serves max_position * factor */
        hp->n_ctx_train = (int32_t)fmin((double)hp->n_ctx_train * hp->rope_factor, (double)(1 << 24));
    if (hp->rope_scaling == KVS_ROPE_LLAMA3) {
        hp->rope_low_freq_factor = 0.0f;
        hp->rope_high_freq_factor = 0.0f;
        if ((st = cfg_num(c, r, "low_freq_factor", 0.0, 1e6, &hp->rope_low_freq_factor)) ||
            (st = cfg_num(c, r, "high_freq_factor", 0.0, 1e6, &hp->rope_high_freq_factor)))
            return st;
        if (!json_object_get(r, "original_max_position_embeddings"))
            return kvs_fail(c->err, KVS_E_FORMAT,
                            "config.json: llama3 rope_scaling needs \"original_max_position_embeddings\"");
    }
    if (hp->rope_scaling == KVS_ROPE_YARN) {
        float mscale = 0.0f, mscale_all = 0.0f;
        if ((st = cfg_num(c, r, "beta_fast", 0.0, 1e6, &hp->rope_beta_fast)) ||
            (st = cfg_num(c, r, "beta_slow", 0.0, 1e6, &hp->rope_beta_slow)) ||
            (st = cfg_num(c, r, "attention_factor", 0.0, 1e3, &hp->rope_attn_factor)) ||
            (st = cfg_num(c, r, "mscale", 0.0, 1e3, &mscale)) ||
            (st = cfg_num(c, r, "mscale_all_dim", 0.0, 1e3, &mscale_all)))
            return st;
        if (hp->rope_attn_factor == 0.0f && mscale > 0.0f && mscale_all > 0.0f) {
            double f = hp->rope_factor;
            double a = f <= 1 ? 1.0 : 0.1 * mscale * log(f) + 1.0, b = f <= 1 ? 1.0 : 0.1 * mscale_all * log(f) + 1.0;
            hp->rope_attn_factor = (float)(a / b);
        }
    }
    return KVS_OK;
}

/* Sliding-window layers given as Gemma's / newer transformers' layer_types. */
static kvs_status parse_layer_types(cfg *c, kvs_model_hparams *hp)
{
    json_t *lt = json_object_get(c->root, "layer_types");
    if (!lt || json_is_null(lt))
        return KVS_OK;
    if (!json_is_array(lt) || json_array_size(lt) != (size_t)hp->n_layers)
        return kvs_fail(c->err, KVS_E_FORMAT, "config.json: \"layer_types\" must list %d layers", hp->n_layers);
    bool all = true, none = true, even = true, from = true;
    int32_t first = -1;
    for (size_t i = 0; i < json_array_size(lt); i++) {
        const char *s = json_string_value(json_array_get(lt, i));
        if (!s || (strcmp(s, "sliding_attention") != 0 && strcmp(s, "full_attention") != 0))
            return kvs_fail(c->err, KVS_E_FORMAT, "config.json: layer_types[%zu] is not sliding_attention "
                            "or full_attention", i);
        bool sw = strcmp(s, "sliding_attention") == 0;
        if (sw && first < 0)
            first = (int32_t)i;
        from = from && (sw || first < 0);
        all = all && sw;
        none = none && !sw;
        even = even && sw == (i % 2 == 0);
    }
    if (none)
        hp->swa_mode = KVS_SWA_NONE;
    else if (all)
        hp->swa_mode = KVS_SWA_ALL;
    else if (even)
        hp->swa_mode = KVS_SWA_EVEN;
    else if (from) {
        hp->swa_mode = KVS_SWA_FROM;
        hp->swa_from = first;
    } else
        return kvs_fail(c->err, KVS_E_UNSUPPORTED, "config.json: this pattern of layer_types is not supported "
                        "(all, none, alternating from sliding, or sliding from a layer on)");
    return KVS_OK;
}

static const char *model_type_class(const char *mt)
{
    static const char *const MAP[][2] = {
        {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"},
        {"qwen3", "Qwen3ForCausalLM"}, {"gemma2", "Gemma2ForCausalLM"}, {"phi3", "Phi3ForCausalLM"},
    };
    for (size_t i = 0; i < sizeof MAP / sizeof MAP[0]; i++)
        if (strcmp(MAP[i][0], mt) == 0)
            return MAP[i][1];
    return NULL;
}

kvs_status kvs_hf_config_parse(const char *text, size_t len, const kvs_arch_info **arch_out,
                               kvs_model_hparams *hp, char **dtype, kvs_error *err)
{
    memset(hp, 0, sizeof *hp);
    if (dtype)
        *dtype = NULL;
    json_error_t jerr;
    cfg c = {.err = err};
    c.root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!c.root)
        return kvs_fail(err, KVS_E_FORMAT, "config.json: invalid JSON: %s (line %d)", jerr.text, jerr.line);
    kvs_status st = KVS_OK;
    if (!json_is_object(c.root)) {
        st = kvs_fail(err, KVS_E_FORMAT, "config.json: not a JSON object");
        goto done;
    }
    json_t *archs = json_object_get(c.root, "architectures");
    const char *cls = NULL;
    if (json_is_array(archs) && json_array_size(archs) > 0)
        cls = json_string_value(json_array_get(archs, 0));
    if (!cls && json_is_string(json_object_get(c.root, "model_type")))
        cls = model_type_class(json_string_value(json_object_get(c.root, "model_type")));
    if (!cls) {
        st = kvs_fail(err, KVS_E_FORMAT, "config.json: \"architectures\" is missing");
        goto done;
    }
    const kvs_arch_info *ai = kvs_arch_by_hf(cls);
    if (!ai) {
        st = kvs_fail(err, KVS_E_UNSUPPORTED, "config.json: architecture '%.60s' is not supported (supported: %s)",
                      cls, kvs_arch_hf_names());
        goto done;
    }
    *arch_out = ai;
    kvs_model_hparams_set_arch(hp, ai);
    hp->rope_neox = true;   /* every HF family rotates halves */
    hp->rope_freq_base = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    hp->norm_eps = ai->id == KVS_ARCH_PHI3 ? 1e-5f : 1e-6f;
    hp->n_ctx_train = 2048;
    json_t *R = c.root;
    if ((st = cfg_int(&c, R, "hidden_size", true, 1, 1 << 20, &hp->dim)) ||
        (st = cfg_int(&c, R, "num_hidden_layers", true, 1, 1024, &hp->n_layers)) ||
        (st = cfg_int(&c, R, "num_attention_heads", true, 1, 4096, &hp->n_heads)) ||
        (st = cfg_int(&c, R, "intermediate_size", true, 1, 1 << 20, &hp->hidden_dim)) ||
        (st = cfg_int(&c, R, "vocab_size", true, 1, 1 << 24, &hp->n_vocab)) ||
        (st = cfg_int(&c, R, "max_position_embeddings", false, 1, 1 << 24, &hp->n_ctx_train)) ||
        (st = cfg_num(&c, R, "rms_norm_eps", 1e-12, 0.5, &hp->norm_eps)))
        goto done;
    hp->n_kv_heads = hp->n_heads;
    hp->head_dim = hp->dim / hp->n_heads;
    if ((st = cfg_int(&c, R, "num_key_value_heads", false, 1, 4096, &hp->n_kv_heads)) ||
        (st = cfg_int(&c, R, "head_dim", false, 2, 65536, &hp->head_dim)))
        goto done;
    if (hp->head_dim * hp->n_heads != hp->dim && !json_is_integer(json_object_get(R, "head_dim"))) {
        st = kvs_fail(err, KVS_E_FORMAT, "config.json: hidden_size %d is not divisible by num_attention_heads %d",
                      hp->dim, hp->n_heads);
        goto done;
    }
    /* RoPE: rope_theta at the top, or inside rope_parameters (transformers v5). */
    json_t *rp = json_object_get(R, "rope_parameters"), *rs = json_object_get(R, "rope_scaling");
    c.rope = json_is_object(rp) ? rp : json_is_object(rs) ? rs : NULL;
    if ((rp && !json_is_null(rp) && !json_is_object(rp)) || (rs && !json_is_null(rs) && !json_is_object(rs))) {
        st = kvs_fail(err, KVS_E_FORMAT, "config.json: rope_scaling / rope_parameters is not an object");
        goto done;
    }
    if ((st = cfg_num(&c, R, "rope_theta", 1e-3, 1e12, &hp->rope_freq_base)) ||
        (c.rope && (st = cfg_num(&c, c.rope, "rope_theta", 1e-3, 1e12, &hp->rope_freq_base))))
        goto done;
    float prf = 1.0f;
    if ((st = cfg_num(&c, R, "partial_rotary_factor", 0.0, 1.0, &prf)) ||
        (c.rope && (st = cfg_num(&c, c.rope, "partial_rotary_factor", 0.0, 1.0, &prf))))
        goto done;
    hp->rot_dim = (int32_t)((float)hp->head_dim * prf);
    hp->rot_dim -= hp->rot_dim % 2;
    if ((st = parse_rope(&c, hp)) != KVS_OK)
        goto done;

    bool tied = ai->always_tied || ai->id == KVS_ARCH_GEMMA2;
    if ((st = cfg_bool(&c, R, "tie_word_embeddings", &tied)))
        goto done;
    hp->tied_embeddings = tied || ai->always_tied;

    /* The family's deviations. */
    const char *act_key = ai->id == KVS_ARCH_GEMMA2 ? "hidden_activation" : "hidden_act";
    json_t *act = json_object_get(R, act_key);
    if (ai->id == KVS_ARCH_GEMMA2 && (!act || json_is_null(act)))
        act = json_object_get(R, "hidden_act");
    if (act && json_is_string(act)) {
        const char *a = json_string_value(act);
        bool ok = hp->act == KVS_ACT_SILU ? strcmp(a, "silu") == 0
                                          : (strcmp(a, "gelu_pytorch_tanh") == 0 || strcmp(a, "gelu_tanh") == 0);
        if (!ok) {
            st = kvs_fail(err, KVS_E_UNSUPPORTED, "config.json: %s '%.32s' is not supported for %s (expected %s)",
                          act_key, a, cls, hp->act == KVS_ACT_SILU ? "silu" : "gelu_pytorch_tanh");
            goto done;
        }
    }
    bool flag = false;
    if ((st = cfg_bool(&c, R, "attention_bias", &flag)))
        goto done;
    if (flag && !ai->attn_bias) {
        st = kvs_fail(err, KVS_E_UNSUPPORTED, "config.json: attention_bias is not supported for %s", cls);
        goto done;
    }
    flag = false;
    if ((st = cfg_bool(&c, R, "mlp_bias", &flag)))
        goto done;
    if (flag) {
        st = kvs_fail(err, KVS_E_UNSUPPORTED, "config.json: mlp_bias is not supported");
        goto done;
    }
    int32_t window = 0;
    if ((st = cfg_int(&c, R, "sliding_window", false, 1, 1 << 30, &window)))
        goto done;
    if (ai->id == KVS_ARCH_QWEN2 || ai->id == KVS_ARCH_QWEN3) {
        bool use = false;
        if ((st = cfg_bool(&c, R, "use_sliding_window", &use)))
            goto done;
        if (use && window > 0) {
            hp->sliding_window = window;
            hp->swa_mode = KVS_SWA_FROM;
            hp->swa_from = hp->n_layers;
            if ((st = cfg_int(&c, R, "max_window_layers", false, 0, 1024, &hp->swa_from)))
                goto done;
        }
    } else if (window > 0 && strcmp(cls, "LlamaForCausalLM") != 0) {
        hp->sliding_window = window;
        hp->swa_mode = ai->id == KVS_ARCH_GEMMA2 ? KVS_SWA_EVEN : KVS_SWA_ALL;
    }
    if (ai->id == KVS_ARCH_GEMMA2) {
        float qpas = 256.0f;
        hp->attn_softcap = 50.0f;
        hp->final_softcap = 30.0f;
        json_t *v;
        if ((v = json_object_get(R, "attn_logit_softcapping")) && json_is_null(v))
            hp->attn_softcap = 0.0f;
        if ((v = json_object_get(R, "final_logit_softcapping")) && json_is_null(v))
            hp->final_softcap = 0.0f;
        if ((st = cfg_num(&c, R, "query_pre_attn_scalar", 1e-6, 1e9, &qpas)) ||
            (st = cfg_num(&c, R, "attn_logit_softcapping", 0.0, 1e9, &hp->attn_softcap)) ||
            (st = cfg_num(&c, R, "final_logit_softcapping", 0.0, 1e9, &hp->final_softcap)))
            goto done;
        hp->attn_scale = 1.0f / sqrtf(qpas);
        hp->embed_scale = sqrtf((float)hp->dim);
        if (hp->sliding_window > 0 && (st = parse_layer_types(&c, hp)) != KVS_OK)
            goto done;
    } else if (hp->sliding_window > 0 && (st = parse_layer_types(&c, hp)) != KVS_OK) {
        goto done;
    }
    json_t *d = json_object_get(R, "dtype");
    if (!json_is_string(d))
        d = json_object_get(R, "torch_dtype");
    const char *dname = json_is_string(d) ? json_string_value(d) : NULL;
    /* transformers and vLLM multiply by sqrt(hidden) held in the model's
     * dtype (59.866 -> 59.75 in bf16 for Gemma-2-9B): do the same. */
    if (hp->embed_scale > 0.0f && dname && strcmp(dname, "bfloat16") == 0)
        hp->embed_scale = kvs_bf16_to_fp32(kvs_fp32_to_bf16(hp->embed_scale));
    else if (hp->embed_scale > 0.0f && dname && strcmp(dname, "float16") == 0)
        hp->embed_scale = kvs_fp16_to_fp32(kvs_fp32_to_fp16(hp->embed_scale));
    if (dtype && dname && !(*dtype = strdup(dname))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    if ((st = kvs_model_hparams_check(hp, err)) != KVS_OK)
        kvs_fail_wrap(err, "config.json");
done:
    json_decref(c.root);
    if (st != KVS_OK && dtype) {
        free(*dtype);
        *dtype = NULL;
    }
    return st;
}

/* ---- files ---------------------------------------------------------------- */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Read a whole (small) file; KVS_E_NOT_FOUND when absent. */
static kvs_status slurp(const char *path, char **out, size_t *len, kvs_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kvs_fail(err, errno == ENOENT ? KVS_E_NOT_FOUND : KVS_E_IO, "cannot open '%s': %s", path,
                        strerror(errno));
    kvs_status st = KVS_OK;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        st = kvs_fail(err, KVS_E_IO, "cannot read '%s'", path);
        goto done;
    }
    long n = ftell(f);
    if (n < 0 || n > (64L << 20)) {
        st = kvs_fail(err, KVS_E_FORMAT, "'%s' is too large (%ld bytes)", path, n);
        goto done;
    }
    rewind(f);
    if (!(buf = malloc((size_t)n + 1))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        st = kvs_fail(err, KVS_E_IO, "cannot read '%s'", path);
        goto done;
    }
    buf[n] = 0;
    *out = buf;
    *len = (size_t)n;
    buf = NULL;
done:
    free(buf);
    fclose(f);
    return st;
}

static json_t *load_json(const char *dir, const char *name, bool required, kvs_status *st, kvs_error *err)
{
    char *path = join(dir, name);
    *st = KVS_OK;
    if (!path) {
        *st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        return NULL;
    }
    json_t *j = NULL;
    if (!file_exists(path)) {
        if (required)
            *st = kvs_fail(err, KVS_E_NOT_FOUND, "'%s': %s is missing", dir, name);
    } else {
        json_error_t jerr;
        j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
            *st = kvs_fail(err, KVS_E_FORMAT, "'%s': invalid JSON: %s (line %d)", path, jerr.text, jerr.line);
        else if (!json_is_object(j)) {
            *st = kvs_fail(err, KVS_E_FORMAT, "'%s': not a JSON object", path);
            json_decref(j);
            j = NULL;
        }
    }
    free(path);
    return j;
}

/* One safetensors tensor known to the directory. */
typedef struct st_ref {
    const char *name;
    uint32_t file;
    const kvs_st_tensor *t;
} st_ref;

static int ref_cmp(const void *a, const void *b)
{
    return strcmp(((const st_ref *)a)->name, ((const st_ref *)b)->name);
}

typedef struct hf_state {
    kvs_st_file **shards;
    uint32_t n_shards;
    st_ref *refs;
    size_t n_refs;
} hf_state;

static void hf_state_free(hf_state *h)
{
    for (uint32_t i = 0; i < h->n_shards; i++)
        kvs_st_close(h->shards[i]);
    free(h->shards);
    free(h->refs);
}

static kvs_status add_shard(kvs_model_source *s, hf_state *h, const char *dir, const char *name, kvs_error *err)
{
    if (strchr(name, '/') || strcmp(name, "..") == 0 || !*name)
        return kvs_fail(err, KVS_E_FORMAT, "'%s': shard name '%.100s' is not a file name in the directory", dir, name);
    for (uint32_t i = 0; i < s->n_files; i++)
        if (strcmp(strrchr(s->files[i], '/') + 1, name) == 0)
            return KVS_OK;
    if (s->n_files == MAX_SHARDS)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "'%s': more than %d shards", dir, MAX_SHARDS);
    char **files = realloc(s->files, (s->n_files + 1) * sizeof *files);
    if (files)
        s->files = files;
    uint64_t *sizes = realloc(s->file_sizes, (s->n_files + 1) * sizeof *sizes);
    if (sizes)
        s->file_sizes = sizes;
    kvs_st_file **sh = realloc(h->shards, (h->n_shards + 1) * sizeof *sh);
    if (sh)
        h->shards = sh;
    char *path = join(dir, name);
    if (!files || !sizes || !sh || !path) {
        free(path);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    }
    if (!file_exists(path)) {
        kvs_status st = kvs_fail(err, KVS_E_NOT_FOUND, "'%s': shard %s is missing", dir, name);
        free(path);
        return st;
    }
    kvs_st_file *f;
    kvs_status st = kvs_st_open(&f, path, err);
    if (st != KVS_OK) {
        free(path);
        return st;
    }
    s->files[s->n_files] = path;
    s->file_sizes[s->n_files] = kvs_st_file_size(f);
    s->n_files++;
    h->shards[h->n_shards++] = f;
    return KVS_OK;
}

static uint32_t shard_index(const kvs_model_source *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_files; i++)
        if (strcmp(strrchr(s->files[i], '/') + 1, name) == 0)
            return i;
    return UINT32_MAX;
}

static kvs_status open_weights(kvs_model_source *s, hf_state *h, const char *dir, kvs_error *err)
{
    kvs_status st;
    json_t *idx = load_json(dir, "model.safetensors.index.json", false, &st, err);
    if (st != KVS_OK)
        return st;
    if (idx) {
        json_t *wm = json_object_get(idx, "weight_map");
        if (!json_is_object(wm) || json_object_size(wm) == 0) {
            json_decref(idx);
            return kvs_fail(err, KVS_E_FORMAT, "'%s/model.safetensors.index.json': \"weight_map\" is missing or empty",
                            dir);
        }
        const char *k;
        json_t *v;
        json_object_foreach(wm, k, v) {
            if (!json_is_string(v)) {
                json_decref(idx);
                return kvs_fail(err, KVS_E_FORMAT, "'%s/model.safetensors.index.json': weight_map['%.100s'] is not a string",
                                dir, k);
            }
            if ((st = add_shard(s, h, dir, json_string_value(v), err)) != KVS_OK) {
                json_decref(idx);
                return st;
            }
        }
        /* Every tensor the index names must be in the shard it names. */
        json_object_foreach(wm, k, v) {
            uint32_t fi = shard_index(s, json_string_value(v));
            if (!kvs_st_find(h->shards[fi], k)) {
                st = kvs_fail(err, KVS_E_FORMAT, "'%s': tensor '%.100s' is not in shard %s as the index says",
                              dir, k, json_string_value(v));
                json_decref(idx);
                return st;
            }
        }
        json_decref(idx);
    } else {
        char *single = join(dir, "model.safetensors");
        bool have = single && file_exists(single);
        free(single);
        if (!have) {
            char *bin = join(dir, "pytorch_model.bin");
            bool pt = bin && file_exists(bin);
            free(bin);
            return kvs_fail(err, KVS_E_NOT_FOUND, "'%s': no model.safetensors or model.safetensors.index.json%s", dir,
                            pt ? " (pytorch_model.bin is not supported: convert it to safetensors)" : "");
        }
        if ((st = add_shard(s, h, dir, "model.safetensors", err)) != KVS_OK)
            return st;
    }
    size_t total = 0;
    for (uint32_t i = 0; i < h->n_shards; i++)
        total += kvs_st_n_tensors(h->shards[i]);
    if (!(h->refs = calloc(total ? total : 1, sizeof *h->refs)))
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < h->n_shards; i++)
        for (size_t j = 0; j < kvs_st_n_tensors(h->shards[i]); j++) {
            const kvs_st_tensor *t = kvs_st_tensor_at(h->shards[i], j);
            h->refs[h->n_refs++] = (st_ref){t->name, i, t};
        }
    qsort(h->refs, h->n_refs, sizeof *h->refs, ref_cmp);
    for (size_t i = 1; i < h->n_refs; i++)
        if (strcmp(h->refs[i].name, h->refs[i - 1].name) == 0)
            return kvs_fail(err, KVS_E_FORMAT, "'%s': tensor '%.100s' is in two shards (%s and %s)", dir,
                            h->refs[i].name, s->files[h->refs[i - 1].file], s->files[h->refs[i].file]);
    return KVS_OK;
}

static const st_ref *find_ref(const hf_state *h, const char *name)
{
    st_ref key = {.name = name};
    return bsearch(&key, h->refs, h->n_refs, sizeof *h->refs, ref_cmp);
}

/* Map the checkpoint's tensors to canonical names through the arch table. */
static kvs_status map_tensors(kvs_model_source *s, hf_state *h, kvs_error *err)
{
    const kvs_arch_info *ai = s->arch;
    size_t cap = ai->n_tensors * (size_t)s->hp.n_layers + ai->n_tensors;
    if (!(s->tensors = calloc(cap, sizeof *s->tensors)))
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    size_t used = 0;
    for (size_t k = 0; k < ai->n_tensors; k++) {
        const kvs_arch_tensor *at = &ai->tensors[k];
        int32_t n = (at->flags & KVS_T_LAYER) ? s->hp.n_layers : 1;
        if ((at->flags & KVS_T_OUTPUT) && s->hp.tied_embeddings)
            continue;
        for (int32_t l = 0; l < n; l++) {
            char hfname[192];
            kvs_source_tensor *t = &s->tensors[s->n_tensors];
            snprintf(hfname, sizeof hfname, at->hf, (int)l);
            snprintf(t->name, sizeof t->name, at->gguf, (int)l);
            const st_ref *r = find_ref(h, hfname);
            if (!r)
                continue;   /* the loader names what is missing */
            used++;
            if (!(t->file_name = strdup(hfname)))
                return kvs_fail(err, KVS_E_NOMEM, "out of memory");
            s->n_tensors++;
            const kvs_st_tensor *x = r->t;
            kvs_dtype dt;
            t->known_type = kvs_st_dtype_to_kvs(x->dtype, &dt);
            t->type = t->known_type ? (uint32_t)dt : UINT32_MAX;
            t->type_name = x->dtype;
            if (x->n_dims > 4 || x->n_dims == 0)
                return kvs_fail(err, KVS_E_FORMAT, "'%s': tensor '%s' has %u dimensions", s->files[r->file], hfname,
                                x->n_dims);
            t->n_dims = x->n_dims;
            for (int d = 0; d < 4; d++)
                t->ne[d] = d < (int)x->n_dims ? x->shape[x->n_dims - 1 - d] : 1;
            t->nbytes = x->nbytes;
            t->file = r->file;
            t->offset = x->offset;
            t->plus_one = (at->flags & KVS_T_PLUS_ONE) != 0;
        }
    }
    s->n_ignored = h->n_refs - used;
    return KVS_OK;
}

/* ---- tokenizer_config.json, chat template, generation_config.json -------- */

static kvs_status read_chat_template(kvs_model_source *s, const char *dir, kvs_error *err)
{
    kvs_status st;
    /* Newer checkpoints keep the template beside the config. */
    char *p = join(dir, "chat_template.jinja");
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    size_t len;
    st = slurp(p, &s->chat_template, &len, err);
    free(p);
    if (st == KVS_OK)
        return KVS_OK;
    if (st != KVS_E_NOT_FOUND)
        return st;
    json_t *tc = load_json(dir, "tokenizer_config.json", false, &st, err);
    if (st != KVS_OK)
        return st;
    json_t *ct = json_object_get(tc, "chat_template");
    if (!ct) {
        json_decref(tc);
        tc = load_json(dir, "chat_template.json", false, &st, err);
        if (st != KVS_OK)
            return st;
        ct = json_object_get(tc, "chat_template");
    }
    const char *t = NULL;
    if (json_is_string(ct)) {
        t = json_string_value(ct);
    } else if (json_is_array(ct)) {  /* [{"name": "default", "template": ...}, ...] */
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            const char *nm = json_string_value(json_object_get(e, "name"));
            if (nm && strcmp(nm, "default") == 0)
                t = json_string_value(json_object_get(e, "template"));
        }
    }
    if (t && !(s->chat_template = strdup(t)))
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
    json_decref(tc);
    return st;
}

static kvs_status gen_num(json_t *g, const char *key, const char *path, double lo, double hi, bool *has, float *out,
                          kvs_error *err)
{
    json_t *v = json_object_get(g, key);
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return kvs_fail(err, KVS_E_FORMAT, "'%s': \"%s\" is not a number in %g..%g", path, key, lo, hi);
    *has = true;
    *out = (float)json_number_value(v);
    return KVS_OK;
}

static kvs_status read_generation_config(kvs_model_source *s, const char *dir, kvs_error *err)
{
    kvs_status st;
    kvs_gen_defaults *gd = &s->gen;
    gd->bos = -1;
    json_t *g = load_json(dir, "generation_config.json", false, &st, err);
    if (!g)
        return st;
    char path[600];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    float f = 0.0f;
    /* As vLLM's --generation-config auto: these keys, whatever do_sample says. */
    if ((st = gen_num(g, "temperature", path, 0.0, 1e6, &gd->has_temperature, &gd->temperature, err)) ||
        (st = gen_num(g, "top_p", path, 0.0, 1.0, &gd->has_top_p, &gd->top_p, err)) ||
        (st = gen_num(g, "min_p", path, 0.0, 1.0, &gd->has_min_p, &gd->min_p, err)) ||
        (st = gen_num(g, "repetition_penalty", path, 1e-6, 1e6, &gd->has_repetition_penalty,
                      &gd->repetition_penalty, err)))
        goto done;
    bool has = false;
    if ((st = gen_num(g, "top_k", path, 0.0, 1e9, &has, &f, err)))
        goto done;
    if (has) {
        gd->has_top_k = true;
        gd->top_k = (int32_t)f;
    }
    has = false;
    if ((st = gen_num(g, "max_new_tokens", path, 1.0, 1e9, &has, &f, err)))
        goto done;
    if (has) {
        gd->has_max_new_tokens = true;
        gd->max_new_tokens = (int32_t)f;
    }
    json_t *eos = json_object_get(g, "eos_token_id");
    if (json_is_integer(eos)) {
        gd->eos[gd->n_eos++] = (int32_t)json_integer_value(eos);
    } else if (json_is_array(eos)) {
        size_t i;
        json_t *e;
        json_array_foreach(eos, i, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX) {
                st = kvs_fail(err, KVS_E_FORMAT, "'%s': eos_token_id[%zu] is not a token id", path, i);
                goto done;
            }
            if (gd->n_eos < 16)
                gd->eos[gd->n_eos++] = (int32_t)json_integer_value(e);
        }
    }
    json_t *bos = json_object_get(g, "bos_token_id");
    if (json_is_integer(bos) && json_integer_value(bos) >= 0 && json_integer_value(bos) <= INT32_MAX)
        gd->bos = (int32_t)json_integer_value(bos);
done:
    json_decref(g);
    return st;
}

kvs_status kvs_source_open_hf(kvs_model_source *s, const char *dir, kvs_error *err)
{
    kvs_status st;
    hf_state h = {0};
    char *path = join(dir, "config.json");
    char *text = NULL;
    size_t len = 0;
    if (!path)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    st = slurp(path, &text, &len, err);
    if (st == KVS_E_NOT_FOUND)
        st = kvs_fail(err, KVS_E_NOT_FOUND, "'%s': config.json is missing (not a Hugging Face model directory?)", dir);
    if (st != KVS_OK)
        goto done;
    if ((st = kvs_hf_config_parse(text, len, &s->arch, &s->hp, &s->config_dtype, err)) != KVS_OK) {
        kvs_fail_wrap(err, "'%s'", dir);
        goto done;
    }
    if ((st = open_weights(s, &h, dir, err)) != KVS_OK || (st = map_tensors(s, &h, err)) != KVS_OK)
        goto done;
    const kvs_source_tensor *q = kvs_source_find(s, s->arch->fused_qkv ? "blk.0.attn_qkv.weight" : "blk.0.attn_q.weight");
    const kvs_source_tensor *e = kvs_source_find(s, "token_embd.weight");
    s->hp.weight_type = q && q->known_type ? q->type : e && e->known_type ? e->type : KVS_DTYPE_F32;
    if ((st = read_chat_template(s, dir, err)) != KVS_OK || (st = read_generation_config(s, dir, err)) != KVS_OK)
        goto done;
done:
    /* type names must outlive the shard headers */
    for (size_t i = 0; i < s->n_tensors; i++) {
        const char *n = s->tensors[i].type_name;
        static const char *const NAMES[] = {"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64", "U8", "U16",
                                            "U32", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "C64", "F4",
                                            "F6_E2M3", "F6_E3M2"};
        const char *k = "?";
        for (size_t j = 0; n && j < sizeof NAMES / sizeof NAMES[0]; j++)
            if (strcmp(NAMES[j], n) == 0)
                k = NAMES[j];
        s->tensors[i].type_name = k;
    }
    hf_state_free(&h);
    free(text);
    free(path);
    return st;
}
