/* Loading a model's weights from a model source onto a backend, driven by
 * the architecture table (arch.h). */
#include "model/model.h"

#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "model/source.h"

/* One tensor the model needs: its canonical name, its name in the source,
 * the shape the hyperparameters imply, whether it is a norm vector (kept
 * as f32) and where it goes. */
typedef struct tensor_spec {
    char name[96];
    char src_name[192];
    int64_t ne0, ne1;      /* ne1 = 1 for vectors */
    bool is_norm;
    kvs_slot slot;
    int32_t layer;         /* -1 for model-level tensors */
} tensor_spec;

static kvs_weight *slot_ptr(kvs_model_model *m, const tensor_spec *s)
{
    kvs_model_layer *L = s->layer >= 0 ? &m->layers[s->layer] : NULL;
    switch (s->slot) {
    case KVS_S_TOK_EMBD: return &m->tok_embd;
    case KVS_S_OUTPUT_NORM: return &m->output_norm;
    case KVS_S_OUTPUT: return &m->output;
    case KVS_S_ATTN_NORM: return &L->attn_norm;
    case KVS_S_WQ: return &L->wq;
    case KVS_S_WK: return &L->wk;
    case KVS_S_WV: return &L->wv;
    case KVS_S_WQKV: return &L->wqkv;
    case KVS_S_WO: return &L->wo;
    case KVS_S_BQ: return &L->bq;
    case KVS_S_BK: return &L->bk;
    case KVS_S_BV: return &L->bv;
    case KVS_S_Q_NORM: return &L->q_norm;
    case KVS_S_K_NORM: return &L->k_norm;
    case KVS_S_POST_ATTN_NORM: return &L->post_attn_norm;
    case KVS_S_FFN_NORM: return &L->ffn_norm;
    case KVS_S_GATE: return &L->w_gate;
    case KVS_S_UP: return &L->w_up;
    case KVS_S_GATE_UP: return &L->w_gate_up;
    case KVS_S_DOWN: return &L->w_down;
    case KVS_S_POST_FFW_NORM: return &L->post_ffw_norm;
    }
    return NULL;
}

/* Enumerate the tensors of the model from the table.  *n gets the count. */
static tensor_spec *model_specs(const kvs_model_source *src, const kvs_model_hparams *hp, size_t *n,
                                kvs_error *err)
{
    const kvs_arch_info *ai = kvs_arch_get(hp->arch);
    tensor_spec *specs = calloc(ai->n_tensors * ((size_t)hp->n_layers + 1), sizeof *specs);
    *n = 0;
    if (!specs) {
        kvs_fail(err, KVS_E_NOMEM, "out of memory");
        return NULL;
    }
    bool hf = src->kind == KVS_SOURCE_HF;
    for (size_t k = 0; k < ai->n_tensors; k++) {
        const kvs_arch_tensor *at = &ai->tensors[k];
        if ((at->flags & KVS_T_OUTPUT) && hp->tied_embeddings)
            continue;
        int32_t layers = (at->flags & KVS_T_LAYER) ? hp->n_layers : 1;
        for (int32_t l = 0; l < layers; l++) {
            tensor_spec *s = &specs[(*n)++];
            snprintf(s->name, sizeof s->name, at->gguf, (int)l);
            snprintf(s->src_name, sizeof s->src_name, hf ? at->hf : at->gguf, (int)l);
            s->ne0 = kvs_model_dim(hp, at->ne0);
            s->ne1 = kvs_model_dim(hp, at->ne1);
            s->is_norm = (at->flags & KVS_T_NORM) != 0;
            s->slot = at->slot;
            s->layer = (at->flags & KVS_T_LAYER) ? l : -1;
        }
    }
    return specs;
}

/* Check a spec against the source; on success *t is the source's tensor. */
static kvs_status check_tensor(const kvs_model_source *src, const tensor_spec *s, const kvs_source_tensor **t,
                               kvs_error *err)
{
    *t = kvs_source_find(src, s->name);
    const char *where = src->kind == KVS_SOURCE_HF ? src->path : NULL;
    if (!*t) {
        if (where)
            return kvs_fail(err, KVS_E_FORMAT, "'%s': tensor '%s' is missing from the checkpoint", where, s->src_name);
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%s' is missing", s->name);
    }
    const kvs_source_tensor *x = *t;
    bool shape_ok = x->ne[0] == (uint64_t)s->ne0 && x->ne[1] == (uint64_t)s->ne1 && x->ne[2] == 1 && x->ne[3] == 1;
    if (!shape_ok) {
        if (where)  /* HF order: rows first */
            return kvs_fail(err, KVS_E_FORMAT,
                            "'%s': tensor '%s' in %s has shape [%" PRIu64 ", %" PRIu64
                            "], but config.json implies [%lld, %lld]",
                            where, s->src_name, strrchr(src->files[x->file], '/') + 1, x->ne[1], x->ne[0],
                            (long long)s->ne1, (long long)s->ne0);
        return kvs_fail(err, KVS_E_FORMAT,
                        "tensor '%s' has shape [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64
                        "], expected [%lld, %lld]",
                        s->name, x->ne[0], x->ne[1], x->ne[2], x->ne[3], (long long)s->ne0, (long long)s->ne1);
    }
    if ((!x->known_type || !kvs_dtype_computable(x->type)) && where)
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "'%s': tensor '%s' in %s has type %s, which kvserve cannot compute with "
                        "(safetensors: F32, F16, BF16)",
                        where, s->src_name, strrchr(src->files[x->file], '/') + 1, x->type_name);
    if (!x->known_type || !kvs_dtype_computable(x->type))
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "tensor '%s' has type %s, which kvserve cannot compute with "
                        "(supported: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K)",
                        s->src_name, x->type_name);
    return KVS_OK;
}

static uint64_t round_align(uint64_t b) { return (b + KVS_WEIGHT_ALIGN - 1) / KVS_WEIGHT_ALIGN * KVS_WEIGHT_ALIGN; }

/* True when the device copy differs from the file bytes (a norm in
 * another type, or a Gemma HF norm that gets +1). */
static bool needs_convert(const tensor_spec *s, const kvs_source_tensor *t)
{
    return s->is_norm && (t->type != KVS_DTYPE_F32 || t->plus_one);
}

/* With mmap a tensor is used in place when aligned for its element loads. */
static bool mappable(const tensor_spec *s, const kvs_source_tensor *t)
{
    return !needs_convert(s, t) && t->offset % 4 == 0;
}

/* Bytes a tensor takes on the device: norms become f32. */
static uint64_t device_bytes(const tensor_spec *s, const kvs_source_tensor *t)
{
    return round_align(s->is_norm ? (uint64_t)s->ne0 * 4 : t->nbytes);
}

static uint64_t rope_table_bytes(const kvs_model_hparams *hp)
{
    return kvs_model_rope_table(hp) ? round_align((uint64_t)(hp->rot_dim / 2) * sizeof(double)) : 0;
}

kvs_status kvs_model_source_weight_bytes(const kvs_model_source *src, bool use_mmap, uint64_t *out, kvs_error *err)
{
    *out = 0;
    size_t n;
    tensor_spec *specs = model_specs(src, &src->hp, &n, err);
    if (!specs)
        return KVS_E_NOMEM;
    uint64_t total = rope_table_bytes(&src->hp);
    if (use_mmap)
        for (uint32_t f = 0; f < src->n_files; f++)
            total += src->file_sizes[f];
    kvs_status st = KVS_OK;
    for (size_t i = 0; i < n; i++) {
        const kvs_source_tensor *t;
        if ((st = check_tensor(src, &specs[i], &t, err)) != KVS_OK)
            break;
        if (!use_mmap || !mappable(&specs[i], t))
            total += device_bytes(&specs[i], t);
    }
    free(specs);
    *out = total;
    return st;
}

kvs_status kvs_model_weight_bytes(const kvs_gguf *g, const kvs_model_hparams *hp, uint64_t *out, kvs_error *err)
{
    kvs_model_source *src;
    kvs_status st = kvs_source_from_gguf(&src, g, err);
    if (st != KVS_OK)
        return st;
    src->hp = *hp;
    st = kvs_model_source_weight_bytes(src, false, out, err);
    kvs_source_close(src);
    return st;
}

/* Read tensor t into host memory `dst` as the device will hold it. */
static kvs_status read_host(const kvs_model_source *src, const tensor_spec *s, const kvs_source_tensor *t,
                            void *dst, void *tmp, kvs_error *err)
{
    if (!needs_convert(s, t))
        return kvs_source_read(src, t, dst, err);
    kvs_status st = kvs_source_read(src, t, tmp, err);
    if (st != KVS_OK)
        return st;
    float *y = dst;
    kvs_dtype_to_f32((kvs_dtype)t->type, tmp, y, (size_t)s->ne0);
    if (t->plus_one)
        for (int64_t i = 0; i < s->ne0; i++)
            y[i] += 1.0f;
    return KVS_OK;
}

static kvs_status map_files(kvs_model_model *m, const kvs_model_source *src, kvs_error *err)
{
    if (!m->backend->ops->caps.host_memory)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "--mmap is only available on the CPU backend");
    m->maps = calloc(src->n_files, sizeof *m->maps);
    m->map_sizes = calloc(src->n_files, sizeof *m->map_sizes);
    if (!m->maps || !m->map_sizes)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < src->n_files; i++) {
        const char *path = src->files[i];
        if (!path || !*path)
            return kvs_fail(err, KVS_E_INVALID, "--mmap needs a model file");
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            return kvs_fail(err, KVS_E_IO, "cannot open '%s'", path);
        uint64_t size = src->file_sizes[i];
        void *p = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
        close(fd);
        if (p == MAP_FAILED)
            return kvs_fail(err, KVS_E_IO, "cannot map '%s'", path);
        m->maps[i] = p;
        m->map_sizes[i] = size;
        m->n_maps = i + 1;
        m->map_bytes += size;
        kvs_ledger_add(&m->backend->ledger, KVS_MEM_WEIGHTS, size);
        if (i == 0)
            m->map = p;
    }
    return KVS_OK;
}

/* Progress of the bulk read, as a share of every tensor's bytes. */
typedef struct load_progress {
    const kvs_model_load_opts *opts;
    uint64_t file_bytes, base;
} load_progress;

static void bulk_progress(void *ctx, uint64_t done, uint64_t total, uint32_t file, uint32_t n_files)
{
    (void)total;
    const load_progress *lp = ctx;
    lp->opts->progress(lp->opts->progress_ctx, lp->base + done, lp->file_bytes, file, n_files);
}

static int by_file_offset(const void *a, const void *b, void *ctx)
{
    const kvs_source_tensor *const *t = ctx;
    const kvs_source_tensor *x = t[*(const size_t *)a], *y = t[*(const size_t *)b];
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Row views of a fused tensor: rows [r0, r0 + rows) of w. */
static kvs_weight rows_of(const kvs_weight *w, int64_t r0, int64_t rows)
{
    uint64_t rb = 0;
    kvs_dtype_row_bytes(w->type, (uint64_t)w->ne0, &rb);
    return (kvs_weight){(const char *)w->data + (uint64_t)r0 * rb, w->type, w->ne0, rows};
}

/* Divide inv_freq by the file's per-frequency factors (rope_freqs.weight). */
static kvs_status apply_rope_factors(const kvs_model_source *src, const kvs_model_hparams *hp, double *inv,
                                     kvs_error *err)
{
    const kvs_source_tensor *t = kvs_source_find(src, "rope_freqs.weight");
    int half = hp->rot_dim / 2;
    if (!t || t->ne[0] != (uint64_t)half || t->ne[1] != 1 || !t->known_type || t->type != KVS_DTYPE_F32)
        return kvs_fail(err, KVS_E_FORMAT, "rope_freqs.weight must be %d f32 values", half);
    float *f = malloc((size_t)half * sizeof *f);
    if (!f)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    kvs_status st = kvs_source_read(src, t, f, err);
    for (int i = 0; st == KVS_OK && i < half; i++) {
        if (!(f[i] > 0.0f && isfinite(f[i])))
            st = kvs_fail(err, KVS_E_FORMAT, "rope_freqs.weight[%d] = %g is not a positive factor", i, f[i]);
        else
            inv[i] /= f[i];
    }
    free(f);
    return st;
}

/* The backend has every kernel the family's deviations need. */
static kvs_status check_backend(const kvs_model_hparams *hp, const kvs_backend *b, kvs_error *err)
{
    const kvs_backend_ops *o = b->ops;
    const char *missing = NULL;
    if (hp->embed_scale > 0.0f && !o->scale)
        missing = "scale (embedding scale)";
    else if (hp->act == KVS_ACT_GELU_TANH && !o->gelu_mul)
        missing = "gelu_mul (GeGLU)";
    else if (hp->final_softcap > 0.0f && !o->softcap)
        missing = "softcap (logit soft-capping)";
    else if (kvs_model_rope_table(hp) && !o->rope_freqs)
        missing = "rope_freqs (llama3/dynamic/yarn RoPE scaling)";
    else if ((hp->swa_mode != KVS_SWA_NONE || hp->attn_softcap > 0.0f) && !o->caps.attn_window)
        missing = "sliding-window / soft-capped attention";
    if (missing)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "the %s backend has no %s, which %s needs", o->name, missing,
                        hp->arch_name);
    return KVS_OK;
}

kvs_status kvs_model_load_source(kvs_model_model **out, const kvs_model_source *src, kvs_backend *b,
                                 const kvs_model_load_opts *opts, kvs_error *err)
{
    kvs_status st0;
    *out = NULL;
    if ((st0 = check_backend(&src->hp, b, err)) != KVS_OK)
        return st0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *out = NULL;
    kvs_status st;
    tensor_spec *specs = NULL;
    const kvs_source_tensor **srct = NULL;
    size_t *order = NULL;
    kvs_source_read_job *jobs = NULL;
    void *host = NULL, *tmp = NULL;
    kvs_model_model *m = calloc(1, sizeof *m);
    if (!m)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    m->backend = b;
    m->hp = src->hp;
    const kvs_model_hparams *hp = &m->hp;
    m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers);
    size_t n = 0;
    if (!m->layers) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    if (!(specs = model_specs(src, hp, &n, err))) {
        st = KVS_E_NOMEM;
        goto fail;
    }
    if (!(srct = calloc(n ? n : 1, sizeof *srct))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    bool mmap_mode = opts && opts->use_mmap;
    uint64_t total = rope_table_bytes(hp), largest = 0, largest_conv = 0, file_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if ((st = check_tensor(src, &specs[i], &srct[i], err)) != KVS_OK)
            goto fail;
        uint64_t wt = b->ops->caps.weight_dtypes;
        if (wt && !specs[i].is_norm && !(wt & KVS_DTYPE_BIT(srct[i]->type))) {
            st = kvs_fail(err, KVS_E_UNSUPPORTED, "tensor '%s' has type %s, which the %s backend cannot compute with",
                          specs[i].src_name, srct[i]->type_name, b->ops->name);
            goto fail;
        }
        if (!mmap_mode || !mappable(&specs[i], srct[i]))
            total += device_bytes(&specs[i], srct[i]);
        if (srct[i]->nbytes > largest)
            largest = srct[i]->nbytes;
        if (needs_convert(&specs[i], srct[i]) && srct[i]->nbytes > largest_conv)
            largest_conv = srct[i]->nbytes;
        if (specs[i].is_norm && (uint64_t)specs[i].ne0 * 4 > largest)
            largest = (uint64_t)specs[i].ne0 * 4;  /* the f32 copy staged for a non-host device */
        file_bytes += srct[i]->nbytes;
    }
    if (mmap_mode && (st = map_files(m, src, err)) != KVS_OK)
        goto fail;
    if ((st = kvs_backend_alloc(b, KVS_MEM_WEIGHTS, total, &m->weights, err)) != KVS_OK)
        goto fail;

    /* Stage each tensor through one host buffer of the largest size (the
     * CPU backend's to_device is a copy; on CPU we read straight into place). */
    bool direct = b->ops->caps.host_memory;
    if (!direct && !(host = malloc(largest ? largest : 1))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory staging weights");
        goto fail;
    }
    /* ... and the tensors converted on the way (norm vectors) through a small one. */
    if (!(tmp = malloc(largest_conv ? largest_conv : 1))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory staging weights");
        goto fail;
    }
    /* Read in file order (shard by shard, ascending offsets): sequential I/O,
     * and progress that moves through the shards once. */
    if (!(order = malloc((n ? n : 1) * sizeof *order))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof *order, by_file_offset, srct);
    /* Place every tensor (file order), then read: on a backend whose memory
     * is host memory, the tensors stored as they are used go straight into
     * place with several threads (kvs_source_read_many), and the few that
     * are converted on the way (norm vectors) follow one by one; otherwise
     * each is staged through the host buffer and copied to the device. */
    if (!(jobs = malloc((n ? n : 1) * sizeof *jobs))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto fail;
    }
    uint64_t off = 0, done = 0;
    size_t n_jobs = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        tensor_spec *s = &specs[i];
        const kvs_source_tensor *t = srct[i];
        kvs_weight *w = slot_ptr(m, s);
        w->type = s->is_norm ? KVS_DTYPE_F32 : (kvs_dtype)t->type;
        w->ne0 = s->ne0;
        w->ne1 = s->ne1;
        if (mmap_mode && mappable(s, t)) {
            w->data = (const char *)m->maps[t->file] + t->offset;
            continue;
        }
        w->data = (char *)m->weights.ptr + off;
        off += device_bytes(s, t);
        if (direct && !needs_convert(s, t))
            jobs[n_jobs++] = (kvs_source_read_job){t, (void *)w->data};
    }
    load_progress lp = {opts, file_bytes, 0};
    if (n_jobs > 0) {
        int threads = opts && opts->n_threads > 1 ? opts->n_threads : 1;
        if ((st = kvs_source_read_many(src, jobs, n_jobs, threads, opts && opts->progress ? bulk_progress : NULL,
                                       &lp, err)) != KVS_OK)
            goto fail;
        for (size_t j = 0; j < n_jobs; j++)
            done += jobs[j].t->nbytes;
    }
    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        tensor_spec *s = &specs[i];
        const kvs_source_tensor *t = srct[i];
        bool mapped = mmap_mode && mappable(s, t);
        if (!mapped && direct && !needs_convert(s, t))
            continue;   /* read above */
        if (!mapped) {
            void *dev = (void *)slot_ptr(m, s)->data;
            uint64_t bytes = s->is_norm ? (uint64_t)s->ne0 * 4 : t->nbytes;
            if ((st = read_host(src, s, t, direct ? dev : host, tmp, err)) != KVS_OK)
                goto fail;
            if (!direct)
                b->ops->to_device(b, dev, host, bytes);
        }
        done += t->nbytes;
        if (opts && opts->progress)
            opts->progress(opts->progress_ctx, done, file_bytes, t->file, src->n_files);
    }
    if (kvs_model_rope_table(hp)) {
        int half = hp->rot_dim / 2;
        double *inv = malloc((size_t)half * sizeof *inv);
        if (!inv) {
            st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
            goto fail;
        }
        kvs_model_rope_inv_freq(hp, inv, &m->rope_mscale);
        if (hp->rope_scaling == KVS_ROPE_FACTORS && (st = apply_rope_factors(src, hp, inv, err)) != KVS_OK) {
            free(inv);
            goto fail;
        }
        char *dev = (char *)m->weights.ptr + off;
        b->ops->to_device(b, dev, inv, (size_t)half * sizeof *inv);
        free(inv);
        m->rope_inv_freq = (const double *)dev;
        off += rope_table_bytes(hp);
    }
    const kvs_arch_info *ai = kvs_arch_get(hp->arch);
    int64_t q_dim = (int64_t)hp->n_heads * hp->head_dim, kv_dim = (int64_t)hp->n_kv_heads * hp->head_dim;
    for (int32_t l = 0; l < hp->n_layers; l++) {
        kvs_model_layer *L = &m->layers[l];
        if (ai->fused_qkv) {
            L->wq = rows_of(&L->wqkv, 0, q_dim);
            L->wk = rows_of(&L->wqkv, q_dim, kv_dim);
            L->wv = rows_of(&L->wqkv, q_dim + kv_dim, kv_dim);
        }
        if (ai->fused_gate_up) {
            L->w_gate = rows_of(&L->w_gate_up, 0, hp->hidden_dim);
            L->w_up = rows_of(&L->w_gate_up, hp->hidden_dim, hp->hidden_dim);
        }
    }
    if (m->hp.tied_embeddings)
        m->output = m->tok_embd;

    free(specs);
    free(srct);
    free(order);
    free(jobs);
    free(host);
    free(tmp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    m->load_seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    *out = m;
    return KVS_OK;
fail:
    free(specs);
    free(srct);
    free(order);
    free(jobs);
    free(host);
    free(tmp);
    kvs_model_free(m);
    return st;
}

kvs_status kvs_model_load(kvs_model_model **out, const kvs_gguf *g, kvs_backend *b,
                          const kvs_model_load_opts *opts, kvs_error *err)
{
    *out = NULL;
    kvs_model_source *src;
    kvs_status st = kvs_source_from_gguf(&src, g, err);
    if (st != KVS_OK)
        return st;
    st = kvs_model_load_source(out, src, b, opts, err);
    kvs_source_close(src);
    return st;
}

void kvs_model_free(kvs_model_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_maps; i++)
        munmap(m->maps[i], m->map_sizes[i]);
    if (m->map_bytes)
        kvs_ledger_sub(&m->backend->ledger, KVS_MEM_WEIGHTS, m->map_bytes);
    free(m->maps);
    free(m->map_sizes);
    kvs_backend_release(m->backend, &m->weights);
    free(m->layers);
    free(m);
}
