/* safetensors: header validation and writing (see safetensors.h). */
#include "formats/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct kvs_st_file {
    char *path;
    uint64_t file_size;
    uint64_t data_offset;
    size_t n;
    kvs_st_tensor *t;
    size_t n_meta;
    char **meta;       /* key, value pairs */
};

static const struct { const char *name; uint32_t bits; } DTYPES[] = {
    {"BOOL", 8},   {"U8", 8},      {"I8", 8},       {"F8_E5M2", 8}, {"F8_E4M3", 8},
    {"F8_E8M0", 8}, {"I16", 16},   {"U16", 16},     {"F16", 16},    {"BF16", 16},
    {"I32", 32},   {"U32", 32},    {"F32", 32},     {"F64", 64},    {"I64", 64},
    {"U64", 64},   {"C64", 64},    {"F4", 4},       {"F6_E2M3", 6}, {"F6_E3M2", 6},
};

uint32_t kvs_st_dtype_bits(const char *name)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (strcmp(DTYPES[i].name, name) == 0)
            return DTYPES[i].bits;
    return 0;
}

bool kvs_st_dtype_to_kvs(const char *name, kvs_dtype *out)
{
    if (strcmp(name, "F32") == 0)
        *out = KVS_DTYPE_F32;
    else if (strcmp(name, "F16") == 0)
        *out = KVS_DTYPE_F16;
    else if (strcmp(name, "BF16") == 0)
        *out = KVS_DTYPE_BF16;
    else
        return false;
    return true;
}

const char *kvs_st_dtype_name(kvs_dtype t)
{
    switch (t) {
    case KVS_DTYPE_F32: return "F32";
    case KVS_DTYPE_F16: return "F16";
    case KVS_DTYPE_BF16: return "BF16";
    default: return NULL;
    }
}

void kvs_st_close(kvs_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free((char *)f->t[i].name);
        free((char *)f->t[i].dtype);
    }
    for (size_t i = 0; i < 2 * f->n_meta; i++)
        free(f->meta[i]);
    free(f->meta);
    free(f->t);
    free(f->path);
    free(f);
}

const char *kvs_st_path(const kvs_st_file *f) { return f->path; }
uint64_t kvs_st_file_size(const kvs_st_file *f) { return f->file_size; }
uint64_t kvs_st_data_offset(const kvs_st_file *f) { return f->data_offset; }
size_t kvs_st_n_tensors(const kvs_st_file *f) { return f->n; }

const kvs_st_tensor *kvs_st_tensor_at(const kvs_st_file *f, size_t i)
{
    return i < f->n ? &f->t[i] : NULL;
}

const kvs_st_tensor *kvs_st_find(const kvs_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0)
            return &f->t[i];
    return NULL;
}

const char *kvs_st_metadata(const kvs_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

/* Parse one tensor entry into t (name already set). */
static kvs_status parse_entry(const char *name, json_t *v, uint64_t data_size, kvs_st_tensor *t,
                              kvs_error *err)
{
    if (!json_is_object(v))
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': entry is not a JSON object", name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': \"dtype\" is missing or not a string", name);
    if (!json_is_array(sh))
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': \"shape\" is missing or not an array", name);
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return kvs_fail(err, KVS_E_FORMAT,
                        "tensor '%.200s': \"data_offsets\" must be an array of two integers", name);
    if (json_object_size(v) != 3)
        return kvs_fail(err, KVS_E_FORMAT,
                        "tensor '%.200s': unexpected keys (only dtype, shape, data_offsets)", name);
    const char *dname = json_string_value(dt);
    uint32_t bits = kvs_st_dtype_bits(dname);
    if (!bits)
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': unknown dtype '%.40s'", name, dname);
    size_t nd = json_array_size(sh);
    if (nd > KVS_ST_MAX_DIMS)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "tensor '%.200s' has %zu dimensions (at most %d)", name,
                        nd, KVS_ST_MAX_DIMS);
    t->n_dims = (uint32_t)nd;
    uint64_t elems = 1;
    bool overflow = false;
    for (size_t d = 0; d < nd; d++) {
        json_t *e = json_array_get(sh, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': shape[%zu] is not a non-negative integer",
                            name, d);
        t->shape[d] = (uint64_t)json_integer_value(e);
        if (t->shape[d] && elems > UINT64_MAX / 64 / t->shape[d])
            overflow = true;
        elems *= t->shape[d];
    }
    for (size_t d = nd; d < KVS_ST_MAX_DIMS; d++)
        t->shape[d] = 1;
    if (overflow)
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': shape overflows", name);
    json_int_t b = json_integer_value(json_array_get(off, 0)), e = json_integer_value(json_array_get(off, 1));
    if (b < 0 || e < b)
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': data_offsets [%lld, %lld] are not ordered",
                        name, (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return kvs_fail(err, KVS_E_FORMAT,
                        "tensor '%.200s': data [%lld, %lld) runs past the end of the data section "
                        "(%" PRIu64 " bytes: the file is truncated?)",
                        name, (long long)b, (long long)e, data_size);
    uint64_t total_bits = elems * bits;
    if (total_bits % 8 != 0)
        return kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': %" PRIu64 " elements of %s are not whole bytes",
                        name, elems, dname);
    if (total_bits / 8 != (uint64_t)(e - b))
        return kvs_fail(err, KVS_E_FORMAT,
                        "tensor '%.200s': shape needs %" PRIu64 " bytes of %s but data_offsets give %lld",
                        name, total_bits / 8, dname, (long long)(e - b));
    if (!(t->dtype = strdup(dname)))
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    t->elem_bits = bits;
    t->offset = (uint64_t)b;  /* relative until the caller adds the data offset */
    t->nbytes = (uint64_t)(e - b);
    return KVS_OK;
}

static int by_offset(const void *a, const void *b, void *ctx)
{
    const kvs_st_tensor *t = ctx;
    const kvs_st_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

kvs_status kvs_st_parse(kvs_st_file **out, const void *data, size_t size, uint64_t file_size,
                        kvs_error *err)
{
    *out = NULL;
    const uint8_t *p = data;
    if (size < 8 || file_size < 8)
        return kvs_fail(err, KVS_E_FORMAT, "file of %" PRIu64 " bytes is too short for a safetensors header",
                        file_size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | p[i];
    if (n < 2 || n > KVS_ST_MAX_HEADER)
        return kvs_fail(err, KVS_E_FORMAT, "header length %" PRIu64 " is out of range (2..%u)", n,
                        KVS_ST_MAX_HEADER);
    if (n > file_size - 8)
        return kvs_fail(err, KVS_E_FORMAT,
                        "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)", n,
                        file_size);
    if (n > size - 8)
        return kvs_fail(err, KVS_E_FORMAT, "header of %" PRIu64 " bytes was not read whole", n);
    if (p[8] != '{')
        return kvs_fail(err, KVS_E_FORMAT, "header does not start with '{'");
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return kvs_fail(err, KVS_E_FORMAT, "header is not valid JSON: %s (at byte %d)", jerr.text,
                        jerr.position);
    kvs_status st = KVS_OK;
    size_t *order = NULL;
    kvs_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    if (!json_is_object(root)) {
        st = kvs_fail(err, KVS_E_FORMAT, "header is not a JSON object");
        goto done;
    }
    f->file_size = file_size;
    f->data_offset = 8 + n;
    uint64_t data_size = file_size - f->data_offset;
    size_t cap = json_object_size(root);
    f->t = calloc(cap ? cap : 1, sizeof *f->t);
    if (!f->t) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                st = kvs_fail(err, KVS_E_FORMAT, "\"__metadata__\" is not an object");
                goto done;
            }
            f->meta = calloc(2 * json_object_size(v) + 1, sizeof *f->meta);
            if (!f->meta) {
                st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    st = kvs_fail(err, KVS_E_FORMAT, "\"__metadata__\" value of '%.100s' is not a string", mk);
                    goto done;
                }
                if (!(f->meta[2 * f->n_meta] = strdup(mk)) ||
                    !(f->meta[2 * f->n_meta + 1] = strdup(json_string_value(mv)))) {
                    f->n_meta++;
                    st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
                    goto done;
                }
                f->n_meta++;
            }
            continue;
        }
        kvs_st_tensor *t = &f->t[f->n];
        if (!(t->name = strdup(key))) {
            st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
            goto done;
        }
        f->n++;
        if ((st = parse_entry(key, v, data_size, t, err)) != KVS_OK)
            goto done;
    }
    /* The tensors must tile the data section: no overlap, no hole. */
    order = malloc((f->n ? f->n : 1) * sizeof *order);
    if (!order) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < f->n; i++)
        order[i] = i;
    qsort_r(order, f->n, sizeof *order, by_offset, f->t);
    uint64_t end = 0;
    for (size_t i = 0; i < f->n; i++) {
        const kvs_st_tensor *t = &f->t[order[i]];
        if (t->offset < end) {
            st = kvs_fail(err, KVS_E_FORMAT, "tensor '%.200s': data at %" PRIu64 " overlaps the previous tensor",
                          t->name, t->offset);
            goto done;
        }
        if (t->offset > end) {
            st = kvs_fail(err, KVS_E_FORMAT, "data section has a hole of %" PRIu64 " bytes before tensor '%.200s'",
                          t->offset - end, t->name);
            goto done;
        }
        end = t->offset + t->nbytes;
    }
    if (end != data_size) {
        st = kvs_fail(err, KVS_E_FORMAT,
                      "the tensors cover %" PRIu64 " bytes of data but the file holds %" PRIu64
                      " after the header",
                      end, data_size);
        goto done;
    }
    for (size_t i = 0; i < f->n; i++)
        f->t[i].offset += f->data_offset;
done:
    free(order);
    json_decref(root);
    if (st != KVS_OK) {
        kvs_st_close(f);
        return st;
    }
    *out = f;
    return KVS_OK;
}

kvs_status kvs_st_open(kvs_st_file **out, const char *path, kvs_error *err)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return kvs_fail(err, KVS_E_IO, "cannot open '%s': %s", path, strerror(errno));
    kvs_status st = KVS_OK;
    uint8_t *buf = NULL;
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = kvs_fail(err, KVS_E_IO, "'%s' is not a regular file", path);
        goto done;
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    uint8_t lenb[8];
    if (fsize < 8 || fread(lenb, 1, 8, fp) != 8) {
        st = kvs_fail(err, KVS_E_FORMAT, "'%s': file of %" PRIu64 " bytes is too short for a safetensors header",
                      path, fsize);
        goto done;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | lenb[i];
    uint64_t want = n <= KVS_ST_MAX_HEADER && n <= fsize - 8 ? n : 0;
    if (!(buf = malloc(8 + want + 1))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    memcpy(buf, lenb, 8);
    if (want && fread(buf + 8, 1, want, fp) != want) {
        st = kvs_fail(err, KVS_E_IO, "'%s': cannot read the header", path);
        goto done;
    }
    if ((st = kvs_st_parse(out, buf, 8 + want, fsize, err)) != KVS_OK) {
        kvs_fail_wrap(err, "'%s'", path);
        goto done;
    }
    if (!((*out)->path = strdup(path))) {
        kvs_st_close(*out);
        *out = NULL;
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
    }
done:
    free(buf);
    fclose(fp);
    return st;
}

kvs_status kvs_st_write(const char *path, const kvs_st_write_tensor *t, size_t n, kvs_error *err)
{
    json_t *root = json_object();
    if (!root)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *dn = kvs_st_dtype_name(t[i].type);
        if (!dn) {
            json_decref(root);
            return kvs_fail(err, KVS_E_UNSUPPORTED, "tensor '%s': type %s cannot be written to safetensors",
                            t[i].name, kvs_dtype_name(t[i].type));
        }
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t[i].n_dims; d++)
            json_array_append_new(shape, json_integer((json_int_t)t[i].shape[d]));
        json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dn, "shape", shape, "data_offsets",
                              (json_int_t)off, (json_int_t)(off + t[i].nbytes));
        if (!e || json_object_set_new(root, t[i].name, e) != 0) {
            json_decref(root);
            return kvs_fail(err, KVS_E_NOMEM, "out of memory");
        }
        off += t[i].nbytes;
    }
    char *js = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!js)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    size_t jl = strlen(js), padded = (jl + 7) / 8 * 8;
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(js);
        return kvs_fail(err, KVS_E_IO, "cannot create '%s': %s", path, strerror(errno));
    }
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(lenb, 1, 8, fp) == 8 && fwrite(js, 1, jl, fp) == jl;
    for (size_t i = jl; ok && i < padded; i++)
        ok = fputc(' ', fp) != EOF;
    for (size_t i = 0; ok && i < n; i++)
        ok = t[i].nbytes == 0 || fwrite(t[i].data, 1, t[i].nbytes, fp) == t[i].nbytes;
    free(js);
    if (fclose(fp) != 0)
        ok = false;
    return ok ? KVS_OK : kvs_fail(err, KVS_E_IO, "cannot write '%s'", path);
}
