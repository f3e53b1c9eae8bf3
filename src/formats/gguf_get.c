/*
 * gguf_get.c - lookups and typed getters over a parsed GGUF file, and the
 * small name index they use.
 */
#include "formats/gguf_internal.h"

#include <inttypes.h>
#include <stdlib.h>

/* ---- the name index ----------------------------------------------------- */

uint64_t kvs_gguf_hash(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int64_t kvs_gguf_index_find(const kvs_gguf_index *ix, const char *name, size_t len,
                            kvs_gguf_name_fn get_name, const void *ctx)
{
    if (ix->cap == 0)
        return -1;
    size_t mask = ix->cap - 1;
    for (size_t i = (size_t)kvs_gguf_hash(name, len) & mask;; i = (i + 1) & mask) {
        size_t e = ix->slots[i];
        if (e == 0)
            return -1;
        size_t elen;
        const char *en = get_name(ctx, e - 1, &elen);
        if (elen == len && memcmp(en, name, len) == 0)
            return (int64_t)(e - 1);
    }
}

static kvs_status rehash(kvs_gguf_index *ix, size_t cap, kvs_gguf_name_fn get_name,
                         const void *ctx)
{
    size_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return KVS_E_NOMEM;
    for (size_t i = 0; i < ix->cap; i++) {
        size_t e = ix->slots[i];
        if (e == 0)
            continue;
        size_t len;
        const char *n = get_name(ctx, e - 1, &len);
        size_t j = (size_t)kvs_gguf_hash(n, len) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = e;
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return KVS_OK;
}

kvs_status kvs_gguf_index_add(kvs_gguf_index *ix, const char *name, size_t len, size_t entry,
                              kvs_gguf_name_fn get_name, const void *ctx, size_t *dup)
{
    int64_t found = kvs_gguf_index_find(ix, name, len, get_name, ctx);
    if (found >= 0) {
        *dup = (size_t)found;
        return KVS_E_INVALID;
    }
    if ((ix->count + 1) * 2 > ix->cap) {
        kvs_status st = rehash(ix, ix->cap ? ix->cap * 2 : 16, get_name, ctx);
        if (st != KVS_OK)
            return st;
    }
    size_t mask = ix->cap - 1, i = (size_t)kvs_gguf_hash(name, len) & mask;
    while (ix->slots[i])
        i = (i + 1) & mask;
    ix->slots[i] = entry + 1;
    ix->count++;
    return KVS_OK;
}

void kvs_gguf_index_free(kvs_gguf_index *ix)
{
    free(ix->slots);
    ix->slots = NULL;
    ix->cap = ix->count = 0;
}

const char *kvs_gguf_kv_name_fn(const void *g, size_t entry, size_t *len)
{
    const kvs_gguf_kv *kv = &((const kvs_gguf *)g)->kv[entry];
    *len = kv->key_len;
    return kv->key;
}

const char *kvs_gguf_tensor_name_fn(const void *g, size_t entry, size_t *len)
{
    const char *n = ((const kvs_gguf *)g)->tensors[entry].name;
    *len = strlen(n);
    return n;
}

void kvs_gguf_kv_clear(kvs_gguf_kv *kv)
{
    free(kv->key);
    free(kv->str);
    free(kv->arr);
    free(kv->arr_off);
    memset(kv, 0, sizeof *kv);
}

/* ---- file-level accessors ------------------------------------------------ */

uint32_t kvs_gguf_version(const kvs_gguf *g) { return g->version; }
const char *kvs_gguf_path(const kvs_gguf *g) { return g->path; }
uint64_t kvs_gguf_file_size(const kvs_gguf *g) { return g->file_size; }
uint64_t kvs_gguf_data_offset(const kvs_gguf *g) { return g->data_offset; }
uint32_t kvs_gguf_alignment(const kvs_gguf *g) { return g->alignment; }
size_t kvs_gguf_n_kv(const kvs_gguf *g) { return g->n_kv; }
const char *kvs_gguf_kv_key(const kvs_gguf *g, size_t i) { return g->kv[i].key; }
kvs_gguf_type kvs_gguf_kv_type(const kvs_gguf *g, size_t i) { return g->kv[i].type; }
size_t kvs_gguf_n_tensors(const kvs_gguf *g) { return g->n_tensors; }

const kvs_gguf_tensor *kvs_gguf_tensor_at(const kvs_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

int64_t kvs_gguf_find_key(const kvs_gguf *g, const char *key)
{
    return kvs_gguf_index_find(&g->kv_index, key, strlen(key), kvs_gguf_kv_name_fn, g);
}

const kvs_gguf_tensor *kvs_gguf_find_tensor(const kvs_gguf *g, const char *name)
{
    int64_t i = kvs_gguf_index_find(&g->tensor_index, name, strlen(name),
                                    kvs_gguf_tensor_name_fn, g);
    return i < 0 ? NULL : &g->tensors[i];
}

size_t kvs_gguf_type_size(uint32_t t)
{
    switch (t) {
    case KVS_GGUF_UINT8: case KVS_GGUF_INT8: case KVS_GGUF_BOOL: return 1;
    case KVS_GGUF_UINT16: case KVS_GGUF_INT16: return 2;
    case KVS_GGUF_UINT32: case KVS_GGUF_INT32: case KVS_GGUF_FLOAT32: return 4;
    case KVS_GGUF_UINT64: case KVS_GGUF_INT64: case KVS_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- typed getters ------------------------------------------------------- */

static kvs_status lookup(const kvs_gguf *g, const char *key, const kvs_gguf_kv **kv,
                         kvs_error *err)
{
    int64_t i = kvs_gguf_find_key(g, key);
    if (i < 0)
        return kvs_fail(err, KVS_E_NOT_FOUND, "metadata key '%s' not found", key);
    *kv = &g->kv[i];
    return KVS_OK;
}

int kvs_gguf_decode_int(uint32_t t, const void *p, int64_t *s, uint64_t *u)
{
    switch (t) {
    case KVS_GGUF_UINT8: { uint8_t v; memcpy(&v, p, 1); *u = v; return 0; }
    case KVS_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *u = v; return 0; }
    case KVS_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *u = v; return 0; }
    case KVS_GGUF_UINT64: { uint64_t v; memcpy(&v, p, 8); *u = v; return 0; }
    case KVS_GGUF_INT8: { int8_t v; memcpy(&v, p, 1); *s = v; return 1; }
    case KVS_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *s = v; return 1; }
    case KVS_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *s = v; return 1; }
    case KVS_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); *s = v; return 1; }
    default: return -1;
    }
}

/* The value of an integer key as (signed?, value), or a type error. */
static kvs_status get_int(const kvs_gguf *g, const char *key, int *is_signed, int64_t *s,
                          uint64_t *u, kvs_error *err)
{
    const kvs_gguf_kv *kv = NULL;
    kvs_status st = lookup(g, key, &kv, err);
    if (st != KVS_OK)
        return st;
    *is_signed = kvs_gguf_decode_int(kv->type, kv->scalar, s, u);
    if (*is_signed < 0)
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' is a %s, not an integer",
                        key, kvs_gguf_type_name(kv->type));
    return KVS_OK;
}

kvs_status kvs_gguf_get_u64(const kvs_gguf *g, const char *key, uint64_t *out, kvs_error *err)
{
    int sg;
    int64_t s = 0;
    uint64_t u = 0;
    kvs_status st = get_int(g, key, &sg, &s, &u, err);
    if (st != KVS_OK)
        return st;
    if (sg && s < 0)
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' is negative (%" PRId64 ")", key, s);
    *out = sg ? (uint64_t)s : u;
    return KVS_OK;
}

kvs_status kvs_gguf_get_u32(const kvs_gguf *g, const char *key, uint32_t *out, kvs_error *err)
{
    uint64_t v = 0;
    kvs_status st = kvs_gguf_get_u64(g, key, &v, err);
    if (st != KVS_OK)
        return st;
    if (v > UINT32_MAX)
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' = %" PRIu64 " does not fit in "
                        "32 bits", key, v);
    *out = (uint32_t)v;
    return KVS_OK;
}

kvs_status kvs_gguf_get_i64(const kvs_gguf *g, const char *key, int64_t *out, kvs_error *err)
{
    int sg;
    int64_t s = 0;
    uint64_t u = 0;
    kvs_status st = get_int(g, key, &sg, &s, &u, err);
    if (st != KVS_OK)
        return st;
    if (!sg && u > (uint64_t)INT64_MAX)
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' = %" PRIu64 " does not fit in "
                        "a signed 64-bit integer", key, u);
    *out = sg ? s : (int64_t)u;
    return KVS_OK;
}

kvs_status kvs_gguf_get_f32(const kvs_gguf *g, const char *key, float *out, kvs_error *err)
{
    const kvs_gguf_kv *kv = NULL;
    kvs_status st = lookup(g, key, &kv, err);
    if (st != KVS_OK)
        return st;
    if (kv->type == KVS_GGUF_FLOAT32) {
        memcpy(out, kv->scalar, 4);
    } else if (kv->type == KVS_GGUF_FLOAT64) {
        double d;
        memcpy(&d, kv->scalar, 8);
        *out = (float)d;
    } else {
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' is a %s, not a float",
                        key, kvs_gguf_type_name(kv->type));
    }
    return KVS_OK;
}

kvs_status kvs_gguf_get_bool(const kvs_gguf *g, const char *key, bool *out, kvs_error *err)
{
    const kvs_gguf_kv *kv = NULL;
    kvs_status st = lookup(g, key, &kv, err);
    if (st != KVS_OK)
        return st;
    if (kv->type != KVS_GGUF_BOOL)
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' is a %s, not a bool",
                        key, kvs_gguf_type_name(kv->type));
    *out = kv->scalar[0] != 0;
    return KVS_OK;
}

kvs_status kvs_gguf_get_str(const kvs_gguf *g, const char *key, const char **out, size_t *len,
                            kvs_error *err)
{
    const kvs_gguf_kv *kv = NULL;
    kvs_status st = lookup(g, key, &kv, err);
    if (st != KVS_OK)
        return st;
    if (kv->type != KVS_GGUF_STRING)
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' is a %s, not a string",
                        key, kvs_gguf_type_name(kv->type));
    *out = kv->str;
    if (len)
        *len = kv->str_len;
    return KVS_OK;
}

kvs_status kvs_gguf_get_arr(const kvs_gguf *g, const char *key, kvs_gguf_type *elem_type,
                            uint64_t *n, kvs_error *err)
{
    const kvs_gguf_kv *kv = NULL;
    kvs_status st = lookup(g, key, &kv, err);
    if (st != KVS_OK)
        return st;
    if (kv->type != KVS_GGUF_ARRAY)
        return kvs_fail(err, KVS_E_FORMAT, "metadata key '%s' is a %s, not an array",
                        key, kvs_gguf_type_name(kv->type));
    if (elem_type)
        *elem_type = kv->arr_type;
    if (n)
        *n = kv->n;
    return KVS_OK;
}

/* ---- arrays by index ------------------------------------------------------ */

uint64_t kvs_gguf_arr_n(const kvs_gguf *g, size_t i)
{
    return g->kv[i].type == KVS_GGUF_ARRAY ? g->kv[i].n : 0;
}

kvs_gguf_type kvs_gguf_arr_type(const kvs_gguf *g, size_t i) { return g->kv[i].arr_type; }

const char *kvs_gguf_arr_str(const kvs_gguf *g, size_t i, uint64_t j, size_t *len)
{
    const kvs_gguf_kv *kv = &g->kv[i];
    if (kv->type != KVS_GGUF_ARRAY || kv->arr_type != KVS_GGUF_STRING || j >= kv->n)
        return NULL;
    if (len)
        *len = (size_t)(kv->arr_off[j + 1] - kv->arr_off[j] - 1);
    return kv->str + kv->arr_off[j];
}

const void *kvs_gguf_arr_data(const kvs_gguf *g, size_t i)
{
    const kvs_gguf_kv *kv = &g->kv[i];
    return kv->type == KVS_GGUF_ARRAY ? kv->arr : NULL;
}

/* A numeric element of type t at p as a double (NaN for non-numeric types). */
static double num_at(uint32_t t, const void *p)
{
    int64_t s;
    uint64_t u;
    int k = kvs_gguf_decode_int(t, p, &s, &u);
    if (k == 1)
        return (double)s;
    if (k == 0)
        return (double)u;
    if (t == KVS_GGUF_FLOAT32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (t == KVS_GGUF_FLOAT64) {
        double d;
        memcpy(&d, p, 8);
        return d;
    }
    if (t == KVS_GGUF_BOOL)
        return *(const uint8_t *)p ? 1.0 : 0.0;
    return __builtin_nan("");
}

double kvs_gguf_arr_num(const kvs_gguf *g, size_t i, uint64_t j)
{
    const kvs_gguf_kv *kv = &g->kv[i];
    if (kv->type != KVS_GGUF_ARRAY || j >= kv->n || !kv->arr)
        return __builtin_nan("");
    return num_at(kv->arr_type, (const uint8_t *)kv->arr + j * kvs_gguf_type_size(kv->arr_type));
}
