/*
 * gguf_write.c - writing GGUF version-3 files.
 *
 * The writer keeps metadata in the reader's representation (kvs_gguf_kv:
 * owned copies, string arrays as one blob plus offsets), so copying from a
 * parsed file is a plain deep copy.  Setting a key twice replaces its value.
 * Tensors keep the caller's data pointer; at write time float data is
 * converted row by row with kvs_dtype_from_f32.  Layout: header, metadata,
 * tensor infos, padding to the alignment (general.alignment if set, else
 * 32), then each tensor's data padded to the alignment.
 */
#include "formats/gguf_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define GGUF_WRITE_ALIGNMENT 32

typedef struct wtensor {
    char *name;
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[KVS_GGUF_MAX_DIMS];
    uint64_t nbytes;
    const float *f32;     /* values to convert (add_tensor), or NULL */
    const void *raw;      /* bytes already in `type` (add_tensor_raw), or NULL */
} wtensor;

struct kvs_gguf_writer {
    kvs_gguf_kv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    kvs_gguf_index kv_index, t_index;
};

static const char *w_kv_name(const void *ctx, size_t e, size_t *len)
{
    const kvs_gguf_kv *kv = &((const kvs_gguf_writer *)ctx)->kv[e];
    *len = kv->key_len;
    return kv->key;
}

static const char *w_t_name(const void *ctx, size_t e, size_t *len)
{
    const char *n = ((const kvs_gguf_writer *)ctx)->t[e].name;
    *len = strlen(n);
    return n;
}

kvs_gguf_writer *kvs_gguf_writer_new(void)
{
    return calloc(1, sizeof(kvs_gguf_writer));
}

void kvs_gguf_writer_free(kvs_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++)
        kvs_gguf_kv_clear(&w->kv[i]);
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    kvs_gguf_index_free(&w->kv_index);
    kvs_gguf_index_free(&w->t_index);
    free(w);
}

/* Store `val` (its value fields; ownership moves to the writer) under key.
 * On failure the value is freed. */
static kvs_status put(kvs_gguf_writer *w, const char *key, kvs_gguf_kv *val, kvs_error *err)
{
    kvs_status st = KVS_OK;
    if (!w || !key || !key[0]) {
        st = kvs_fail(err, KVS_E_INVALID, "gguf writer: missing or empty key");
        goto fail;
    }
    size_t len = strlen(key);
    int64_t i = kvs_gguf_index_find(&w->kv_index, key, len, w_kv_name, w);
    if (i >= 0) {   /* replace, keeping the key and its position */
        kvs_gguf_kv *kv = &w->kv[i];
        char *k = kv->key;
        kv->key = NULL;
        kvs_gguf_kv_clear(kv);
        *kv = *val;
        kv->key = k;
        kv->key_len = len;
        return KVS_OK;
    }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? w->cap_kv * 2 : 16;
        kvs_gguf_kv *p = realloc(w->kv, nc * sizeof *p);
        if (!p) {
            st = kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
            goto fail;
        }
        w->kv = p;
        w->cap_kv = nc;
    }
    val->key = strdup(key);
    val->key_len = len;
    size_t dup;
    if (!val->key ||
        kvs_gguf_index_add(&w->kv_index, key, len, w->n_kv, w_kv_name, w, &dup) != KVS_OK) {
        st = kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
        goto fail;
    }
    w->kv[w->n_kv++] = *val;
    return KVS_OK;
fail:
    kvs_gguf_kv_clear(val);
    return st;
}

kvs_status kvs_gguf_writer_set_scalar(kvs_gguf_writer *w, const char *key, kvs_gguf_type type,
                                      const void *value, kvs_error *err)
{
    size_t sz = kvs_gguf_type_size(type);
    if (sz == 0 || !value)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: key '%s': %s is not a scalar type",
                        key ? key : "(null)", kvs_gguf_type_name(type));
    kvs_gguf_kv v = {.type = type, .arr_type = type};
    memcpy(v.scalar, value, sz);
    return put(w, key, &v, err);
}

kvs_status kvs_gguf_writer_set_u32(kvs_gguf_writer *w, const char *key, uint32_t v, kvs_error *err)
{
    return kvs_gguf_writer_set_scalar(w, key, KVS_GGUF_UINT32, &v, err);
}

kvs_status kvs_gguf_writer_set_i32(kvs_gguf_writer *w, const char *key, int32_t v, kvs_error *err)
{
    return kvs_gguf_writer_set_scalar(w, key, KVS_GGUF_INT32, &v, err);
}

kvs_status kvs_gguf_writer_set_u64(kvs_gguf_writer *w, const char *key, uint64_t v, kvs_error *err)
{
    return kvs_gguf_writer_set_scalar(w, key, KVS_GGUF_UINT64, &v, err);
}

kvs_status kvs_gguf_writer_set_f32(kvs_gguf_writer *w, const char *key, float v, kvs_error *err)
{
    return kvs_gguf_writer_set_scalar(w, key, KVS_GGUF_FLOAT32, &v, err);
}

kvs_status kvs_gguf_writer_set_bool(kvs_gguf_writer *w, const char *key, bool v, kvs_error *err)
{
    uint8_t b = v ? 1 : 0;
    return kvs_gguf_writer_set_scalar(w, key, KVS_GGUF_BOOL, &b, err);
}

kvs_status kvs_gguf_writer_set_strn(kvs_gguf_writer *w, const char *key, const char *v,
                                    size_t len, kvs_error *err)
{
    kvs_gguf_kv val = {.type = KVS_GGUF_STRING, .arr_type = KVS_GGUF_STRING, .str_len = len};
    if (!v && len > 0)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: key '%s': NULL string", key);
    if (!(val.str = malloc(len + 1)))
        return kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
    if (len)
        memcpy(val.str, v, len);
    val.str[len] = '\0';
    return put(w, key, &val, err);
}

kvs_status kvs_gguf_writer_set_str(kvs_gguf_writer *w, const char *key, const char *v,
                                   kvs_error *err)
{
    if (!v)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: key '%s': NULL string", key);
    return kvs_gguf_writer_set_strn(w, key, v, strlen(v), err);
}

kvs_status kvs_gguf_writer_set_arr_strn(kvs_gguf_writer *w, const char *key,
                                        const char *const *v, const size_t *lens, size_t n,
                                        kvs_error *err)
{
    if (!v && n > 0)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: key '%s': NULL array", key);
    kvs_gguf_kv val = {.type = KVS_GGUF_ARRAY, .arr_type = KVS_GGUF_STRING, .n = n};
    size_t total = 0;
    for (size_t j = 0; j < n; j++)
        total += (lens ? lens[j] : strlen(v[j])) + 1;
    val.str = malloc(total ? total : 1);
    val.arr_off = malloc((n + 1) * sizeof *val.arr_off);
    if (!val.str || !val.arr_off) {
        kvs_gguf_kv_clear(&val);
        return kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
    }
    size_t b = 0;
    for (size_t j = 0; j < n; j++) {
        size_t len = lens ? lens[j] : strlen(v[j]);
        val.arr_off[j] = b;
        if (len)
            memcpy(val.str + b, v[j], len);
        val.str[b + len] = '\0';
        b += len + 1;
    }
    val.arr_off[n] = b;
    return put(w, key, &val, err);
}

kvs_status kvs_gguf_writer_set_arr_str(kvs_gguf_writer *w, const char *key, const char *const *v,
                                       size_t n, kvs_error *err)
{
    return kvs_gguf_writer_set_arr_strn(w, key, v, NULL, n, err);
}

kvs_status kvs_gguf_writer_set_arr(kvs_gguf_writer *w, const char *key, kvs_gguf_type elem_type,
                                   const void *data, size_t n, kvs_error *err)
{
    size_t esz = kvs_gguf_type_size(elem_type);
    if (esz == 0)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: key '%s': cannot write an array of "
                        "%s with kvs_gguf_writer_set_arr", key ? key : "(null)",
                        kvs_gguf_type_name(elem_type));
    if (!data && n > 0)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: key '%s': NULL array", key);
    if (n > SIZE_MAX / esz)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: key '%s': array too large", key);
    kvs_gguf_kv val = {.type = KVS_GGUF_ARRAY, .arr_type = elem_type, .n = n};
    if (!(val.arr = malloc(n > 0 ? n * esz : 1)))
        return kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
    if (n)
        memcpy(val.arr, data, n * esz);
    return put(w, key, &val, err);
}

kvs_status kvs_gguf_writer_set_arr_f32(kvs_gguf_writer *w, const char *key, const float *v,
                                       size_t n, kvs_error *err)
{
    return kvs_gguf_writer_set_arr(w, key, KVS_GGUF_FLOAT32, v, n, err);
}

kvs_status kvs_gguf_writer_set_arr_i32(kvs_gguf_writer *w, const char *key, const int32_t *v,
                                       size_t n, kvs_error *err)
{
    return kvs_gguf_writer_set_arr(w, key, KVS_GGUF_INT32, v, n, err);
}

kvs_status kvs_gguf_writer_copy_kv(kvs_gguf_writer *w, const kvs_gguf *src, const char *prefix,
                                   kvs_error *err)
{
    if (!w || !src)
        return kvs_fail(err, KVS_E_INVALID, "kvs_gguf_writer_copy_kv: NULL argument");
    size_t plen = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; i < src->n_kv; i++) {
        const kvs_gguf_kv *s = &src->kv[i];
        if (plen && strncmp(s->key, prefix, plen) != 0)
            continue;
        kvs_status st;
        if (s->type == KVS_GGUF_STRING) {
            st = kvs_gguf_writer_set_strn(w, s->key, s->str, s->str_len, err);
        } else if (s->type == KVS_GGUF_ARRAY && s->arr_type == KVS_GGUF_STRING) {
            kvs_gguf_kv val = {.type = KVS_GGUF_ARRAY, .arr_type = KVS_GGUF_STRING, .n = s->n};
            size_t blob = (size_t)s->arr_off[s->n], offs = ((size_t)s->n + 1) * sizeof(uint64_t);
            val.str = malloc(blob ? blob : 1);
            val.arr_off = malloc(offs);
            if (!val.str || !val.arr_off) {
                kvs_gguf_kv_clear(&val);
                return kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
            }
            memcpy(val.str, s->str, blob);
            memcpy(val.arr_off, s->arr_off, offs);
            st = put(w, s->key, &val, err);
        } else if (s->type == KVS_GGUF_ARRAY) {
            st = kvs_gguf_writer_set_arr(w, s->key, s->arr_type, s->arr, (size_t)s->n, err);
        } else {
            st = kvs_gguf_writer_set_scalar(w, s->key, s->type, s->scalar, err);
        }
        if (st != KVS_OK)
            return st;
    }
    return KVS_OK;
}

/* ---- tensors ------------------------------------------------------------ */

static kvs_status add(kvs_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                      const uint64_t *ne, const float *f32, const void *raw, const uint64_t *nbytes,
                      kvs_error *err)
{
    if (!w || !name || !name[0] || !ne)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor needs a name and a shape");
    if (n_dims == 0 || n_dims > KVS_GGUF_MAX_DIMS)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor '%s': n_dims %" PRIu32
                        " is not in 1..%d", name, n_dims, KVS_GGUF_MAX_DIMS);
    if (!kvs_dtype_known(type))
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor '%s': unknown type %" PRIu32,
                        name, type);
    wtensor t = {.type = type, .n_dims = n_dims, .f32 = f32, .raw = raw};
    uint64_t elems = 1;
    for (uint32_t d = 0; d < KVS_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] == 0 || t.ne[d] > (uint64_t)INT64_MAX / elems || t.ne[d] > SIZE_MAX / elems)
            return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor '%s': bad dimension ne[%"
                            PRIu32 "] = %" PRIu64, name, d, t.ne[d]);
        elems *= t.ne[d];
    }
    uint64_t row;
    if (t.ne[0] % kvs_dtype_block_elems(type) != 0)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor '%s': row length %" PRIu64
                        " is not a multiple of the %s block size %zu", name, t.ne[0],
                        kvs_dtype_name(type), kvs_dtype_block_elems(type));
    if (!kvs_dtype_row_bytes(type, t.ne[0], &row) || row > UINT64_MAX / (elems / t.ne[0]) ||
        row * (elems / t.ne[0]) > SIZE_MAX)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor '%s': data size overflows",
                        name);
    t.nbytes = row * (elems / t.ne[0]);
    if (nbytes && *nbytes != t.nbytes)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor '%s': %" PRIu64 " bytes given, "
                        "the shape needs %" PRIu64, name, *nbytes, t.nbytes);
    size_t len = strlen(name), dup;
    if (kvs_gguf_index_find(&w->t_index, name, len, w_t_name, w) >= 0)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *p = realloc(w->t, nc * sizeof *p);
        if (!p)
            return kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
        w->t = p;
        w->cap_t = nc;
    }
    if (!(t.name = strdup(name)))
        return kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
    w->t[w->n_t] = t;
    if (kvs_gguf_index_add(&w->t_index, name, len, w->n_t, w_t_name, w, &dup) != KVS_OK) {
        free(t.name);
        return kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
    }
    w->n_t++;
    return KVS_OK;
}

kvs_status kvs_gguf_writer_add_tensor(kvs_gguf_writer *w, const char *name, kvs_dtype type,
                                      uint32_t n_dims, const uint64_t *ne, const float *data,
                                      kvs_error *err)
{
    if (!kvs_dtype_computable(type))
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: tensor '%s': cannot convert float "
                        "data to type %s", name ? name : "(null)", kvs_dtype_name(type));
    return add(w, name, type, n_dims, ne, data, NULL, NULL, err);
}

kvs_status kvs_gguf_writer_add_tensor_raw(kvs_gguf_writer *w, const char *name, uint32_t type,
                                          uint32_t n_dims, const uint64_t *ne, const void *data,
                                          uint64_t nbytes, kvs_error *err)
{
    return add(w, name, type, n_dims, ne, NULL, data, &nbytes, err);
}

/* ---- output ------------------------------------------------------------- */

typedef struct sink {
    FILE *f;          /* file output, or NULL for memory */
    uint8_t *buf;
    size_t len, cap;
    uint64_t pos;
    bool failed;
    bool sparse;      /* file output: tensor data of NULL tensors becomes a hole */
} sink;

static void out(sink *s, const void *p, size_t n)
{
    if (s->failed || n == 0)
        return;
    if (s->f) {
        if (fwrite(p, 1, n, s->f) != n)
            s->failed = true;
    } else {
        if (n > s->cap - s->len) {
            size_t nc = s->cap ? s->cap : 4096;
            while (nc - s->len < n)
                nc *= 2;
            uint8_t *b = realloc(s->buf, nc);
            if (!b) {
                s->failed = true;
                return;
            }
            s->buf = b;
            s->cap = nc;
        }
        if (p)
            memcpy(s->buf + s->len, p, n);
        else
            memset(s->buf + s->len, 0, n);
        s->len += n;
    }
    s->pos += n;
}

static void out_zeros(sink *s, uint64_t n)
{
    static const uint8_t zeros[4096];
    while (n > 0 && !s->failed) {
        size_t k = n > sizeof zeros ? sizeof zeros : (size_t)n;
        out(s, zeros, k);
        n -= k;
    }
}

static void out_u32(sink *s, uint32_t v) { out(s, &v, 4); }
static void out_u64(sink *s, uint64_t v) { out(s, &v, 8); }
static void out_str(sink *s, const char *p, size_t n)
{
    out_u64(s, n);
    out(s, p, n);
}

static void out_kv(sink *s, const kvs_gguf_kv *kv)
{
    out_str(s, kv->key, kv->key_len);
    out_u32(s, kv->type);
    if (kv->type == KVS_GGUF_STRING) {
        out_str(s, kv->str, kv->str_len);
    } else if (kv->type != KVS_GGUF_ARRAY) {
        out(s, kv->scalar, kvs_gguf_type_size(kv->type));
    } else {
        out_u32(s, kv->arr_type);
        out_u64(s, kv->n);
        if (kv->arr_type == KVS_GGUF_STRING) {
            for (uint64_t j = 0; j < kv->n; j++)
                out_str(s, kv->str + kv->arr_off[j], kv->arr_off[j + 1] - kv->arr_off[j] - 1);
        } else {
            out(s, kv->arr, (size_t)kv->n * kvs_gguf_type_size(kv->arr_type));
        }
    }
}

static kvs_status out_tensor_data(sink *s, const wtensor *t, kvs_error *err)
{
    if (t->raw) {
        out(s, t->raw, (size_t)t->nbytes);
        return KVS_OK;
    }
    if (!t->f32) {
        if (s->sparse && s->f) { /* leave a hole: the file reads as zeros there */
            if (fseeko(s->f, (off_t)t->nbytes, SEEK_CUR) != 0)
                s->failed = true;
            s->pos += t->nbytes;
            return KVS_OK;
        }
        out_zeros(s, t->nbytes);
        return KVS_OK;
    }
    if (t->type == KVS_DTYPE_F32) {
        out(s, t->f32, (size_t)t->nbytes);
        return KVS_OK;
    }
    size_t ne0 = (size_t)t->ne[0], rows = (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    size_t row_bytes = (size_t)(t->nbytes / rows);
    uint8_t *row = malloc(row_bytes);
    if (!row)
        return kvs_fail(err, KVS_E_NOMEM, "gguf writer: tensor '%s': out of memory", t->name);
    for (size_t r = 0; r < rows && !s->failed; r++) {
        kvs_dtype_from_f32((kvs_dtype)t->type, t->f32 + r * ne0, row, ne0);
        out(s, row, row_bytes);
    }
    free(row);
    return KVS_OK;
}

static kvs_status writer_alignment(const kvs_gguf_writer *w, uint32_t *a, kvs_error *err)
{
    *a = GGUF_WRITE_ALIGNMENT;
    int64_t i = kvs_gguf_index_find(&w->kv_index, "general.alignment", 17, w_kv_name, w);
    if (i < 0)
        return KVS_OK;
    const kvs_gguf_kv *kv = &w->kv[i];
    uint32_t v;
    memcpy(&v, kv->scalar, 4);
    if (kv->type != KVS_GGUF_UINT32 || v == 0 || (v & (v - 1)) != 0)
        return kvs_fail(err, KVS_E_INVALID, "gguf writer: general.alignment must be a uint32 "
                        "power of two");
    *a = v;
    return KVS_OK;
}

static kvs_status emit(kvs_gguf_writer *w, sink *s, kvs_error *err)
{
    uint32_t align;
    kvs_status st = writer_alignment(w, &align, err);
    if (st != KVS_OK)
        return st;
    out(s, "GGUF", 4);
    out_u32(s, 3);
    out_u64(s, w->n_t);
    out_u64(s, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++)
        out_kv(s, &w->kv[i]);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        out_str(s, t->name, strlen(t->name));
        out_u32(s, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            out_u64(s, t->ne[d]);
        out_u32(s, t->type);
        out_u64(s, off);
        off += (t->nbytes + align - 1) / align * align;
    }
    out_zeros(s, (align - s->pos % align) % align);
    for (size_t i = 0; i < w->n_t && !s->failed; i++) {
        if ((st = out_tensor_data(s, &w->t[i], err)) != KVS_OK)
            return st;
        out_zeros(s, (align - w->t[i].nbytes % align) % align);
    }
    return KVS_OK;
}

static kvs_status write_file(kvs_gguf_writer *w, const char *path, bool sparse, kvs_error *err)
{
    if (!w || !path)
        return kvs_fail(err, KVS_E_INVALID, "kvs_gguf_writer_write: NULL argument");
    sink s = {.f = fopen(path, "wb"), .sparse = sparse};
    if (!s.f)
        return kvs_fail(err, KVS_E_IO, "cannot create '%s': %s", path, strerror(errno));
    kvs_status st = emit(w, &s, err);
    /* a trailing hole does not extend the file by itself */
    if (st == KVS_OK && sparse && (fflush(s.f) != 0 || ftruncate(fileno(s.f), (off_t)s.pos) != 0))
        s.failed = true;
    int saved = errno;
    if (fclose(s.f) != 0) {
        s.failed = true;
        saved = errno;
    }
    if (st == KVS_OK && s.failed)
        st = kvs_fail(err, KVS_E_IO, "writing '%s' failed: %s", path, strerror(saved));
    return st;
}

kvs_status kvs_gguf_writer_write(kvs_gguf_writer *w, const char *path, kvs_error *err)
{
    return write_file(w, path, false, err);
}

kvs_status kvs_gguf_writer_write_sparse(kvs_gguf_writer *w, const char *path, kvs_error *err)
{
    return write_file(w, path, true, err);
}

kvs_status kvs_gguf_writer_write_mem(kvs_gguf_writer *w, uint8_t **data, size_t *size,
                                     kvs_error *err)
{
    if (!w || !data || !size)
        return kvs_fail(err, KVS_E_INVALID, "kvs_gguf_writer_write_mem: NULL argument");
    sink s = {0};
    kvs_status st = emit(w, &s, err);
    if (st == KVS_OK && s.failed)
        st = kvs_fail(err, KVS_E_NOMEM, "gguf writer: out of memory");
    if (st != KVS_OK) {
        free(s.buf);
        return st;
    }
    *data = s.buf;
    *size = s.len;
    return KVS_OK;
}
