/* Loading a Llama-family model's weights from GGUF onto a backend. */
#include "model/model.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* One tensor the model needs: its GGUF name, the shape the hyperparameters
 * imply, whether it is a norm vector (kept as f32) and where it goes. */
typedef struct tensor_spec {
    char name[64];
    int64_t ne0, ne1;      /* ne1 = 1 for vectors */
    bool is_norm;
    bool optional;
    kvs_weight *dst;
} tensor_spec;

/* Enumerate the tensors of the model (m may be NULL: shapes only).  Returns
 * the count written to specs (capacity max_specs()). */
static size_t model_specs(const kvs_model_hparams *hp, kvs_model_model *m, tensor_spec *specs)
{
    size_t n = 0;
    int64_t q_out = (int64_t)hp->n_heads * hp->head_dim, kv_out = (int64_t)hp->n_kv_heads * hp->head_dim;
#define SPEC(nm, a, b, norm, opt, field)                                                      \
    do {                                                                                     \
        tensor_spec *s = &specs[n++];                                                        \
        snprintf(s->name, sizeof s->name, "%s", nm);                                         \
        s->ne0 = (a), s->ne1 = (b), s->is_norm = (norm), s->optional = (opt);                \
        s->dst = m ? (field) : NULL;                                                         \
    } while (0)
    SPEC("token_embd.weight", hp->dim, hp->n_vocab, false, false, &m->tok_embd);
    SPEC("output_norm.weight", hp->dim, 1, true, false, &m->output_norm);
    if (!hp->tied_embeddings)
        SPEC("output.weight", hp->dim, hp->n_vocab, false, false, &m->output);
    for (int32_t l = 0; l < hp->n_layers; l++) {
        kvs_model_layer *L = m ? &m->layers[l] : NULL;
        char nm[64];
#define LSPEC(suffix, a, b, norm, field)                                                      \
        do {                                                                                 \
            snprintf(nm, sizeof nm, "blk.%d.%s", (int)l, suffix);                             \
            SPEC(nm, a, b, norm, false, L ? &L->field : NULL);                                \
        } while (0)
        LSPEC("attn_norm.weight", hp->dim, 1, true, attn_norm);
        LSPEC("attn_q.weight", hp->dim, q_out, false, wq);
        LSPEC("attn_k.weight", hp->dim, kv_out, false, wk);
        LSPEC("attn_v.weight", hp->dim, kv_out, false, wv);
        if (hp->attn_bias) {
            LSPEC("attn_q.bias", q_out, 1, true, bq);
            LSPEC("attn_k.bias", kv_out, 1, true, bk);
            LSPEC("attn_v.bias", kv_out, 1, true, bv);
        }
        LSPEC("attn_output.weight", q_out, hp->dim, false, wo);
        if (hp->qk_norm) {
            LSPEC("attn_q_norm.weight", hp->head_dim, 1, true, q_norm);
            LSPEC("attn_k_norm.weight", hp->head_dim, 1, true, k_norm);
        }
        LSPEC("ffn_norm.weight", hp->dim, 1, true, ffn_norm);
        LSPEC("ffn_gate.weight", hp->dim, hp->hidden_dim, false, w_gate);
        LSPEC("ffn_up.weight", hp->dim, hp->hidden_dim, false, w_up);
        LSPEC("ffn_down.weight", hp->hidden_dim, hp->dim, false, w_down);
#undef LSPEC
    }
#undef SPEC
    return n;
}

static size_t max_specs(const kvs_model_hparams *hp) { return 3 + 16 * (size_t)hp->n_layers; }

/* Check a spec against the file; on success *t is the file's tensor. */
static kvs_status check_tensor(const kvs_gguf *g, const tensor_spec *s, const kvs_gguf_tensor **t,
                               kvs_error *err)
{
    *t = kvs_gguf_find_tensor(g, s->name);
    if (!*t)
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%s' is missing", s->name);
    const kvs_gguf_tensor *x = *t;
    bool shape_ok = x->ne[0] == (uint64_t)s->ne0 && x->ne[1] == (uint64_t)s->ne1 && x->ne[2] == 1 &&
                    x->ne[3] == 1;
    if (!shape_ok)
        return kvs_fail(err, KVS_E_FORMAT,
                        "tensor '%s' has shape [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64
                        "], expected [%lld, %lld]",
                        s->name, x->ne[0], x->ne[1], x->ne[2], x->ne[3], (long long)s->ne0,
                        (long long)s->ne1);
    if (!kvs_dtype_computable(x->type))
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "tensor '%s' has type %s, which kvserve cannot compute with "
                        "(supported: f32, f16, bf16, q8_0, q4_0)",
                        s->name, kvs_dtype_name(x->type));
    return KVS_OK;
}

/* Bytes a tensor takes on the device: norms become f32. */
static uint64_t device_bytes(const tensor_spec *s, const kvs_gguf_tensor *t)
{
    uint64_t b = s->is_norm ? (uint64_t)s->ne0 * 4 : t->nbytes;
    return (b + KVS_WEIGHT_ALIGN - 1) / KVS_WEIGHT_ALIGN * KVS_WEIGHT_ALIGN;
}

kvs_status kvs_model_weight_bytes(const kvs_gguf *g, const kvs_model_hparams *hp, uint64_t *out,
                                  kvs_error *err)
{
    tensor_spec *specs = calloc(max_specs(hp), sizeof *specs);
    if (!specs)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    size_t n = model_specs(hp, NULL, specs);
    uint64_t total = 0;
    kvs_status st = KVS_OK;
    for (size_t i = 0; i < n; i++) {
        const kvs_gguf_tensor *t;
        if ((st = check_tensor(g, &specs[i], &t, err)) != KVS_OK)
            break;
        total += device_bytes(&specs[i], t);
    }
    free(specs);
    *out = total;
    return st;
}

/* Read tensor t into host memory `dst` as the device will hold it. */
static kvs_status read_host(const kvs_gguf *g, const tensor_spec *s, const kvs_gguf_tensor *t,
                            void *dst, void *tmp, kvs_error *err)
{
    if (!s->is_norm || t->type == KVS_DTYPE_F32)
        return kvs_gguf_read_tensor(g, t, dst, err);
    kvs_status st = kvs_gguf_read_tensor(g, t, tmp, err);
    if (st == KVS_OK)
        kvs_dtype_to_f32((kvs_dtype)t->type, tmp, dst, (size_t)s->ne0);
    return st;
}

static kvs_status map_file(kvs_model_model *m, const kvs_gguf *g, kvs_error *err)
{
    const char *path = kvs_gguf_path(g);
    if (!path)
        return kvs_fail(err, KVS_E_INVALID, "--mmap needs a model file");
    if (!m->backend->ops->caps.host_memory)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "--mmap is only available on the CPU backend");
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return kvs_fail(err, KVS_E_IO, "cannot open '%s'", path);
    uint64_t size = kvs_gguf_file_size(g);
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return kvs_fail(err, KVS_E_IO, "cannot map '%s'", path);
    m->map = p;
    m->map_bytes = size;
    return KVS_OK;
}

kvs_status kvs_model_load(kvs_model_model **out, const kvs_gguf *g, kvs_backend *b,
                          const kvs_model_load_opts *opts, kvs_error *err)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *out = NULL;
    kvs_status st;
    tensor_spec *specs = NULL;
    void *host = NULL, *tmp = NULL;
    kvs_model_model *m = calloc(1, sizeof *m);
    if (!m)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    m->backend = b;
    if ((st = kvs_model_hparams_from_gguf(g, &m->hp, err)) != KVS_OK)
        goto fail;
    m->layers = calloc((size_t)m->hp.n_layers, sizeof *m->layers);
    specs = calloc(max_specs(&m->hp), sizeof *specs);
    if (!m->layers || !specs) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    size_t n = model_specs(&m->hp, m, specs);

    uint64_t total = 0, largest = 0;
    for (size_t i = 0; i < n; i++) {
        const kvs_gguf_tensor *t;
        if ((st = check_tensor(g, &specs[i], &t, err)) != KVS_OK)
            goto fail;
        uint64_t wt = b->ops->caps.weight_dtypes;
        if (wt && !specs[i].is_norm && !(wt & KVS_DTYPE_BIT(t->type))) {
            st = kvs_fail(err, KVS_E_UNSUPPORTED, "tensor '%s' has type %s, which the %s backend cannot compute with",
                          specs[i].name, kvs_dtype_name(t->type), b->ops->name);
            goto fail;
        }
        total += device_bytes(&specs[i], t);
        if (t->nbytes > largest)
            largest = t->nbytes;
    }

    bool mmap_mode = opts && opts->use_mmap;
    if (mmap_mode) {
        if ((st = map_file(m, g, err)) != KVS_OK)
            goto fail;
        /* Norm vectors that are not f32 still need a converted copy. */
        total = 0;
        for (size_t i = 0; i < n; i++) {
            const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, specs[i].name);
            if (specs[i].is_norm && t->type != KVS_DTYPE_F32)
                total += device_bytes(&specs[i], t);
        }
        kvs_ledger_add(&b->ledger, KVS_MEM_WEIGHTS, m->map_bytes);
    }
    if ((st = kvs_backend_alloc(b, KVS_MEM_WEIGHTS, total, &m->weights, err)) != KVS_OK)
        goto fail;

    /* Stage each tensor through one host buffer of the largest size (the
     * CPU backend's to_device is a copy; on CPU we read straight into place). */
    bool direct = b->ops->caps.host_memory;
    if (!direct && !(host = malloc(largest ? largest : 1))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory staging weights");
        goto fail;
    }
    if (!(tmp = malloc(largest ? largest : 1))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory staging weights");
        goto fail;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        tensor_spec *s = &specs[i];
        const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, s->name);
        s->dst->type = s->is_norm ? KVS_DTYPE_F32 : (kvs_dtype)t->type;
        s->dst->ne0 = s->ne0;
        s->dst->ne1 = s->ne1;
        if (mmap_mode && !(s->is_norm && t->type != KVS_DTYPE_F32)) {
            s->dst->data = (const char *)m->map + t->offset;
            continue;
        }
        char *dev = (char *)m->weights.ptr + off;
        uint64_t bytes = s->is_norm ? (uint64_t)s->ne0 * 4 : t->nbytes;
        if ((st = read_host(g, s, t, direct ? (void *)dev : host, tmp, err)) != KVS_OK)
            goto fail;
        if (!direct)
            b->ops->to_device(b, dev, host, bytes);
        s->dst->data = dev;
        off += device_bytes(s, t);
    }
    if (m->hp.tied_embeddings)
        m->output = m->tok_embd;

    free(specs);
    free(host);
    free(tmp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    m->load_seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    *out = m;
    return KVS_OK;
fail:
    free(specs);
    free(host);
    free(tmp);
    kvs_model_free(m);
    return st;
}

void kvs_model_free(kvs_model_model *m)
{
    if (!m)
        return;
    if (m->map) {
        munmap(m->map, m->map_bytes);
        kvs_ledger_sub(&m->backend->ledger, KVS_MEM_WEIGHTS, m->map_bytes);
    }
    kvs_backend_release(m->backend, &m->weights);
    free(m->layers);
    free(m);
}
